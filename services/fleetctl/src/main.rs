//! `fleetctl`: the operator's command line. Parsing and exit codes live here; the
//! commands themselves are in the library so tests call them directly.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleet_runtime::Endpoints;

#[derive(Debug, Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "Operate the implanted-pump monitoring fleet"
)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with reading files (JSON Lines, the contract's JSON form).
    Readings {
        #[command(subcommand)]
        command: ReadingsCommand,
    },
    /// Check the infrastructure the endpoints point at.
    Stack {
        #[command(subcommand)]
        command: StackCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ReadingsCommand {
    /// Count valid readings; name each invalid line and why. Exits 1 if any is invalid.
    Validate {
        /// JSON Lines file, plain or gzip; `-` reads standard input.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum StackCommand {
    /// A real round trip to each component: MQTT publish/subscribe, a Kafka metadata
    /// request, `SELECT 1`. Exits 1 if any fails.
    Status,
}

/// Exit status for "the input or a component is bad" (1) versus "could not run" (2).
const EXIT_CANNOT_RUN: u8 = 2;

fn main() -> ExitCode {
    fleet_runtime::init_logging();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Readings {
            command: ReadingsCommand::Validate { file },
        } => fleetctl::readings::validate_path(&file).map(|summary| summary.all_valid()),
        Command::Stack {
            command: StackCommand::Status,
        } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(fleetctl::stack::print_status(&cli.endpoints))),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fleetctl: {e:#}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}
