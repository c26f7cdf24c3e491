//! The registry in PostgreSQL: import from the registry file, load for the services.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::{Clinic, PumpAssignment, Registry};
use prometheus::{IntCounter, IntGauge};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What an import changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub clinics_added: usize,
    pub clinics_changed: usize,
    pub pumps_added: usize,
    pub pumps_changed: usize,
    /// Entries in the database but not in the file: removed with `prune`, else kept.
    pub clinics_absent: usize,
    pub pumps_absent: usize,
    pub pruned: bool,
    /// The registry version after the import.
    pub version: i64,
}

impl ImportSummary {
    pub fn changed_anything(&self) -> bool {
        self.clinics_added + self.clinics_changed + self.pumps_added + self.pumps_changed > 0
            || (self.pruned && self.clinics_absent + self.pumps_absent > 0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryStoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("clinic {clinic_id:?}: stored escalation_after {ms} ms is not a valid delay")]
    BadDelay { clinic_id: String, ms: i64 },
}

/// Brings the database in line with `registry` in one transaction: entries added or
/// changed; entries absent from the file are removed only with `prune` (an accidental
/// partial file must not silently unassign pumps). Importing the same file twice
/// changes nothing the second time.
pub async fn import(
    pool: &PgPool,
    registry: &Registry,
    prune: bool,
) -> Result<ImportSummary, RegistryStoreError> {
    let mut tx = pool.begin().await?;
    // One import at a time; readers are not blocked.
    sqlx::query("LOCK TABLE clinic, pump IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let current = load_in(&mut tx).await?;
    let clinics = Diff::of(&registry.clinics, &current.clinics);
    let pumps = Diff::of(&registry.pumps, &current.pumps);
    let mut summary = ImportSummary {
        clinics_added: clinics.added,
        clinics_changed: clinics.changed,
        pumps_added: pumps.added,
        pumps_changed: pumps.changed,
        clinics_absent: clinics.absent.len(),
        pumps_absent: pumps.absent.len(),
        pruned: prune,
        version: 0,
    };

    for clinic in &clinics.upsert {
        sqlx::query(
            "INSERT INTO clinic (id, name, webhook, escalation_after_ms, escalation_webhook, fallback_webhook, signing_secret)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, webhook = EXCLUDED.webhook,
                 escalation_after_ms = EXCLUDED.escalation_after_ms,
                 escalation_webhook = EXCLUDED.escalation_webhook,
                 fallback_webhook = EXCLUDED.fallback_webhook,
                 signing_secret = EXCLUDED.signing_secret, updated_at = now()",
        )
        .bind(&clinic.id)
        .bind(&clinic.name)
        .bind(&clinic.webhook)
        .bind(i64::try_from(clinic.escalation_after.as_millis()).unwrap_or(i64::MAX))
        .bind(&clinic.escalation_webhook)
        .bind(&clinic.fallback_webhook)
        .bind(&clinic.signing_secret)
        .execute(&mut *tx)
        .await?;
    }
    for pump in &pumps.upsert {
        sqlx::query(
            "INSERT INTO pump (pump_id, gateway_id, clinic_id) VALUES ($1, $2, $3)
             ON CONFLICT (pump_id) DO UPDATE SET gateway_id = EXCLUDED.gateway_id,
                 clinic_id = EXCLUDED.clinic_id, updated_at = now()",
        )
        .bind(&pump.pump_id)
        .bind(&pump.gateway_id)
        .bind(&pump.clinic_id)
        .execute(&mut *tx)
        .await?;
    }

    if prune {
        sqlx::query("DELETE FROM pump WHERE pump_id = ANY($1)")
            .bind(&pumps.absent)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM clinic WHERE id = ANY($1)")
            .bind(&clinics.absent)
            .execute(&mut *tx)
            .await?;
    }
    // Without `prune`, absent entries stay, so every kept pump still finds its clinic;
    // with it, only the file's pumps remain, and the file names only its own clinics.

    let version: i64 = if summary.changed_anything() {
        sqlx::query_scalar("UPDATE registry_version SET version = version + 1 RETURNING version")
            .fetch_one(&mut *tx)
            .await?
    } else {
        sqlx::query_scalar("SELECT version FROM registry_version")
            .fetch_one(&mut *tx)
            .await?
    };
    summary.version = version;
    tx.commit().await?;
    Ok(summary)
}

/// How the file's entries compare with the database's, by id.
struct Diff<'a, T> {
    /// New or changed: to be written.
    upsert: Vec<&'a T>,
    added: usize,
    changed: usize,
    /// In the database, not in the file.
    absent: Vec<&'a String>,
}

impl<'a, T: PartialEq> Diff<'a, T> {
    fn of(file: &'a BTreeMap<String, T>, database: &'a BTreeMap<String, T>) -> Self {
        let mut diff = Diff {
            upsert: Vec::new(),
            added: 0,
            changed: 0,
            absent: database
                .keys()
                .filter(|id| !file.contains_key(*id))
                .collect(),
        };
        for (id, entry) in file {
            match database.get(id) {
                Some(existing) if existing == entry => continue,
                Some(_) => diff.changed += 1,
                None => diff.added += 1,
            }
            diff.upsert.push(entry);
        }
        diff
    }
}

/// The registry version: cheap to poll; it moves when an import changed something.
pub async fn version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM registry_version")
        .fetch_one(pool)
        .await
}

