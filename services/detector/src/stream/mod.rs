//! The streaming detector: one consumer group member on the readings topic.
//!
//! Data flow in one replica:
//! `recv()` → the record's [`partition::OwnedPartition`] (claimed from its checkpoint
//! on assignment) → `fleet_core::detect::Detector` → alarm events queued to the alarms
//! topic → every `checkpoint_interval`: wait for the broker to confirm those events,
//! then write the partition's offset, clock and changed pumps to PostgreSQL in one
//! transaction, then commit the offset to the group (for lag monitoring only: the
//! checkpoint is the truth).
//!
//! A crash loses at most the work since the last checkpoint: the next owner restores
//! the checkpoint and re-reads from its offset, and because detection is deterministic
//! it emits the very same events again, with the same `(alarm_id, revision)`, which is
//! what consumers deduplicate by. Nothing is emitted that a checkpoint has not yet
//! vouched for being re-emitted after a crash, and no checkpoint is written before the
//! events it covers are confirmed.

pub mod checkpoint;
pub mod config;
pub mod metrics;
mod partition;
mod rebalance;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleet_core::detect::DetectorConfig;
use fleet_core::{AlarmEvent, json};
use fleet_kafka::lag::{LagGauge, with_lag_statistics};
use fleet_kafka::{DeadLetter, FleetProducer, Topics, group_member_config};
use fleet_runtime::backoff::Backoff;
use fleet_runtime::serve::{Readiness, serve_metrics};
use futures_util::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use checkpoint::{CheckpointError, CheckpointStore};
pub use config::StreamConfig;
use metrics::DetectorMetrics;
use partition::{OwnedPartition, Position};
use rebalance::{Change, RebalanceLog};

