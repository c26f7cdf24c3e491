//! Each injected fault: its labelled episodes and its signature in the readings.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{by_pump, days, events, naive_alarms, only, run};
use fleet_core::{AlarmKind, BolusSource, PumpEvent, Reading};
use fleet_simulator::{EMPTY_RESERVOIR_ALARM, Episode, FaultKind, Fleet, GroundTruth, TruthPump};

fn episodes<'a>(truth: &'a GroundTruth, pump_id: &str) -> Vec<&'a Episode> {
    truth
        .episodes
        .iter()
        .filter(|e| e.pump_id == pump_id)
        .collect()
}

fn one(truth: &GroundTruth, pump_id: &str, kind: AlarmKind) -> Episode {
    let mine: Vec<_> = episodes(truth, pump_id)
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect();
    assert_eq!(mine.len(), 1, "{pump_id}: {kind} episodes {mine:?}");
    mine[0].clone()
}

fn device_alarms(rs: &[Reading], code: &str) -> Vec<DateTime<Utc>> {
    events(rs)
        .filter_map(|e| match e {
            PumpEvent::DeviceAlarm(a) if a.code == code => Some(a.at),
            _ => None,
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0), |(s, n), v| (s + v, n + 1));
    sum / f64::from(n.max(1))
}

#[test]
fn every_kind_labels_its_episodes_or_none() {
    for kind in FaultKind::ALL {
        let (_, truth) = run(only(kind, 6));
        let expected: &[AlarmKind] = match kind {
            FaultKind::MissedRefill => &[AlarmKind::MissedRefill, AlarmKind::LowReservoir],
            FaultKind::ReprogramUp => &[AlarmKind::LowReservoir],
            FaultKind::Occlusion | FaultKind::MotorStall => &[AlarmKind::Occlusion],
            FaultKind::BatteryNominalEri | FaultKind::BatteryPremature => &[AlarmKind::BatteryEol],
            FaultKind::GatewayOutageBacklog | FaultKind::GatewayOutageLost => {
                &[AlarmKind::TelemetryLost]
            }
            _ => &[],
        };
        assert_eq!(kind.has_episodes(), !expected.is_empty(), "{kind}");
        for TruthPump { pump_id, fault, .. } in &truth.pumps {
            assert_eq!(*fault, kind, "{pump_id}: a 60-day run fits every fault");
            let mut kinds: Vec<_> = episodes(&truth, pump_id).iter().map(|e| e.kind).collect();
            kinds.sort();
            let mut want = expected.to_vec();
            want.sort();
            assert_eq!(kinds, want, "{kind} {pump_id}");
        }
        for e in &truth.episodes {
            assert!(e.window_start < e.window_end, "{e:?}");
            assert!(
                e.window_start <= e.onset && e.onset <= e.window_end,
                "{e:?}"
            );
            // Detectable inside the run.
            assert!(e.window_start < truth.end - Duration::hours(12), "{e:?}");
            assert!(
                e.harm_at
                    .is_none_or(|h| h >= e.window_end - Duration::hours(1)),
                "{e:?}"
            );
        }
    }
}

#[test]
fn faults_with_episodes_do_trip_the_naive_rules() {
    // The other side of `benign_faults_have_no_episodes_and_trip_no_rule`: the rules
    // used there do see real faults.
    for kind in FaultKind::ALL.into_iter().filter(|k| k.has_episodes()) {
        if matches!(
            kind,
            // ERI may fall after the run: seen by projection only.
            FaultKind::BatteryNominalEri
            // Silence shows in arrival order, not in measured_at (see the backlog test).
            | FaultKind::GatewayOutageBacklog
        ) {
            continue;
        }
        let (readings, _) = run(only(kind, 4));
        for (id, rs) in by_pump(&readings) {
            assert!(!naive_alarms(&rs).is_empty(), "{kind} {id} looks healthy");
        }
    }
}

