//! What an MQTT client needs to know of its own certificate before it connects: whom
//! it was issued to and until when.
//!
//! Whom: Mosquitto takes the certificate's CN as the client's identity, and its ACL
//! decides by that name. A gateway started with another gateway's certificate would be
//! let in, its readings acknowledged by the broker and then silently dropped by the
//! ACL (MQTT 3.1.1 has no way to say "denied"), so the CN is checked against the
//! identity before any connection ([`super::MqttConfig::options`]).
//!
//! Until when: an expired certificate is refused by the broker, and a home gateway
//! then goes quiet until somebody renews it. [`CertificateExpiry`] exports the earliest
//! expiry among a process's identities, and their CA, as a gauge for an alert weeks
//! ahead, and logs a warning inside [`EXPIRY_WARNING`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntGauge;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{MqttConfig, MqttConfigError, file_error};

/// Inside this much of its expiry a certificate is logged as a warning at start-up.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A certificate's subject CN and end of validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The subject's first common name, if it has one as a string.
    pub common_name: Option<String>,
    /// `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Every certificate in the PEM file at `path`, in file order; a file with none is an
/// error naming it (`what`: "CA file", "certificate").
pub fn pem_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, MqttConfigError> {
    let ders = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if ders.is_empty() {
        return Err(file_error(what, path, "no certificate in it"));
    }
    Ok(ders)
}

/// The facts of every certificate in the PEM file at `path` (a chain: the client's
/// certificate first), in file order.
pub fn read(what: &'static str, path: &Path) -> Result<Vec<CertificateFacts>, MqttConfigError> {
    pem_certificates(what, path)?
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| file_error(what, path, format!("not an X.509 certificate: {e}")))?;
            Ok(CertificateFacts {
                common_name: cert
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .map(str::to_owned),
                not_after: cert.validity().not_after.timestamp(),
            })
        })
        .collect()
}

/// Refuses a client certificate issued to anybody but `identity`.
pub fn check_identity(cert: &Path, identity: &str) -> Result<(), MqttConfigError> {
    let leaf = read("certificate", cert)?.swap_remove(0);
    if leaf.common_name.as_deref() == Some(identity) {
        return Ok(());
    }
    Err(MqttConfigError::WrongIdentity {
        path: cert.to_owned(),
        issued_to: leaf.common_name.unwrap_or_else(|| "(no CN)".to_owned()),
        identity: identity.to_owned(),
    })
}

/// The earliest `notAfter` a TLS connection as `identity` depends on: its certificate
/// chain's and the CA file's. `None` for plain MQTT.
pub fn earliest_expiry(
    config: &MqttConfig,
    identity: &str,
) -> Result<Option<i64>, MqttConfigError> {
    if !config.is_tls() {
        return Ok(None);
    }
    let ca = config.ca_file.as_deref().ok_or(MqttConfigError::NoCa)?;
    let (cert, _) = config.identity_files(identity)?;
    let mut all = read("certificate", &cert)?;
    all.extend(read("CA file", ca)?);
    Ok(all.iter().map(|c| c.not_after).min())
}

/// A process's earliest MQTT certificate expiry, as a gauge (Unix seconds; 0 until one
/// is known, so an alert can ignore processes on plain MQTT).
#[derive(Debug, Clone)]
pub struct CertificateExpiry {
    gauge: IntGauge,
    earliest: Arc<Mutex<Option<i64>>>,
}

impl CertificateExpiry {
    pub fn new(gauge: IntGauge) -> Self {
        CertificateExpiry {
            gauge,
            earliest: Arc::default(),
        }
    }

