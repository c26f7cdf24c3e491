//! The registry file: strict parsing with line numbers.

use std::time::Duration;

use fleet_core::Registry;

const GOOD: &str = r#"
[[clinic]]
id = "clinic-001"
name = "Northside Pain Center"
webhook = "http://127.0.0.1:50070"   # its AlarmReceiver endpoint
escalation_after = "15m"

[[pump]]
pump_id = "ITP40-100002"
gateway_id = "gw-100002"
clinic_id = "clinic-001"
"#;

#[test]
fn parses_the_contract_example() {
    let r = Registry::from_toml(GOOD).expect("valid");
    let clinic = r.clinic("clinic-001").expect("clinic");
    assert_eq!(clinic.escalation_after, Duration::from_secs(900));
    assert_eq!(
        r.pump("ITP40-100002").expect("pump").gateway_id,
        "gw-100002"
    );
}

fn error_line(text: &str) -> (usize, String) {
    let e = Registry::from_toml(text).expect_err("must be rejected");
    (e.line, e.message)
}

#[test]
fn unknown_key_names_its_line() {
    let text = GOOD.replace(
        "gateway_id = \"gw-100002\"",
        "gateway_id = \"gw-100002\"\ncolour = \"red\"",
    );
    let (line, message) = error_line(&text);
    assert_eq!(line, 11, "{message}");
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn dangling_clinic_reference_names_its_line() {
    let text = GOOD.replace("clinic_id = \"clinic-001\"", "clinic_id = \"clinic-404\"");
    let (line, message) = error_line(&text);
    assert_eq!(line, 11);
    assert!(message.contains("clinic-404"), "{message}");
}

#[test]
fn duplicate_pump_and_bad_values_are_rejected() {
    let dup = format!(
        "{GOOD}\n[[pump]]\npump_id = \"ITP40-100002\"\ngateway_id = \"gw-2\"\nclinic_id = \"clinic-001\"\n"
    );
    assert!(error_line(&dup).1.contains("twice"));
    let bad_duration = GOOD.replace("\"15m\"", "\"soon\"");
    assert_eq!(error_line(&bad_duration).0, 6);
    let bad_webhook = GOOD.replace("http://127.0.0.1:50070", "ftp://x");
    assert_eq!(error_line(&bad_webhook).0, 5);
    let not_toml = "[[clinic]\nid=";
    assert_eq!(error_line(not_toml).0, 1);
}
