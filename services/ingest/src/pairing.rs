//! Which gateway may relay which pump: the registry, from PostgreSQL (refreshed when an
//! import changes it) or, for a deployment without the database, from a fixed file.
//! The pipeline reads the current registry from a `watch` channel: a reload swaps one
//! `Arc`, so triage never waits on the database.

use std::path::Path;

use anyhow::Context;
use fleet_core::Registry;
use fleet_store::registry::RegistryWatch;

/// A registry that never changes, from a file.
pub fn from_file(path: &Path) -> anyhow::Result<RegistryWatch> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading registry file {}", path.display()))?;
    let registry =
        Registry::from_toml(&text).with_context(|| format!("registry file {}", path.display()))?;
    Ok(fleet_store::registry::fixed(registry))
}
