//! Drawing one pump: its model, drug, therapy and battery, and the placement of its
//! fault in the run so that the fault shows, and is detectable, before the run ends.
//!
//! A healthy pump is drawn so that no rule of the contract fires during the run: the
//! refill is booked 3-5 days before the alarm date (with at least 1 mL above the
//! threshold), and the battery is at least a year from ERI after the run.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::pump::{
    Action, ERI_BATTERY_PCT, FaultPlan, GatewayOutage, Interrogation, Occlusion,
    PatientBolusProfile, ScheduledAction, SensorProfile, VirtualPump, VisitPolicy, clinic_hours,
};
use crate::random::{
    HashedNoise, between, days_between, exponential_days, gaussian, mix, plus_days, plus_hours,
    round_dp,
};
use crate::spec::{FaultKind, FleetSpec};
use crate::truth::sensor_occlusion_window_days;

/// Shortest refill interval a clinic accepts, days.
const MIN_REFILL_INTERVAL_DAYS: f64 = 14.0;
/// Longest refill interval, days: drug stability and `pumps.md` (every one to six
/// months) bound it, so a slow rate is never drawn below what lasts this long.
const MAX_REFILL_INTERVAL_DAYS: f64 = 180.0;
/// The slowest default occlusion pressure ramp, kPa/day (before the fault scale).
const SLOWEST_OCCLUSION_RAMP_KPA_PER_DAY: f64 = 6.0;
/// The clinician's aspiration error at a refill is clipped at this many mL (three
/// standard deviations), times the noise scale.
pub(crate) const ASPIRATION_ERROR_CLIP_ML: f64 = 0.15;
/// Nominal battery drain: 100 % in about five to six years.
const NOMINAL_DRAIN_PCT_PER_DAY: (f64, f64) = (0.045, 0.055);
/// A healthy pump stays at least this far from ERI after the run ends.
const HEALTHY_ERI_CLEARANCE_DAYS: f64 = 365.0;

/// `(drug, concentrations in mg/mL, share of the fleet, patient handheld share)`.
const DRUGS: [(&str, &[f64], f64, f64); 6] = [
    ("BACLOFEN", &[0.5, 1.0, 2.0], 0.30, 0.1),
    ("MORPHINE", &[10.0, 20.0, 25.0], 0.25, 0.4),
    ("HYDROMORPHONE", &[2.0, 5.0, 10.0], 0.15, 0.4),
    ("ZICONOTIDE", &[0.025, 0.1], 0.08, 0.0),
    ("BUPIVACAINE", &[5.0, 7.5], 0.10, 0.4),
    ("CLONIDINE", &[0.5, 1.0], 0.12, 0.3),
];

fn pick_weighted<T: Copy>(rng: &mut impl Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut u = rng.random::<f64>() * total;
    for &(item, weight) in items {
        if u < weight {
            return item;
        }
        u -= weight;
    }
    items[items.len() - 1].0
}

fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

