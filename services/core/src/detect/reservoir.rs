//! LOW_RESERVOIR and MISSED_REFILL, from the pump's volume estimate, its programmed rate
//! and the clinic's appointment (`refill_due_at`).
//!
//! LOW_RESERVOIR holds when the reservoir is at or below its threshold; when, at the
//! programmed rate, it will reach the threshold before the appointment (a rate raised
//! without moving the appointment); or, once the appointment is overdue by more than
//! the grace, when the threshold is within the overdue horizon. Priority rises as the
//! projected empty time nears, and with the drug's withdrawal risk.
//! MISSED_REFILL holds from the end of the grace until the appointment moves (a refill
//! records the next one).

use chrono::{DateTime, Duration, Utc};

use super::config::DetectorConfig;
use super::episode::{Finding, evidence, round2};
use super::pump_state::{PumpState, Snapshot};
use crate::alarm::{AlarmEvent, AlarmKind, AlarmPriority};
use crate::json::format_timestamp;
use crate::reading::Drug;

/// The projected volume at `now`, from the latest reading and the programmed rate.
fn volume_at(s: &Snapshot, now: DateTime<Utc>) -> f64 {
    let days = (now - s.measured_at).num_seconds().max(0) as f64 / 86_400.0;
    (s.reservoir_ml - s.rate_ml_per_day * days).max(0.0)
}

fn after_days(from: DateTime<Utc>, days: f64) -> DateTime<Utc> {
    from + Duration::seconds((days.clamp(0.0, 36_500.0) * 86_400.0) as i64)
}

/// When the reservoir reaches its threshold at the programmed rate (None: it never does).
pub(super) fn threshold_at(s: &Snapshot) -> Option<DateTime<Utc>> {
    (s.rate_ml_per_day > 0.0).then(|| {
        after_days(
            s.measured_at,
            (s.reservoir_ml - s.threshold_ml) / s.rate_ml_per_day,
        )
    })
}

pub(super) fn evaluate(
    pump: &mut PumpState,
    now: DateTime<Utc>,
    config: &DetectorConfig,
    out: &mut Vec<AlarmEvent>,
) {
    let s = pump.snapshot.clone();
    let id = pump.pump_id.as_str();
    let overdue_since = s.refill_due_at + config.refill_grace;
    let overdue = now > overdue_since;

    // MISSED_REFILL
    if overdue && pump.missed_refill.needs_event(AlarmPriority::Medium) {
        let hours_late = round2((now - s.refill_due_at).num_seconds() as f64 / 3600.0);
        let finding = Finding {
            priority: AlarmPriority::Medium,
            onset: Some(overdue_since),
            message: format!(
                "Pump {id} was due for a refill at {} and none has been recorded ({hours_late} h late): book the refill now.",
                format_timestamp(&s.refill_due_at)
            ),
            evidence: evidence([
                ("refill_due_at", format_timestamp(&s.refill_due_at).into()),
                ("hours_late", hours_late.into()),
                ("reservoir_ml", round2(volume_at(&s, now)).into()),
            ]),
        };
        pump.missed_refill
            .hold(id, AlarmKind::MissedRefill, now, finding, out);
    } else if !overdue && pump.missed_refill.is_open() {
        pump.missed_refill.clear(
            id,
            AlarmKind::MissedRefill,
            now,
            format!("Pump {id} has a refill recorded or a new appointment."),
            out,
        );
    }

    // LOW_RESERVOIR
    let volume = volume_at(&s, now);
    let at_threshold = volume <= s.threshold_ml;
    let reaches = threshold_at(&s);
    let before_appointment = reaches.is_some_and(|t| t < s.refill_due_at);
    let soon_when_overdue =
        overdue && reaches.is_some_and(|t| t <= now + config.overdue_projection_horizon);
    let holds = at_threshold || before_appointment || soon_when_overdue;
    if holds {
        let empty_at =
            (s.rate_ml_per_day > 0.0).then(|| after_days(now, volume / s.rate_ml_per_day));
        let to_empty = empty_at.map(|t| t - now);
        let withdrawal = pump.drug.has_withdrawal_risk();
        let priority = match to_empty {
            Some(d) if d <= config.reservoir_urgent_within => {
                if withdrawal {
                    AlarmPriority::High
                } else {
                    AlarmPriority::Medium
                }
            }
            Some(d) if d <= config.reservoir_prompt_within => AlarmPriority::Medium,
            _ if at_threshold => AlarmPriority::Medium,
            _ => AlarmPriority::Low,
        };
        if !pump.low_reservoir.needs_event(priority) {
            return;
        }
        let why = if at_threshold {
            "is at or below its low-reservoir threshold".to_owned()
        } else if before_appointment {
            format!(
                "will reach its low-reservoir threshold before the refill appointment of {}",
                format_timestamp(&s.refill_due_at)
            )
        } else {
            "is overdue for a refill and will reach its low-reservoir threshold within days"
                .to_owned()
        };
        let days_to_empty =
            to_empty.map_or(f64::INFINITY, |d| round2(d.num_seconds() as f64 / 86_400.0));
        let mut ev = evidence([
            ("reservoir_ml", round2(volume).into()),
            ("threshold_ml", s.threshold_ml.into()),
            ("rate_ml_per_day", s.rate_ml_per_day.into()),
            ("refill_due_at", format_timestamp(&s.refill_due_at).into()),
        ]);
        if days_to_empty.is_finite() {
            ev.insert("days_to_empty".into(), days_to_empty.into());
        }
        if let Some(t) = empty_at {
            ev.insert("projected_empty_at".into(), format_timestamp(&t).into());
        }
        let finding = Finding {
            priority,
            onset: None,
            message: format!(
                "Pump {id} ({}) {why}: {:.1} mL left at {:.2} mL/day, empty in about {days_to_empty} days; refill before it runs dry.",
                drug_name(pump.drug),
                volume,
                s.rate_ml_per_day
            ),
            evidence: ev,
        };
        pump.low_reservoir
            .hold(id, AlarmKind::LowReservoir, now, finding, out);
    } else if pump.low_reservoir.is_open() {
        // Cleared only with a clear margin, so a projection hovering at the
        // appointment does not flap.
        let comfortable = reaches.is_none_or(|t| t > s.refill_due_at + Duration::hours(12));
        if comfortable {
            pump.low_reservoir.clear(
                id,
                AlarmKind::LowReservoir,
                now,
                format!("Pump {id}'s reservoir is sufficient until its refill appointment."),
                out,
            );
        }
    }
}

fn drug_name(drug: Drug) -> &'static str {
    match drug {
        Drug::Morphine => "morphine",
        Drug::Hydromorphone => "hydromorphone",
        Drug::Baclofen => "baclofen",
        Drug::Ziconotide => "ziconotide",
        Drug::Bupivacaine => "bupivacaine",
        Drug::Clonidine => "clonidine",
        Drug::Other => "other drug",
    }
}
