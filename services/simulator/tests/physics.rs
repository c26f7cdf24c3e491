//! The medicine: reservoir drawdown and refills, battery depletion, and silence (no
//! rule of the contract fires) on healthy and benign pumps.

mod common;

use chrono::Duration;
use common::{by_pump, days, naive_alarms, only, run, spec};
use fleet_core::{BolusSource, PumpEvent};
use fleet_simulator::{FaultKind, FaultMix};

#[test]
fn reservoir_draws_down_at_the_programmed_rate_plus_granted_boluses() {
    let (readings, _) = run(spec(31, 40, 60, FaultMix::none()));
    let mut compared = 0;
    for (id, rs) in by_pump(&readings) {
        for pair in rs.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            assert!(after.reservoir_ml >= 0.0);
            if after
                .events
                .iter()
                .any(|e| matches!(e, PumpEvent::Refill(_)))
            {
                continue;
            }
            let boluses_ml: f64 = after
                .events
                .iter()
                .filter_map(|e| match e {
                    PumpEvent::Bolus(b) if b.granted => Some(b.volume_ml),
                    _ => None,
                })
                .sum();
            let expected_ml = before.programmed_rate_ml_per_day
                * days(after.measured_at - before.measured_at)
                + boluses_ml;
            let drop_ml = before.reservoir_ml - after.reservoir_ml;
            // Two values rounded to 0.01 mL.
            assert!(
                (drop_ml - expected_ml).abs() <= 0.0101,
                "{id} seq {}: dropped {drop_ml} mL, expected {expected_ml} mL",
                after.seq
            );
            compared += 1;
        }
    }
    assert!(compared > 40 * 60 * 23);
}

#[test]
fn refills_come_on_schedule_and_fill_the_reservoir() {
    let (readings, _) = run(spec(32, 60, 90, FaultMix::none()));
    let mut refills = 0;
    for (id, rs) in by_pump(&readings) {
        for pair in rs.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            for e in &after.events {
                let PumpEvent::Refill(refill) = e else {
                    continue;
                };
                refills += 1;
                // Kept within about an hour of the appointment.
                let late = refill.at - before.refill_due_at;
                assert!(
                    late >= -Duration::minutes(91) && late <= Duration::minutes(46),
                    "{id}: refill {late} after the appointment"
                );
                // Before the alarm date: the threshold was not reached.
                assert!(
                    refill.residual_expected_ml > after.low_reservoir_threshold_ml,
                    "{id}"
                );
                // A healthy catheter: what comes out is what the pump expected.
                let discrepancy = refill.residual_measured_ml - refill.residual_expected_ml;
                assert!(
                    discrepancy.abs() <= 0.16,
                    "{id}: discrepancy {discrepancy} mL"
                );
                assert!(
                    refill.volume_added_ml > after.reservoir_capacity_ml - 0.11,
                    "{id}"
                );
                assert!(
                    after.reservoir_ml > before.reservoir_ml,
                    "{id}: no rise at refill"
                );
                assert!(after.reservoir_ml <= refill.volume_added_ml, "{id}");
                assert_eq!(after.refill_due_at, refill.refill_due_at, "{id}");
                // Every few weeks to a few months.
                let interval = days(refill.refill_due_at - refill.at);
                assert!(
                    (9.0..=130.0).contains(&interval),
                    "{id}: next in {interval} days"
                );
            }
        }
    }
    assert!(refills > 60, "only {refills} refills");
}

#[test]
fn a_healthy_battery_declines_slowly_with_noise() {
    let (readings, _) = run(spec(33, 30, 60, FaultMix::none()));
    for (id, rs) in by_pump(&readings) {
        let first = &rs[0];
        let last = &rs[rs.len() - 1];
        let per_day =
            (first.battery_pct - last.battery_pct) / days(last.measured_at - first.measured_at);
        // 100 % over five to six years.
        assert!((0.035..=0.065).contains(&per_day), "{id}: {per_day} %/day");
        assert!(last.battery_pct > 20.0, "{id}");
        assert!(
            rs.iter().all(|r| (2.85..3.2).contains(&r.battery_v)),
            "{id}"
        );
        // Not a perfectly smooth line: the gauge has noise.
        let ups = rs
            .windows(2)
            .filter(|p| p[1].battery_pct > p[0].battery_pct)
            .count();
        assert!(ups > 0, "{id}: no noise");
    }
}

#[test]
fn a_fault_free_fleet_has_no_episodes_and_trips_no_rule() {
    let (readings, truth) = run(spec(34, 100, 60, FaultMix::none()));
    assert!(truth.episodes.is_empty(), "{:?}", truth.episodes.first());
    for (id, rs) in by_pump(&readings) {
        let alarms = naive_alarms(&rs);
        assert!(alarms.is_empty(), "{id}: {alarms:?}");
    }
}

#[test]
fn benign_faults_have_no_episodes_and_trip_no_rule() {
    for kind in [
        FaultKind::LateRefill,
        FaultKind::ReprogramMovedRefill,
        FaultKind::MriStall,
        FaultKind::BolusSpikes,
        FaultKind::GatewayOutageShort,
    ] {
        let (readings, truth) = run(only(kind, 16));
        assert!(
            truth.episodes.is_empty(),
            "{kind}: {:?}",
            truth.episodes.first()
        );
        assert!(truth.pumps.iter().all(|p| p.fault == kind), "{kind}");
        for (id, rs) in by_pump(&readings) {
            let alarms = naive_alarms(&rs);
            assert!(alarms.is_empty(), "{kind} {id}: {alarms:?}");
        }
    }
}

#[test]
fn patient_boluses_are_small_and_some_are_refused_by_lockout() {
    let (readings, _) = run(spec(35, 60, 60, FaultMix::none()));
    let boluses: Vec<_> = readings
        .iter()
        .flat_map(|r| &r.events)
        .filter_map(|e| match e {
            PumpEvent::Bolus(b) => Some(b),
            _ => None,
        })
        .collect();
    assert!(boluses.len() > 100);
    assert!(
        boluses
            .iter()
            .all(|b| b.source == BolusSource::Patient && b.volume_ml <= 0.03)
    );
    assert!(boluses.iter().any(|b| !b.granted));
    assert!(boluses.iter().filter(|b| b.granted).count() > boluses.len() / 2);
}