#[test]
fn missed_refill_runs_past_the_grace_into_the_threshold_and_empty() {
    let (readings, truth) = run(only(FaultKind::MissedRefill, 8));
    for (id, rs) in by_pump(&readings) {
        let missed = one(&truth, &id, AlarmKind::MissedRefill);
        let low = one(&truth, &id, AlarmKind::LowReservoir);
        let due = missed.onset - Duration::hours(24);
        assert_eq!(missed.window_end - missed.window_start, Duration::hours(48));
        // Still the old appointment a day after it, with no refill since.
        let overdue: Vec<_> = rs
            .iter()
            .filter(|r| {
                r.measured_at > due + Duration::hours(24) && r.measured_at < missed.window_end
            })
            .collect();
        assert!(!overdue.is_empty());
        assert!(overdue.iter().all(|r| r.refill_due_at == due), "{id}");
        let refill_near_due = events(&rs).any(|e| {
            matches!(e, PumpEvent::Refill(f) if f.at > due - Duration::days(2) && f.at < due + Duration::hours(24))
        });
        assert!(!refill_near_due, "{id}");
        // The pump's own low-reservoir alarm sounds inside the LOW_RESERVOIR window.
        let low_alarm = device_alarms(&rs, "LOW_RESERVOIR")[0];
        assert!(
            low.window_start < low_alarm && low_alarm < low.window_end,
            "{id}"
        );
        if let Some(&empty) = device_alarms(&rs, EMPTY_RESERVOIR_ALARM).first() {
            assert_eq!(low.harm_at, Some(empty), "{id}");
        }
        assert!(rs.iter().all(|r| r.reservoir_ml >= 0.0));
    }
}

#[test]
fn late_refill_comes_within_the_grace() {
    let (readings, truth) = run(only(FaultKind::LateRefill, 8));
    assert!(truth.episodes.is_empty());
    for (id, rs) in by_pump(&readings) {
        let lateness: Vec<Duration> = rs
            .windows(2)
            .flat_map(|p| {
                p[1].events.iter().filter_map(|e| match e {
                    PumpEvent::Refill(f) => Some(f.at - p[0].refill_due_at),
                    _ => None,
                })
            })
            .collect();
        assert!(
            lateness.iter().all(|l| *l < Duration::hours(24)),
            "{id}: {lateness:?}"
        );
        assert!(
            lateness.iter().any(|l| *l >= Duration::hours(6)),
            "{id}: {lateness:?}"
        );
    }
}

#[test]
fn reprogram_up_projects_the_threshold_before_the_appointment() {
    let (readings, truth) = run(only(FaultKind::ReprogramUp, 8));
    for (id, rs) in by_pump(&readings) {
        let episode = one(&truth, &id, AlarmKind::LowReservoir);
        let (i, reprogram) = rs
            .iter()
            .enumerate()
            .find_map(|(i, r)| {
                r.events.iter().find_map(|e| match e {
                    PumpEvent::Reprogram(p) => Some((i, p.clone())),
                    _ => None,
                })
            })
            .expect("a REPROGRAM event");
        assert_eq!(episode.onset, reprogram.at, "{id}");
        assert!(
            reprogram.rate_ml_per_day > 1.5 * reprogram.previous_rate_ml_per_day,
            "{id}"
        );
        assert_eq!(
            reprogram.refill_due_at,
            rs[i - 1].refill_due_at,
            "{id}: date moved"
        );
        let r = &rs[i];
        let to_threshold_days =
            (r.reservoir_ml - r.low_reservoir_threshold_ml) / r.programmed_rate_ml_per_day;
        let ahead = days(r.refill_due_at - r.measured_at) - to_threshold_days;
        assert!(
            ahead >= 2.0,
            "{id}: threshold only {ahead} days before the appointment"
        );
        let low_alarm = device_alarms(&rs, "LOW_RESERVOIR")[0];
        assert!(
            low_alarm < reprogram.refill_due_at && low_alarm < episode.window_end,
            "{id}"
        );
    }
}

