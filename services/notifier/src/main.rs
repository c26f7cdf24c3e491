//! `fleet-notifier`: one replica of the clinic pager. Replicas share the alarms topic's
//! consumer group and the delivery log, so run as many as needed.

use clap::Parser;
use fleet_notifier::NotifierConfig;

#[derive(Debug, Parser)]
#[command(name = "fleet-notifier", version, about)]
struct Cli {
    #[command(flatten)]
    config: NotifierConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::init_logging();
    let cli: Cli = fleet_runtime::config_file::parse();
    let shutdown = fleet_runtime::shutdown::on_signal();
    fleet_notifier::run(cli.config, shutdown).await
}
