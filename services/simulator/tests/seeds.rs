//! Many seeds, run lengths and cadences: the properties the other tests check on one
//! seed hold on all of them. Slow in a debug build, so not run by default.

mod common;

use chrono::Duration;
use common::{by_pump, naive_alarms, run, spec};
use fleet_simulator::{FaultKind, FaultMix};

#[test]
#[ignore = "slow (one to two minutes in a debug build): scripts/test.sh runs it"]
fn realistic_fleets_stay_consistent_across_seeds_lengths_and_cadences() {
    let mut problems = Vec::new();
    for seed in 1..40u64 {
        let days = [60, 90, 150, 14, 5, 400][seed as usize % 6];
        let cadence_min = [60, 60, 15, 240, 60, 60][seed as usize % 6];
        let fleet_spec = spec(seed, 60, days, FaultMix::realistic())
            .with_cadence(Duration::minutes(cadence_min));
        let (readings, truth) = run(fleet_spec);
        for r in &readings {
            if let Err(e) = r.validate() {
                problems.push(format!("seed {seed}: {} invalid: {e}", r.pump_id));
            }
        }
        for (id, rs) in by_pump(&readings) {
            let Some(pump) = truth.pumps.iter().find(|p| p.pump_id == id) else {
                problems.push(format!("seed {seed}: {id} not in the truth"));
                continue;
            };
            let labelled = truth.episodes.iter().any(|e| e.pump_id == id);
            if pump.fault.has_episodes() != labelled {
                problems.push(format!(
                    "seed {seed}: {id} {} labelled {labelled}",
                    pump.fault
                ));
            }
            if !pump.fault.has_episodes() {
                let alarms = naive_alarms(&rs);
                if let Some(first) = alarms.first() {
                    problems.push(format!(
                        "seed {seed} ({days} d, {cadence_min} min): {id} {}: {first}",
                        pump.fault
                    ));
                }
            }
        }
        for e in &truth.episodes {
            let fair = e.window_start < e.window_end
                && e.window_start <= e.onset
                && e.onset <= e.window_end
                && e.window_start < truth.end;
            if !fair {
                problems.push(format!("seed {seed}: unfair window {e:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
#[ignore = "slow (one to two minutes in a debug build): scripts/test.sh runs it"]
fn every_fault_fits_a_60_day_run_on_every_seed() {
    let mut problems = Vec::new();
    for seed in 100..130u64 {
        for kind in FaultKind::ALL {
            let (readings, truth) = run(spec(seed, 10, 60, FaultMix::only(kind)));
            for p in &truth.pumps {
                let episodes = truth
                    .episodes
                    .iter()
                    .filter(|e| e.pump_id == p.pump_id)
                    .count();
                let want = match kind {
                    FaultKind::MissedRefill => 2,
                    k if k.has_episodes() => 1,
                    _ => 0,
                };
                if p.fault != kind || episodes != want {
                    problems.push(format!(
                        "seed {seed} {kind} {}: {} with {episodes} episodes",
                        p.pump_id, p.fault
                    ));
                }
            }
            if !kind.has_episodes() {
                for (id, rs) in by_pump(&readings) {
                    if let Some(first) = naive_alarms(&rs).first() {
                        problems.push(format!("seed {seed} {kind} {id}: {first}"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
