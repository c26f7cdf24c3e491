//! `fleetctl stack status` against the real local stack, and against nothing.

use std::process::Command;

#[test]
#[ignore = "needs the local stack: scripts/test.sh starts it and runs ignored tests"]
fn reports_all_three_components_healthy_on_the_local_stack() {
    for var in [
        "FLEET_MQTT_URL",
        "FLEET_KAFKA_BROKERS",
        "FLEET_DATABASE_URL",
    ] {
        assert!(
            std::env::var(var).is_ok(),
            "{var} must be set (eval \"$(deploy/local/stack.sh env)\")"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["stack", "status"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for component in ["mqtt", "kafka", "postgres"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(component) && l.contains(" ok ")),
            "{component} not healthy:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains(":fleet@"),
        "the database password is never printed"
    );
}

#[test]
fn flags_override_the_environment_and_dead_endpoints_fail_loudly() {
    // Port 9 (discard) on loopback: nothing listens there.
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .env("FLEET_MQTT_URL", "mqtt://127.0.0.1:1")
        .args([
            "--mqtt-url",
            "mqtt://127.0.0.1:9",
            "--kafka-brokers",
            "127.0.0.1:9",
        ])
        .args([
            "--database-url",
            "postgres://u:p@127.0.0.1:9/db",
            "stack",
            "status",
        ])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("mqtt      FAILED  mqtt://127.0.0.1:9"),
        "{stdout}"
    );
    assert!(stdout.contains("kafka     FAILED  127.0.0.1:9"), "{stdout}");
    assert!(
        stdout.contains("postgres  FAILED  postgres://u:***@127.0.0.1:9/db"),
        "{stdout}"
    );
}
