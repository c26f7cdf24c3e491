//! What the streaming detector counts. No label names a pump (one series per patient).

use fleet_runtime::metrics::{counter, counter_vec, gauge, seconds_histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct DetectorMetrics {
    pub registry: Registry,
    /// Set by the consumer's statistics callback (`fleet_kafka::lag`).
    pub consumer_lag_records: IntGauge,
    pub readings_total: IntCounter,
    pub records_skipped_total: IntCounter,
    pub undecodable_total: IntCounter,
    pub alarm_events_total: IntCounterVec,
    pub alarm_delivery_failures_total: IntCounter,
    pub checkpoints_total: IntCounter,
    pub checkpoint_seconds: Histogram,
    pub checkpoint_failures_total: IntCounter,
    pub fenced_total: IntCounter,
    pub rewinds_total: IntCounter,
    pub offset_gaps_total: IntCounter,
    pub partitions: IntGauge,
    pub pumps: IntGauge,
    pub pending_deliveries: IntGauge,
    pub clock_lag_seconds: IntGauge,
}

impl DetectorMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        DetectorMetrics {
            readings_total: counter(
                &r,
                "fleet_detector_readings_total",
                "Readings applied to the detection rules",
            ),
            records_skipped_total: counter(
                &r,
                "fleet_detector_records_skipped_total",
                "Records skipped because the restored checkpoint already reflects them",
            ),
            undecodable_total: counter(
                &r,
                "fleet_detector_undecodable_total",
                "Records of the readings topic that did not decode (dead-lettered)",
            ),
            alarm_events_total: counter_vec(
                &r,
                "fleet_detector_alarm_events_total",
                "Alarm events emitted, by kind and state",
                &["kind", "state"],
            ),
            alarm_delivery_failures_total: counter(
                &r,
                "fleet_detector_alarm_delivery_failures_total",
                "Alarm events the broker did not confirm (the partition is rewound and they are emitted again)",
            ),
            checkpoint_seconds: seconds_histogram(
                &r,
                "fleet_detector_checkpoint_seconds",
                "Time to write one partition's checkpoint (offset, clock and changed pumps in one transaction)",
            ),
            checkpoints_total: counter(
                &r,
                "fleet_detector_checkpoints_total",
                "Partition checkpoints written",
            ),
            checkpoint_failures_total: counter(
                &r,
                "fleet_detector_checkpoint_failures_total",
                "Partition checkpoints that failed to write (retried at the next interval)",
            ),
            fenced_total: counter(
                &r,
                "fleet_detector_fenced_total",
                "Checkpoints refused because another replica took the partition over",
            ),
            rewinds_total: counter(
                &r,
                "fleet_detector_rewinds_total",
                "Partitions reloaded from their checkpoint and re-read",
            ),
            offset_gaps_total: counter(
                &r,
                "fleet_detector_offset_gaps_total",
                "Times records between the checkpoint and the log's start were gone (retention)",
            ),
            partitions: gauge(
                &r,
                "fleet_detector_partitions",
                "Partitions this replica owns",
            ),
            pumps: gauge(
                &r,
                "fleet_detector_pumps",
                "Pumps with state in this replica",
            ),
            pending_deliveries: gauge(
                &r,
                "fleet_detector_pending_deliveries",
                "Alarm events sent and not yet confirmed",
            ),
            clock_lag_seconds: gauge(
                &r,
                "fleet_detector_clock_lag_seconds",
                "Wall clock minus the slowest owned partition's event-time clock",
            ),
            consumer_lag_records: gauge(
                &r,
                "fleet_detector_consumer_lag_records",
                "Records of readings not yet committed by this replica's partitions (the broker's high watermark minus the group's committed offset)",
            ),
            registry: r,
        }
    }
}

impl Default for DetectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
