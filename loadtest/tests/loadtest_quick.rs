//! `fleet-loadtest --quick` as a smoke test: the benchmark runs end to end against the
//! test stack and writes its JSON and its plot. Its figures are not asserted (a shared
//! CI machine is no place for performance thresholds), only that each was measured.

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
    for figure in [
        "pipeline_readings_per_s",
        "raw_mqtt_msgs_per_s",
        "raw_kafka_produce_msgs_per_s",
        "raw_copy_rows_per_s",
        "archive_write_path_rows_per_s",
        "ratio_to_slower_raw",
        "archive_ratio_to_copy",
        "raw_kafka_consume_msgs_per_s",
        "archiver_from_kafka_rows_per_s",
        "archiver_ratio_to_consume",
    ] {
        let value = result[figure].as_f64().unwrap_or_default();
        assert!(value > 0.0, "{figure} was not measured: {}", result[figure]);
    }
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.starts_with("<svg") && svg.contains("archive write path / COPY"));
}
