//! `fleetctl report pump PUMP_ID`: one pump's timeline in a window, for "what happened
//! before this failure": its readings (downsampled), the events it logged, the alarms
//! raised about it, the pages sent to its clinic and the acknowledgements, as one CSV
//! in time order, and a chart of reservoir, battery and pressure with events marked.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::chart::{Mark, MarkKind, PumpPoint};
use super::{ReportError, Window};

/// Readings are grouped into at most this many buckets (never finer than an hour).
pub const MAX_BUCKETS: i64 = 720;
const MIN_BUCKET_SECONDS: i64 = 3600;

/// What a line of the timeline records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A bucket of readings.
    Reading,
    /// An event the pump logged.
    Event,
    /// An alarm event (`what` is `KIND STATE PRIORITY`).
    Alarm,
    /// A page to the clinic.
    Page,
    Acknowledgement,
}

impl Record {
    /// The name in the CSV and the API's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Record::Reading => "reading",
            Record::Event => "event",
            Record::Alarm => "alarm",
            Record::Page => "page",
            Record::Acknowledgement => "acknowledgement",
        }
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    pub at: DateTime<Utc>,
    pub record: Record,
    /// The event type, the alarm's kind, state and priority, the page's target, ...
    pub what: String,
    pub readings: Option<i64>,
    pub reservoir_ml: Option<f64>,
    pub battery_pct: Option<f64>,
    pub battery_v: Option<f64>,
    pub catheter_pressure_kpa: Option<f64>,
    pub motor_current_ma: Option<f64>,
    pub detail: String,
}

impl TimelineRow {
    fn note(at: DateTime<Utc>, record: Record, what: String, detail: String) -> Self {
        Self {
            at,
            record,
            what,
            readings: None,
            reservoir_ml: None,
            battery_pct: None,
            battery_v: None,
            catheter_pressure_kpa: None,
            motor_current_ma: None,
            detail,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PumpTimeline {
    pub pump_id: String,
    pub window: Window,
    pub bucket_seconds: i64,
    pub rows: Vec<TimelineRow>,
}

/// The bucket for a window: as fine as an hour, as coarse as keeps [`MAX_BUCKETS`].
pub fn bucket_seconds(window: &Window) -> i64 {
    let span = (window.to - window.from).num_seconds();
    let per_bucket = span.div_euclid(MAX_BUCKETS) + i64::from(span % MAX_BUCKETS != 0);
    per_bucket.max(MIN_BUCKET_SECONDS)
}

/// Reads the pump's timeline; refuses a pump the fleet has never heard of.
pub async fn build(
    pool: &PgPool,
    pump_id: &str,
    window: Window,
) -> Result<PumpTimeline, ReportError> {
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM archive_watermark WHERE pump_id = $1)
             OR EXISTS (SELECT 1 FROM pump WHERE pump_id = $1)",
    )
    .bind(pump_id)
    .fetch_one(pool)
    .await?;
    if !known {
        return Err(ReportError::UnknownPump(pump_id.to_owned()));
    }
    let bucket = bucket_seconds(&window);
    let mut rows = readings(pool, pump_id, window, bucket).await?;
    rows.extend(events(pool, pump_id, window).await?);
    rows.extend(alarms(pool, pump_id, window).await?);
    rows.extend(pages(pool, pump_id, window).await?);
    rows.extend(acknowledgements(pool, pump_id, window).await?);
    // Stable: at one instant, readings before events before alarms before pages.
    rows.sort_by_key(|r| r.at);
    Ok(PumpTimeline {
        pump_id: pump_id.to_owned(),
        window,
        bucket_seconds: bucket,
        rows,
    })
}

/// A query over one pump and the window: `$1` the pump, `$2` and `$3` the window's
/// ends; more parameters can be bound after these.
fn in_window<'q, T>(
    sql: &'static str,
    pump_id: &'q str,
    window: Window,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    sqlx::query_as(sql)
        .bind(pump_id)
        .bind(window.from)
        .bind(window.to)
}

type BucketTuple = (DateTime<Utc>, i64, f64, f64, f64, Option<f64>, Option<f64>);