impl VirtualPump {
    /// Draws pump `index` of the fleet with `fault`. The fault is dropped (the pump is
    /// healthy, and labelled so) when the run is too short to show it.
    pub(crate) fn draw(spec: &FleetSpec, index: usize, fault: FaultKind) -> VirtualPump {
        let pump_seed = mix(spec.seed, index as u64 + 1);
        let mut rng = ChaCha8Rng::seed_from_u64(pump_seed);
        let start = spec.start;
        let run_days = days_between(spec.start, spec.end);
        let number = u64::from(spec.first_pump_number) + index as u64;

        let models = spec.models.weights();
        let sensor_models: Vec<&'static str> = models
            .iter()
            .map(|&(m, _)| m)
            .filter(|m| m.starts_with("ITP"))
            .collect();
        let mut fault = fault;
        let model = if fault.needs_flow_sensors() && !sensor_models.is_empty() {
            pick(&mut rng, &sensor_models)
        } else {
            if fault.needs_flow_sensors() {
                // No pump with a motor and sensors in this mix to show the fault on.
                fault = FaultKind::None;
            }
            pick_weighted(&mut rng, &models)
        };
        let has_sensors = model.starts_with("ITP");
        let capacity_ml = if model.ends_with("40") { 40.0 } else { 20.0 };
        let firmware = if has_sensors {
            pick(&mut rng, &["4.2.1", "4.3.0"])
        } else {
            pick(&mut rng, &["2.1.4", "2.2.0"])
        };
        let drug_index = pick_weighted(
            &mut rng,
            &DRUGS
                .iter()
                .enumerate()
                .map(|(i, d)| (i, d.2))
                .collect::<Vec<_>>(),
        );
        let (drug, concentrations, _, handheld_share) = DRUGS[drug_index];
        let concentration_mg_per_ml = pick(&mut rng, concentrations);
        let low_threshold_ml = match (capacity_ml == 20.0, rng.random::<f64>()) {
            (true, u) if u < 0.8 => 1.0,
            (true, _) => 2.0,
            (false, u) if u < 0.7 => 2.0,
            (false, _) => 3.0,
        };
        let fill_ml = capacity_ml - 0.05;
        let lead_days = between(&mut rng, 3.0, 5.0);
        let min_margin_ml = if fault == FaultKind::BolusSpikes {
            // Room for the clinician boluses, which the clinic did not plan for.
            1.5
        } else {
            1.0
        };
        let patient_bolus = rng
            .random_bool(handheld_share)
            .then(|| PatientBolusProfile {
                volume_ml: pick(&mut rng, &[0.01, 0.02, 0.03]),
                mean_interval_days: 1.0 / between(&mut rng, 0.5, 3.0),
                lockout: Duration::hours(pick(&mut rng, &[3, 4, 6])),
            });
        let bolus_ml_per_day = patient_bolus
            .as_ref()
            .map_or(0.0, PatientBolusProfile::expected_ml_per_day);
        // Fast enough to need a refill at most every `MIN_REFILL_INTERVAL_DAYS`, with
        // the booking margin taken off; slow enough to need one at least every
        // `MAX_REFILL_INTERVAL_DAYS`. The spec's range gives way to both.
        let usable_ml = fill_ml - low_threshold_ml;
        let (range_min, range_max) = spec.rate_range_ml_per_day;
        let min_rate = range_min
            .max(usable_ml / MAX_REFILL_INTERVAL_DAYS)
            .min(range_max);
        let max_rate = ((usable_ml - min_margin_ml) / MIN_REFILL_INTERVAL_DAYS)
            .min(usable_ml / (MIN_REFILL_INTERVAL_DAYS + lead_days) - bolus_ml_per_day)
            .clamp(min_rate, range_max);
        let rate_ml_per_day = round_dp(between(&mut rng, min_rate.ln(), max_rate.ln()).exp(), 3);
        let consumption = rate_ml_per_day + bolus_ml_per_day;
        let margin_ml = (consumption * lead_days).max(min_margin_ml);
        let interval_days = (fill_ml - low_threshold_ml - margin_ml) / consumption;

        let mut drain = between(
            &mut rng,
            NOMINAL_DRAIN_PCT_PER_DAY.0,
            NOMINAL_DRAIN_PCT_PER_DAY.1,
        );
        let mut battery_pct = between(&mut rng, 25.0, 97.0);
        let clearance_pct = ERI_BATTERY_PCT + drain * (run_days + HEALTHY_ERI_CLEARANCE_DAYS) + 1.0;
        if clearance_pct > 99.0 {
            // A run of years: a slower cell, so a healthy pump still never nears ERI.
            drain = (98.0 - ERI_BATTERY_PCT) / (run_days + HEALTHY_ERI_CLEARANCE_DAYS);
            battery_pct = 99.0;
        } else {
            battery_pct = battery_pct.max(clearance_pct);
        }

        let noise = HashedNoise {
            seed: mix(pump_seed, u64::from_be_bytes(*b"\0\0\0noise")),
        };
        let sensors = has_sensors.then(|| SensorProfile {
            baseline_kpa: between(&mut rng, 6.0, 18.0),
            swing_kpa: between(&mut rng, 1.0, 3.0),
            swing_phase_h: between(&mut rng, 0.0, 24.0),
            current_baseline_ma: between(&mut rng, 1.1, 2.2),
        });
        let temperature_offset_c = (gaussian(&mut rng) * 0.15).clamp(-0.4, 0.4);
        let next_seq = rng.random_range(1_000..1_000_000);
        let delivered_total_ml = round_dp(between(&mut rng, 20.0, 1500.0), 3);
        let motor_stall_count = if has_sensors {
            rng.random_range(0..=2)
        } else {
            0
        };

        // The first appointment in the run: a random phase of the refill interval.
        let phase_days = between(&mut rng, 0.25, interval_days.max(0.5));
        let default_due = plan_first_due(&mut rng, start, phase_days);
        let mut pump = VirtualPump {
            pump_id: format!("{}-{number}", model.replace('-', "")),
            gateway_id: format!("gw-{number}"),
            model,
            firmware,
            drug,
            concentration_mg_per_ml,
            capacity_ml,
            low_threshold_ml,
            fault,
            plan: FaultPlan::None,
            outage: None,
            interrogation: Interrogation::new(start, spec.cadence, noise),
            next_slot: 0,
            next_seq,
            rate_ml_per_day,
            patient_bolus,
            lead_days,
            min_margin_ml,
            refill_due_at: default_due,
            next_visit: None,
            visit_policy: VisitPolicy::OnTime,
            clock: start,
            reservoir_ml: 0.0,
            actual_reservoir_ml: 0.0,
            delivered_total_ml,
            battery_pct,
            drain_pct_per_day: drain,
            eri: false,
            eos: false,
            paused_until: start,
            motor_stall_count,
            low_alarm_sounded: false,
            empty_since: None,
            last_granted_bolus_at: None,
            actions: VecDeque::new(),
            occlusion: None,
            short_since_pct: None,
            wear_since: None,
            pressure_spikes: Vec::new(),
            next_patient_bolus_at: None,
            next_reset_at: None,
            next_wear_stall_at: None,
            next_occlusion_stall_at: None,
            sensors,
            temperature_offset_c,
            noise,
            noise_scale: spec.noise_scale,
            fault_scale: spec.fault_scale,
            rng,
            pending_events: Vec::new(),
            milestones: Vec::new(),
        };
        let placement = Placement {
            start,
            end: spec.end,
            run_days,
            interval_days,
            margin_ml,
            consumption,
            cadence: spec.cadence,
            noise_scale: spec.noise_scale,
            fault_scale: spec.fault_scale,
        };
        let mut due = default_due;
        if !pump.place_fault(&placement, &mut due) {
            pump.fault = FaultKind::None;
            pump.plan = FaultPlan::None;
            pump.actions.clear();
            pump.occlusion = None;
            pump.outage = None;
            pump.visit_policy = VisitPolicy::OnTime;
            due = default_due;
        }
        // The reservoir at the start is what is left `due - start` days before the
        // planned margin above the threshold.
        pump.refill_due_at = due;
        pump.reservoir_ml =
            (low_threshold_ml + margin_ml + consumption * days_between(start, due).max(0.0))
                .min(fill_ml);
        pump.actual_reservoir_ml = pump.reservoir_ml;
        if let Some(occlusion) = pump.occlusion.as_ref().filter(|o| o.onset < start) {
            // Occluded since before the run: drug has been staying in the pump.
            let held_ml =
                occlusion.blocked_fraction * rate_ml_per_day * days_between(occlusion.onset, start);
            pump.actual_reservoir_ml = (pump.reservoir_ml + held_ml).min(fill_ml);
        }
        let policy = pump.visit_policy;
        pump.next_visit = pump
            .visit_for(due, policy)
            .map(|v| v.max(start + Duration::minutes(1)));
        if let Some(profile) = &pump.patient_bolus {
            let wait = exponential_days(&mut pump.rng, profile.mean_interval_days);
            pump.next_patient_bolus_at = Some(plus_days(start, wait));
        }
        pump.actions
            .make_contiguous()
            .sort_by_key(|scheduled| scheduled.at);
        pump
    }

