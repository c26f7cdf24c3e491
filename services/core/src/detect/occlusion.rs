//! OCCLUSION: catheter pressure rising over the pump's own baseline (a recent median
//! against an older one, so the daily swing and a clinician bolus spike do not count),
//! motor stalls outside the MRI recovery window, and refills whose aspirated residual
//! exceeds the expected one by a consequential volume. Patient bolus demand is kept as
//! supporting evidence.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::battery::median;
use super::config::DetectorConfig;
use super::episode::{Episode, Finding, evidence, round2};
use crate::alarm::{AlarmEvent, AlarmKind, AlarmPriority};
use crate::reading::{Bolus, BolusSource, Drug, MotorStall, Mri, Reading, Refill};

/// Pressure history kept, in seconds (the baseline window ends this far back).
const HISTORY_S: i64 = 8 * 86_400;
const MAX_SAMPLES: usize = 1_024;
const RECENT_S: i64 = 6 * 3_600;
const BASELINE_FROM_S: i64 = 7 * 86_400;
const BASELINE_TO_S: i64 = 2 * 86_400;
/// The baseline (a median of five days ending two days ago) moves slowly: it is
/// recomputed once per six hours of event time, which is most of the per-reading cost
/// saved for a window shift of at most 6 h in 120.
const BASELINE_REFRESH_S: i64 = 6 * 3_600;
/// Readings this soon after a clinician bolus are left out: the pressure spike decays
/// over hours, and its tail plus the daily swing and sensor noise still crossed the
/// threshold 5-7 h after a bolus in simulated noisy fleets.
const BOLUS_SETTLE: Duration = Duration::hours(4);
/// A stall-raised episode clears only after this long without an unexplained stall.
const STALL_QUIET: Duration = Duration::days(7);
/// How long the rise must have held, over at least two evaluations (the first starts
/// the run): a clinician bolus's decaying tail or a burst of sensor noise passes within
/// hours, an occlusion does not (two readings alone were 15 minutes at a fast cadence).
const CONFIRM_FOR: Duration = Duration::hours(4);

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct OcclusionRule {
    episode: Episode,
    /// `(unix seconds, kPa)`: integer time keeps the per-reading work cheap.
    pressure: VecDeque<(i64, f64)>,
    baseline: Option<(i64, Option<f64>)>,
    /// Reused buffer for medians, not state.
    #[serde(skip)]
    scratch: Vec<f64>,
    /// When the current run of evaluations above the threshold began.
    above_since: Option<DateTime<Utc>>,
    last_clinician_bolus: Option<DateTime<Utc>>,
    last_mri_end: Option<DateTime<Utc>>,
    stalls: VecDeque<DateTime<Utc>>,
    /// The latest stall no MRI explains: wear stalls come days apart, so an episode
    /// they raised is cleared only after `STALL_QUIET` without one.
    last_stall: Option<DateTime<Utc>>,
    /// A refill found more drug left than expected; holds until a normal refill.
    discrepancy_ml: Option<f64>,
    patient_boluses: VecDeque<DateTime<Utc>>,
    normal_since: Option<DateTime<Utc>>,
}

impl OcclusionRule {
    pub fn on_refill(&mut self, refill: &Refill, capacity_ml: f64, config: &DetectorConfig) {
        let limit = if capacity_ml <= config.small_reservoir_max_ml {
            config.residual_excess_small_ml
        } else {
            config.residual_excess_large_ml
        };
        let excess = refill.residual_measured_ml - refill.residual_expected_ml;
        self.discrepancy_ml = (excess > limit).then_some(excess);
    }

    pub fn on_mri(&mut self, mri: &Mri) {
        let end = mri.at + Duration::seconds(i64::from(mri.duration_s));
        self.last_mri_end = Some(self.last_mri_end.map_or(end, |e| e.max(end)));
    }

    pub fn on_stall(&mut self, stall: &MotorStall, config: &DetectorConfig) {
        let explained = self
            .last_mri_end
            .is_some_and(|end| stall.at <= end + config.mri_recovery);
        if !explained {
            self.stalls.push_back(stall.at);
            self.last_stall = Some(self.last_stall.map_or(stall.at, |t| t.max(stall.at)));
        }
        while self
            .stalls
            .front()
            .is_some_and(|&t| stall.at - t > config.stall_window)
        {
            self.stalls.pop_front();
        }
    }

    pub fn on_bolus(&mut self, bolus: &Bolus) {
        match bolus.source {
            BolusSource::Clinician => self.last_clinician_bolus = Some(bolus.at),
            BolusSource::Patient => {
                self.patient_boluses.push_back(bolus.at);
                while self
                    .patient_boluses
                    .front()
                    .is_some_and(|&t| bolus.at - t > Duration::hours(24))
                {
                    self.patient_boluses.pop_front();
                }
            }
        }
    }

