//! Configuration of one streaming detector replica: flags, each also read from a
//! `FLEET_*` variable; every default is what production wants.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use fleet_runtime::Endpoints;

#[derive(Debug, Clone, Args)]
pub struct StreamConfig {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Detection thresholds (TOML, keys as in `DetectorConfig`); every key left out keeps
    /// the contract's default.
    #[arg(long, env = "FLEET_DETECTOR_CONFIG")]
    pub detector_config: Option<std::path::PathBuf>,
    /// Consumer group; replicas in one group share the partitions.
    #[arg(long, env = "FLEET_DETECTOR_GROUP", default_value = "fleet-detector")]
    pub group: String,
    /// How often each partition's state and offset are checkpointed. Shorter means less
    /// to re-read after a crash or rebalance, more database writes.
    #[arg(long, env = "FLEET_DETECTOR_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// Alarm events in flight (not yet confirmed by the broker) that force an early
    /// checkpoint, so the wait for them stays short and memory stays bounded.
    #[arg(long, env = "FLEET_DETECTOR_MAX_PENDING", default_value_t = 10_000)]
    pub max_pending: usize,
    /// A partition with no records for this long moves its clock on at wall-clock pace,
    /// so a silent partition still raises TELEMETRY_LOST. Keep it well above the gap
    /// between two readings of one partition.
    #[arg(long, env = "FLEET_DETECTOR_IDLE_ADVANCE_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_advance_after: Duration,
    /// How long the group waits for a replica that stopped heartbeating (a crash)
    /// before handing its partitions to the others. Shorter means a faster takeover,
    /// and a greater risk of a needless rebalance during a long pause.
    #[arg(long, env = "FLEET_DETECTOR_SESSION_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub session_timeout: Duration,
    /// Attempts to claim a partition's checkpoint (database down) before the replica
    /// gives up and exits, to be restarted by its supervisor.
    #[arg(long, env = "FLEET_DETECTOR_CLAIM_ATTEMPTS", default_value_t = 12)]
    pub claim_attempts: u32,
    #[command(flatten)]
    pub topic_args: fleet_kafka::TopicArgs,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(
        long,
        env = "FLEET_DETECTOR_METRICS_ADDR",
        default_value = "127.0.0.1:9183"
    )]
    pub metrics_addr: SocketAddr,
}
