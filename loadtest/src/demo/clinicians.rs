//! Simulated clinicians: one per clinic, watching the fleet API as the dashboard does
//! and acknowledging each urgent alarm (HIGH or MEDIUM, the ones that escalate) of its
//! clinic's pumps. LOW alarms are left for the next visit, as a clinic would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleet_proto::api::v1::fleet_api_client::FleetApiClient;
use fleet_proto::api::v1::{AcknowledgeAlarmRequest, ListAlarmsRequest};
use tokio::task::JoinSet;
use tonic::Request;
use tonic::transport::Channel;

/// How often a clinician looks at the dashboard.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// Acknowledgements made and calls that failed, across clinics.
#[derive(Debug, Default)]
pub struct Tally {
    pub acknowledged: AtomicU64,
    pub failed_calls: AtomicU64,
}

#[derive(Debug)]
pub struct Clinicians {
    pub tally: Arc<Tally>,
    tasks: JoinSet<()>,
}

impl Clinicians {
    /// One clinician per `(clinic_id, token)`, calling the API's gRPC port.
    pub async fn start(api_grpc_port: u16, logins: Vec<(String, String)>) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{api_grpc_port}"))?
            .connect()
            .await?;
        let tally = Arc::new(Tally::default());
        let mut tasks = JoinSet::new();
        for (clinic, token) in logins {
            tasks.spawn(watch(
                FleetApiClient::new(channel.clone()),
                clinic,
                token,
                tally.clone(),
            ));
        }
        Ok(Clinicians { tally, tasks })
    }

    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

fn authorised<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

async fn watch(mut api: FleetApiClient<Channel>, clinic: String, token: String, tally: Arc<Tally>) {
    let mut tick = tokio::time::interval(LOOK_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = look_and_acknowledge(&mut api, &clinic, &token, &tally).await {
            tally.failed_calls.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%clinic, error = %e, "simulated clinician: API call failed");
        }
    }
}

async fn look_and_acknowledge(
    api: &mut FleetApiClient<Channel>,
    clinic: &str,
    token: &str,
    tally: &Tally,
) -> anyhow::Result<()> {
    let active = ListAlarmsRequest {
        active: true,
        limit: 1000,
        ..Default::default()
    };
    let alarms = api
        .list_alarms(authorised(active, token)?)
        .await?
        .into_inner()
        .alarms;
    for alarm in alarms {
        let urgent = alarm.priority == "HIGH" || alarm.priority == "MEDIUM";
        if !urgent || alarm.acknowledged_at.is_some() {
            continue;
        }
        let ack = AcknowledgeAlarmRequest {
            alarm_id: alarm.alarm_id,
            clinician: format!("simulated clinician, {clinic}"),
            note: "Patient called; refill / review booked (demo)".into(),
        };
        api.acknowledge_alarm(authorised(ack, token)?).await?;
        tally.acknowledged.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
