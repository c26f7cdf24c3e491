//! `fleetctl registry import` against the real PostgreSQL: idempotent, and a bad file is
//! rejected with its line and changes nothing.

use std::process::{Command, Output};

const GOOD: &str = r#"[[clinic]]
id = "clinic-001"
name = "Northside Pain Center"
webhook = "http://127.0.0.1:50070"
escalation_after = "15m"

[[pump]]
pump_id = "ITP40-100002"
gateway_id = "gw-100002"
clinic_id = "clinic-001"
"#;

async fn database() -> String {
    let url = std::env::var("FLEET_DATABASE_URL")
        .expect("FLEET_DATABASE_URL is not set: scripts/test.sh starts the stack");
    fleet_store::testing::fresh_database(&url, "fleetctl_import")
        .await
        .expect("a database of our own")
}

fn import(database_url: &str, text: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.toml");
    std::fs::write(&path, text).expect("write");
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .env("FLEET_DATABASE_URL", database_url)
        .args(["registry", "import"])
        .arg(&path)
        .output()
        .expect("fleetctl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn importing_twice_changes_nothing_the_second_time() {
    let db = database().await;
    let first = import(&db, GOOD);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("clinics 1 added, 0 changed; pumps 1 added, 0 changed"),
        "{}",
        text(&first.stdout)
    );
    let second = import(&db, GOOD);
    assert!(second.status.success());
    assert!(
        text(&second.stdout).contains("clinics 0 added, 0 changed; pumps 0 added, 0 changed"),
        "{}",
        text(&second.stdout)
    );
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_bad_file_is_rejected_with_its_line_and_changes_nothing() {
    let db = database().await;
    assert!(import(&db, GOOD).status.success());
    // An unknown key on line 9, and a new pump that must not land.
    let bad = GOOD.replace(
        "gateway_id = \"gw-100002\"",
        "gateway_id = \"gw-100002\"\ncolour = \"red\"",
    ) + "\n[[pump]]\npump_id = \"ITP20-100009\"\ngateway_id = \"gw-9\"\nclinic_id = \"clinic-001\"\n";
    let out = import(&db, &bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line 10"), "names the line: {stderr}");
    assert!(stderr.contains("colour"), "names the key: {stderr}");
    // A dangling reference, too.
    let dangling = GOOD.replace("clinic_id = \"clinic-001\"", "clinic_id = \"clinic-999\"");
    let out = import(&db, &dangling);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("line 10"),
        "{}",
        text(&out.stderr)
    );
    // Nothing changed: the good file imports as unchanged.
    let again = import(&db, GOOD);
    assert!(
        text(&again.stdout).contains("pumps 0 added, 0 changed; 0 clinics and 0 pumps kept"),
        "{}",
        text(&again.stdout)
    );
}
