//! What every fleet process shares at its edge: where the infrastructure is, and how it
//! logs. Each service and `fleetctl` flatten [`Endpoints`] into their own arguments, so
//! `eval "$(deploy/local/stack.sh env)"` is all a user needs before starting any of them.

use clap::Args;

pub mod backoff;
pub mod config_file;
pub mod input;
pub mod metrics;
pub mod serve;
pub mod shutdown;
pub mod subscription;

pub use backoff::Backoff;

/// The three pieces of infrastructure. Each is read from a `FLEET_*` environment
/// variable; a flag overrides it; the default is the local stack's loopback port.
#[derive(Debug, Clone, Args)]
pub struct Endpoints {
    /// MQTT broker the gateways publish to (`mqtt://host:port`).
    #[arg(long, env = "FLEET_MQTT_URL", default_value = "mqtt://127.0.0.1:18830")]
    pub mqtt_url: String,
    /// Kafka bootstrap servers (`host:port[,host:port...]`).
    #[arg(long, env = "FLEET_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    pub kafka_brokers: String,
    /// PostgreSQL / TimescaleDB connection URL.
    #[arg(
        long,
        env = "FLEET_DATABASE_URL",
        default_value = "postgres://fleet:fleet@127.0.0.1:15432/fleet"
    )]
    pub database_url: String,
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

/// An endpoint that cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("mqtt url {url:?}: {problem} (expected mqtt://host:port)")]
    MqttUrl { url: String, problem: &'static str },
}

/// MQTT client options for `mqtt://host[:port]` (port 1883 when omitted).
pub fn mqtt_options(url: &str, client_id: &str) -> Result<rumqttc::MqttOptions, EndpointError> {
    let bad = |problem| EndpointError::MqttUrl {
        url: url.to_owned(),
        problem,
    };
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| bad("unsupported scheme"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad("bad port"))?),
        None => (authority, 1883),
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok(rumqttc::MqttOptions::new(client_id, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        let o = mqtt_options("mqtt://127.0.0.1:18830", "c").expect("valid");
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 18830));
        let o = mqtt_options("mqtt://broker", "c").expect("valid");
        assert_eq!(o.broker_address().1, 1883);
        for bad in ["http://x:1", "mqtt://:1", "mqtt://h:port", "127.0.0.1:1883"] {
            assert!(mqtt_options(bad, "c").is_err(), "{bad}");
        }
    }
}
