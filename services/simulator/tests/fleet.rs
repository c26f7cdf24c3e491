//! The fleet as a stream: deterministic, valid, ordered, never repeating.

mod common;

use std::collections::{BTreeMap, HashSet};

use chrono::Duration;
use common::{by_pump, run, spec};
use fleet_simulator::{FaultKind, FaultMix, FaultShare, Fleet, FleetSpec, SpecError};

#[test]
fn same_spec_gives_identical_readings_and_truth() {
    let (a, truth_a) = run(spec(42, 40, 45, FaultMix::realistic()));
    let (b, truth_b) = run(spec(42, 40, 45, FaultMix::realistic()));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    assert_eq!(truth_a, truth_b);
}

#[test]
fn another_seed_gives_another_fleet() {
    let (a, truth_a) = run(spec(42, 40, 45, FaultMix::realistic()));
    let (b, truth_b) = run(spec(43, 40, 45, FaultMix::realistic()));
    assert_ne!(a, b);
    assert_ne!(truth_a, truth_b);
}

#[test]
fn the_stream_does_not_depend_on_how_it_is_read() {
    let spec = spec(7, 30, 40, FaultMix::realistic());
    let (whole, _) = run(spec.clone());
    let mut fleet = Fleet::new(spec.clone());
    let mut pieces = Vec::new();
    let mut until = spec.start - Duration::hours(1);
    let mut step_min = 7;
    while until < spec.end + Duration::days(1) {
        pieces.extend(fleet.advance_until(until));
        // Irregular steps: a few minutes to most of a day.
        step_min = (step_min * 37 + 11) % 1300 + 1;
        until += Duration::minutes(step_min);
    }
    assert_eq!(pieces, whole);
}

#[test]
fn every_reading_validates() {
    let (readings, _) = run(spec(3, 120, 60, FaultMix::realistic()));
    assert!(readings.len() > 120 * 60 * 20);
    for r in &readings {
        if let Err(e) = r.validate() {
            panic!("{} seq {}: {e}", r.pump_id, r.seq);
        }
    }
}

#[test]
fn advance_until_returns_each_reading_once_and_none_after_until() {
    let spec = spec(11, 40, 30, FaultMix::realistic());
    let mut fleet = Fleet::new(spec.clone());
    let mut seen = HashSet::new();
    let mut until = spec.start;
    while until <= spec.end + Duration::days(2) {
        for r in fleet.advance_until(until) {
            assert!(
                r.measured_at <= until,
                "{} measured after {until}",
                r.measured_at
            );
            assert!(r.measured_at <= spec.end);
            assert!(
                seen.insert((r.pump_id.clone(), r.seq)),
                "{} {} twice",
                r.pump_id,
                r.seq
            );
        }
        until += Duration::minutes(97);
    }
    assert!(
        fleet
            .advance_until(spec.end + Duration::days(30))
            .is_empty()
    );
    let (whole, _) = run(spec);
    assert_eq!(seen.len(), whole.len());
}

#[test]
fn seq_rises_by_one_per_reading_with_no_gaps() {
    // Lost outages included: a gateway that is off does not interrogate, so no `seq`
    // is consumed.
    let (readings, truth) = run(spec(5, 80, 60, FaultMix::realistic()));
    let pumps = by_pump(&readings);
    assert_eq!(pumps.len(), truth.pumps.len());
    for (id, rs) in &pumps {
        assert!(rs[0].seq >= 1000, "{id} starts at {}", rs[0].seq);
        for pair in rs.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "{id}");
            assert!(pair[1].measured_at > pair[0].measured_at, "{id}");
        }
    }
}

#[test]
fn readings_arrive_in_measured_at_order_without_backlog() {
    let mix = FaultMix::realistic()
        .with(FaultKind::GatewayOutageShort, FaultShare::Probability(0.0))
        .with(
            FaultKind::GatewayOutageBacklog,
            FaultShare::Probability(0.0),
        );
    let (readings, _) = run(spec(9, 60, 30, mix));
    for pair in readings.windows(2) {
        assert!(pair[0].measured_at <= pair[1].measured_at);
    }
}

#[test]
fn interrogations_keep_the_cadence_with_a_little_jitter() {
    let (readings, truth) = run(spec(21, 20, 10, FaultMix::none()));
    assert_eq!(truth.cadence_min, 60);
    for (id, rs) in by_pump(&readings) {
        // The slot at `end` itself is measured when its jitter does not push it past.
        assert!((240..=241).contains(&rs.len()), "{id}: {}", rs.len());
        assert!(rs[0].measured_at >= truth.start);
        for pair in rs.windows(2) {
            let gap_s = (pair[1].measured_at - pair[0].measured_at).num_seconds();
            assert!(
                (3600 - 240..=3600 + 240).contains(&gap_s),
                "{id}: {gap_s} s"
            );
        }
    }
}

