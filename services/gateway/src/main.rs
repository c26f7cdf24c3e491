//! `fleet-gateway`: one home's gateway, or (`--fleet`) many virtual ones in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use fleet_core::gateway_protocol::ReadingEncoding;
use fleet_gateway::link::{ReplayLink, load_replay};
use fleet_gateway::metrics::GatewayMetrics;
use fleet_gateway::session::SessionConfig;
use fleet_gateway::simulated::SimClock;
use fleet_gateway::{fleet, simulated};
use fleet_runtime::Endpoints;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Encoding {
    Pb,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "fleet-gateway",
    version,
    about = "The home gateway: pump link, disk outbox, MQTT"
)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    /// This gateway's identity (its MQTT client id); ignored with --fleet.
    #[arg(long, env = "FLEET_GATEWAY_ID", default_value = "gw-100000")]
    gateway_id: String,
    /// Where outboxes live, one directory per gateway.
    #[arg(
        long,
        env = "FLEET_GATEWAY_STATE_DIR",
        default_value = ".state/gateway"
    )]
    state_dir: PathBuf,
    /// Replay readings from a JSON Lines file (plain or gzip) instead of a simulated pump.
    #[arg(long, env = "FLEET_GATEWAY_REPLAY")]
    replay: Option<PathBuf>,
    /// Host many virtual gateways: every gateway in the replay file, or --pumps simulated ones.
    #[arg(long)]
    fleet: bool,
    /// Simulated pumps (one gateway each) with --fleet.
    #[arg(long, default_value_t = 1)]
    pumps: usize,
    /// Simulated time runs this many times faster than real time until it reaches now.
    #[arg(long, env = "FLEET_GATEWAY_SPEEDUP", default_value_t = 3600.0)]
    speedup: f64,
    /// How far in the past the simulated fleet starts (faults are injected between then
    /// and now).
    #[arg(long, default_value = "60d", value_parser = humantime::parse_duration)]
    history: Duration,
    /// The simulated fleet's start (RFC 3339), instead of --history before now.
    #[arg(long, requires = "end", value_parser = fleet_core::json::parse_timestamp)]
    start: Option<DateTime<Utc>>,
    /// The end of the simulated fleet's injected faults (RFC 3339; readings carry on
    /// past it, live), with --start.
    #[arg(long, requires = "start", value_parser = fleet_core::json::parse_timestamp)]
    end: Option<DateTime<Utc>>,
    /// The wall-clock moment simulated time was at its start (RFC 3339; default: when
    /// this process starts). A harness that sets it knows the simulated clock exactly.
    #[arg(long, value_parser = fleet_core::json::parse_timestamp)]
    clock_origin: Option<DateTime<Utc>>,
    /// Seed of the simulated fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Encoding::Pb)]
    encoding: Encoding,
    /// Readings handed from the replay to the outbox at a time (one fsync each batch).
    #[arg(long, default_value_t = 50)]
    replay_batch: usize,
    /// One replayed batch every this long per gateway (a steady rate; 0s: as fast as acknowledged).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    replay_interval: Duration,
    /// Readings published and not yet acknowledged, per gateway.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Publish a reading again after this long without an ack.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    resend_after: Duration,
    /// Most readings an outbox keeps (bounded disk); routine readings are dropped first.
    #[arg(long, env = "FLEET_GATEWAY_OUTBOX_CAPACITY", default_value_t = 50_000)]
    outbox_capacity: u64,
    /// Exit once the replay has ended and every reading is acknowledged.
    #[arg(long)]
    exit_when_drained: bool,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(
        long,
        env = "FLEET_GATEWAY_METRICS_ADDR",
        default_value = "127.0.0.1:9182"
    )]
    metrics_addr: SocketAddr,
}

impl Cli {
    /// The simulated fleet's span: --start/--end, or --history up to now.
    fn span(&self) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
        if let (Some(start), Some(end)) = (self.start, self.end) {
            if start >= end {
                bail!("--start {start} is not before --end {end}");
            }
            return Ok((start, end));
        }
        let history = chrono::Duration::from_std(self.history).context("history out of range")?;
        let now = Utc::now();
        Ok((now - history, now))
    }

    fn session(&self, gateway_id: &str) -> SessionConfig {
        let mut c = SessionConfig::new(gateway_id, &self.endpoints.mqtt());
        c.encoding = match self.encoding {
            Encoding::Pb => ReadingEncoding::Protobuf,
            Encoding::Json => ReadingEncoding::Json,
        };
        c.window = self.window.max(1);
        c.resend_after = self.resend_after;
        c.exit_when_drained = self.exit_when_drained;
        c
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::init_logging();
    let cli: Cli = fleet_runtime::config_file::parse();
    let shutdown = fleet_runtime::shutdown::on_signal();
    let metrics = GatewayMetrics::new();
    let addr = fleet_runtime::serve::serve_metrics(
        cli.metrics_addr,
        metrics.registry.clone(),
        metrics.readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(metrics = %addr, "gateway process running");

    if let Some(path) = &cli.replay {
        let mut by_gateway = load_replay(path)?;
        if !cli.fleet {
            let readings = by_gateway.remove(&cli.gateway_id).unwrap_or_default();
            if readings.is_empty() {
                bail!(
                    "{} has no readings for gateway {}",
                    path.display(),
                    cli.gateway_id
                );
            }
            by_gateway = [(cli.gateway_id.clone(), readings)].into();
        }
        let gateways = by_gateway
            .into_iter()
            .map(|(gw, readings)| {
                (
                    cli.session(&gw),
                    ReplayLink::new(readings, cli.replay_batch, cli.replay_interval),
                )
            })
            .collect();
        return fleet::run(
            gateways,
            &cli.state_dir,
            cli.outbox_capacity,
            metrics,
            shutdown,
        )
        .await;
    }

    let (start, end) = cli.span()?;
    let pumps = if cli.fleet { cli.pumps.max(1) } else { 1 };
    let clock = SimClock::anchored(
        start,
        cli.clock_origin.unwrap_or_else(Utc::now),
        cli.speedup,
    );
    let links = simulated::links(simulated::fleet_spec(cli.seed, pumps, start, end), clock);
    let gateways = links
        .into_iter()
        .map(|link| {
            let gw = if cli.fleet {
                link.gateway_id().to_owned()
            } else {
                cli.gateway_id.clone()
            };
            (cli.session(&gw), link)
        })
        .collect();
    fleet::run(
        gateways,
        &cli.state_dir,
        cli.outbox_capacity,
        metrics,
        shutdown,
    )
    .await
}
