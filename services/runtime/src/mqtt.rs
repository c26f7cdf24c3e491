//! Every MQTT client's connection options, plain or TLS with a client certificate.
//!
//! `mqtts://host[:port]` (port 8883 when omitted) turns TLS on: the broker is verified
//! against `ca_file` (never the system roots: the broker's certificate comes from the
//! fleet's own CA), and the client presents a certificate, which the broker maps to
//! its identity (Mosquitto's `use_identity_as_username`: the certificate's CN). The
//! identity's certificate is, in order: `cert_file` + `key_file` when both are given
//! (one process, one identity: ingest, fleetctl, a pod with its own secret); otherwise
//! `cert_dir/{identity}.crt` + `cert_dir/{identity}.key` (a process hosting many
//! identities: the gateway process in fleet mode, one per gateway id). docs/security.md
//! has the whole picture.
//!
//! `mqtt://` (or `tcp://`) is plain MQTT; giving it TLS files is an error rather than
//! a silent plain connection, so a deployment that meant TLS cannot run without it.
//!
//! The crypto provider is *ring*, already used by tonic's TLS in this workspace; the
//! configuration is built with it explicitly, so nothing depends on a process-wide
//! default provider.

pub mod certificate;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{ConnectionError, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

/// The identity of ingest replicas (its certificate's CN; the broker's ACL lets it
/// read every gateway's readings and write every gateway's acks).
pub const INGEST_IDENTITY: &str = "fleet-ingest";
/// The identity of operator tools (`fleetctl`, the test and load harness): reads the
/// fleet's topics, writes only the stack's probe topics.
pub const OPERATOR_IDENTITY: &str = "fleet-operator";

/// Where the broker is and how to authenticate to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttConfig {
    pub url: String,
    /// PEM file of the CA(s) the broker's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate (chain) of this client's one identity.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// A directory of `{identity}.crt` / `{identity}.key`, for processes with many.
    pub cert_dir: Option<PathBuf>,
}

/// An MQTT configuration that cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum MqttConfigError {
    #[error("mqtt url {url:?}: {problem} (expected mqtt://host:port or mqtts://host:port)")]
    Url { url: String, problem: &'static str },
    #[error("mqtt url {url:?} is plain MQTT but TLS files are configured ({which}); use mqtts://")]
    TlsFilesWithPlainUrl { url: String, which: &'static str },
    #[error("mqtts needs the broker's CA: set FLEET_MQTT_CA_FILE or --mqtt-ca-file")]
    NoCa,
    #[error("{0} is set without {1}: give both or neither")]
    HalfPair(&'static str, &'static str),
    #[error(
        "no client certificate for identity {identity:?}: set FLEET_MQTT_CERT_FILE and FLEET_MQTT_KEY_FILE, or FLEET_MQTT_CERT_DIR holding {identity}.crt and {identity}.key"
    )]
    NoIdentity { identity: String },
    #[error(
        "certificate {path} is issued to {issued_to:?}, not to {identity:?}: the broker would take this client for {issued_to:?} and its ACL would drop what it publishes"
    )]
    WrongIdentity {
        path: PathBuf,
        issued_to: String,
        identity: String,
    },
    #[error("reading {what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("building the TLS configuration: {0}")]
    Tls(String),
}

impl MqttConfig {
    /// Plain MQTT at `url` (tests, and the defaults).
    pub fn plain(url: impl Into<String>) -> Self {
        MqttConfig {
            url: url.into(),
            ..MqttConfig::default()
        }
    }

    /// The broker at `url` with the TLS files of the `FLEET_MQTT_*` variables (a harness
    /// that was handed the URL separately).
    pub fn from_env_with_url(url: &str) -> Self {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        MqttConfig {
            url: url.to_owned(),
            ca_file: path("FLEET_MQTT_CA_FILE"),
            cert_file: path("FLEET_MQTT_CERT_FILE"),
            key_file: path("FLEET_MQTT_KEY_FILE"),
            cert_dir: path("FLEET_MQTT_CERT_DIR"),
        }
    }

