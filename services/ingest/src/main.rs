//! `fleet-ingest`: one replica of the MQTT → Kafka ingest. Replicas share the MQTT
//! subscription, so run as many as the load needs (each with its own client id).

use clap::Parser;
use fleet_ingest::IngestConfig;

#[derive(Debug, Parser)]
#[command(name = "fleet-ingest", version, about)]
struct Cli {
    #[command(flatten)]
    config: IngestConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::init_logging();
    let cli: Cli = fleet_runtime::config_file::parse();
    let shutdown = fleet_runtime::shutdown::on_signal();
    fleet_ingest::run(cli.config, shutdown).await
}