/// Housekeeping cadence: rebalance notes, silent partitions, checkpoints.
const TICK: Duration = Duration::from_millis(200);
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one replica until `shutdown`, then checkpoints what it owns and returns.
pub async fn run(config: StreamConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = DetectorMetrics::new();
    let readiness = Readiness::default();
    let addr = serve_metrics(
        config.metrics_addr,
        metrics.registry.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(%addr, "metrics, health and readiness served");

    let topics = config.topic_args.topics();
    let brokers = &config.endpoints.kafka_brokers;
    config
        .topic_args
        .ensure(
            brokers,
            &[&topics.readings, &topics.alarms, &topics.dead_letter],
        )
        .await?;
    let pool = fleet_store::connect_with_retry(&config.endpoints.database_url, 20)
        .await
        .context("opening the checkpoint database")?;
    let detector_config = crate::load_config(config.detector_config.as_deref())?;
    let store = CheckpointStore::new(pool, &config.group, &topics.readings);
    let producer = FleetProducer::new(brokers, topics.clone())?;
    let consumer: StreamConsumer<RebalanceLog> = with_lag_statistics(&mut group_member_config(
        brokers,
        &config.group,
        config.session_timeout,
    ))
    .create_with_context(RebalanceLog::new(LagGauge(
        metrics.consumer_lag_records.clone(),
    )))?;
    consumer
        .subscribe(&[&topics.readings])
        .with_context(|| format!("subscribing to {}", topics.readings))?;
    tracing::info!(topic = %topics.readings, group = %config.group, "detector started");

    let mut replica = Replica {
        detector_config,
        store,
        producer,
        consumer,
        topics,
        metrics,
        partitions: BTreeMap::new(),
        config,
    };
    readiness.set(true);
    let result = replica.run_until(&shutdown).await;
    readiness.set(false);
    // Whatever ended the loop, save what is confirmed: less to re-read next time.
    if let Err(e) = replica.checkpoint_all().await {
        tracing::warn!(error = %e, "final checkpoint");
    }
    result
}

struct Replica {
    config: StreamConfig,
    detector_config: DetectorConfig,
    store: CheckpointStore,
    producer: FleetProducer,
    consumer: StreamConsumer<RebalanceLog>,
    topics: Topics,
    metrics: DetectorMetrics,
    partitions: BTreeMap<i32, OwnedPartition>,
}

impl Replica {
    async fn run_until(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_checkpoint = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                message = async { self.consumer.recv().await.map(|m| m.detach()) } => {
                    self.apply_rebalance().await?;
                    match message {
                        Ok(message) => self.on_record(&message).await?,
                        Err(e) => tracing::warn!(error = %e, "consumer error"),
                    }
                }
                _ = tick.tick() => {
                    self.apply_rebalance().await?;
                    self.advance_silent_partitions().await;
                    self.update_gauges();
                }
            }
            let pending: usize = self.partitions.values().map(|p| p.pending.len()).sum();
            if last_checkpoint.elapsed() >= self.config.checkpoint_interval
                || pending >= self.config.max_pending
            {
                self.checkpoint_all().await?;
                last_checkpoint = Instant::now();
            }
        }
    }

    /// Acts on assignment changes noted by the rebalance callbacks.
    async fn apply_rebalance(&mut self) -> anyhow::Result<()> {
        for change in self.consumer.context().take() {
            match change {
                Change::Revoked(partitions) => {
                    for p in partitions {
                        // A last checkpoint while the epoch is still ours; if the new
                        // owner was quicker, the fence refuses it and nothing is lost.
                        if let Err(e) = self.checkpoint(p).await {
                            tracing::warn!(partition = p, error = %e, "last checkpoint of a revoked partition");
                        }
                        self.partitions.remove(&p);
                    }
                }
                Change::Assigned(partitions) => {
                    for p in partitions {
                        // Claimed now, not at the first record: a partition whose pumps
                        // are all silent still needs its clock, for TELEMETRY_LOST.
                        self.owned(p).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The partition's state, claimed from its checkpoint if this replica does not
    /// hold it yet. Retries a failing database with backoff, then gives up (the caller
    /// exits and the supervisor restarts the replica, which resumes from the checkpoint).
    async fn owned(&mut self, partition: i32) -> anyhow::Result<&mut OwnedPartition> {
        if !self.partitions.contains_key(&partition) {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            let claimed = loop {
                match self.store.claim(partition, &self.detector_config).await {
                    Ok(claimed) => break claimed,
                    Err(e @ CheckpointError::Database(_))
                        if backoff.attempts() + 1 < self.config.claim_attempts =>
                    {
                        let delay = backoff.next_delay();
                        tracing::warn!(partition, error = %e, retry_in = ?delay, "claiming partition failed");
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("claiming partition {partition}"));
                    }
                }
            };
            tracing::info!(
                partition,
                epoch = claimed.epoch,
                next_offset = ?claimed.next_offset,
                pumps = claimed.detector.pump_count(),
                "partition claimed from its checkpoint"
            );
            self.partitions
                .insert(partition, OwnedPartition::new(partition, claimed));
        }
        self.partitions
            .get_mut(&partition)
            .context("partition was just claimed")
    }

    async fn on_record(&mut self, message: &OwnedMessage) -> anyhow::Result<()> {
        let (partition, offset) = (message.partition(), message.offset());
        let position = self.owned(partition).await?.position(offset);
        match position {
            Position::Seen => {
                self.metrics.records_skipped_total.inc();
                return Ok(());
            }
            Position::Ahead { next_offset } => {
                // Records between the checkpoint and this one were never applied here
                // (the group's position was ahead of the checkpoint): read them first.
                tracing::info!(
                    partition,
                    offset,
                    next_offset,
                    "seeking back to the checkpoint"
                );
                self.consumer
                    .seek(
                        &self.topics.readings,
                        partition,
                        Offset::Offset(next_offset),
                        SEEK_TIMEOUT,
                    )
                    .with_context(|| format!("seeking partition {partition} to {next_offset}"))?;
                return Ok(());
            }
            Position::AfterGap { next_offset } => {
                self.metrics.offset_gaps_total.inc();
                tracing::error!(
                    partition,
                    from = next_offset,
                    to = offset,
                    "records after the checkpoint are gone from the log (retention?); their alarms cannot be evaluated"
                );
            }
            Position::Apply => {}
        }
        let reading = match fleet_kafka::decode_reading(message) {
            Ok(reading) => Some(reading),
            Err(e) => {
                self.dead_letter(message, &e.to_string()).await;
                None
            }
        };
        let owned = self.owned(partition).await?;
        let events = owned.apply(offset, reading.as_ref());
        if reading.is_some() {
            self.metrics.readings_total.inc();
        }
        self.emit(partition, events).await;
        Ok(())
    }

    /// A record that does not decode cannot be evaluated; it is kept, with the reason,
    /// in the dead-letter topic (it also stays in the readings topic until retention).
    async fn dead_letter(&self, message: &OwnedMessage, detail: &str) {
        self.metrics.undecodable_total.inc();
        tracing::error!(partition = message.partition(), offset = message.offset(), %detail, "undecodable record");
        let payload = message.payload().unwrap_or_default();
        let letter = DeadLetter {
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            source_topic: format!(
                "{}/{}@{}",
                message.topic(),
                message.partition(),
                message.offset()
            ),
            reason: "undecodable_record".to_owned(),
            detail: detail.to_owned(),
            payload: payload.to_vec(),
            payload_bytes: payload.len(),
            received_at: json::format_timestamp(&chrono::Utc::now()),
        };
        if let Err(e) = self.producer.send_dead_letter(&letter).await {
            tracing::error!(error = %e, "dead letter not written; the record stays in the readings topic");
        }
    }

    /// Queues alarm events; their deliveries are awaited before the next checkpoint.
    async fn emit(&mut self, partition: i32, events: Vec<AlarmEvent>) {
        for event in events {
            self.metrics
                .alarm_events_total
                .with_label_values(&[event.kind.name(), event.state.name()])
                .inc();
            tracing::info!(
                alarm_id = %event.alarm_id,
                revision = event.revision,
                state = event.state.name(),
                priority = ?event.priority,
                "alarm event"
            );
            match self.producer.queue_alarm(&event).await {
                Ok(delivery) => {
                    if let Some(owned) = self.partitions.get_mut(&partition) {
                        owned.pending.push(delivery);
                    }
                }
                Err(e) => {
                    // Not even queued: mark the partition so the checkpoint rewinds it.
                    self.metrics.alarm_delivery_failures_total.inc();
                    tracing::error!(partition, error = %e, "alarm event not queued");
                    if let Some(owned) = self.partitions.get_mut(&partition) {
                        owned.failed_delivery = true;
                    }
                }
            }
        }
    }

    async fn advance_silent_partitions(&mut self) {
        let now = Instant::now();
        let idle_after = self.config.idle_advance_after;
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for p in partitions {
            let events = match self.partitions.get_mut(&p) {
                Some(owned) => owned.advance_if_idle(idle_after, now),
                None => continue,
            };
            self.emit(p, events).await;
        }
    }

    async fn checkpoint_all(&mut self) -> anyhow::Result<()> {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        let mut committed = TopicPartitionList::new();
        for p in partitions {
            if let Some(next_offset) = self.checkpoint(p).await? {
                let _ = committed.add_partition_offset(
                    &self.topics.readings,
                    p,
                    Offset::Offset(next_offset),
                );
            }
        }
        if committed.count() > 0
            && let Err(e) = self.consumer.commit(&committed, CommitMode::Async)
        {
            tracing::warn!(error = %e, "committing offsets to the group (lag monitoring only)");
        }
        self.update_gauges();
        Ok(())
    }

    /// Checkpoints one partition once its alarm events are confirmed; returns the
    /// offset saved. A partition whose events were not confirmed is rewound instead.
    /// Fails only when a rewind cannot reload the checkpoint.
    async fn checkpoint(&mut self, p: i32) -> anyhow::Result<Option<i64>> {
        let Some(owned) = self.partitions.get_mut(&p) else {
            return Ok(None);
        };
        if !owned.dirty && owned.pending.is_empty() && owned.unsaved.is_empty() {
            return Ok(None);
        }
        let deliveries = std::mem::take(&mut owned.pending);
        let results = join_all(deliveries.into_iter().map(|d| d.delivered())).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 || owned.failed_delivery {
            self.metrics
                .alarm_delivery_failures_total
                .inc_by(failed as u64);
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                tracing::error!(partition = p, failed, error = %e, "alarm events not confirmed; rewinding to the checkpoint");
            }
            self.rewind(p).await?;
            return Ok(None);
        }
        let Some(next_offset) = owned.next_offset() else {
            return Ok(None);
        };
        if let Err(e) = owned.collect_changed() {
            // A state that does not serialize is a bug; keep running on what we have.
            self.metrics.checkpoint_failures_total.inc();
            tracing::error!(partition = p, error = %e, "checkpoint not written");
            return Ok(None);
        }
        let clock = owned.detector().clock();
        let started = Instant::now();
        let pumps = owned.unsaved.len();
        match self
            .store
            .save(p, owned.epoch, next_offset, clock, &owned.unsaved)
            .await
        {
            Ok(()) => {
                self.metrics
                    .checkpoint_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(partition = p, next_offset, pumps, took = ?started.elapsed(), "checkpoint");
                owned.unsaved.clear();
                owned.dirty = false;
                self.metrics.checkpoints_total.inc();
                Ok(Some(next_offset))
            }
            Err(e @ CheckpointError::Fenced { .. }) => {
                self.metrics.fenced_total.inc();
                tracing::warn!(partition = p, error = %e, "partition lost to another replica");
                self.partitions.remove(&p);
                Ok(None)
            }
            Err(e) => {
                self.metrics.checkpoint_failures_total.inc();
                tracing::warn!(partition = p, error = %e, "checkpoint failed; retrying at the next interval");
                Ok(None)
            }
        }
    }

    /// Drops the partition's state, claims its checkpoint again and re-reads from its
    /// offset, so alarm events that were not confirmed are emitted again. If that
    /// fails the replica must stop (its supervisor restarts it from the checkpoint):
    /// carrying on would skip those events for good.
    async fn rewind(&mut self, p: i32) -> anyhow::Result<()> {
        self.metrics.rewinds_total.inc();
        self.partitions.remove(&p);
        let topic = self.topics.readings.clone();
        let owned = self.owned(p).await?;
        let offset = owned
            .next_offset()
            .map_or(Offset::Beginning, Offset::Offset);
        owned.mark_sought();
        self.consumer
            .seek(&topic, p, offset, SEEK_TIMEOUT)
            .with_context(|| format!("rewinding partition {p} to {offset:?}"))?;
        Ok(())
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.partitions.set(self.partitions.len() as i64);
        m.pumps.set(
            self.partitions
                .values()
                .map(|p| p.detector().pump_count() as i64)
                .sum(),
        );
        m.pending_deliveries.set(
            self.partitions
                .values()
                .map(|p| p.pending.len() as i64)
                .sum(),
        );
        let slowest = self
            .partitions
            .values()
            .filter_map(|p| p.detector().clock())
            .min();
        if let Some(clock) = slowest {
            m.clock_lag_seconds
                .set((chrono::Utc::now() - clock).num_seconds());
        }
    }
}
