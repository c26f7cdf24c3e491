//! One virtual pump: therapy, battery and motor simulated in continuous time between
//! interrogations, as a discrete-event simulation, and the [`Reading`] that one
//! interrogation returns.
//!
//! Between two events every quantity changes linearly (reservoir at the programmed
//! rate, battery at its drain), so level crossings (low reservoir, empty, ERI, EOS) are
//! computed exactly rather than found at the next reading, and the pump's own alarm
//! carries the time the pump would have sounded it.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Timelike, Utc};
use fleet_core::{
    Bolus, BolusSource, DeviceAlarm, LowBatteryReset, MotorStall, Mri, PumpEvent, Reading, Refill,
    Reprogram,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::plan::ASPIRATION_ERROR_CLIP_ML;
use crate::random::{
    Channel, HashedNoise, between, days_between, exponential_days, gaussian, plus_days,
    plus_days_ceil, plus_hours, round_dp,
};
use crate::spec::FaultKind;

/// Fuel gauge level at which the pump sets its elective replacement indicator.
pub const ERI_BATTERY_PCT: f64 = 5.0;
/// Fuel gauge level at which the pump declares end of service and stops. At the
/// nominal drain (about 0.05 %/day) this is about 90 days after ERI, as labelled.
pub const EOS_BATTERY_PCT: f64 = 0.5;
/// The pump's own empty-reservoir critical alarm code (the contract allows other codes).
pub const EMPTY_RESERVOIR_ALARM: &str = "EMPTY_RESERVOIR";

/// Catheter pressure above baseline at which the peristaltic motor starts to stall
/// against an occlusion.
pub(crate) const OCCLUSION_STALL_EXCESS_KPA: f64 = 120.0;
/// Pressure an occluded catheter ramps up to, at most.
const OCCLUSION_MAX_EXCESS_KPA: f64 = 220.0;
/// How fast a clinician-bolus pressure spike decays.
const SPIKE_DECAY_H: f64 = 1.5;
/// Slack when comparing volumes and gauge levels computed in floating point.
const LEVEL_EPSILON: f64 = 1e-9;

/// A period in which the pump's home gateway is offline. Modelled by the fleet's
/// simulated gateway; a [`VirtualPump`] driven directly is never offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayOutage {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `true`: the gateway kept interrogating and buffered the readings, delivered at
    /// `end`. `false`: the gateway was powered off and the pump was not interrogated.
    pub buffered: bool,
}

impl GatewayOutage {
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// When the gateway interrogates the pump: slot `k` is at `start + k * cadence` plus a
/// few seconds of jitter (never before `start`, never reordering slots).
#[derive(Debug, Clone)]
pub(crate) struct Interrogation {
    pub(crate) start: DateTime<Utc>,
    pub(crate) cadence_s: i64,
    pub(crate) jitter_max_s: i64,
    pub(crate) noise: HashedNoise,
}

impl Interrogation {
    pub(crate) fn new(start: DateTime<Utc>, cadence: Duration, noise: HashedNoise) -> Self {
        let cadence_s = cadence.num_seconds().max(1);
        Interrogation {
            start,
            cadence_s,
            // A little jitter (at most 2 min), always far less than half a cadence.
            jitter_max_s: (cadence_s / 30).min(120),
            noise,
        }
    }

    pub(crate) fn slot_time(&self, slot: u64) -> DateTime<Utc> {
        let nominal = self.start + Duration::seconds(self.cadence_s.saturating_mul(slot as i64));
        let j = self.jitter_max_s;
        if j == 0 {
            return nominal;
        }
        let u = self.noise.uniform(slot, Channel::Jitter);
        let offset_s = if slot == 0 {
            (u * (j + 1) as f64).floor() as i64
        } else {
            (u * (2 * j + 1) as f64).floor() as i64 - j
        };
        nominal + Duration::seconds(offset_s)
    }

    /// The last slot measured before `at`, if any.
    pub(crate) fn last_slot_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let elapsed_s = (at - self.start).num_seconds();
        if elapsed_s <= 0 {
            return None;
        }
        let mut slot = (elapsed_s / self.cadence_s) as u64 + 1;
        loop {
            let t = self.slot_time(slot);
            if t < at {
                return Some(t);
            }
            if slot == 0 {
                return None;
            }
            slot -= 1;
        }
    }
}

