//! Edge cases of each detection rule, on hand-made readings.

use chrono::{DateTime, Duration, Utc};
use fleet_core::alarm::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState};
use fleet_core::detect::{Detector, DetectorConfig};
use fleet_core::{Bolus, BolusSource, MotorStall, Mri, PumpEvent, Reading, Refill};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("valid") // 2026-01-01
}

/// A healthy sensor pump whose refill is due on day 40.
fn reading(pump: &str, seq: u64, at: DateTime<Utc>) -> Reading {
    let mut r = Reading::example(pump, seq, at);
    r.refill_due_at = t0() + Duration::days(40);
    r
}

/// Feeds hourly readings of one pump from `from` for `hours`, shaped by `shape`.
fn run(
    detector: &mut Detector,
    pump: &str,
    from: u64,
    hours: u64,
    shape: impl Fn(&mut Reading, u64),
) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    for h in from..from + hours {
        let mut r = reading(pump, h + 1, t0() + Duration::hours(h as i64));
        shape(&mut r, h);
        out.extend(detector.observe(&r));
    }
    out
}

fn raised(events: &[AlarmEvent], kind: AlarmKind) -> Vec<&AlarmEvent> {
    events
        .iter()
        .filter(|e| e.kind == kind && e.state == AlarmState::Raised)
        .collect()
}

#[test]
fn a_healthy_pump_raises_nothing() {
    let mut d = Detector::new(DetectorConfig::default());
    let events = run(&mut d, "p", 0, 24 * 20, |r, h| {
        r.reservoir_ml = 30.0 - 0.5 * h as f64 / 24.0;
        r.catheter_pressure_kpa =
            Some(12.0 + 2.0 * ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin());
    });
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn reservoir_exactly_at_threshold_raises_and_a_refill_clears() {
    let mut d = Detector::new(DetectorConfig::default());
    let mut events = run(&mut d, "p", 0, 2, |r, h| {
        r.reservoir_ml = if h == 1 { 2.0 } else { 2.5 };
        r.programmed_rate_ml_per_day = 1.5;
        r.refill_due_at = t0() + Duration::hours(30);
    });
    let low = raised(&events, AlarmKind::LowReservoir);
    assert_eq!(low.len(), 1, "{events:?}");
    assert_eq!(
        low[0].priority,
        AlarmPriority::High,
        "baclofen, empty within 2 days"
    );
    assert!(
        events.iter().all(|e| e.state != AlarmState::Updated),
        "the priority was high from the start"
    );
    events.extend(run(&mut d, "p", 2, 1, |r, _| {
        r.reservoir_ml = 39.0;
        r.events.push(PumpEvent::Refill(Refill {
            at: r.measured_at,
            residual_expected_ml: 2.0,
            residual_measured_ml: 2.1,
            volume_added_ml: 37.0,
            refill_due_at: t0() + Duration::days(60),
        }));
    }));
    assert!(
        events
            .iter()
            .any(|e| e.kind == AlarmKind::LowReservoir && e.state == AlarmState::Cleared)
    );
}

#[test]
fn a_rate_raised_without_moving_the_appointment_is_predicted() {
    let mut d = Detector::new(DetectorConfig::default());
    // 30 mL at 0.5 mL/day lasts past day 40; at 1.5 mL/day the threshold comes on day ~19.
    let events = run(&mut d, "p", 0, 48, |r, h| {
        if h >= 24 {
            r.programmed_rate_ml_per_day = 1.5;
        }
    });
    let low = raised(&events, AlarmKind::LowReservoir);
    assert_eq!(low.len(), 1);
    assert_eq!(
        low[0].detected_at,
        t0() + Duration::hours(24),
        "raised at the reprogrammed reading"
    );
}

#[test]
fn missed_refill_waits_for_the_grace_on_the_fleet_clock() {
    let mut d = Detector::new(DetectorConfig::default());
    let due = t0() + Duration::hours(10);
    let events = run(&mut d, "p", 0, 40, |r, _| r.refill_due_at = due);
    let missed = raised(&events, AlarmKind::MissedRefill);
    assert_eq!(missed.len(), 1);
    assert!(missed[0].detected_at >= due + Duration::hours(24));
    assert!(missed[0].detected_at <= due + Duration::hours(25));
}

#[test]
fn stalls_after_an_mri_are_expected_and_others_are_not() {
    let mut d = Detector::new(DetectorConfig::default());
    let stall = |r: &mut Reading| {
        r.events.push(PumpEvent::MotorStall(MotorStall {
            at: r.measured_at,
            duration_s: 600,
        }))
    };
    let after_mri = run(&mut d, "mri", 0, 30, |r, h| {
        if h == 2 {
            r.events.push(PumpEvent::Mri(Mri {
                at: r.measured_at,
                duration_s: 1800,
            }));
        }
        if (3..8).contains(&h) {
            stall(r);
        }
    });
    assert!(
        raised(&after_mri, AlarmKind::Occlusion).is_empty(),
        "{after_mri:?}"
    );
    let unexplained = run(&mut d, "stall", 0, 30, |r, h| {
        if h == 3 || h == 9 {
            stall(r);
        }
    });
    let occ = raised(&unexplained, AlarmKind::Occlusion);
    assert_eq!(occ.len(), 1);
    assert_eq!(
        occ[0].priority,
        AlarmPriority::High,
        "therapy may have stopped"
    );
}

#[test]
fn one_clinician_bolus_spike_is_ignored_and_a_pressure_ramp_is_not() {
    let mut d = Detector::new(DetectorConfig::default());
    let spike = run(&mut d, "spike", 0, 24 * 10, |r, h| {
        if h == 24 * 8 {
            r.events.push(PumpEvent::Bolus(Bolus {
                at: r.measured_at,
                source: BolusSource::Clinician,
                volume_ml: 0.1,
                granted: true,
            }));
            r.catheter_pressure_kpa = Some(80.0);
        }
    });
    assert!(raised(&spike, AlarmKind::Occlusion).is_empty(), "{spike:?}");
    // 10 kPa/day from day 8 (a detector of its own: the clock is per fleet).
    let mut d = Detector::new(DetectorConfig::default());
    let ramp = run(&mut d, "ramp", 0, 24 * 12, |r, h| {
        let days = (h as f64 / 24.0 - 8.0).max(0.0);
        r.catheter_pressure_kpa = Some(12.0 + 10.0 * days);
    });
    let occ = raised(&ramp, AlarmKind::Occlusion);
    assert_eq!(occ.len(), 1);
    let delay = occ[0].detected_at - (t0() + Duration::days(8));
    assert!(
        delay <= Duration::hours(36),
        "found {delay} after onset: {:?}",
        occ[0].evidence
    );
}

#[test]
fn silence_raises_telemetry_lost_and_a_backlog_clears_it_without_flapping() {
    let mut d = Detector::new(DetectorConfig::default());
    // "other" keeps the fleet clock moving while "quiet" is offline from hour 10 to 40.
    let mut events = Vec::new();
    for h in 0..60u64 {
        let at = t0() + Duration::hours(h as i64);
        events.extend(d.observe(&reading("other", h + 1, at)));
        if h < 10 {
            events.extend(d.observe(&reading("quiet", h + 1, at)));
        }
        if h == 40 {
            // The backlog arrives at once, with its old timestamps.
            for b in 10..=40u64 {
                events.extend(d.observe(&reading(
                    "quiet",
                    b + 1,
                    t0() + Duration::hours(b as i64),
                )));
            }
        }
        if h > 40 {
            events.extend(d.observe(&reading("quiet", h + 1, at)));
        }
    }
    let lost: Vec<_> = events
        .iter()
        .filter(|e| e.pump_id == "quiet" && e.kind == AlarmKind::TelemetryLost)
        .collect();
    let states: Vec<_> = lost.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [AlarmState::Raised, AlarmState::Cleared],
        "{lost:?}"
    );
    assert_eq!(
        lost[0].detected_at,
        t0() + Duration::hours(21),
        "12 h after the last reading at hour 9"
    );
    assert!(events.iter().all(|e| e.pump_id != "other"));
}

