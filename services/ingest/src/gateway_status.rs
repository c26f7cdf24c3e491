//! The gateways' own view, seen from the cloud: every gateway keeps a retained status
//! on `fleet/v1/{gateway_id}/status` (online or offline, its outbox depth, readings it
//! dropped, when its certificate expires), and its last will turns it offline. This
//! task follows those statuses on a connection of its own (so the readings path never
//! waits on it) and exports fleet totals: how many gateways are online, how many
//! readings wait in home outboxes, the deepest outbox, how many readings outboxes have
//! dropped, and the gateways whose certificates are about to lock them out. Never one
//! series per gateway: the dashboard and the alerts need the totals (a gateway's own
//! figures are in its retained status, for `mosquitto_sub` or a future API view).
//!
//! Every ingest replica follows every status (the subscription is not shared), so each
//! exports the whole fleet's figures; alert on `max()` over replicas, not `sum()`.

use std::collections::HashMap;
use std::time::Duration;

use fleet_core::gateway_protocol::{GatewayStatus, STATUS_SUBSCRIPTION, TopicKind, parse_topic};
use fleet_runtime::Backoff;
use fleet_runtime::mqtt::certificate::EXPIRY_WARNING;
use fleet_runtime::subscription::Subscription;
use prometheus::{IntCounter, IntGauge, IntGaugeVec};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio_util::sync::CancellationToken;

/// What a gateway last said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Last {
    online: bool,
    outbox_depth: u64,
    dropped_total: u64,
    /// Unix seconds.
    certificate_expires_at: Option<i64>,
}

/// Fleet totals over the gateways' last statuses, bounded to `capacity` gateways.
#[derive(Debug)]
pub struct Fleet {
    last: HashMap<String, Last>,
    capacity: usize,
    online: u64,
    outbox: u64,
    dropped: u64,
}

/// The most readings one gateway may claim to hold or to have dropped: far beyond any
/// outbox (50,000 by default), and small enough that the fleet's sums of them can never
/// overflow. A status claiming more is refused as unreadable.
const MAX_REPORTED_READINGS: u64 = 1 << 40;

/// What happened to one status message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Recorded,
    /// Unreadable, or its `gateway_id` is not its topic's.
    Invalid,
    /// A new gateway beyond the capacity: not counted.
    OverCapacity,
}

impl Fleet {
    pub fn new(capacity: usize) -> Self {
        Fleet {
            last: HashMap::new(),
            capacity,
            online: 0,
            outbox: 0,
            dropped: 0,
        }
    }

    /// Applies one retained status message (an empty payload clears a gateway's).
    pub fn apply(&mut self, topic: &str, payload: &[u8]) -> Applied {
        let Some(topic_gateway) = gateway_of(topic) else {
            return Applied::Invalid;
        };
        if payload.is_empty() {
            if let Some(old) = self.last.remove(topic_gateway) {
                self.subtract(old);
            }
            return Applied::Recorded;
        }
        let Ok(status) = serde_json::from_slice::<GatewayStatus>(payload) else {
            return Applied::Invalid;
        };
        if status.gateway_id != topic_gateway
            || status.outbox_depth > MAX_REPORTED_READINGS
            || status.dropped_total > MAX_REPORTED_READINGS
        {
            return Applied::Invalid;
        }
        let new = Last {
            online: status.online,
            outbox_depth: status.outbox_depth,
            dropped_total: status.dropped_total,
            certificate_expires_at: status.certificate_expires_at.map(|t| t.timestamp()),
        };
        let at_capacity = self.last.len() >= self.capacity;
        match self.last.get_mut(topic_gateway) {
            Some(old) => {
                let previous = std::mem::replace(old, new);
                self.subtract(previous);
            }
            None if at_capacity => return Applied::OverCapacity,
            None => {
                self.last.insert(status.gateway_id, new);
            }
        }
        self.add(new);
        Applied::Recorded
    }

    fn add(&mut self, l: Last) {
        self.online += u64::from(l.online);
        self.outbox += l.outbox_depth;
        self.dropped += l.dropped_total;
    }

    fn subtract(&mut self, l: Last) {
        self.online -= u64::from(l.online);
        self.outbox -= l.outbox_depth;
        self.dropped -= l.dropped_total;
    }

    pub fn online(&self) -> u64 {
        self.online
    }

    pub fn offline(&self) -> u64 {
        self.last.len() as u64 - self.online
    }

