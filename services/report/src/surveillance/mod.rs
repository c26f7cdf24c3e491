//! `fleetctl report surveillance`: per model and firmware, what the fleet did in a
//! window. Definitions (also in docs/surveillance.md, and in every rendered report):
//!
//! - **pump-days**: `pump_day` rows (a pump with at least one archived reading on a UTC
//!   day), counted in the cohort of that day's model and firmware;
//! - **alarm rates**: alarm episodes (their `RAISED` event) detected in the window, per
//!   1,000 pump-days, each in the cohort the pump was in on that day;
//! - **battery drain**: per pump observed for at least [`MIN_SPAN_DAYS`], the fuel gauge
//!   lost per year between its first and last reading in the window; the cohort's
//!   median;
//! - **occlusion incidence**: OCCLUSION episodes per 100 pump-years, and the share of
//!   pumps with at least one;
//! - **survival free of failure** (Kaplan-Meier, log-log 95 % intervals): from a
//!   pump's first reading in the window to the first of: a motor stall not explained by
//!   an MRI (none at or in the [`MRI_RECOVERY_HOURS`] after a scan), a premature ERI
//!   (see [`fold`]), an OCCLUSION episode; censored at its last reading. Per-pump
//!   figures (drain, survival, pumps affected) count in the cohort the pump entered
//!   the window in.

mod fold;
mod render;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;

pub use fold::{AlarmRow, DayRow, PumpFlags, Surveillance};
pub use render::{Format, render};

use super::{ReportError, Window};

/// A pump must be observed this long for its battery drain to count.
pub const MIN_SPAN_DAYS: f64 = 7.0;
/// Battery drain at ERI, over the trailing [`TRAILING_DAYS`], at or above which the ERI
/// is premature: twice the nominal 20 %/year of a battery lasting five years (the short
/// end of the 5-7 years in docs/domain).
pub const PREMATURE_DRAIN_PCT_PER_YEAR: f64 = 40.0;
pub const TRAILING_DAYS: i64 = 30;
/// Motor stalls this long after an MRI scan ends are expected (the motor recovers).
pub const MRI_RECOVERY_HOURS: i64 = 24;
/// Survival is also read off at these follow-up times (days), where observed.
pub const SURVIVAL_AT_DAYS: [f64; 4] = [30.0, 90.0, 180.0, 365.0];

/// The whole report, as rendered to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct SurveillanceReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub cohorts: Vec<Cohort>,
    /// Alarm episodes of pumps with no reading in the window (so no cohort), per kind.
    pub unattributed_alarms: BTreeMap<String, u64>,
}

