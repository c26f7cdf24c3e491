//! The detector service: the alarm rules of `fleet_core::detect`, run two ways with the
//! same code.
//!
//! - [`replay`]: over a file of readings, in file order, with the fleet watermark as the
//!   clock; deterministic output (the contract's replay CLI).
//! - [`stream`]: as a Kafka consumer group member on the readings topic, one detector
//!   per partition, alarm events to the alarms topic, state and offsets checkpointed
//!   together in PostgreSQL.

pub mod baseline;
pub mod replay;
pub mod stream;

pub use replay::{ReplaySummary, replay, replay_baseline, replay_files};

/// The detection thresholds: the contract's defaults, or a TOML file's changes to them.
pub fn load_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<fleet_core::detect::DetectorConfig> {
    let Some(path) = path else {
        return Ok(fleet_core::detect::DetectorConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading detector config {}: {e}", path.display()))?;
    fleet_core::detect::DetectorConfig::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("detector config {}: {e}", path.display()))
}
