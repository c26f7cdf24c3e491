//! The protobuf form of readings and alarm events (`proto/fleet/*/v1`), and the
//! conversions between it and the domain types.
//!
//! proto3 has no required fields, so decoding checks presence here (a reading without
//! `measured_at` is rejected, not stamped 1970) and reports it with the same typed
//! [`Violation`]s as the JSON path.

use chrono::{DateTime, Utc};
use fleet_proto::alarm::v1 as pb_alarm;
use fleet_proto::clinic::v1 as pb_clinic;
use fleet_proto::prost::Message;
use fleet_proto::prost_types::Timestamp;
use fleet_proto::telemetry::v1 as pb;

use crate::alarm::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState, Evidence};
use crate::reading::{
    Bolus, BolusSource, DeviceAlarm, LowBatteryReset, MotorStall, Mri, PumpEvent, Reading, Refill,
    Reprogram,
};
use crate::serde_forms::in_contract_range;
use crate::validation::{InvalidReading, Problem, Violation};

/// Decodes one protobuf reading and validates it.
pub fn parse_reading(bytes: &[u8]) -> Result<Reading, InvalidReading> {
    let reading = decode_reading(bytes)?;
    reading.validate()?;
    Ok(reading)
}

/// Decodes one protobuf reading without checking its values.
pub fn decode_reading(bytes: &[u8]) -> Result<Reading, InvalidReading> {
    let message = pb::Reading::decode(bytes).map_err(|e| {
        InvalidReading::single(
            "",
            Problem::Undecodable {
                detail: format!("not a protobuf Reading ({e})"),
            },
        )
    })?;
    Reading::try_from(message)
}

pub fn encode_reading(reading: &Reading) -> Vec<u8> {
    pb::Reading::from(reading).encode_to_vec()
}