/// What the patient does about the current refill appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VisitPolicy {
    /// Within about an hour of the appointment.
    OnTime,
    /// 6-20 h late: inside the 24 h grace.
    Late,
    /// Does not come, ignores the low-reservoir alarm, and comes 12-48 h after the
    /// reservoir ran empty (withdrawal brings them in).
    Missed,
}

/// A one-off happening planned when the pump was drawn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScheduledAction {
    pub(crate) at: DateTime<Utc>,
    pub(crate) action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// The clinician multiplies the rate; `move_refill` also brings the appointment
    /// forward to match the faster drawdown.
    Reprogram {
        multiplier: f64,
        move_refill: bool,
    },
    OcclusionStart,
    /// An internal short: the battery drains at this rate from now on.
    ShortStart {
        drain_pct_per_day: f64,
    },
    Mri {
        duration_s: u32,
    },
    Stall {
        duration_s: u32,
    },
    /// Shaft wear: stalls from now on, ever more often.
    WearStart,
    ClinicianBolus {
        volume_ml: f64,
        spike_kpa: f64,
    },
}

/// The shape of the injected fault, as planned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FaultPlan {
    None,
    /// Missed or late refill of the appointment at `due`.
    FirstRefill {
        due: DateTime<Utc>,
    },
    Reprogram {
        at: DateTime<Utc>,
        multiplier: f64,
    },
    /// `ramp_kpa_per_day` only on sensor models.
    Occlusion {
        onset: DateTime<Utc>,
        ramp_kpa_per_day: Option<f64>,
    },
    NominalBattery,
    Short {
        at: DateTime<Utc>,
        drain_pct_per_day: f64,
    },
    Mri {
        at: DateTime<Utc>,
    },
    Wear {
        onset: DateTime<Utc>,
    },
    ClinicianBoluses {
        count: usize,
    },
    Outage(GatewayOutage),
}

/// A transition seen while simulating, kept to label the ground truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Milestone {
    LowReservoir {
        at: DateTime<Utc>,
        /// Expected drawdown at that moment (programmed rate plus usual boluses).
        consumption_ml_per_day: f64,
    },
    Empty {
        at: DateTime<Utc>,
    },
    Refill {
        at: DateTime<Utc>,
        excess_ml: f64,
    },
    Eri {
        at: DateTime<Utc>,
    },
    Eos {
        at: DateTime<Utc>,
    },
}

/// A patient's handheld: bolus requests arrive as a Poisson process; one inside the
/// lockout after a granted one is refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PatientBolusProfile {
    pub(crate) volume_ml: f64,
    pub(crate) mean_interval_days: f64,
    pub(crate) lockout: Duration,
}

impl PatientBolusProfile {
    /// Expected granted volume per day, for planning refills. Approximate: lockout
    /// refusals are rare at the request rates drawn.
    pub(crate) fn expected_ml_per_day(&self) -> f64 {
        self.volume_ml / self.mean_interval_days
    }
}

/// Catheter pressure and motor current of a peristaltic (ITP) pump.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SensorProfile {
    pub(crate) baseline_kpa: f64,
    /// Posture and circadian swing, amplitude.
    pub(crate) swing_kpa: f64,
    pub(crate) swing_phase_h: f64,
    pub(crate) current_baseline_ma: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Occlusion {
    pub(crate) onset: DateTime<Utc>,
    /// Share of commanded delivery that does not reach the patient.
    pub(crate) blocked_fraction: f64,
    pub(crate) ramp_kpa_per_day: f64,
    /// The catheter is revised at the first refill whose residual discrepancy is
    /// consequential (above 1 mL on 20 mL pumps, 2 mL on 40 mL pumps).
    pub(crate) cleared_at: Option<DateTime<Utc>>,
}

impl Occlusion {
    fn active_at(&self, at: DateTime<Utc>) -> bool {
        self.onset <= at && self.cleared_at.is_none_or(|c| at < c)
    }

    fn excess_kpa(&self, at: DateTime<Utc>) -> f64 {
        if self.active_at(at) {
            (self.ramp_kpa_per_day * days_between(self.onset, at)).min(OCCLUSION_MAX_EXCESS_KPA)
        } else {
            0.0
        }
    }
}

