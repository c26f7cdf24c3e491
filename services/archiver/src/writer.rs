//! One batch of records into the archive: decoded by topic, written in one
//! transaction, retried with backoff until it succeeds or the replica stops.

use std::time::Duration;

use fleet_core::{AlarmEvent, Reading, protobuf};
use fleet_runtime::backoff::Backoff;
use fleet_store::archive::{self, Partitions};
use fleet_store::layout::Layout;
use rdkafka::message::{BorrowedMessage, Message};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::ArchiverMetrics;

/// One batch, decoded: what the records carried.
#[derive(Debug, Default)]
pub struct Decoded {
    pub readings: Vec<Reading>,
    pub alarms: Vec<AlarmEvent>,
    /// Records in the batch, decodable or not.
    pub records: usize,
}

#[derive(Debug)]
pub struct Writer {
    pool: PgPool,
    partitions: Partitions,
    metrics: ArchiverMetrics,
}

impl Writer {
    pub fn new(pool: PgPool, layout: Layout, metrics: ArchiverMetrics) -> Writer {
        Writer {
            pool,
            partitions: Partitions::for_layout(layout),
            metrics,
        }
    }

    /// Writes the batch; returns false if the replica is stopping before it could.
    pub async fn write(&mut self, batch: &Decoded, shutdown: &CancellationToken) -> bool {
        let (readings, alarms, records) = (&batch.readings, &batch.alarms, batch.records);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let started = std::time::Instant::now();
            match self.write_once(readings, alarms).await {
                Ok((new_readings, new_alarms)) => {
                    self.metrics
                        .batch_write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    let count = |kind: &str, new: u64, all: usize| {
                        self.metrics
                            .archived_total
                            .with_label_values(&[kind])
                            .inc_by(new);
                        self.metrics
                            .duplicates_total
                            .with_label_values(&[kind])
                            .inc_by((all as u64).saturating_sub(new));
                    };
                    count("reading", new_readings, readings.len());
                    count("alarm", new_alarms, alarms.len());
                    self.metrics.batches_total.inc();
                    self.metrics.last_batch_size.set(records as i64);
                    return true;
                }
                Err(e) => {
                    self.metrics.write_errors_total.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, records, retry_in = ?delay, "writing a batch to the archive failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn write_once(
        &mut self,
        readings: &[Reading],
        alarms: &[AlarmEvent],
    ) -> Result<(u64, u64), sqlx::Error> {
        self.partitions.ensure(&self.pool, readings).await?;
        let mut tx = self.pool.begin().await?;
        let new_readings = archive::insert_readings(&mut tx, readings).await?;
        let new_alarms = archive::insert_alarms(&mut tx, alarms).await?;
        tx.commit().await?;
        Ok((new_readings, new_alarms))
    }
}

/// Readings and alarm events by topic. An undecodable record is logged with its place
/// and counted, then skipped: ingest validated it, so it can only be damage, and
/// holding the whole archive back for it would lose more than it saves.
pub fn decode(
    records: &[BorrowedMessage<'_>],
    alarms_topic: &str,
    metrics: &ArchiverMetrics,
) -> Decoded {
    let mut batch = Decoded {
        readings: Vec::with_capacity(records.len()),
        alarms: Vec::new(),
        records: records.len(),
    };
    for m in records {
        let payload = m.payload().unwrap_or_default();
        let decoded = if m.topic() == alarms_topic {
            protobuf::decode_alarm(payload)
                .map(|a| batch.alarms.push(a))
                .map_err(|e| e.to_string())
        } else {
            protobuf::decode_reading(payload)
                .map(|r| batch.readings.push(r))
                .map_err(|e| e.to_string())
        };
        if let Err(e) = decoded {
            metrics.undecodable_total.inc();
            tracing::error!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "undecodable record; skipped");
        }
    }
    batch
}
