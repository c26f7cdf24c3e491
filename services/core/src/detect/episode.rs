//! One alarm kind's episode on one pump: at most one open at a time; RAISED once,
//! UPDATED when the priority changes, CLEARED when the condition is over; every event
//! numbered by `revision` under a deterministic `alarm_id`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState, Evidence};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Open {
    alarm_id: String,
    revision: u32,
    priority: AlarmPriority,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Episode {
    open: Option<Open>,
}

/// What a rule says about its condition now.
pub(super) struct Finding {
    pub priority: AlarmPriority,
    pub onset: Option<DateTime<Utc>>,
    pub message: String,
    pub evidence: BTreeMap<String, Evidence>,
}

impl Episode {
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether a finding of this priority would emit an event (raise or update). Rules
    /// ask first, so the message and evidence are only composed when they are sent.
    pub fn needs_event(&self, priority: AlarmPriority) -> bool {
        self.open.as_ref().is_none_or(|o| o.priority != priority)
    }

    /// The condition holds: raise it, or update it when the priority changed.
    pub fn hold(
        &mut self,
        pump_id: &str,
        kind: AlarmKind,
        at: DateTime<Utc>,
        finding: Finding,
        out: &mut Vec<AlarmEvent>,
    ) {
        let (state, alarm_id, revision) = match &mut self.open {
            None => {
                let alarm_id = format!("{pump_id}:{}:{}", kind.name(), at.timestamp());
                self.open = Some(Open {
                    alarm_id: alarm_id.clone(),
                    revision: 1,
                    priority: finding.priority,
                });
                (AlarmState::Raised, alarm_id, 1)
            }
            Some(open) if open.priority != finding.priority => {
                open.revision += 1;
                open.priority = finding.priority;
                (AlarmState::Updated, open.alarm_id.clone(), open.revision)
            }
            Some(_) => return,
        };
        out.push(AlarmEvent {
            alarm_id,
            revision,
            pump_id: pump_id.to_owned(),
            kind,
            priority: finding.priority,
            state,
            detected_at: at,
            onset_at: finding.onset,
            message: finding.message,
            evidence: finding.evidence,
        });
    }

    /// The condition is over: clear an open episode.
    pub fn clear(
        &mut self,
        pump_id: &str,
        kind: AlarmKind,
        at: DateTime<Utc>,
        message: String,
        out: &mut Vec<AlarmEvent>,
    ) {
        let Some(open) = self.open.take() else { return };
        out.push(AlarmEvent {
            alarm_id: open.alarm_id,
            revision: open.revision + 1,
            pump_id: pump_id.to_owned(),
            kind,
            priority: open.priority,
            state: AlarmState::Cleared,
            detected_at: at,
            onset_at: None,
            message,
            evidence: BTreeMap::new(),
        });
    }
}

/// Evidence from `(name, value)` pairs.
pub(super) fn evidence<const N: usize>(pairs: [(&str, Evidence); N]) -> BTreeMap<String, Evidence> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Rounds for display in evidence and messages.
pub(super) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
