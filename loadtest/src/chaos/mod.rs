//! The chaos test (`fleet-chaos`): the demo's simulated fleet plays its history through
//! the whole pipeline while every component (the gateway process, Mosquitto, ingest,
//! the Kafka broker, the detector, the notifier, the archiver, PostgreSQL) is killed
//! with SIGKILL and started again, one at a time, in an order drawn from a seed. Then
//! the killing stops, the system drains, and the run is held to what must be true
//! whatever was killed: every reading the gateways produced is archived once, every
//! labelled fault is paged, no receiver accepts a page twice.
//!
//! It reuses the demo's plan (fleet, ground truth, expected readings, registry), its
//! processes (started, killed and restarted the same way), its page reader and its
//! scoring; [`schedule`] draws the kills, [`stack`] kills and restarts the stack's
//! components, [`report`] sums up.

pub mod report;
pub mod schedule;
pub mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use fleet_core::AlarmState;
use fleet_gateway::simulated::SimClock;
use fleet_simulator::{Episode, Finding, RaisedAlarm, Score};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::demo::pages::Pages;
use crate::demo::plan::Plan;
use crate::demo::services::{Ports, Processes};
use crate::demo::summary;
use crate::harness::{self, StackEnv};
use report::{Kill, PageFigures, ReadingFigures, Report};
use schedule::{Component, Step};
use stack::Stack;

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub env: StackEnv,
    /// Logs, pages, the gateways' outboxes and the registry.
    pub dir: PathBuf,
    pub clinics: usize,
    pub pumps: usize,
    /// How long the killing goes on.
    pub duration: Duration,
    /// The mean pause between one component's recovery and the next kill.
    pub interval: Duration,
    /// Consumer-group members (detector, notifier, archiver) stay down at least this
    /// long (see docs/chaos.md: the local broker can leave a member restarted within
    /// its predecessor's session timeout without partitions).
    pub member_down: Duration,
    /// Simulated time runs this much faster than real time; the history is as long
    /// as the chaos window at this speed, so readings flow all through it.
    pub speedup: f64,
    pub seed: u64,
    pub ports: Ports,
    pub secret: String,
    /// The most a killed component may take to answer again, and then to move.
    pub recovery_timeout: Duration,
    /// The most the system may take, once the killing stops, to archive every reading.
    pub drain_timeout: Duration,
}

/// The history is longer than the chaos window by this much: what plays before the
/// first kill, and a margin so that readings still flow when the last kill recovers.
const WARM_UP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// Alarm events and pages count as settled after this long without change.
const SETTLED_AFTER: Duration = Duration::from_secs(5);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A run in progress.
struct Chaos {
    config: ChaosConfig,
    plan: Plan,
    pool: PgPool,
    processes: Processes,
    pages: Pages,
    clock: SimClock,
    stack: Stack,
    /// Exits nobody asked for, by process: the harness restarts them, as a supervisor
    /// would, and counts them.
    unplanned_exits: BTreeMap<String, u32>,
}

/// Runs the chaos test and sums it up. Every process it started is stopped before it
/// returns, and the stack is brought back up (`stack.sh up`) whatever happened, so that
/// whatever uses the stack next finds it whole.
pub async fn run(config: ChaosConfig, shutdown: &CancellationToken) -> anyhow::Result<Report> {
    // The run counts every receiver file and outbox under its directory: one left by
    // an earlier run would be counted as this one's pages and readings.
    let used = std::fs::read_dir(&config.dir).is_ok_and(|mut d| d.next().is_some());
    anyhow::ensure!(
        !used,
        "{} is not empty: a chaos run counts everything in its state directory; give an empty one (or remove it)",
        config.dir.display()
    );
    std::fs::create_dir_all(config.dir.join("logs"))
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let stack = Stack::from_env(&config.dir.join("logs/stack.log"));
    // Nothing of the stack has been touched if this fails (a stack that does not
    // answer, say): it is left as it is. Processes started are dropped, so killed.
    let mut chaos = Chaos::start(config.clone(), stack.clone()).await?;
    let outcome = chaos.play(shutdown).await;
    chaos.pool.close().await;
    let stopped = chaos.processes.stop();
    let outcome = match (outcome, stopped) {
        (Ok(report), Ok(())) => Ok(report),
        (Ok(_), Err(e)) => Err(e.context("stopping the services")),
        (Err(e), _) => Err(e),
    };
    // Whatever happened once the killing could start, the stack is left whole.
    let restored = tokio::task::spawn_blocking(move || stack.up(Duration::from_secs(180)))
        .await
        .context("bringing the stack back up")?;
    let mut report = outcome?;
    report.stack_healthy_after = restored.is_ok();
    Ok(report)
}

