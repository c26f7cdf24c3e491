//! One gateway's MQTT session: publishes what is in the outbox, deletes it on the
//! cloud's end-to-end ack, keeps a retained status (and a last will saying offline),
//! and reconnects with backoff and jitter when the home network or the broker goes.
//!
//! A reading is published once, then again every `resend_after` until acknowledged:
//! an ack lost with a dropped connection costs a duplicate, never a reading. While
//! resends go unanswered the interval doubles (up to 8 ×), so a slow cloud is not
//! buried under every gateway's resends; the first ack restores it.
//!
//! Which readings an ack confirms: when it lists exact seq runs (our ingest always
//! does), exactly those. An ack in the contract's plain form ("highest seq N of pump
//! P") confirms the readings of P this session *published* no later than N — not every
//! reading with a smaller seq, since a late backlog reading may have a smaller seq and
//! still be unpublished, or published after N. That inference holds for one in-order
//! consumer; the exact runs stay safe with many ingest replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_core::gateway_protocol::{
    EndToEndAck, GatewayStatus, ReadingEncoding, acks_topic, readings_topic, status_topic,
};
use fleet_core::{json, protobuf};
use fleet_runtime::Backoff;
use fleet_runtime::subscription::Subscription;
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::link::PumpLink;

/// How long the acks subscription may go unanswered before it is sent again (without
/// it nothing is ever acknowledged and the outbox only grows).
const SUBACK_TIMEOUT: Duration = Duration::from_secs(15);
/// The resend interval grows to at most this many times `resend_after`.
const MAX_RESEND_BACKOFF: u32 = 8;
use crate::metrics::GatewayMetrics;
use crate::outbox::{Outbox, Pending};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub gateway_id: String,
    /// The broker; with mqtts, this gateway authenticates with the certificate of its
    /// own id (`{cert_dir}/{gateway_id}.crt`, or the one cert file given).
    pub mqtt: fleet_runtime::MqttConfig,
    pub encoding: ReadingEncoding,
    /// Most readings published and not yet acknowledged.
    pub window: usize,
    /// Publish again when no ack came within this time.
    pub resend_after: Duration,
    pub status_interval: Duration,
    /// Stop once the link has closed and every reading is acknowledged (replays).
    pub exit_when_drained: bool,
}

impl SessionConfig {
    pub fn new(gateway_id: &str, mqtt: &fleet_runtime::MqttConfig) -> Self {
        SessionConfig {
            gateway_id: gateway_id.to_owned(),
            mqtt: mqtt.clone(),
            encoding: ReadingEncoding::Protobuf,
            window: 100,
            resend_after: Duration::from_secs(30),
            status_interval: Duration::from_secs(60),
            exit_when_drained: false,
        }
    }
}

