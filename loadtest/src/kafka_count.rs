//! Counting what reached Kafka: every record of a topic, by `(pump_id, seq)`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleet_kafka::{DeadLetter, consumer_config, decode_reading};
use futures_util::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

/// Readings seen in a topic so far.
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    pub unique: BTreeSet<(String, u64)>,
    /// Records including duplicates.
    pub records: u64,
}

/// A consumer reading every partition of `topic` from the beginning. Partitions are
/// assigned, not balanced through a consumer group: counting must not depend on group
/// coordination (which the local broker handles poorly when groups rebalance at once).
/// Creates the topic first if needed, with the services' default partition count.
async fn read_all(brokers: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    fleet_kafka::ensure_topic(brokers, topic, DEFAULT_PARTITIONS).await?;
    let consumer: StreamConsumer =
        consumer_config(brokers, &format!("harness-{}", std::process::id())).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or_default();
    anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// The partition count the services create topics with (`FLEET_KAFKA_PARTITIONS`).
pub const DEFAULT_PARTITIONS: i32 = 6;

/// Consumes `topic` from the beginning in the background, publishing the running count;
/// stops when the receiver is dropped or the stream ends.
pub async fn watch_readings(
    brokers: &str,
    topic: &str,
) -> anyhow::Result<watch::Receiver<Arrivals>> {
    let consumer = read_all(brokers, topic).await?;
    let (tx, rx) = watch::channel(Arrivals::default());
    tokio::spawn(async move {
        let mut stream = consumer.stream();
        while let Some(message) = stream.next().await {
            let Ok(message) = message else { continue };
            if let Ok(reading) = decode_reading(&message) {
                // In place: copying the set per record would make counting quadratic.
                tx.send_modify(|a| {
                    a.records += 1;
                    a.unique.insert((reading.pump_id, reading.seq));
                });
                if tx.is_closed() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// Waits until `done` holds for the arrivals, or `timeout`; returns the last count.
pub async fn wait_for(
    rx: &mut watch::Receiver<Arrivals>,
    timeout: Duration,
    done: impl Fn(&Arrivals) -> bool,
) -> Arrivals {
    let _ = tokio::time::timeout(timeout, rx.wait_for(|a| done(a))).await;
    rx.borrow().clone()
}

/// A bare consumer counting every record of a topic from the beginning, without
/// decoding them, in the background: the raw consume ceiling. Stops when dropped.
#[derive(Debug)]
pub struct RecordCount {
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordCount {
    /// Starts counting `topic`.
    pub async fn start(brokers: &str, topic: &str) -> anyhow::Result<RecordCount> {
        let consumer = read_all(brokers, topic).await?;
        let count = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&count);
        let task = tokio::spawn(async move {
            let mut stream = consumer.stream();
            while let Some(message) = stream.next().await {
                if message.is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(RecordCount { count, task })
    }

    /// Records read so far.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for RecordCount {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads `topic` from the beginning until `expected` records arrived, or nothing new
/// came for `quiet` (use `usize::MAX` to read until quiet), or `timeout` passed.
pub async fn read_records(
    brokers: &str,
    topic: &str,
    expected: usize,
    quiet: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer = read_all(brokers, topic).await?;
    let mut stream = consumer.stream();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < expected {
        let wait = (tokio::time::Instant::now() + quiet).min(deadline);
        match tokio::time::timeout_at(wait, stream.next()).await {
            Ok(Some(Ok(message))) => out.push(message.detach()),
            Ok(Some(Err(_))) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    Ok(out)
}

/// Reads dead letters from the beginning until `expected` arrived or `timeout`.
pub async fn read_dead_letters(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<DeadLetter>> {
    let records = read_records(brokers, topic, expected, timeout, timeout).await?;
    Ok(records.iter().map(DeadLetter::from_message).collect())
}

/// How many records there are per reason.
pub fn by_reason(letters: &[DeadLetter]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for dl in letters {
        *counts.entry(dl.reason.clone()).or_insert(0) += 1;
    }
    counts
}

/// The end of each partition of `topic` (the offset the next record will get).
pub fn high_watermarks(brokers: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: rdkafka::consumer::BaseConsumer =
        consumer_config(brokers, &format!("harness-{}", std::process::id())).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends = BTreeMap::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) =
            consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
        ends.insert(partition.id(), high);
    }
    Ok(ends)
}