impl Chaos {
    async fn start(config: ChaosConfig, stack: Stack) -> anyhow::Result<Chaos> {
        let end = Utc::now();
        let history_ms =
            ((config.duration + WARM_UP).as_secs_f64() * config.speedup * 1000.0) as i64;
        let clinics = Plan::clinics(config.clinics, None)?;
        let plan = Plan::new(
            config.seed,
            config.pumps,
            end - chrono::Duration::milliseconds(history_ms),
            end,
            clinics,
        );
        // No escalation within the run: every page is an alarm event's own page, so a
        // receiver must hold each (alarm_id, revision) exactly once.
        let pool = plan
            .install(&config.env.database_url, &config.dir, "24h")
            .await?;
        let mut processes = Processes::start(
            &config.env,
            &config.dir,
            &plan,
            config.ports,
            &config.secret,
        )
        .await?;
        let (clock, pages) = processes.start_fleet(&plan, config.speedup)?;
        Ok(Chaos {
            clock,
            config,
            plan,
            pool,
            processes,
            pages,
            stack,
            unplanned_exits: BTreeMap::new(),
        })
    }

    async fn play(&mut self, shutdown: &CancellationToken) -> anyhow::Result<Report> {
        let started = Instant::now();
        let c = &self.config;
        // Enough steps for the window even if every recovery were instant.
        let steps = (c.duration.as_secs_f64() / (c.interval.as_secs_f64() / 2.0).max(0.1)) as usize
            + Component::ALL.len();
        let planned = schedule::schedule(c.seed, c.interval, c.member_down, steps);
        eprintln!(
            "chaos: {} pumps, simulated {} to {} at {}x; kills for {:?} from seed {} (each component once per round of {}):\n{}",
            self.plan.pumps,
            self.plan.start.format("%Y-%m-%d %H:%M"),
            self.plan.end.format("%Y-%m-%d %H:%M"),
            c.speedup,
            c.duration,
            c.seed,
            Component::ALL.len(),
            schedule::render(&planned)
        );

        // Readings flow before anything is killed.
        let warm = Instant::now() + Duration::from_secs(120);
        while self.archived_total().await.unwrap_or(0) == 0 {
            anyhow::ensure!(
                Instant::now() < warm,
                "no reading reached the archive within 120 s of the start; logs in {}",
                self.processes.logs().display()
            );
            self.supervise(None)?;
            tokio::time::sleep(POLL).await;
        }

        let window_start = Instant::now();
        let window_end = window_start + self.config.duration;
        let mut kills = Vec::new();
        for step in &planned {
            // The window ends once every component has been killed at least once
            // (the first round of the schedule), however slowly they recovered.
            let first_round_done = kills.len() >= Component::ALL.len();
            if (Instant::now() >= window_end && first_round_done) || shutdown.is_cancelled() {
                break;
            }
            let kill = self.kill_and_recover(step, window_start).await?;
            eprintln!("chaos: {}", kill.line());
            kills.push(kill);
            let pause = step
                .pause
                .min(window_end.saturating_duration_since(Instant::now()));
            let until = Instant::now() + pause;
            while Instant::now() < until && !shutdown.is_cancelled() {
                self.supervise(None)?;
                tokio::time::sleep(POLL).await;
            }
        }
        let chaos_seconds = window_start.elapsed().as_secs_f64();
        anyhow::ensure!(!shutdown.is_cancelled(), "interrupted");
        eprintln!(
            "chaos: {} kills in {chaos_seconds:.0} s; the killing stops, the system drains",
            kills.len()
        );

        let drain_started = Instant::now();
        let drained = self.drain(shutdown).await?;
        let drain_seconds = drain_started.elapsed().as_secs_f64();
        self.report(
            planned,
            kills,
            chaos_seconds,
            drain_seconds,
            drained,
            started,
        )
        .await
    }

