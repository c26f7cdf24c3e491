//! `fleet-api`: the fleet's gRPC API.

use clap::Parser;
use fleet_api::ApiConfig;

/// `--help` would print the value of `FLEET_DATABASE_URL`, password and all (clap shows
/// an argument's environment value by default): hidden.
#[derive(Debug, Parser)]
#[command(name = "fleet-api", version, about)]
#[command(mut_arg("database_url", |a| a.hide_env_values(true)))]
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