/// One model and firmware.
#[derive(Debug, Clone, Serialize)]
pub struct Cohort {
    pub model: String,
    pub firmware: String,
    /// Pumps with at least one pump-day in this cohort.
    pub pumps: usize,
    pub pump_days: u64,
    /// Per alarm kind.
    pub alarms: BTreeMap<String, AlarmRate>,
    pub battery_drain: Option<BatteryDrain>,
    pub occlusion: Occlusion,
    pub survival: Survival,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AlarmRate {
    pub episodes: u64,
    pub per_1000_pump_days: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BatteryDrain {
    pub median_pct_per_year: f64,
    /// Pumps observed long enough to count.
    pub pumps: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Occlusion {
    pub episodes: u64,
    pub per_100_pump_years: f64,
    /// Pumps that entered the window in this cohort and had at least one episode.
    pub pumps_affected: usize,
    pub pumps_entered: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Survival {
    /// Pumps that entered the window in this cohort.
    pub pumps: usize,
    pub failures: Failures,
    /// One step per distinct failure time.
    pub steps: Vec<super::survival::Step>,
    /// The curve read off at [`SURVIVAL_AT_DAYS`], up to the longest follow-up.
    pub at: Vec<SurvivalAt>,
    /// The longest time a pump of the cohort was followed, in days.
    pub max_follow_up_days: f64,
}

/// First failures by cause (a pump counts once, for the cause that came first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Failures {
    pub motor_stall: usize,
    pub premature_eri: usize,
    pub occlusion: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SurvivalAt {
    pub days: f64,
    pub at_risk: usize,
    pub survival: f64,
    pub lower: f64,
    pub upper: f64,
}

/// Reads the archive and computes the report. The day rows are streamed in pump order
/// and folded as they come, so memory grows with the number of pumps, not of days.
pub async fn build(pool: &PgPool, window: Window) -> Result<SurveillanceReport, ReportError> {
    let (from_day, to_day) = window.days();
    let alarms = raised_alarms(pool, window).await?;
    let flags = pump_flags(pool, window).await?;
    let mut fold = Surveillance::new(window, alarms, flags);
    let mut days = sqlx::query_as::<_, DayTuple>(
        "SELECT pump_id, day, model, firmware, first_at, last_at, battery_pct_first,
                battery_pct_last, eri
         FROM pump_day WHERE day >= $1 AND day < $2
         ORDER BY pump_id, day",
    )
    .bind(from_day)
    .bind(to_day)
    .fetch(pool);
    while let Some(row) = days.try_next().await? {
        fold.push_day(DayRow::from(row));
    }
    Ok(fold.finish())
}

type DayTuple = (
    String,
    NaiveDate,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    f64,
    f64,
    bool,
);

impl From<DayTuple> for DayRow {
    fn from(row: DayTuple) -> Self {
        let (pump_id, day, model, firmware, first_at, last_at, first_pct, last_pct, eri) = row;
        Self {
            pump_id,
            day,
            model,
            firmware,
            first_at,
            last_at,
            battery_pct_first: first_pct,
            battery_pct_last: last_pct,
            eri,
        }
    }
}

/// Alarm episodes detected in the window: their RAISED event.
async fn raised_alarms(pool: &PgPool, window: Window) -> Result<Vec<AlarmRow>, ReportError> {
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT pump_id, kind, detected_at FROM alarm_event
         WHERE state = 'RAISED' AND detected_at >= $1 AND detected_at < $2",
    )
    .bind(window.from)
    .bind(window.to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(pump_id, kind, detected_at)| AlarmRow {
            pump_id,
            kind,
            detected_at,
        })
        .collect())
}

/// Per pump, the first motor stall in the window that no MRI explains, and the first
/// low-battery reset. The MRI may lie before the window. The lower bound on the MRI's
/// time (7 days before the stall) lets the index on (pump_id, at) do the work; no scan
/// lasts days.
async fn pump_flags(
    pool: &PgPool,
    window: Window,
) -> Result<HashMap<String, PumpFlags>, ReportError> {
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT s.pump_id, 'stall', min(s.at) FROM pump_event s
         WHERE s.type = 'MOTOR_STALL' AND s.at >= $1 AND s.at < $2
           AND NOT EXISTS (
             SELECT 1 FROM pump_event m
             WHERE m.pump_id = s.pump_id AND m.type = 'MRI'
               AND m.at <= s.at AND m.at > s.at - interval '7 days'
               AND s.at <= m.at
                   + make_interval(secs => coalesce((m.detail->>'duration_s')::float8, 0))
                   + make_interval(hours => $3))
         GROUP BY s.pump_id
         UNION ALL
         SELECT pump_id, 'reset', min(at) FROM pump_event
         WHERE type = 'LOW_BATTERY_RESET' AND at >= $1 AND at < $2
         GROUP BY pump_id",
    )
    .bind(window.from)
    .bind(window.to)
    .bind(MRI_RECOVERY_HOURS as i32)
    .fetch_all(pool)
    .await?;
    let mut flags: HashMap<String, PumpFlags> = HashMap::new();
    for (pump_id, what, at) in rows {
        let entry = flags.entry(pump_id).or_default();
        match what.as_str() {
            "stall" => entry.first_unexplained_stall = Some(at),
            _ => entry.first_battery_reset = Some(at),
        }
    }
    Ok(flags)
}
