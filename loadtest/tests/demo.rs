//! The README's main job in small (`fleet-demo`: 40 pumps, 20 simulated days, three
//! clinics) against the test stack, in its own database and topics: the summary holds
//! every reading archived and none lost, finds every labelled episode, pages every
//! clinic, and the demo then keeps the system running until told to stop, when it
//! stops every process it started and exits cleanly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_loadtest::demo::services::isolated_command;
use fleet_loadtest::harness::{self, Service, StackEnv};

#[test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
fn the_demo_holds_the_pipeline_to_the_ground_truth_and_stops_cleanly() {
    let env = StackEnv::from_env().expect("stack endpoints");
    // The demo runs the binaries it finds beside itself, as scripts/demo.sh builds them;
    // its own database and topics.
    let mut command = isolated_command(&env, "fleet-demo", "demo").expect("set up");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("demo");
    let mut demo = Service::spawn(
        "fleet-demo",
        command
            .args(["--pumps", "40", "--history", "20d", "--speedup", "14400"])
            .args(["--seed", "11", "--free-ports"])
            .arg("--state-dir")
            .arg(&state),
        &dir.path().join("demo.log"),
    )
    .expect("demo starts");

    let summary_file = state.join("summary.json");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !summary_file.exists() {
        assert!(
            demo.is_running(),
            "the demo exited before its summary: {}",
            log(dir.path())
        );
        assert!(Instant::now() < deadline, "no summary: {}", log(dir.path()));
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(200)); // the file is written in one go
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_file).expect("summary"))
            .expect("summary is JSON");
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );

    let readings = &summary["readings"];
    let produced = readings["produced"].as_u64().unwrap_or_default();
    assert!(produced > 40 * 24 * 18, "{produced} readings produced");
    assert_eq!(readings["archived"], produced, "every reading archived");
    assert_eq!(readings["lost"], 0);
    assert_eq!(readings["missing"], 0);
    assert_eq!(readings["dead_lettered"], 0);

    let alarms = &summary["alarms_total"];
    assert!(
        alarms["episodes"].as_u64().unwrap_or_default() > 0,
        "faults were injected"
    );
    assert_eq!(
        alarms["missed"], 0,
        "every labelled episode found: {alarms}"
    );
    assert!(
        alarms["precision"].as_f64().unwrap_or_default() >= 0.8,
        "few false alarms: {alarms}"
    );
    for (clinic, pages) in summary["pages_by_clinic"].as_object().expect("pages") {
        assert!(pages.as_u64().unwrap_or_default() > 0, "{clinic} was paged");
    }
    assert!(summary["alarms_acknowledged"].as_u64().unwrap_or_default() > 0);
    assert!(summary["latency_ms"]["pages"].as_u64().unwrap_or_default() > 0);

    // Still running, live, until stopped; then every process it started goes with it.
    std::thread::sleep(Duration::from_secs(2));
    assert!(demo.is_running(), "the demo keeps the system running");
    demo.terminate(Duration::from_secs(90))
        .expect("the demo stops when told to");
    let left = harness::processes_mentioning(&state);
    assert!(left.is_empty(), "processes left running: {left:?}");
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("demo.log")).unwrap_or_default()
}

#[test]
fn the_demo_refuses_a_stack_it_cannot_reach_and_says_which() {
    let output = Command::new(harness::binary("fleet-demo").expect("binary"))
        .env(
            "FLEET_DATABASE_URL",
            "postgres://fleet:fleet@127.0.0.1:1/fleet",
        )
        .args(["--exit", "--free-ports", "--pumps", "2", "--history", "3d"])
        .arg("--state-dir")
        .arg(tempfile::tempdir().expect("tempdir").path())
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("127.0.0.1:1") || stderr.contains("database"),
        "{stderr}"
    );
}
