//! `fleetctl certs`: a local certificate authority and the certificates of the MQTT
//! link, for the local stack, the demo and the tests (docs/security.md).
//!
//! Layout of `--out DIR`:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt`, `ca.key` | the CA (ECDSA P-256, 10 years); its key never leaves DIR |
//! | `server.crt`, `server.key` | the broker (SAN `127.0.0.1`, `localhost` and any `--server-name`) |
//! | `clients/fleet-ingest.{crt,key}` | ingest's identity |
//! | `clients/fleet-operator.{crt,key}` | fleetctl's and the harness's identity |
//! | `clients/{gateway_id}.{crt,key}` | one per gateway, CN = the gateway id |
//!
//! `clients/` is what `FLEET_MQTT_CERT_DIR` points at. Idempotent: an existing CA is
//! reused (the CA certificate is never rewritten, so every certificate issued before
//! still verifies), an existing client or server certificate is kept unless `renew`.
//! Keys are written mode 0600 and never printed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{Datelike, Duration, Utc};
use fleet_runtime::mqtt::{INGEST_IDENTITY, OPERATOR_IDENTITY};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The CA's distinguished name. Fixed: reusing the CA rebuilds its issuer from this
/// name and the stored key, so a changed name would sign certificates that do not
/// chain to the stored `ca.crt`.
const CA_COMMON_NAME: &str = "fleet MQTT CA";
const ORGANIZATION: &str = "fleet";
/// Names a gateway may not take: they are the service identities (or files) in DIR.
const RESERVED: [&str; 4] = [INGEST_IDENTITY, OPERATOR_IDENTITY, "ca", "server"];
pub const CA_DAYS: i64 = 3650;
/// Leaf certificates: about 13 months, the longest the CA/Browser Forum allows, so
/// a yearly rotation has a month of overlap.
pub const LEAF_DAYS: i64 = 397;

/// What to make.
#[derive(Debug, Clone, Default)]
pub struct CertsPlan {
    pub out: PathBuf,
    pub gateways: Vec<String>,
    /// Extra names (DNS or IP) for the broker's certificate.
    pub server_names: Vec<String>,
    /// Issue the server and client certificates again even if present (rotation).
    pub renew: bool,
}

/// What was done.
#[derive(Debug, Default)]
pub struct CertsReport {
    pub ca_created: bool,
    pub issued: Vec<String>,
    pub kept: usize,
}

/// The client certificate directory of an output directory (`FLEET_MQTT_CERT_DIR`).
pub fn clients_dir(out: &Path) -> PathBuf {
    out.join("clients")
}