/// One implanted pump and its home gateway's link to it.
#[derive(Debug, Clone)]
pub struct VirtualPump {
    // Identity, fixed.
    pub(crate) pump_id: String,
    pub(crate) gateway_id: String,
    pub(crate) model: &'static str,
    pub(crate) firmware: &'static str,
    pub(crate) drug: &'static str,
    pub(crate) concentration_mg_per_ml: f64,
    pub(crate) capacity_ml: f64,
    pub(crate) low_threshold_ml: f64,
    pub(crate) fault: FaultKind,
    /// The fault's planned shape, kept to label the truth.
    pub(crate) plan: FaultPlan,
    pub(crate) outage: Option<GatewayOutage>,

    // Interrogation.
    pub(crate) interrogation: Interrogation,
    pub(crate) next_slot: u64,
    pub(crate) next_seq: u64,

    // The clinic's plan.
    pub(crate) rate_ml_per_day: f64,
    pub(crate) patient_bolus: Option<PatientBolusProfile>,
    /// How many days before the alarm date the clinic books the refill.
    pub(crate) lead_days: f64,
    /// Least volume above the threshold the clinic wants left at the appointment.
    pub(crate) min_margin_ml: f64,
    pub(crate) refill_due_at: DateTime<Utc>,
    pub(crate) next_visit: Option<DateTime<Utc>>,
    pub(crate) visit_policy: VisitPolicy,

    // Continuous state, valid at `clock`.
    pub(crate) clock: DateTime<Utc>,
    pub(crate) reservoir_ml: f64,
    /// What is really in the reservoir; above the estimate while the catheter is
    /// occluded.
    pub(crate) actual_reservoir_ml: f64,
    pub(crate) delivered_total_ml: f64,
    pub(crate) battery_pct: f64,
    pub(crate) drain_pct_per_day: f64,
    pub(crate) eri: bool,
    pub(crate) eos: bool,
    pub(crate) paused_until: DateTime<Utc>,
    pub(crate) motor_stall_count: u32,
    pub(crate) low_alarm_sounded: bool,
    pub(crate) empty_since: Option<DateTime<Utc>>,
    pub(crate) last_granted_bolus_at: Option<DateTime<Utc>>,

    // Faults and their processes.
    pub(crate) actions: VecDeque<ScheduledAction>,
    pub(crate) occlusion: Option<Occlusion>,
    pub(crate) short_since_pct: Option<f64>,
    pub(crate) wear_since: Option<DateTime<Utc>>,
    pub(crate) pressure_spikes: Vec<(DateTime<Utc>, f64)>,
    pub(crate) next_patient_bolus_at: Option<DateTime<Utc>>,
    pub(crate) next_reset_at: Option<DateTime<Utc>>,
    pub(crate) next_wear_stall_at: Option<DateTime<Utc>>,
    pub(crate) next_occlusion_stall_at: Option<DateTime<Utc>>,

    // Measurement.
    pub(crate) sensors: Option<SensorProfile>,
    pub(crate) temperature_offset_c: f64,
    pub(crate) noise: HashedNoise,
    /// [`FleetSpec::noise_scale`](crate::FleetSpec::noise_scale).
    pub(crate) noise_scale: f64,
    /// [`FleetSpec::fault_scale`](crate::FleetSpec::fault_scale).
    pub(crate) fault_scale: f64,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) pending_events: Vec<PumpEvent>,
    pub(crate) milestones: Vec<Milestone>,
}

/// Something that happens to the pump at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Happening {
    Action,
    Visit,
    PatientBolus,
    BatteryReset,
    WearStall,
    OcclusionStall,
}

impl VirtualPump {
    /// The pump serial, e.g. `ITP40-100002`.
    pub fn pump_id(&self) -> &str {
        &self.pump_id
    }

    /// `gw-` and the pump's number: one gateway per home.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// `ITP-20`, `ITP-40`, `ITV-20` or `ITV-40`.
    pub fn model(&self) -> &str {
        self.model
    }

    pub fn drug(&self) -> &str {
        self.drug
    }

    pub fn fault(&self) -> FaultKind {
        self.fault
    }

    pub fn reservoir_capacity_ml(&self) -> f64 {
        self.capacity_ml
    }

    /// The gateway outage the fleet simulates for this pump, if any.
    pub fn gateway_outage(&self) -> Option<GatewayOutage> {
        self.outage
    }

