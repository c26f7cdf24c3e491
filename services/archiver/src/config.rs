//! Configuration of one archiver replica: flags, each also read from a `FLEET_*`
//! variable; every default is what production wants.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use fleet_runtime::Endpoints;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimescaleDb {
    Auto,
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct ArchiverConfig {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Consumer group on the readings and alarms topics; replicas in one group share them.
    #[arg(long, env = "FLEET_ARCHIVER_GROUP", default_value = "fleet-archiver")]
    pub group: String,
    /// How long the group waits for a replica that stopped heartbeating before handing
    /// its partitions to the others.
    #[arg(long, env = "FLEET_ARCHIVER_SESSION_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub session_timeout: Duration,
    /// Most records written in one transaction (memory is bounded by this plus the
    /// consumer's fetch queue: the archiver reads no further until a batch is written).
    #[arg(long, env = "FLEET_ARCHIVER_BATCH", default_value_t = 5000)]
    pub batch: usize,
    /// How long a batch may wait to fill up once its first record has arrived.
    #[arg(long, env = "FLEET_ARCHIVER_LINGER", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub linger: Duration,
    /// Store readings in a TimescaleDB hypertable when the server has the extension and
    /// the archive is still empty (`auto`), or always on plain partitioned PostgreSQL
    /// (`off`). The path taken is in the `archive_layout` table and the start-up log.
    #[arg(
        long,
        env = "FLEET_ARCHIVER_TIMESCALEDB",
        value_enum,
        default_value = "auto"
    )]
    pub timescaledb: TimescaleDb,
    #[command(flatten)]
    pub topic_args: fleet_kafka::TopicArgs,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(
        long,
        env = "FLEET_ARCHIVER_METRICS_ADDR",
        default_value = "127.0.0.1:9185"
    )]
    pub metrics_addr: SocketAddr,
}
