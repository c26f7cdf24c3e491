//! `fleet-archiver`: one replica of the surveillance archive's writer. Replicas share
//! the consumer group; writes are idempotent, so run as many as needed.

use clap::Parser;
use fleet_archiver::ArchiverConfig;

#[derive(Debug, Parser)]
#[command(name = "fleet-archiver", version, about)]
struct Cli {
    #[command(flatten)]
    config: ArchiverConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::init_logging();
    let cli: Cli = fleet_runtime::config_file::parse();
    let shutdown = fleet_runtime::shutdown::on_signal();
    fleet_archiver::run(cli.config, shutdown).await
}
