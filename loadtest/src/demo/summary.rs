//! The demo's closing summary: faults injected and alarms raised against the
//! simulator's ground truth, paging, alarm latency and what became of every reading.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use fleet_core::{AlarmKind, AlarmState};
use fleet_gateway::simulated::SimClock;
use fleet_simulator::{FaultKind, Finding, KindScore, RaisedAlarm, Score};
use serde_json::json;
use sqlx::PgPool;

use super::pages::Pages;
use super::plan::Plan;
use crate::latency::percentile;

/// What became of the readings the gateways produced over the simulated history.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadingFigures {
    pub produced: u64,
    pub archived: u64,
    pub dead_lettered: u64,
    /// Produced and not in the archive when the demo stopped waiting.
    pub missing: u64,
    /// Readings the gateways' outboxes still held then (history or live): a missing
    /// reading may be among them, on its way, when the pipeline fell behind.
    pub queued_in_outboxes: u64,
}

impl ReadingFigures {
    /// Missing readings that cannot be in an outbox any more: lost for certain.
    pub fn lost(&self) -> u64 {
        self.missing.saturating_sub(self.queued_in_outboxes)
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub pumps: usize,
    pub clinics: usize,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Pumps per injected fault, and the alarm kinds its episodes call for.
    pub faults: BTreeMap<FaultKind, (u32, BTreeSet<AlarmKind>)>,
    pub score: Score,
    pub pages_by_clinic: BTreeMap<String, u64>,
    pub escalations: u64,
    pub alarms_acknowledged: u64,
    /// Milliseconds from the triggering reading leaving its gateway to the clinic's
    /// receipt of the page, sorted.
    pub latency_ms: Vec<f64>,
    pub readings: ReadingFigures,
    /// CPU seconds per process over the history, and the history's wall time.
    pub cpu_seconds: BTreeMap<String, f64>,
    pub wall_seconds: f64,
    pub dashboard: String,
    pub login: (String, String),
}

/// The `RAISED` alarm events the archive holds, detected within the simulated history.
pub async fn raised_alarms(
    pool: &PgPool,
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<RaisedAlarm>> {
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT pump_id, kind, detected_at FROM alarm_event \
         WHERE state = 'RAISED' AND detected_at <= $1",
    )
    .bind(until)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(pump_id, kind, detected_at)| {
            let kind = *AlarmKind::ALL
                .iter()
                .find(|k| k.name() == kind)
                .ok_or_else(|| anyhow::anyhow!("alarm_event holds an unknown kind {kind:?}"))?;
            Ok(RaisedAlarm {
                pump_id,
                kind,
                detected_at,
            })
        })
        .collect()
}

/// Readings of the simulated history the archive holds.
pub async fn archived_readings(pool: &PgPool, until: DateTime<Utc>) -> anyhow::Result<u64> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM reading WHERE measured_at <= $1")
        .bind(until)
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

/// Expected readings the archive does not hold.
pub async fn missing_readings(pool: &PgPool, plan: &Plan) -> anyhow::Result<u64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT pump_id, seq FROM reading WHERE measured_at <= $1")
            .bind(plan.end)
            .fetch_all(pool)
            .await?;
    let archived: BTreeSet<(String, u64)> = rows.into_iter().map(|(p, s)| (p, s as u64)).collect();
    Ok(plan.expected.difference(&archived).count() as u64)
}

