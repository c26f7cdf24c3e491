//! What the demo will simulate, worked out before anything runs: the fleet (the same
//! spec the gateway process builds from the same flags), its ground truth, the readings
//! its gateways will produce over the simulated history, and the registry that puts
//! its pumps under the demo's clinics.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_core::Registry;
use fleet_gateway::simulated::fleet_spec;
use fleet_simulator::{Fleet, FleetSpec, GroundTruth};
use sqlx::PgPool;

/// The demo clinics' names, in registry order (more clinics than names get numbers).
const CLINIC_NAMES: [&str; 3] = [
    "Northside Pain Center",
    "Riverside Spasticity Clinic",
    "Lakeview Palliative Care",
];

/// A clinic of the demo and where its reference receiver listens.
#[derive(Debug, Clone)]
pub struct DemoClinic {
    pub id: String,
    pub name: String,
    pub receiver_port: u16,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub pumps: usize,
    /// The simulated history: faults are injected in it; readings carry on after it.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub truth: GroundTruth,
    /// Every `(pump_id, seq)` the gateways produce up to `end`: what the archive must hold.
    pub expected: BTreeSet<(String, u64)>,
    pub clinics: Vec<DemoClinic>,
    /// Pump id → clinic id.
    pub clinic_of: BTreeMap<String, String>,
}

impl Plan {
    pub fn new(
        seed: u64,
        pumps: usize,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        clinics: Vec<DemoClinic>,
    ) -> Plan {
        let spec: FleetSpec = fleet_spec(seed, pumps, start, end);
        let mut fleet = Fleet::new(spec);
        let truth = fleet.truth();
        let expected = fleet
            .advance_until(end)
            .into_iter()
            .map(|r| (r.pump_id, r.seq))
            .collect();
        // Pumps go round the clinics, so each follows a mix of models and faults.
        let clinic_of = truth
            .pumps
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pump_id.clone(), clinics[i % clinics.len()].id.clone()))
            .collect();
        Plan {
            seed,
            pumps,
            start,
            end,
            truth,
            expected,
            clinics,
            clinic_of,
        }
    }

    /// `count` clinics with receivers on consecutive ports from `first_port` (or each on
    /// a free port when `first_port` is `None`).
    pub fn clinics(count: usize, first_port: Option<u16>) -> anyhow::Result<Vec<DemoClinic>> {
        (0..count)
            .map(|i| {
                let port = match first_port {
                    Some(p) => p + u16::try_from(i)?,
                    None => crate::harness::free_port()?,
                };
                Ok(DemoClinic {
                    id: format!("clinic-{:03}", i + 1),
                    name: CLINIC_NAMES
                        .get(i)
                        .map_or_else(|| format!("Demo clinic {}", i + 1), |n| (*n).to_owned()),
                    receiver_port: port,
                })
            })
            .collect()
    }

    /// The registry file (contract section 5) for this fleet: each pump relayed by its
    /// own gateway and followed by its clinic, whose alarms escalate after
    /// `escalation_after` unacknowledged.
    pub fn registry_toml(&self, escalation_after: &str) -> String {
        let mut toml = format!(
            "# The demo fleet: {} simulated pumps (seed {}) under {} clinics.\n",
            self.pumps,
            self.seed,
            self.clinics.len()
        );
        for c in &self.clinics {
            let _ = write!(
                toml,
                "\n[[clinic]]\nid = \"{}\"\nname = \"{}\"\nwebhook = \"http://127.0.0.1:{}\"\nescalation_after = \"{escalation_after}\"\n",
                c.id, c.name, c.receiver_port
            );
        }
        for p in &self.truth.pumps {
            let _ = write!(
                toml,
                "\n[[pump]]\npump_id = \"{}\"\ngateway_id = \"{}\"\nclinic_id = \"{}\"\n",
                p.pump_id, p.gateway_id, self.clinic_of[&p.pump_id]
            );
        }
        toml
    }

    /// Writes this fleet's registry to `dir/registry.toml` and imports it into the
    /// database at `database_url` (checked by the caller: no retrying here). Returns
    /// the pool, for the run's own queries.
    pub async fn install(
        &self,
        database_url: &str,
        dir: &Path,
        escalation_after: &str,
    ) -> anyhow::Result<PgPool> {
        let toml = self.registry_toml(escalation_after);
        let file = dir.join("registry.toml");
        std::fs::write(&file, &toml)?;
        let registry = Registry::from_toml(&toml)
            .with_context(|| format!("the fleet's registry {}", file.display()))?;
        let pool = fleet_store::connect(database_url).await.with_context(|| {
            format!(
                "cannot use the database {} (is the stack up? deploy/local/stack.sh up)",
                fleet_runtime::redact_url(database_url)
            )
        })?;
        fleet_store::registry::import(&pool, &registry, false).await?;
        Ok(pool)
    }
}

#[cfg(test)]
mod tests {
    use fleet_core::Registry;

    use super::*;

    #[test]
    fn the_registry_follows_every_pump_and_spreads_them_over_the_clinics() {
        let end = Utc::now();
        let start = end - chrono::Duration::days(20);
        let plan = Plan::new(
            3,
            12,
            start,
            end,
            Plan::clinics(3, Some(50_071)).expect("clinics"),
        );
        let registry = Registry::from_toml(&plan.registry_toml("10m")).expect("a valid registry");
        assert_eq!(registry.pumps.len(), 12);
        assert_eq!(registry.clinics.len(), 3);
        let per_clinic = plan
            .clinic_of
            .values()
            .filter(|c| *c == "clinic-002")
            .count();
        assert_eq!(per_clinic, 4);
        // Hourly readings for 20 days, less what powered-off gateways never took.
        assert!(
            plan.expected.len() > 12 * 24 * 18,
            "{}",
            plan.expected.len()
        );
        assert!(plan.expected.len() <= 12 * 24 * 20 + 12);
    }
}
