//! `fleet-loadtest --quick` as a smoke test: the benchmark runs end to end against the
//! test stack and writes its JSON and its plot. Its figures are not asserted (a shared
//! CI machine is no place for performance thresholds), only that each was measured and
//! nothing was lost: the run itself fails if the detector misses a reading or an alarm,
//! the receiver a page or a probe's page, or Kafka a reading; this test checks the rest
//! (readings counted end to end, duplicates in Kafka, connections that failed or
//! dropped, hops without a figure, the alarm-latency percentiles and histogram and
//! their plot). It runs with a fault mix, so `--faults` is exercised too.

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
        .args(["--faults", "low-reservoir=0.1,occlusion=0.05"])
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
    assert_end_to_end_counted(&result);
    assert_eq!(
        result["faults"]["low-reservoir"], 0.1,
        "{}",
        result["faults"]
    );
    assert_eq!(
        result["pumps_by_fault"]["low-reservoir"], 4,
        "{}",
        result["pumps_by_fault"]
    );
    let latency_plot = assert_latency_measured(&result["alarm_latency"]);
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
    let expected_plot = dir.path().join("quick-latency.svg");
    assert_eq!(result["latency_plot"], expected_plot.display().to_string());
    let svg = std::fs::read_to_string(&expected_plot).expect("latency plot written");
    assert!(svg.starts_with("<svg") && svg.contains("Alarm latency"));
    assert!(svg.contains(&latency_plot), "the plot shows no p99");
}

/// Every reading offered was counted by (pump_id, seq) in Kafka: none lost, none
/// twice, over a measured time.
fn assert_end_to_end_counted(result: &serde_json::Value) {
    let counts = &result["end_to_end"];
    let offered = counts["offered"].as_u64().expect("offered counted");
    assert!(offered >= 40 * 25, "{counts}");
    assert_eq!(counts["arrived"], offered, "{counts}");
    assert_eq!(counts["lost"], 0, "{counts}");
    assert_eq!(counts["duplicates"], 0, "{counts}");
    assert!(
        counts["seconds"].as_f64().unwrap_or_default() > 0.0,
        "{counts}"
    );
}

/// Every probe gave a sample; the percentiles, the histogram (which holds every
/// sample) and each hop's share were measured. Returns the p99 as the plot's caption
/// writes it.
fn assert_latency_measured(latency: &serde_json::Value) -> String {
    assert_eq!(latency["probes"], 20, "{latency}");
    for p in ["p50", "p90", "p99", "max"] {
        let ms = latency["latency_ms"][p].as_f64().unwrap_or_default();
        assert!(ms > 0.0, "{p} was not measured: {latency}");
    }
    let buckets = latency["histogram"].as_array().expect("a histogram");
    let counted: u64 = buckets.iter().filter_map(|b| b["count"].as_u64()).sum();
    assert_eq!(counted, 20, "every probe in one bucket: {latency}");
    for hop in [
        "gateway_to_readings_topic",
        "readings_topic_to_alarm",
        "alarm_to_page_enqueued",
        "page_enqueued_to_accepted",
    ] {
        assert!(
            latency["hops_ms"][hop]["p50"].is_number(),
            "{hop}: {latency}"
        );
    }
    assert!(
        latency["readings_per_s_while_probing"]
            .as_f64()
            .unwrap_or_default()
            > 0.0,
        "{latency}"
    );
    let p99 = latency["latency_ms"]["p99"].as_f64().unwrap_or_default();
    format!("p99 {p99:.0} ms")
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