/// Runs one gateway until `shutdown` (or, with `exit_when_drained`, until its replay is
/// fully acknowledged).
pub async fn run<L: PumpLink>(
    config: SessionConfig,
    outbox: Outbox,
    mut link: L,
    metrics: GatewayMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let outbox = Arc::new(outbox);
    let gw = config.gateway_id.clone();
    let mut options = config
        .mqtt
        .options(&gw, &gw)
        .with_context(|| format!("gateway {gw}: mqtt configuration"))?;
    let certificate_expires_at = metrics
        .certificate_expiry
        .observe(&config.mqtt, &gw)
        .with_context(|| format!("gateway {gw}: mqtt certificate"))?
        .and_then(|t| DateTime::from_timestamp(t, 0));
    let heartbeat = Heartbeat {
        gateway_id: &gw,
        outbox: &outbox,
        certificate_expires_at,
    };
    let offline = heartbeat.payload(false, None).await?;
    options
        .set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(256 * 1024, 256 * 1024)
        .set_last_will(LastWill::new(
            status_topic(&gw),
            offline,
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(options, config.window * 2 + 16);

    let mut published = Published::default();
    let mut connected = false;
    let mut link_open = true;
    let mut last_pump_contact: Option<DateTime<Utc>> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut reconnect_at: Option<Instant> = None;
    let mut resend_tick = tokio::time::interval(Duration::from_secs(1));
    let mut acks = Subscription::new(acks_topic(&gw), QoS::AtLeastOnce, SUBACK_TIMEOUT);
    // Doubles while resends go unanswered, back to `config.resend_after` on an ack.
    let mut resend_after = config.resend_after;
    let mut status_tick = tokio::time::interval(config.status_interval);
    let depth = blocking(&outbox, |o| o.depth()).await?;
    metrics.outbox_depth.add(depth as i64);

    loop {
        tokio::select! {
            event = eventloop.poll(), if reconnect_at.is_none() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if !connected {
                        metrics.connected.inc();
                        metrics.readiness.set(true);
                    }
                    connected = true;
                    backoff.reset();
                    tracing::info!(gateway_id = %gw, "mqtt connected");
                    acks.connected(&client);
                    heartbeat.publish(&client, true, last_pump_contact).await;
                    fill_window(&client, &config, &outbox, &mut published, &metrics).await?;
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if !acks.answered(&ack) {
                        // Nothing will be acknowledged until the certificate is this
                        // gateway's (logged by `answered`).
                        metrics.subscribe_refused_total.inc();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == acks_topic(&gw) => {
                    if apply_ack(&p.payload, &outbox, &mut published, &metrics).await? > 0 {
                        resend_after = config.resend_after;
                    }
                    fill_window(&client, &config, &outbox, &mut published, &metrics).await?;
                }
                Ok(_) => {}
                Err(e) => {
                    let delay = backoff.next_delay();
                    let retry_in_ms = delay.as_millis() as u64;
                    if connected {
                        metrics.reconnects_total.inc();
                        metrics.connected.dec();
                        metrics.readiness.set(metrics.connected.get() > 0);
                        tracing::warn!(gateway_id = %gw, error = %e, retry_in_ms, "mqtt connection lost");
                    } else {
                        // Never accepted: a refused certificate, a plain client at a TLS
                        // listener, a broker that is down. Counted by reason.
                        let reason = fleet_runtime::mqtt::failure_reason(&e);
                        metrics.connect_failures_total.with_label_values(&[reason]).inc();
                        tracing::warn!(gateway_id = %gw, reason, error = %e, retry_in_ms, "mqtt connection attempt failed");
                    }
                    connected = false;
                    acks.disconnected();
                    reconnect_at = Some(Instant::now() + delay);
                }
            },
            _ = sleep_until(reconnect_at), if reconnect_at.is_some() => reconnect_at = None,
            () = acks.overdue() => acks.resend(&client),
            batch = link.next_readings(), if link_open => match batch {
                Some(readings) => {
                    last_pump_contact = readings.iter().map(|r| r.measured_at).max().or(last_pump_contact);
                    let put = blocking(&outbox, move |o| o.put(&readings)).await?;
                    metrics.outbox_depth.add(put.stored as i64 - put.dropped as i64);
                    if put.dropped > 0 {
                        metrics.dropped_total.inc_by(put.dropped as u64);
                        tracing::warn!(gateway_id = %gw, dropped = put.dropped, "outbox full: readings dropped (routine first)");
                    }
                    if connected {
                        fill_window(&client, &config, &outbox, &mut published, &metrics).await?;
                    }
                }
                None => link_open = false,
            },
            _ = resend_tick.tick() => {
                if connected {
                    let stale = published.forget_older_than(resend_after);
                    if stale > 0 {
                        metrics.resent_total.inc_by(stale as u64);
                        // Nothing acknowledged for a whole interval: the path is slow or
                        // down, and resending at the same pace would only add to its
                        // load (every gateway does the same). Back off, up to a bound.
                        resend_after = (resend_after * 2).min(config.resend_after * MAX_RESEND_BACKOFF);
                    }
                    fill_window(&client, &config, &outbox, &mut published, &metrics).await?;
                }
                if config.exit_when_drained && !link_open && published.is_empty()
                    && blocking(&outbox, |o| o.depth()).await? == 0
                {
                    tracing::info!(gateway_id = %gw, "replay fully acknowledged");
                    break;
                }
            }
            _ = status_tick.tick(), if connected => {
                heartbeat.publish(&client, true, last_pump_contact).await;
            }
            _ = shutdown.cancelled() => break,
        }
    }

    // Orderly goodbye: an explicit offline status (the will is only for crashes).
    if connected {
        heartbeat.publish(&client, false, last_pump_contact).await;
        let _ = client.try_disconnect();
        let goodbye = async {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), goodbye).await;
    }
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs an outbox call off the async threads: it fsyncs.
async fn blocking<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    f: impl FnOnce(&Outbox) -> Result<T, crate::outbox::OutboxError> + Send + 'static,
) -> anyhow::Result<T> {
    let outbox = Arc::clone(outbox);
    Ok(tokio::task::spawn_blocking(move || f(&outbox)).await??)
}

/// Publishes waiting readings until the window is full. Readings already published
/// and not yet acknowledged are skipped; any other waiting reading is taken in key
/// order, so a late backlog reading is never passed over.
async fn fill_window(
    client: &AsyncClient,
    config: &SessionConfig,
    outbox: &Arc<Outbox>,
    published: &mut Published,
    metrics: &GatewayMetrics,
) -> anyhow::Result<()> {
    let room = config.window.saturating_sub(published.len());
    if room == 0 {
        return Ok(());
    }
    let scan = published.len() + room;
    let waiting = blocking(outbox, move |o| o.pending_after(None, scan)).await?;
    let topic = readings_topic(&config.gateway_id, config.encoding);
    let fresh: Vec<Pending> = waiting
        .into_iter()
        .filter(|p| !published.contains(&p.key()))
        .take(room)
        .collect();
    for entry in fresh {
        let payload = encode(&entry, config.encoding)?;
        if client
            .try_publish(&topic, QoS::AtLeastOnce, false, payload)
            .is_err()
        {
            // The client's queue is full; the resend tick tries again.
            break;
        }
        metrics.published_total.inc();
        published.record(entry.key());
    }
    Ok(())
}

fn encode(entry: &Pending, encoding: ReadingEncoding) -> anyhow::Result<Vec<u8>> {
    Ok(match encoding {
        ReadingEncoding::Protobuf => entry.payload.clone(),
        ReadingEncoding::Json => {
            let reading = protobuf::decode_reading(&entry.payload)
                .with_context(|| format!("outbox entry {:?} is corrupt", entry.key()))?;
            json::to_json(&reading).into_bytes()
        }
    })
}

async fn apply_ack(
    payload: &[u8],
    outbox: &Arc<Outbox>,
    published: &mut Published,
    metrics: &GatewayMetrics,
) -> anyhow::Result<usize> {
    let ack: EndToEndAck = match serde_json::from_slice(payload) {
        Ok(ack) => ack,
        Err(e) => {
            metrics.bad_acks_total.inc();
            tracing::warn!(error = %e, "ignoring an unreadable end-to-end ack");
            return Ok(0);
        }
    };
    let mut durable = Vec::new();
    if ack.ranges.is_empty() {
        for (pump_id, seq) in &ack.acks {
            durable.extend(published.acknowledge_up_to(pump_id, *seq));
        }
    } else {
        durable.extend(published.acknowledge_exact(&ack));
    }
    if durable.is_empty() {
        return Ok(0);
    }
    let removed = blocking(outbox, move |o| o.remove(&durable)).await?;
    metrics.acked_total.inc_by(removed as u64);
    metrics.outbox_depth.sub(removed as i64);
    Ok(removed)
}

/// Readings published and not yet acknowledged, with the order they were published in.
#[derive(Debug, Default)]
struct Published {
    entries: HashMap<(String, u64), (Instant, u64)>,
    next_order: u64,
}

impl Published {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn contains(&self, key: &(String, u64)) -> bool {
        self.entries.contains_key(key)
    }

    fn record(&mut self, key: (String, u64)) {
        self.next_order += 1;
        self.entries.insert(key, (Instant::now(), self.next_order));
    }

    /// Forgets readings sent longer ago than `age`, so they are published again.
    fn forget_older_than(&mut self, age: Duration) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, (at, _)| at.elapsed() < age);
        before - self.entries.len()
    }

    /// The ack for `(pump_id, seq)`: that reading and every reading of the pump published
    /// before it are durable. Returns them (forgotten here). An ack for a reading this
    /// session did not publish (an older session's) confirms only that reading.
    fn acknowledge_up_to(&mut self, pump_id: &str, seq: u64) -> Vec<(String, u64)> {
        let Some(&(_, order)) = self.entries.get(&(pump_id.to_owned(), seq)) else {
            return vec![(pump_id.to_owned(), seq)];
        };
        let durable: Vec<(String, u64)> = self
            .entries
            .iter()
            .filter(|((p, _), (_, o))| p == pump_id && *o <= order)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &durable {
            self.entries.remove(key);
        }
        durable
    }

    /// The readings an ack with exact runs names (published or not by this session: a
    /// reading an earlier session published is confirmed too, and removed from disk).
    fn acknowledge_exact(&mut self, ack: &EndToEndAck) -> Vec<(String, u64)> {
        let mut durable: Vec<(String, u64)> = self
            .entries
            .keys()
            .filter(|(p, s)| ack.covers_exactly(p, *s) == Some(true))
            .cloned()
            .collect();
        for key in &durable {
            self.entries.remove(key);
        }
        // Seqs outside this session's published set: at most the ack's own highest
        // seqs, confirmed individually (the outbox ignores absent keys).
        for (pump_id, seq) in &ack.acks {
            let key = (pump_id.clone(), *seq);
            if !durable.contains(&key) {
                durable.push(key);
            }
        }
        durable
    }
}