    /// When the gateway next interrogates the pump.
    pub fn next_due(&self) -> DateTime<Utc> {
        self.interrogation.slot_time(self.next_slot)
    }

    /// The `seq` the next reading will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Interrogates the pump at [`next_due`](Self::next_due): simulates up to then and
    /// returns what the pump reports, with the events since the previous reading.
    pub fn next_reading(&mut self) -> Reading {
        let at = self.next_due();
        let slot = self.next_slot;
        self.advance_to(at);
        let reading = self.reading(at, slot);
        self.next_slot += 1;
        self.next_seq += 1;
        reading
    }

    /// The gateway did not interrogate the pump before `at` (it was off): those
    /// interrogations never happen and consume no `seq`. Events in the gap are
    /// reported with the next reading, as a pump's log would keep them.
    pub fn skip_until(&mut self, at: DateTime<Utc>) {
        while self.next_due() < at {
            self.next_slot += 1;
        }
    }

    /// Runs one interrogation without building its reading (for the dry run that
    /// labels the truth). Keeps in step with [`next_reading`](Self::next_reading)
    /// because reading noise is hashed, not drawn.
    pub(crate) fn next_silent(&mut self) {
        let at = self.next_due();
        self.advance_to(at);
        self.pending_events.clear();
        self.next_slot += 1;
        self.next_seq += 1;
    }

    pub(crate) fn skip_slot(&mut self) {
        self.next_slot += 1;
    }

    /// Expected drawdown for planning: programmed rate plus the usual patient boluses.
    pub(crate) fn expected_consumption_ml_per_day(&self) -> f64 {
        self.rate_ml_per_day
            + self
                .patient_bolus
                .as_ref()
                .map_or(0.0, PatientBolusProfile::expected_ml_per_day)
    }

    /// The appointment the clinic books after a refill (or a reprogram that moves it):
    /// `lead_days` before the projected alarm date, at clinic hours.
    fn plan_refill_due(&mut self, from: DateTime<Utc>) -> DateTime<Utc> {
        let consumption = self.expected_consumption_ml_per_day();
        let margin_ml = (consumption * self.lead_days).max(self.min_margin_ml);
        let days = ((self.reservoir_ml - self.low_threshold_ml - margin_ml) / consumption).max(1.0);
        clinic_hours(plus_days(from, days), &mut self.rng)
    }

    /// When the patient actually comes for the appointment at `due`.
    pub(crate) fn visit_for(
        &mut self,
        due: DateTime<Utc>,
        policy: VisitPolicy,
    ) -> Option<DateTime<Utc>> {
        match policy {
            VisitPolicy::OnTime => {
                let minutes = self.rng.random_range(-90..=45);
                Some(due + Duration::minutes(minutes))
            }
            VisitPolicy::Late => {
                let minutes = self.rng.random_range(6 * 60..=20 * 60);
                Some(due + Duration::minutes(minutes))
            }
            VisitPolicy::Missed => None,
        }
    }

    /// Simulates up to `at`, applying every happening on the way in time order.
    pub(crate) fn advance_to(&mut self, at: DateTime<Utc>) {
        loop {
            let next = self.next_happening().filter(|&(t, _)| t <= at);
            let target = next.map_or(at, |(t, _)| t.max(self.clock));
            if !self.flow_until(target) {
                // The pump sounded an alarm on the way, which may have brought a visit
                // forward: plan again from there.
                continue;
            }
            match next {
                Some((_, happening)) => self.happen(happening),
                None => break,
            }
        }
    }

    fn next_happening(&self) -> Option<(DateTime<Utc>, Happening)> {
        [
            (self.actions.front().map(|a| a.at), Happening::Action),
            (self.next_visit, Happening::Visit),
            (self.next_patient_bolus_at, Happening::PatientBolus),
            (self.next_reset_at, Happening::BatteryReset),
            (self.next_wear_stall_at, Happening::WearStall),
            (self.next_occlusion_stall_at, Happening::OcclusionStall),
        ]
        .into_iter()
        .filter_map(|(t, h)| t.map(|t| (t, h)))
        // First by time; ties in the listed order, so the run is deterministic.
        .min_by_key(|&(t, _)| t)
    }

