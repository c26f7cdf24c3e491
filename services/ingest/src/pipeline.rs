//! One ingest replica's main loop.
//!
//! Order is what makes this at-least-once without loss: a reading is acknowledged to
//! the broker (PUBACK) and end to end (the gateway's ack topic) only after Kafka's
//! delivery report says it is durable — in the readings topic or, if rejected, in the
//! dead-letter topic. Acks go out in the order readings arrived (MQTT requires it for
//! PUBACKs). The session is clean: a reading this replica had not made durable when it
//! died is resent by its gateway, which keeps it until an ack names it.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use std::sync::Arc;

use crate::pairing;
use fleet_core::gateway_protocol::{EndToEndAck, INGEST_SHARED_SUBSCRIPTION, acks_topic};
use fleet_kafka::{DeadLetter, FleetProducer};
use fleet_runtime::Backoff;
use fleet_runtime::serve::Readiness;
use fleet_runtime::subscription::Subscription;
use fleet_store::registry::RegistryWatch as Pairing;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::acks::AckBatch;
use crate::config::IngestConfig;
use crate::metrics::IngestMetrics;
use crate::triage::{Limits, triage};

/// The largest MQTT packet ingest accepts off the wire. Bigger than the payload limit
/// on purpose: an oversized reading must arrive so it can be dead-lettered; a packet
/// the client refused would be redelivered by the broker forever.
const MAX_MQTT_PACKET_BYTES: usize = 16 * 1024 * 1024;
/// End-to-end acks kept for a later round when the client's queue is full.
const MAX_UNSENT_ACKS: usize = 10_000;
/// How long shutdown waits for in-flight readings before leaving them to the broker.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What became of one MQTT message.
struct Handled {
    publish: Publish,
    /// Durable somewhere (readings or dead-letter topic): safe to acknowledge.
    durable: bool,
    /// `(gateway_id, pump_id, seq)` to acknowledge end to end.
    end_to_end: Option<(String, String, u64)>,
}

/// Runs one replica until `shutdown` is cancelled, then winds down in order: stop
/// taking messages, finish in-flight ones, send their acks, flush Kafka, disconnect.
pub async fn run(config: IngestConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let topics = config.topic_args.topics();
    let brokers = &config.endpoints.kafka_brokers;
    config
        .topic_args
        .ensure(brokers, &[&topics.readings, &topics.dead_letter])
        .await?;
    let producer = FleetProducer::new(brokers, topics)?;
    let metrics = IngestMetrics::new();
    let pairing = match &config.registry_file {
        Some(path) => pairing::from_file(path)?,
        None => {
            let pool = fleet_store::connect_with_retry(&config.endpoints.database_url, 20)
                .await
                .context("opening the registry database")?;
            let watch_metrics = fleet_store::registry::WatchMetrics {
                version: metrics.registry_version.clone(),
                refresh_failures: metrics.registry_refresh_failures_total.clone(),
            };
            fleet_store::registry::watch(
                pool,
                config.registry_refresh,
                watch_metrics,
                shutdown.clone(),
            )
            .await
            .context("loading the registry from the database")?
        }
    };
    let readiness = Readiness::default();
    let metrics_addr = fleet_runtime::serve::serve_metrics(
        config.metrics_addr,
        metrics.registry.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;

    // Ingest's identity: with mqtts, the `fleet-ingest` certificate (or the one cert
    // file given), which the broker's ACL lets read every gateway's readings and write
    // every gateway's acks.
    let mut options = config
        .endpoints
        .mqtt()
        .options(&config.client_id, fleet_runtime::mqtt::INGEST_IDENTITY)
        .context("ingest: mqtt configuration")?;
    metrics
        .certificate_expiry
        .observe(
            &config.endpoints.mqtt(),
            fleet_runtime::mqtt::INGEST_IDENTITY,
        )
        .context("ingest: mqtt certificate")?;
    options
        // Clean: a persistent session of a replica that is gone would keep receiving its
        // share of readings at the broker, delaying them until the gateways resend.
        .set_clean_session(true)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES)
        // Outgoing QoS 1 acks in flight; while this is full the client takes no
        // requests at all, PUBACKs included.
        .set_inflight(1000);
    // Room for a PUBACK for every reading that can be in the pipeline or its queue, and
    // a round of end-to-end acks: the pipeline never waits on this queue (see
    // `Pipeline`), so the event loop and the pipeline cannot wait on each other.
    let requests = config.max_in_flight.max(1) * 2 + 1024;
    let (client, eventloop) = AsyncClient::new(options, requests);
    let (tx, rx) = mpsc::channel(config.max_in_flight.max(1));
    let stop_mqtt = CancellationToken::new();
    let mqtt = tokio::spawn(mqtt_loop(
        eventloop,
        client.clone(),
        tx,
        metrics.clone(),
        readiness,
        shutdown.clone(),
        stop_mqtt.clone(),
    ));
    // The gateways' statuses, on a connection of their own (same identity).
    let status_options = config
        .endpoints
        .mqtt()
        .options(
            &format!("{}-status", config.client_id),
            fleet_runtime::mqtt::INGEST_IDENTITY,
        )
        .context("ingest: mqtt configuration for gateway statuses")?;
    let statuses = tokio::spawn(crate::gateway_status::follow(
        status_options,
        config.gateway_status_capacity,
        metrics.gateway_status.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        client_id = %config.client_id,
        registry_pumps = pairing.borrow().pumps.len(),
        metrics = %metrics_addr,
        "ingest running"
    );

    let limits = Limits {
        max_payload_bytes: config.max_payload_bytes,
        max_future_skew: chrono::Duration::from_std(config.max_future_skew)
            .context("max future skew out of range")?,
    };
    let pipeline = Pipeline {
        client: client.clone(),
        producer: producer.clone(),
        pairing,
        limits,
        metrics,
        shutdown: shutdown.clone(),
    };
    pipeline
        .process(rx, config.max_in_flight.max(1), config.ack_interval)
        .await;

    if let Err(e) = producer.flush(Duration::from_secs(5)) {
        tracing::warn!(error = %e, "kafka flush at shutdown");
    }
    let _ = client.disconnect().await;
    // Let the event loop send the last acks and the DISCONNECT, bounded.
    if tokio::time::timeout(Duration::from_secs(5), mqtt)
        .await
        .is_err()
    {
        stop_mqtt.cancel();
    }
    // It stops on `shutdown` by itself; bounded all the same.
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), statuses).await {
        tracing::error!(error = %e, "the gateway status follower had failed");
    }
    tracing::info!("ingest stopped");
    Ok(())
}