    pub fn outbox(&self) -> u64 {
        self.outbox
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The deepest outbox (a scan: called on a timer, not per message).
    pub fn deepest(&self) -> u64 {
        self.last
            .values()
            .map(|l| l.outbox_depth)
            .max()
            .unwrap_or(0)
    }

    /// The first certificate expiry any gateway reports, and how many gateways' have
    /// passed or come within `warning` of `now` (Unix seconds; a scan, on a timer).
    pub fn certificates(&self, now: i64, warning: Duration) -> (Option<i64>, u64) {
        let horizon = now.saturating_add(warning.as_secs() as i64);
        let expiries = self.last.values().filter_map(|l| l.certificate_expires_at);
        let earliest = expiries.clone().min();
        (earliest, expiries.filter(|t| *t <= horizon).count() as u64)
    }
}

/// `fleet/v1/{gateway_id}/status` → the gateway id.
fn gateway_of(topic: &str) -> Option<&str> {
    match parse_topic(topic)? {
        (id, TopicKind::Status) => Some(id),
        _ => None,
    }
}

/// Where the totals go.
#[derive(Debug, Clone)]
pub struct StatusMetrics {
    pub gateways: IntGaugeVec,
    pub outbox_readings: IntGauge,
    pub outbox_max_readings: IntGauge,
    pub outbox_dropped_readings: IntGauge,
    pub certificate_earliest_expiry: IntGauge,
    pub certificates_expiring: IntGauge,
    pub invalid_total: IntCounter,
    /// Shared with the readings subscription's.
    pub subscribe_refused_total: IntCounter,
    pub over_capacity_total: IntCounter,
}

impl StatusMetrics {
    fn export(&self, fleet: &Fleet) {
        self.gateways
            .with_label_values(&["online"])
            .set(fleet.online() as i64);
        self.gateways
            .with_label_values(&["offline"])
            .set(fleet.offline() as i64);
        self.outbox_readings.set(fleet.outbox() as i64);
        self.outbox_dropped_readings.set(fleet.dropped() as i64);
    }

