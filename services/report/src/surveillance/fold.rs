//! The surveillance figures, folded from one pass over the day rollup in pump order.
//!
//! Premature ERI: the first day a pump reports ERI in the window, its fuel gauge lost
//! [`PREMATURE_DRAIN_PCT_PER_YEAR`] or more per year over the trailing
//! [`TRAILING_DAYS`] (at least [`MIN_SPAN_DAYS`] of them observed), or it logged a
//! low-battery reset (the published signature of internal shorting) before the end of
//! that day. A pump that reaches ERI at a normal pace is at the end of a normal life,
//! not a failure.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::{
    AlarmRate, BatteryDrain, Cohort, Failures, MIN_SPAN_DAYS, Occlusion,
    PREMATURE_DRAIN_PCT_PER_YEAR, SURVIVAL_AT_DAYS, SurveillanceReport, Survival, SurvivalAt,
    TRAILING_DAYS,
};
use crate::Window;
use crate::survival::{Observation, Step, Z_95, kaplan_meier};

const DAYS_PER_YEAR: f64 = 365.25;
const OCCLUSION: &str = "OCCLUSION";

/// One `pump_day` row.
#[derive(Debug, Clone, PartialEq)]
pub struct DayRow {
    pub pump_id: String,
    pub day: NaiveDate,
    pub model: String,
    pub firmware: String,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub battery_pct_first: f64,
    pub battery_pct_last: f64,
    pub eri: bool,
}

/// One alarm episode, at its RAISED event.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRow {
    pub pump_id: String,
    pub kind: String,
    pub detected_at: DateTime<Utc>,
}

/// What the pump's event log says about failure, from [`super::pump_flags`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PumpFlags {
    pub first_unexplained_stall: Option<DateTime<Utc>>,
    pub first_battery_reset: Option<DateTime<Utc>>,
}

type CohortKey = (String, String);

#[derive(Debug, Default)]
struct CohortTotals {
    pumps: HashSet<String>,
    pump_days: u64,
    alarms: BTreeMap<String, u64>,
    drains: Vec<f64>,
    entered: usize,
    occlusion_pumps: usize,
    observations: Vec<Observation>,
    failures: Failures,
}

/// One pump while its days stream past.
#[derive(Debug)]
struct PumpTrack {
    pump_id: String,
    entry: CohortKey,
    /// The cohort of the latest day seen: alarms up to the next day count there.
    current: CohortKey,
    entered_at: DateTime<Utc>,
    first_pct: f64,
    left_at: DateTime<Utc>,
    last_pct: f64,
    /// (time, fuel gauge) at the start of each of the last TRAILING_DAYS days.
    trailing: VecDeque<(DateTime<Utc>, f64)>,
    eri: Option<EriSeen>,
    /// This pump's alarm episodes in time order, and how many are attributed yet.
    alarms: Vec<AlarmRow>,
    attributed: usize,
}

/// The first day a pump reported ERI in the window.
#[derive(Debug, Clone, Copy)]
struct EriSeen {
    /// The first reading of that day (ERI is dated to the day).
    at: DateTime<Utc>,
    /// Whether the trailing drain was premature; None with too little history to tell.
    premature_drain: Option<bool>,
    /// The end of that day: a low-battery reset before it makes the ERI premature.
    day_end: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
enum Cause {
    MotorStall,
    PrematureEri,
    Occlusion,
}

/// Accumulates the report; feed it the day rows ordered by (pump_id, day).
#[derive(Debug)]
pub struct Surveillance {
    window: Window,
    cohorts: BTreeMap<CohortKey, CohortTotals>,
    alarms_by_pump: HashMap<String, Vec<AlarmRow>>,
    flags: HashMap<String, PumpFlags>,
    pump: Option<PumpTrack>,
}

impl Surveillance {
    pub fn new(window: Window, alarms: Vec<AlarmRow>, flags: HashMap<String, PumpFlags>) -> Self {
        let mut alarms_by_pump: HashMap<String, Vec<AlarmRow>> = HashMap::new();
        for alarm in alarms {
            alarms_by_pump
                .entry(alarm.pump_id.clone())
                .or_default()
                .push(alarm);
        }
        for list in alarms_by_pump.values_mut() {
            list.sort_by_key(|a| a.detected_at);
        }
        Self {
            window,
            cohorts: BTreeMap::new(),
            alarms_by_pump,
            flags,
            pump: None,
        }
    }