/// What goes into this gateway's retained status besides the moment's figures.
struct Heartbeat<'a> {
    gateway_id: &'a str,
    outbox: &'a Arc<Outbox>,
    certificate_expires_at: Option<DateTime<Utc>>,
}

impl Heartbeat<'_> {
    async fn payload(
        &self,
        online: bool,
        last_pump_contact_at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<u8>> {
        let status = GatewayStatus {
            gateway_id: self.gateway_id.to_owned(),
            online,
            outbox_depth: blocking(self.outbox, |o| o.depth()).await?,
            dropped_total: blocking(self.outbox, |o| o.dropped_total()).await?,
            last_pump_contact_at,
            certificate_expires_at: self.certificate_expires_at,
            at: Utc::now(),
        };
        Ok(serde_json::to_vec(&status)?)
    }

    async fn publish(
        &self,
        client: &AsyncClient,
        online: bool,
        last_pump_contact_at: Option<DateTime<Utc>>,
    ) {
        let gateway_id = self.gateway_id;
        match self.payload(online, last_pump_contact_at).await {
            Ok(payload) => {
                if let Err(e) =
                    client.try_publish(status_topic(gateway_id), QoS::AtLeastOnce, true, payload)
                {
                    tracing::warn!(gateway_id, error = %e, "cannot queue the status");
                }
            }
            Err(e) => {
                tracing::warn!(gateway_id, error = %e, "cannot read the outbox for the status")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pump: &str, seq: u64) -> (String, u64) {
        (pump.to_owned(), seq)
    }

    #[test]
    fn an_ack_covers_what_was_published_before_it_not_smaller_seqs() {
        let mut p = Published::default();
        p.record(key("a", 10));
        p.record(key("a", 11));
        p.record(key("b", 3));
        // A late backlog reading with a smaller seq, published after seq 11.
        p.record(key("a", 5));
        let mut durable = p.acknowledge_up_to("a", 11);
        durable.sort();
        assert_eq!(durable, [key("a", 10), key("a", 11)]);
        assert!(
            p.contains(&key("a", 5)),
            "published after the acked reading: still waiting"
        );
        assert!(
            p.contains(&key("b", 3)),
            "another pump's readings are untouched"
        );
        assert_eq!(
            p.acknowledge_up_to("a", 99),
            [key("a", 99)],
            "an unknown ack confirms only itself"
        );
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn an_ack_with_runs_confirms_exactly_those_readings() {
        let mut p = Published::default();
        for seq in [1, 2, 3, 4, 8] {
            p.record(key("a", seq));
        }
        // Seqs 1 and 3 went to another ingest replica that has not written them yet.
        let durable_seqs = [("a".to_owned(), [2u64, 4, 8].into())].into();
        let ack = EndToEndAck::from_durable(&durable_seqs);
        let mut durable = p.acknowledge_exact(&ack);
        durable.sort();
        assert_eq!(durable, [key("a", 2), key("a", 4), key("a", 8)]);
        assert!(p.contains(&key("a", 1)) && p.contains(&key("a", 3)));
    }
}
