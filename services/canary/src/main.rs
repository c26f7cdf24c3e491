//! `fleet-canary`: one synthetic pump, paged through the whole pipeline every minute;
//! an operator alarm when its page is overdue. Run exactly one per deployment.

use clap::Parser;
use fleet_canary::CanaryConfig;

#[derive(Debug, Parser)]
#[command(name = "fleet-canary", version, about)]
struct Cli {
    #[command(flatten)]
    config: CanaryConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::init_logging();
    let cli: Cli = fleet_runtime::config_file::parse();
    let shutdown = fleet_runtime::shutdown::on_signal();
    fleet_canary::run(cli.config, shutdown).await
}