pub fn to_timestamp(at: &DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        // At most 1_999_999_999 (chrono's leap-second form), which fits an i32.
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn from_timestamp(field: &str, ts: Option<Timestamp>) -> Result<DateTime<Utc>, Violation> {
    let ts = ts.ok_or_else(|| Violation::new(field, Problem::Missing))?;
    // Timestamp's own range (years 0001 to 9999), which JSON can also write.
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
        .filter(in_contract_range)
        .ok_or_else(|| {
            Violation::new(
                field,
                Problem::UnparseableTimestamp {
                    detail: format!(
                        "timestamp out of range (seconds {}, nanos {})",
                        ts.seconds, ts.nanos
                    ),
                },
            )
        })
}

impl From<&Reading> for pb::Reading {
    fn from(r: &Reading) -> Self {
        pb::Reading {
            pump_id: r.pump_id.clone(),
            gateway_id: r.gateway_id.clone(),
            seq: r.seq,
            measured_at: Some(to_timestamp(&r.measured_at)),
            model: r.model.clone(),
            firmware: r.firmware.clone(),
            drug: r.drug.clone(),
            concentration_mg_per_ml: r.concentration_mg_per_ml,
            reservoir_ml: r.reservoir_ml,
            reservoir_capacity_ml: r.reservoir_capacity_ml,
            low_reservoir_threshold_ml: r.low_reservoir_threshold_ml,
            programmed_rate_ml_per_day: r.programmed_rate_ml_per_day,
            delivered_total_ml: r.delivered_total_ml,
            battery_v: r.battery_v,
            battery_pct: r.battery_pct,
            eri: r.eri,
            eos: r.eos,
            temperature_c: r.temperature_c,
            refill_due_at: Some(to_timestamp(&r.refill_due_at)),
            motor_stall_count: r.motor_stall_count,
            catheter_pressure_kpa: r.catheter_pressure_kpa,
            motor_current_ma: r.motor_current_ma,
            events: r.events.iter().map(pb::PumpEvent::from).collect(),
        }
    }
}

impl From<&PumpEvent> for pb::PumpEvent {
    fn from(e: &PumpEvent) -> Self {
        use pb::pump_event::Kind;
        let kind = match e {
            PumpEvent::Refill(r) => Kind::Refill(pb::Refill {
                residual_expected_ml: r.residual_expected_ml,
                residual_measured_ml: r.residual_measured_ml,
                volume_added_ml: r.volume_added_ml,
                refill_due_at: Some(to_timestamp(&r.refill_due_at)),
            }),
            PumpEvent::Reprogram(r) => Kind::Reprogram(pb::Reprogram {
                rate_ml_per_day: r.rate_ml_per_day,
                previous_rate_ml_per_day: r.previous_rate_ml_per_day,
                refill_due_at: Some(to_timestamp(&r.refill_due_at)),
            }),
            PumpEvent::Bolus(b) => Kind::Bolus(pb::Bolus {
                source: match b.source {
                    BolusSource::Patient => pb::BolusSource::Patient,
                    BolusSource::Clinician => pb::BolusSource::Clinician,
                } as i32,
                volume_ml: b.volume_ml,
                granted: b.granted,
            }),
            PumpEvent::Mri(m) => Kind::Mri(pb::Mri {
                duration_s: m.duration_s,
            }),
            PumpEvent::MotorStall(m) => Kind::MotorStall(pb::MotorStall {
                duration_s: m.duration_s,
            }),
            PumpEvent::LowBatteryReset(_) => Kind::LowBatteryReset(pb::LowBatteryReset {}),
            PumpEvent::DeviceAlarm(d) => Kind::DeviceAlarm(pb::DeviceAlarm {
                code: d.code.clone(),
            }),
        };
        pb::PumpEvent {
            at: Some(to_timestamp(&e.at())),
            kind: Some(kind),
        }
    }
}

impl TryFrom<pb::Reading> for Reading {
    type Error = InvalidReading;

    fn try_from(m: pb::Reading) -> Result<Self, InvalidReading> {
        let mut violations = Vec::new();
        let mut time = |field: &str, ts| {
            from_timestamp(field, ts)
                .map_err(|v| violations.push(v))
                .ok()
        };
        let measured_at = time("measured_at", m.measured_at);
        let refill_due_at = time("refill_due_at", m.refill_due_at);
        let mut events = Vec::with_capacity(m.events.len());
        for (i, event) in m.events.into_iter().enumerate() {
            match PumpEvent::try_from_indexed(i, event) {
                Ok(e) => events.push(e),
                Err(v) => violations.push(v),
            }
        }
        let (Some(measured_at), Some(refill_due_at), true) =
            (measured_at, refill_due_at, violations.is_empty())
        else {
            return Err(InvalidReading { violations });
        };
        Ok(Reading {
            pump_id: m.pump_id,
            gateway_id: m.gateway_id,
            seq: m.seq,
            measured_at,
            model: m.model,
            firmware: m.firmware,
            drug: m.drug,
            concentration_mg_per_ml: m.concentration_mg_per_ml,
            reservoir_ml: m.reservoir_ml,
            reservoir_capacity_ml: m.reservoir_capacity_ml,
            low_reservoir_threshold_ml: m.low_reservoir_threshold_ml,
            programmed_rate_ml_per_day: m.programmed_rate_ml_per_day,
            delivered_total_ml: m.delivered_total_ml,
            battery_v: m.battery_v,
            battery_pct: m.battery_pct,
            eri: m.eri,
            eos: m.eos,
            temperature_c: m.temperature_c,
            refill_due_at,
            motor_stall_count: m.motor_stall_count,
            catheter_pressure_kpa: m.catheter_pressure_kpa,
            motor_current_ma: m.motor_current_ma,
            events,
        })
    }
}

impl PumpEvent {
    fn try_from_indexed(index: usize, m: pb::PumpEvent) -> Result<Self, Violation> {
        use pb::pump_event::Kind;
        let field = |name: &str| format!("events[{index}].{name}");
        let at = from_timestamp(&field("at"), m.at)?;
        let kind = m
            .kind
            .ok_or_else(|| Violation::new(field("type"), Problem::Missing))?;
        Ok(match kind {
            Kind::Refill(r) => PumpEvent::Refill(Refill {
                at,
                residual_expected_ml: r.residual_expected_ml,
                residual_measured_ml: r.residual_measured_ml,
                volume_added_ml: r.volume_added_ml,
                refill_due_at: from_timestamp(&field("refill_due_at"), r.refill_due_at)?,
            }),
            Kind::Reprogram(r) => PumpEvent::Reprogram(Reprogram {
                at,
                rate_ml_per_day: r.rate_ml_per_day,
                previous_rate_ml_per_day: r.previous_rate_ml_per_day,
                refill_due_at: from_timestamp(&field("refill_due_at"), r.refill_due_at)?,
            }),
            Kind::Bolus(b) => PumpEvent::Bolus(Bolus {
                at,
                source: match pb::BolusSource::try_from(b.source) {
                    Ok(pb::BolusSource::Patient) => BolusSource::Patient,
                    Ok(pb::BolusSource::Clinician) => BolusSource::Clinician,
                    Ok(pb::BolusSource::Unspecified) => {
                        return Err(Violation::new(field("source"), Problem::Missing));
                    }
                    Err(_) => {
                        return Err(Violation::new(
                            field("source"),
                            Problem::WrongType {
                                detail: format!("unknown bolus source {}", b.source),
                            },
                        ));
                    }
                },
                volume_ml: b.volume_ml,
                granted: b.granted,
            }),
            Kind::Mri(m) => PumpEvent::Mri(Mri {
                at,
                duration_s: m.duration_s,
            }),
            Kind::MotorStall(m) => PumpEvent::MotorStall(MotorStall {
                at,
                duration_s: m.duration_s,
            }),
            Kind::LowBatteryReset(_) => PumpEvent::LowBatteryReset(LowBatteryReset { at }),
            Kind::DeviceAlarm(d) => PumpEvent::DeviceAlarm(DeviceAlarm { at, code: d.code }),
        })
    }
}

/// Why a protobuf alarm event could not become an [`AlarmEvent`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid alarm event: {0}")]
pub struct InvalidAlarmEvent(pub Violation);

impl From<AlarmKind> for pb_alarm::AlarmKind {
    fn from(k: AlarmKind) -> Self {
        match k {
            AlarmKind::LowReservoir => pb_alarm::AlarmKind::LowReservoir,
            AlarmKind::BatteryEol => pb_alarm::AlarmKind::BatteryEol,
            AlarmKind::Occlusion => pb_alarm::AlarmKind::Occlusion,
            AlarmKind::MissedRefill => pb_alarm::AlarmKind::MissedRefill,
            AlarmKind::TelemetryLost => pb_alarm::AlarmKind::TelemetryLost,
            AlarmKind::LowBatteryResets => pb_alarm::AlarmKind::LowBatteryResets,
        }
    }
}

impl From<AlarmPriority> for pb_alarm::AlarmPriority {
    fn from(p: AlarmPriority) -> Self {
        match p {
            AlarmPriority::Low => pb_alarm::AlarmPriority::Low,
            AlarmPriority::Medium => pb_alarm::AlarmPriority::Medium,
            AlarmPriority::High => pb_alarm::AlarmPriority::High,
        }
    }
}

impl From<AlarmState> for pb_alarm::AlarmState {
    fn from(s: AlarmState) -> Self {
        match s {
            AlarmState::Raised => pb_alarm::AlarmState::Raised,
            AlarmState::Updated => pb_alarm::AlarmState::Updated,
            AlarmState::Cleared => pb_alarm::AlarmState::Cleared,
        }
    }
}

impl From<&Evidence> for pb_alarm::EvidenceValue {
    fn from(e: &Evidence) -> Self {
        use pb_alarm::evidence_value::Value;
        pb_alarm::EvidenceValue {
            value: Some(match e {
                Evidence::Number(n) => Value::Number(*n),
                Evidence::Text(t) => Value::Text(t.clone()),
            }),
        }
    }
}

impl From<&AlarmEvent> for pb_alarm::AlarmEvent {
    fn from(a: &AlarmEvent) -> Self {
        pb_alarm::AlarmEvent {
            alarm_id: a.alarm_id.clone(),
            revision: a.revision,
            pump_id: a.pump_id.clone(),
            kind: pb_alarm::AlarmKind::from(a.kind) as i32,
            priority: pb_alarm::AlarmPriority::from(a.priority) as i32,
            state: pb_alarm::AlarmState::from(a.state) as i32,
            detected_at: Some(to_timestamp(&a.detected_at)),
            onset_at: a.onset_at.as_ref().map(to_timestamp),
            message: a.message.clone(),
            evidence: a
                .evidence
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
        }
    }
}

fn unspecified(field: &str, value: i32) -> InvalidAlarmEvent {
    InvalidAlarmEvent(Violation::new(
        field,
        Problem::WrongType {
            detail: format!("unspecified or unknown enum value {value}"),
        },
    ))
}

impl TryFrom<pb_alarm::AlarmEvent> for AlarmEvent {
    type Error = InvalidAlarmEvent;

    fn try_from(m: pb_alarm::AlarmEvent) -> Result<Self, InvalidAlarmEvent> {
        use pb_alarm::evidence_value::Value;
        let kind = match pb_alarm::AlarmKind::try_from(m.kind) {
            Ok(pb_alarm::AlarmKind::LowReservoir) => AlarmKind::LowReservoir,
            Ok(pb_alarm::AlarmKind::BatteryEol) => AlarmKind::BatteryEol,
            Ok(pb_alarm::AlarmKind::Occlusion) => AlarmKind::Occlusion,
            Ok(pb_alarm::AlarmKind::MissedRefill) => AlarmKind::MissedRefill,
            Ok(pb_alarm::AlarmKind::TelemetryLost) => AlarmKind::TelemetryLost,
            Ok(pb_alarm::AlarmKind::LowBatteryResets) => AlarmKind::LowBatteryResets,
            _ => return Err(unspecified("kind", m.kind)),
        };
        let priority = match pb_alarm::AlarmPriority::try_from(m.priority) {
            Ok(pb_alarm::AlarmPriority::Low) => AlarmPriority::Low,
            Ok(pb_alarm::AlarmPriority::Medium) => AlarmPriority::Medium,
            Ok(pb_alarm::AlarmPriority::High) => AlarmPriority::High,
            _ => return Err(unspecified("priority", m.priority)),
        };
        let state = match pb_alarm::AlarmState::try_from(m.state) {
            Ok(pb_alarm::AlarmState::Raised) => AlarmState::Raised,
            Ok(pb_alarm::AlarmState::Updated) => AlarmState::Updated,
            Ok(pb_alarm::AlarmState::Cleared) => AlarmState::Cleared,
            _ => return Err(unspecified("state", m.state)),
        };
        let detected_at =
            from_timestamp("detected_at", m.detected_at).map_err(InvalidAlarmEvent)?;
        let onset_at = m
            .onset_at
            .map(|ts| from_timestamp("onset_at", Some(ts)))
            .transpose()
            .map_err(InvalidAlarmEvent)?;
        let mut evidence = std::collections::BTreeMap::new();
        for (name, value) in m.evidence {
            let value = match value.value {
                Some(Value::Number(n)) => Evidence::Number(n),
                Some(Value::Text(t)) => Evidence::Text(t),
                None => {
                    return Err(InvalidAlarmEvent(Violation::new(
                        format!("evidence.{name}"),
                        Problem::Missing,
                    )));
                }
            };
            evidence.insert(name, value);
        }
        Ok(AlarmEvent {
            alarm_id: m.alarm_id,
            revision: m.revision,
            pump_id: m.pump_id,
            kind,
            priority,
            state,
            detected_at,
            onset_at,
            message: m.message,
            evidence,
        })
    }
}

pub fn encode_alarm(alarm: &AlarmEvent) -> Vec<u8> {
    pb_alarm::AlarmEvent::from(alarm).encode_to_vec()
}

pub fn decode_alarm(bytes: &[u8]) -> Result<AlarmEvent, InvalidAlarmEvent> {
    let m = pb_alarm::AlarmEvent::decode(bytes).map_err(|e| {
        InvalidAlarmEvent(Violation::new(
            "",
            Problem::Undecodable {
                detail: format!("not a protobuf AlarmEvent ({e})"),
            },
        ))
    })?;
    AlarmEvent::try_from(m)
}

/// How one page is addressed: to which clinic, which attempt, which escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader<'a> {
    pub clinic_id: &'a str,
    /// 1 for the first attempt of this page.
    pub delivery_attempt: u32,
    /// 0 for the page itself; n for its n-th escalation.
    pub escalation: u32,
}

