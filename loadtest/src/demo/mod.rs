//! The README's main job (`fleet-demo`, started by `scripts/demo.sh`): a simulated
//! fleet under three clinics plays its last 60 days through the whole pipeline faster
//! than real time, then carries on live; the demo shows its progress, then a summary
//! that holds the pipeline to the simulator's ground truth, and keeps the system
//! running for the dashboard.
//!
//! - [`plan`]: the fleet, its ground truth, the readings it will produce, the registry;
//! - [`services`]: the receivers, services and gateway process, started and stopped;
//! - [`clinicians`]: simulated clinicians acknowledging urgent alarms through the API;
//! - [`pages`]: the pages the receivers wrote;
//! - [`progress`]: the bars; [`summary`]: the closing figures.

pub mod clinicians;
pub mod pages;
pub mod plan;
pub mod progress;
pub mod services;
pub mod summary;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use fleet_gateway::simulated::SimClock;
use fleet_store::access::{self, Role};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::harness::{self, StackEnv};
use clinicians::Clinicians;
use pages::Pages;
use plan::Plan;
use progress::{Progress, Snapshot};
use services::{Ports, Processes};
use summary::{ReadingFigures, Summary};

#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub env: StackEnv,
    /// Logs, pages, the gateways' outboxes, the registry and the summary.
    pub dir: PathBuf,
    pub clinics: usize,
    pub pumps: usize,
    pub history: chrono::Duration,
    pub speedup: f64,
    pub seed: u64,
    pub ports: Ports,
    /// The first clinic's receiver port (the others follow); `None`: free ports.
    pub first_receiver_port: Option<u16>,
    pub escalation_after: String,
    /// The pages' signing secret, shared by the notifier and the demo clinics.
    pub secret: String,
    /// How long to wait, once the history has played, for every reading to be archived.
    pub drain_timeout: Duration,
}

#[derive(Debug)]
pub struct Demo {
    config: DemoConfig,
    plan: Plan,
    pool: PgPool,
    processes: Processes,
    clinicians: Clinicians,
    pages: Pages,
    clock: SimClock,
    login: (String, String),
    /// When the gateways started.
    started: Instant,
}

/// How often the demo looks at the pipeline while the history plays.
const POLL: Duration = Duration::from_millis(500);
/// Alarm events and pages count as settled after this long without change.
const SETTLED_AFTER: Duration = Duration::from_secs(5);
/// The most the demo waits for alarms and pages to settle after the readings drained.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

impl Demo {
    /// Plans the fleet, imports its registry, makes the clinics' logins and starts every
    /// process; the simulated clock starts a moment later.
    pub async fn start(config: DemoConfig) -> anyhow::Result<Demo> {
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("creating {}", config.dir.display()))?;
        let end = Utc::now();
        let clinics = Plan::clinics(config.clinics, config.first_receiver_port)?;
        let plan = Plan::new(
            config.seed,
            config.pumps,
            end - config.history,
            end,
            clinics,
        );

        // The stack was checked before the demo started: no retrying here.
        let pool = plan
            .install(
                &config.env.database_url,
                &config.dir,
                &config.escalation_after,
            )
            .await?;
        let mut logins = Vec::new();
        for clinic in &plan.clinics {
            let user = format!("demo-{}", clinic.id);
            let token = match access::rotate(&pool, &user).await? {
                Some(token) => token,
                None => access::add_user(&pool, &user, &Role::Clinic(clinic.id.clone())).await?,
            };
            logins.push((clinic.id.clone(), user, token));
        }

