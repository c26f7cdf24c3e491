//! `fleet-latency`: alarm latency end to end, from a reading leaving a gateway to the
//! clinic's receiver accepting the page, while the telemetry path carries a fleet's
//! load. Runs the real services against the local stack (`deploy/local/stack.sh up`);
//! the measuring is [`fleet_loadtest::latency`]'s, shared with `fleet-loadtest`'s
//! latency phase. Prints the figures and writes them as JSON (`--out`).

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use fleet_loadtest::harness::{self, StackEnv};
use fleet_loadtest::latency::{self, Plan};

#[derive(Debug, Parser)]
#[command(
    name = "fleet-latency",
    about = "Alarm latency, gateway to clinic, under load"
)]
struct Cli {
    /// Background gateways (one healthy pump each), all in one gateway process.
    #[arg(long, default_value_t = 200)]
    gateways: usize,
    /// Background readings per gateway.
    #[arg(long, default_value_t = 300)]
    readings_per_gateway: usize,
    /// Offered background load in readings/s across the fleet; 0 replays at full
    /// speed, which builds a backlog whenever the path is slower than the gateways.
    /// The default offers a margin over the 5,000 readings/s target: what the path
    /// carried while the probes ran is measured and reported.
    #[arg(long, default_value_t = 6000.0)]
    background_rate: f64,
    /// Probe readings (one pump each), spread over the background replay.
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// Time between two probes.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    probe_every: Duration,
    #[arg(long, default_value = "loadtest/results/alarm-latency.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.background_rate >= 0.0 && cli.background_rate.is_finite(),
        "--background-rate must be 0 (full speed) or a positive number of readings/s"
    );
    anyhow::ensure!(cli.probes > 0, "--probes must be at least 1");
    let env = StackEnv::from_env()?;
    let run = format!("latency-{}", Utc::now().timestamp());
    let dir = harness::kept_dir("fleet-latency-")?;
    let plan = Plan {
        background: harness::healthy_fleet(cli.gateways, cli.readings_per_gateway),
        pace: if cli.background_rate > 0.0 {
            harness::Pace::ReadingsPerSecond {
                total: cli.background_rate,
                gateways: cli.gateways,
            }
        } else {
            harness::Pace::FullSpeed
        },
        probes: cli.probes,
        probe_every: cli.probe_every,
    };
    let measured = latency::measure(&env, &run, &dir, &plan).await?;
    let mut result = measured.json();
    if let Some(fields) = result.as_object_mut() {
        fields.insert("measured_at".into(), Utc::now().to_rfc3339().into());
        fields.insert("background_gateways".into(), cli.gateways.into());
        fields.insert("command".into(), "loadtest/bench-latency.sh".into());
    }
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(parent) = cli.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.out, text + "\n")?;
    Ok(())
}
