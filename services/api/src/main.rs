//! `fleet-api`: the fleet's gRPC API.

use clap::Parser;
use fleet_api::ApiConfig;

#[derive(Debug, Parser)]
#[command(name = "fleet-api", version, about)]
struct Cli {
    #[command(flatten)]
    config: ApiConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::init_logging();
    let cli: Cli = fleet_runtime::config_file::parse();
    fleet_api::run(cli.config, fleet_runtime::shutdown::on_signal()).await
}
