//! Consumer lag as librdkafka itself measures it: every `STATISTICS_INTERVAL_MS` (a second) the
//! client reports, per partition it consumes, the broker's high watermark minus the
//! group's committed offset. A service exports the sum over its partitions, so each
//! replica shows its own share and `sum()` the group's, without the Kafka Exporter.

use prometheus::IntGauge;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};

/// How often the client reports (a JSON document, parsed on librdkafka's thread).
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// Turns the client's statistics on; pair it with a context that reads them
/// ([`LagContext`] or one calling [`LagGauge::record`]).
pub fn with_lag_statistics(config: &mut ClientConfig) -> &mut ClientConfig {
    config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
}

/// Records into which the group has not yet committed past, summed over the
/// partitions this member consumes (0 with none assigned).
pub fn consumer_lag(stats: &Statistics) -> i64 {
    stats
        .topics
        .values()
        .flat_map(|topic| topic.partitions.iter())
        // Partition -1 is librdkafka's internal "unassigned" bucket; -1 lag is unknown.
        .filter(|(id, partition)| **id >= 0 && partition.consumer_lag >= 0)
        .map(|(_, partition)| partition.consumer_lag)
        .sum()
}

/// The gauge a service exports its lag in.
#[derive(Debug, Clone)]
pub struct LagGauge(pub IntGauge);

impl LagGauge {
    pub fn record(&self, stats: &Statistics) {
        self.0.set(consumer_lag(stats));
    }
}

/// A consumer context that reports lag and otherwise behaves as the default one.
#[derive(Debug, Clone)]
pub struct LagContext(pub LagGauge);

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        self.0.record(&statistics);
    }
}

impl ConsumerContext for LagContext {}