    /// Shapes the fault into the run; `due` is the first appointment, which some
    /// faults move. Returns `false` when the run is too short for the fault.
    fn place_fault(&mut self, p: &Placement, due: &mut DateTime<Utc>) -> bool {
        let start = p.start;
        // Appointments later than this would leave the reservoir above capacity at the
        // start.
        let latest_due_days = 0.95 * p.interval_days;
        match self.fault {
            FaultKind::None => true,
            FaultKind::MissedRefill | FaultKind::LateRefill => {
                // Room after the appointment for the 24 h grace and a 48 h window.
                let hi = latest_due_days.min(p.run_days - 4.0);
                if hi < 1.5 {
                    return false;
                }
                let days = (between(&mut self.rng, 0.1, 0.6) * p.run_days).clamp(1.5, hi);
                *due = plan_first_due(&mut self.rng, start, days);
                self.visit_policy = if self.fault == FaultKind::MissedRefill {
                    VisitPolicy::Missed
                } else {
                    VisitPolicy::Late
                };
                self.plan = FaultPlan::FirstRefill { due: *due };
                true
            }
            FaultKind::ReprogramUp | FaultKind::ReprogramMovedRefill => {
                // Reprogrammed 12-25 days before the appointment.
                let lead_to_due = between(&mut self.rng, 12.0, 25.0).min(latest_due_days - 1.5);
                if lead_to_due < 8.0 {
                    return false;
                }
                let latest_at = (0.4 * p.run_days).min(latest_due_days - lead_to_due);
                if latest_at < 1.0 {
                    return false;
                }
                let at_days = between(&mut self.rng, 1.0, latest_at);
                let at = clinic_hours(plus_days(start, at_days), &mut self.rng)
                    .max(plus_hours(start, 12.0));
                *due = plan_first_due(&mut self.rng, at, lead_to_due);
                let days_to_due = days_between(at, *due);
                let above_threshold_ml = p.margin_ml + p.consumption * days_to_due;
                let multiplier = if self.fault == FaultKind::ReprogramUp {
                    // Fast enough that the projection reaches the threshold at least
                    // three days before the appointment, whatever the fault scale.
                    let needed =
                        above_threshold_ml / (self.rate_ml_per_day * (days_to_due - 3.0).max(1.0));
                    let rise = between(&mut self.rng, 1.6, 2.2) - 1.0;
                    (1.0 + rise * p.fault_scale).max(1.05 * needed)
                } else {
                    between(&mut self.rng, 1.3, 1.8)
                };
                let new_consumption = p.consumption + self.rate_ml_per_day * (multiplier - 1.0);
                let crossing = plus_days(at, above_threshold_ml / new_consumption);
                if crossing > p.end - Duration::days(1) {
                    return false;
                }
                self.actions.push_back(ScheduledAction {
                    at,
                    action: Action::Reprogram {
                        multiplier,
                        move_refill: self.fault == FaultKind::ReprogramMovedRefill,
                    },
                });
                self.plan = FaultPlan::Reprogram { at, multiplier };
                true
            }
            FaultKind::Occlusion => self.place_occlusion(p, due, latest_due_days),
            FaultKind::BatteryNominalEri => {
                if p.run_days < 2.0 {
                    return false;
                }
                let eri_days = between(&mut self.rng, 0.2, 0.85) * p.run_days;
                self.battery_pct = ERI_BATTERY_PCT + self.drain_pct_per_day * eri_days;
                self.plan = FaultPlan::NominalBattery;
                true
            }
            FaultKind::BatteryPremature => {
                if p.run_days < 10.0 {
                    return false;
                }
                let at = plus_days(start, between(&mut self.rng, 0.05, 0.3) * p.run_days);
                self.battery_pct = between(&mut self.rng, 20.0, 45.0);
                let pct_at_short =
                    self.battery_pct - self.drain_pct_per_day * days_between(start, at);
                // ERI well inside the run, at five times the nominal drain or more. A
                // smaller fault drains more slowly, but the contract's 90-day horizon
                // before ERI still starts at least 10 days before the run ends, and the
                // drain stays at least 2.5 times nominal at the fault scale of 0.5.
                let span_days = days_between(at, p.end);
                let to_eri_days = (between(&mut self.rng, 0.45, 0.8) * span_days / p.fault_scale)
                    .min(span_days + 80.0);
                let drain_pct_per_day = ((pct_at_short - ERI_BATTERY_PCT) / to_eri_days)
                    .max(0.25 * p.fault_scale.min(1.0));
                self.actions.push_back(ScheduledAction {
                    at,
                    action: Action::ShortStart { drain_pct_per_day },
                });
                self.plan = FaultPlan::Short {
                    at,
                    drain_pct_per_day,
                };
                true
            }
            FaultKind::MriStall => {
                if p.run_days < 3.0 {
                    return false;
                }
                let latest = (0.85 * p.run_days).min(p.run_days - 1.5);
                let at = clinic_hours(
                    plus_days(start, between(&mut self.rng, 0.1 * p.run_days, latest)),
                    &mut self.rng,
                )
                .max(plus_hours(start, 6.0));
                let duration_s = self.rng.random_range(900..=2700);
                self.actions.push_back(ScheduledAction {
                    at,
                    action: Action::Mri { duration_s },
                });
                // The motor stalls during the scan ...
                self.actions.push_back(ScheduledAction {
                    at: at + Duration::seconds(30),
                    action: Action::Stall { duration_s },
                });
                // ... and a few times more while it recovers (2-20 h).
                let recovery_h = between(&mut self.rng, 2.0, 20.0);
                let scan_end_h = f64::from(duration_s) / 3600.0 + 0.1;
                for _ in 0..self.rng.random_range(1..=4) {
                    let offset_h = between(&mut self.rng, scan_end_h, recovery_h);
                    self.actions.push_back(ScheduledAction {
                        at: plus_hours(at, offset_h),
                        action: Action::Stall {
                            duration_s: self.rng.random_range(300..=1800),
                        },
                    });
                }
                self.plan = FaultPlan::Mri { at };
                true
            }
            FaultKind::MotorStall => {
                if p.run_days < 5.0 {
                    return false;
                }
                let latest = (0.8 * p.run_days).min(p.run_days - 3.5);
                let onset = plus_days(start, between(&mut self.rng, 0.15 * p.run_days, latest));
                self.actions.push_back(ScheduledAction {
                    at: onset,
                    action: Action::WearStart,
                });
                self.plan = FaultPlan::Wear { onset };
                true
            }
            FaultKind::BolusSpikes => {
                if p.run_days < 3.0 {
                    return false;
                }
                let count = self.rng.random_range(3..=6);
                for _ in 0..count {
                    let days = between(&mut self.rng, 0.05, 0.95) * p.run_days;
                    let at = clinic_hours(plus_days(start, days), &mut self.rng)
                        .max(plus_hours(start, 6.0));
                    let volume_ml = round_dp(between(&mut self.rng, 0.05, 0.12), 2);
                    let spike_kpa = between(&mut self.rng, 40.0, 90.0);
                    self.actions.push_back(ScheduledAction {
                        at,
                        action: Action::ClinicianBolus {
                            volume_ml,
                            spike_kpa,
                        },
                    });
                }
                self.plan = FaultPlan::ClinicianBoluses { count };
                true
            }
            FaultKind::GatewayOutageShort => {
                let hours = between(&mut self.rng, 2.0, 8.0);
                self.place_outage(p, hours, true)
            }
            FaultKind::GatewayOutageBacklog | FaultKind::GatewayOutageLost => {
                // Long enough to pass the 12 h rule plus a detection window.
                let shortest_h =
                    (12.0 + 4.0 + 2.0 * p.cadence.num_seconds() as f64 / 3600.0).max(18.0);
                let longest_h: f64 = if self.fault == FaultKind::GatewayOutageLost {
                    72.0
                } else {
                    48.0
                };
                let hours = between(&mut self.rng, shortest_h, longest_h.max(shortest_h));
                self.place_outage(p, hours, self.fault == FaultKind::GatewayOutageBacklog)
            }
        }
    }

