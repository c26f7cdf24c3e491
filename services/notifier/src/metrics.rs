//! What the notifier counts. Clinic labels are bounded (the registry's clinics); no
//! label names a pump.

use fleet_runtime::metrics::{counter, counter_vec, gauge, seconds_histogram_vec};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct NotifierMetrics {
    pub registry: Registry,
    /// Set by the consumer's statistics callback (`fleet_kafka::lag`).
    pub consumer_lag_records: IntGauge,
    pub events_total: IntCounter,
    pub unroutable_total: IntCounter,
    pub pages_delivered_total: IntCounterVec,
    pub attempts_failed_total: IntCounterVec,
    pub delivery_seconds: HistogramVec,
    pub operator_alarms_total: IntCounterVec,
    pub breaker_opened_total: IntCounterVec,
    pub escalations_total: IntCounter,
    pub log_errors_total: IntCounter,
    pub in_flight: IntGauge,
    pub registry_version: IntGauge,
    pub registry_refresh_failures_total: IntCounter,
}

impl NotifierMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        NotifierMetrics {
            events_total: counter(
                &r,
                "fleet_notifier_alarm_events_total",
                "Alarm events taken into the delivery log (first time only)",
            ),
            unroutable_total: counter(
                &r,
                "fleet_notifier_unroutable_total",
                "Alarm events for a pump the registry does not assign to a clinic",
            ),
            pages_delivered_total: counter_vec(
                &r,
                "fleet_notifier_pages_delivered_total",
                "Pages accepted by a receiver, by clinic and target",
                &["clinic", "target"],
            ),
            delivery_seconds: seconds_histogram_vec(
                &r,
                "fleet_notifier_delivery_seconds",
                "Time of one delivery attempt to a clinic's receiver, by outcome (delivered, failed)",
                &["outcome"],
            ),
            attempts_failed_total: counter_vec(
                &r,
                "fleet_notifier_attempts_failed_total",
                "Delivery attempts that failed, by clinic",
                &["clinic"],
            ),
            operator_alarms_total: counter_vec(
                &r,
                "fleet_notifier_operator_alarms_total",
                "Pages that kept failing past the bound (an operator must look), by clinic",
                &["clinic"],
            ),
            breaker_opened_total: counter_vec(
                &r,
                "fleet_notifier_breaker_opened_total",
                "Times a clinic's circuit opened",
                &["clinic"],
            ),
            escalations_total: counter(
                &r,
                "fleet_notifier_escalations_total",
                "Escalation pages created for unacknowledged alarms",
            ),
            log_errors_total: counter(
                &r,
                "fleet_notifier_log_errors_total",
                "Delivery log operations that failed (retried)",
            ),
            in_flight: gauge(&r, "fleet_notifier_in_flight", "Pages being delivered now"),
            registry_version: gauge(
                &r,
                "fleet_notifier_registry_version",
                "Version of the registry pages are routed with",
            ),
            registry_refresh_failures_total: counter(
                &r,
                "fleet_notifier_registry_refresh_failures_total",
                "Registry refreshes that failed (the registry in hand stays in use)",
            ),
            consumer_lag_records: gauge(
                &r,
                "fleet_notifier_consumer_lag_records",
                "Records of alarm events not yet committed by this replica's partitions (the broker's high watermark minus the group's committed offset)",
            ),
            registry: r,
        }
    }
}

impl Default for NotifierMetrics {
    fn default() -> Self {
        Self::new()
    }
}