#[test]
fn reprogram_with_a_moved_refill_brings_the_appointment_forward() {
    let (readings, _) = run(only(FaultKind::ReprogramMovedRefill, 8));
    for (id, rs) in by_pump(&readings) {
        let i = rs
            .iter()
            .position(|r| {
                r.events
                    .iter()
                    .any(|e| matches!(e, PumpEvent::Reprogram(_)))
            })
            .expect("a REPROGRAM event");
        assert!(rs[i].refill_due_at < rs[i - 1].refill_due_at, "{id}");
        assert!(rs[i].programmed_rate_ml_per_day > rs[i - 1].programmed_rate_ml_per_day);
    }
}

#[test]
fn occlusion_ramps_pressure_on_sensor_pumps_and_leaves_residual_on_valve_pumps() {
    let (readings, truth) = run(only(FaultKind::Occlusion, 14));
    let (mut sensor, mut valve) = (0, 0);
    for (id, rs) in by_pump(&readings) {
        let episode = one(&truth, &id, AlarmKind::Occlusion);
        if rs[0].catheter_pressure_kpa.is_some() {
            sensor += 1;
            let pressure = |from: DateTime<Utc>, to: DateTime<Utc>| {
                mean(
                    rs.iter()
                        .filter(|r| r.measured_at >= from && r.measured_at < to)
                        .filter_map(|r| r.catheter_pressure_kpa),
                )
            };
            let current = |from: DateTime<Utc>, to: DateTime<Utc>| {
                mean(
                    rs.iter()
                        .filter(|r| r.measured_at >= from && r.measured_at < to)
                        .filter_map(|r| r.motor_current_ma),
                )
            };
            let onset = episode.onset;
            let before = pressure(onset - Duration::days(2), onset);
            let day1 = pressure(onset + Duration::days(1), onset + Duration::days(2));
            let day3 = pressure(onset + Duration::days(3), onset + Duration::days(4));
            assert!(day1 > before + 4.0, "{id}: {before} -> {day1} kPa");
            assert!(day3 > before + 15.0, "{id}: {before} -> {day3} kPa");
            assert!(
                current(onset + Duration::days(3), onset + Duration::days(4))
                    > current(onset - Duration::days(2), onset) + 0.1,
                "{id}: motor current flat"
            );
        } else {
            valve += 1;
            let consequential = if rs[0].reservoir_capacity_ml > 20.0 {
                2.0
            } else {
                1.0
            };
            let found = events(&rs).any(|e| {
                matches!(e, PumpEvent::Refill(f) if f.at == episode.onset
                    && f.residual_measured_ml - f.residual_expected_ml > consequential)
            });
            assert!(
                found,
                "{id}: no consequential discrepancy at {}",
                episode.onset
            );
        }
    }
    assert!(
        sensor > 0 && valve > 0,
        "{sensor} sensor, {valve} valve pumps"
    );
}

#[test]
fn nominal_battery_reaches_eri_and_eos_follows_about_90_days_later() {
    let (readings, truth) = run(only(FaultKind::BatteryNominalEri, 8));
    for (id, rs) in by_pump(&readings) {
        let episode = one(&truth, &id, AlarmKind::BatteryEol);
        let eri = device_alarms(&rs, "ERI")[0];
        assert!(rs.iter().any(|r| r.eri), "{id}");
        assert!(episode.window_start <= eri - Duration::days(90), "{id}");
        assert!(episode.window_end > eri, "{id}");
        let eos = episode.harm_at.expect("harm at EOS");
        assert!(
            (80.0..=100.0).contains(&days(eos - eri)),
            "{id}: EOS {} days after ERI",
            days(eos - eri)
        );
        let first = &rs[0];
        let last = &rs[rs.len() - 1];
        let per_day =
            (first.battery_pct - last.battery_pct) / days(last.measured_at - first.measured_at);
        assert!(per_day < 0.065, "{id}: {per_day} %/day is not nominal");
    }
}

