//! A `Reading`: one interrogation of one pump, relayed by its home gateway
//! (contract §1). Field names and units are the contract's.

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

use crate::serde_forms::{number, opt_number, timestamp, uint32, uint64};

/// One interrogation of one pump. `(pump_id, seq)` is the idempotency key of every hop.
///
/// The JSON form writes snake_case and also reads lowerCamelCase (proto3 JSON); see
/// [`crate::json`]. Unknown fields are ignored so that newer gateways, which may add
/// fields, are not rejected by older services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    #[serde(alias = "pumpId")]
    pub pump_id: String,
    #[serde(alias = "gatewayId")]
    pub gateway_id: String,
    /// Per-pump counter, +1 per reading.
    #[serde(deserialize_with = "uint64::deserialize")]
    pub seq: u64,
    #[serde(alias = "measuredAt", with = "timestamp")]
    pub measured_at: DateTime<Utc>,
    /// `ITP-20`, `ITP-40`, `ITV-20`, `ITV-40`; unknown models are accepted.
    pub model: String,
    pub firmware: String,
    /// `MORPHINE`, `BACLOFEN`, ... or another name; see [`Drug`].
    pub drug: String,
    #[serde(
        alias = "concentrationMgPerMl",
        deserialize_with = "number::deserialize"
    )]
    pub concentration_mg_per_ml: f64,
    /// The pump's estimate from commanded delivery, not a measurement.
    #[serde(alias = "reservoirMl", deserialize_with = "number::deserialize")]
    pub reservoir_ml: f64,
    #[serde(
        alias = "reservoirCapacityMl",
        deserialize_with = "number::deserialize"
    )]
    pub reservoir_capacity_ml: f64,
    #[serde(
        alias = "lowReservoirThresholdMl",
        deserialize_with = "number::deserialize"
    )]
    pub low_reservoir_threshold_ml: f64,
    #[serde(
        alias = "programmedRateMlPerDay",
        deserialize_with = "number::deserialize"
    )]
    pub programmed_rate_ml_per_day: f64,
    /// Lifetime commanded-delivery odometer.
    #[serde(alias = "deliveredTotalMl", deserialize_with = "number::deserialize")]
    pub delivered_total_ml: f64,
    #[serde(alias = "batteryV", deserialize_with = "number::deserialize")]
    pub battery_v: f64,
    /// The pump's fuel gauge, 0-100.
    #[serde(alias = "batteryPct", deserialize_with = "number::deserialize")]
    pub battery_pct: f64,
    /// Elective replacement indicator.
    pub eri: bool,
    /// End of service.
    pub eos: bool,
    #[serde(alias = "temperatureC", deserialize_with = "number::deserialize")]
    pub temperature_c: f64,
    /// The clinic's scheduled refill appointment.
    #[serde(alias = "refillDueAt", with = "timestamp")]
    pub refill_due_at: DateTime<Utc>,
    /// Lifetime motor stall counter.
    #[serde(alias = "motorStallCount", deserialize_with = "uint32::deserialize")]
    pub motor_stall_count: u32,
    /// Only on models with the sensor.
    #[serde(
        alias = "catheterPressureKpa",
        default,
        deserialize_with = "opt_number::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub catheter_pressure_kpa: Option<f64>,
    /// Only on models with the sensor.
    #[serde(
        alias = "motorCurrentMa",
        default,
        deserialize_with = "opt_number::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub motor_current_ma: Option<f64>,
    /// What happened since the previous reading.
    #[serde(default)]
    pub events: Vec<PumpEvent>,
}

impl Reading {
    /// A healthy, valid reading of a sensor pump (ITP-40, baclofen, 30 of 40 mL at
    /// 0.5 mL/day, refill due in 40 days), for tests and examples to adjust.
    pub fn example(pump_id: &str, seq: u64, measured_at: DateTime<Utc>) -> Reading {
        Reading {
            pump_id: pump_id.to_owned(),
            gateway_id: format!("gw-{pump_id}"),
            seq,
            measured_at,
            model: "ITP-40".into(),
            firmware: "4.2.1".into(),
            drug: "BACLOFEN".into(),
            concentration_mg_per_ml: 2.0,
            reservoir_ml: 30.0,
            reservoir_capacity_ml: 40.0,
            low_reservoir_threshold_ml: 2.0,
            programmed_rate_ml_per_day: 0.5,
            delivered_total_ml: 100.0,
            battery_v: 3.1,
            battery_pct: 60.0,
            eri: false,
            eos: false,
            temperature_c: 37.0,
            refill_due_at: measured_at + chrono::Duration::days(40),
            motor_stall_count: 0,
            catheter_pressure_kpa: Some(12.0),
            motor_current_ma: Some(1.5),
            events: vec![],
        }
    }