    /// True for `mqtts://`.
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("mqtts://")
    }

    /// Options for a client `client_id` authenticating as `identity` (for a gateway, its
    /// gateway id; otherwise [`INGEST_IDENTITY`] or [`OPERATOR_IDENTITY`]). Reads the
    /// TLS files now, so a missing or unreadable one, or a certificate issued to another
    /// identity, fails here, before any connection.
    pub fn options(&self, client_id: &str, identity: &str) -> Result<MqttOptions, MqttConfigError> {
        let target = parse_url(&self.url)?;
        let mut options = MqttOptions::new(client_id, target.host.clone(), target.port);
        if !target.tls {
            let which = [
                ("FLEET_MQTT_CA_FILE", &self.ca_file),
                ("FLEET_MQTT_CERT_FILE", &self.cert_file),
                ("FLEET_MQTT_KEY_FILE", &self.key_file),
                ("FLEET_MQTT_CERT_DIR", &self.cert_dir),
            ]
            .into_iter()
            .find(|(_, v)| v.is_some());
            if let Some((which, _)) = which {
                return Err(MqttConfigError::TlsFilesWithPlainUrl {
                    url: self.url.clone(),
                    which,
                });
            }
            return Ok(options);
        }
        let ca = self.ca_file.as_deref().ok_or(MqttConfigError::NoCa)?;
        let (cert, key) = self.identity_files(identity)?;
        let config = client_config(ca, &cert, &key)?;
        certificate::check_identity(&cert, identity)?;
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
        Ok(options)
    }

    /// The certificate and key files of `identity`.
    pub fn identity_files(&self, identity: &str) -> Result<(PathBuf, PathBuf), MqttConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => return Ok((cert.clone(), key.clone())),
            (Some(_), None) => {
                return Err(MqttConfigError::HalfPair(
                    "FLEET_MQTT_CERT_FILE",
                    "FLEET_MQTT_KEY_FILE",
                ));
            }
            (None, Some(_)) => {
                return Err(MqttConfigError::HalfPair(
                    "FLEET_MQTT_KEY_FILE",
                    "FLEET_MQTT_CERT_FILE",
                ));
            }
            (None, None) => {}
        }
        let no_identity = || MqttConfigError::NoIdentity {
            identity: identity.to_owned(),
        };
        // An identity is a file name here: nothing that could leave the directory.
        if identity.is_empty() || identity.starts_with('.') || identity.contains(['/', '\\', '\0'])
        {
            return Err(no_identity());
        }
        let dir = self.cert_dir.as_ref().ok_or_else(no_identity)?;
        Ok((
            dir.join(format!("{identity}.crt")),
            dir.join(format!("{identity}.key")),
        ))
    }
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// `mqtt://host[:port]` (1883), `tcp://` (the same), `mqtts://host[:port]` (8883).
pub fn parse_url(url: &str) -> Result<BrokerUrl, MqttConfigError> {
    let bad = |problem| MqttConfigError::Url {
        url: url.to_owned(),
        problem,
    };
    let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (rest, true, 8883)
    } else if let Some(rest) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (rest, false, 1883)
    } else {
        return Err(bad("unsupported scheme"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad("bad port"))?),
        None => (authority, default_port),
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok(BrokerUrl {
        host: host.to_owned(),
        port,
        tls,
    })
}

fn file_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> MqttConfigError {
    MqttConfigError::File {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// A rustls client configuration (ring) trusting only `ca` and presenting `cert`.
/// Key material is never put in an error or a log line: only paths and the parser's
/// complaint.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<rustls::ClientConfig, MqttConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificate::pem_certificates("CA file", ca)? {
        roots.add(c).map_err(|e| file_error("CA file", ca, e))?;
    }
    let chain = certificate::pem_certificates("certificate", cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        // The parser's message names the problem, never the key's bytes.
        file_error("private key", key, e)
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)
        .map_err(|e| MqttConfigError::Tls(e.to_string()))
}

/// Why a connection failed, as a metric label (a short fixed set):
///
/// - `tls`: the TLS handshake failed or the broker refused our certificate (unknown
///   CA, expired, revoked: with TLS 1.3 the refusal arrives as an alert on the first
///   read after the handshake);
/// - `refused`: the broker answered CONNECT with a refusal (not authorised, bad id);
/// - `closed`: the broker closed or reset the connection without a word (what a
///   plain-MQTT client sees from a TLS-only listener);
/// - `unreachable`: nothing listens there, or no route;
/// - `timeout`: no answer in time;
/// - `other`: anything else (a protocol error, a full request queue).
pub fn failure_reason(error: &ConnectionError) -> &'static str {
    match error {
        ConnectionError::Tls(_) => "tls",
        ConnectionError::ConnectionRefused(_) => "refused",
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => "timeout",
        ConnectionError::Io(e) => io_reason(e),
        ConnectionError::MqttState(rumqttc::StateError::Io(e))
        | ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::Io(e))) => {
            io_reason(e)
        }
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => "closed",
        _ => "other",
    }
}

fn io_reason(e: &io::Error) -> &'static str {
    let tls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if tls {
        return "tls";
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::AddrNotAvailable => "unreachable",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe => "closed",
        _ => "other",
    }
}

/// Every label [`failure_reason`] can give, so a metric can start each at 0.
pub const FAILURE_REASONS: [&str; 6] = [
    "tls",
    "refused",
    "closed",
    "unreachable",
    "timeout",
    "other",
];

