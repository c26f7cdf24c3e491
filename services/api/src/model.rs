//! What the API answers, as JSON (HTTP) and, mapped field for field, as protobuf (gRPC).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An alarm episode at its latest revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    pub alarm_id: String,
    pub revision: u32,
    pub pump_id: String,
    /// The clinic following the pump; absent for the manufacturer's role.
    pub clinic_id: Option<String>,
    pub kind: String,
    pub priority: String,
    pub state: String,
    pub raised_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub message: String,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmRevision {
    pub revision: u32,
    pub state: String,
    pub priority: String,
    pub detected_at: DateTime<Utc>,
    pub message: String,
    pub evidence: serde_json::Value,
}

/// One page of the alarm to its clinic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub revision: u32,
    pub escalation: u32,
    pub target: String,
    pub status: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Every attempt, in order.
    pub history: Vec<DeliveryAttempt>,
}

/// One delivery attempt of a page, as the notifier recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub target: String,
    pub endpoint: String,
    pub accepted: bool,
    /// The receipt id when accepted, the error otherwise.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acknowledgement {
    pub clinician: String,
    pub note: String,
    pub at: DateTime<Utc>,
}

/// An alarm with everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmDetail {
    pub alarm: Alarm,
    pub revisions: Vec<AlarmRevision>,
    pub deliveries: Vec<Delivery>,
    pub acknowledgements: Vec<Acknowledgement>,
}

/// A pump as the dashboard lists it. The therapy fields (drug, reservoir, refill
/// date) are the clinic's; the manufacturer's role gets device data only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pump {
    pub pump_id: String,
    pub clinic_id: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub last_contact: Option<DateTime<Utc>>,
    pub open_alarms: u32,
    pub drug: Option<String>,
    pub reservoir_ml: Option<f64>,
    pub refill_due_at: Option<DateTime<Utc>>,
}

/// Filters of `ListAlarms`; every one optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmFilter {
    pub state: Option<String>,
    pub priority: Option<String>,
    pub kind: Option<String>,
    pub pump_id: Option<String>,
    /// Latest revision at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Latest revision before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only episodes not cleared.
    #[serde(default)]
    pub active: bool,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeRequest {
    pub clinician: String,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcknowledgeAnswer {
    /// False when the alarm has not reached the notifier yet; the acknowledgement is
    /// kept and takes effect when it does.
    pub known: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Me {
    pub name: String,
    pub role: &'static str,
    pub clinic_id: Option<String>,
}
