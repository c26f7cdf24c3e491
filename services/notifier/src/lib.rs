//! The notifier: pages clinics over gRPC (`fleet.clinic.v1.AlarmReceiver/Deliver`).
//!
//! Data flow in one replica:
//! Kafka `fleet.alarms.v1` → [`intake`] (page written to the delivery log in
//! PostgreSQL, then the offset committed) → [`dispatcher`] (due pages leased from the
//! log, delivered with a deadline, signed; retried with backoff; per-clinic circuit
//! breakers; fallback receiver and operator alarm past a bound; escalation timers).
//! The log is the durable queue and the record: replicas share it safely, and a
//! restart neither loses a page nor re-sends an accepted one.

pub mod breaker;
pub mod config;
pub mod deliver;
pub mod dispatcher;
pub mod intake;
pub mod log;
pub mod metrics;

use std::sync::Arc;

use anyhow::Context;
use fleet_kafka::group_member_config;
use fleet_kafka::lag::{LagContext, LagGauge, with_lag_statistics};
use fleet_runtime::serve::{Readiness, serve_metrics};
use fleet_store::registry::WatchMetrics;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::NotifierConfig;
use metrics::NotifierMetrics;

pub async fn run(config: NotifierConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = NotifierMetrics::new();
    let readiness = Readiness::default();
    let addr = serve_metrics(
        config.metrics_addr,
        metrics.registry.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    if config.signing_secret == "local-development-signing-secret" {
        tracing::warn!(
            "pages are signed with the local development secret: set FLEET_SIGNING_SECRET"
        );
    }
    let clinic_roots = config
        .clinic_ca_file
        .as_deref()
        .map(deliver::load_roots)
        .transpose()?;
    let topics = config.topic_args.topics();
    let brokers = &config.endpoints.kafka_brokers;
    config.topic_args.ensure(brokers, &[&topics.alarms]).await?;
    let pool = fleet_store::connect_with_retry(&config.endpoints.database_url, 20)
        .await
        .context("opening the delivery log database")?;
    let registry = fleet_store::registry::watch(
        pool.clone(),
        config.registry_refresh,
        WatchMetrics {
            version: metrics.registry_version.clone(),
            refresh_failures: metrics.registry_refresh_failures_total.clone(),
        },
        shutdown.clone(),
    )
    .await
    .context("loading the registry")?;
    let consumer: StreamConsumer<LagContext> = with_lag_statistics(&mut group_member_config(
        brokers,
        &config.group,
        config.session_timeout,
    ))
    .create_with_context(LagContext(LagGauge(metrics.consumer_lag_records.clone())))?;
    consumer
        .subscribe(&[&topics.alarms])
        .with_context(|| format!("subscribing to {}", topics.alarms))?;

    let wake = Arc::new(Notify::new());
    let intake = intake::Intake {
        consumer,
        pool: pool.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        wake: Arc::clone(&wake),
    };
    let dispatcher = dispatcher::Dispatcher {
        pool,
        registry,
        config: config.clone(),
        metrics,
        wake,
        clinic_roots,
    };
    tracing::info!(%addr, topic = %topics.alarms, group = %config.group, "notifier running");
    readiness.set(true);
    let intake = tokio::spawn(intake.run(shutdown.clone()));
    dispatcher.run(shutdown).await;
    readiness.set(false);
    let _ = intake.await;
    tracing::info!("notifier stopped");
    Ok(())
}