    fn blocked_fraction(&self) -> f64 {
        self.occlusion
            .as_ref()
            .filter(|o| o.active_at(self.clock))
            .map_or(0.0, |o| o.blocked_fraction)
    }

    fn delivering(&self) -> bool {
        !self.eos && self.reservoir_ml > LEVEL_EPSILON && self.clock >= self.paused_until
    }

    /// Moves the linear state forward to `target`, stopping early (and returning
    /// `false`) when the pump sounds an alarm.
    fn flow_until(&mut self, target: DateTime<Utc>) -> bool {
        loop {
            if self.sound_alarms() {
                return false;
            }
            if self.clock >= target {
                return true;
            }
            let mut segment_end = target;
            if self.paused_until > self.clock {
                segment_end = segment_end.min(self.paused_until);
            }
            let rate = if self.delivering() {
                self.rate_ml_per_day
            } else {
                0.0
            };
            if rate > 0.0 {
                if !self.low_alarm_sounded && self.reservoir_ml > self.low_threshold_ml {
                    let days = (self.reservoir_ml - self.low_threshold_ml) / rate;
                    segment_end = segment_end.min(plus_days_ceil(self.clock, days));
                }
                segment_end = segment_end.min(plus_days_ceil(self.clock, self.reservoir_ml / rate));
            }
            let drain = self.drain_pct_per_day;
            if drain > 0.0 {
                for (flag, level) in [(self.eri, ERI_BATTERY_PCT), (self.eos, EOS_BATTERY_PCT)] {
                    if !flag && self.battery_pct > level {
                        let days = (self.battery_pct - level) / drain;
                        segment_end = segment_end.min(plus_days_ceil(self.clock, days));
                    }
                }
            }
            self.integrate(segment_end, rate, drain);
        }
    }

    fn integrate(&mut self, to: DateTime<Utc>, rate_ml_per_day: f64, drain_pct_per_day: f64) {
        let days = days_between(self.clock, to);
        let used_ml = (rate_ml_per_day * days).min(self.reservoir_ml);
        let blocked = self.blocked_fraction();
        self.reservoir_ml -= used_ml;
        self.actual_reservoir_ml =
            (self.actual_reservoir_ml - used_ml * (1.0 - blocked)).max(self.reservoir_ml);
        self.delivered_total_ml += used_ml;
        self.battery_pct = (self.battery_pct - drain_pct_per_day * days).max(0.0);
        self.clock = to;
    }

    /// The pump's own alarms, at `clock`. Returns whether any sounded.
    fn sound_alarms(&mut self) -> bool {
        let at = self.clock;
        let mut sounded = false;
        if !self.low_alarm_sounded && self.reservoir_ml <= self.low_threshold_ml + LEVEL_EPSILON {
            self.low_alarm_sounded = true;
            sounded = true;
            self.device_alarm("LOW_RESERVOIR");
            self.milestones.push(Milestone::LowReservoir {
                at,
                consumption_ml_per_day: self.expected_consumption_ml_per_day(),
            });
            if self.visit_policy != VisitPolicy::Missed {
                // The patient hears the alarm and the clinic fits in a refill.
                let urgent = plus_days(at, between(&mut self.rng, 1.0, 2.5));
                self.next_visit = Some(self.next_visit.map_or(urgent, |v| v.min(urgent)));
            }
        }
        if self.empty_since.is_none() && self.reservoir_ml <= LEVEL_EPSILON {
            self.reservoir_ml = 0.0;
            self.empty_since = Some(at);
            sounded = true;
            self.device_alarm(EMPTY_RESERVOIR_ALARM);
            self.milestones.push(Milestone::Empty { at });
            if self.next_visit.is_none() {
                let hours = between(&mut self.rng, 12.0, 48.0);
                self.next_visit = Some(plus_hours(at, hours));
            }
        }
        if !self.eri && self.battery_pct <= ERI_BATTERY_PCT + LEVEL_EPSILON {
            self.eri = true;
            sounded = true;
            self.device_alarm("ERI");
            self.milestones.push(Milestone::Eri { at });
        }
        if !self.eos && self.battery_pct <= EOS_BATTERY_PCT + LEVEL_EPSILON {
            self.eos = true;
            sounded = true;
            self.device_alarm("EOS");
            self.milestones.push(Milestone::Eos { at });
        }
        sounded
    }

