//! Deciding what one MQTT message is: a reading to keep, or input to dead-letter with a
//! reason. Pure: the caller supplies the registry and the clock, so every rule is tested
//! without a broker.

use chrono::{DateTime, Utc};
use fleet_core::gateway_protocol::{ReadingEncoding, TopicKind, parse_topic};
use fleet_core::{InvalidReading, Reading, Registry, json, protobuf};

/// The limits a reading must respect.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_future_skew: chrono::Duration,
}

/// Why a message was not accepted. `reason` is a short stable code (a metric label and
/// the dead letter's `reason` header); `detail` is the sentence a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
    /// The publishing gateway, from the topic, when the topic is a contract topic.
    pub gateway_id: Option<String>,
    /// `(pump_id, seq)` when the payload decoded far enough to tell: such a reading is
    /// acknowledged end to end once dead-lettered, so the gateway stops resending it.
    pub key: Option<(String, u64)>,
}

/// A reading that passed every check, and the gateway that published it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub gateway_id: String,
    pub reading: Reading,
}

pub fn triage(
    topic: &str,
    payload: &[u8],
    registry: &Registry,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Accepted, Rejected> {
    let reject =
        |reason, detail: String, gateway_id: Option<&str>, key: Option<(String, u64)>| Rejected {
            reason,
            detail,
            gateway_id: gateway_id.map(str::to_owned),
            key,
        };
    let Some((gateway_id, TopicKind::Readings(encoding))) = parse_topic(topic) else {
        return Err(reject(
            "bad_topic",
            format!("topic {topic:?} is not fleet/v1/{{gateway_id}}/readings/{{pb|json}}"),
            None,
            None,
        ));
    };
    let gw = Some(gateway_id);
    if payload.len() > limits.max_payload_bytes {
        return Err(reject(
            "oversized",
            format!(
                "payload of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                limits.max_payload_bytes
            ),
            gw,
            None,
        ));
    }
    let decoded: Result<Reading, InvalidReading> = match encoding {
        ReadingEncoding::Protobuf => protobuf::decode_reading(payload),
        ReadingEncoding::Json => match std::str::from_utf8(payload) {
            Ok(text) => json::decode_reading(text),
            Err(e) => Err(InvalidReading::single(
                "",
                fleet_core::Problem::Undecodable {
                    detail: format!("not UTF-8 ({e})"),
                },
            )),
        },
    };
    let reading = decoded.map_err(|e| reject(e.reason_code(), e.to_string(), gw, None))?;
    let key = Some((reading.pump_id.clone(), reading.seq));
    if let Err(e) = reading.validate() {
        return Err(reject(e.reason_code(), e.to_string(), gw, key));
    }
    if reading.gateway_id != gateway_id {
        return Err(reject(
            "gateway_mismatch",
            format!(
                "reading names gateway {:?} but was published by {gateway_id:?}",
                reading.gateway_id
            ),
            gw,
            key,
        ));
    }
    match registry.pump(&reading.pump_id) {
        None => {
            return Err(reject(
                "unknown_pump",
                format!("pump {:?} is not in the registry", reading.pump_id),
                gw,
                key,
            ));
        }
        Some(paired) if paired.gateway_id != gateway_id => {
            return Err(reject(
                "wrong_gateway",
                format!(
                    "pump {:?} is paired with gateway {:?}, not {gateway_id:?}",
                    reading.pump_id, paired.gateway_id
                ),
                gw,
                key,
            ));
        }
        Some(_) => {}
    }
    if reading.measured_at > now + limits.max_future_skew {
        return Err(reject(
            "future_timestamp",
            format!(
                "measured_at {} is more than {} s ahead of the ingest clock ({})",
                reading.measured_at,
                limits.max_future_skew.num_seconds(),
                now
            ),
            gw,
            key,
        ));
    }
    Ok(Accepted {
        gateway_id: gateway_id.to_owned(),
        reading,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::gateway_protocol::readings_topic;

    const REGISTRY: &str = r#"
[[clinic]]
id = "c1"
name = "Clinic"
webhook = "http://127.0.0.1:1"
escalation_after = "15m"

[[pump]]
pump_id = "ITP40-1"
gateway_id = "gw-1"
clinic_id = "c1"
"#;

    fn registry() -> Registry {
        Registry::from_toml(REGISTRY).expect("valid registry")
    }

    fn limits() -> Limits {
        Limits {
            max_payload_bytes: 64 * 1024,
            max_future_skew: chrono::Duration::minutes(5),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600, 0).expect("valid")
    }

    fn reading_json(pump: &str, gateway: &str, measured_at: &str) -> String {
        format!(
            r#"{{"pump_id":"{pump}","gateway_id":"{gateway}","seq":42,"measured_at":"{measured_at}","model":"ITP-40","firmware":"1","drug":"BACLOFEN","concentration_mg_per_ml":2,"reservoir_ml":10,"reservoir_capacity_ml":40,"low_reservoir_threshold_ml":2,"programmed_rate_ml_per_day":0.5,"delivered_total_ml":1,"battery_v":3,"battery_pct":50,"eri":false,"eos":false,"temperature_c":37,"refill_due_at":"2026-02-01T00:00:00Z","motor_stall_count":0,"events":[]}}"#
        )
    }

    fn run(topic: &str, payload: &[u8]) -> Result<Accepted, Rejected> {
        triage(topic, payload, &registry(), now(), &limits())
    }

    const JSON_TOPIC: &str = "fleet/v1/gw-1/readings/json";

    #[test]
    fn a_paired_valid_reading_is_accepted_in_both_encodings() {
        let text = reading_json("ITP40-1", "gw-1", "2025-12-31T23:00:00Z");
        let accepted = run(JSON_TOPIC, text.as_bytes()).expect("accepted");
        assert_eq!(accepted.gateway_id, "gw-1");
        let pb = protobuf::encode_reading(&accepted.reading);
        let topic = readings_topic("gw-1", ReadingEncoding::Protobuf);
        assert_eq!(
            run(&topic, &pb).expect("accepted").reading,
            accepted.reading
        );
    }

    fn reason(topic: &str, payload: &[u8]) -> (&'static str, Option<(String, u64)>) {
        let r = run(topic, payload).expect_err("rejected");
        (r.reason, r.key)
    }

    #[test]
    fn each_kind_of_bad_input_has_its_reason() {
        let ok = reading_json("ITP40-1", "gw-1", "2025-12-31T23:00:00Z");
        assert_eq!(
            reason("fleet/v1/gw-1/readings/pb", b"\xff\x00garbage").0,
            "undecodable"
        );
        let pb = protobuf::encode_reading(&json::parse_reading(&ok).expect("valid"));
        assert_eq!(
            reason("fleet/v1/gw-1/readings/pb", &pb[..pb.len() - 7]).0,
            "undecodable"
        );
        let wrong_type = ok.replace("\"battery_pct\":50", "\"battery_pct\":\"half\"");
        assert_eq!(reason(JSON_TOPIC, wrong_type.as_bytes()).0, "wrong_type");
        assert_eq!(
            reason(JSON_TOPIC, &vec![b'{'; 10 * 1024 * 1024]).0,
            "oversized"
        );
        let unknown = reading_json("ITP40-404", "gw-1", "2025-12-31T23:00:00Z");
        assert_eq!(
            reason(JSON_TOPIC, unknown.as_bytes()),
            ("unknown_pump", Some(("ITP40-404".to_owned(), 42)))
        );
        let other_gw = reading_json("ITP40-1", "gw-2", "2025-12-31T23:00:00Z");
        assert_eq!(
            reason("fleet/v1/gw-2/readings/json", other_gw.as_bytes()).0,
            "wrong_gateway"
        );
        assert_eq!(
            reason(JSON_TOPIC, other_gw.as_bytes()).0,
            "gateway_mismatch"
        );
        let future = reading_json("ITP40-1", "gw-1", "2026-01-01T00:06:00Z");
        assert_eq!(reason(JSON_TOPIC, future.as_bytes()).0, "future_timestamp");
        let negative = ok.replace("\"reservoir_ml\":10", "\"reservoir_ml\":-1");
        assert_eq!(reason(JSON_TOPIC, negative.as_bytes()).0, "negative_value");
        assert_eq!(reason("fleet/v1/gw-1/status", ok.as_bytes()).0, "bad_topic");
    }

    #[test]
    fn a_reading_within_the_skew_is_accepted() {
        let soon = reading_json("ITP40-1", "gw-1", "2026-01-01T00:04:59Z");
        assert!(run(JSON_TOPIC, soon.as_bytes()).is_ok());
    }
}
