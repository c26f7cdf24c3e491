//! Many virtual gateways in one process (load tests and demos). Each has its own MQTT
//! client identity and its own outbox file, exactly as separate homes would.

use std::path::Path;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::link::PumpLink;
use crate::metrics::GatewayMetrics;
use crate::outbox::Outbox;
use crate::session::{self, SessionConfig};

/// The outbox file of one gateway under a state directory.
pub fn outbox_path(state_dir: &Path, gateway_id: &str) -> std::path::PathBuf {
    state_dir.join(gateway_id).join("outbox.redb")
}

/// Opens a gateway's outbox under `state_dir`, creating its directory.
pub fn open_outbox(state_dir: &Path, gateway_id: &str, capacity: u64) -> anyhow::Result<Outbox> {
    let path = outbox_path(state_dir, gateway_id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(Outbox::open(&path, capacity)?)
}

/// Runs every gateway until all end (drained replays) or `shutdown`. The first
/// gateway that fails stops the others: a broken fleet should not look healthy.
pub async fn run<L: PumpLink + 'static>(
    gateways: Vec<(SessionConfig, L)>,
    state_dir: &Path,
    outbox_capacity: u64,
    metrics: GatewayMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for (config, link) in gateways {
        let outbox = open_outbox(state_dir, &config.gateway_id, outbox_capacity)?;
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let gateway_id = config.gateway_id.clone();
        tasks.spawn(async move {
            session::run(config, outbox, link, metrics, shutdown)
                .await
                .with_context(|| format!("gateway {gateway_id}"))
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("gateway task panicked").and_then(|r| r);
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "gateway failed; stopping the fleet");
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