#[test]
fn identity_model_and_sensors_are_consistent() {
    let (readings, truth) = run(spec(13, 200, 3, FaultMix::realistic()));
    let mut drugs = BTreeMap::new();
    for r in &readings {
        let number = r.pump_id.rsplit('-').next().unwrap_or_default();
        assert_eq!(r.gateway_id, format!("gw-{number}"));
        assert_eq!(
            r.pump_id.split('-').next(),
            Some(r.model.replace('-', "").as_str())
        );
        let sensors = r.model.starts_with("ITP");
        assert_eq!(r.catheter_pressure_kpa.is_some(), sensors, "{}", r.pump_id);
        assert_eq!(r.motor_current_ma.is_some(), sensors, "{}", r.pump_id);
        let capacity = if r.model.ends_with("40") { 40.0 } else { 20.0 };
        assert_eq!(r.reservoir_capacity_ml, capacity);
        assert!(
            (0.25..=3.0).contains(&r.programmed_rate_ml_per_day),
            "{}",
            r.pump_id
        );
        assert!((35.5..=38.5).contains(&r.temperature_c), "{}", r.pump_id);
        *drugs.entry(r.drug.clone()).or_insert(0) += 1;
    }
    assert!(drugs.contains_key("BACLOFEN"), "{drugs:?}");
    assert!(drugs.len() >= 5, "{drugs:?}");
    assert_eq!(truth.pumps[0].pump_id.split('-').nth(1), Some("100000"));
}

#[test]
fn fault_counts_are_exact() {
    let mix = FaultMix::none()
        .with(FaultKind::MissedRefill, FaultShare::Count(3))
        .with(FaultKind::MriStall, FaultShare::Count(2));
    let fleet = Fleet::new(spec(1, 20, 60, mix));
    let count = |kind| fleet.pumps().iter().filter(|p| p.fault() == kind).count();
    assert_eq!(count(FaultKind::MissedRefill), 3);
    assert_eq!(count(FaultKind::MriStall), 2);
    assert_eq!(count(FaultKind::None), 15);
    for p in fleet.pumps() {
        if p.fault() == FaultKind::MriStall {
            assert!(p.model().starts_with("ITP"), "an MRI stall needs a motor");
        }
    }
}

#[test]
fn a_bad_spec_is_refused_with_the_reason() {
    let good = spec(1, 5, 10, FaultMix::none());
    let empty = FleetSpec {
        end: good.start,
        ..good.clone()
    };
    assert!(matches!(
        Fleet::try_new(empty),
        Err(SpecError::EmptyRun { .. })
    ));
    let too_likely = good.clone().with_faults(
        FaultMix::none()
            .with(FaultKind::MissedRefill, FaultShare::Probability(0.7))
            .with(FaultKind::MotorStall, FaultShare::Probability(0.7)),
    );
    assert!(matches!(
        Fleet::try_new(too_likely),
        Err(SpecError::ProbabilitiesAboveOne { .. })
    ));
    let too_many = good
        .clone()
        .with_faults(FaultMix::none().with(FaultKind::Occlusion, FaultShare::Count(6)));
    assert!(matches!(
        Fleet::try_new(too_many),
        Err(SpecError::CountsAboveFleet { .. })
    ));
    let no_cadence = good.with_cadence(Duration::zero());
    assert!(matches!(
        Fleet::try_new(no_cadence),
        Err(SpecError::CadenceTooShort { .. })
    ));
}

#[test]
fn a_pump_can_be_driven_on_its_own() {
    let fleet = Fleet::new(spec(2, 3, 10, FaultMix::none()));
    let mut pump = fleet.into_pumps().remove(0);
    let first = pump.next_reading();
    let due = pump.next_due();
    assert!(due > first.measured_at);
    let second = pump.next_reading();
    assert_eq!(second.measured_at, due);
    assert_eq!(second.seq, first.seq + 1);
    // Off for a day: no interrogation, no `seq` consumed.
    pump.skip_until(second.measured_at + Duration::days(1));
    let third = pump.next_reading();
    assert_eq!(third.seq, second.seq + 1);
    assert!(third.measured_at >= second.measured_at + Duration::days(1));
    assert!(third.reservoir_ml < second.reservoir_ml);
}