    fn place_occlusion(
        &mut self,
        p: &Placement,
        due: &mut DateTime<Utc>,
        latest_due_days: f64,
    ) -> bool {
        let start = p.start;
        let blocked_fraction;
        let onset;
        let ramp_kpa_per_day;
        if self.sensors.is_some() {
            // Anywhere in the run, with the detection window (onset + 4 days, longer
            // for a slow ramp) inside it. The catheter is revised only at a refill
            // whose discrepancy the clinic notices, so a refill just after onset does
            // not end it.
            let slowest_kpa_per_day = SLOWEST_OCCLUSION_RAMP_KPA_PER_DAY * p.fault_scale;
            let window_days = sensor_occlusion_window_days(slowest_kpa_per_day);
            let latest = (0.75 * p.run_days).min(p.run_days - (0.5 + window_days));
            let earliest = (0.1 * p.run_days).max(2.0);
            if latest < earliest {
                return false;
            }
            onset = plus_days(start, between(&mut self.rng, earliest, latest));
            blocked_fraction = between(&mut self.rng, 0.6, 0.95);
            let ramp = between(&mut self.rng, SLOWEST_OCCLUSION_RAMP_KPA_PER_DAY, 15.0);
            ramp_kpa_per_day = Some(round_dp(ramp * p.fault_scale, 1).max(slowest_kpa_per_day));
            self.actions.push_back(ScheduledAction {
                at: onset,
                action: Action::OcclusionStart,
            });
        } else {
            // The refill must come with a week of the run left to report it; the
            // occlusion starts early enough to leave twice the consequential
            // discrepancy (1 mL on 20 mL pumps, 2 mL on 40 mL pumps) behind, at the
            // default fault scale; at any scale, more than the consequential volume
            // plus the worst aspiration error, so the refill does show it.
            let hi = latest_due_days.min(p.run_days - 8.0);
            if hi < 3.0 {
                return false;
            }
            let due_days = between(&mut self.rng, 3.0, hi);
            *due = plan_first_due(&mut self.rng, start, due_days);
            let consequential_ml = if self.capacity_ml > 20.0 { 2.0 } else { 1.0 };
            let least_ml = consequential_ml + ASPIRATION_ERROR_CLIP_ML * p.noise_scale + 0.1;
            let s = p.fault_scale;
            let excess_ml =
                ((1.0 + s) * consequential_ml + s * between(&mut self.rng, 0.0, 1.0)).max(least_ml);
            blocked_fraction = between(&mut self.rng, 0.7, 1.0);
            let occluded_days =
                (excess_ml / (blocked_fraction * self.rate_ml_per_day)).min(0.9 * p.interval_days);
            if blocked_fraction * self.rate_ml_per_day * occluded_days < least_ml {
                // The refill interval is too short to hold back a consequential volume.
                return false;
            }
            onset = plus_days(*due, -occluded_days);
            ramp_kpa_per_day = None;
        }
        self.occlusion = Some(Occlusion {
            onset,
            blocked_fraction,
            ramp_kpa_per_day: ramp_kpa_per_day.unwrap_or(0.0),
            cleared_at: None,
        });
        self.plan = FaultPlan::Occlusion {
            onset,
            ramp_kpa_per_day,
        };
        true
    }