    /// Kills `step`'s component, starts it again after its down time, and measures how
    /// long until it answers, and until the pipeline moves through it again.
    async fn kill_and_recover(&mut self, step: &Step, since: Instant) -> anyhow::Result<Kill> {
        let component = step.component;
        let at = Instant::now();
        let mut kill = Kill {
            component,
            at_s: at.duration_since(since).as_secs_f64(),
            pid: None,
            down_ms: step.down.as_millis() as u64,
            ready_s: None,
            flowing_s: None,
            up_attempts: 0,
            error: None,
        };
        kill.pid = match component.process() {
            Some(name) => self.processes.kill9(name),
            None => match self.stack.kill9(component) {
                Ok(pid) => Some(pid),
                Err(e) => {
                    kill.error = Some(format!("{e:#}"));
                    None
                }
            },
        };
        let down_until = at + step.down;
        while Instant::now() < down_until {
            self.supervise(component.process())?;
            tokio::time::sleep(POLL.min(down_until.saturating_duration_since(Instant::now())))
                .await;
        }
        let timeout = self.config.recovery_timeout;
        match component.process() {
            Some(name) => {
                self.processes.restart(name)?;
                kill.up_attempts = 1;
                let port = self.metrics_port(component);
                let deadline = Instant::now() + timeout;
                loop {
                    if ready(port).await {
                        kill.ready_s = Some(at.elapsed().as_secs_f64());
                        break;
                    }
                    if Instant::now() >= deadline {
                        kill.error = Some(format!("{name} not ready within {timeout:?}"));
                        break;
                    }
                    self.supervise(None)?;
                    tokio::time::sleep(POLL).await;
                }
            }
            None => {
                let stack = self.stack.clone();
                match tokio::task::spawn_blocking(move || stack.up(timeout)).await? {
                    Ok(up) => {
                        kill.up_attempts = up.attempts;
                        kill.ready_s = Some(at.elapsed().as_secs_f64());
                    }
                    Err(e) => kill.error = Some(format!("{e:#}")),
                }
            }
        }
        if kill.ready_s.is_some()
            && let Some((port, metric)) = self.progress(component)
        {
            let before = harness::metric_sum(port, metric).await.unwrap_or(0.0);
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if harness::metric_sum(port, metric)
                    .await
                    .is_some_and(|now| now > before)
                {
                    kill.flowing_s = Some(at.elapsed().as_secs_f64());
                    break;
                }
                self.supervise(None)?;
                tokio::time::sleep(POLL).await;
            }
            // Readings were flowing all along (the history still playing), yet
            // nothing moved through the component: it is stuck, not just slow.
            if kill.flowing_s.is_none() && self.clock.now() < self.plan.end {
                kill.error = Some(format!(
                    "answers, but nothing moved through it within {timeout:?} while readings flowed"
                ));
            }
        }
        Ok(kill)
    }

    fn metric_port(&self, name: &str) -> u16 {
        let p = self.config.ports;
        match name {
            "fleet-gateway" => p.gateway,
            "fleet-ingest" => p.ingest,
            "fleet-detector" => p.detector,
            "fleet-notifier" => p.notifier,
            _ => p.archiver,
        }
    }

    fn metrics_port(&self, component: Component) -> u16 {
        self.metric_port(component.process().unwrap_or("fleet-archiver"))
    }

    /// The counter that moves when the pipeline moves through `component` again:
    /// end-to-end acks at the gateways (MQTT, ingest and Kafka all work), readings the
    /// detector applies, readings the archiver writes (PostgreSQL works). Pages are
    /// too rare to time the notifier by; it is timed to ready.
    fn progress(&self, component: Component) -> Option<(u16, &'static str)> {
        let p = self.config.ports;
        match component {
            Component::Gateway | Component::Mosquitto | Component::Ingest | Component::Kafka => {
                Some((p.gateway, "fleet_gateway_acked_total"))
            }
            Component::Detector => Some((p.detector, "fleet_detector_readings_total")),
            Component::Archiver | Component::Postgres => {
                Some((p.archiver, "fleet_archiver_archived_total"))
            }
            Component::Notifier => None,
        }
    }

    /// Restarts, as a supervisor would, every process that exited by itself (all but
    /// `except`, which is down on purpose), counting each exit.
    fn supervise(&mut self, except: Option<&str>) -> anyhow::Result<()> {
        for name in self.processes.all_exited() {
            if Some(name.as_str()) == except {
                continue;
            }
            eprintln!(
                "chaos: {name} exited by itself; restarting it (see its log in {})",
                self.processes.logs().display()
            );
            *self.unplanned_exits.entry(name.clone()).or_default() += 1;
            self.processes.restart(&name)?;
        }
        Ok(())
    }

    async fn archived_total(&self) -> anyhow::Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM reading")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Waits, bounded, until the history has played, every reading it produced is
    /// archived, and alarm events and pages have settled with every alarm event paged.
    /// Whether all of that happened in time (the report says what is missing if not).
    async fn drain(&mut self, shutdown: &CancellationToken) -> anyhow::Result<bool> {
        let deadline = Instant::now() + self.config.drain_timeout;
        let expected = self.plan.expected.len() as u64;
        let mut last_change = (0_i64, 0_usize, Instant::now());
        loop {
            if shutdown.is_cancelled() {
                anyhow::bail!("interrupted");
            }
            self.supervise(None)?;
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(archived) = summary::archived_readings(&self.pool, self.plan.end).await else {
                continue; // the database may still be recovering
            };
            if self.clock.now() < self.plan.end || archived < expected {
                continue;
            }
            self.pages.refresh()?;
            let Ok((events, pending, delivered)) = self.alarm_state().await else {
                continue;
            };
            let pages = self.pages.count();
            if (events, pages) != (last_change.0, last_change.1) {
                last_change = (events, pages, Instant::now());
            }
            let unpaged = self.unpaged_alarm_events().await.unwrap_or(usize::MAX);
            if pending == 0
                && pages as i64 >= delivered
                && unpaged == 0
                && last_change.2.elapsed() >= SETTLED_AFTER
            {
                return Ok(true);
            }
            if last_change.2.elapsed() >= SETTLE_TIMEOUT {
                return Ok(false);
            }
        }
    }

    /// Alarm events archived, pages pending delivery, pages delivered.
    async fn alarm_state(&self) -> anyhow::Result<(i64, i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT (SELECT count(*) FROM alarm_event), \
                    (SELECT count(*) FROM page WHERE status = 'pending'), \
                    (SELECT count(*) FROM page WHERE status = 'delivered')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Alarm events in the archive that no clinic's receiver holds a page of.
    async fn unpaged_alarm_events(&self) -> anyhow::Result<usize> {
        let events: Vec<(String, i32)> =
            sqlx::query_as("SELECT alarm_id, revision FROM alarm_event")
                .fetch_all(&self.pool)
                .await?;
        let paged: BTreeSet<(String, u32)> = self
            .pages
            .all()
            .map(|p| (p.alarm.alarm_id.clone(), p.alarm.revision))
            .collect();
        Ok(events
            .into_iter()
            .filter(|(id, rev)| !paged.contains(&(id.clone(), *rev as u32)))
            .count())
    }

    /// Rows sharing a key that must be unique: `(pump_id, seq)` in the archive's
    /// readings, `(alarm_id, revision)` in its alarm events, and the delivery log's
    /// `(alarm_id, revision, escalation)`.
    /// Archive rows beyond the first of each `(pump_id, seq)`. (Alarm events and pages
    /// cannot repeat in the database: their primary keys are `(alarm_id, revision)` and
    /// `(alarm_id, revision, escalation)`; what can repeat is a receiver accepting one
    /// twice, counted from its file.)
    async fn duplicate_readings(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(sum(n - 1), 0)::bigint FROM \
               (SELECT count(*) AS n FROM reading GROUP BY pump_id, seq HAVING count(*) > 1) r",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn report(
        &mut self,
        planned: Vec<Step>,
        kills: Vec<Kill>,
        chaos_seconds: f64,
        drain_seconds: f64,
        drained: bool,
        started: Instant,
    ) -> anyhow::Result<Report> {
        self.pages.refresh()?;
        let plan = &self.plan;
        let duplicate_readings = self.duplicate_readings().await?;
        let archive_score = Score::of(
            &plan.truth.episodes,
            &summary::raised_alarms(&self.pool, plan.end).await?,
            &plan.truth.scored_kinds,
            plan.end,
        );
        // What the clinics were paged: the receivers' own records.
        let paged: Vec<RaisedAlarm> = self
            .pages
            .all()
            .filter(|p| {
                p.escalation == 0
                    && p.alarm.state == AlarmState::Raised
                    && p.alarm.detected_at <= plan.end
            })
            .map(|p| RaisedAlarm {
                pump_id: p.alarm.pump_id.clone(),
                kind: p.alarm.kind,
                detected_at: p.alarm.detected_at,
            })
            .collect();
        let paged_score = Score::of(
            &plan.truth.episodes,
            &paged,
            &plan.truth.scored_kinds,
            plan.end,
        );
        // A kill can silence a pump (or delay its readings) just before a labelled
        // fault of the same kind begins; the alarm raised for the kill's silence is
        // then still open when the labelled window opens, and the detector rightly
        // raises nothing new. The scorer wants the raise inside the window, so it
        // counts a miss; the clinic, though, had the alarm. Such episodes are
        // counted apart, never silently as hits.
        let covered_by_open_alarm: Vec<Episode> = paged_score
            .findings
            .iter()
            .filter_map(|f| match f {
                Finding::Missed(e) if self.pages.open_at(&e.pump_id, e.kind, e.window_start) => {
                    Some(e.clone())
                }
                _ => None,
            })
            .collect();
        let mut accepted_twice = 0;
        for pages in self.pages.by_clinic.values() {
            let mut seen = BTreeSet::new();
            for p in pages {
                if !seen.insert((p.alarm.alarm_id.clone(), p.alarm.revision, p.escalation)) {
                    accepted_twice += 1;
                }
            }
        }
        let logs = self.processes.logs();
        let resent_to_receivers = std::fs::read_dir(&logs)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("receiver-"))
                    .map(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .matches("duplicate page, answered with its first receipt")
                            .count() as u64
                    })
                    .sum()
            })
            .unwrap_or(0);
        let topics = std::env::var("FLEET_TOPIC_SUFFIX")
            .ok()
            .filter(|s| !s.is_empty())
            .map_or_else(fleet_kafka::Topics::default, |s| {
                fleet_kafka::Topics::with_suffix(&s)
            });
        let brokers = self.config.env.kafka_brokers.clone();
        let records = |topic: String| {
            let brokers = brokers.clone();
            tokio::task::spawn_blocking(move || {
                crate::kafka_count::high_watermarks(&brokers, &topic)
                    .map(|ends| ends.values().sum::<i64>() as u64)
                    .ok()
            })
        };
        let kafka_records = records(topics.readings.clone()).await?;
        let dead_lettered = records(topics.dead_letter.clone()).await?;
        let ports = self.config.ports;
        Ok(Report {
            seed: self.config.seed,
            pumps: plan.pumps,
            clinics: plan.clinics.len(),
            start: plan.start,
            end: plan.end,
            speedup: self.config.speedup,
            duration_s: self.config.duration.as_secs_f64(),
            interval_s: self.config.interval.as_secs_f64(),
            schedule: planned,
            kills,
            unplanned_exits: self.unplanned_exits.clone(),
            chaos_seconds,
            drain_seconds,
            drained,
            faults: summary::faults_injected(plan)
                .into_iter()
                .map(|(f, (n, _))| (f.name().to_owned(), n))
                .collect(),
            readings: ReadingFigures {
                produced: plan.expected.len() as u64,
                archived: summary::archived_readings(&self.pool, plan.end).await?,
                missing: summary::missing_readings(&self.pool, plan).await?,
                duplicate_rows: duplicate_readings as u64,
                queued_in_outboxes: harness::metric(
                    ports.gateway,
                    "fleet_gateway_outbox_depth_readings",
                )
                .await
                .map(|n| n as u64),
                kafka_records,
                dead_lettered,
            },
            archive_score,
            paged_score,
            covered_by_open_alarm,
            pages: PageFigures {
                by_clinic: self
                    .pages
                    .by_clinic
                    .iter()
                    .map(|(c, p)| (c.clone(), p.len() as u64))
                    .collect(),
                accepted_twice,
                resent_to_receivers,
                delivered_on_retry: self.pages.all().filter(|p| p.delivery_attempt > 1).count()
                    as u64,
                alarm_events: self.alarm_state().await?.0 as u64,
                alarm_events_unpaged: self.unpaged_alarm_events().await? as u64,
            },
            stack_healthy_after: false,
            wall_seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Whether the service on `port` answers `/readyz` with 200 now.
async fn ready(port: u16) -> bool {
    harness::http_get(port, "/readyz")
        .await
        .is_some_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
}