    fn device_alarm(&mut self, code: &str) {
        self.pending_events
            .push(PumpEvent::DeviceAlarm(DeviceAlarm {
                at: self.clock,
                code: code.to_owned(),
            }));
    }

    fn happen(&mut self, happening: Happening) {
        let at = self.clock;
        match happening {
            Happening::Action => {
                if let Some(scheduled) = self.actions.pop_front() {
                    self.act(scheduled.action);
                }
            }
            Happening::Visit => self.refill(),
            Happening::PatientBolus => {
                if let Some(profile) = self.patient_bolus.clone() {
                    let free = self
                        .last_granted_bolus_at
                        .is_none_or(|last| at - last >= profile.lockout);
                    let granted = self.give_bolus(profile.volume_ml, free);
                    if granted {
                        self.last_granted_bolus_at = Some(at);
                    }
                    self.pending_events.push(PumpEvent::Bolus(Bolus {
                        at,
                        source: BolusSource::Patient,
                        volume_ml: profile.volume_ml,
                        granted,
                    }));
                    let wait = exponential_days(&mut self.rng, profile.mean_interval_days);
                    self.next_patient_bolus_at =
                        Some(plus_days(at, wait).max(at + Duration::seconds(1)));
                }
            }
            Happening::BatteryReset => {
                self.pending_events
                    .push(PumpEvent::LowBatteryReset(LowBatteryReset { at }));
                // Resets come more often as the shorted cell runs down.
                let depletion = self.short_since_pct.map_or(0.0, |p0| {
                    (1.0 - self.battery_pct / p0.max(1.0)).clamp(0.0, 1.0)
                });
                let per_day = 0.25 + 1.25 * depletion;
                let wait = exponential_days(&mut self.rng, 1.0 / per_day);
                self.next_reset_at = Some(plus_days(at, wait).max(at + Duration::seconds(1)));
            }
            Happening::WearStall => {
                let duration_s = self.rng.random_range(600..=3600);
                self.stall(duration_s);
                let worn_days = self.wear_since.map_or(0.0, |s| days_between(s, at));
                // Ever more often as the shaft wears; a smaller fault stalls less often.
                let mean_h = (8.0 - worn_days).max(3.0) / self.fault_scale;
                let wait = exponential_days(&mut self.rng, mean_h / 24.0);
                let next = plus_days(at, wait).max(at + Duration::seconds(i64::from(duration_s)));
                self.next_wear_stall_at = Some(next);
            }
            Happening::OcclusionStall => {
                let duration_s = self.rng.random_range(900..=3600);
                self.stall(duration_s);
                let wait = exponential_days(&mut self.rng, 3.0 / 24.0);
                let next = plus_days(at, wait).max(at + Duration::seconds(i64::from(duration_s)));
                self.next_occlusion_stall_at = Some(next);
            }
        }
    }

    fn act(&mut self, action: Action) {
        let at = self.clock;
        match action {
            Action::Reprogram {
                multiplier,
                move_refill,
            } => {
                let previous = self.rate_ml_per_day;
                self.rate_ml_per_day = round_dp(previous * multiplier, 3);
                if move_refill {
                    let due = self.plan_refill_due(at);
                    if due < self.refill_due_at {
                        self.refill_due_at = due;
                        self.next_visit = self.visit_for(due, self.visit_policy);
                    }
                }
                self.pending_events.push(PumpEvent::Reprogram(Reprogram {
                    at,
                    rate_ml_per_day: self.rate_ml_per_day,
                    previous_rate_ml_per_day: previous,
                    refill_due_at: self.refill_due_at,
                }));
            }
            Action::OcclusionStart => {
                let ramp = self.occlusion.as_ref().map(|o| o.ramp_kpa_per_day);
                if let (Some(ramp_kpa_per_day), Some(_)) = (ramp, &self.sensors) {
                    // A peristaltic motor pushing against the occlusion starts to
                    // stall once the pressure is high enough.
                    let days = OCCLUSION_STALL_EXCESS_KPA / ramp_kpa_per_day;
                    let wait = exponential_days(&mut self.rng, 3.0 / 24.0);
                    self.next_occlusion_stall_at = Some(plus_days(at, days + wait));
                }
            }
            Action::ShortStart { drain_pct_per_day } => {
                self.drain_pct_per_day = drain_pct_per_day;
                self.short_since_pct = Some(self.battery_pct);
                let wait = exponential_days(&mut self.rng, 4.0);
                self.next_reset_at = Some(plus_days(at, wait));
            }
            Action::Mri { duration_s } => {
                self.pending_events
                    .push(PumpEvent::Mri(Mri { at, duration_s }));
            }
            Action::Stall { duration_s } => self.stall(duration_s),
            Action::WearStart => {
                self.wear_since = Some(at);
                self.next_wear_stall_at = Some(at);
            }
            Action::ClinicianBolus {
                volume_ml,
                spike_kpa,
            } => {
                let granted = self.give_bolus(volume_ml, true);
                if granted && self.sensors.is_some() {
                    self.pressure_spikes.push((at, spike_kpa));
                }
                self.pending_events.push(PumpEvent::Bolus(Bolus {
                    at,
                    source: BolusSource::Clinician,
                    volume_ml,
                    granted,
                }));
            }
        }
    }

