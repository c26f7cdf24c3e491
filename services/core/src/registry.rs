//! The registry file (contract §5): which gateway relays which pump, which clinic
//! follows it, and where that clinic is paged. Parsing is strict: an unknown key, a
//! duplicate id or a dangling reference rejects the whole file, naming the line.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clinic {
    pub id: String,
    pub name: String,
    /// The clinic's `AlarmReceiver` endpoint (`http://` or `https://`).
    pub webhook: String,
    /// How long an unacknowledged HIGH or MEDIUM alarm waits before it escalates.
    pub escalation_after: Duration,
    /// Where escalated pages go (for example the on-call physician's service);
    /// `None`: to `webhook` again, marked as an escalation.
    pub escalation_webhook: Option<String>,
    /// Where a page goes when `webhook` keeps failing past the notifier's bound.
    pub fallback_webhook: Option<String>,
    /// The secret this clinic verifies our page signatures with; `None`: the
    /// notifier's fleet-wide secret.
    pub signing_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpAssignment {
    pub pump_id: String,
    /// The only gateway allowed to relay this pump's readings.
    pub gateway_id: String,
    pub clinic_id: String,
}

/// A loaded, consistent registry: every pump's clinic exists, ids are unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub clinics: BTreeMap<String, Clinic>,
    pub pumps: BTreeMap<String, PumpAssignment>,
}

/// Why a registry file was rejected, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RegistryError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    clinic: Vec<Spanned<ClinicEntry>>,
    #[serde(default)]
    pump: Vec<Spanned<PumpEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClinicEntry {
    id: Spanned<String>,
    name: String,
    webhook: Spanned<String>,
    escalation_after: Spanned<String>,
    // Our additions to the contract's keys, all optional.
    escalation_webhook: Option<Spanned<String>>,
    fallback_webhook: Option<Spanned<String>>,
    signing_secret: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PumpEntry {
    pump_id: Spanned<String>,
    gateway_id: Spanned<String>,
    clinic_id: Spanned<String>,
}

impl Registry {
    /// Parses and checks a registry file's text.
    pub fn from_toml(text: &str) -> Result<Registry, RegistryError> {
        let at = |span: Range<usize>, message: String| RegistryError {
            line: line_of(text, span.start),
            message,
        };
        let file: RegistryFile = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end_matches('\n').to_owned();
            at(e.span().unwrap_or(0..0), message)
        })?;

        let mut registry = Registry::default();
        for entry in file.clinic {
            let span = entry.span();
            let c = entry.into_inner();
            let id = non_empty(&c.id, "clinic id").map_err(|m| at(c.id.span(), m))?;
            let endpoint = |key: &str, value: &Spanned<String>| {
                let url = value.get_ref();
                if url.starts_with("http://") || url.starts_with("https://") {
                    Ok(url.clone())
                } else {
                    Err(at(
                        value.span(),
                        format!("clinic {id:?}: {key} {url:?} must start with http:// or https://"),
                    ))
                }
            };
            let webhook = endpoint("webhook", &c.webhook)?;
            let escalation_webhook = c
                .escalation_webhook
                .as_ref()
                .map(|w| endpoint("escalation_webhook", w))
                .transpose()?;
            let fallback_webhook = c
                .fallback_webhook
                .as_ref()
                .map(|w| endpoint("fallback_webhook", w))
                .transpose()?;
            let signing_secret = match c.signing_secret {
                Some(secret) if secret.get_ref().len() < 16 => {
                    return Err(at(
                        secret.span(),
                        format!("clinic {id:?}: signing_secret must be at least 16 characters"),
                    ));
                }
                other => other.map(Spanned::into_inner),
            };
            let escalation_after = humantime::parse_duration(c.escalation_after.get_ref())
                .map_err(|e| {
                    at(
                        c.escalation_after.span(),
                        format!(
                            "clinic {id:?}: escalation_after {:?} is not a duration like \"15m\" ({e})",
                            c.escalation_after.get_ref()
                        ),
                    )
                })?;
            if escalation_after.is_zero() {
                return Err(at(
                    c.escalation_after.span(),
                    format!("clinic {id:?}: escalation_after must be more than zero"),
                ));
            }
            let clinic = Clinic {
                id: id.to_owned(),
                name: c.name,
                webhook,
                escalation_after,
                escalation_webhook,
                fallback_webhook,
                signing_secret,
            };
            if registry.clinics.insert(clinic.id.clone(), clinic).is_some() {
                return Err(at(span, format!("clinic {id:?} is defined twice")));
            }
        }
        for entry in file.pump {
            let span = entry.span();
            let p = entry.into_inner();
            let pump_id = non_empty(&p.pump_id, "pump_id").map_err(|m| at(p.pump_id.span(), m))?;
            let gateway_id =
                non_empty(&p.gateway_id, "gateway_id").map_err(|m| at(p.gateway_id.span(), m))?;
            let clinic_id = p.clinic_id.get_ref();
            if !registry.clinics.contains_key(clinic_id) {
                return Err(at(
                    p.clinic_id.span(),
                    format!("pump {pump_id:?} names clinic {clinic_id:?}, which is not defined"),
                ));
            }
            let assignment = PumpAssignment {
                pump_id: pump_id.to_owned(),
                gateway_id: gateway_id.to_owned(),
                clinic_id: clinic_id.clone(),
            };
            if registry
                .pumps
                .insert(pump_id.to_owned(), assignment)
                .is_some()
            {
                return Err(at(span, format!("pump {pump_id:?} is defined twice")));
            }
        }
        Ok(registry)
    }

    pub fn pump(&self, pump_id: &str) -> Option<&PumpAssignment> {
        self.pumps.get(pump_id)
    }

    pub fn clinic(&self, clinic_id: &str) -> Option<&Clinic> {
        self.clinics.get(clinic_id)
    }
}

fn non_empty<'a>(value: &'a Spanned<String>, what: &str) -> Result<&'a str, String> {
    let v = value.get_ref().as_str();
    if v.trim().is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(v)
    }
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
