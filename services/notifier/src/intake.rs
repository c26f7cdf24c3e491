//! Alarm events from Kafka into the delivery log. An event's offset is committed only
//! after its page is in the log, so a crash re-reads it, and the log's key makes the
//! second insert a no-op: no page lost, none doubled.

use std::sync::Arc;
use std::time::Duration;

use fleet_runtime::backoff::Backoff;
use fleet_store::registry::RegistryWatch;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::log;
use crate::metrics::NotifierMetrics;

pub struct Intake {
    pub consumer: StreamConsumer,
    pub pool: PgPool,
    pub registry: RegistryWatch,
    pub metrics: NotifierMetrics,
    pub wake: Arc<Notify>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                m = self.consumer.recv() => m,
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "alarms consumer error");
                    continue;
                }
            };
            let event = match fleet_core::protobuf::decode_alarm(
                message.payload().unwrap_or_default(),
            ) {
                Ok(event) => Some(event),
                Err(e) => {
                    tracing::error!(partition = message.partition(), offset = message.offset(), error = %e, "undecodable alarm event; skipped");
                    None
                }
            };
            if let Some(event) = event
                && !self.store(&event, &shutdown).await
            {
                return; // stopping: the offset stays uncommitted, the event is re-read
            }
            if let Err(e) = self.consumer.commit_message(&message, CommitMode::Async) {
                tracing::warn!(error = %e, "committing an alarm offset (it is re-read, harmlessly)");
            }
        }
    }

    /// Writes the event's page, retrying a failing database until it works or the
    /// replica stops. Returns false if stopping.
    async fn store(&self, event: &fleet_core::AlarmEvent, shutdown: &CancellationToken) -> bool {
        let registry = Arc::clone(&self.registry.borrow());
        let (clinic_id, escalation_after) = match registry
            .pump(&event.pump_id)
            .and_then(|p| registry.clinic(&p.clinic_id))
        {
            Some(clinic) => (clinic.id.clone(), clinic.escalation_after),
            None => {
                // Kept in the log with no clinic, where an operator can see it.
                self.metrics.unroutable_total.inc();
                tracing::error!(pump_id = %event.pump_id, alarm_id = %event.alarm_id, "OPERATOR ALARM: alarm for a pump no clinic follows; not paged");
                (String::new(), Duration::from_secs(3600))
            }
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match log::enqueue(&self.pool, event, &clinic_id, escalation_after).await {
                Ok(new) => {
                    if new {
                        self.metrics.events_total.inc();
                        self.wake.notify_one();
                    }
                    return true;
                }
                Err(e) => {
                    self.metrics.log_errors_total.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "writing a page to the delivery log failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
