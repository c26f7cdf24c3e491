//! What the archiver counts.

use fleet_runtime::metrics::{counter, counter_vec, gauge, seconds_histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct ArchiverMetrics {
    pub registry: Registry,
    /// Set by the consumer's statistics callback (`fleet_kafka::lag`).
    pub consumer_lag_records: IntGauge,
    /// Records written for the first time, by kind (`reading`, `alarm`).
    pub archived_total: IntCounterVec,
    /// Records already in the archive (a re-read batch, a re-sent reading).
    pub duplicates_total: IntCounterVec,
    pub undecodable_total: IntCounter,
    pub write_errors_total: IntCounter,
    pub batches_total: IntCounter,
    pub last_batch_size: IntGauge,
    pub batch_write_seconds: Histogram,
    /// 1 when readings go to a TimescaleDB hypertable, 0 on plain PostgreSQL.
    pub timescaledb: IntGauge,
}

impl ArchiverMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        ArchiverMetrics {
            archived_total: counter_vec(
                &r,
                "fleet_archiver_archived_total",
                "Records written to the archive for the first time, by kind",
                &["kind"],
            ),
            duplicates_total: counter_vec(
                &r,
                "fleet_archiver_duplicates_total",
                "Records that were already archived (re-read or re-sent), by kind",
                &["kind"],
            ),
            undecodable_total: counter(
                &r,
                "fleet_archiver_undecodable_total",
                "Records that could not be decoded and were skipped (logged with offset)",
            ),
            write_errors_total: counter(
                &r,
                "fleet_archiver_write_errors_total",
                "Failed batch writes (retried until they succeed)",
            ),
            batches_total: counter(&r, "fleet_archiver_batches_total", "Batches written"),
            batch_write_seconds: seconds_histogram(
                &r,
                "fleet_archiver_batch_write_seconds",
                "Time to write one batch to the archive (one transaction, retries not included)",
            ),
            last_batch_size: gauge(
                &r,
                "fleet_archiver_last_batch_size",
                "Records in the last batch written",
            ),
            timescaledb: gauge(
                &r,
                "fleet_archiver_timescaledb",
                "1 if the archive's readings are a TimescaleDB hypertable, 0 if partitioned PostgreSQL",
            ),
            consumer_lag_records: gauge(
                &r,
                "fleet_archiver_consumer_lag_records",
                "Records of readings and alarm events not yet committed by this replica's partitions (the broker's high watermark minus the group's committed offset)",
            ),
            registry: r,
        }
    }
}

impl Default for ArchiverMetrics {
    fn default() -> Self {
        Self::new()
    }
}
