//! The knobs that vary a fleet (sensor noise, programmed rates, pump models, fault
//! size): each changes what it says it changes, leaves the rest alone, keeps the truth
//! consistent with the readings, and at its default gives today's fleet.

mod common;

use std::collections::BTreeMap;

use chrono::Duration;
use common::{by_pump, consistency_problems, days, events, naive_alarms, run, spec};
use fleet_core::{AlarmKind, PumpEvent, Reading};
use fleet_simulator::{
    DEFAULT_RATE_RANGE_ML_PER_DAY, FaultKind, FaultMix, Fleet, FleetSpec, GroundTruth, ModelMix,
    SpecError,
};

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    assert!(n > 0, "mean of nothing");
    sum / f64::from(n)
}

fn std_dev(values: &[f64]) -> f64 {
    let m = mean(values.iter().copied());
    mean(values.iter().map(|v| (v - m).powi(2))).sqrt()
}

/// Refill residual discrepancies (measured minus expected), in event order.
fn refill_excess(readings: &[Reading]) -> Vec<f64> {
    events(readings)
        .filter_map(|e| match e {
            PumpEvent::Refill(f) => Some(f.residual_measured_ml - f.residual_expected_ml),
            _ => None,
        })
        .collect()
}

/// FNV-1a over the numbers that matter in every reading and episode.
fn digest(readings: &[Reading], truth: &GroundTruth) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |text: String| {
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for r in readings {
        eat(format!(
            "{} {} {} {} {} {} {:?} {:?} {} {} {}|",
            r.pump_id,
            r.seq,
            r.measured_at.timestamp(),
            r.reservoir_ml,
            r.programmed_rate_ml_per_day,
            r.battery_pct,
            r.catheter_pressure_kpa,
            r.motor_current_ma,
            r.temperature_c,
            r.motor_stall_count,
            r.events.len(),
        ));
    }
    for e in &truth.episodes {
        eat(format!(
            "{} {} {} {} {}|",
            e.pump_id,
            e.kind,
            e.onset.timestamp(),
            e.window_start.timestamp(),
            e.window_end.timestamp()
        ));
    }
    h
}

#[test]
fn default_knobs_give_the_fleet_of_before_the_knobs() {
    let plain = spec(3, 24, 45, FaultMix::realistic());
    let explicit = plain
        .clone()
        .with_noise_scale(1.0)
        .with_rate_range(
            DEFAULT_RATE_RANGE_ML_PER_DAY.0,
            DEFAULT_RATE_RANGE_ML_PER_DAY.1,
        )
        .with_models(ModelMix::realistic())
        .with_fault_scale(1.0);
    assert_eq!(plain, explicit);
    let (readings, truth) = run(plain);
    // Recorded from the simulator before the knobs existed (the same fleet, bit for
    // bit, as `dump` wrote then). A deliberate change to the default fleet changes it;
    // an accidental one must not.
    assert_eq!(digest(&readings, &truth), 2_364_981_777_383_388_984);
}

