//! The chaos test's figures, what it requires of them, and their two forms (a table
//! for people, JSON for tests and the docs).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use fleet_simulator::{Episode, Finding, KindScore, Score};
use serde_json::json;

use super::schedule::{Component, Step};

/// One kill and its recovery.
#[derive(Debug, Clone)]
pub struct Kill {
    pub component: Component,
    /// Seconds into the chaos window.
    pub at_s: f64,
    /// The process killed (`None`: it was not running, or the kill failed).
    pub pid: Option<u32>,
    pub down_ms: u64,
    /// Seconds from the kill until the component answered again (`/readyz`, or every
    /// stack component answering `stack.sh up`'s probes).
    pub ready_s: Option<f64>,
    /// Seconds from the kill until the pipeline moved through it again (its progress
    /// counter grew after it was back); `None` for the notifier, timed to ready only.
    pub flowing_s: Option<f64>,
    /// Runs of `stack.sh up` it took (1 for the harness's own processes).
    pub up_attempts: u32,
    pub error: Option<String>,
}

impl Kill {
    /// Seconds from the restart (the end of the down time) until it answered.
    pub fn ready_after_restart_s(&self) -> Option<f64> {
        Some((self.ready_s? - self.down_ms as f64 / 1000.0).max(0.0))
    }

    /// Seconds from the restart until the pipeline moved through it again.
    pub fn moving_after_restart_s(&self) -> Option<f64> {
        Some((self.flowing_s? - self.down_ms as f64 / 1000.0).max(0.0))
    }