/// Alarm latency of every first page of a raised alarm: the page's receipt minus the
/// wall moment the simulated clock reached the detector's decision time, which is the
/// measurement time of the reading that carried the detector's clock there (the
/// gateway publishes each reading as the simulated clock reaches it).
pub fn latencies(pages: &Pages, clock: &SimClock) -> Vec<f64> {
    let mut ms: Vec<f64> = pages
        .all()
        .filter(|p| p.escalation == 0 && p.alarm.state == AlarmState::Raised)
        .map(|p| (p.received_at - clock.wall_at(p.alarm.detected_at)).num_milliseconds() as f64)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

pub fn faults_injected(plan: &Plan) -> BTreeMap<FaultKind, (u32, BTreeSet<AlarmKind>)> {
    let mut faults: BTreeMap<FaultKind, (u32, BTreeSet<AlarmKind>)> = BTreeMap::new();
    let fault_of: BTreeMap<&str, FaultKind> = plan
        .truth
        .pumps
        .iter()
        .map(|p| (p.pump_id.as_str(), p.fault))
        .collect();
    for p in &plan.truth.pumps {
        faults.entry(p.fault).or_default().0 += 1;
    }
    for e in &plan.truth.episodes {
        if let Some(fault) = fault_of.get(e.pump_id.as_str()) {
            faults.entry(*fault).or_default().1.insert(e.kind);
        }
    }
    faults
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

impl Summary {
    pub fn pages(&self) -> u64 {
        self.pages_by_clinic.values().sum()
    }

    /// The `n` processes that used the most CPU, with their seconds.
    fn busiest(&self, n: usize) -> String {
        let mut by_cpu: Vec<(&String, &f64)> = self.cpu_seconds.iter().collect();
        by_cpu.sort_by(|a, b| b.1.total_cmp(a.1));
        by_cpu
            .iter()
            .take(n)
            .map(|(name, s)| format!("{name} {s:.0} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Misses and false alarms: what the reader must look at.
    pub fn unexplained(&self) -> usize {
        self.score
            .findings
            .iter()
            .filter(|f| !matches!(f, Finding::Late(_)))
            .count()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "\n== Summary: {} pumps under {} clinics, simulated {} to {} ==",
            self.pumps,
            self.clinics,
            self.start.format("%Y-%m-%d %H:%M"),
            self.end.format("%Y-%m-%d %H:%M")
        );
        let _ = writeln!(w, "\nFaults injected (the simulator's ground truth)");
        let _ = writeln!(w, "  {:<24} {:>5}  alarms it calls for", "fault", "pumps");
        for (fault, (pumps, kinds)) in &self.faults {
            let calls = if kinds.is_empty() {
                "none: must not alarm".to_owned()
            } else {
                kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(w, "  {:<24} {:>5}  {calls}", fault.name(), pumps);
        }
        let _ = writeln!(
            w,
            "\nAlarms raised against the ground truth (RAISED events in the archive)"
        );
        let _ = writeln!(
            w,
            "  {:<16} {:>8} {:>8} {:>6} {:>7} {:>5} {:>4} {:>7} {:>6} {:>9} {:>8}",
            "kind",
            "episodes",
            "detected",
            "missed",
            "pending",
            "false",
            "late",
            "repeats",
            "recall",
            "precision",
            "delay h"
        );
        let row = |w: &mut String, name: &str, k: &KindScore| {
            let delay = k
                .median_delay_h()
                .map_or_else(|| "-".into(), |d| format!("{d:.1}"));
            let _ = writeln!(
                w,
                "  {:<16} {:>8} {:>8} {:>6} {:>7} {:>5} {:>4} {:>7} {:>6} {:>9} {:>8}",
                name,
                k.episodes,
                k.hits,
                k.misses,
                k.pending,
                k.false_alarms,
                k.late,
                k.repeats,
                fmt_ratio(k.recall()),
                fmt_ratio(k.precision()),
                delay
            );
        };
        for (kind, k) in &self.score.kinds {
            row(w, kind.name(), k);
        }
        row(w, "all", &self.score.total());
        for finding in &self.score.findings {
            let _ = match finding {
                Finding::Missed(e) => writeln!(
                    w,
                    "  MISSED  {} {} (window {} to {}): {}",
                    e.kind.name(),
                    e.pump_id,
                    e.window_start.format("%m-%d %H:%M"),
                    e.window_end.format("%m-%d %H:%M"),
                    e.note
                ),
                Finding::FalseAlarm(a) => writeln!(
                    w,
                    "  FALSE   {} {} at {}: no such episode",
                    a.kind.name(),
                    a.pump_id,
                    a.detected_at.format("%m-%d %H:%M")
                ),
                Finding::Late(a) => writeln!(
                    w,
                    "  LATE    {} {} at {}: after its window closed",
                    a.kind.name(),
                    a.pump_id,
                    a.detected_at.format("%m-%d %H:%M")
                ),
            };
        }
        let pending = self.score.total().pending;
        if pending > 0 {
            let _ = writeln!(
                w,
                "  pending: {pending} episodes whose detection window is still open at the end of the history (the fleet carries on live)"
            );
        }
        let _ = writeln!(w, "\nPaging");
        let by_clinic = self
            .pages_by_clinic
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            w,
            "  pages delivered        {:>9}  ({by_clinic})",
            self.pages()
        );
        let _ = writeln!(w, "  of which escalations   {:>9}", self.escalations);
        let _ = writeln!(
            w,
            "  alarms acknowledged    {:>9}  (HIGH and MEDIUM, by the simulated clinicians through the fleet API)",
            self.alarms_acknowledged
        );
        match (
            percentile(&self.latency_ms, 0.5),
            percentile(&self.latency_ms, 0.99),
        ) {
            (Some(p50), Some(p99)) => {
                let _ = writeln!(
                    w,
                    "  alarm latency          p50 {:.0} ms, p99 {:.0} ms over {} pages (reading leaves its gateway → clinic's receiver accepts the page)",
                    p50,
                    p99,
                    self.latency_ms.len()
                );
            }
            _ => {
                let _ = writeln!(w, "  alarm latency          no page to measure");
            }
        }
        let r = &self.readings;
        let _ = writeln!(w, "\nReadings over the simulated history");
        let _ = writeln!(w, "  produced by gateways   {:>9}", r.produced);
        let _ = writeln!(w, "  archived               {:>9}", r.archived);
        let _ = writeln!(w, "  dead-lettered          {:>9}", r.dead_lettered);
        if r.missing > 0 {
            let _ = writeln!(
                w,
                "  not archived yet       {:>9}  (the gateways' outboxes still hold {}: the pipeline fell behind)",
                r.missing, r.queued_in_outboxes
            );
        }
        let _ = writeln!(
            w,
            "  lost                   {:>9}{}",
            r.lost(),
            if r.lost() == 0 {
                ""
            } else {
                "  <-- LOST READINGS"
            }
        );
        let cpu: f64 = self.cpu_seconds.values().sum();
        let _ = writeln!(
            w,
            "\nCost: {:.0} s of wall time, {:.0} CPU-seconds in the demo's processes ({:.2} per 1,000 readings); busiest: {}",
            self.wall_seconds,
            cpu,
            cpu * 1000.0 / (r.produced.max(1) as f64),
            self.busiest(3)
        );
        let _ = writeln!(w, "\nThe clinic dashboard: {}", self.dashboard);
        let _ = writeln!(
            w,
            "  log in as {} with the access token\n  {}",
            self.login.0, self.login.1
        );
        out
    }

    /// The figures as JSON (the token left out).
    pub fn to_json(&self) -> serde_json::Value {
        let kind = |k: &KindScore| {
            json!({
                "episodes": k.episodes, "detected": k.hits, "missed": k.misses,
                "pending": k.pending, "false_alarms": k.false_alarms, "late": k.late,
                "repeats": k.repeats, "recall": k.recall(), "precision": k.precision(),
                "median_delay_h": k.median_delay_h(),
            })
        };
        json!({
            "pumps": self.pumps,
            "clinics": self.clinics,
            "start": self.start,
            "end": self.end,
            "faults": self.faults.iter().map(|(f, (n, _))| (f.name(), *n)).collect::<BTreeMap<_, _>>(),
            "alarms": self.score.kinds.iter().map(|(k, s)| (k.name(), kind(s))).collect::<BTreeMap<_, _>>(),
            "alarms_total": kind(&self.score.total()),
            "findings": self.score.findings.len(),
            "unexplained": self.unexplained(),
            "pages_by_clinic": self.pages_by_clinic,
            "escalations": self.escalations,
            "alarms_acknowledged": self.alarms_acknowledged,
            "latency_ms": {
                "pages": self.latency_ms.len(),
                "p50": percentile(&self.latency_ms, 0.5),
                "p99": percentile(&self.latency_ms, 0.99),
            },
            "readings": {
                "produced": self.readings.produced,
                "archived": self.readings.archived,
                "dead_lettered": self.readings.dead_lettered,
                "missing": self.readings.missing,
                "queued_in_outboxes": self.readings.queued_in_outboxes,
                "lost": self.readings.lost(),
            },
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "dashboard": self.dashboard,
            "login": self.login.0,
        })
    }
}
