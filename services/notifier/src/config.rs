//! Configuration of one notifier replica: flags, each also read from a `FLEET_*`
//! variable; every default is what production wants.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use fleet_runtime::Endpoints;

#[derive(Debug, Clone, Args)]
pub struct NotifierConfig {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Consumer group on the alarms topic; replicas in one group share it.
    #[arg(long, env = "FLEET_NOTIFIER_GROUP", default_value = "fleet-notifier")]
    pub group: String,
    /// How long the group waits for a replica that stopped heartbeating (a crash)
    /// before handing its partitions to the others.
    #[arg(long, env = "FLEET_NOTIFIER_SESSION_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub session_timeout: std::time::Duration,
    /// Secret pages are signed with, for clinics without their own `signing_secret`.
    /// The default is for the local stack only, and is logged as such.
    #[arg(
        long,
        env = "FLEET_SIGNING_SECRET",
        default_value = "local-development-signing-secret",
        hide_env_values = true
    )]
    pub signing_secret: String,
    /// PEM file of extra root certificates trusted for `https://` clinic endpoints
    /// (clinics with a private CA); the public web roots are always trusted.
    #[arg(long, env = "FLEET_CLINIC_CA_FILE")]
    pub clinic_ca_file: Option<std::path::PathBuf>,
    /// How long one `Deliver` call may take before it counts as failed.
    #[arg(long, env = "FLEET_NOTIFIER_DEADLINE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// First retry delay; doubles per attempt (with jitter) up to `--retry-max`.
    #[arg(long, env = "FLEET_NOTIFIER_RETRY_INITIAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub retry_initial: Duration,
    #[arg(long, env = "FLEET_NOTIFIER_RETRY_MAX", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,
    /// Failed attempts after which a page raises an operator alarm and goes to the
    /// clinic's fallback receiver, if it has one (retries never stop).
    #[arg(long, env = "FLEET_NOTIFIER_FALLBACK_AFTER", default_value_t = 5)]
    pub fallback_after: i32,
    /// Consecutive failures that open a clinic's circuit, and how long it stays open.
    #[arg(long, env = "FLEET_NOTIFIER_BREAKER_THRESHOLD", default_value_t = 5)]
    pub breaker_threshold: u32,
    #[arg(long, env = "FLEET_NOTIFIER_BREAKER_COOL_DOWN", default_value = "10s", value_parser = humantime::parse_duration)]
    pub breaker_cool_down: Duration,
    /// Pages being delivered at once by this replica (across clinics).
    #[arg(long, env = "FLEET_NOTIFIER_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    /// How often the log is checked for due pages and escalations when nothing new
    /// arrived (new alarm events wake the dispatcher at once).
    #[arg(long, env = "FLEET_NOTIFIER_POLL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// How often the registry's version is polled.
    #[arg(long, env = "FLEET_NOTIFIER_REGISTRY_REFRESH", default_value = "10s", value_parser = humantime::parse_duration)]
    pub registry_refresh: Duration,
    #[command(flatten)]
    pub topic_args: fleet_kafka::TopicArgs,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(
        long,
        env = "FLEET_NOTIFIER_METRICS_ADDR",
        default_value = "127.0.0.1:9184"
    )]
    pub metrics_addr: SocketAddr,
}