#[test]
fn one_unexplained_stall_raises_and_wear_stalls_days_apart_do_not_repeat() {
    let mut d = Detector::new(DetectorConfig::default());
    // Mild shaft wear: a stall every three days, for two weeks.
    let events = run(&mut d, "wear", 0, 24 * 14, |r, h| {
        if h % 72 == 5 {
            r.events.push(PumpEvent::MotorStall(MotorStall {
                at: r.measured_at,
                duration_s: 600,
            }));
        }
    });
    let occ = raised(&events, AlarmKind::Occlusion);
    assert_eq!(occ.len(), 1, "raised at the first stall, once: {events:?}");
    assert_eq!(occ[0].detected_at, t0() + Duration::hours(5));
    assert!(
        !events
            .iter()
            .any(|e| e.kind == AlarmKind::Occlusion && e.state == AlarmState::Cleared),
        "cleared between stalls"
    );
    // A week with no stall: over.
    let later = run(&mut d, "wear", 24 * 14, 24 * 10, |_, _| {});
    assert!(
        later
            .iter()
            .any(|e| e.kind == AlarmKind::Occlusion && e.state == AlarmState::Cleared)
    );
}

#[test]
fn a_pressure_rise_must_hold_for_hours() {
    let mut d = Detector::new(DetectorConfig::default());
    // Eight days of baseline, then three hours 20 kPa up, then back.
    let brief = run(&mut d, "brief", 0, 24 * 10, |r, h| {
        if (24 * 8..24 * 8 + 3).contains(&h) {
            r.catheter_pressure_kpa = Some(60.0);
        }
    });
    assert!(raised(&brief, AlarmKind::Occlusion).is_empty(), "{brief:?}");
}

#[test]
fn repeated_low_battery_resets_are_their_own_alarm() {
    let mut d = Detector::new(DetectorConfig::default());
    let events = run(&mut d, "short", 0, 24 * 4, |r, h| {
        if h == 10 || h == 40 {
            r.events
                .push(PumpEvent::LowBatteryReset(fleet_core::LowBatteryReset {
                    at: r.measured_at,
                }));
        }
    });
    let resets = raised(&events, AlarmKind::LowBatteryResets);
    assert_eq!(resets.len(), 1, "{events:?}");
    assert_eq!(resets[0].detected_at, t0() + Duration::hours(40));
    assert!(
        raised(&events, AlarmKind::BatteryEol).is_empty(),
        "ERI is not near"
    );
}
