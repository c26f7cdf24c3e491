//! The MQTT surface between home gateways and the cloud (contract §2): topic names and
//! the two payloads the contract leaves to us, the end-to-end ack and the status.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::serde_forms::{opt_timestamp, timestamp};

/// The encodings a gateway may publish readings in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadingEncoding {
    Protobuf,
    Json,
}

impl ReadingEncoding {
    pub fn topic_suffix(self) -> &'static str {
        match self {
            ReadingEncoding::Protobuf => "pb",
            ReadingEncoding::Json => "json",
        }
    }
}

/// What a topic under `fleet/v1/{gateway_id}/` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Readings(ReadingEncoding),
    Status,
    Acks,
}

pub fn readings_topic(gateway_id: &str, encoding: ReadingEncoding) -> String {
    format!("fleet/v1/{gateway_id}/readings/{}", encoding.topic_suffix())
}

pub fn status_topic(gateway_id: &str) -> String {
    format!("fleet/v1/{gateway_id}/status")
}

pub fn acks_topic(gateway_id: &str) -> String {
    format!("fleet/v1/{gateway_id}/acks")
}

/// The filter every ingest replica shares: the broker hands each reading to one of them.
pub const INGEST_SHARED_SUBSCRIPTION: &str = "$share/ingest/fleet/v1/+/readings/+";
/// Every gateway's retained status (not shared: each follower sees the whole fleet).
pub const STATUS_SUBSCRIPTION: &str = "fleet/v1/+/status";

/// Splits a contract topic into the gateway id and what the topic is for.
pub fn parse_topic(topic: &str) -> Option<(&str, TopicKind)> {
    let rest = topic.strip_prefix("fleet/v1/")?;
    let (gateway_id, tail) = rest.split_once('/')?;
    if gateway_id.is_empty() {
        return None;
    }
    let kind = match tail {
        "readings/pb" => TopicKind::Readings(ReadingEncoding::Protobuf),
        "readings/json" => TopicKind::Readings(ReadingEncoding::Json),
        "status" => TopicKind::Status,
        "acks" => TopicKind::Acks,
        _ => return None,
    };
    Some((gateway_id, kind))
}

/// The end-to-end acknowledgement on `fleet/v1/{gateway_id}/acks`.
///
/// `acks` is the contract's form: for each pump, the highest `seq` durably in the log.
/// `ranges` (added, backward compatible) lists exactly which seqs this ack covers, as
/// inclusive `[first, last]` runs. With several ingest replicas sharing the MQTT
/// subscription, one gateway's readings are split between them, so "highest seq" alone
/// cannot say that a smaller seq, handled by another replica, is durable too; a gateway
/// that finds `ranges` deletes exactly those readings and nothing else.
///
/// JSON: `{"acks":{"ITP40-100002":43712},"ranges":{"ITP40-100002":[[43700,43712]]}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndToEndAck {
    pub acks: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ranges: BTreeMap<String, Vec<[u64; 2]>>,
}

impl EndToEndAck {
    /// The ack for these durable seqs, per pump.
    pub fn from_durable(durable: &BTreeMap<String, BTreeSet<u64>>) -> Self {
        let mut ack = EndToEndAck::default();
        for (pump_id, seqs) in durable {
            let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
                continue;
            };
            ack.acks.insert(pump_id.clone(), last);
            let mut runs: Vec<[u64; 2]> = Vec::new();
            let mut run = [first, first];
            for &seq in seqs.iter().skip(1) {
                if seq == run[1] + 1 {
                    run[1] = seq;
                } else {
                    runs.push(run);
                    run = [seq, seq];
                }
            }
            runs.push(run);
            ack.ranges.insert(pump_id.clone(), runs);
        }
        ack
    }

    /// Whether this ack says, exactly, that `seq` of `pump_id` is durable. `None` when
    /// the ack carries no `ranges` (the contract's plain form).
    pub fn covers_exactly(&self, pump_id: &str, seq: u64) -> Option<bool> {
        if self.ranges.is_empty() {
            return None;
        }
        Some(
            self.ranges
                .get(pump_id)
                .is_some_and(|runs| runs.iter().any(|[a, b]| (*a..=*b).contains(&seq))),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }
}

/// The retained heartbeat on `fleet/v1/{gateway_id}/status`, also the last will (with
/// `online: false`), so the cloud always knows whether a home is connected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub gateway_id: String,
    pub online: bool,
    /// Readings waiting for their end-to-end ack.
    pub outbox_depth: u64,
    /// Readings dropped because the outbox was full (routine ones first).
    pub dropped_total: u64,
    #[serde(
        default,
        with = "opt_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_pump_contact_at: Option<DateTime<Utc>>,
    /// When the gateway's MQTT certificate, or the CA it trusts, expires (the earlier),
    /// so the cloud sees a home about to be locked out weeks ahead. Absent on plain
    /// MQTT (and from gateways older than the field).
    #[serde(
        default,
        with = "opt_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_expires_at: Option<DateTime<Utc>>,
    #[serde(with = "timestamp")]
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let t = readings_topic("gw-1", ReadingEncoding::Json);
        assert_eq!(t, "fleet/v1/gw-1/readings/json");
        assert_eq!(
            parse_topic(&t),
            Some(("gw-1", TopicKind::Readings(ReadingEncoding::Json)))
        );
        assert_eq!(
            parse_topic(&acks_topic("gw-1")),
            Some(("gw-1", TopicKind::Acks))
        );
        assert_eq!(
            parse_topic(&status_topic("gw-1")),
            Some(("gw-1", TopicKind::Status))
        );
        for bad in [
            "fleet/v1//readings/pb",
            "fleet/v2/gw/status",
            "fleet/v1/gw/readings/xml",
        ] {
            assert_eq!(parse_topic(bad), None, "{bad}");
        }
    }

    #[test]
    fn ack_carries_the_highest_seq_and_the_exact_runs() {
        let durable: BTreeMap<String, BTreeSet<u64>> = [
            ("p1".to_owned(), [3, 4, 5, 9].into()),
            ("p2".to_owned(), [7].into()),
        ]
        .into();
        let ack = EndToEndAck::from_durable(&durable);
        let json = serde_json::to_string(&ack).expect("serialisable");
        assert_eq!(
            json,
            r#"{"acks":{"p1":9,"p2":7},"ranges":{"p1":[[3,5],[9,9]],"p2":[[7,7]]}}"#
        );
        assert_eq!(ack.covers_exactly("p1", 4), Some(true));
        assert_eq!(ack.covers_exactly("p1", 6), Some(false));
        assert_eq!(ack.covers_exactly("p3", 1), Some(false));
        let plain: EndToEndAck =
            serde_json::from_str(r#"{"acks":{"p1":9}}"#).expect("contract form");
        assert_eq!(plain.covers_exactly("p1", 4), None);
    }
}
