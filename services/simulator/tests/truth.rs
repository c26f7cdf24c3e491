//! The truth file: the shape of `shared/scenarios/*.truth.json`, key for key.

mod common;

use common::{run, spec};
use fleet_simulator::{FaultMix, Fleet, GroundTruth};
use serde_json::Value;

/// The keys of `shared/scenarios/smoke.truth.json`, copied here so the tests do not
/// need `../shared`.
const TOP_KEYS: [&str; 10] = [
    "name",
    "seed",
    "pump_count",
    "days",
    "cadence_min",
    "start",
    "end",
    "scored_kinds",
    "episodes",
    "pumps",
];
const EPISODE_KEYS: [&str; 7] = [
    "pump_id",
    "kind",
    "onset",
    "window_start",
    "window_end",
    "harm_at",
    "note",
];
const PUMP_KEYS: [&str; 4] = ["pump_id", "gateway_id", "model", "fault"];

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn is_timestamp(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == 20 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    })
}

#[test]
fn truth_serialises_with_the_shared_keys() {
    let (_, truth) = run(spec(8, 60, 60, FaultMix::realistic()).with_name("unit"));
    let json: Value = serde_json::to_value(&truth).expect("serialisable");
    let mut top = keys(&json);
    top.sort_unstable();
    let mut want = TOP_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(top, want);
    assert_eq!(json["name"], "unit");
    assert_eq!(json["days"], 60);
    assert_eq!(json["cadence_min"], 60);
    assert_eq!(json["start"], "2026-01-05T00:00:00Z");
    assert_eq!(
        json["scored_kinds"],
        serde_json::json!([
            "LOW_RESERVOIR",
            "BATTERY_EOL",
            "OCCLUSION",
            "MISSED_REFILL",
            "TELEMETRY_LOST"
        ])
    );
    let episodes = json["episodes"].as_array().expect("episodes");
    assert!(
        episodes.len() >= 5,
        "a 60-pump realistic fleet has episodes"
    );
    for e in episodes {
        let mut k = keys(e);
        k.sort_unstable();
        let mut want = EPISODE_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(k, want, "{e}");
        for field in ["onset", "window_start", "window_end"] {
            assert!(is_timestamp(&e[field]), "{field}: {}", e[field]);
        }
        assert!(e["harm_at"].is_null() || is_timestamp(&e["harm_at"]));
        assert!(e["note"].as_str().is_some_and(|n| !n.is_empty()));
    }
    let pumps = json["pumps"].as_array().expect("pumps");
    assert_eq!(pumps.len(), 60);
    for p in pumps {
        let mut k = keys(p);
        k.sort_unstable();
        let mut want = PUMP_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(k, want);
        assert!(
            p["fault"]
                .as_str()
                .is_some_and(|f| f.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}

#[test]
fn truth_reads_back_and_does_not_change_as_the_fleet_runs() {
    let spec = spec(8, 30, 60, FaultMix::realistic());
    let mut fleet = Fleet::new(spec.clone());
    let before = fleet.truth();
    fleet.advance_until(spec.start + chrono::Duration::days(20));
    assert_eq!(fleet.truth(), before);
    let text = serde_json::to_string_pretty(&before).expect("serialisable");
    let back: GroundTruth = serde_json::from_str(&text).expect("reads back");
    assert_eq!(back, before);
}