    pub fn pump_model(&self) -> PumpModel {
        PumpModel::from_name(&self.model)
    }

    pub fn drug_kind(&self) -> Drug {
        Drug::from_name(&self.drug)
    }
}

/// One event logged by the pump since the previous reading.
///
/// Written as an object tagged by `type` (`{"type":"REFILL","at":...}`). Reading is
/// done by hand (see the `Deserialize` impl) so that an error inside an event names the
/// exact field (`events[2].at`), which serde's buffered internally-tagged enums lose.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum PumpEvent {
    #[serde(rename = "REFILL")]
    Refill(Refill),
    #[serde(rename = "REPROGRAM")]
    Reprogram(Reprogram),
    #[serde(rename = "BOLUS")]
    Bolus(Bolus),
    #[serde(rename = "MRI")]
    Mri(Mri),
    #[serde(rename = "MOTOR_STALL")]
    MotorStall(MotorStall),
    #[serde(rename = "LOW_BATTERY_RESET")]
    LowBatteryReset(LowBatteryReset),
    #[serde(rename = "DEVICE_ALARM")]
    DeviceAlarm(DeviceAlarm),
}

/// The contract's event type names; readers also accept them prefixed `EVENT_TYPE_`.
pub const EVENT_TYPES: &[&str] = &[
    "REFILL",
    "REPROGRAM",
    "BOLUS",
    "MRI",
    "MOTOR_STALL",
    "LOW_BATTERY_RESET",
    "DEVICE_ALARM",
];

/// A refill visit: the pump's expected residual versus what the clinician aspirated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refill {
    #[serde(with = "timestamp")]
    pub at: DateTime<Utc>,
    #[serde(alias = "residualExpectedMl", deserialize_with = "number::deserialize")]
    pub residual_expected_ml: f64,
    #[serde(alias = "residualMeasuredMl", deserialize_with = "number::deserialize")]
    pub residual_measured_ml: f64,
    #[serde(alias = "volumeAddedMl", deserialize_with = "number::deserialize")]
    pub volume_added_ml: f64,
    /// The next appointment.
    #[serde(alias = "refillDueAt", with = "timestamp")]
    pub refill_due_at: DateTime<Utc>,
}

/// The clinician changed the flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reprogram {
    #[serde(with = "timestamp")]
    pub at: DateTime<Utc>,
    #[serde(alias = "rateMlPerDay", deserialize_with = "number::deserialize")]
    pub rate_ml_per_day: f64,
    #[serde(
        alias = "previousRateMlPerDay",
        deserialize_with = "number::deserialize"
    )]
    pub previous_rate_ml_per_day: f64,
    #[serde(alias = "refillDueAt", with = "timestamp")]
    pub refill_due_at: DateTime<Utc>,
}

/// A bolus request; a patient's handheld may be refused by lockout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bolus {
    #[serde(with = "timestamp")]
    pub at: DateTime<Utc>,
    pub source: BolusSource,
    #[serde(alias = "volumeMl", deserialize_with = "number::deserialize")]
    pub volume_ml: f64,
    pub granted: bool,
}

/// The pump sensed an MRI field: stalls during and up to 24 h after are expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mri {
    #[serde(with = "timestamp")]
    pub at: DateTime<Utc>,
    #[serde(alias = "durationS", deserialize_with = "uint32::deserialize")]
    pub duration_s: u32,
}

/// The motor did not turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MotorStall {
    #[serde(with = "timestamp")]
    pub at: DateTime<Utc>,
    #[serde(alias = "durationS", deserialize_with = "uint32::deserialize")]
    pub duration_s: u32,
}

/// The pump reset on low battery voltage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LowBatteryReset {
    #[serde(with = "timestamp")]
    pub at: DateTime<Utc>,
}

/// The pump's own audible alarm: `LOW_RESERVOIR`, `ERI`, `EOS`, `MOTOR_STALL` or other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceAlarm {
    #[serde(with = "timestamp")]
    pub at: DateTime<Utc>,
    pub code: String,
}

