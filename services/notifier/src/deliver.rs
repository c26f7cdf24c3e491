//! One `Deliver` call: the page built, signed and sent with a deadline, over a channel
//! kept per endpoint (TLS for `https://`).

use std::collections::HashMap;
use std::time::Duration;

use fleet_core::protobuf::{PageHeader, notification};
use fleet_core::signing::{SIGNATURE_METADATA_KEY, sign};
use fleet_proto::clinic::v1::alarm_receiver_client::AlarmReceiverClient;
use fleet_proto::prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::log::Page;

/// Channels by endpoint URL: connections are reused across pages.
#[derive(Debug, Default)]
pub struct Clients {
    channels: HashMap<String, Channel>,
    /// Trusted for `https://` endpoints besides the public web roots: the private CA
    /// of clinics that run their own PKI (`--clinic-ca-file`).
    extra_roots: Option<Certificate>,
}

impl Clients {
    pub fn new(extra_roots: Option<Certificate>) -> Clients {
        Clients {
            channels: HashMap::new(),
            extra_roots,
        }
    }

    /// The channel for `url`, created (lazily connecting) on first use.
    pub fn channel(&mut self, url: &str, deadline: Duration) -> Result<Channel, String> {
        if let Some(channel) = self.channels.get(url) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("endpoint {url}: {e}"))?
            .connect_timeout(deadline)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(roots) = &self.extra_roots {
                tls = tls.ca_certificate(roots.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS for {url}: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        self.channels.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Reads the PEM file of extra trusted roots for clinic endpoints; an error names the
/// file.
pub fn load_roots(path: &std::path::Path) -> anyhow::Result<Certificate> {
    use anyhow::Context;
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the clinic CA file {}", path.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
        "the clinic CA file {} holds no PEM certificate",
        path.display()
    );
    Ok(Certificate::from_pem(pem))
}

/// Sends one page; the receipt id if the receiver accepted it, else why not.
pub async fn deliver(
    channel: Channel,
    url: &str,
    page: &Page,
    secret: &[u8],
    deadline: Duration,
) -> Result<String, String> {
    {
        let message = notification(
            &page.event,
            PageHeader {
                clinic_id: &page.clinic_id,
                delivery_attempt: u32::try_from(page.attempts + 1).unwrap_or(u32::MAX),
                escalation: u32::try_from(page.key.escalation).unwrap_or(0),
            },
        );
        let signature = sign(secret, &message.encode_to_vec());
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline);
        let value = MetadataValue::try_from(signature.as_str())
            .map_err(|e| format!("signature header: {e}"))?;
        request.metadata_mut().insert(SIGNATURE_METADATA_KEY, value);
        let mut client = AlarmReceiverClient::new(channel);
        let call = client.deliver(request);
        match tokio::time::timeout(deadline, call).await {
            Err(_) => Err(format!("no answer from {url} within {deadline:?}")),
            Ok(Err(status)) => Err(format!(
                "{url} answered {:?}: {}",
                status.code(),
                status.message()
            )),
            Ok(Ok(response)) => {
                let receipt = response.into_inner();
                if receipt.accepted {
                    Ok(receipt.receipt_id)
                } else {
                    Err(format!(
                        "{url} did not accept the page (receipt {:?})",
                        receipt.receipt_id
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_endpoints_get_tls_and_channels_are_reused() {
        let mut clients = Clients::default();
        let deadline = Duration::from_secs(1);
        clients
            .channel("https://clinic.example:443", deadline)
            .expect("a TLS channel for an https endpoint");
        clients
            .channel("http://127.0.0.1:50070", deadline)
            .expect("a plain channel");
        clients
            .channel("https://clinic.example:443", deadline)
            .expect("the same channel again");
        assert_eq!(clients.channels.len(), 2);
        assert!(clients.channel("not a url", deadline).is_err());
    }
}
