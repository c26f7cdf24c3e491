//! `fleet-detector`: `replay` (offline, deterministic) today; the streaming consumer
//! comes with the rest of step 3.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fleet_core::detect::DetectorConfig;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-detector",
    version,
    about = "Find the conditions clinics must act on"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay {
            input,
            output,
            baseline,
        } => {
            let summary =
                fleet_detector::replay_files(&input, &output, DetectorConfig::default(), baseline)?;
            eprintln!(
                "fleet-detector: {} readings, {} invalid lines, {} alarm events",
                summary.readings, summary.invalid_lines, summary.alarm_events
            );
        }
    }
    Ok(())
}