#[test]
fn premature_battery_drains_fast_with_low_battery_resets() {
    let (readings, truth) = run(only(FaultKind::BatteryPremature, 8));
    for (id, rs) in by_pump(&readings) {
        let episode = one(&truth, &id, AlarmKind::BatteryEol);
        let resets: Vec<_> = events(&rs)
            .filter_map(|e| match e {
                PumpEvent::LowBatteryReset(r) => Some(r.at),
                _ => None,
            })
            .collect();
        assert!(resets.len() >= 3, "{id}: {} resets", resets.len());
        assert!(
            resets.iter().all(|&at| at >= episode.onset),
            "{id}: reset before the short"
        );
        let after: Vec<_> = rs
            .iter()
            .filter(|r| r.measured_at > episode.onset && !r.eos)
            .collect();
        let per_day = (after[0].battery_pct - after[after.len() - 1].battery_pct)
            / days(after[after.len() - 1].measured_at - after[0].measured_at);
        assert!(per_day >= 0.2, "{id}: {per_day} %/day");
        assert!(
            !device_alarms(&rs, "ERI").is_empty(),
            "{id}: no ERI in the run"
        );
    }
}

#[test]
fn mri_stalls_recover_within_24_hours() {
    let (readings, truth) = run(only(FaultKind::MriStall, 8));
    assert!(truth.episodes.is_empty());
    for (id, rs) in by_pump(&readings) {
        let mri: Vec<_> = events(&rs)
            .filter_map(|e| match e {
                PumpEvent::Mri(m) => Some(m.at),
                _ => None,
            })
            .collect();
        assert_eq!(mri.len(), 1, "{id}");
        let stalls: Vec<_> = events(&rs)
            .filter_map(|e| match e {
                PumpEvent::MotorStall(s) => Some(s.at),
                _ => None,
            })
            .collect();
        assert!(stalls.len() >= 2, "{id}");
        assert!(
            stalls
                .iter()
                .all(|&s| s >= mri[0] && s - mri[0] <= Duration::hours(24)),
            "{id}: {stalls:?} after MRI at {}",
            mri[0]
        );
        let counted = rs[rs.len() - 1].motor_stall_count - rs[0].motor_stall_count;
        assert_eq!(counted as usize, stalls.len(), "{id}");
    }
}

#[test]
fn motor_stall_without_mri_is_labelled_as_occlusion() {
    let (readings, truth) = run(only(FaultKind::MotorStall, 8));
    for (id, rs) in by_pump(&readings) {
        let episode = one(&truth, &id, AlarmKind::Occlusion);
        assert!(!events(&rs).any(|e| matches!(e, PumpEvent::Mri(_))));
        let first_stall = events(&rs)
            .find_map(|e| match e {
                PumpEvent::MotorStall(s) => Some(s.at),
                _ => None,
            })
            .expect("stalls");
        assert_eq!(first_stall, episode.onset, "{id}");
        let stalls_in_window = events(&rs)
            .filter(|e| matches!(e, PumpEvent::MotorStall(s) if s.at <= episode.window_end))
            .count();
        assert!(stalls_in_window >= 3, "{id}: {stalls_in_window}");
    }
}

