//! TELEMETRY_LOST: no reading of the pump for `telemetry_lost_after` on the detector's
//! clock. Silence is measured from when the pump's latest reading *arrived*, so a
//! backlog delivered after an outage (old `measured_at`, arriving now) resumes contact
//! at once and does not re-raise while it drains.

use chrono::{DateTime, Utc};

use super::config::DetectorConfig;
use super::episode::{Finding, evidence, round2};
use super::pump_state::PumpState;
use crate::alarm::{AlarmEvent, AlarmKind, AlarmPriority};

pub(super) fn on_clock(
    pump: &mut PumpState,
    now: DateTime<Utc>,
    config: &DetectorConfig,
    out: &mut Vec<AlarmEvent>,
) {
    let silent = now - pump.last_arrival;
    if silent < config.telemetry_lost_after || pump.telemetry.is_open() {
        return;
    }
    let hours = round2(silent.num_seconds() as f64 / 3600.0);
    let finding = Finding {
        priority: AlarmPriority::Medium,
        onset: Some(pump.last_arrival + config.telemetry_lost_after),
        message: format!(
            "No telemetry from pump {} for {hours} h: monitoring of this patient has stopped; contact the patient to reconnect the home gateway.",
            pump.pump_id
        ),
        evidence: evidence([
            ("hours_silent", hours.into()),
            (
                "last_contact_at",
                crate::json::format_timestamp(&pump.last_arrival).into(),
            ),
        ]),
    };
    pump.telemetry.hold(
        &pump.pump_id.clone(),
        AlarmKind::TelemetryLost,
        now,
        finding,
        out,
    );
}

pub(super) fn on_reading(pump: &mut PumpState, clock: DateTime<Utc>, out: &mut Vec<AlarmEvent>) {
    if pump.telemetry.is_open() {
        let id = pump.pump_id.clone();
        pump.telemetry.clear(
            &id,
            AlarmKind::TelemetryLost,
            clock,
            format!("Telemetry from pump {id} has resumed."),
            out,
        );
    }
}