    /// Reads the expiry of `identity`'s certificates, lowers the gauge to it if it is
    /// the earliest so far, and logs an error when it has passed or a warning when it
    /// is inside [`EXPIRY_WARNING`]. Returns it (`None` for plain MQTT).
    pub fn observe(
        &self,
        config: &MqttConfig,
        identity: &str,
    ) -> Result<Option<i64>, MqttConfigError> {
        let Some(not_after) = earliest_expiry(config, identity)? else {
            return Ok(None);
        };
        {
            // One lock around read and write, so concurrent sessions never leave a
            // later expiry in the gauge.
            let mut earliest = self.earliest.lock().unwrap_or_else(|p| p.into_inner());
            if earliest.is_none_or(|e| not_after < e) {
                *earliest = Some(not_after);
                self.gauge.set(not_after);
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let left_days = (not_after - now) / 86_400;
        if not_after <= now {
            tracing::error!(
                identity,
                expired_days_ago = -left_days,
                "the MQTT certificate (or its CA) has expired: the broker will refuse this client until it is renewed"
            );
        } else if not_after - now <= EXPIRY_WARNING.as_secs() as i64 {
            tracing::warn!(
                identity,
                days_left = left_days,
                "the MQTT certificate (or its CA) expires soon: renew it"
            );
        }
        Ok(Some(not_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    /// A self-signed certificate for `cn` ending `days` from now, in `dir/name.crt`.
    fn certificate(dir: &Path, name: &str, cn: Option<&str>, days: i64) -> std::path::PathBuf {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        let end = SystemTime::now() + Duration::from_secs((days.max(0) as u64) * 86_400);
        params.not_after = end.into();
        if days < 0 {
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
        path
    }

    fn config(dir: &Path) -> MqttConfig {
        MqttConfig {
            url: "mqtts://127.0.0.1:1".into(),
            ca_file: Some(dir.join("ca.crt")),
            cert_dir: Some(dir.to_owned()),
            ..MqttConfig::default()
        }
    }

    #[test]
    fn a_certificate_of_another_identity_is_refused_naming_both() {
        let tmp = tempfile::tempdir().expect("tmp");
        certificate(tmp.path(), "ca", Some("fleet-ca"), 3650);
        let cert = certificate(tmp.path(), "gw-1", Some("gw-2"), 365);
        let e = config(tmp.path())
            .options("c", "gw-1")
            .expect_err("another gateway's certificate");
        let message = e.to_string();
        assert!(matches!(e, MqttConfigError::WrongIdentity { .. }), "{e}");
        assert!(
            message.contains("\"gw-2\"") && message.contains("\"gw-1\""),
            "{message}"
        );
        assert!(message.contains(&cert.display().to_string()), "{message}");
        certificate(tmp.path(), "gw-3", None, 365);
        let e = check_identity(&tmp.path().join("gw-3.crt"), "gw-3").expect_err("no CN");
        assert!(e.to_string().contains("(no CN)"), "{e}");
        certificate(tmp.path(), "gw-4", Some("gw-4"), 365);
        check_identity(&tmp.path().join("gw-4.crt"), "gw-4").expect("its own");
    }

    #[test]
    fn the_earliest_expiry_of_certificate_and_ca_reaches_the_gauge() {
        let tmp = tempfile::tempdir().expect("tmp");
        let config = config(tmp.path());
        certificate(tmp.path(), "ca", Some("fleet-ca"), 100);
        certificate(tmp.path(), "gw-1", Some("gw-1"), 365);
        certificate(tmp.path(), "gw-2", Some("gw-2"), 20);
        let expiry = CertificateExpiry::new(IntGauge::new("g", "h").expect("gauge"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64;
        let days = |t: Option<i64>| t.map(|t| (t - now + 43_200) / 86_400);
        // gw-1's own certificate outlives the CA: the CA's end is what counts.
        assert_eq!(
            days(expiry.observe(&config, "gw-1").expect("read")),
            Some(100)
        );
        assert_eq!(days(Some(expiry.gauge.get())), Some(100));
        assert_eq!(
            days(expiry.observe(&config, "gw-2").expect("read")),
            Some(20)
        );
        assert_eq!(days(Some(expiry.gauge.get())), Some(20));
        // A later one never raises the gauge back.
        expiry.observe(&config, "gw-1").expect("read");
        assert_eq!(days(Some(expiry.gauge.get())), Some(20));
        // An expired certificate is reported, not refused here: the broker decides.
        certificate(tmp.path(), "gw-old", Some("gw-old"), -1);
        let old = expiry
            .observe(&config, "gw-old")
            .expect("read")
            .expect("tls");
        assert!(old < now, "{old} < {now}");
        assert_eq!(expiry.gauge.get(), old);
        // Plain MQTT has no certificate to expire.
        let plain = MqttConfig::plain("mqtt://127.0.0.1:1");
        assert_eq!(expiry.observe(&plain, "gw-1").expect("plain"), None);
    }
}
