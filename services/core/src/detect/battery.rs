//! BATTERY_EOL: the pump's ERI/EOS flags and a robust trend of `battery_pct` projected
//! to the ERI level (which also catches premature depletion). Repeated low-battery
//! resets (the published signature of an internal short) are their own alarm,
//! LOW_BATTERY_RESETS: they often come months before ERI is near, and folded into
//! BATTERY_EOL they would hold that episode open from too early on.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::DetectorConfig;
use super::episode::{Episode, Finding, evidence, round2};
use crate::alarm::{AlarmEvent, AlarmKind, AlarmPriority};
use crate::reading::Reading;

/// Most fuel-gauge values kept for one day's median (96 at a 15-minute cadence).
const MAX_SAMPLES_PER_DAY: usize = 192;
/// Resets within this many days that count as repeated.
const RESET_WINDOW_DAYS: i64 = 7;
const RESETS_TO_ALARM: usize = 2;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct BatteryRule {
    episode: Episode,
    resets_episode: Episode,
    /// Daily medians: (day number, pct), oldest first, bounded by the trend window.
    days: VecDeque<(i64, f64)>,
    today: Option<i64>,
    today_values: Vec<f64>,
    /// Days to ERI from the latest trend fit.
    projected_days_to_eri: Option<f64>,
    resets: VecDeque<DateTime<Utc>>,
    last_pct: Option<f64>,
    /// A new battery was seen since the last evaluation (clears the resets alarm).
    #[serde(skip)]
    replaced: bool,
}

impl BatteryRule {
    pub fn on_reset(&mut self, at: DateTime<Utc>) {
        self.resets.push_back(at);
        while self
            .resets
            .front()
            .is_some_and(|&t| (at - t).num_days() >= RESET_WINDOW_DAYS)
        {
            self.resets.pop_front();
        }
    }

    fn add_sample(&mut self, r: &Reading, config: &DetectorConfig) {
        // A replaced or recharged pump: start the trend afresh.
        if self.last_pct.is_some_and(|p| r.battery_pct > p + 20.0) {
            self.replaced = true;
            self.days.clear();
            self.resets.clear();
            self.today_values.clear();
            self.projected_days_to_eri = None;
        }
        self.last_pct = Some(r.battery_pct);
        let day = r.measured_at.timestamp().div_euclid(86_400);
        if self.today != Some(day) {
            if let Some(d) = self.today
                && let Some(m) = median(&mut self.today_values)
            {
                self.days.push_back((d, m));
                while self.days.len() as f64 > config.battery_trend_days {
                    self.days.pop_front();
                }
                self.projected_days_to_eri = self.fit(config);
            }
            self.today = Some(day);
            self.today_values.clear();
        }
        if self.today_values.len() < MAX_SAMPLES_PER_DAY {
            self.today_values.push(r.battery_pct);
        }
    }

    /// Theil-Sen slope of the daily medians, projected from their median level.
    fn fit(&self, config: &DetectorConfig) -> Option<f64> {
        let (first, last) = (self.days.front()?, self.days.back()?);
        if ((last.0 - first.0) as f64) < config.battery_trend_min_days {
            return None;
        }
        let mut slopes = Vec::with_capacity(self.days.len() * self.days.len() / 2);
        for (i, a) in self.days.iter().enumerate() {
            for b in self.days.iter().skip(i + 1) {
                slopes.push((b.1 - a.1) / (b.0 - a.0) as f64);
            }
        }
        let slope = median(&mut slopes)?;
        if slope >= 0.0 {
            return None;
        }
        let recent: Vec<f64> = self.days.iter().rev().take(3).map(|d| d.1).collect();
        let level = recent.iter().sum::<f64>() / recent.len() as f64;
        Some(((level - config.eri_battery_pct) / -slope).max(0.0))
    }

    pub fn evaluate(
        &mut self,
        pump_id: &str,
        r: &Reading,
        clock: DateTime<Utc>,
        config: &DetectorConfig,
        out: &mut Vec<AlarmEvent>,
    ) {
        self.add_sample(r, config);
        let horizon_days = config.battery_eri_horizon.num_seconds() as f64 / 86_400.0;
        let projected = self.projected_days_to_eri.filter(|d| *d <= horizon_days);
        self.evaluate_resets(pump_id, r, clock, out);
        let (priority, why) = if r.eos {
            (
                AlarmPriority::High,
                "has reached end of service (EOS): the pump stops; replace it now".to_owned(),
            )
        } else if r.eri {
            (AlarmPriority::Medium, "reports its elective replacement indicator (ERI): end of service follows in about 90 days; schedule replacement".to_owned())
        } else if let Some(days) = projected {
            (
                if days <= 30.0 {
                    AlarmPriority::Medium
                } else {
                    AlarmPriority::Low
                },
                format!(
                    "battery is projected to reach ERI in about {:.0} days at its recent rate of depletion; schedule replacement",
                    days
                ),
            )
        } else {
            return;
        };
        if !self.episode.needs_event(priority) {
            return;
        }
        let mut ev = evidence([
            ("battery_pct", r.battery_pct.into()),
            ("battery_v", r.battery_v.into()),
            ("low_battery_resets_7d", (self.resets.len() as f64).into()),
        ]);
        if let Some(days) = self.projected_days_to_eri {
            ev.insert("projected_days_to_eri".into(), round2(days).into());
        }
        let finding = Finding {
            priority,
            onset: None,
            message: format!("Pump {pump_id} {why}."),
            evidence: ev,
        };
        self.episode
            .hold(pump_id, AlarmKind::BatteryEol, clock, finding, out);
    }
}

impl BatteryRule {
    /// LOW_BATTERY_RESETS: raised at the second reset within a week; a short does not
    /// heal, so it stays open until a new battery is seen.
    fn evaluate_resets(
        &mut self,
        pump_id: &str,
        r: &Reading,
        clock: DateTime<Utc>,
        out: &mut Vec<AlarmEvent>,
    ) {
        if std::mem::take(&mut self.replaced) {
            self.resets_episode.clear(
                pump_id,
                AlarmKind::LowBatteryResets,
                clock,
                format!("Pump {pump_id} has a new battery."),
                out,
            );
        }
        let count = self.resets.len();
        if count < RESETS_TO_ALARM || !self.resets_episode.needs_event(AlarmPriority::Medium) {
            return;
        }
        let finding = Finding {
            priority: AlarmPriority::Medium,
            onset: self.resets.front().copied(),
            message: format!(
                "Pump {pump_id} reset {count} times on low battery voltage within a week, a published sign of an internal short that can stop the pump; check the pump and plan its replacement."
            ),
            evidence: evidence([
                ("low_battery_resets_7d", (count as f64).into()),
                ("battery_pct", r.battery_pct.into()),
                ("battery_v", r.battery_v.into()),
            ]),
        };
        self.resets_episode
            .hold(pump_id, AlarmKind::LowBatteryResets, clock, finding, out);
    }
}

/// The median of `values` (reordered in place); None when empty.
pub(super) fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    Some(*m)
}