#[test]
fn noise_scale_scales_every_measurement_noise_and_nothing_else() {
    let base = spec(5, 30, 60, FaultMix::none());
    let (quiet, _) = run(base.clone().with_noise_scale(0.0));
    let (normal, _) = run(base.clone());
    let (loud, truth) = run(base.with_noise_scale(3.0));
    assert!(truth.episodes.is_empty());
    assert_eq!(quiet.len(), normal.len());
    assert_eq!(loud.len(), normal.len());
    let mut diffs: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for ((q, n), l) in quiet.iter().zip(&normal).zip(&loud) {
        // The same pumps, interrogated at the same times, with the same therapy.
        assert_eq!(
            (&q.pump_id, q.seq, q.measured_at),
            (&n.pump_id, n.seq, n.measured_at)
        );
        assert_eq!(
            (&l.pump_id, l.seq, l.measured_at),
            (&n.pump_id, n.seq, n.measured_at)
        );
        assert_eq!(q.reservoir_ml, l.reservoir_ml);
        assert_eq!(q.refill_due_at, l.refill_due_at);
        assert_eq!(q.events.len(), l.events.len());
        let mut push = |channel, q: f64, n: f64, l: f64| {
            let entry = diffs.entry(channel).or_default();
            entry.0.push(n - q);
            entry.1.push(l - q);
        };
        push("battery_pct", q.battery_pct, n.battery_pct, l.battery_pct);
        push("battery_v", q.battery_v, n.battery_v, l.battery_v);
        push(
            "temperature",
            q.temperature_c,
            n.temperature_c,
            l.temperature_c,
        );
        if let (Some(q), Some(n), Some(l)) = (
            q.catheter_pressure_kpa,
            n.catheter_pressure_kpa,
            l.catheter_pressure_kpa,
        ) {
            push("pressure", q, n, l);
        }
        if let (Some(q), Some(n), Some(l)) =
            (q.motor_current_ma, n.motor_current_ma, l.motor_current_ma)
        {
            push("current", q, n, l);
        }
    }
    for (channel, (at_one, at_three)) in &diffs {
        let (one, three) = (std_dev(at_one), std_dev(at_three));
        assert!(one > 0.0, "{channel}: no noise at scale 1");
        // Three times the deviation (the readings are rounded, so not exactly).
        assert!(
            (2.7..3.3).contains(&(three / one)),
            "{channel}: deviation {one} at scale 1, {three} at scale 3"
        );
    }
    assert_eq!(diffs.len(), 5, "{:?}", diffs.keys());
    // The clinician's aspiration at a refill is a measurement too.
    let (quiet, normal, loud) = (
        refill_excess(&quiet),
        refill_excess(&normal),
        refill_excess(&loud),
    );
    assert!(normal.len() >= 10, "{} refills", normal.len());
    assert!(quiet.iter().all(|e| e.abs() <= 0.0101), "{quiet:?}");
    assert!(
        std_dev(&loud) > 2.5 * std_dev(&normal),
        "{normal:?} -> {loud:?}"
    );
    // Never as much as a consequential discrepancy on a healthy pump.
    assert!(loud.iter().all(|e| e.abs() < 0.5), "{loud:?}");
}

#[test]
fn rate_range_moves_the_programmed_rates_within_six_months_of_refill() {
    let base = spec(8, 60, 30, FaultMix::none());
    let rates = |spec: FleetSpec| {
        let (readings, _) = run(spec);
        let mut intervals_ok = true;
        for r in &readings {
            intervals_ok &= days(r.refill_due_at - r.measured_at) <= 180.5;
        }
        assert!(intervals_ok, "an appointment more than six months ahead");
        by_pump(&readings)
            .into_values()
            .map(|rs| rs[0].programmed_rate_ml_per_day)
            .collect::<Vec<f64>>()
    };
    let default = rates(base.clone());
    let low = rates(base.clone().with_rate_range(0.1, 0.4));
    let high = rates(base.with_rate_range(0.8, 2.5));
    assert!(
        default.iter().all(|r| (0.3..=1.6).contains(r)),
        "{default:?}"
    );
    assert!(low.iter().all(|r| (0.1..=0.4).contains(r)), "{low:?}");
    assert!(high.iter().all(|r| (0.8..=2.5).contains(r)), "{high:?}");
    assert!(
        mean(low.iter().copied()) < mean(default.iter().copied())
            && mean(default.iter().copied()) < mean(high.iter().copied())
    );
    // Below 0.2 mL/day only the 20 mL pumps last six months.
    let (readings, _) = run(spec(8, 60, 10, FaultMix::none()).with_rate_range(0.05, 0.1));
    for rs in by_pump(&readings).into_values() {
        let r = &rs[0];
        let rate = r.programmed_rate_ml_per_day;
        if r.reservoir_capacity_ml > 20.0 {
            assert_eq!(rate, 0.1, "{}", r.pump_id);
        } else {
            assert!((0.05..=0.1).contains(&rate), "{}: {rate}", r.pump_id);
        }
    }
}

