//! `fleet-loadtest --quick` as a smoke test: the benchmark runs end to end against the
//! test stack and writes its JSON and its plot. Its figures are not asserted (a shared
//! CI machine is no place for performance thresholds), only that each was measured and
//! nothing was lost: the run itself fails if the detector misses a reading or an alarm,
//! or the receiver a page; this test checks the rest (duplicates in Kafka, connections
//! that failed or dropped, hops without a figure).

use fleet_loadtest::harness::StackEnv;

#[test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
fn the_quick_load_test_measures_every_hop_and_its_ceiling() {
    let env = StackEnv::from_env().expect("stack endpoints");
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, plot) = (dir.path().join("quick.json"), dir.path().join("quick.svg"));
    let status = env
        .command("fleet-loadtest", &env.database_url)
        .expect("binary")
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .arg("--plot")
        .arg(&plot)
        .status()
        .expect("fleet-loadtest runs");
    assert!(
        status.success(),
        "fleet-loadtest --quick failed (see its output above)"
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("result written"))
            .expect("result is JSON");
    println!("{result}");
    assert_eq!(result["quick"], true);
    assert_eq!(result["gateways"], 40);
    assert!(result["readings"].as_u64().unwrap_or_default() >= 40 * 25);
    assert_eq!(
        result["duplicates_in_kafka"], 0,
        "no reading twice in Kafka"
    );
    assert_every_hop_measured(&result);
    assert_connections_held(&result["mqtt_connections"]);
    assert!(result["detector"]["readings"].as_u64().unwrap_or_default() >= 4000);
    assert_eq!(
        result["detector"]["low_reservoir_alarms"], 4,
        "one LOW_RESERVOIR per tenth pump of 40"
    );
    assert_eq!(result["paging"]["pages"], 300);
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.starts_with("<svg"));
    for hop in result["hops"].as_array().into_iter().flatten() {
        let name = hop["hop"].as_str().unwrap_or_default();
        assert!(svg.contains(name), "{name} is not in the plot");
    }
}

/// Every hop, old and new, with a rate and a ceiling: each was measured, in one shape.
fn assert_every_hop_measured(result: &serde_json::Value) {
    let hops = result["hops"].as_array().expect("a hops array");
    let names: Vec<&str> = hops.iter().filter_map(|h| h["hop"].as_str()).collect();
    for expected in [
        "telemetry path / MQTT pub→sub",
        "telemetry path / Kafka produce",
        "detector from Kafka / Kafka consume",
        "notifier → receiver / bare tonic",
        "archive write path / COPY",
        "archiver from Kafka / Kafka consume",
        "archiver from Kafka / COPY",
    ] {
        assert!(
            names.contains(&expected),
            "hop {expected} missing: {names:?}"
        );
    }
    for hop in hops {
        for figure in ["rate_per_s", "ceiling_per_s", "ratio"] {
            let value = hop[figure].as_f64().unwrap_or_default();
            assert!(value > 0.0, "{figure} of {} was not measured", hop["hop"]);
        }
    }
}

/// The idle connections all came up and were all still open when the telemetry path
/// had been measured beside them.
fn assert_connections_held(connections: &serde_json::Value) {
    assert_eq!(connections["requested"], 500, "{connections}");
    assert_eq!(connections["established"], 500, "{connections}");
    assert_eq!(connections["failed"], 0, "{connections}");
    assert_eq!(connections["held_at_end"], 500, "{connections}");
    assert!(connections["rss_kib_after"].as_u64() > connections["rss_kib_before"].as_u64());
}
