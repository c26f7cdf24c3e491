//! Registering a service's metrics. Names are constants in the code; a bad one is a
//! programming error caught by the service's first test, hence the panics.

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    made: prometheus::Result<M>,
) -> M {
    let metric = made.unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, name, IntCounter::new(name, help))
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, name, IntGauge::new(name, help))
}

pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        name,
        IntCounterVec::new(Opts::new(name, help), labels),
    )
}

/// A latency histogram in seconds, with buckets from 1 ms to 10 s.
pub fn seconds_histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> HistogramVec {
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    register(
        registry,
        name,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels),
    )
}
