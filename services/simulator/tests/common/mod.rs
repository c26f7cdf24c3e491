//! Helpers shared by the simulator's tests: running a fleet to its end and grouping
//! readings by pump.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use fleet_core::{PumpEvent, Reading};
use fleet_simulator::{FaultKind, FaultMix, Fleet, FleetSpec, GroundTruth};

pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
        .single()
        .expect("a valid date")
}

pub fn spec(seed: u64, pump_count: usize, days: i64, faults: FaultMix) -> FleetSpec {
    FleetSpec::new(seed, pump_count, start(), start() + Duration::days(days)).with_faults(faults)
}

pub fn only(kind: FaultKind, pump_count: usize) -> FleetSpec {
    spec(17, pump_count, 60, FaultMix::only(kind))
}

/// Every reading of the run, in arrival order, and the truth.
pub fn run(spec: FleetSpec) -> (Vec<Reading>, GroundTruth) {
    let end = spec.end;
    let mut fleet = Fleet::new(spec);
    let readings = fleet.advance_until(end);
    (readings, fleet.truth())
}

/// Each pump's readings in `seq` order.
pub fn by_pump(readings: &[Reading]) -> BTreeMap<String, Vec<Reading>> {
    let mut pumps: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for r in readings {
        pumps.entry(r.pump_id.clone()).or_default().push(r.clone());
    }
    for rs in pumps.values_mut() {
        rs.sort_by_key(|r| r.seq);
    }
    pumps
}

pub fn events(rs: &[Reading]) -> impl Iterator<Item = &PumpEvent> {
    rs.iter().flat_map(|r| r.events.iter())
}

pub fn days(d: Duration) -> f64 {
    d.num_seconds() as f64 / 86_400.0
}

/// The contract's rules (§3), written as plainly as possible, applied to one healthy
/// pump's readings. Returns what would alarm. Benign look-alikes are allowed for: motor
/// stalls within 24 h of an MRI, and pressure spikes within 6 h of a clinician bolus.
pub fn naive_alarms(rs: &[Reading]) -> Vec<String> {
    let mut found = Vec::new();
    let mut last_mri: Option<DateTime<Utc>> = None;
    let mut last_clinician_bolus: Option<DateTime<Utc>> = None;
    let mut pressures = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        let at = r.measured_at;
        for e in &r.events {
            match e {
                PumpEvent::Refill(refill) => {
                    let consequential = if r.reservoir_capacity_ml > 20.0 {
                        2.0
                    } else {
                        1.0
                    };
                    if refill.residual_measured_ml - refill.residual_expected_ml > consequential {
                        found.push(format!("{at}: refill discrepancy"));
                    }
                }
                PumpEvent::Mri(m) => last_mri = Some(m.at),
                PumpEvent::MotorStall(s)
                    if last_mri.is_none_or(|m| s.at - m > Duration::hours(24)) =>
                {
                    found.push(format!("{at}: stall without MRI"));
                }
                PumpEvent::Bolus(b) if b.source == fleet_core::BolusSource::Clinician => {
                    last_clinician_bolus = Some(b.at);
                }
                PumpEvent::DeviceAlarm(a) => found.push(format!("{at}: device alarm {}", a.code)),
                _ => {}
            }
        }
        if r.reservoir_ml <= r.low_reservoir_threshold_ml {
            found.push(format!("{at}: reservoir at threshold"));
        }
        if at < r.refill_due_at && r.programmed_rate_ml_per_day > 0.0 {
            let to_threshold =
                (r.reservoir_ml - r.low_reservoir_threshold_ml) / r.programmed_rate_ml_per_day;
            if at + Duration::seconds((to_threshold * 86_400.0) as i64) < r.refill_due_at {
                found.push(format!(
                    "{at}: projected below threshold before the appointment"
                ));
            }
        }
        // A refill books the next appointment, so a due date 24 h past is overdue.
        if at > r.refill_due_at + Duration::hours(24) {
            found.push(format!("{at}: refill overdue"));
        }
        if r.eri || r.eos {
            found.push(format!("{at}: eri/eos"));
        }
        if i > 0 && at - rs[i - 1].measured_at > Duration::hours(12) {
            found.push(format!("{at}: no reading for 12 h"));
        }
        if let Some(kpa) = r.catheter_pressure_kpa {
            let spiked = last_clinician_bolus.is_some_and(|b| at - b <= Duration::hours(6));
            if !spiked {
                pressures.push(kpa);
            }
        }
    }
    if let (Some(lo), Some(hi)) = (
        pressures.iter().copied().reduce(f64::min),
        pressures.iter().copied().reduce(f64::max),
    ) {
        // Daily swing (at most 2 x 3 kPa) and noise, nothing more.
        if hi - lo > 15.0 {
            found.push(format!("catheter pressure ranges {lo}..{hi} kPa"));
        }
    }
    found
}

/// What is wrong with one fleet's readings and truth: readings invalid, a pump labelled
/// when its fault has no episodes (or not when it has), unfair windows, a contract rule
/// tripped on a healthy or benign pump. `name` prefixes each problem.
pub fn consistency_problems(name: &str, fleet_spec: FleetSpec) -> Vec<String> {
    let noisy = fleet_spec.noise_scale > 1.0;
    let (readings, truth) = run(fleet_spec);
    let mut problems = Vec::new();
    for r in &readings {
        if let Err(e) = r.validate() {
            problems.push(format!("{name}: {} invalid: {e}", r.pump_id));
        }
    }
    for (id, rs) in by_pump(&readings) {
        let Some(pump) = truth.pumps.iter().find(|p| p.pump_id == id) else {
            problems.push(format!("{name}: {id} not in the truth"));
            continue;
        };
        let labelled = truth.episodes.iter().any(|e| e.pump_id == id);
        if pump.fault.has_episodes() != labelled {
            problems.push(format!("{name}: {id} {} labelled {labelled}", pump.fault));
        }
        if !pump.fault.has_episodes() {
            // The naive pressure-range check assumes the default noise.
            let alarms: Vec<String> = naive_alarms(&rs)
                .into_iter()
                .filter(|a| !(noisy && a.starts_with("catheter pressure ranges")))
                .collect();
            if let Some(first) = alarms.first() {
                problems.push(format!("{name}: {id} {}: {first}", pump.fault));
            }
        }
    }
    for e in &truth.episodes {
        let fair = e.window_start < e.window_end
            && e.window_start <= e.onset
            && e.onset <= e.window_end
            && e.window_start < truth.end;
        if !fair {
            problems.push(format!("{name}: unfair window {e:?}"));
        }
    }
    problems
}
