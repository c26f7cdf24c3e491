//! The ceiling for paging: what gRPC itself (tonic, HTTP/2, protobuf) carries on this
//! machine, with nothing behind it. An in-process `fleet.clinic.v1.AlarmReceiver` that
//! accepts every page at once, and a client sending the notifier's signed pages over
//! one channel on loopback with as many calls in flight as the notifier allows itself
//! (its `--max-in-flight` default). The real notifier's pages/s against this says how
//! much of paging's cost is the delivery log and the receiver's durability, not the
//! transport.

use std::time::{Duration, Instant};

use anyhow::Context;
use fleet_core::signing::SIGNATURE_METADATA_KEY;
use fleet_proto::clinic::v1::alarm_receiver_client::AlarmReceiverClient;
use fleet_proto::clinic::v1::alarm_receiver_server::{AlarmReceiver, AlarmReceiverServer};
use fleet_proto::clinic::v1::{AlarmNotification, DeliveryReceipt};
use futures_util::{StreamExt, TryStreamExt};
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::hop::per_second;
use crate::pages::SignedPage;

/// Calls in flight at once: the notifier's default `--max-in-flight`.
pub const IN_FLIGHT: usize = 64;

/// A receiver that only answers: no signature check, no journal, no fsync.
#[derive(Debug)]
struct AcceptAll;

#[tonic::async_trait]
impl AlarmReceiver for AcceptAll {
    async fn deliver(
        &self,
        request: Request<AlarmNotification>,
    ) -> Result<Response<DeliveryReceipt>, Status> {
        let page = request.get_ref();
        Ok(Response::new(DeliveryReceipt {
            accepted: true,
            receipt_id: format!("rcpt-{}#{}", page.alarm_id, page.revision),
        }))
    }
}

/// Sends `calls` pages, cycling through `pages`, [`IN_FLIGHT`] at a time to a bare
/// receiver in this process; accepted calls per second. Every call must be accepted.
pub async fn measure(calls: usize, pages: &[SignedPage]) -> anyhow::Result<f64> {
    anyhow::ensure!(!pages.is_empty(), "no pages to send");
    let incoming =
        TcpIncoming::bind("127.0.0.1:0".parse()?).context("binding the bare receiver")?;
    let url = format!("http://{}", incoming.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(AlarmReceiverServer::new(AcceptAll))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let channel = Endpoint::from_shared(url)?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to the bare receiver")?;
    let started = Instant::now();
    let sent = futures_util::stream::iter(pages.iter().cycle().take(calls))
        .map(|page| deliver(channel.clone(), page))
        .buffer_unordered(IN_FLIGHT)
        .try_fold(0usize, |n, ()| async move { Ok(n + 1) })
        .await;
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(per_second(sent?, elapsed))
}

/// One `Deliver` call with the page's signature, as the notifier makes it.
async fn deliver(channel: Channel, page: &SignedPage) -> anyhow::Result<()> {
    let mut request = Request::new(page.notification.clone());
    request.metadata_mut().insert(
        SIGNATURE_METADATA_KEY,
        MetadataValue::try_from(page.signature.as_str())?,
    );
    let receipt = AlarmReceiverClient::new(channel)
        .deliver(request)
        .await?
        .into_inner();
    anyhow::ensure!(receipt.accepted, "the bare receiver refused a page");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_reaches_the_bare_receiver_and_is_accepted() {
        let alarms = crate::pages::alarms(3, chrono::Utc::now());
        let pages: Vec<_> = alarms
            .iter()
            .map(|a| crate::pages::signed(a, b"a-secret-of-some-length"))
            .collect();
        let rate = measure(200, &pages).await.expect("measured");
        assert!(rate > 0.0);
    }
}
