//! `fleet-chaos`: the chaos test. The demo's simulated fleet plays its history through
//! the whole pipeline while every component is killed with SIGKILL and started again,
//! one at a time, in an order drawn from `--seed` (printed first); then the system
//! drains and the run is held to its ground truth: no reading lost or archived twice,
//! every labelled fault paged, no page accepted twice. Exits non-zero when any of that
//! fails. Needs the stack running, and kills and restarts its components through
//! `deploy/local/stack.sh` (the same `FLEET_STATE_DIR` and ports); leaves it up.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fleet_loadtest::chaos::{self, ChaosConfig};
use fleet_loadtest::demo::services::Ports;
use fleet_loadtest::harness::StackEnv;
use fleet_runtime::Endpoints;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-chaos",
    about = "kill -9 every component in turn while the pipeline runs, then check nothing was lost or doubled"
)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    /// How long the killing goes on (the simulated history is as long, at --speedup).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The kill schedule and the fleet are drawn from this seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 60)]
    pumps: usize,
    #[arg(long, default_value_t = 3)]
    clinics: usize,
    /// Mean pause between one component's recovery and the next kill (± 50 %).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Consumer-group members (detector, notifier, archiver) stay down at least this
    /// much longer than the others: past their session timeout (10 s), as a
    /// supervisor's restart back-off would keep them. 0s restarts them at once, which
    /// the local broker (tansu 0.6.0) does not always survive: see docs/chaos.md.
    #[arg(long, default_value = "11s", value_parser = humantime::parse_duration)]
    member_down: Duration,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 14_400.0)]
    speedup: f64,
    /// Where logs, pages and the gateways' outboxes go.
    #[arg(long, default_value = ".state/chaos/run")]
    state_dir: PathBuf,
    /// The summary as JSON (default: summary.json in --state-dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The most a killed component may take to answer again, and then to move.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    recovery_timeout: Duration,
    /// The most the system may take, once the killing stops, to archive every reading.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    #[arg(
        long,
        env = "FLEET_SIGNING_SECRET",
        default_value = "local-development-signing-secret",
        hide_env_values = true
    )]
    signing_secret: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::init_logging();
    let cli = Cli::parse();
    let shutdown = fleet_runtime::shutdown::on_signal();
    let config = ChaosConfig {
        env: StackEnv {
            mqtt_url: cli.endpoints.mqtt_url,
            kafka_brokers: cli.endpoints.kafka_brokers,
            database_url: cli.endpoints.database_url,
        },
        dir: cli.state_dir.clone(),
        clinics: cli.clinics.max(1),
        pumps: cli.pumps.max(1),
        duration: cli.duration,
        interval: cli.interval,
        member_down: cli.member_down,
        speedup: cli.speedup.max(1.0),
        seed: cli.seed,
        ports: Ports::free()?,
        secret: cli.signing_secret,
        recovery_timeout: cli.recovery_timeout,
        drain_timeout: cli.drain_timeout,
    };
    let report = chaos::run(config, &shutdown).await?;
    println!("{}", report.render());
    let out = cli
        .out
        .unwrap_or_else(|| cli.state_dir.join("summary.json"));
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&report.to_json())? + "\n",
    )?;
    println!("  (the figures as JSON: {})", out.display());
    anyhow::ensure!(
        report.passed(),
        "the chaos test failed: see the checks above"
    );
    Ok(())
}