    pub fn push_day(&mut self, row: DayRow) {
        if self.pump.as_ref().is_some_and(|p| p.pump_id != row.pump_id) {
            self.finish_pump();
        }
        let key = (row.model.clone(), row.firmware.clone());
        let totals = self.cohorts.entry(key.clone()).or_default();
        totals.pump_days += 1;
        if !totals.pumps.contains(&row.pump_id) {
            totals.pumps.insert(row.pump_id.clone());
        }
        match &mut self.pump {
            Some(pump) => {
                // Alarms before this day belong to the cohort of the day before.
                attribute_alarms(pump, &mut self.cohorts, Some(row.day));
                pump.current = key;
                pump.left_at = row.last_at;
                pump.last_pct = row.battery_pct_last;
            }
            None => {
                let alarms = self.alarms_by_pump.remove(&row.pump_id).unwrap_or_default();
                self.pump = Some(PumpTrack {
                    pump_id: row.pump_id.clone(),
                    entry: key.clone(),
                    current: key,
                    entered_at: row.first_at,
                    first_pct: row.battery_pct_first,
                    left_at: row.last_at,
                    last_pct: row.battery_pct_last,
                    trailing: VecDeque::new(),
                    eri: None,
                    alarms,
                    attributed: 0,
                });
            }
        }
        if let Some(pump) = &mut self.pump {
            track_battery(pump, &row);
        }
    }

    pub fn finish(mut self) -> SurveillanceReport {
        self.finish_pump();
        let mut unattributed = BTreeMap::new();
        for alarm in self.alarms_by_pump.values().flatten() {
            *unattributed.entry(alarm.kind.clone()).or_insert(0) += 1;
        }
        SurveillanceReport {
            from: self.window.from,
            to: self.window.to,
            cohorts: self
                .cohorts
                .into_iter()
                .map(|(key, totals)| cohort(key, totals))
                .collect(),
            unattributed_alarms: unattributed,
        }
    }