/// Per bucket the worst of each measure: the lowest reservoir and battery, the highest
/// pressure and motor current (a dip or a spike must survive downsampling).
async fn readings(
    pool: &PgPool,
    pump_id: &str,
    window: Window,
    bucket: i64,
) -> Result<Vec<TimelineRow>, ReportError> {
    let rows: Vec<BucketTuple> = in_window(
        "SELECT date_bin(make_interval(secs => $4), measured_at, $2) AS bucket, count(*),
                min(reservoir_ml), min(battery_pct), min(battery_v),
                max(catheter_pressure_kpa), max(motor_current_ma)
         FROM reading
         WHERE pump_id = $1 AND measured_at >= $2 AND measured_at < $3
         GROUP BY 1 ORDER BY 1",
        pump_id,
        window,
    )
    .bind(bucket as f64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(at, n, reservoir, pct, volts, pressure, current)| TimelineRow {
                at,
                record: Record::Reading,
                what: format!("{bucket} s bucket"),
                readings: Some(n),
                reservoir_ml: Some(reservoir),
                battery_pct: Some(pct),
                battery_v: Some(volts),
                catheter_pressure_kpa: pressure,
                motor_current_ma: current,
                detail: String::new(),
            },
        )
        .collect())
}

async fn events(
    pool: &PgPool,
    pump_id: &str,
    window: Window,
) -> Result<Vec<TimelineRow>, ReportError> {
    let rows: Vec<(DateTime<Utc>, String, String)> = in_window(
        "SELECT at, type, detail::text FROM pump_event
         WHERE pump_id = $1 AND at >= $2 AND at < $3 ORDER BY at, seq, idx",
        pump_id,
        window,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at, kind, detail)| TimelineRow::note(at, Record::Event, kind, detail))
        .collect())
}

type AlarmTuple = (DateTime<Utc>, String, String, String, i32, String, String);

async fn alarms(
    pool: &PgPool,
    pump_id: &str,
    window: Window,
) -> Result<Vec<TimelineRow>, ReportError> {
    let rows: Vec<AlarmTuple> = in_window(
        "SELECT detected_at, kind, state, priority, revision, alarm_id, message
             FROM alarm_event
             WHERE pump_id = $1 AND detected_at >= $2 AND detected_at < $3
             ORDER BY detected_at, alarm_id, revision",
        pump_id,
        window,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at, kind, state, priority, revision, alarm_id, message)| {
            TimelineRow::note(
                at,
                Record::Alarm,
                format!("{kind} {state} {priority}"),
                format!("{alarm_id} revision {revision}: {message}"),
            )
        })
        .collect())
}

type PageTuple = (
    DateTime<Utc>,
    String,
    i32,
    i32,
    String,
    String,
    String,
    i32,
    Option<DateTime<Utc>>,
    Option<String>,
);

async fn pages(
    pool: &PgPool,
    pump_id: &str,
    window: Window,
) -> Result<Vec<TimelineRow>, ReportError> {
    let rows: Vec<PageTuple> = in_window(
        "SELECT created_at, alarm_id, revision, escalation, clinic_id, status, target,
                attempts, delivered_at, last_error
         FROM page WHERE pump_id = $1 AND created_at >= $2 AND created_at < $3
         ORDER BY created_at, seq",
        pump_id,
        window,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                at,
                alarm_id,
                revision,
                escalation,
                clinic,
                status,
                target,
                attempts,
                delivered,
                error,
            )| {
                let outcome = match delivered {
                    Some(t) => format!("delivered {} after {attempts} attempt(s)", t.to_rfc3339()),
                    None => format!(
                        "{status} after {attempts} attempt(s){}",
                        error
                            .map(|e| format!(", last error: {e}"))
                            .unwrap_or_default()
                    ),
                };
                let what = if escalation > 0 {
                    format!("escalation {escalation} to {clinic} ({target})")
                } else {
                    format!("page to {clinic} ({target})")
                };
                TimelineRow::note(
                    at,
                    Record::Page,
                    what,
                    format!("{alarm_id} revision {revision}: {outcome}"),
                )
            },
        )
        .collect())
}

async fn acknowledgements(
    pool: &PgPool,
    pump_id: &str,
    window: Window,
) -> Result<Vec<TimelineRow>, ReportError> {
    let rows: Vec<(DateTime<Utc>, String, String, String)> = in_window(
        "SELECT acknowledged_at, alarm_id, clinician, note FROM acknowledgement
         WHERE acknowledged_at >= $2 AND acknowledged_at < $3
           AND alarm_id IN (SELECT alarm_id FROM alarm_event WHERE pump_id = $1
                            UNION SELECT alarm_id FROM escalation WHERE pump_id = $1)
         ORDER BY acknowledged_at",
        pump_id,
        window,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at, alarm_id, clinician, note)| {
            TimelineRow::note(
                at,
                Record::Acknowledgement,
                format!("by {clinician}"),
                format!("{alarm_id}: {note}"),
            )
        })
        .collect())
}