    /// The figures that need a scan of every gateway.
    fn export_scans(&self, fleet: &Fleet) {
        self.outbox_max_readings.set(fleet.deepest() as i64);
        let (earliest, expiring) =
            fleet.certificates(chrono::Utc::now().timestamp(), EXPIRY_WARNING);
        self.certificate_earliest_expiry.set(earliest.unwrap_or(0));
        self.certificates_expiring.set(expiring as i64);
    }
}

/// How often the figures that scan every gateway (deepest outbox, certificates) are
/// recomputed.
const SCAN_EVERY: Duration = Duration::from_secs(10);
const SUBACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Follows the statuses until `shutdown`, reconnecting with backoff; `options` are the
/// ingest's own MQTT identity with a client id of this task's.
pub async fn follow(
    options: rumqttc::MqttOptions,
    capacity: usize,
    metrics: StatusMetrics,
    shutdown: CancellationToken,
) {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut fleet = Fleet::new(capacity);
    let mut statuses = Subscription::new(STATUS_SUBSCRIPTION, QoS::AtLeastOnce, SUBACK_TIMEOUT);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut scan = tokio::time::interval(SCAN_EVERY);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            () = statuses.overdue() => { statuses.resend(&client); continue; }
            _ = scan.tick() => { metrics.export_scans(&fleet); continue; }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                statuses.connected(&client);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if !statuses.answered(&ack) {
                    // The gateway totals stay empty until the ACL lets ingest read them.
                    metrics.subscribe_refused_total.inc();
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match fleet.apply(&p.topic, &p.payload) {
                Applied::Recorded => metrics.export(&fleet),
                Applied::Invalid => {
                    metrics.invalid_total.inc();
                    tracing::warn!(
                        topic = p.topic,
                        bytes = p.payload.len(),
                        "unreadable gateway status"
                    );
                }
                Applied::OverCapacity => {
                    metrics.over_capacity_total.inc();
                    tracing::warn!(
                        topic = p.topic,
                        capacity,
                        "more gateways than the status tracker holds; not counted"
                    );
                }
            },
            Ok(_) => {}
            Err(e) => {
                statuses.disconnected();
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "gateway status connection lost");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    let _ = client.try_disconnect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(gw: &str, online: bool, depth: u64, dropped: u64) -> Vec<u8> {
        status_with_certificate(gw, online, depth, dropped, None)
    }

    fn status_with_certificate(
        gw: &str,
        online: bool,
        depth: u64,
        dropped: u64,
        certificate_expires_at: Option<i64>,
    ) -> Vec<u8> {
        serde_json::to_vec(&GatewayStatus {
            gateway_id: gw.into(),
            online,
            outbox_depth: depth,
            dropped_total: dropped,
            last_pump_contact_at: None,
            certificate_expires_at: certificate_expires_at
                .map(|t| chrono::DateTime::from_timestamp(t, 0).expect("in range")),
            at: chrono::Utc::now(),
        })
        .expect("serialises")
    }

    #[test]
    fn certificates_about_to_expire_are_counted_as_last_reported() {
        const DAY: i64 = 86_400;
        let now = 1_800_000_000;
        let warning = Duration::from_secs(30 * DAY as u64);
        let mut fleet = Fleet::new(10);
        assert_eq!(fleet.certificates(now, warning), (None, 0));
        // Plain MQTT (no expiry), a year left, 10 days left, expired yesterday.
        fleet.apply("fleet/v1/a/status", &status("a", true, 0, 0));
        for (gw, left) in [("b", 365), ("c", 10), ("d", -1)] {
            let at = Some(now + left * DAY);
            fleet.apply(
                &format!("fleet/v1/{gw}/status"),
                &status_with_certificate(gw, true, 0, 0, at),
            );
        }
        assert_eq!(fleet.certificates(now, warning), (Some(now - DAY), 2));
        // d renewed its certificate (its will carries the new date too); c went away.
        fleet.apply(
            "fleet/v1/d/status",
            &status_with_certificate("d", false, 0, 0, Some(now + 400 * DAY)),
        );
        fleet.apply("fleet/v1/c/status", b"");
        assert_eq!(fleet.certificates(now, warning), (Some(now + 365 * DAY), 0));
    }

    #[test]
    fn totals_follow_each_gateways_latest_status() {
        let mut fleet = Fleet::new(10);
        assert_eq!(
            fleet.apply("fleet/v1/gw-1/status", &status("gw-1", true, 5, 0)),
            Applied::Recorded
        );
        fleet.apply("fleet/v1/gw-2/status", &status("gw-2", true, 7, 1));
        assert_eq!(
            (
                fleet.online(),
                fleet.offline(),
                fleet.outbox(),
                fleet.dropped()
            ),
            (2, 0, 12, 1)
        );
        // gw-1's will: offline, its outbox still counted as it last reported.
        fleet.apply("fleet/v1/gw-1/status", &status("gw-1", false, 40, 0));
        assert_eq!(
            (fleet.online(), fleet.offline(), fleet.outbox()),
            (1, 1, 47)
        );
        assert_eq!(fleet.deepest(), 40);
        // A retained status cleared (an empty payload): the gateway is forgotten.
        fleet.apply("fleet/v1/gw-1/status", b"");
        assert_eq!(
            (
                fleet.online(),
                fleet.offline(),
                fleet.outbox(),
                fleet.deepest()
            ),
            (1, 0, 7, 7)
        );
    }

    #[test]
    fn a_status_under_another_gateways_topic_or_unreadable_is_refused() {
        let mut fleet = Fleet::new(10);
        assert_eq!(
            fleet.apply("fleet/v1/gw-2/status", &status("gw-1", true, 5, 0)),
            Applied::Invalid
        );
        assert_eq!(
            fleet.apply("fleet/v1/gw-2/status", b"{not json"),
            Applied::Invalid
        );
        assert_eq!(
            fleet.apply("fleet/v1/a/b/status", &status("a/b", true, 1, 0)),
            Applied::Invalid
        );
        assert_eq!(fleet.outbox(), 0);
    }

    #[test]
    fn gateways_beyond_the_capacity_are_not_held() {
        let mut fleet = Fleet::new(2);
        for gw in ["a", "b"] {
            fleet.apply(&format!("fleet/v1/{gw}/status"), &status(gw, true, 1, 0));
        }
        assert_eq!(
            fleet.apply("fleet/v1/c/status", &status("c", true, 1, 0)),
            Applied::OverCapacity
        );
        // Known gateways still update.
        assert_eq!(
            fleet.apply("fleet/v1/a/status", &status("a", true, 3, 0)),
            Applied::Recorded
        );
        assert_eq!((fleet.online(), fleet.outbox()), (2, 4));
    }
}
