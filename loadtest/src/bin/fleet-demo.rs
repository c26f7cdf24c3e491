//! `fleet-demo`: the README's main job. A simulated fleet (3 clinics, 200 pumps) plays
//! its last 60 days through the whole pipeline faster than real time, with the
//! realistic fault mix; then the summary; then the system keeps running, live, for the
//! dashboard until Ctrl-C (or exits with `--exit`). Needs the stack running
//! (`scripts/demo.sh` brings it up first and stops it afterwards).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fleet_loadtest::demo::services::Ports;
use fleet_loadtest::demo::{Demo, DemoConfig};
use fleet_loadtest::harness::StackEnv;
use fleet_runtime::Endpoints;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-demo",
    about = "The whole pipeline over a simulated fleet, held to its ground truth"
)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    #[arg(long, default_value_t = 3)]
    clinics: usize,
    #[arg(long, default_value_t = 200)]
    pumps: usize,
    /// How far back the simulated history starts (it ends now).
    #[arg(long, default_value = "60d", value_parser = humantime::parse_duration)]
    history: Duration,
    /// Simulated time runs this many times faster than real time until it reaches now
    /// (the default plays 60 days in about six minutes).
    #[arg(long, default_value_t = 14_400.0)]
    speedup: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where logs, pages, outboxes, the registry and summary.json go.
    #[arg(long, default_value = ".state/demo/run")]
    state_dir: PathBuf,
    /// The first clinic's receiver port; the others follow.
    #[arg(long, default_value_t = 50071)]
    receiver_port: u16,
    /// Every listening port picked free (for tests beside a running demo).
    #[arg(long)]
    free_ports: bool,
    /// An unacknowledged urgent alarm is paged again after this long.
    #[arg(long, default_value = "10m")]
    escalation_after: String,
    #[arg(
        long,
        env = "FLEET_SIGNING_SECRET",
        default_value = "local-development-signing-secret",
        hide_env_values = true
    )]
    signing_secret: String,
    /// Exit once the summary is printed instead of running on live.
    #[arg(long)]
    exit: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::init_logging();
    let cli = Cli::parse();
    let shutdown = fleet_runtime::shutdown::on_signal();
    let config = DemoConfig {
        env: StackEnv {
            mqtt_url: cli.endpoints.mqtt_url,
            kafka_brokers: cli.endpoints.kafka_brokers,
            database_url: cli.endpoints.database_url,
        },
        dir: cli.state_dir.clone(),
        clinics: cli.clinics.max(1),
        pumps: cli.pumps.max(1),
        history: chrono::Duration::from_std(cli.history)?,
        speedup: cli.speedup,
        seed: cli.seed,
        ports: if cli.free_ports {
            Ports::free()?
        } else {
            Ports::defaults()
        },
        first_receiver_port: (!cli.free_ports).then_some(cli.receiver_port),
        escalation_after: cli.escalation_after,
        secret: cli.signing_secret,
        drain_timeout: Duration::from_secs(300),
    };
    eprintln!(
        "demo: {} pumps under {} clinics, the last {:.1} days simulated {}× faster than real time",
        config.pumps,
        config.clinics,
        cli.history.as_secs_f64() / 86_400.0,
        config.speedup
    );
    let mut demo = Demo::start(config).await?;
    let summary = match demo.play_history(&shutdown).await {
        Ok(Some(summary)) => summary,
        Ok(None) => {
            eprintln!("demo: interrupted before the end of the history; stopping the services");
            return demo.stop().await;
        }
        Err(e) => {
            demo.stop().await?;
            return Err(e);
        }
    };
    println!("{}", summary.render());
    let json = cli.state_dir.join("summary.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&summary.to_json())? + "\n",
    )?;
    println!("  (the figures as JSON: {})", json.display());
    if !cli.exit {
        println!("\nThe fleet carries on live. Ctrl-C stops every service.");
        shutdown.cancelled().await;
    }
    eprintln!("demo: stopping the services");
    demo.stop().await?;
    let readings = &summary.readings;
    anyhow::ensure!(
        readings.lost() == 0,
        "{} readings were lost",
        readings.lost()
    );
    anyhow::ensure!(
        readings.missing == 0,
        "{} readings were not archived in time (the pipeline fell behind)",
        readings.missing
    );
    Ok(())
}