#[test]
fn clinician_boluses_spike_the_catheter_pressure() {
    let (readings, _) = run(only(FaultKind::BolusSpikes, 8));
    for (id, rs) in by_pump(&readings) {
        let mut pressures: Vec<f64> = rs.iter().filter_map(|r| r.catheter_pressure_kpa).collect();
        pressures.sort_by(f64::total_cmp);
        let median = pressures[pressures.len() / 2];
        let boluses: Vec<_> = events(&rs)
            .filter_map(|e| match e {
                PumpEvent::Bolus(b) if b.source == BolusSource::Clinician && b.granted => {
                    Some(b.at)
                }
                _ => None,
            })
            .collect();
        assert!(boluses.len() >= 3, "{id}");
        for at in boluses {
            let next = rs
                .iter()
                .find(|r| r.measured_at >= at)
                .expect("a reading after");
            let kpa = next.catheter_pressure_kpa.unwrap_or_default();
            assert!(
                kpa > median + 15.0,
                "{id}: {kpa} kPa after bolus, median {median}"
            );
        }
    }
}

/// Where each reading sits in the arrival stream, and the latest `measured_at` that
/// arrived before it.
fn arrival_lag(readings: &[Reading]) -> Vec<Duration> {
    let mut watermark = readings[0].measured_at;
    readings
        .iter()
        .map(|r| {
            watermark = watermark.max(r.measured_at);
            watermark - r.measured_at
        })
        .collect()
}

#[test]
fn backlog_outage_delivers_its_readings_late_and_complete() {
    let spec = only(FaultKind::GatewayOutageBacklog, 6);
    let fleet = Fleet::new(spec.clone());
    let outages: Vec<_> = fleet
        .pumps()
        .iter()
        .map(|p| {
            (
                p.pump_id().to_owned(),
                p.gateway_outage().expect("an outage"),
            )
        })
        .collect();
    let (readings, truth) = run(spec);
    let lag = arrival_lag(&readings);
    for (id, outage) in outages {
        assert!(outage.buffered);
        assert!(outage.end - outage.start > Duration::hours(16));
        let late: Vec<_> = readings
            .iter()
            .zip(&lag)
            .filter(|(r, l)| r.pump_id == id && **l > Duration::hours(12))
            .collect();
        assert!(!late.is_empty(), "{id}: nothing arrived late");
        assert!(
            late.iter().all(|(r, _)| outage.covers(r.measured_at)),
            "{id}"
        );
        let rs = &by_pump(&readings)[&id];
        for pair in rs.windows(2) {
            assert!(
                pair[1].measured_at - pair[0].measured_at < Duration::hours(2),
                "{id}: gap"
            );
        }
        let episode = one(&truth, &id, AlarmKind::TelemetryLost);
        let last_before = rs
            .iter()
            .rfind(|r| r.measured_at < outage.start)
            .expect("a reading before");
        assert_eq!(
            episode.onset,
            last_before.measured_at + Duration::hours(12),
            "{id}"
        );
    }
}

#[test]
fn lost_outage_leaves_a_gap_in_time_but_not_in_seq() {
    let (readings, truth) = run(only(FaultKind::GatewayOutageLost, 6));
    assert!(
        arrival_lag(&readings)
            .iter()
            .all(|l| *l < Duration::hours(1))
    );
    for (id, rs) in by_pump(&readings) {
        let gaps: Vec<_> = rs
            .windows(2)
            .filter(|p| p[1].measured_at - p[0].measured_at > Duration::hours(12))
            .collect();
        assert_eq!(gaps.len(), 1, "{id}");
        assert_eq!(gaps[0][1].seq, gaps[0][0].seq + 1, "{id}");
        let episode = one(&truth, &id, AlarmKind::TelemetryLost);
        assert_eq!(
            episode.onset,
            gaps[0][0].measured_at + Duration::hours(12),
            "{id}"
        );
        assert!(
            episode.window_end < gaps[0][1].measured_at,
            "{id}: back before the window closed"
        );
    }
}

#[test]
fn short_outage_arrives_late_but_never_looks_lost() {
    let (readings, _) = run(only(FaultKind::GatewayOutageShort, 6));
    let lag = arrival_lag(&readings);
    assert!(
        lag.iter().any(|l| *l > Duration::hours(1)),
        "no late arrival"
    );
    assert!(lag.iter().all(|l| *l < Duration::hours(12)));
}