    /// Rise of the recent pressure median over the baseline median, when both exist.
    fn pressure_rise(&mut self, r: &Reading) -> Option<(f64, f64)> {
        let kpa = r.catheter_pressure_kpa?;
        let now = r.measured_at.timestamp();
        let settling = self
            .last_clinician_bolus
            .is_some_and(|b| r.measured_at >= b && r.measured_at - b < BOLUS_SETTLE);
        if !settling {
            self.pressure.push_back((now, kpa));
        }
        while self.pressure.len() > MAX_SAMPLES
            || self
                .pressure
                .front()
                .is_some_and(|(t, _)| now - t > HISTORY_S)
        {
            self.pressure.pop_front();
        }
        let hour = now.div_euclid(BASELINE_REFRESH_S);
        let base = match self.baseline {
            Some((h, base)) if h == hour => base,
            _ => {
                self.scratch.clear();
                self.scratch.extend(
                    self.pressure
                        .iter()
                        .filter(|(t, _)| (BASELINE_TO_S..=BASELINE_FROM_S).contains(&(now - t)))
                        .map(|p| p.1),
                );
                let base = if self.scratch.len() < 12 {
                    None
                } else {
                    median(&mut self.scratch)
                };
                self.baseline = Some((hour, base));
                base
            }
        }?;
        self.scratch.clear();
        self.scratch.extend(
            self.pressure
                .iter()
                .rev()
                .take_while(|(t, _)| now - t <= RECENT_S)
                .map(|p| p.1),
        );
        if self.scratch.len() < 2 {
            return None;
        }
        Some((median(&mut self.scratch)? - base, base))
    }

    pub fn evaluate(
        &mut self,
        pump_id: &str,
        drug: Drug,
        r: &Reading,
        clock: DateTime<Utc>,
        config: &DetectorConfig,
        out: &mut Vec<AlarmEvent>,
    ) {
        let rise = self.pressure_rise(r);
        let pressure_high = rise.is_some_and(|(d, _)| d > config.pressure_rise_kpa);
        self.above_since = if pressure_high {
            Some(self.above_since.unwrap_or(r.measured_at))
        } else {
            None
        };
        let pressure_alarm = self
            .above_since
            .is_some_and(|t| r.measured_at - t >= CONFIRM_FOR);
        let stalls = self
            .stalls
            .iter()
            .filter(|&&t| r.measured_at - t <= config.stall_window)
            .count();
        let stall_alarm = stalls >= config.stalls_to_alarm;
        let discrepancy = self.discrepancy_ml;

        if !(pressure_alarm || stall_alarm || discrepancy.is_some()) {
            let quiet = rise.is_none_or(|(d, _)| d < config.pressure_rise_kpa / 2.0)
                && self
                    .last_stall
                    .is_none_or(|t| r.measured_at - t >= STALL_QUIET);
            if quiet && self.episode.is_open() {
                let since = *self.normal_since.get_or_insert(r.measured_at);
                if r.measured_at - since >= Duration::hours(48) {
                    self.episode.clear(
                        pump_id,
                        AlarmKind::Occlusion,
                        clock,
                        format!("Pump {pump_id}'s delivery looks normal again."),
                        out,
                    );
                    self.normal_since = None;
                }
            } else {
                self.normal_since = None;
            }
            return;
        }
        self.normal_since = None;
        let stopped = stall_alarm;
        let priority = if stopped || drug.has_withdrawal_risk() {
            AlarmPriority::High
        } else {
            AlarmPriority::Medium
        };
        if !self.episode.needs_event(priority) {
            return;
        }
        let why = if stall_alarm {
            format!(
                "motor stalled {stalls} times in 24 h with no MRI to explain it: therapy may have stopped"
            )
        } else if let Some(excess) = discrepancy {
            format!(
                "refill found {excess:.1} mL more drug than expected: the drug is not being delivered (catheter or pump occlusion suspected)"
            )
        } else {
            let d = rise.map_or(0.0, |(d, _)| d);
            format!(
                "catheter pressure is {d:.0} kPa above its own baseline and rising: catheter occlusion suspected"
            )
        };
        let mut ev = evidence([
            ("motor_stalls_24h", (stalls as f64).into()),
            (
                "patient_bolus_requests_24h",
                (self.patient_boluses.len() as f64).into(),
            ),
        ]);
        if let Some((d, base)) = rise {
            ev.insert("pressure_rise_kpa".into(), round2(d).into());
            ev.insert("pressure_baseline_kpa".into(), round2(base).into());
        }
        if let Some(excess) = discrepancy {
            ev.insert("residual_excess_ml".into(), round2(excess).into());
        }
        if let Some(ma) = r.motor_current_ma {
            ev.insert("motor_current_ma".into(), ma.into());
        }
        let finding = Finding {
            priority,
            onset: None,
            message: format!("Pump {pump_id}: {why}; examine the catheter and pump."),
            evidence: ev,
        };
        self.episode
            .hold(pump_id, AlarmKind::Occlusion, clock, finding, out);
    }
}
