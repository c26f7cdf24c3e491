//! `fleet-detector`: with no subcommand, a streaming detector replica (Kafka consumer
//! group member, checkpoints in PostgreSQL); `replay` runs the same rules over a file.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fleet_detector::stream::StreamConfig;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-detector",
    version,
    about = "Find the conditions clinics must act on",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Streaming mode (the default).
    #[command(flatten)]
    stream: StreamConfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the detection rules over readings in a file, in file order; write alarm
    /// events as JSON Lines.
    Replay {
        /// JSON Lines readings, plain or gzip; `-` for stdin.
        #[arg(long)]
        input: PathBuf,
        /// Where to write alarm events; `-` for stdout.
        #[arg(long)]
        output: PathBuf,
        /// Relay only the pump's own alarms (the status quo), to compare against.
        #[arg(long)]
        baseline: bool,
        /// Detection thresholds (TOML); keys left out keep the contract's defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli: Cli = fleet_runtime::config_file::parse();
    match cli.command {
        Some(Command::Replay {
            input,
            output,
            baseline,
            config,
        }) => {
            let config = fleet_detector::load_config(config.as_deref())?;
            let summary = fleet_detector::replay_files(&input, &output, config, baseline)?;
            eprintln!(
                "fleet-detector: {} readings, {} invalid lines, {} alarm events",
                summary.readings, summary.invalid_lines, summary.alarm_events
            );
            Ok(())
        }
        None => {
            fleet_runtime::init_logging();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let shutdown = fleet_runtime::shutdown::on_signal();
                fleet_detector::stream::run(cli.stream, shutdown).await
            })
        }
    }
}
