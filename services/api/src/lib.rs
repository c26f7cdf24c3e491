//! `fleet-api`: the fleet API for clinics' systems, the dashboard and the
//! manufacturer's tools, over gRPC (`fleet.api.v1.FleetApi`) and HTTP/JSON.
//!
//! - `service.rs`: the operations and who may do what (roles, audit log);
//! - `grpc.rs`, `http.rs`: the two transports, thin mappings onto the service;
//! - `model.rs`: what the operations answer.

pub mod grpc;
pub mod http;
pub mod model;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use fleet_proto::api::v1::fleet_api_server::FleetApiServer;
use fleet_runtime::Endpoints;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

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
}

/// Serves both transports until `shutdown`.
pub async fn serve(
    pool: PgPool,
    grpc: tokio::net::TcpListener,
    http: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let service = Arc::new(service::Service::new(pool));
    let incoming = tonic::transport::server::TcpIncoming::from(grpc);
    let grpc_server = tonic::transport::Server::builder()
        .add_service(FleetApiServer::new(grpc::Grpc::new(service.clone())))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let http_server =
        axum::serve(http, http::router(service)).with_graceful_shutdown(shutdown.cancelled_owned());
    tokio::select! {
        served = grpc_server => served.context("serving the gRPC API"),
        served = http_server => served.context("serving the HTTP API"),
    }
}

pub async fn run(config: ApiConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = fleet_store::connect_with_retry(&config.endpoints.database_url, 20)
        .await
        .context("opening the database")?;
    let grpc = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let http = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("listening on {}", config.http_listen))?;
    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, "fleet API serving");
    serve(pool, grpc, http, shutdown).await
}