        let mut processes = Processes::start(
            &config.env,
            &config.dir,
            &plan,
            config.ports,
            &config.secret,
        )
        .await?;
        let clinicians = Clinicians::start(
            config.ports.api_grpc,
            logins
                .iter()
                .map(|(c, _, t)| (c.clone(), t.clone()))
                .collect(),
        )
        .await?;
        let (clock, pages) = processes.start_fleet(&plan, config.speedup)?;
        let (_, user, token) = logins.swap_remove(0);
        Ok(Demo {
            clock,
            config,
            plan,
            pool,
            processes,
            clinicians,
            pages,
            login: (user, token),
            started: Instant::now(),
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Plays the simulated history with progress shown, waits until every reading is
    /// archived and the alarms and pages have settled, and sums up; `None` when
    /// interrupted (Ctrl-C) first.
    pub async fn play_history(
        &mut self,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Summary>> {
        let mut progress = Progress::new(
            self.plan.start,
            self.plan.end,
            self.plan.expected.len() as u64,
        );
        let outcome = self.watch(&mut progress, shutdown).await;
        progress.finish();
        if !outcome? {
            return Ok(None);
        }
        self.summarise().await.map(Some)
    }

    /// Whether the history played to the end (`false`: interrupted).
    async fn watch(
        &mut self,
        progress: &mut Progress,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let expected = self.plan.expected.len() as u64;
        let mut played_at: Option<Instant> = None;
        let mut last_change = (Snapshot::default(), Instant::now());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(POLL) => {}
            }
            if let Some(name) = self.processes.exited() {
                anyhow::bail!(
                    "{name} exited; its log is in {}",
                    self.processes.logs().display()
                );
            }
            let snapshot = self.snapshot().await?;
            progress.show(&snapshot);
            if (snapshot.archived, snapshot.alarm_events, snapshot.pages)
                != (
                    last_change.0.archived,
                    last_change.0.alarm_events,
                    last_change.0.pages,
                )
            {
                last_change = (snapshot, Instant::now());
            }
            if snapshot.simulated < Some(self.plan.end) {
                continue;
            }
            let played = *played_at.get_or_insert_with(Instant::now);
            let drained = snapshot.archived >= expected;
            let settled =
                last_change.1.elapsed() >= SETTLED_AFTER && self.nothing_pending().await?;
            if drained && settled {
                return Ok(true);
            }
            let waited = played.elapsed();
            if (!drained && waited > self.config.drain_timeout)
                || waited > self.config.drain_timeout + SETTLE_TIMEOUT
            {
                // The summary says what is missing.
                return Ok(true);
            }
        }
    }

    async fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        self.pages.refresh()?;
        let (archived, alarm_events): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM reading WHERE measured_at <= $1), \
                    (SELECT count(*) FROM alarm_event)",
        )
        .bind(self.plan.end)
        .fetch_one(&self.pool)
        .await?;
        Ok(Snapshot {
            simulated: Some(self.clock.now()),
            archived: archived as u64,
            alarm_events: alarm_events as u64,
            pages: self.pages.count() as u64,
            acknowledged: self
                .clinicians
                .tally
                .acknowledged
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// No page waits for delivery and every delivered page is in a receiver's file.
    async fn nothing_pending(&self) -> anyhow::Result<bool> {
        let (pending, delivered): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'pending'), \
                    count(*) FILTER (WHERE status = 'delivered') FROM page",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(pending == 0 && self.pages.count() as i64 >= delivered)
    }

    async fn summarise(&mut self) -> anyhow::Result<Summary> {
        self.pages.refresh()?;
        let plan = &self.plan;
        let alarms = summary::raised_alarms(&self.pool, plan.end).await?;
        let score = fleet_simulator::Score::of(
            &plan.truth.episodes,
            &alarms,
            &plan.truth.scored_kinds,
            plan.end,
        );
        let (acknowledged,): (i64,) =
            sqlx::query_as("SELECT count(DISTINCT alarm_id) FROM acknowledgement")
                .fetch_one(&self.pool)
                .await?;
        let dead_lettered =
            harness::metric_sum(self.config.ports.ingest, "fleet_ingest_dead_letters_total")
                .await
                .context("ingest's metrics do not answer")?;
        let ports = self.config.ports;
        Ok(Summary {
            pumps: plan.pumps,
            clinics: plan.clinics.len(),
            start: plan.start,
            end: plan.end,
            faults: summary::faults_injected(plan),
            score,
            pages_by_clinic: self
                .pages
                .by_clinic
                .iter()
                .map(|(c, p)| (c.clone(), p.len() as u64))
                .collect(),
            escalations: self.pages.all().filter(|p| p.escalation > 0).count() as u64,
            alarms_acknowledged: acknowledged as u64,
            latency_ms: summary::latencies(&self.pages, &self.clock),
            readings: ReadingFigures {
                produced: plan.expected.len() as u64,
                archived: summary::archived_readings(&self.pool, plan.end).await?,
                dead_lettered: dead_lettered as u64,
                missing: summary::missing_readings(&self.pool, plan).await?,
                queued_in_outboxes: harness::metric(
                    self.config.ports.gateway,
                    "fleet_gateway_outbox_depth_readings",
                )
                .await
                .context("the gateways' metrics do not answer")?
                    as u64,
            },
            cpu_seconds: self.processes.cpu_seconds(),
            wall_seconds: self.started.elapsed().as_secs_f64(),
            dashboard: format!("http://127.0.0.1:{}/", ports.api_http),
            login: self.login.clone(),
        })
    }

    /// Stops every process in order (the gateways first, the receivers last).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.clinicians.stop();
        self.pool.close().await;
        self.processes.stop()
    }
}