    /// Delivers a bolus if the pump can; returns whether it did.
    fn give_bolus(&mut self, volume_ml: f64, allowed: bool) -> bool {
        let granted = allowed
            && !self.eos
            && self.clock >= self.paused_until
            && self.reservoir_ml >= volume_ml;
        if granted {
            let blocked = self.blocked_fraction();
            self.reservoir_ml -= volume_ml;
            self.actual_reservoir_ml =
                (self.actual_reservoir_ml - volume_ml * (1.0 - blocked)).max(self.reservoir_ml);
            self.delivered_total_ml += volume_ml;
        }
        granted
    }

    fn stall(&mut self, duration_s: u32) {
        let at = self.clock;
        self.paused_until = self
            .paused_until
            .max(at + Duration::seconds(i64::from(duration_s)));
        self.motor_stall_count += 1;
        self.pending_events
            .push(PumpEvent::MotorStall(MotorStall { at, duration_s }));
    }

    /// A refill visit: the clinician aspirates the residual (the pump's estimate is
    /// the expected residual; what comes out is the measured one), fills the
    /// reservoir, and books the next appointment.
    fn refill(&mut self) {
        let at = self.clock;
        let expected_ml = round_dp(self.reservoir_ml, 2);
        let k = self.noise_scale;
        let clip_ml = ASPIRATION_ERROR_CLIP_ML * k;
        let aspiration_error_ml = (gaussian(&mut self.rng) * 0.05 * k).clamp(-clip_ml, clip_ml);
        let measured_ml = round_dp((self.actual_reservoir_ml + aspiration_error_ml).max(0.0), 2);
        let added_ml = round_dp(self.capacity_ml - between(&mut self.rng, 0.0, 0.1), 2);
        self.reservoir_ml = added_ml;
        self.actual_reservoir_ml = added_ml;
        // A discrepancy the clinic considers consequential gets the catheter revised.
        let consequential_ml = if self.capacity_ml > 20.0 { 2.0 } else { 1.0 };
        if let Some(occlusion) = self
            .occlusion
            .as_mut()
            .filter(|o| o.active_at(at) && measured_ml - expected_ml > consequential_ml)
        {
            occlusion.cleared_at = Some(at);
            self.next_occlusion_stall_at = None;
        }
        self.low_alarm_sounded = false;
        self.empty_since = None;
        self.visit_policy = VisitPolicy::OnTime;
        let due = self.plan_refill_due(at);
        self.refill_due_at = due;
        self.next_visit = self.visit_for(due, VisitPolicy::OnTime);
        self.pending_events.push(PumpEvent::Refill(Refill {
            at,
            residual_expected_ml: expected_ml,
            residual_measured_ml: measured_ml,
            volume_added_ml: added_ml,
            refill_due_at: due,
        }));
        self.milestones.push(Milestone::Refill {
            at,
            excess_ml: measured_ml - expected_ml,
        });
    }