/// True when a SUBACK refused every topic it answers (MQTT 3.1.1 return code 0x80):
/// what Mosquitto's ACL answers to a subscription the client may not read.
pub fn suback_refused(ack: &rumqttc::SubAck) -> bool {
    !ack.return_codes.is_empty()
        && ack
            .return_codes
            .iter()
            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("mqtt://127.0.0.1:18830").expect("valid");
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("127.0.0.1", 18830, false)
        );
        assert_eq!(parse_url("mqtt://broker").expect("valid").port, 1883);
        assert_eq!(parse_url("tcp://broker").expect("valid").port, 1883);
        let u = parse_url("mqtts://broker").expect("valid");
        assert_eq!((u.port, u.tls), (8883, true));
        assert_eq!(parse_url("mqtts://h:18883/x").expect("valid").port, 18883);
        for bad in [
            "http://x:1",
            "mqtt://:1",
            "mqtt://h:port",
            "127.0.0.1:1883",
            "mqtts://",
            "ssl://h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_urls_need_no_files_and_refuse_them() {
        let plain = MqttConfig::plain("mqtt://127.0.0.1:18830");
        let o = plain.options("c", OPERATOR_IDENTITY).expect("plain");
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 18830));
        assert!(matches!(o.transport(), Transport::Tcp));
        let with_ca = MqttConfig {
            ca_file: Some("/x/ca.crt".into()),
            ..plain
        };
        let e = with_ca
            .options("c", OPERATOR_IDENTITY)
            .expect_err("plain + TLS");
        assert!(e.to_string().contains("FLEET_MQTT_CA_FILE"), "{e}");
    }

    #[test]
    fn identities_come_from_the_pair_or_the_directory() {
        let dir = MqttConfig {
            url: "mqtts://h".into(),
            cert_dir: Some("/certs".into()),
            ..MqttConfig::default()
        };
        assert_eq!(
            dir.identity_files("gw-1").expect("from dir"),
            ("/certs/gw-1.crt".into(), "/certs/gw-1.key".into())
        );
        for bad in ["", "../ca", "a/b", ".hidden"] {
            assert!(dir.identity_files(bad).is_err(), "{bad:?}");
        }
        let pair = MqttConfig {
            cert_file: Some("/a.crt".into()),
            key_file: Some("/a.key".into()),
            ..dir.clone()
        };
        // The explicit pair wins over the directory.
        assert_eq!(
            pair.identity_files("gw-1").expect("pair"),
            ("/a.crt".into(), "/a.key".into())
        );
        let half = MqttConfig {
            cert_file: Some("/a.crt".into()),
            ..dir
        };
        assert!(matches!(
            half.identity_files("gw-1"),
            Err(MqttConfigError::HalfPair(..))
        ));
        let none = MqttConfig::plain("mqtts://h");
        assert!(matches!(
            none.options("c", "gw-1"),
            Err(MqttConfigError::NoCa)
        ));
    }

    #[test]
    fn missing_files_are_named_before_any_connection() {
        let tmp = tempfile::tempdir().expect("tmp");
        let config = MqttConfig {
            url: "mqtts://127.0.0.1:1".into(),
            ca_file: Some(tmp.path().join("ca.crt")),
            cert_dir: Some(tmp.path().to_owned()),
            ..MqttConfig::default()
        };
        let e = config.options("c", "gw-1").expect_err("no files");
        assert!(e.to_string().contains("ca.crt"), "{e}");
        std::fs::write(tmp.path().join("ca.crt"), "not pem").expect("write");
        let e = config.options("c", "gw-1").expect_err("no certificate");
        assert!(e.to_string().contains("no certificate"), "{e}");
    }

    #[test]
    fn failure_reasons() {
        let io = |kind| ConnectionError::Io(io::Error::from(kind));
        assert_eq!(
            failure_reason(&io(io::ErrorKind::ConnectionRefused)),
            "unreachable"
        );
        assert_eq!(failure_reason(&io(io::ErrorKind::UnexpectedEof)), "closed");
        assert_eq!(
            failure_reason(&io(io::ErrorKind::ConnectionReset)),
            "closed"
        );
        // What a plain client sees from a TLS listener: its CONNACK read is reset.
        let reset = ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
        ));
        assert_eq!(failure_reason(&reset), "closed");
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        assert_eq!(failure_reason(&ConnectionError::Io(alert)), "tls");
        assert_eq!(
            failure_reason(&ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::NotAuthorized
            )),
            "refused"
        );
        assert!(FAILURE_REASONS.contains(&failure_reason(&ConnectionError::RequestsDone)));
    }
}