#[test]
fn model_mix_chooses_the_models_and_drops_faults_that_need_a_motor() {
    let sensorless = ModelMix::only(&["ITV-20", "ITV-40"]).expect("known models");
    let fleet = spec(9, 200, 30, FaultMix::realistic()).with_models(sensorless);
    let (readings, truth) = run(fleet);
    assert!(
        readings
            .iter()
            .all(|r| r.model.starts_with("ITV") && r.catheter_pressure_kpa.is_none())
    );
    let capacities: Vec<f64> = readings.iter().map(|r| r.reservoir_capacity_ml).collect();
    assert!(capacities.contains(&20.0) && capacities.contains(&40.0));
    for p in &truth.pumps {
        assert!(p.model.starts_with("ITV"), "{}", p.pump_id);
        assert!(
            !matches!(
                p.fault,
                FaultKind::MriStall | FaultKind::MotorStall | FaultKind::BolusSpikes
            ),
            "{} has {} without a motor",
            p.pump_id,
            p.fault
        );
    }
    // Only 40 mL sensor pumps: every fault, motor faults included, lands on them.
    let fleet = spec(9, 200, 30, FaultMix::realistic())
        .with_models(ModelMix::only(&["ITP-40"]).expect("known model"));
    let (readings, truth) = run(fleet);
    assert!(readings.iter().all(|r| r.model == "ITP-40"
        && r.reservoir_capacity_ml == 40.0
        && r.catheter_pressure_kpa.is_some()));
    assert!(truth.pumps.iter().any(|p| p.fault == FaultKind::MotorStall));

    assert_eq!(
        ModelMix::realistic().weights(),
        vec![
            ("ITP-20", 0.35),
            ("ITP-40", 0.30),
            ("ITV-20", 0.20),
            ("ITV-40", 0.15)
        ]
    );
    assert!(matches!(
        ModelMix::only(&["ITP-30"]),
        Err(SpecError::UnknownModel { model }) if model == "ITP-30"
    ));
    assert!(matches!(
        ModelMix::only::<&str>(&[]),
        Err(SpecError::NoModel)
    ));
}

/// `(pump, its only episode)` for every pump of the fault.
fn episodes_by_pump(truth: &GroundTruth, kind: AlarmKind) -> BTreeMap<String, (f64, f64, f64)> {
    let mut found = BTreeMap::new();
    for e in truth.episodes.iter().filter(|e| e.kind == kind) {
        let at = |t: chrono::DateTime<chrono::Utc>| days(t - truth.start);
        let previous = found.insert(
            e.pump_id.clone(),
            (at(e.onset), at(e.window_start), at(e.window_end)),
        );
        assert!(previous.is_none(), "{}: two episodes", e.pump_id);
    }
    for p in truth.pumps.iter().filter(|p| p.fault != FaultKind::None) {
        assert!(found.contains_key(&p.pump_id), "{} unlabelled", p.pump_id);
    }
    found
}

