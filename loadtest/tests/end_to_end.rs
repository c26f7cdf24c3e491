//! The whole path, once, small: probe readings published as a gateway would, through
//! ingest (pairing from the registry in PostgreSQL), Kafka, the streaming detector and
//! the notifier, to a clinic receiver that verifies each page's signature. Runs the
//! `fleet-latency` benchmark with a light background; it fails unless every probe's
//! LOW_RESERVOIR page arrives.

use fleet_loadtest::harness::StackEnv;

#[test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
fn a_faulty_reading_from_a_gateway_ends_as_a_signed_page_at_its_clinic() {
    let env = StackEnv::from_env().expect("stack endpoints");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("latency.json");
    let status = env
        .command("fleet-latency", &env.database_url)
        .expect("binary")
        .args(["--gateways", "5", "--readings-per-gateway", "24"])
        .args(["--probes", "10", "--probe-every", "100ms"])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("fleet-latency runs");
    assert!(
        status.success(),
        "some probe's page did not arrive (see its logs above)"
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("result written"))
            .expect("result is JSON");
    println!("{result}");
    assert_eq!(result["probes"], 10);
    let p99 = result["latency_ms"]["p99"].as_f64().expect("p99");
    assert!(p99 > 0.0 && p99 < 60_000.0, "p99 {p99} ms");
}