impl PumpTimeline {
    /// The timeline as CSV, header first.
    pub fn to_csv(&self) -> Result<String, ReportError> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let fail = |e: csv::Error| ReportError::output("the timeline CSV", e);
        writer
            .write_record([
                "at",
                "record",
                "what",
                "readings",
                "reservoir_ml",
                "battery_pct",
                "battery_v",
                "catheter_pressure_kpa",
                "motor_current_ma",
                "detail",
            ])
            .map_err(fail)?;
        let number = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x}"));
        for row in &self.rows {
            writer
                .write_record([
                    row.at.to_rfc3339(),
                    row.record.as_str().to_owned(),
                    row.what.clone(),
                    row.readings.map_or(String::new(), |n| n.to_string()),
                    number(row.reservoir_ml),
                    number(row.battery_pct),
                    number(row.battery_v),
                    number(row.catheter_pressure_kpa),
                    number(row.motor_current_ma),
                    row.detail.clone(),
                ])
                .map_err(fail)?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|e| ReportError::output("the timeline CSV", e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The chart: downsampled telemetry, events as ticks, alarms raised as labelled
    /// red lines, pages as ticks along the top.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        let points: Vec<PumpPoint> = self
            .rows
            .iter()
            .filter(|r| r.record == Record::Reading)
            .filter_map(|r| {
                Some(PumpPoint {
                    at: r.at,
                    reservoir_ml: r.reservoir_ml?,
                    battery_pct: r.battery_pct?,
                    catheter_pressure_kpa: r.catheter_pressure_kpa,
                })
            })
            .collect();
        let marks: Vec<Mark> = self
            .rows
            .iter()
            .filter_map(|r| {
                let (label, kind) = match r.record {
                    Record::Event => (r.what.clone(), MarkKind::Event),
                    Record::Alarm => {
                        let mut words = r.what.split(' ');
                        let (kind, state) = (words.next()?, words.next()?);
                        (state == "RAISED").then_some((kind.to_owned(), MarkKind::Alarm))?
                    }
                    Record::Page => (r.what.clone(), MarkKind::Page),
                    Record::Reading | Record::Acknowledgement => return None,
                };
                Some(Mark {
                    at: r.at,
                    label,
                    kind,
                })
            })
            .collect();
        let title = format!(
            "{}: {} to {}",
            self.pump_id,
            self.window.from.format("%Y-%m-%d %H:%M"),
            self.window.to.format("%Y-%m-%d %H:%M UTC")
        );
        super::chart::pump_svg(&title, (self.window.from, self.window.to), &points, &marks)
            .map_err(|e| ReportError::output("the timeline chart", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: i64) -> Window {
        let from = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("time")
            .to_utc();
        Window::new(from, from + chrono::Duration::days(days)).expect("window")
    }

    #[test]
    fn buckets_are_hourly_until_the_window_needs_fewer() {
        assert_eq!(bucket_seconds(&window(1)), 3600);
        assert_eq!(bucket_seconds(&window(30)), 3600);
        // 150 days in 720 buckets: 5 hours each.
        assert_eq!(bucket_seconds(&window(150)), 5 * 3600);
        // Never more than MAX_BUCKETS, rounding up.
        let w = window(365);
        let span = (w.to - w.from).num_seconds();
        assert!(span / bucket_seconds(&w) <= MAX_BUCKETS);
    }

    #[test]
    fn the_csv_quotes_details_and_leaves_missing_numbers_empty() {
        let mut timeline = PumpTimeline {
            pump_id: "ITV20-1".into(),
            window: window(1),
            bucket_seconds: 3600,
            rows: vec![TimelineRow::note(
                window(1).from,
                Record::Event,
                "REFILL".into(),
                r#"{"type":"REFILL","volume_added_ml":20.0}"#.into(),
            )],
        };
        timeline.rows.push(TimelineRow {
            readings: Some(3),
            reservoir_ml: Some(12.5),
            battery_pct: Some(40.0),
            battery_v: Some(2.9),
            ..TimelineRow::note(
                window(1).from,
                Record::Reading,
                "3600 s bucket".into(),
                String::new(),
            )
        });
        let csv = timeline.to_csv().expect("csv");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "at,record,what,readings,reservoir_ml,battery_pct,battery_v,catheter_pressure_kpa,motor_current_ma,detail"
        );
        assert_eq!(
            lines[1],
            r#"2026-01-01T00:00:00+00:00,event,REFILL,,,,,,,"{""type"":""REFILL"",""volume_added_ml"":20.0}""#
        );
        assert_eq!(
            lines[2],
            "2026-01-01T00:00:00+00:00,reading,3600 s bucket,3,12.5,40,2.9,,,"
        );
    }
}