/// The clinic webhook's message for an alarm event.
pub fn notification(alarm: &AlarmEvent, header: PageHeader<'_>) -> pb_clinic::AlarmNotification {
    let event = pb_alarm::AlarmEvent::from(alarm);
    pb_clinic::AlarmNotification {
        alarm_id: event.alarm_id,
        revision: event.revision,
        pump_id: event.pump_id,
        kind: event.kind,
        priority: event.priority,
        state: event.state,
        detected_at: event.detected_at,
        onset_at: event.onset_at,
        message: event.message,
        evidence: event.evidence,
        clinic_id: header.clinic_id.to_owned(),
        delivery_attempt: header.delivery_attempt,
        escalation: header.escalation,
    }
}

/// The alarm event inside a clinic page (receivers, tests).
pub fn alarm_of_notification(
    n: &pb_clinic::AlarmNotification,
) -> Result<AlarmEvent, InvalidAlarmEvent> {
    AlarmEvent::try_from(pb_alarm::AlarmEvent {
        alarm_id: n.alarm_id.clone(),
        revision: n.revision,
        pump_id: n.pump_id.clone(),
        kind: n.kind,
        priority: n.priority,
        state: n.state,
        detected_at: n.detected_at,
        onset_at: n.onset_at,
        message: n.message.clone(),
        evidence: n.evidence.clone(),
    })
}
