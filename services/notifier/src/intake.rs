//! Alarm events from Kafka into the delivery log. An event's offset is committed only
//! after its page is in the log, so a crash re-reads it, and the log's key makes the
//! second insert a no-op: no page lost, none doubled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::AlarmEvent;
use fleet_runtime::backoff::Backoff;
use fleet_store::registry::RegistryWatch;
use futures_util::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
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

/// Most alarm events written to the log in one transaction. A storm of alarms (a
/// region's gateways going quiet at once) then costs a few commits, not one each, so
/// it does not hold back the page behind it.
const MAX_BATCH: usize = 256;

impl Intake {
    pub async fn run(self, shutdown: CancellationToken) {
        while let Some(batch) = self.next_batch(&shutdown).await {
            let events: Vec<AlarmEvent> = batch.iter().filter_map(decode).collect();
            if !self.store(&events, &shutdown).await {
                return; // stopping: the offsets stay uncommitted, the events are re-read
            }
            self.commit(&batch);
        }
    }

    /// Waits for one message, then takes those already fetched behind it, up to
    /// `MAX_BATCH`. None when stopping.
    async fn next_batch(&self, shutdown: &CancellationToken) -> Option<Vec<BorrowedMessage<'_>>> {
        let first = loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                m = self.consumer.recv() => match m {
                    Ok(m) => break m,
                    Err(e) => tracing::warn!(error = %e, "alarms consumer error"),
                },
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "alarms consumer error");
                    break;
                }
                None => break,
            }
        }
        Some(batch)
    }

    /// Commits, per partition, the offset after the batch's last message.
    fn commit(&self, batch: &[BorrowedMessage<'_>]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in batch {
            let end = next.entry((m.topic(), m.partition())).or_default();
            *end = (*end).max(m.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(error = %e, topic, partition, "building an offset commit");
            }
        }
        if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(error = %e, "committing alarm offsets (they are re-read, harmlessly)");
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
