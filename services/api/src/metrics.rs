//! The API's own metrics, per transport and operation (never per user or pump): calls
//! by outcome, how long they took, and those refused by a rate limit.

use std::time::Duration;

use fleet_runtime::metrics::{counter_vec, seconds_histogram_vec};
use fleet_runtime::serve::Readiness;
use prometheus::{HistogramVec, IntCounterVec, Registry};

#[derive(Debug, Clone)]
pub struct ApiMetrics {
    pub registry: Registry,
    pub readiness: Readiness,
    requests_total: IntCounterVec,
    request_seconds: HistogramVec,
    rate_limited_total: IntCounterVec,
}

impl ApiMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        ApiMetrics {
            requests_total: counter_vec(
                &r,
                "fleet_api_requests_total",
                "API calls answered, by transport (grpc, http), operation and outcome (gRPC code or HTTP status)",
                &["transport", "operation", "outcome"],
            ),
            request_seconds: seconds_histogram_vec(
                &r,
                "fleet_api_request_duration_seconds",
                "Time to answer an API call, by transport and operation",
                &["transport", "operation"],
            ),
            rate_limited_total: counter_vec(
                &r,
                "fleet_api_rate_limited_total",
                "API calls refused by a rate limit, by transport and limit (auth_failures: per source address; user_requests: per user)",
                &["transport", "limit"],
            ),
            registry: r,
            readiness: Readiness::default(),
        }
    }

    /// One answered call. `operation` is a route template or a gRPC method name: a
    /// bounded set, never a path with an id in it.
    pub fn observe(&self, transport: &str, operation: &str, outcome: &str, took: Duration) {
        self.requests_total
            .with_label_values(&[transport, operation, outcome])
            .inc();
        self.request_seconds
            .with_label_values(&[transport, operation])
            .observe(took.as_secs_f64());
    }

    /// One call refused by `limit` (a bounded set: never an address or a user).
    pub fn rate_limited(&self, transport: &str, limit: &str) {
        self.rate_limited_total
            .with_label_values(&[transport, limit])
            .inc();
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}
