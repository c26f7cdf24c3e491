//! What every fleet process shares at its edge: where the infrastructure is, and how it
//! logs. Each service and `fleetctl` flatten [`Endpoints`] into their own arguments, so
//! `eval "$(deploy/local/stack.sh env)"` is all a user needs before starting any of them.

use std::path::PathBuf;

use clap::Args;

pub mod backoff;
pub mod config_file;
pub mod input;
pub mod metrics;
pub mod mqtt;
pub mod serve;
pub mod shutdown;
pub mod subscription;

pub use backoff::Backoff;
pub use mqtt::MqttConfig;

/// The three pieces of infrastructure. Each is read from a `FLEET_*` environment
/// variable; a flag overrides it; the default is the local stack's loopback port.
#[derive(Clone, Args)]
pub struct Endpoints {
    /// MQTT broker the gateways publish to: `mqtts://host:port` (TLS with a client
    /// certificate, as the local stack runs it) or `mqtt://host:port` (plain).
    #[arg(long, env = "FLEET_MQTT_URL", default_value = "mqtt://127.0.0.1:18830")]
    pub mqtt_url: String,
    /// PEM file of the CA the MQTT broker's certificate must chain to (mqtts only).
    #[arg(long, env = "FLEET_MQTT_CA_FILE")]
    pub mqtt_ca_file: Option<PathBuf>,
    /// PEM client certificate of this process's MQTT identity (mqtts only; with
    /// --mqtt-key-file). Wins over --mqtt-cert-dir.
    #[arg(long, env = "FLEET_MQTT_CERT_FILE")]
    pub mqtt_cert_file: Option<PathBuf>,
    /// PEM private key of --mqtt-cert-file.
    #[arg(long, env = "FLEET_MQTT_KEY_FILE")]
    pub mqtt_key_file: Option<PathBuf>,
    /// Directory of `{identity}.crt` and `{identity}.key` client certificates (mqtts
    /// only): a gateway's identity is its gateway id, ingest's `fleet-ingest`, fleetctl's
    /// `fleet-operator`.
    #[arg(long, env = "FLEET_MQTT_CERT_DIR")]
    pub mqtt_cert_dir: Option<PathBuf>,
    /// Kafka bootstrap servers (`host:port[,host:port...]`).
    #[arg(long, env = "FLEET_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    pub kafka_brokers: String,
    /// PostgreSQL / TimescaleDB connection URL.
    #[arg(
        long,
        env = "FLEET_DATABASE_URL",
        // `--help` would print the variable's value, password and all.
        hide_env_values = true,
        default_value = "postgres://fleet:fleet@127.0.0.1:15432/fleet"
    )]
    pub database_url: String,
}

/// Passwords in the URLs never reach a log through `{:?}`.
impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("mqtt_url", &redact_url(&self.mqtt_url))
            .field("kafka_brokers", &self.kafka_brokers)
            .field("database_url", &redact_url(&self.database_url))
            .finish_non_exhaustive()
    }
}

/// A URL with its password (`user:password@`, `password=` in the query) replaced by
/// `***`, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let (from, to) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
            out.replace_range(from..to, "***");
        }
    }
    if let Some(query_start) = out.find('?') {
        let (base, query) = out.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), so stdout stays free for a
/// command's own output.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

impl Endpoints {
    /// The MQTT broker and this process's TLS material.
    pub fn mqtt(&self) -> MqttConfig {
        MqttConfig {
            url: self.mqtt_url.clone(),
            ca_file: self.mqtt_ca_file.clone(),
            cert_file: self.mqtt_cert_file.clone(),
            key_file: self.mqtt_key_file.clone(),
            cert_dir: self.mqtt_cert_dir.clone(),
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://fleet:s3cret@db:5432/fleet?sslmode=require"),
            "postgres://fleet:***@db:5432/fleet?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://fleet@db/fleet?password=s3cret&x=1"),
            "postgres://fleet@db/fleet?password=***&x=1"
        );
        assert_eq!(redact_url("mqtt://127.0.0.1:1883"), "mqtt://127.0.0.1:1883");
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x"),
            "postgres://u:***@db/x",
            "the last @ ends the user info"
        );
    }
}