#[test]
fn fault_scale_resizes_occlusions_and_keeps_them_consequential() {
    let base = spec(21, 24, 90, FaultMix::only(FaultKind::Occlusion));
    // Per scale: mean pressure rise over the first two days of the occlusion (sensor
    // pumps), and mean residual excess at the refill that finds it (valve pumps).
    let measure = |scale: f64| {
        let (readings, truth) = run(base.clone().with_fault_scale(scale));
        let episodes = episodes_by_pump(&truth, AlarmKind::Occlusion);
        let (mut rises, mut excesses) = (Vec::new(), Vec::new());
        for (id, rs) in by_pump(&readings) {
            let (onset, _, window_end) = episodes[&id];
            let at = |r: &Reading| days(r.measured_at - truth.start);
            if rs[0].catheter_pressure_kpa.is_some() {
                let pressure = |from: f64, to: f64| {
                    mean(
                        rs.iter()
                            .filter(|r| (from..to).contains(&at(r)))
                            .filter_map(|r| r.catheter_pressure_kpa),
                    )
                };
                // Whole days, so the daily swing averages out.
                rises.push(pressure(onset + 1.0, onset + 2.0) - pressure(onset - 2.0, onset));
                assert!(window_end - onset >= 4.0 - 1e-6, "{id}");
            } else {
                let consequential = if rs[0].reservoir_capacity_ml > 20.0 {
                    2.0
                } else {
                    1.0
                };
                let excess = events(&rs)
                    .find_map(|e| match e {
                        PumpEvent::Refill(f) if days(f.at - truth.start) == onset => {
                            Some(f.residual_measured_ml - f.residual_expected_ml)
                        }
                        _ => None,
                    })
                    .expect("the refill that found the occlusion");
                assert!(excess > consequential, "{id}: {excess} mL at scale {scale}");
                excesses.push(excess - consequential);
            }
        }
        (mean(rises), mean(excesses), truth)
    };
    let (small_rise, small_excess, small_truth) = measure(0.5);
    let (rise, excess, _) = measure(1.0);
    let (large_rise, large_excess, _) = measure(2.0);
    assert!(
        small_rise < 0.7 * rise && rise < 0.7 * large_rise,
        "pressure rise {small_rise} / {rise} / {large_rise} kPa"
    );
    assert!(
        small_excess < excess && excess < large_excess,
        "excess above consequential {small_excess} / {excess} / {large_excess} mL"
    );
    // A slow ramp gets until it is 24 kPa above baseline to be found.
    let longer = small_truth
        .episodes
        .iter()
        .filter(|e| days(e.window_end - e.onset) > 4.0 + 1e-6)
        .count();
    assert!(longer > 0, "no slow ramp got a longer window");
}

#[test]
fn fault_scale_resizes_battery_shorts_wear_and_rate_rises() {
    let drain_after_short = |scale: f64| {
        let (readings, truth) = run(
            spec(22, 10, 120, FaultMix::only(FaultKind::BatteryPremature)).with_fault_scale(scale),
        );
        let episodes = episodes_by_pump(&truth, AlarmKind::BatteryEol);
        let mut drains = Vec::new();
        for (id, rs) in by_pump(&readings) {
            let (_, window_start, _) = episodes[&id];
            assert!(window_start < days(truth.end - truth.start) - 9.0, "{id}");
            let short = events(&rs)
                .find_map(|e| match e {
                    PumpEvent::LowBatteryReset(r) => Some(r.at),
                    _ => None,
                })
                .expect("resets");
            let after: Vec<&Reading> = rs
                .iter()
                .filter(|r| r.measured_at > short && !r.eri)
                .collect();
            let (first, last) = (after[0], after[after.len() - 1]);
            drains.push(
                (first.battery_pct - last.battery_pct) / days(last.measured_at - first.measured_at),
            );
        }
        mean(drains)
    };
    let (small, default, large) = (
        drain_after_short(0.5),
        drain_after_short(1.0),
        drain_after_short(2.0),
    );
    assert!(
        small < 0.8 * default && default < 0.8 * large,
        "drain {small} / {default} / {large} %/day"
    );
    assert!(
        small >= 0.125 - 0.01,
        "{small} %/day is no longer premature"
    );

    let stalls_in_three_days = |scale: f64| {
        let (readings, truth) =
            run(spec(23, 12, 60, FaultMix::only(FaultKind::MotorStall)).with_fault_scale(scale));
        let episodes = episodes_by_pump(&truth, AlarmKind::Occlusion);
        let counts = by_pump(&readings).into_iter().map(|(id, rs)| {
            let (onset, _, _) = episodes[&id];
            events(&rs)
                .filter(|e| {
                    matches!(e, PumpEvent::MotorStall(s)
                    if days(s.at - truth.start) - onset < 3.0)
                })
                .count() as f64
        });
        mean(counts)
    };
    let (small, large) = (stalls_in_three_days(0.5), stalls_in_three_days(2.0));
    assert!(small < 0.7 * large, "stalls in 3 days {small} / {large}");

    let rise = |scale: f64| {
        let (readings, truth) =
            run(spec(24, 16, 60, FaultMix::only(FaultKind::ReprogramUp)).with_fault_scale(scale));
        let episodes = episodes_by_pump(&truth, AlarmKind::LowReservoir);
        assert_eq!(episodes.len(), 16);
        let multipliers = events(&readings).filter_map(|e| match e {
            PumpEvent::Reprogram(p) => Some(p.rate_ml_per_day / p.previous_rate_ml_per_day),
            _ => None,
        });
        // Still a LOW_RESERVOIR episode by the contract's rule: projected to reach the
        // threshold before the appointment.
        for (id, rs) in by_pump(&readings) {
            assert!(
                naive_alarms(&rs)
                    .iter()
                    .any(|a| a.contains("projected below threshold")),
                "{id} at scale {scale}"
            );
        }
        mean(multipliers)
    };
    let (small, large) = (rise(0.5), rise(2.0));
    assert!(small < large, "rate x{small} / x{large}");
}

