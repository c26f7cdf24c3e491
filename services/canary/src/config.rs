//! Configuration of the canary: flags, each also read from a `FLEET_*` variable; every
//! default is what production wants.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fleet_runtime::Endpoints;

#[derive(Debug, Clone, Args)]
pub struct CanaryConfig {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// The synthetic pump. Its id should say what it is: it shows in the archive and
    /// on the operator clinic's dashboard.
    #[arg(long, env = "FLEET_CANARY_PUMP_ID", default_value = "CANARY-000001")]
    pub pump_id: String,
    /// The gateway identity the canary publishes as (its own topics, like any home).
    #[arg(long, env = "FLEET_CANARY_GATEWAY_ID", default_value = "gw-canary")]
    pub gateway_id: String,
    /// The operators' clinic in the registry, whose receiver is this process.
    #[arg(long, env = "FLEET_CANARY_CLINIC_ID", default_value = "fleet-operator")]
    pub clinic_id: String,
    /// How often a round starts (one reading that raises an alarm, one that clears it).
    #[arg(long, env = "FLEET_CANARY_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How long a round's page may take before the operator alarm fires.
    #[arg(long, env = "FLEET_CANARY_DEADLINE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Where the operator receiver (a `fleet.clinic.v1.AlarmReceiver`) listens.
    #[arg(long, env = "FLEET_CANARY_LISTEN", default_value = "127.0.0.1:50090")]
    pub listen: SocketAddr,
    /// The receiver's address as the notifier reaches it (the clinic's webhook in the
    /// registry); default `http://` + `--listen`.
    #[arg(long, env = "FLEET_CANARY_ADVERTISE")]
    pub advertise: Option<String>,
    /// The secret the operator clinic's pages are signed with. Default: the one the
    /// registry already holds for the clinic, else a new random one written there
    /// (nothing to configure or leak).
    #[arg(long, env = "FLEET_CANARY_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// Where the canary gateway keeps its outbox.
    #[arg(long, env = "FLEET_CANARY_STATE_DIR", default_value = ".state/canary")]
    pub state_dir: PathBuf,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(
        long,
        env = "FLEET_CANARY_METRICS_ADDR",
        default_value = "127.0.0.1:9187"
    )]
    pub metrics_addr: SocketAddr,
}

impl CanaryConfig {
    /// The receiver's webhook as registered, given the address it is bound to (which
    /// names the port chosen when `--listen` asked for port 0).
    pub fn webhook(&self, bound: SocketAddr) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }

    /// Refuses settings under which the canary could never succeed, naming them.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.interval.is_zero(),
            "--interval must be more than zero"
        );
        anyhow::ensure!(
            self.deadline > self.interval,
            "--deadline ({}) must be longer than --interval ({}): a round needs time to come back",
            humantime::format_duration(self.deadline),
            humantime::format_duration(self.interval)
        );
        if let Some(secret) = &self.signing_secret {
            anyhow::ensure!(
                secret.len() >= 16,
                "--signing-secret must be at least 16 characters"
            );
        }
        Ok(())
    }
}
