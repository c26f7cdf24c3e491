//! What the detector decides (contract §3): alarm events, one open episode per
//! `(pump_id, kind)`, each event numbered by `revision` so clinics deduplicate on
//! `(alarm_id, revision)`.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::serde_forms::{opt_timestamp, timestamp, uint32};

/// The condition an alarm is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlarmKind {
    #[serde(rename = "LOW_RESERVOIR", alias = "ALARM_KIND_LOW_RESERVOIR")]
    LowReservoir,
    #[serde(rename = "BATTERY_EOL", alias = "ALARM_KIND_BATTERY_EOL")]
    BatteryEol,
    #[serde(rename = "OCCLUSION", alias = "ALARM_KIND_OCCLUSION")]
    Occlusion,
    #[serde(rename = "MISSED_REFILL", alias = "ALARM_KIND_MISSED_REFILL")]
    MissedRefill,
    #[serde(rename = "TELEMETRY_LOST", alias = "ALARM_KIND_TELEMETRY_LOST")]
    TelemetryLost,
    /// Ours, not the contract's five: repeated low-battery resets (an internal short).
    #[serde(rename = "LOW_BATTERY_RESETS", alias = "ALARM_KIND_LOW_BATTERY_RESETS")]
    LowBatteryResets,
}

impl AlarmKind {
    /// The contract's five kinds: what scenarios label and scoring counts.
    pub const CONTRACT: [AlarmKind; 5] = [
        AlarmKind::LowReservoir,
        AlarmKind::BatteryEol,
        AlarmKind::Occlusion,
        AlarmKind::MissedRefill,
        AlarmKind::TelemetryLost,
    ];

    /// Every kind this system raises: the contract's and ours.
    pub const ALL: [AlarmKind; 6] = [
        AlarmKind::LowReservoir,
        AlarmKind::BatteryEol,
        AlarmKind::Occlusion,
        AlarmKind::MissedRefill,
        AlarmKind::TelemetryLost,
        AlarmKind::LowBatteryResets,
    ];

    /// The contract's name, as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            AlarmKind::LowReservoir => "LOW_RESERVOIR",
            AlarmKind::BatteryEol => "BATTERY_EOL",
            AlarmKind::Occlusion => "OCCLUSION",
            AlarmKind::MissedRefill => "MISSED_REFILL",
            AlarmKind::TelemetryLost => "TELEMETRY_LOST",
            AlarmKind::LowBatteryResets => "LOW_BATTERY_RESETS",
        }
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IEC 60601-1-8 priority. Ordered: `Low < Medium < High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlarmPriority {
    /// Awareness.
    #[serde(rename = "LOW", alias = "ALARM_PRIORITY_LOW")]
    Low,
    /// Prompt response.
    #[serde(rename = "MEDIUM", alias = "ALARM_PRIORITY_MEDIUM")]
    Medium,
    /// Immediate response.
    #[serde(rename = "HIGH", alias = "ALARM_PRIORITY_HIGH")]
    High,
}

impl AlarmPriority {
    pub fn name(self) -> &'static str {
        match self {
            AlarmPriority::Low => "LOW",
            AlarmPriority::Medium => "MEDIUM",
            AlarmPriority::High => "HIGH",
        }
    }
}

/// Where an event stands in its episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlarmState {
    /// A new episode.
    #[serde(rename = "RAISED", alias = "ALARM_STATE_RAISED")]
    Raised,
    /// Priority or evidence changed.
    #[serde(rename = "UPDATED", alias = "ALARM_STATE_UPDATED")]
    Updated,
    /// The condition is over.
    #[serde(rename = "CLEARED", alias = "ALARM_STATE_CLEARED")]
    Cleared,
}

impl AlarmState {
    pub fn name(self) -> &'static str {
        match self {
            AlarmState::Raised => "RAISED",
            AlarmState::Updated => "UPDATED",
            AlarmState::Cleared => "CLEARED",
        }
    }
}

/// One number or string behind a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Evidence {
    Number(f64),
    Text(String),
}

impl From<f64> for Evidence {
    fn from(v: f64) -> Self {
        Evidence::Number(v)
    }
}

impl From<&str> for Evidence {
    fn from(v: &str) -> Self {
        Evidence::Text(v.to_owned())
    }
}

impl From<String> for Evidence {
    fn from(v: String) -> Self {
        Evidence::Text(v)
    }
}

/// One event of one alarm episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// Stable for one episode of one condition on one pump.
    #[serde(alias = "alarmId")]
    pub alarm_id: String,
    /// +1 for every event of the episode, starting at 1.
    #[serde(deserialize_with = "uint32::deserialize")]
    pub revision: u32,
    #[serde(alias = "pumpId")]
    pub pump_id: String,
    pub kind: AlarmKind,
    pub priority: AlarmPriority,
    pub state: AlarmState,
    /// The detector's event-time clock when it decided.
    #[serde(alias = "detectedAt", with = "timestamp")]
    pub detected_at: DateTime<Utc>,
    /// When the condition is believed to have begun, if known.
    #[serde(
        alias = "onsetAt",
        default,
        with = "opt_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub onset_at: Option<DateTime<Utc>>,
    /// One sentence for a clinician.
    pub message: String,
    /// The numbers behind the decision; ordered, so the JSON form is deterministic.
    #[serde(default)]
    pub evidence: BTreeMap<String, Evidence>,
}

impl AlarmEvent {
    /// The idempotency key of every hop after the detector.
    pub fn dedup_key(&self) -> (&str, u32) {
        (&self.alarm_id, self.revision)
    }
}
