//! The registry file parser (`fleetctl registry import`, `fleet-ingest --registry-file`),
//! fed raw bytes as a file read from disk would be.
//!
//! Properties, beyond "never panics":
//! - bytes that are not UTF-8 are refused by the callers' read_to_string; their lossy
//!   decoding is parsed like any text;
//! - a rejection names a line of the file (1 ..= number of lines);
//! - an accepted registry holds what the parser promises: unique ids that are not
//!   blank, every pump's clinic defined, http(s) endpoints, a non-zero escalation
//!   delay, signing secrets of at least 16 bytes;
//! - an accepted registry written back out as TOML parses to the same registry.
#![no_main]

use fleet_core::Registry;
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

// Valid UTF-8 is borrowed as it is; anything else goes through its lossy decoding.
fuzz_target!(|data: &[u8]| check(&String::from_utf8_lossy(data)));

fn check(text: &str) {
    let registry = match Registry::from_toml(text) {
        Ok(registry) => registry,
        Err(e) => {
            let lines = text.matches('\n').count() + 1;
            assert!(
                (1..=lines).contains(&e.line),
                "error names line {} of a {lines}-line file: {e}",
                e.line
            );
            return;
        }
    };
    let endpoint = |url: &str| url.starts_with("http://") || url.starts_with("https://");
    for (id, clinic) in &registry.clinics {
        assert_eq!(id, &clinic.id);
        assert!(!id.trim().is_empty());
        assert!(endpoint(&clinic.webhook));
        assert!(clinic.escalation_webhook.as_deref().is_none_or(endpoint));
        assert!(clinic.fallback_webhook.as_deref().is_none_or(endpoint));
        assert!(!clinic.escalation_after.is_zero());
        assert!(clinic.signing_secret.as_ref().is_none_or(|s| s.len() >= 16));
    }
    for (id, pump) in &registry.pumps {
        assert_eq!(id, &pump.pump_id);
        assert!(!id.trim().is_empty() && !pump.gateway_id.trim().is_empty());
        assert!(registry.clinics.contains_key(&pump.clinic_id));
    }

    let written = to_toml(&registry);
    let again = Registry::from_toml(&written)
        .unwrap_or_else(|e| panic!("a registry's own TOML is refused: {e}\n{written}"));
    assert_eq!(
        again, registry,
        "TOML round trip changed the registry\n{written}"
    );
}

fn to_toml(registry: &Registry) -> String {
    let text = |s: &str| Value::String(s.to_owned());
    let clinics = registry.clinics.values().map(|c| {
        let mut t = Table::new();
        t.insert("id".into(), text(&c.id));
        t.insert("name".into(), text(&c.name));
        t.insert("webhook".into(), text(&c.webhook));
        // Exact, whatever the value: seconds and nanoseconds, as humantime reads them.
        let after = c.escalation_after;
        let after = format!("{}s {}ns", after.as_secs(), after.subsec_nanos());
        t.insert("escalation_after".into(), Value::String(after));
        for (key, value) in [
            ("escalation_webhook", &c.escalation_webhook),
            ("fallback_webhook", &c.fallback_webhook),
            ("signing_secret", &c.signing_secret),
        ] {
            if let Some(v) = value {
                t.insert(key.into(), text(v));
            }
        }
        Value::Table(t)
    });
    let pumps = registry.pumps.values().map(|p| {
        let mut t = Table::new();
        t.insert("pump_id".into(), text(&p.pump_id));
        t.insert("gateway_id".into(), text(&p.gateway_id));
        t.insert("clinic_id".into(), text(&p.clinic_id));
        Value::Table(t)
    });
    let mut file = Table::new();
    file.insert("clinic".into(), Value::Array(clinics.collect()));
    file.insert("pump".into(), Value::Array(pumps.collect()));
    toml::to_string(&file).unwrap_or_else(|e| panic!("registry to TOML: {e}"))
}
