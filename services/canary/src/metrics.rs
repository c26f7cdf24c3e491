//! What the canary counts. `fleet_canary_last_success_timestamp_seconds` is what the
//! `FleetCanaryMissing` alert watches: it keeps working when the canary itself is gone.

use fleet_runtime::metrics::{counter, counter_vec, gauge, histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct CanaryMetrics {
    pub registry: Registry,
    pub rounds_started_total: IntCounter,
    pub rounds_completed_total: IntCounter,
    pub rounds_lost_total: IntCounter,
    pub rounds_outstanding: IntGauge,
    pub round_trip_seconds: Histogram,
    pub last_success_timestamp_seconds: IntGauge,
    pub operator_alarm_active: IntGauge,
    pub alarms_total: IntCounterVec,
    pub pages_total: IntCounterVec,
    pub registry_failures_total: IntCounter,
}

impl CanaryMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        CanaryMetrics {
            rounds_started_total: counter(
                &r,
                "fleet_canary_rounds_started_total",
                "Rounds whose readings were handed to the canary's gateway",
            ),
            rounds_completed_total: counter(
                &r,
                "fleet_canary_rounds_completed_total",
                "Rounds whose page reached the operator receiver",
            ),
            rounds_lost_total: counter(
                &r,
                "fleet_canary_rounds_lost_total",
                "Rounds that can no longer be paged (a later round's page came first, or too many were out)",
            ),
            rounds_outstanding: gauge(
                &r,
                "fleet_canary_rounds_outstanding",
                "Rounds started and not yet paged",
            ),
            round_trip_seconds: histogram(
                &r,
                "fleet_canary_round_trip_seconds",
                "From a round's reading handed to the gateway to its page at the operator receiver",
                vec![
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
                ],
            ),
            last_success_timestamp_seconds: gauge(
                &r,
                "fleet_canary_last_success_timestamp_seconds",
                "Unix time of the last round whose page reached the operator receiver",
            ),
            operator_alarm_active: gauge(
                &r,
                "fleet_canary_operator_alarm_active",
                "1 while a round's page is overdue past the deadline (the dead man's switch)",
            ),
            alarms_total: counter_vec(
                &r,
                "fleet_canary_alarms_total",
                "Operator alarms fired, by the stage the canary suspects",
                &["stage"],
            ),
            pages_total: counter_vec(
                &r,
                "fleet_canary_pages_total",
                "Pages at the operator receiver, by what they were (completed, unmatched, other, foreign, refused)",
                &["outcome"],
            ),
            registry_failures_total: counter(
                &r,
                "fleet_canary_registry_failures_total",
                "Failed attempts to register the canary's clinic and pump",
            ),
            registry: r,
        }
    }
}

impl Default for CanaryMetrics {
    fn default() -> Self {
        Self::new()
    }
}
