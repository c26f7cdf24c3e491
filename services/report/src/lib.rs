//! Reports over the archive for the manufacturer's post-market surveillance, for
//! `fleetctl report` and the fleet API's pump timeline:
//!
//! - [`surveillance`]: per model and firmware, exposure (pump-days), alarm rates,
//!   battery drain, occlusion incidence and survival free of failure;
//! - [`pump`]: one pump's timeline, for "what happened before this failure";
//! - [`survival`]: the Kaplan-Meier statistics the first rests on;
//! - [`chart`]: the SVG drawings of both.
//!
//! Both reports read only the archive's tables (`pump_day`, `pump_event`,
//! `alarm_event`, `reading`, and the notifier's `page` and `acknowledgement`), with
//! queries that run the same on plain PostgreSQL and on TimescaleDB.

pub mod chart;
pub mod pump;
pub mod surveillance;
pub mod survival;

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

/// A report's time window: from `from` (included) up to `to` (excluded), UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// Refuses an empty or reversed window, naming both ends.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Self, ReportError> {
        if from >= to {
            return Err(ReportError::BadWindow(format!(
                "--from ({}) must be before --to ({}); the window is [from, to)",
                from.to_rfc3339(),
                to.to_rfc3339()
            )));
        }
        Ok(Self { from, to })
    }

    /// The UTC days the window covers: `pump_day` rows with `from_day <= day < to_day`.
    /// A window that ends part-way through a day includes that day.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        let to_day = if self.to.time() == NaiveTime::MIN {
            self.to.date_naive()
        } else {
            self.to.date_naive() + chrono::Days::new(1)
        };
        (self.from.date_naive(), to_day)
    }

    pub fn length_days(&self) -> f64 {
        (self.to - self.from).num_seconds() as f64 / 86_400.0
    }
}

/// `fleetctl report surveillance`: the report in `format` on `out`, the survival chart
/// to `svg`.
pub async fn write_surveillance(
    database_url: &str,
    window: Window,
    format: surveillance::Format,
    svg: &Path,
    out: &mut impl Write,
) -> Result<(), ReportError> {
    let pool = connect(database_url).await?;
    let report = surveillance::build(&pool, window).await?;
    let curves: Vec<chart::Curve> = report
        .cohorts
        .iter()
        .map(|c| chart::Curve {
            label: format!("{} {} ({} pumps)", c.model, c.firmware, c.survival.pumps),
            steps: &c.survival.steps,
            max_days: c.survival.max_follow_up_days,
        })
        .collect();
    let drawing =
        chart::survival_svg(&curves).map_err(|e| ReportError::output("the survival chart", e))?;
    write_file(svg, &drawing)?;
    let text = surveillance::render(&report, format, Some(&svg.display().to_string()));
    out.write_all(text.as_bytes())
        .map_err(|e| ReportError::output("the report", e))
}

/// `fleetctl report pump`: the timeline CSV to `csv` (or `out` when None), the chart to
/// `svg`. Returns how many rows the timeline has.
pub async fn write_pump(
    database_url: &str,
    pump_id: &str,
    window: Window,
    csv: Option<&Path>,
    svg: &Path,
    out: &mut impl Write,
) -> Result<usize, ReportError> {
    let pool = connect(database_url).await?;
    let timeline = pump::build(&pool, pump_id, window).await?;
    let table = timeline.to_csv()?;
    write_file(svg, &timeline.to_svg()?)?;
    match csv {
        Some(path) => write_file(path, &table)?,
        None => out
            .write_all(table.as_bytes())
            .map_err(|e| ReportError::output("the timeline", e))?,
    }
    Ok(timeline.rows.len())
}

async fn connect(database_url: &str) -> Result<sqlx::PgPool, ReportError> {
    Ok(fleet_store::connect(database_url).await?)
}

fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|e| ReportError::output(path.display().to_string(), e))
}

/// Parses a window end given on the command line: a date (`2026-03-01`, midnight
/// UTC) or an RFC 3339 time (`2026-03-01T12:00:00Z`). The error says what was expected.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(NaiveTime::MIN).and_utc());
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.to_utc());
    }
    let hint = if text.len() == 10 {
        "not a calendar date"
    } else {
        "not a date or time"
    };
    Err(format!(
        "'{text}' is {hint}: expected YYYY-MM-DD (midnight UTC) or an RFC 3339 time such as 2026-03-01T12:00:00Z"
    ))
}

/// Why a report could not be made. `BadWindow` and `UnknownPump` are the user's input
/// (exit 1); the others mean it could not run (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("bad window: {0}")]
    BadWindow(String),
    #[error("unknown pump '{0}': nothing is archived for it and the registry does not list it")]
    UnknownPump(String),
    #[error("connecting to the archive: {0}")]
    Connect(#[from] fleet_store::StoreError),
    #[error("querying the archive: {0}")]
    Database(#[from] sqlx::Error),
    #[error("writing {what}: {message}")]
    Output { what: String, message: String },
}

impl ReportError {
    /// True when the input was wrong, as opposed to the report failing to run.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::BadWindow(_) | Self::UnknownPump(_))
    }

    pub(crate) fn output(what: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Output {
            what: what.into(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_parse_and_bad_ones_say_what_was_expected() {
        assert_eq!(
            parse_time("2026-03-01").expect("date").to_rfc3339(),
            "2026-03-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-03-01T12:30:00+02:00")
                .expect("time")
                .to_rfc3339(),
            "2026-03-01T10:30:00+00:00"
        );
        let error = parse_time("2026-02-30").expect_err("no such day");
        assert!(
            error.contains("'2026-02-30' is not a calendar date"),
            "{error}"
        );
        let error = parse_time("yesterday").expect_err("not a date");
        assert!(error.contains("expected YYYY-MM-DD"), "{error}");
    }

    #[test]
    fn a_window_must_run_forwards_and_covers_whole_days() {
        let at = |s: &str| parse_time(s).expect("time");
        let error = Window::new(at("2026-03-02"), at("2026-03-01")).expect_err("reversed");
        assert!(error.is_bad_input());
        assert!(error.to_string().contains("must be before --to"), "{error}");
        assert!(Window::new(at("2026-03-01"), at("2026-03-01")).is_err());

        let whole = Window::new(at("2026-03-01"), at("2026-03-03")).expect("window");
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("day");
        assert_eq!(whole.days(), (day("2026-03-01"), day("2026-03-03")));
        let partial = Window::new(at("2026-03-01"), at("2026-03-03T06:00:00Z")).expect("window");
        assert_eq!(partial.days(), (day("2026-03-01"), day("2026-03-04")));
        assert_eq!(whole.length_days(), 2.0);
    }
}
