//! The canary: the pipeline's dead man's switch.
//!
//! One synthetic pump ([`pump`]) reports through a real gateway session (the same code
//! as a patient's home gateway) every `--interval`: a reading that raises
//! LOW_RESERVOIR, then a refill that clears it. The reading travels MQTT → ingest →
//! Kafka → detector → notifier, and the page comes back signed to this process's
//! [`receiver`], registered as the operators' clinic ([`register`]). The [`watch`]
//! matches pages to rounds and fires the operator alarm (a log line at ERROR and
//! `fleet_canary_operator_alarm_active`) when a round is out longer than `--deadline`,
//! naming the stage it suspects from whether its readings were acknowledged.
//! `fleet_canary_last_success_timestamp_seconds` feeds the `FleetCanaryMissing` alert,
//! which also covers a canary that is itself down.

pub mod config;
pub mod metrics;
pub mod pump;
pub mod receiver;
pub mod register;
pub mod watch;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use fleet_gateway::metrics::GatewayMetrics;
use fleet_gateway::session::{self, SessionConfig};
use fleet_proto::clinic::v1::alarm_receiver_server::AlarmReceiverServer;
use fleet_runtime::serve::{Readiness, serve_metrics};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use config::CanaryConfig;
use metrics::CanaryMetrics;
use watch::{Change, Watch};

