//! Alarm events from Kafka into the delivery log. An event's offset is committed only
//! after its page is in the log, so a crash re-reads it, and the log's key makes the
//! second insert a no-op: no page lost, none doubled.

use std::sync::Arc;
use std::time::Duration;

use fleet_core::AlarmEvent;
use fleet_kafka::batch;
use fleet_kafka::lag::LagContext;
use fleet_runtime::backoff::Backoff;
use fleet_store::registry::RegistryWatch;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{BorrowedMessage, Message};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::log;
use crate::metrics::NotifierMetrics;

pub struct Intake {
    pub consumer: StreamConsumer<LagContext>,
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

/// Most alarm events written to the log in one transaction. A storm of alarms (a
/// region's gateways going quiet at once) then costs a few commits, not one each, so
/// it does not hold back the page behind it.
const MAX_BATCH: usize = 256;

impl Intake {
    pub async fn run(self, shutdown: CancellationToken) {
        while let Some(batch) =
            batch::next_batch(&self.consumer, MAX_BATCH, Duration::ZERO, &shutdown).await
        {
            let events: Vec<AlarmEvent> = batch.iter().filter_map(decode).collect();
            if !self.store(&events, &shutdown).await {
                return; // stopping: the offsets stay uncommitted, the events are re-read
            }
            batch::commit(&self.consumer, &batch::offsets_after(&batch));
        }
    }

    /// Writes the events' pages in one transaction, retrying a failing database until
    /// it works or the replica stops. Returns false if stopping.
    async fn store(&self, events: &[AlarmEvent], shutdown: &CancellationToken) -> bool {
        if events.is_empty() {
            return true;
        }
        let routes: Vec<(String, Duration)> = events.iter().map(|e| self.route(e)).collect();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.store_once(events, &routes).await {
                Ok(new) => {
                    if new > 0 {
                        self.metrics.events_total.inc_by(new);
                        self.wake.notify_one();
                    }
                    return true;
                }
                Err(e) => {
                    self.metrics.log_errors_total.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, events = events.len(), retry_in = ?delay, "writing pages to the delivery log failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One transaction over the whole batch; returns how many pages were new.
    async fn store_once(
        &self,
        events: &[AlarmEvent],
        routes: &[(String, Duration)],
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut new = 0;
        for (event, (clinic_id, escalation_after)) in events.iter().zip(routes) {
            if log::enqueue(&mut tx, event, clinic_id, *escalation_after).await? {
                new += 1;
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    /// The clinic that follows the alarm's pump, and its escalation delay.
    fn route(&self, event: &AlarmEvent) -> (String, Duration) {
        let registry = Arc::clone(&self.registry.borrow());
        match registry
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
        }
    }
}

/// The alarm event a message carries; an undecodable one is logged and skipped.
fn decode(message: &BorrowedMessage<'_>) -> Option<AlarmEvent> {
    match fleet_core::protobuf::decode_alarm(message.payload().unwrap_or_default()) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::error!(partition = message.partition(), offset = message.offset(), error = %e, "undecodable alarm event; skipped");
            None
        }
    }
}