    pub fn line(&self) -> String {
        let secs = |s: Option<f64>| s.map_or_else(|| "-".into(), |s| format!("{s:.1} s"));
        format!(
            "{:>6.1} s  kill -9 {:<9} pid {:<7} down {:>4} ms  ready after {:>7}  moving after {:>7}{}{}",
            self.at_s,
            self.component.name(),
            self.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            self.down_ms,
            secs(self.ready_s),
            secs(self.flowing_s),
            if self.up_attempts > 1 {
                format!("  ({} runs of stack.sh up)", self.up_attempts)
            } else {
                String::new()
            },
            self.error
                .as_ref()
                .map_or_else(String::new, |e| format!("  ERROR: {e}"))
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReadingFigures {
    /// Every `(pump_id, seq)` the gateways produced over the simulated history.
    pub produced: u64,
    /// Of those, in the archive.
    pub archived: u64,
    /// Produced and not in the archive after the drain.
    pub missing: u64,
    /// Archive rows beyond the first with the same `(pump_id, seq)`.
    pub duplicate_rows: u64,
    /// What the gateways' outboxes still held at the end.
    pub queued_in_outboxes: Option<u64>,
    /// Records written to the readings topic (history, live readings and every re-send).
    pub kafka_records: Option<u64>,
    /// Records in the dead-letter topic.
    pub dead_lettered: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct PageFigures {
    pub by_clinic: BTreeMap<String, u64>,
    /// Lines of a receiver's file repeating an earlier line's
    /// `(alarm_id, revision, escalation)`: a page accepted twice.
    pub accepted_twice: u64,
    /// Pages sent again after the receiver had accepted them (a receipt lost to a
    /// kill), which the receivers answered with their first receipt.
    pub resent_to_receivers: u64,
    /// Pages first accepted on a later attempt.
    pub delivered_on_retry: u64,
    pub alarm_events: u64,
    /// Alarm events in the archive no receiver holds a page of.
    pub alarm_events_unpaged: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub pumps: usize,
    pub clinics: usize,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub speedup: f64,
    pub duration_s: f64,
    pub interval_s: f64,
    /// The schedule drawn from the seed (the run carries out its beginning).
    pub schedule: Vec<Step>,
    pub kills: Vec<Kill>,
    pub unplanned_exits: BTreeMap<String, u32>,
    pub chaos_seconds: f64,
    pub drain_seconds: f64,
    /// Everything archived and settled within the drain's bounds.
    pub drained: bool,
    /// Pumps per injected fault.
    pub faults: BTreeMap<String, u32>,
    pub readings: ReadingFigures,
    /// RAISED alarm events in the archive against the ground truth.
    pub archive_score: Score,
    /// RAISED pages the clinics' receivers accepted against the ground truth.
    pub paged_score: Score,
    /// Of the paged score's misses, those whose pump already had an alarm of the
    /// episode's kind open at its clinic when the window began (raised for a silence
    /// or delay a kill caused, and not cleared since).
    pub covered_by_open_alarm: Vec<Episode>,
    pub pages: PageFigures,
    pub stack_healthy_after: bool,
    pub wall_seconds: f64,
}

/// [`crate::latency::percentile`] of values in any order.
fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    crate::latency::percentile(&sorted, q)
}

fn kind_json(k: &KindScore) -> serde_json::Value {
    json!({
        "episodes": k.episodes, "detected": k.hits, "missed": k.misses,
        "pending": k.pending, "false_alarms": k.false_alarms, "late": k.late,
        "repeats": k.repeats, "recall": k.recall(), "precision": k.precision(),
    })
}

/// Per component: kills, recoveries, and p50/max of both recovery times.
#[derive(Debug, Clone, Default)]
pub struct ComponentFigures {
    pub kills: u32,
    pub unrecovered: u32,
    /// From the kill: the outage.
    pub ready_s: Vec<f64>,
    pub flowing_s: Vec<f64>,
    /// From the restart: the recovery itself.
    pub ready_after_restart_s: Vec<f64>,
    pub moving_after_restart_s: Vec<f64>,
    pub up_attempts_max: u32,
}

impl Report {
    pub fn by_component(&self) -> BTreeMap<Component, ComponentFigures> {
        let mut out: BTreeMap<Component, ComponentFigures> = BTreeMap::new();
        for k in &self.kills {
            let f = out.entry(k.component).or_default();
            // A process that was not running when its turn came was not killed.
            f.kills += u32::from(k.pid.is_some());
            if k.ready_s.is_none() || k.error.is_some() {
                f.unrecovered += 1;
            }
            f.ready_s.extend(k.ready_s);
            f.flowing_s.extend(k.flowing_s);
            f.ready_after_restart_s.extend(k.ready_after_restart_s());
            f.moving_after_restart_s.extend(k.moving_after_restart_s());
            f.up_attempts_max = f.up_attempts_max.max(k.up_attempts);
        }
        out
    }

    /// What the run requires, each with whether it holds.
    pub fn checks(&self) -> Vec<(String, bool)> {
        let r = &self.readings;
        let paged = self.paged_score.total();
        let p = &self.pages;
        let by = self.by_component();
        let killed: Vec<&str> = Component::ALL
            .iter()
            .filter(|c| by.get(c).is_none_or(|f| f.kills == 0))
            .map(|c| c.name())
            .collect();
        let unrecovered: u32 = by.values().map(|f| f.unrecovered).sum();
        vec![
            (
                format!(
                    "every component killed at least once (never: {})",
                    if killed.is_empty() {
                        "none".to_owned()
                    } else {
                        killed.join(", ")
                    }
                ),
                killed.is_empty(),
            ),
            (
                format!("every kill recovered ({unrecovered} did not)"),
                unrecovered == 0,
            ),
            (
                format!(
                    "no reading lost: {} of {} produced are archived ({} missing)",
                    r.archived, r.produced, r.missing
                ),
                r.missing == 0 && r.produced > 0,
            ),
            (
                format!("no duplicate reading rows ({})", r.duplicate_rows),
                r.duplicate_rows == 0,
            ),
            (
                format!(
                    "every labelled fault paged: {} of {} episodes in their window, {} under an alarm already open when their window began ({} missed, {} pending at the end of the history)",
                    paged.hits,
                    paged.episodes,
                    self.covered_by_open_alarm.len(),
                    paged.misses as usize - self.covered_by_open_alarm.len(),
                    paged.pending
                ),
                paged.misses as usize == self.covered_by_open_alarm.len() && paged.episodes > 0,
            ),
            (
                format!(
                    "every alarm event paged ({} of {} not)",
                    p.alarm_events_unpaged, p.alarm_events
                ),
                p.alarm_events_unpaged == 0,
            ),
            (
                format!(
                    "no (alarm_id, revision) accepted twice by a receiver ({})",
                    p.accepted_twice
                ),
                p.accepted_twice == 0,
            ),
            (
                "the stack is whole again afterwards".to_owned(),
                self.stack_healthy_after,
            ),
        ]
    }

    pub fn passed(&self) -> bool {
        self.checks().iter().all(|(_, ok)| *ok)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "\n== Chaos: {} pumps under {} clinics, simulated {} to {} at {}x; seed {} ==",
            self.pumps,
            self.clinics,
            self.start.format("%Y-%m-%d %H:%M"),
            self.end.format("%Y-%m-%d %H:%M"),
            self.speedup,
            self.seed
        );
        let _ = writeln!(
            w,
            "\n{} kills in {:.0} s (mean pause {:.0} s), then {:.0} s to drain{}",
            self.kills.len(),
            self.chaos_seconds,
            self.interval_s,
            self.drain_seconds,
            if self.drained {
                ""
            } else {
                " (NOT drained in time)"
            }
        );
        let secs = |v: Option<f64>| v.map_or_else(|| "-".into(), |s| format!("{s:.1}"));
        let _ = writeln!(
            w,
            "  seconds from the restart until the component answers (ready) and the pipeline moves through it again (moving); outage: from the kill until it moves"
        );
        let _ = writeln!(
            w,
            "  {:<10} {:>5} {:>10} {:>10} {:>11} {:>11} {:>11} {:>11} {:>9}",
            "component",
            "kills",
            "ready p50",
            "ready max",
            "moving p50",
            "moving max",
            "outage max",
            "unrecovered",
            "own exits"
        );
        let by = self.by_component();
        for (c, f) in &by {
            let exits = c
                .process()
                .and_then(|p| self.unplanned_exits.get(p))
                .copied()
                .unwrap_or(0);
            let outage = percentile(&f.flowing_s, 1.0).or(percentile(&f.ready_s, 1.0));
            let _ = writeln!(
                w,
                "  {:<10} {:>5} {:>10} {:>10} {:>11} {:>11} {:>11} {:>11} {:>9}",
                c.name(),
                f.kills,
                secs(percentile(&f.ready_after_restart_s, 0.5)),
                secs(percentile(&f.ready_after_restart_s, 1.0)),
                secs(percentile(&f.moving_after_restart_s, 0.5)),
                secs(percentile(&f.moving_after_restart_s, 1.0)),
                secs(outage),
                f.unrecovered,
                exits
            );
        }
        for (name, n) in &self.unplanned_exits {
            let _ = writeln!(
                w,
                "  {name} exited by itself {n} times (restarted by the harness)"
            );
        }
        let r = &self.readings;
        let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |n| n.to_string());
        let _ = writeln!(w, "\nReadings over the simulated history");
        let _ = writeln!(w, "  produced by gateways   {:>9}", r.produced);
        let _ = writeln!(w, "  archived               {:>9}", r.archived);
        let _ = writeln!(w, "  missing (lost)         {:>9}", r.missing);
        let _ = writeln!(w, "  duplicate rows         {:>9}", r.duplicate_rows);
        let _ = writeln!(
            w,
            "  records in Kafka       {:>9}  (all readings, live ones and re-sends included)",
            opt(r.kafka_records)
        );
        let _ = writeln!(w, "  dead-lettered          {:>9}", opt(r.dead_lettered));
        let _ = writeln!(
            w,
            "  still in outboxes      {:>9}",
            opt(r.queued_in_outboxes)
        );
        let _ = writeln!(w, "\nAlarms against the ground truth");
        for (name, score) in [
            ("in the archive", &self.archive_score),
            ("paged", &self.paged_score),
        ] {
            let t = score.total();
            let ratio = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
            let _ = writeln!(
                w,
                "  {name:<15} episodes {}, detected {}, missed {}, pending {}, false {}, recall {}, precision {}",
                t.episodes,
                t.hits,
                t.misses,
                t.pending,
                t.false_alarms,
                ratio(t.recall()),
                ratio(t.precision())
            );
        }
        let shown = 12;
        // Misses first, then late alarms, then false ones: what must be looked at.
        let mut findings: Vec<&Finding> = self.paged_score.findings.iter().collect();
        findings.sort_by_key(|f| match f {
            Finding::Missed(_) => 0,
            Finding::Late(_) => 1,
            Finding::FalseAlarm(_) => 2,
        });
        for finding in findings.into_iter().take(shown) {
            let _ = match finding {
                Finding::Missed(e) => writeln!(
                    w,
                    "  {}  {} {} (window {} to {})",
                    if self.covered_by_open_alarm.contains(e) {
                        "OPEN  "
                    } else {
                        "MISSED"
                    },
                    e.kind.name(),
                    e.pump_id,
                    e.window_start.format("%m-%d %H:%M"),
                    e.window_end.format("%m-%d %H:%M")
                ),
                Finding::FalseAlarm(a) => writeln!(
                    w,
                    "  FALSE   {} {} at {}",
                    a.kind.name(),
                    a.pump_id,
                    a.detected_at.format("%m-%d %H:%M")
                ),
                Finding::Late(a) => writeln!(
                    w,
                    "  LATE    {} {} at {}",
                    a.kind.name(),
                    a.pump_id,
                    a.detected_at.format("%m-%d %H:%M")
                ),
            };
        }
        if self.paged_score.findings.len() > shown {
            let _ = writeln!(
                w,
                "  ... and {} more findings",
                self.paged_score.findings.len() - shown
            );
        }
        let p = &self.pages;
        let _ = writeln!(w, "\nPaging");
        let _ = writeln!(
            w,
            "  pages accepted         {:>9}  ({})",
            p.by_clinic.values().sum::<u64>(),
            p.by_clinic
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(w, "  alarm events archived  {:>9}", p.alarm_events);
        let _ = writeln!(w, "  alarm events unpaged   {:>9}", p.alarm_events_unpaged);
        let _ = writeln!(w, "  accepted twice         {:>9}", p.accepted_twice);
        let _ = writeln!(
            w,
            "  re-sent, deduplicated  {:>9}  (answered with the first receipt)",
            p.resent_to_receivers
        );
        let _ = writeln!(w, "  accepted on a retry    {:>9}", p.delivered_on_retry);
        let _ = writeln!(w, "\nChecks");
        for (what, ok) in self.checks() {
            let _ = writeln!(w, "  [{}] {what}", if ok { "ok" } else { "FAILED" });
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let by = self.by_component();
        json!({
            "seed": self.seed,
            "pumps": self.pumps,
            "clinics": self.clinics,
            "start": self.start,
            "end": self.end,
            "speedup": self.speedup,
            "duration_s": self.duration_s,
            "interval_s": self.interval_s,
            "chaos_seconds": self.chaos_seconds,
            "drain_seconds": self.drain_seconds,
            "drained": self.drained,
            "wall_seconds": self.wall_seconds,
            "schedule": self.schedule.iter().map(|s| json!({
                "component": s.component.name(),
                "down_ms": s.down.as_millis() as u64,
                "pause_ms": s.pause.as_millis() as u64,
            })).collect::<Vec<_>>(),
            "kills": self.kills.iter().map(|k| json!({
                "component": k.component.name(), "at_s": k.at_s, "pid": k.pid,
                "down_ms": k.down_ms, "ready_s": k.ready_s, "moving_s": k.flowing_s,
                "up_attempts": k.up_attempts, "error": k.error,
            })).collect::<Vec<_>>(),
            "components": by.iter().map(|(c, f)| (c.name(), json!({
                "kills": f.kills,
                "unrecovered": f.unrecovered,
                "ready_p50_s": percentile(&f.ready_s, 0.5),
                "ready_max_s": percentile(&f.ready_s, 1.0),
                "moving_p50_s": percentile(&f.flowing_s, 0.5),
                "moving_max_s": percentile(&f.flowing_s, 1.0),
                "after_restart_ready_p50_s": percentile(&f.ready_after_restart_s, 0.5),
                "after_restart_ready_max_s": percentile(&f.ready_after_restart_s, 1.0),
                "after_restart_moving_p50_s": percentile(&f.moving_after_restart_s, 0.5),
                "after_restart_moving_max_s": percentile(&f.moving_after_restart_s, 1.0),
                "stack_up_attempts_max": f.up_attempts_max,
            }))).collect::<BTreeMap<_, _>>(),
            "unplanned_exits": self.unplanned_exits,
            "faults": self.faults,
            "readings": {
                "produced": self.readings.produced,
                "archived": self.readings.archived,
                "missing": self.readings.missing,
                "duplicate_rows": self.readings.duplicate_rows,
                "queued_in_outboxes": self.readings.queued_in_outboxes,
                "kafka_records": self.readings.kafka_records,
                "dead_lettered": self.readings.dead_lettered,
            },
            "alarms_archived": kind_json(&self.archive_score.total()),
            "alarms_paged": kind_json(&self.paged_score.total()),
            "missed_but_open_already": self.covered_by_open_alarm.iter().map(|e| json!({
                "pump_id": e.pump_id, "kind": e.kind.name(),
                "window_start": e.window_start, "window_end": e.window_end,
            })).collect::<Vec<_>>(),
            "alarms_paged_by_kind": self.paged_score.kinds.iter()
                .map(|(k, s)| (k.name(), kind_json(s))).collect::<BTreeMap<_, _>>(),
            "pages": {
                "by_clinic": self.pages.by_clinic,
                "accepted_twice": self.pages.accepted_twice,
                "resent_to_receivers": self.pages.resent_to_receivers,
                "delivered_on_retry": self.pages.delivered_on_retry,
                "alarm_events": self.pages.alarm_events,
                "alarm_events_unpaged": self.pages.alarm_events_unpaged,
            },
            "stack_healthy_after": self.stack_healthy_after,
            "checks": self.checks().into_iter()
                .map(|(what, ok)| json!({"check": what, "ok": ok})).collect::<Vec<_>>(),
            "passed": self.passed(),
        })
    }
}
