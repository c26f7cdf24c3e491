//! The fleet API over gRPC (`fleet.api.v1.FleetApi`). Today: `AcknowledgeAlarm`, which
//! records who acknowledged an alarm and stops its escalation.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use fleet_proto::api::v1::fleet_api_server::{FleetApi, FleetApiServer};
use fleet_proto::api::v1::{AcknowledgeAlarmRequest, AcknowledgeAlarmResponse};
use fleet_runtime::Endpoints;
use fleet_store::acknowledgement::{Acknowledged, acknowledge};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Where the gRPC API listens.
    #[arg(long, env = "FLEET_API_ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Api {
    pool: PgPool,
}

impl Api {
    pub fn new(pool: PgPool) -> Self {
        Api { pool }
    }
}

/// Field lengths a clinician's client may send; longer is refused, not cut.
const MAX_FIELD_CHARS: usize = 200;
const MAX_NOTE_CHARS: usize = 2_000;

#[tonic::async_trait]
impl FleetApi for Api {
    async fn acknowledge_alarm(
        &self,
        request: Request<AcknowledgeAlarmRequest>,
    ) -> Result<Response<AcknowledgeAlarmResponse>, Status> {
        let r = request.into_inner();
        for (name, value, max) in [
            ("alarm_id", &r.alarm_id, MAX_FIELD_CHARS),
            ("clinician", &r.clinician, MAX_FIELD_CHARS),
        ] {
            if value.trim().is_empty() {
                return Err(Status::invalid_argument(format!("{name} is empty")));
            }
            if value.chars().count() > max {
                return Err(Status::invalid_argument(format!(
                    "{name} is longer than {max} characters"
                )));
            }
        }
        if r.note.chars().count() > MAX_NOTE_CHARS {
            return Err(Status::invalid_argument(format!(
                "note is longer than {MAX_NOTE_CHARS} characters"
            )));
        }
        let outcome = acknowledge(&self.pool, &r.alarm_id, &r.clinician, &r.note)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, alarm_id = %r.alarm_id, "acknowledgement not recorded");
                Status::unavailable("the acknowledgement could not be recorded; try again")
            })?;
        tracing::info!(alarm_id = %r.alarm_id, clinician = %r.clinician, ?outcome, "alarm acknowledged");
        Ok(Response::new(AcknowledgeAlarmResponse {
            known: outcome == Acknowledged::Known,
        }))
    }
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    pool: PgPool,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(FleetApiServer::new(Api::new(pool)))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .context("serving the fleet API")
}

pub async fn run(config: ApiConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = fleet_store::connect_with_retry(&config.endpoints.database_url, 20)
        .await
        .context("opening the database")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "fleet API serving");
    serve(pool, listener, shutdown).await
}
