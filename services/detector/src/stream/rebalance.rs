//! Partition assignment changes, as the consumer group reports them. librdkafka calls
//! back from inside `recv()`, where nothing may wait on the database; the callbacks only
//! note the change, and the detector's loop acts on it before the next record.

use std::sync::Mutex;

use fleet_kafka::lag::LagGauge;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Also the consumer's statistics reader: its lag goes to the detector's gauge.
#[derive(Debug)]
pub struct RebalanceLog {
    changes: Mutex<Vec<Change>>,
    lag: LagGauge,
}

impl RebalanceLog {
    pub fn new(lag: LagGauge) -> Self {
        RebalanceLog {
            changes: Mutex::new(Vec::new()),
            lag,
        }
    }

    /// The changes since the last call, oldest first.
    pub fn take(&self) -> Vec<Change> {
        match self.changes.lock() {
            Ok(mut changes) => std::mem::take(&mut *changes),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn push(&self, change: Change) {
        match self.changes.lock() {
            Ok(mut changes) => changes.push(change),
            Err(poisoned) => poisoned.into_inner().push(change),
        }
    }
}

impl ClientContext for RebalanceLog {
    fn stats(&self, statistics: Statistics) {
        self.lag.record(&statistics);
    }
}

impl ConsumerContext for RebalanceLog {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Revocations are noted before the partitions go, so the loop stops applying
        // their records as soon as it looks.
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?partitions, "partitions revoked");
            self.push(Change::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?partitions, "partitions assigned");
                self.push(Change::Assigned(partitions));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
        }
    }
}
