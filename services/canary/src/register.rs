//! The canary's place in the registry: the operators' clinic, paged at this process's
//! receiver, and the synthetic pump relayed by the canary's gateway. Written as an
//! import without pruning (nothing else is touched), at start; checked every minute
//! and whenever the operator alarm fires, and written again if an import with
//! `--prune` removed or changed them.

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

/// Whether the registry still holds `entries` as written (two indexed reads; the
/// whole registry is never loaded).
pub async fn is_current(pool: &PgPool, entries: &Registry) -> anyhow::Result<bool> {
    for clinic in entries.clinics.values() {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT webhook, signing_secret FROM clinic WHERE id = $1")
                .bind(&clinic.id)
                .fetch_optional(pool)
                .await?;
        if row != Some((clinic.webhook.clone(), clinic.signing_secret.clone())) {
            return Ok(false);
        }
    }
    for pump in entries.pumps.values() {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT gateway_id, clinic_id FROM pump WHERE pump_id = $1")
                .bind(&pump.pump_id)
                .fetch_optional(pool)
                .await?;
        if row != Some((pump.gateway_id.clone(), pump.clinic_id.clone())) {
            return Ok(false);
        }
    }
    Ok(true)
}