    /// What the pump reports at `at` (the state must be advanced there).
    fn reading(&mut self, at: DateTime<Utc>, slot: u64) -> Reading {
        let noise = self.noise;
        let k = self.noise_scale;
        let hour = f64::from(at.hour()) + f64::from(at.minute()) / 60.0;
        let battery_pct = round_dp(
            (self.battery_pct + 0.03 * k * noise.gaussian(slot, Channel::BatteryPct))
                .clamp(0.0, 100.0),
            2,
        );
        let battery_v = round_dp(
            cell_voltage(self.battery_pct) + 0.003 * k * noise.gaussian(slot, Channel::BatteryV),
            3,
        );
        let fever_c = match (self.drug, self.empty_since) {
            // Baclofen withdrawal brings high fever within a day or two of running dry.
            ("BACLOFEN", Some(since)) => {
                ((days_between(since, at) * 24.0 - 6.0) * 0.08).clamp(0.0, 2.0)
            }
            _ => 0.0,
        };
        let temperature_c = round_dp(
            37.0 + self.temperature_offset_c
                + 0.15 * (std::f64::consts::TAU * (hour - 17.0) / 24.0).sin()
                + 0.05 * k * noise.gaussian(slot, Channel::Temperature)
                + fever_c,
            2,
        );
        self.pressure_spikes
            .retain(|&(t, _)| days_between(t, at) * 24.0 < 12.0 * SPIKE_DECAY_H);
        let (catheter_pressure_kpa, motor_current_ma) = match &self.sensors {
            Some(s) => {
                let occlusion_kpa = self.occlusion.as_ref().map_or(0.0, |o| o.excess_kpa(at));
                let spike_kpa: f64 = self
                    .pressure_spikes
                    .iter()
                    .filter(|&&(t, _)| t <= at)
                    .map(|&(t, kpa)| kpa * (-days_between(t, at) * 24.0 / SPIKE_DECAY_H).exp())
                    .sum();
                let pressure = s.baseline_kpa
                    + s.swing_kpa * (std::f64::consts::TAU * (hour - s.swing_phase_h) / 24.0).sin()
                    + occlusion_kpa
                    + spike_kpa
                    + 0.7 * k * noise.gaussian(slot, Channel::Pressure);
                let current = if at < self.paused_until {
                    // Locked rotor.
                    3.6 + 0.8 * noise.uniform(slot, Channel::StallCurrent)
                } else {
                    s.current_baseline_ma
                        + 0.012 * (occlusion_kpa + spike_kpa)
                        + 0.03 * k * noise.gaussian(slot, Channel::Current)
                };
                (
                    Some(round_dp(pressure.max(0.5), 2)),
                    Some(round_dp(current.max(0.0), 3)),
                )
            }
            None => (None, None),
        };
        Reading {
            pump_id: self.pump_id.clone(),
            gateway_id: self.gateway_id.clone(),
            seq: self.next_seq,
            measured_at: at,
            model: self.model.to_owned(),
            firmware: self.firmware.to_owned(),
            drug: self.drug.to_owned(),
            concentration_mg_per_ml: self.concentration_mg_per_ml,
            reservoir_ml: round_dp(self.reservoir_ml, 2),
            reservoir_capacity_ml: self.capacity_ml,
            low_reservoir_threshold_ml: self.low_threshold_ml,
            programmed_rate_ml_per_day: self.rate_ml_per_day,
            delivered_total_ml: round_dp(self.delivered_total_ml, 3),
            battery_v,
            battery_pct,
            eri: self.eri,
            eos: self.eos,
            temperature_c,
            refill_due_at: self.refill_due_at,
            motor_stall_count: self.motor_stall_count,
            catheter_pressure_kpa,
            motor_current_ma,
            events: std::mem::take(&mut self.pending_events),
        }
    }
}

/// Cell voltage against the fuel gauge: flat for most of the life of a lithium cell,
/// falling off towards the end (about 2.88 V at ERI, 2.76 V at EOS).
pub(crate) fn cell_voltage(battery_pct: f64) -> f64 {
    2.62 + 0.50 * (battery_pct.max(0.0) / 100.0).powf(0.22)
}

/// The latest clinic-hours slot (08:00-16:45 UTC, quarter hours) not after `latest`.
pub(crate) fn clinic_hours(latest: DateTime<Utc>, rng: &mut impl Rng) -> DateTime<Utc> {
    let midnight = latest
        .with_hour(0)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(latest);
    let hour = rng.random_range(8..=16);
    let quarter = rng.random_range(0..4);
    let slot = midnight + Duration::hours(hour) + Duration::minutes(15 * quarter);
    if slot > latest {
        slot - Duration::days(1)
    } else {
        slot
    }
}
