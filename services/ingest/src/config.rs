//! Configuration of one ingest replica: flags, each also read from a `FLEET_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fleet_runtime::Endpoints;

#[derive(Debug, Clone, Args)]
pub struct IngestConfig {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Pairing from this registry file instead of the database (which `fleetctl
    /// registry import` fills): for a deployment without PostgreSQL, and tests. The file
    /// is read once.
    #[arg(long, env = "FLEET_REGISTRY_FILE")]
    pub registry_file: Option<PathBuf>,
    /// How often the registry's version is polled in the database; a changed registry
    /// is reloaded whole.
    #[arg(long, env = "FLEET_INGEST_REGISTRY_REFRESH", default_value = "10s", value_parser = humantime::parse_duration)]
    pub registry_refresh: Duration,
    /// MQTT client id; unique per replica (two replicas with one id disconnect each other).
    #[arg(long, env = "FLEET_INGEST_CLIENT_ID", default_value = "fleet-ingest-0")]
    pub client_id: String,
    /// Most gateways whose retained status is followed and totalled (about 100 bytes
    /// each); statuses of further gateways are counted as over capacity.
    #[arg(
        long,
        env = "FLEET_INGEST_GATEWAY_STATUS_CAPACITY",
        default_value_t = 200_000
    )]
    pub gateway_status_capacity: usize,
    /// Payloads above this size are dead-lettered (`oversized`) without decoding.
    #[arg(long, env = "FLEET_INGEST_MAX_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_payload_bytes: usize,
    /// Readings stamped further than this ahead of our clock are dead-lettered, so a
    /// gateway with a wrong clock cannot drag the detector's event-time clock ahead.
    #[arg(long, env = "FLEET_INGEST_MAX_FUTURE_SKEW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_future_skew: Duration,
    /// Readings being produced at once; beyond this the replica stops reading MQTT and
    /// the broker holds the rest (back-pressure, never an unbounded queue).
    #[arg(long, env = "FLEET_INGEST_MAX_IN_FLIGHT", default_value_t = 2000)]
    pub max_in_flight: usize,
    /// How often end-to-end acks are sent to gateways (one message per gateway).
    #[arg(long, env = "FLEET_INGEST_ACK_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub ack_interval: Duration,
    #[command(flatten)]
    pub topic_args: fleet_kafka::TopicArgs,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(
        long,
        env = "FLEET_INGEST_METRICS_ADDR",
        default_value = "127.0.0.1:9181"
    )]
    pub metrics_addr: SocketAddr,
}