/// The whole registry with its version.
pub async fn load(pool: &PgPool) -> Result<(i64, Registry), RegistryStoreError> {
    let mut tx = pool.begin().await?;
    let version: i64 = sqlx::query_scalar("SELECT version FROM registry_version")
        .fetch_one(&mut *tx)
        .await?;
    let registry = load_in(&mut tx).await?;
    tx.commit().await?;
    Ok((version, registry))
}

async fn load_in(tx: &mut sqlx::PgConnection) -> Result<Registry, RegistryStoreError> {
    let mut clinics = BTreeMap::new();
    for row in sqlx::query(
        "SELECT id, name, webhook, escalation_after_ms, escalation_webhook, fallback_webhook, signing_secret FROM clinic",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        let id: String = row.try_get("id")?;
        let ms: i64 = row.try_get("escalation_after_ms")?;
        let escalation_after = u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| RegistryStoreError::BadDelay {
                clinic_id: id.clone(),
                ms,
            })?;
        clinics.insert(
            id.clone(),
            Clinic {
                id,
                name: row.try_get("name")?,
                webhook: row.try_get("webhook")?,
                escalation_after,
                escalation_webhook: row.try_get("escalation_webhook")?,
                fallback_webhook: row.try_get("fallback_webhook")?,
                signing_secret: row.try_get("signing_secret")?,
            },
        );
    }
    let mut pumps = BTreeMap::new();
    for row in sqlx::query("SELECT pump_id, gateway_id, clinic_id FROM pump")
        .fetch_all(&mut *tx)
        .await?
    {
        let pump_id: String = row.try_get("pump_id")?;
        pumps.insert(
            pump_id.clone(),
            PumpAssignment {
                pump_id,
                gateway_id: row.try_get("gateway_id")?,
                clinic_id: row.try_get("clinic_id")?,
            },
        );
    }
    Ok(Registry { clinics, pumps })
}

/// The registry as services use it: the current one at hand, swapped whole on reload.
pub type RegistryWatch = watch::Receiver<Arc<Registry>>;

/// Where a watcher reports: the version in use, and failed refreshes.
#[derive(Debug, Clone)]
pub struct WatchMetrics {
    pub version: IntGauge,
    pub refresh_failures: IntCounter,
}

/// Loads the registry, then polls its version every `refresh` in the background and
/// reloads it when an import moved it. A failed poll keeps the registry in hand (a
/// database blink must not stop pairing or paging) and is logged and counted.
pub async fn watch(
    pool: PgPool,
    refresh: Duration,
    metrics: WatchMetrics,
    shutdown: CancellationToken,
) -> Result<RegistryWatch, RegistryStoreError> {
    let (version, registry) = load(&pool).await?;
    metrics.version.set(version);
    tracing::info!(
        version,
        pumps = registry.pumps.len(),
        clinics = registry.clinics.len(),
        "registry loaded"
    );
    let (tx, rx) = watch::channel(Arc::new(registry));
    tokio::spawn(async move {
        let mut current = version;
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let moved = match self::version(&pool).await {
                Ok(v) => v != current,
                Err(e) => {
                    metrics.refresh_failures.inc();
                    tracing::warn!(error = %e, version = current, "registry refresh failed; the registry in hand stays in use");
                    continue;
                }
            };
            if !moved {
                continue;
            }
            match load(&pool).await {
                Ok((version, registry)) => {
                    tracing::info!(
                        from = current,
                        to = version,
                        pumps = registry.pumps.len(),
                        "registry reloaded"
                    );
                    current = version;
                    metrics.version.set(version);
                    tx.send_replace(Arc::new(registry));
                }
                Err(e) => {
                    metrics.refresh_failures.inc();
                    tracing::warn!(error = %e, version = current, "registry reload failed; the registry in hand stays in use");
                }
            }
        }
    });
    Ok(rx)
}

/// A registry that never changes (a file, for deployments without the database).
pub fn fixed(registry: Registry) -> RegistryWatch {
    let (_tx, rx) = watch::channel(Arc::new(registry));
    rx
}