/// Readings the canary's gateway keeps while the cloud does not acknowledge them: at
/// two a round, days of rounds at the default interval.
const OUTBOX_CAPACITY: u64 = 10_000;
/// How long a changed registry takes to reach ingest and the notifier.
const REGISTRY_SETTLE: Duration = Duration::from_secs(12);
/// How often the canary's registry entries are checked (two indexed reads), so an
/// import with `--prune` that dropped them is undone within a minute, not after the
/// deadline's operator alarm.
const REGISTRY_CHECK_EVERY: Duration = Duration::from_secs(60);
/// How often the deadline is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub async fn run(config: CanaryConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.check()?;
    let metrics = CanaryMetrics::new();
    // Served with the canary's own: its gateway's connection failures, refused
    // subscriptions and certificate expiry are the operators' to see.
    let gateway_metrics = GatewayMetrics::in_registry(metrics.registry.clone());
    let readiness = Readiness::default();
    let metrics_addr = serve_metrics(
        config.metrics_addr,
        metrics.registry.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    let pool = fleet_store::connect_with_retry(&config.endpoints.database_url, 20)
        .await
        .context("opening the registry database")?;
    let secret = match &config.signing_secret {
        Some(secret) => secret.clone(),
        None => register::registered_secret(&pool, &config.clinic_id)
            .await
            .context("reading the operators' clinic from the registry")?
            .unwrap_or_else(random_secret),
    };
    let first_round = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / config.interval.as_secs().max(1));
    let watch = Arc::new(Mutex::new(
        Watch::new(config.deadline, Instant::now()).starting_at_round(first_round),
    ));

    // The receiver answers before the registry points the notifier at it.
    let incoming = TcpIncoming::bind(config.listen)
        .with_context(|| format!("binding the operator receiver to {}", config.listen))?;
    let webhook = config.webhook(
        incoming
            .local_addr()
            .context("the operator receiver's bound address")?,
    );
    let receiver = receiver::OperatorReceiver {
        pump_id: config.pump_id.clone(),
        secret: secret.clone().into_bytes(),
        watch: Arc::clone(&watch),
        metrics: metrics.clone(),
    };
    let server = tokio::spawn(
        Server::builder()
            .add_service(AlarmReceiverServer::new(receiver))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
    );

    let entries = register::entries(&config, webhook.clone(), &secret);
    let changed = register::ensure(&pool, &entries)
        .await
        .context("registering the canary's clinic and pump")?;
    tracing::info!(
        clinic_id = config.clinic_id,
        pump_id = config.pump_id,
        gateway_id = config.gateway_id,
        webhook,
        changed,
        "canary registered"
    );
    if changed {
        // Ingest and the notifier reload the registry every few seconds (10 s by
        // default); a round sent before they have would be dead-lettered as an unknown
        // pump and counted lost.
        tokio::select! {
            () = tokio::time::sleep(REGISTRY_SETTLE) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        watch::lock(&watch).restart_clock(Instant::now());
    }

    let outbox =
        fleet_gateway::fleet::open_outbox(&config.state_dir, &config.gateway_id, OUTBOX_CAPACITY)?;
    let link = pump::CanaryLink::new(
        &config.pump_id,
        &config.gateway_id,
        config.interval,
        Arc::clone(&watch),
        metrics.rounds_started_total.clone(),
    );
    let mut gateway = tokio::spawn(session::run(
        SessionConfig::new(&config.gateway_id, &config.endpoints.mqtt()),
        outbox,
        link,
        gateway_metrics.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        %metrics_addr,
        receiver = %config.listen,
        interval = %humantime::format_duration(config.interval),
        deadline = %humantime::format_duration(config.deadline),
        "canary running"
    );

    let mut tick = tokio::time::interval(CHECK_EVERY);
    let mut registry_check = tokio::time::interval(REGISTRY_CHECK_EVERY);
    registry_check.reset(); // just registered
    let gateway_result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break None,
            ended = &mut gateway => break Some(ended),
            _ = tick.tick() => {}
            _ = registry_check.tick() => {
                keep_registered(&pool, &entries, &metrics).await;
                continue;
            }
        }
        readiness.set(gateway_metrics.connected.get() > 0);
        let unacknowledged = gateway_metrics.outbox_depth.get() > 0;
        let (change, outstanding, evicted) = {
            let mut w = watch::lock(&watch);
            let change = w.check(Instant::now(), unacknowledged);
            (change, w.outstanding(), w.take_evicted())
        };
        metrics.rounds_outstanding.set(outstanding as i64);
        metrics.rounds_lost_total.inc_by(evicted);
        match change {
            Some(Change::Fired { stage, overdue }) => {
                metrics.operator_alarm_active.set(1);
                metrics
                    .alarms_total
                    .with_label_values(&[stage.label()])
                    .inc();
                tracing::error!(
                    stage = stage.label(),
                    overdue = %humantime::format_duration(round_secs(overdue)),
                    suspects = stage.suspects(),
                    outstanding,
                    "OPERATOR ALARM: the canary's page is overdue; the pipeline is not paging clinics"
                );
                // Puts the canary back at once if an import pruned it.
                keep_registered(&pool, &entries, &metrics).await;
            }
            Some(Change::Recovered { after }) => {
                metrics.operator_alarm_active.set(0);
                tracing::warn!(
                    after = %humantime::format_duration(round_secs(after)),
                    "operator alarm over: the canary is paged again"
                );
            }
            None => {}
        }
    };
    readiness.set(false);
    let gateway_outcome = match gateway_result {
        Some(ended) => ended,
        None => gateway.await,
    };
    gateway_outcome
        .context("the canary's gateway panicked")?
        .context("the canary's gateway")?;
    server
        .await
        .context("the operator receiver panicked")?
        .context("serving the operator receiver")?;
    pool.close().await;
    tracing::info!("canary stopped");
    Ok(())
}

/// Restores the canary's registry entries if they are missing or changed.
async fn keep_registered(
    pool: &sqlx::PgPool,
    entries: &fleet_core::Registry,
    metrics: &CanaryMetrics,
) {
    let restored = match register::is_current(pool, entries).await {
        Ok(true) => Ok(false),
        Ok(false) => register::ensure(pool, entries).await,
        Err(e) => Err(e),
    };
    match restored {
        Ok(true) => tracing::warn!(
            "the canary's clinic or pump was missing or changed in the registry; restored"
        ),
        Ok(false) => {}
        Err(e) => {
            metrics.registry_failures_total.inc();
            tracing::warn!(error = %format!("{e:#}"), "could not check the canary's registry entries");
        }
    }
}

fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
