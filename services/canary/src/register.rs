//! The canary's place in the registry: the operators' clinic, paged at this process's
//! receiver, and the synthetic pump relayed by the canary's gateway. Written as an
//! import without pruning (nothing else is touched), at start and again whenever the
//! operator alarm fires (an import with `--prune` may have removed them).

use std::time::Duration;

use fleet_core::{Clinic, PumpAssignment, Registry};
use sqlx::PgPool;

use crate::CanaryConfig;

/// The canary's two registry entries.
pub fn entries(config: &CanaryConfig, webhook: String, signing_secret: &str) -> Registry {
    let clinic = Clinic {
        id: config.clinic_id.clone(),
        name: "Fleet operators (canary)".into(),
        webhook,
        // Each round clears its own alarm within seconds; an escalation would only
        // mean the clear is stuck, which the deadline already reports.
        escalation_after: Duration::from_secs(24 * 3600),
        escalation_webhook: None,
        fallback_webhook: None,
        signing_secret: Some(signing_secret.to_owned()),
    };
    let pump = PumpAssignment {
        pump_id: config.pump_id.clone(),
        gateway_id: config.gateway_id.clone(),
        clinic_id: config.clinic_id.clone(),
    };
    Registry {
        clinics: [(clinic.id.clone(), clinic)].into(),
        pumps: [(pump.pump_id.clone(), pump)].into(),
    }
}

/// Writes the entries; whether anything changed (the registry version moved).
pub async fn ensure(pool: &PgPool, entries: &Registry) -> anyhow::Result<bool> {
    let summary = fleet_store::registry::import(pool, entries, false).await?;
    Ok(summary.changed_anything())
}

/// The secret the operators' clinic already has in the registry, if any: a restarted
/// canary keeps it, so the notifier (which reloads the registry only every few
/// seconds) never signs a page with a secret the receiver no longer holds.
pub async fn registered_secret(pool: &PgPool, clinic_id: &str) -> anyhow::Result<Option<String>> {
    let secret: Option<Option<String>> =
        sqlx::query_scalar("SELECT signing_secret FROM clinic WHERE id = $1")
            .bind(clinic_id)
            .fetch_optional(pool)
            .await?;
    Ok(secret.flatten())
}
