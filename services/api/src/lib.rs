//! `fleet-api`: the fleet API for clinics' systems, the dashboard and the
//! manufacturer's tools, over gRPC (`fleet.api.v1.FleetApi`) and HTTP/JSON.
//!
//! - `service.rs`: the operations and who may do what (roles, audit log);
//! - `grpc.rs`, `http.rs`: the two transports, thin mappings onto the service;
//! - `model.rs`: what the operations answer;
//! - `limits.rs`: who is calling (address, trusted proxies) and the rate limits;
//! - `metrics.rs`: calls by transport, operation and outcome, with their latency
//!   (served with `/healthz` and `/readyz` on `--metrics-addr`).

pub mod grpc;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fleet_proto::api::v1::fleet_api_server::FleetApiServer;
use fleet_runtime::Endpoints;
use fleet_runtime::serve::Readiness;
use limits::{Limits, LimitsConfig};
use metrics::ApiMetrics;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// `Debug` shows no password: `Endpoints`' own `Debug` redacts its URLs.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Where the gRPC API listens.
    #[arg(long, env = "FLEET_API_ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Where the HTTP/JSON API listens (port 0 picks a free port; the address is logged).
    #[arg(long, env = "FLEET_API_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "FLEET_API_METRICS_ADDR", default_value = "127.0.0.1:9186")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub limits: LimitsConfig,
}

/// How often readiness checks the database.
const READINESS_EVERY: Duration = Duration::from_secs(5);

/// Serves both transports until `shutdown`, counting every call in `metrics`, under
/// the limits of `limits`.
pub async fn serve(
    pool: PgPool,
    grpc: tokio::net::TcpListener,
    http: tokio::net::TcpListener,
    metrics: ApiMetrics,
    limits: &LimitsConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tokio::spawn(watch_database(
        pool.clone(),
        metrics.readiness.clone(),
        shutdown.clone(),
    ));
    let limits = Arc::new(Limits::new(limits));
    tokio::spawn(sweep_limits(limits.clone(), shutdown.clone()));
    let service = Arc::new(service::Service::new(pool, limits, metrics.clone()));
    let incoming = tonic::transport::server::TcpIncoming::from(grpc);
    let grpc_server = tonic::transport::Server::builder()
        .add_service(FleetApiServer::new(grpc::Grpc::new(
            service.clone(),
            metrics.clone(),
        )))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    // With the peer's address: the audit log and the limits need it.
    let http_server = axum::serve(
        http,
        http::router(service, metrics).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned());
    tokio::select! {
        served = grpc_server => served.context("serving the gRPC API"),
        served = http_server => served.context("serving the HTTP API"),
    }
}

/// Forgets idle callers and logs the refusals, every [`limits::SWEEP_EVERY`].
async fn sweep_limits(limits: Arc<Limits>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(limits::SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => limits.sweep(),
            () = shutdown.cancelled() => return,
        }
    }
}

/// Ready while the database answers: every operation needs it.
async fn watch_database(pool: PgPool, readiness: Readiness, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(READINESS_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let answered =
            tokio::time::timeout(READINESS_EVERY, sqlx::query("SELECT 1").execute(&pool))
                .await
                .is_ok_and(|r| r.is_ok());
        if readiness.is_ready() && !answered {
            tracing::warn!("the database does not answer: not ready");
        }
        readiness.set(answered);
    }
}

pub async fn run(config: ApiConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = ApiMetrics::new();
    let metrics_addr = fleet_runtime::serve::serve_metrics(
        config.metrics_addr,
        metrics.registry.clone(),
        metrics.readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    let pool = fleet_store::connect_with_retry(&config.endpoints.database_url, 20)
        .await
        .context("opening the database")?;
    let grpc = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let http = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("listening on {}", config.http_listen))?;
    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, metrics = %metrics_addr, "fleet API serving");
    serve(pool, grpc, http, metrics, &config.limits, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: ApiConfig,
    }

    #[test]
    fn the_config_debug_shows_no_password() {
        let cli = Cli::try_parse_from([
            "fleet-api",
            "--database-url",
            "postgres://fleet:Pa55-debug-leak@127.0.0.1:5432/fleet",
            "--trusted-proxy",
            "10.0.0.0/8,192.0.2.1",
        ])
        .expect("parses");
        let shown = format!("{cli:?} {:#?}", cli.config);
        assert!(!shown.contains("Pa55-debug-leak"), "{shown}");
        assert!(shown.contains("fleet:***@127.0.0.1"), "{shown}");
        assert_eq!(cli.config.limits.trusted_proxies.len(), 2);
        assert_eq!(cli.config.limits.auth_failure_burst.get(), 5);
    }
}