#[test]
fn bad_knobs_are_refused_with_the_reason() {
    let good = spec(1, 5, 10, FaultMix::none());
    let refused = |spec: FleetSpec| Fleet::try_new(spec).err();
    for noise in [-0.1, 5.5, f64::NAN] {
        assert!(matches!(
            refused(good.clone().with_noise_scale(noise)),
            Some(SpecError::BadNoiseScale { .. })
        ));
    }
    for (min, max) in [(0.01, 1.0), (0.5, 0.4), (0.3, 9.0), (f64::NAN, 1.0)] {
        assert!(matches!(
            refused(good.clone().with_rate_range(min, max)),
            Some(SpecError::BadRateRange { .. })
        ));
    }
    for scale in [0.0, 0.2, 4.5, f64::INFINITY] {
        assert!(matches!(
            refused(good.clone().with_fault_scale(scale)),
            Some(SpecError::BadFaultScale { .. })
        ));
    }
    assert!(refused(good.with_noise_scale(0.0).with_fault_scale(0.25)).is_none());
}

/// Every knob at the values the generalisation script uses, and the extremes together.
fn variants() -> Vec<(&'static str, FleetSpec)> {
    let base = |seed| spec(seed, 40, 60, FaultMix::realistic());
    let models = |names: &[&str]| ModelMix::only(names).expect("known models");
    vec![
        ("noise x3", base(41).with_noise_scale(3.0)),
        ("rates low", base(42).with_rate_range(0.1, 0.4)),
        ("rates high", base(43).with_rate_range(0.8, 2.5)),
        (
            "sensor pumps",
            base(44).with_models(models(&["ITP-20", "ITP-40"])),
        ),
        (
            "valve pumps",
            base(45).with_models(models(&["ITV-20", "ITV-40"])),
        ),
        ("20 mL", base(46).with_models(models(&["ITP-20", "ITV-20"]))),
        ("faults small", base(47).with_fault_scale(0.5)),
        ("faults large", base(48).with_fault_scale(2.0)),
        (
            "extremes",
            base(49)
                .with_noise_scale(5.0)
                .with_fault_scale(0.25)
                .with_rate_range(0.05, 0.2)
                .with_cadence(Duration::minutes(120)),
        ),
    ]
}

#[test]
fn varied_fleets_keep_truth_and_readings_consistent() {
    let mut problems = Vec::new();
    for (name, fleet_spec) in variants() {
        problems.extend(consistency_problems(name, fleet_spec));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
#[ignore = "slow (a minute or two in a debug build): scripts/test.sh runs it"]
fn varied_fleets_stay_consistent_across_seeds_and_lengths() {
    let mut problems = Vec::new();
    for seed in 0..6u64 {
        for (name, fleet_spec) in variants() {
            let days = [120, 30, 200][seed as usize % 3];
            let fleet_spec = FleetSpec {
                seed: fleet_spec.seed * 100 + seed,
                end: fleet_spec.start + Duration::days(days),
                ..fleet_spec
            };
            problems.extend(consistency_problems(
                &format!("{name} seed {seed} {days} d"),
                fleet_spec,
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