    fn place_outage(&mut self, p: &Placement, hours: f64, buffered: bool) -> bool {
        // At least a day of readings before, and a day after to deliver the backlog.
        let latest_days = (0.8 * p.run_days).min(p.run_days - 1.0 - hours / 24.0);
        let earliest_days = (0.1 * p.run_days).max(1.0);
        if latest_days < earliest_days {
            return false;
        }
        let start = plus_days(p.start, between(&mut self.rng, earliest_days, latest_days));
        let outage = GatewayOutage {
            start,
            end: plus_hours(start, hours),
            buffered,
        };
        self.outage = Some(outage);
        self.plan = FaultPlan::Outage(outage);
        true
    }
}

/// What placing a fault needs to know about the run and the pump's therapy.
struct Placement {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    run_days: f64,
    /// Days from a refill to the next appointment.
    interval_days: f64,
    /// Volume above the threshold planned to be left at the appointment.
    margin_ml: f64,
    /// Expected drawdown, mL/day.
    consumption: f64,
    cadence: Duration,
    /// [`FleetSpec::noise_scale`].
    noise_scale: f64,
    /// [`FleetSpec::fault_scale`].
    fault_scale: f64,
}

/// An appointment about `days` after `from`, at clinic hours, at least 12 h away.
fn plan_first_due(rng: &mut impl Rng, from: DateTime<Utc>, days: f64) -> DateTime<Utc> {
    let due = clinic_hours(plus_days(from, days), rng);
    if due < plus_hours(from, 12.0) {
        due + Duration::days(1)
    } else {
        due
    }
}
