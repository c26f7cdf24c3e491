//! The archiver: readings and alarm events from Kafka into the surveillance archive
//! (PostgreSQL, migration 0005).
//!
//! Data flow in one replica: Kafka `fleet.readings.v1` and `fleet.alarms.v1` →
//! [`batch`](fleet_kafka::batch) (up to `--batch` records, `--linger` to fill) →
//! [`writer`] (decoded, written in one transaction, idempotent on each record's key;
//! retried until it works) → offsets committed. A crash between the write and the
//! commit re-reads the batch and changes nothing; the archiver reads no further while
//! a batch is being written, so a slow database slows it down instead of filling memory.

pub mod config;
pub mod metrics;
pub mod writer;

use std::sync::Arc;

use anyhow::Context;
use fleet_kafka::lag::{LagContext, LagGauge, with_lag_statistics};
use fleet_kafka::{batch, group_member_config};
use fleet_runtime::serve::{Readiness, serve_metrics};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::ArchiverConfig;
use metrics::ArchiverMetrics;

/// Whether a batch write finished (false if it was stopped first). A panicked write
/// is an error: the replica exits non-zero, its supervisor restarts it, and the
/// uncommitted batch is read again.
async fn finished(write: JoinHandle<bool>) -> anyhow::Result<bool> {
    write.await.context("a batch write panicked")
}

pub async fn run(config: ArchiverConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = ArchiverMetrics::new();
    let readiness = Readiness::default();
    let addr = serve_metrics(
        config.metrics_addr,
        metrics.registry.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    let topics = config.topic_args.topics();
    let brokers = &config.endpoints.kafka_brokers;
    config
        .topic_args
        .ensure(brokers, &[&topics.readings, &topics.alarms])
        .await?;
    let pool = fleet_store::connect_with_retry(&config.endpoints.database_url, 20)
        .await
        .context("opening the archive database")?;
    let consumer: StreamConsumer<LagContext> = with_lag_statistics(&mut group_member_config(
        brokers,
        &config.group,
        config.session_timeout,
    ))
    // Bounds what is fetched ahead of the batch being written (per partition).
    .set("queued.max.messages.kbytes", "16384")
    .create_with_context(LagContext(LagGauge(metrics.consumer_lag_records.clone())))?;
    consumer
        .subscribe(&[&topics.readings, &topics.alarms])
        .with_context(|| format!("subscribing to {} and {}", topics.readings, topics.alarms))?;

    let (layout, reason) =
        fleet_store::layout::settle(&pool, config.timescaledb == config::TimescaleDb::Auto)
            .await
            .context("settling the archive's storage path")?;
    metrics.timescaledb.set(i64::from(
        layout == fleet_store::layout::Layout::TimescaleDb,
    ));
    tracing::info!(path = layout.name(), %reason, "archive storage path");
    let writer = Arc::new(Mutex::new(writer::Writer::new(
        pool,
        layout,
        metrics.clone(),
    )));
    tracing::info!(%addr, readings = %topics.readings, alarms = %topics.alarms, group = %config.group, "archiver running");
    readiness.set(true);
    // One batch is written while the next is gathered (the broker and the database
    // work at once); a write starts only after the previous one is durable and its
    // offsets committed, so commits stay in order and at most two batches are held.
    let mut in_flight: Option<(JoinHandle<bool>, TopicPartitionList)> = None;
    loop {
        let next = match in_flight.as_mut() {
            // A write that ends while the topics are idle is committed at once, so an
            // idle archiver has nothing uncommitted (and reports no lag).
            Some((write, _)) => {
                batch::next_batch_or(&consumer, config.batch, config.linger, &shutdown, write).await
            }
            None => {
                match batch::next_batch(&consumer, config.batch, config.linger, &shutdown).await {
                    Some(records) => batch::Next::Batch(records),
                    None => batch::Next::Stopped,
                }
            }
        };
        let records = match next {
            batch::Next::Stopped => break,
            batch::Next::Interrupted(written) => {
                let Some((_, offsets)) = in_flight.take() else {
                    continue;
                };
                if !written.context("a batch write panicked")? {
                    break; // stopping: the batch stays uncommitted and is re-read
                }
                batch::commit(&consumer, &offsets);
                continue;
            }
            batch::Next::Batch(records) => records,
        };
        let decoded = writer::decode(&records, &topics.alarms, &metrics);
        let offsets = batch::offsets_after(&records);
        drop(records);
        if let Some((write, offsets)) = in_flight.take() {
            if !finished(write).await? {
                break; // stopping: the batch stays uncommitted and is re-read
            }
            batch::commit(&consumer, &offsets);
        }
        let (writer, stop) = (Arc::clone(&writer), shutdown.clone());
        let write = tokio::spawn(async move { writer.lock().await.write(&decoded, &stop).await });
        in_flight = Some((write, offsets));
    }
    if let Some((write, offsets)) = in_flight.take()
        && finished(write).await?
    {
        batch::commit_final(&consumer, &offsets);
    }
    readiness.set(false);
    tracing::info!("archiver stopped");
    Ok(())
}