impl PumpEvent {
    /// When the pump logged the event.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            PumpEvent::Refill(e) => e.at,
            PumpEvent::Reprogram(e) => e.at,
            PumpEvent::Bolus(e) => e.at,
            PumpEvent::Mri(e) => e.at,
            PumpEvent::MotorStall(e) => e.at,
            PumpEvent::LowBatteryReset(e) => e.at,
            PumpEvent::DeviceAlarm(e) => e.at,
        }
    }

    /// The contract's name of the event type, as written in JSON.
    pub fn type_name(&self) -> &'static str {
        match self {
            PumpEvent::Refill(_) => "REFILL",
            PumpEvent::Reprogram(_) => "REPROGRAM",
            PumpEvent::Bolus(_) => "BOLUS",
            PumpEvent::Mri(_) => "MRI",
            PumpEvent::MotorStall(_) => "MOTOR_STALL",
            PumpEvent::LowBatteryReset(_) => "LOW_BATTERY_RESET",
            PumpEvent::DeviceAlarm(_) => "DEVICE_ALARM",
        }
    }
}

impl<'de> Deserialize<'de> for PumpEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut object = serde_json::Map::deserialize(d)?;
        let type_name = match object.remove("type") {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => {
                return Err(de::Error::custom(format_args!(
                    "`type`: invalid type: {other}, expected an event type name"
                )));
            }
            None => return Err(de::Error::missing_field("type")),
        };
        let name = type_name.strip_prefix("EVENT_TYPE_").unwrap_or(&type_name);
        match name {
            "REFILL" => fields(object).map(PumpEvent::Refill),
            "REPROGRAM" => fields(object).map(PumpEvent::Reprogram),
            "BOLUS" => fields(object).map(PumpEvent::Bolus),
            "MRI" => fields(object).map(PumpEvent::Mri),
            "MOTOR_STALL" => fields(object).map(PumpEvent::MotorStall),
            "LOW_BATTERY_RESET" => fields(object).map(PumpEvent::LowBatteryReset),
            "DEVICE_ALARM" => fields(object).map(PumpEvent::DeviceAlarm),
            _ => Err(de::Error::unknown_variant(&type_name, EVENT_TYPES)),
        }
    }
}

/// Reads an event's own fields; an error names the field as "`name`: problem" so the
/// caller can prefix it with the event's position.
fn fields<T: DeserializeOwned, E: de::Error>(
    object: serde_json::Map<String, serde_json::Value>,
) -> Result<T, E> {
    serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            E::custom(e.into_inner())
        } else {
            E::custom(format_args!("`{path}`: {}", e.into_inner()))
        }
    })
}

/// Who asked for a bolus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BolusSource {
    #[serde(rename = "PATIENT", alias = "BOLUS_SOURCE_PATIENT")]
    Patient,
    #[serde(rename = "CLINICIAN", alias = "BOLUS_SOURCE_CLINICIAN")]
    Clinician,
}

/// The pump families the contract names. Readings carry the model as free text because
/// unknown models must be accepted; this is the interpretation rules rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PumpModel {
    /// Peristaltic, with catheter pressure and motor current sensors.
    Itp20,
    Itp40,
    /// Valve-gated, without those sensors.
    Itv20,
    Itv40,
    Unknown,
}

impl PumpModel {
    pub fn from_name(name: &str) -> Self {
        match name {
            "ITP-20" => PumpModel::Itp20,
            "ITP-40" => PumpModel::Itp40,
            "ITV-20" => PumpModel::Itv20,
            "ITV-40" => PumpModel::Itv40,
            _ => PumpModel::Unknown,
        }
    }

    /// Whether the model reports catheter pressure and motor current.
    pub fn has_flow_sensors(self) -> bool {
        matches!(self, PumpModel::Itp20 | PumpModel::Itp40)
    }
}

/// The drug in the reservoir, as far as alarm priority cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Drug {
    Morphine,
    Hydromorphone,
    Baclofen,
    Ziconotide,
    Bupivacaine,
    Clonidine,
    Other,
}

impl Drug {
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_uppercase().as_str() {
            "MORPHINE" => Drug::Morphine,
            "HYDROMORPHONE" => Drug::Hydromorphone,
            "BACLOFEN" => Drug::Baclofen,
            "ZICONOTIDE" => Drug::Ziconotide,
            "BUPIVACAINE" => Drug::Bupivacaine,
            "CLONIDINE" => Drug::Clonidine,
            _ => Drug::Other,
        }
    }

    /// Whether stopping the drug abruptly causes a withdrawal syndrome. Baclofen's can be
    /// life-threatening; ziconotide and bupivacaine have none. An unknown drug is treated
    /// as dangerous: a false urgent page costs less than a missed one.
    pub fn has_withdrawal_risk(self) -> bool {
        !matches!(self, Drug::Ziconotide | Drug::Bupivacaine)
    }
}