/// Makes what `plan` asks for in `plan.out` (see the module's documentation).
pub fn make(plan: &CertsPlan) -> anyhow::Result<CertsReport> {
    for id in &plan.gateways {
        check_gateway_id(id)?;
    }
    let out = &plan.out;
    let clients = clients_dir(out);
    std::fs::create_dir_all(&clients).with_context(|| format!("creating {}", clients.display()))?;
    let mut report = CertsReport::default();
    let (issuer, created) = ca(out)?;
    report.ca_created = created;
    // A new CA invalidates everything issued before it.
    let renew = plan.renew || created;

    let mut server_names: BTreeSet<String> = ["127.0.0.1", "localhost"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    server_names.extend(plan.server_names.iter().cloned());
    let server = Leaf {
        common_name: "fleet MQTT broker".into(),
        names: server_names.into_iter().collect(),
        usage: ExtendedKeyUsagePurpose::ServerAuth,
    };
    issue(&issuer, &server, &out.join("server"), renew, &mut report)?;

    let identities = [INGEST_IDENTITY, OPERATOR_IDENTITY]
        .into_iter()
        .map(str::to_owned)
        .chain(plan.gateways.iter().cloned())
        .collect::<BTreeSet<_>>();
    for id in identities {
        let client = Leaf {
            common_name: id.clone(),
            names: Vec::new(),
            usage: ExtendedKeyUsagePurpose::ClientAuth,
        };
        issue(&issuer, &client, &clients.join(&id), renew, &mut report)?;
    }
    Ok(report)
}

/// A gateway id must be usable as a file name, an MQTT topic level and a certificate
/// CN, and must not be one of the service identities.
pub fn check_gateway_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 64 {
        bail!("gateway id {id:?}: must be 1 to 64 characters");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id.starts_with('.')
    {
        bail!(
            "gateway id {id:?}: only letters, digits, '-', '_' and '.' (not first) can name a certificate"
        );
    }
    if RESERVED.contains(&id) {
        bail!("gateway id {id:?} is reserved for a service identity");
    }
    Ok(())
}

/// The gateway ids of a registry file (contract §5).
pub fn gateways_of_registry(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let registry = fleet_core::registry::Registry::from_toml(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    let ids: BTreeSet<String> = registry
        .pumps
        .values()
        .map(|p| p.gateway_id.clone())
        .collect();
    Ok(ids.into_iter().collect())
}

struct Leaf {
    common_name: String,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = distinguished_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// The CA: loaded from `ca.key` when `ca.crt` and `ca.key` exist, else made. Returns
/// whether it was made now.
fn ca(out: &Path) -> anyhow::Result<(Issuer<'static, KeyPair>, bool)> {
    let (cert_path, key_path) = (out.join("ca.crt"), out.join("ca.key"));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            // The parser's error is about the format; the key's text is not in it.
            let key = KeyPair::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{}: not a usable key ({e})", key_path.display()))?;
            Ok((Issuer::new(ca_params()?, key), false))
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let mut params = ca_params()?;
            validity(&mut params, CA_DAYS);
            let cert = params.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            write_public(&cert_path, &cert.pem())?;
            Ok((Issuer::new(params, key), true))
        }
        _ => bail!(
            "{} holds only half of a CA (ca.crt and ca.key go together); remove it or restore the other",
            out.display()
        ),
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let day =
        |d: chrono::DateTime<Utc>| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let now = Utc::now();
    // A day early: a clock slightly behind must not see a certificate from the future.
    params.not_before = day(now - Duration::days(1));
    params.not_after = day(now + Duration::days(days));
}

/// Issues `leaf` to `{stem}.crt` / `{stem}.key` unless both exist (and not `renew`).
fn issue(
    issuer: &Issuer<'static, KeyPair>,
    leaf: &Leaf,
    stem: &Path,
    renew: bool,
    report: &mut CertsReport,
) -> anyhow::Result<()> {
    let (cert_path, key_path) = (stem.with_extension("crt"), stem.with_extension("key"));
    if !renew && cert_path.exists() && key_path.exists() {
        report.kept += 1;
        return Ok(());
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = distinguished_name(&leaf.common_name);
    params.subject_alt_names = leaf
        .names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![leaf.usage.clone()];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    report.issued.push(leaf.common_name.clone());
    Ok(())
}

/// Writes through a temporary file renamed into place, so a reader never sees half a
/// file and an interrupted run leaves the old one.
fn write_atomically(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    write_atomically(path, pem, 0o600)
}

fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    write_atomically(path, pem, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn plan(out: &Path, gateways: &[&str]) -> CertsPlan {
        CertsPlan {
            out: out.to_owned(),
            gateways: gateways.iter().map(|g| g.to_string()).collect(),
            ..CertsPlan::default()
        }
    }

    #[test]
    fn makes_a_ca_the_broker_the_services_and_each_gateway_with_private_keys() {
        let tmp = tempfile::tempdir().expect("tmp");
        let report = make(&plan(tmp.path(), &["gw-1", "gw-2"])).expect("certs");
        assert!(report.ca_created);
        assert_eq!(report.issued.len(), 5, "{:?}", report.issued);
        for f in [
            "ca.crt",
            "ca.key",
            "server.crt",
            "server.key",
            "clients/fleet-ingest.crt",
            "clients/fleet-operator.key",
            "clients/gw-1.crt",
            "clients/gw-2.key",
        ] {
            assert!(tmp.path().join(f).exists(), "{f}");
        }
        for key in ["ca.key", "server.key", "clients/gw-1.key"] {
            let mode = std::fs::metadata(tmp.path().join(key))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        // Every certificate loads into a TLS client configuration that trusts the CA.
        let mqtt = fleet_runtime::MqttConfig {
            url: "mqtts://127.0.0.1:1".into(),
            ca_file: Some(tmp.path().join("ca.crt")),
            cert_dir: Some(clients_dir(tmp.path())),
            ..Default::default()
        };
        for id in ["gw-1", "fleet-ingest", "fleet-operator"] {
            mqtt.options("c", id).expect(id);
        }
    }

    #[test]
    fn a_second_run_reuses_the_ca_and_keeps_what_exists() {
        let tmp = tempfile::tempdir().expect("tmp");
        make(&plan(tmp.path(), &["gw-1"])).expect("first");
        let ca = std::fs::read(tmp.path().join("ca.crt")).expect("ca");
        let gw1 = std::fs::read(tmp.path().join("clients/gw-1.crt")).expect("gw-1");
        let report = make(&plan(tmp.path(), &["gw-1", "gw-3"])).expect("second");
        assert!(!report.ca_created);
        assert_eq!(report.issued, vec!["gw-3".to_owned()]);
        assert_eq!(std::fs::read(tmp.path().join("ca.crt")).expect("ca"), ca);
        assert_eq!(
            std::fs::read(tmp.path().join("clients/gw-1.crt")).expect("gw-1"),
            gw1
        );
        // Renewal issues new leaves under the same CA.
        let renewed = make(&CertsPlan {
            renew: true,
            ..plan(tmp.path(), &["gw-1"])
        })
        .expect("renew");
        assert!(!renewed.ca_created);
        assert_ne!(
            std::fs::read(tmp.path().join("clients/gw-1.crt")).expect("gw-1"),
            gw1
        );
        assert_eq!(std::fs::read(tmp.path().join("ca.crt")).expect("ca"), ca);
    }

    #[test]
    fn a_certificate_issued_by_a_reused_ca_chains_to_the_stored_ca() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, UnixTime};
        let tmp = tempfile::tempdir().expect("tmp");
        make(&plan(tmp.path(), &[])).expect("first");
        make(&plan(tmp.path(), &["gw-9"])).expect("second, CA reused");
        let ca = CertificateDer::from_pem_file(tmp.path().join("ca.crt")).expect("ca");
        let leaf =
            CertificateDer::from_pem_file(tmp.path().join("clients/gw-9.crt")).expect("leaf");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        verifier
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .expect("gw-9 chains to the stored CA");
    }

    #[test]
    fn gateway_ids_must_be_safe_names_and_not_a_service() {
        for good in ["gw-1", "GW_2.home", "a"] {
            check_gateway_id(good).expect(good);
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "fleet-ingest",
            "fleet-operator",
            "ca",
            ".x",
            "gw 1",
            "gw+",
        ] {
            assert!(check_gateway_id(bad).is_err(), "{bad:?}");
        }
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(make(&plan(tmp.path(), &["fleet-ingest"])).is_err());
    }

    #[test]
    fn half_a_ca_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        make(&plan(tmp.path(), &[])).expect("first");
        std::fs::remove_file(tmp.path().join("ca.key")).expect("rm");
        assert!(make(&plan(tmp.path(), &[])).is_err());
    }
}