    fn finish_pump(&mut self) {
        let Some(mut pump) = self.pump.take() else {
            return;
        };
        attribute_alarms(&mut pump, &mut self.cohorts, None);
        let flags = self.flags.get(&pump.pump_id).copied().unwrap_or_default();
        let totals = self.cohorts.entry(pump.entry.clone()).or_default();
        totals.entered += 1;
        let span_days = days_between(pump.entered_at, pump.left_at);
        if span_days >= MIN_SPAN_DAYS {
            totals
                .drains
                .push((pump.first_pct - pump.last_pct) / span_days * DAYS_PER_YEAR);
        }
        let first_occlusion = pump
            .alarms
            .iter()
            .find(|a| a.kind == OCCLUSION)
            .map(|a| a.detected_at);
        if first_occlusion.is_some() {
            totals.occlusion_pumps += 1;
        }
        let premature_eri = pump.eri.and_then(|eri| {
            let reset_before = flags.first_battery_reset.is_some_and(|r| r < eri.day_end);
            (eri.premature_drain == Some(true) || reset_before).then_some(eri.at)
        });
        let first = [
            (flags.first_unexplained_stall, Cause::MotorStall),
            (premature_eri, Cause::PrematureEri),
            (first_occlusion, Cause::Occlusion),
        ]
        .into_iter()
        .filter_map(|(at, cause)| at.filter(|&t| t < self.window.to).map(|t| (t, cause)))
        .min_by_key(|(t, _)| *t);
        let observation = match first {
            Some((at, cause)) => {
                match cause {
                    Cause::MotorStall => totals.failures.motor_stall += 1,
                    Cause::PrematureEri => totals.failures.premature_eri += 1,
                    Cause::Occlusion => totals.failures.occlusion += 1,
                }
                Observation {
                    days: days_between(pump.entered_at, at).max(0.0),
                    failed: true,
                }
            }
            None => Observation {
                days: span_days,
                failed: false,
            },
        };
        totals.observations.push(observation);
    }
}

/// Counts the pump's not yet attributed alarms detected before `before` (all of them
/// when None) in the cohort of its latest day.
fn attribute_alarms(
    pump: &mut PumpTrack,
    cohorts: &mut BTreeMap<CohortKey, CohortTotals>,
    before: Option<NaiveDate>,
) {
    let totals = cohorts.entry(pump.current.clone()).or_default();
    while let Some(alarm) = pump.alarms.get(pump.attributed) {
        if before.is_some_and(|day| alarm.detected_at.date_naive() >= day) {
            break;
        }
        *totals.alarms.entry(alarm.kind.clone()).or_insert(0) += 1;
        pump.attributed += 1;
    }
}

/// Keeps the trailing battery history and notes the first ERI day.
fn track_battery(pump: &mut PumpTrack, row: &DayRow) {
    pump.trailing
        .push_back((row.first_at, row.battery_pct_first));
    let horizon = row.first_at - Duration::days(TRAILING_DAYS);
    while pump.trailing.front().is_some_and(|(at, _)| *at < horizon) {
        pump.trailing.pop_front();
    }
    if pump.eri.is_some() || !row.eri {
        return;
    }
    let by_drain = pump.trailing.front().and_then(|&(since, pct)| {
        let span = days_between(since, row.last_at);
        (span >= MIN_SPAN_DAYS).then(|| {
            (pct - row.battery_pct_last) / span * DAYS_PER_YEAR >= PREMATURE_DRAIN_PCT_PER_YEAR
        })
    });
    let day_end = (row.day + chrono::Days::new(1))
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    pump.eri = Some(EriSeen {
        at: row.first_at,
        premature_drain: by_drain,
        day_end,
    });
}

fn cohort((model, firmware): CohortKey, totals: CohortTotals) -> Cohort {
    let pump_days = totals.pump_days;
    let per = |episodes: u64, unit: f64| {
        if pump_days == 0 {
            0.0
        } else {
            episodes as f64 / pump_days as f64 * unit
        }
    };
    let alarms = totals
        .alarms
        .iter()
        .map(|(kind, &episodes)| {
            (
                kind.clone(),
                AlarmRate {
                    episodes,
                    per_1000_pump_days: per(episodes, 1000.0),
                },
            )
        })
        .collect();
    let occlusion_episodes = totals.alarms.get(OCCLUSION).copied().unwrap_or(0);
    let steps = kaplan_meier(&totals.observations, Z_95);
    let max_follow_up_days = totals
        .observations
        .iter()
        .map(|o| o.days)
        .fold(0.0, f64::max);
    Cohort {
        model,
        firmware,
        pumps: totals.pumps.len(),
        pump_days,
        alarms,
        battery_drain: median(totals.drains.clone()).map(|m| BatteryDrain {
            median_pct_per_year: m,
            pumps: totals.drains.len(),
        }),
        occlusion: Occlusion {
            episodes: occlusion_episodes,
            per_100_pump_years: per(occlusion_episodes, 100.0 * DAYS_PER_YEAR),
            pumps_affected: totals.occlusion_pumps,
            pumps_entered: totals.entered,
        },
        survival: Survival {
            pumps: totals.entered,
            failures: totals.failures,
            at: survival_at(&steps, &totals.observations, max_follow_up_days),
            steps,
            max_follow_up_days,
        },
    }
}

/// The curve read off at fixed follow-up times the cohort reached.
fn survival_at(steps: &[Step], observations: &[Observation], max_days: f64) -> Vec<SurvivalAt> {
    SURVIVAL_AT_DAYS
        .iter()
        .filter(|&&t| t <= max_days)
        .map(|&t| {
            let step = steps.iter().take_while(|s| s.days <= t).last();
            SurvivalAt {
                days: t,
                at_risk: observations.iter().filter(|o| o.days >= t).count(),
                survival: step.map_or(1.0, |s| s.survival),
                lower: step.map_or(1.0, |s| s.lower),
                upper: step.map_or(1.0, |s| s.upper),
            }
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn days_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 86_400_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2026, 3, 1)
            .and_then(|d| d.checked_add_days(chrono::Days::new(u64::from(day))))
            .and_then(|d| d.and_hms_opt(hour, 0, 0))
            .expect("valid time")
            .and_utc()
    }

    fn window() -> Window {
        Window::new(at(0, 0), at(100, 0)).expect("window")
    }

    /// `days` consecutive days from day `start`, the gauge falling `per_day` a day from
    /// `pct`; ERI from day `eri_from` on.
    fn days(
        pump: &str,
        firmware: &str,
        start: u32,
        count: u32,
        pct: f64,
        per_day: f64,
        eri_from: Option<u32>,
    ) -> Vec<DayRow> {
        (start..start + count)
            .map(|d| {
                let gauge = pct - per_day * f64::from(d - start);
                DayRow {
                    pump_id: pump.into(),
                    day: at(d, 0).date_naive(),
                    model: "ITP-40".into(),
                    firmware: firmware.into(),
                    first_at: at(d, 0),
                    last_at: at(d, 23),
                    battery_pct_first: gauge,
                    battery_pct_last: gauge - per_day * 23.0 / 24.0,
                    eri: eri_from.is_some_and(|e| d >= e),
                }
            })
            .collect()
    }

    fn alarm(pump: &str, kind: &str, day: u32) -> AlarmRow {
        AlarmRow {
            pump_id: pump.into(),
            kind: kind.into(),
            detected_at: at(day, 12),
        }
    }

    fn run(
        rows: Vec<DayRow>,
        alarms: Vec<AlarmRow>,
        flags: &[(&str, PumpFlags)],
    ) -> SurveillanceReport {
        let flags = flags.iter().map(|(p, f)| ((*p).to_owned(), *f)).collect();
        let mut fold = Surveillance::new(window(), alarms, flags);
        for row in rows {
            fold.push_day(row);
        }
        fold.finish()
    }

    #[test]
    fn exposure_and_alarm_rates_follow_the_firmware_of_each_day() {
        // Pump A: 10 days on 1.0, then 10 on 2.0; an occlusion on day 3 and a low
        // reservoir on day 15. Pump B: 20 days on 2.0, no alarm. Pump C: no readings.
        let mut rows = days("A", "1.0", 0, 10, 80.0, 0.05, None);
        rows.extend(days("A", "2.0", 10, 10, 79.5, 0.05, None));
        rows.extend(days("B", "2.0", 0, 20, 60.0, 0.05, None));
        let alarms = vec![
            alarm("A", "OCCLUSION", 3),
            alarm("A", "LOW_RESERVOIR", 15),
            alarm("C", "TELEMETRY_LOST", 5),
        ];
        let report = run(rows, alarms, &[]);
        let [v1, v2] = &report.cohorts[..] else {
            panic!("two cohorts, got {:?}", report.cohorts);
        };
        assert_eq!(
            (v1.firmware.as_str(), v1.pumps, v1.pump_days),
            ("1.0", 1, 10)
        );
        assert_eq!(
            (v2.firmware.as_str(), v2.pumps, v2.pump_days),
            ("2.0", 2, 30)
        );
        assert_eq!(v1.alarms["OCCLUSION"].episodes, 1);
        assert_eq!(v1.alarms["OCCLUSION"].per_1000_pump_days, 100.0);
        assert!(!v1.alarms.contains_key("LOW_RESERVOIR"));
        assert_eq!(v2.alarms["LOW_RESERVOIR"].episodes, 1);
        assert!((v2.alarms["LOW_RESERVOIR"].per_1000_pump_days - 1000.0 / 30.0).abs() < 1e-9);
        assert_eq!(report.unattributed_alarms["TELEMETRY_LOST"], 1);
        // Per-pump figures go to the cohort the pump entered in: A counts under 1.0.
        assert_eq!(v1.occlusion.pumps_affected, 1);
        assert_eq!(v1.occlusion.pumps_entered, 1);
        assert_eq!(v2.occlusion.pumps_entered, 1);
        assert_eq!(v1.survival.failures.occlusion, 1);
        assert_eq!(v1.survival.steps[0].survival, 0.0);
        assert!((v1.survival.steps[0].days - 3.5).abs() < 1e-9);
        assert_eq!(v2.survival.steps, vec![]);
    }

    #[test]
    fn battery_drain_is_the_median_of_pumps_observed_a_week_or_more() {
        // 0.05 %/day and 0.1 %/day over 20 days; a 5-day pump is too short to count.
        let mut rows = days("A", "1.0", 0, 20, 80.0, 0.05, None);
        rows.extend(days("B", "1.0", 0, 20, 80.0, 0.1, None));
        rows.extend(days("C", "1.0", 0, 5, 80.0, 5.0, None));
        let report = run(rows, vec![], &[]);
        let drain = report.cohorts[0].battery_drain.expect("a drain");
        assert_eq!(drain.pumps, 2);
        let expected = (0.05 + 0.1) / 2.0 * DAYS_PER_YEAR;
        assert!(
            (drain.median_pct_per_year - expected).abs() < 0.01,
            "{drain:?} against {expected}"
        );
    }

    #[test]
    fn eri_is_a_failure_only_when_premature() {
        // Fast drain (0.3 %/day, 110 %/year) to ERI on day 40: premature. Normal drain
        // (0.05 %/day) to ERI on day 40: end of a normal life. Normal drain with a
        // low-battery reset before ERI: premature. ERI on entry (no history) without a
        // reset: cannot be told, not counted.
        let mut rows = days("FAST", "1.0", 0, 60, 20.0, 0.3, Some(40));
        rows.extend(days("NORMAL", "1.0", 0, 60, 5.0, 0.05, Some(40)));
        rows.extend(days("RESET", "1.0", 0, 60, 5.0, 0.05, Some(40)));
        rows.extend(days("ENTRY", "1.0", 0, 60, 2.0, 0.05, Some(0)));
        let reset = PumpFlags {
            first_battery_reset: Some(at(39, 4)),
            first_unexplained_stall: None,
        };
        let report = run(rows, vec![], &[("RESET", reset)]);
        let survival = &report.cohorts[0].survival;
        assert_eq!(survival.failures.premature_eri, 2);
        let steps: Vec<(f64, usize, usize)> = survival
            .steps
            .iter()
            .map(|s| (s.days, s.at_risk, s.failures))
            .collect();
        assert_eq!(steps, vec![(40.0, 4, 2)]);
        assert!((survival.steps[0].survival - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_first_failure_counts_and_follow_up_ends_at_the_last_reading() {
        // A stall on day 5 before an occlusion on day 8: one failure, a stall.
        let stall = PumpFlags {
            first_unexplained_stall: Some(at(5, 0)),
            first_battery_reset: None,
        };
        let mut rows = days("A", "1.0", 0, 30, 80.0, 0.05, None);
        rows.extend(days("B", "1.0", 0, 50, 80.0, 0.05, None));
        let report = run(rows, vec![alarm("A", "OCCLUSION", 8)], &[("A", stall)]);
        let survival = &report.cohorts[0].survival;
        assert_eq!(
            survival.failures,
            Failures {
                motor_stall: 1,
                premature_eri: 0,
                occlusion: 0
            }
        );
        assert!((survival.max_follow_up_days - (49.0 + 23.0 / 24.0)).abs() < 1e-9);
        assert_eq!(survival.at.len(), 1, "only 30 days were reached");
        assert_eq!(survival.at[0].at_risk, 1);
        assert_eq!(survival.at[0].survival, 0.5);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
