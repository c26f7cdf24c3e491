//! Many seeds, run lengths and cadences: the properties the other tests check on one
//! seed hold on all of them. Slow in a debug build, so not run by default.

mod common;

use chrono::Duration;
use common::{by_pump, consistency_problems, naive_alarms, run, spec};
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
        problems.extend(consistency_problems(
            &format!("seed {seed} ({days} d, {cadence_min} min)"),
            fleet_spec,
        ));
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