/// How long the readings subscription may go unanswered before it is sent again.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls the MQTT connection: forwards readings to the pipeline (waiting when it is
/// full, which is the back-pressure), and reconnects with backoff when the broker goes.
async fn mqtt_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::Sender<Publish>,
    metrics: IngestMetrics,
    readiness: Readiness,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut readings =
        Subscription::new(INGEST_SHARED_SUBSCRIPTION, QoS::AtLeastOnce, SUBACK_TIMEOUT);
    let mut connected = false;
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            () = readings.overdue() => {
                // No reading arrives until it is answered.
                metrics.subscribe_retries_total.inc();
                readings.resend(&client);
                continue;
            }
            _ = stop.cancelled() => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connected = true;
                backoff.reset();
                tracing::info!(session_present = ack.session_present, "mqtt connected");
                readings.connected(&client);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if readings.answered(&ack) {
                    readiness.set(true);
                } else {
                    // Unready for good: the ACL does not let this identity read the
                    // readings (logged by `answered`).
                    metrics.subscribe_refused_total.inc();
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if shutdown.is_cancelled() {
                    // Not acknowledged: the broker keeps it for this session.
                    continue;
                }
                tokio::select! {
                    sent = tx.send(publish) => if sent.is_err() { return },
                    _ = shutdown.cancelled() => {}
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                readiness.set(false);
                readings.disconnected();
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                if std::mem::take(&mut connected) {
                    // Only a connection that was up is lost: a failed attempt is
                    // counted by its reason below, not as a disconnect.
                    metrics.mqtt_disconnects_total.inc();
                    tracing::warn!(error = %e, retry_in_ms, "mqtt connection lost");
                } else {
                    let reason = fleet_runtime::mqtt::failure_reason(&e);
                    metrics
                        .connect_failures_total
                        .with_label_values(&[reason])
                        .inc();
                    tracing::warn!(reason, error = %e, retry_in_ms, "mqtt connection attempt failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

struct Pipeline {
    client: AsyncClient,
    producer: FleetProducer,
    pairing: Pairing,
    limits: Limits,
    metrics: IngestMetrics,
    shutdown: CancellationToken,
}

impl Pipeline {
    /// The loop never awaits the MQTT client's request queue (only `try_*` calls):
    /// the event loop may be waiting for this loop to take a reading, and if this loop
    /// waited for the event loop in turn, both would stop.
    async fn process(
        &self,
        mut rx: mpsc::Receiver<Publish>,
        max_in_flight: usize,
        ack_interval: Duration,
    ) {
        let mut pending = FuturesOrdered::new();
        let mut acks = AckBatch::default();
        let mut unsent: Vec<(String, EndToEndAck)> = Vec::new();
        // PUBACKs the client could not queue yet, in arrival order. Never dropped: the
        // broker stops sending once its in-flight window is full of unacknowledged
        // messages, which bounds this queue.
        let mut pubacks: VecDeque<Publish> = VecDeque::new();
        let mut tick = tokio::time::interval(ack_interval);
        let mut stopping = false;
        let grace = tokio::time::sleep(Duration::MAX);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                biased;
                Some(handled) = pending.next(), if !pending.is_empty() => {
                    self.complete(handled, &mut acks, &mut pubacks);
                }
                received = rx.recv(), if !stopping && pending.len() < max_in_flight => {
                    match received {
                        Some(publish) => {
                            self.metrics.in_flight.inc();
                            pending.push_back(self.handle(publish));
                        }
                        None => stopping = true,
                    }
                }
                _ = tick.tick() => {
                    self.send_pubacks(&mut pubacks);
                    self.send_acks(&mut acks, &mut unsent);
                }
                _ = self.shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                }
                _ = &mut grace => {
                    tracing::warn!(left = pending.len(), "shutdown grace over; unacknowledged readings stay with the broker");
                    break;
                }
            }
            if stopping && pending.is_empty() {
                break;
            }
        }
        self.send_pubacks(&mut pubacks);
        self.send_acks(&mut acks, &mut unsent);
    }

    /// Triage, then write to Kafka, retrying with backoff until it is durable or the
    /// process is stopping (then the reading stays unacknowledged with the broker).
    async fn handle(&self, publish: Publish) -> Handled {
        let registry = Arc::clone(&self.pairing.borrow());
        let outcome = triage(
            &publish.topic,
            &publish.payload,
            &registry,
            Utc::now(),
            &self.limits,
        );
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let arrived = std::time::Instant::now();
        loop {
            let attempt = match &outcome {
                Ok(accepted) => self
                    .producer
                    .send_reading(&accepted.reading)
                    .await
                    .map(|_| {
                        self.metrics.readings_total.inc();
                        self.metrics
                            .produce_seconds
                            .observe(arrived.elapsed().as_secs_f64());
                        Some((
                            accepted.gateway_id.clone(),
                            accepted.reading.pump_id.clone(),
                            accepted.reading.seq,
                        ))
                    }),
                Err(rejected) => {
                    let dl = DeadLetter {
                        key: rejected.gateway_id.clone().unwrap_or_default(),
                        source_topic: publish.topic.clone(),
                        reason: rejected.reason.to_owned(),
                        detail: rejected.detail.clone(),
                        payload: publish.payload.to_vec(),
                        payload_bytes: publish.payload.len(),
                        received_at: fleet_core::json::format_timestamp(&Utc::now()),
                    };
                    self.producer.send_dead_letter(&dl).await.map(|_| {
                        self.metrics
                            .dead_letters_total
                            .with_label_values(&[rejected.reason])
                            .inc();
                        tracing::warn!(
                            reason = rejected.reason,
                            topic = %publish.topic,
                            detail = %rejected.detail,
                            "dead-lettered"
                        );
                        match (&rejected.gateway_id, &rejected.key) {
                            (Some(gw), Some((pump, seq))) => Some((gw.clone(), pump.clone(), *seq)),
                            _ => None,
                        }
                    })
                }
            };
            match attempt {
                Ok(end_to_end) => {
                    return Handled {
                        publish,
                        durable: true,
                        end_to_end,
                    };
                }
                Err(e) => {
                    self.metrics.produce_retries_total.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "kafka write failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.cancelled() => {
                            return Handled { publish, durable: false, end_to_end: None };
                        }
                    }
                }
            }
        }
    }

    fn complete(&self, handled: Handled, acks: &mut AckBatch, pubacks: &mut VecDeque<Publish>) {
        self.metrics.in_flight.dec();
        if !handled.durable {
            return;
        }
        if let Some((gateway_id, pump_id, seq)) = handled.end_to_end {
            acks.record(&gateway_id, &pump_id, seq);
        }
        pubacks.push_back(handled.publish);
        self.send_pubacks(pubacks);
    }

    /// Queues waiting PUBACKs, in order, as far as the client has room.
    fn send_pubacks(&self, pubacks: &mut VecDeque<Publish>) {
        while let Some(publish) = pubacks.front() {
            if self.client.try_ack(publish).is_err() {
                self.metrics.puback_waits_total.inc();
                return;
            }
            pubacks.pop_front();
        }
    }

    /// Sends this round's end-to-end acks; any the client cannot queue now wait for the
    /// next round (bounded: beyond `MAX_UNSENT_ACKS` the oldest are dropped, and their
    /// gateways resend those readings).
    fn send_acks(&self, acks: &mut AckBatch, unsent: &mut Vec<(String, EndToEndAck)>) {
        let mut round = std::mem::take(unsent);
        round.extend(acks.take());
        let mut queue_full = false;
        for (gateway_id, ack) in round {
            if queue_full {
                unsent.push((gateway_id, ack));
                continue;
            }
            let payload = match serde_json::to_vec(&ack) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an end-to-end ack");
                    continue;
                }
            };
            match self
                .client
                .try_publish(acks_topic(&gateway_id), QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => self.metrics.acks_sent_total.inc(),
                Err(_) => {
                    queue_full = true;
                    unsent.push((gateway_id, ack));
                }
            }
        }
        if unsent.len() > MAX_UNSENT_ACKS {
            let excess = unsent.len() - MAX_UNSENT_ACKS;
            unsent.drain(..excess);
            self.metrics.acks_dropped_total.inc_by(excess as u64);
            tracing::warn!(
                dropped = excess,
                "end-to-end acks dropped; their gateways will resend"
            );
        }
    }
}
