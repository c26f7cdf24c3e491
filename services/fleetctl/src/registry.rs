//! `fleetctl registry import FILE`: loads the registry file (contract §5) into
//! PostgreSQL. The file is checked whole first (unknown keys, duplicates, dangling
//! references: rejected with the line); then one transaction brings the database in
//! line, so a rejected file changes nothing and importing twice changes nothing.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use fleet_core::Registry;
use fleet_store::registry::{ImportSummary, import};

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file itself is wrong (exit 1).
    #[error("{path}: {source}")]
    File {
        path: String,
        source: fleet_core::RegistryError,
    },
    /// It could not be read or written (exit 2).
    #[error(transparent)]
    CannotRun(#[from] anyhow::Error),
}

/// Checks the file, imports it, and reports what changed on `report`.
pub async fn import_file(
    database_url: &str,
    path: &Path,
    prune: bool,
    mut report: impl Write,
) -> Result<ImportSummary, ImportError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading registry file {}", path.display()))?;
    let registry = Registry::from_toml(&text).map_err(|source| ImportError::File {
        path: path.display().to_string(),
        source,
    })?;
    let pool = fleet_store::connect(database_url)
        .await
        .with_context(|| format!("connecting to {}", fleet_runtime::redact_url(database_url)))?;
    let summary = import(&pool, &registry, prune)
        .await
        .context("importing the registry")?;
    pool.close().await;
    let s = &summary;
    let absent = if s.pruned {
        "removed"
    } else {
        "kept (not in the file; --prune removes them)"
    };
    writeln!(
        report,
        "registry {}: clinics {} added, {} changed; pumps {} added, {} changed; {} clinics and {} pumps {absent}; version {}",
        path.display(),
        s.clinics_added,
        s.clinics_changed,
        s.pumps_added,
        s.pumps_changed,
        s.clinics_absent,
        s.pumps_absent,
        s.version
    )
    .context("writing the report")?;
    Ok(summary)
}
