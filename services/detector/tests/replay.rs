//! Replay of the repository's labelled smoke scenario: every labelled episode is raised
//! inside its window, nothing is raised outside one, nothing twice; the output is
//! deterministic and duplicates in the input change nothing.

use std::collections::BTreeMap;
use std::io::BufRead;

use chrono::{DateTime, Utc};
use fleet_core::alarm::{AlarmEvent, AlarmState};
use fleet_core::detect::DetectorConfig;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/data");

fn scenario_lines() -> Vec<String> {
    let input = fleet_runtime::input::open(format!("{DATA}/smoke.readings.jsonl.gz").as_ref())
        .expect("scenario");
    input.lines().map(|l| l.expect("readable")).collect()
}

fn replay(lines: &[String]) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    let text = lines.join("\n");
    fleet_detector::replay(text.as_bytes(), &mut out, DetectorConfig::default()).expect("replay");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("alarm event"))
        .collect()
}

fn ts(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str().expect("timestamp").parse().expect("rfc 3339")
}

#[test]
fn every_labelled_episode_is_raised_once_inside_its_window_and_nothing_else() {
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DATA}/smoke.truth.json")).expect("truth"),
    )
    .expect("json");
    let events = replay(&scenario_lines());
    let raised: Vec<&AlarmEvent> = events
        .iter()
        .filter(|e| e.state == AlarmState::Raised)
        .collect();
    let episodes = truth["episodes"].as_array().expect("episodes");
    let mut matched = vec![false; raised.len()];
    for ep in episodes {
        let (pump, kind) = (
            ep["pump_id"].as_str().expect("pump"),
            ep["kind"].as_str().expect("kind"),
        );
        let (from, to) = (ts(&ep["window_start"]), ts(&ep["window_end"]));
        let hit = raised.iter().position(|a| {
            a.pump_id == pump && a.kind.name() == kind && (from..=to).contains(&a.detected_at)
        });
        match hit {
            Some(i) => matched[i] = true,
            None => panic!("missed {kind} on {pump} in [{from}, {to}]"),
        }
    }
    let unmatched: Vec<_> = raised
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(a, _)| format!("{} {} at {}", a.pump_id, a.kind, a.detected_at))
        .collect();
    assert!(
        unmatched.is_empty(),
        "false or repeated alarms: {unmatched:?}"
    );
}

#[test]
fn episodes_are_numbered_and_deterministic() {
    let lines = scenario_lines();
    let first = replay(&lines);
    assert_eq!(
        first,
        replay(&lines),
        "the same input gives the same output"
    );
    let mut revisions: BTreeMap<&str, u32> = BTreeMap::new();
    for e in &first {
        let last = revisions.insert(&e.alarm_id, e.revision).unwrap_or(0);
        assert_eq!(
            e.revision,
            last + 1,
            "{}: revisions go up by one",
            e.alarm_id
        );
        assert_eq!(
            e.state == AlarmState::Raised,
            e.revision == 1,
            "{}",
            e.alarm_id
        );
        assert!(!e.message.is_empty() && !e.evidence.is_empty() || e.state == AlarmState::Cleared);
    }
}

#[test]
fn duplicated_and_stale_readings_change_nothing() {
    let lines = scenario_lines();
    let mut noisy = Vec::with_capacity(lines.len() * 2);
    for (i, line) in lines.iter().enumerate() {
        noisy.push(line.clone());
        noisy.push(line.clone());
        // Every 50th reading is sent again much later, as a gateway retransmission would.
        if i >= 100 && i % 50 == 0 {
            noisy.push(lines[i - 100].clone());
        }
    }
    assert_eq!(replay(&noisy), replay(&lines));
}

#[test]
fn the_baseline_relays_only_the_pumps_own_alarms_once_each() {
    let text = scenario_lines().join("\n");
    let mut out = Vec::new();
    fleet_detector::replay_baseline(text.as_bytes(), &mut out).expect("replay");
    let events: Vec<AlarmEvent> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("alarm event"))
        .collect();
    // The smoke scenario's two missed refills run the reservoirs dry: the pumps' own
    // low-reservoir alarms sound, late, and that is all the baseline has.
    assert!(!events.is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for e in &events {
        assert_eq!(e.state, AlarmState::Raised);
        assert!(
            seen.insert((e.pump_id.clone(), e.kind)),
            "{} {} twice",
            e.pump_id,
            e.kind
        );
    }
}

#[test]
fn a_config_file_moves_a_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("detector.toml");
    // A grace longer than the scenario: no refill is ever missed.
    std::fs::write(&path, "refill_grace = \"400days\"\n").expect("write");
    let config = fleet_detector::load_config(Some(&path)).expect("valid config");
    let lines = scenario_lines();
    let text = lines.join("\n");
    let mut out = Vec::new();
    fleet_detector::replay(text.as_bytes(), &mut out, config).expect("replay");
    let missed = |events: &[AlarmEvent]| {
        events
            .iter()
            .filter(|e| e.kind == fleet_core::AlarmKind::MissedRefill)
            .count()
    };
    let with_config: Vec<AlarmEvent> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("alarm event"))
        .collect();
    assert!(
        missed(&replay(&lines)) > 0,
        "the default raises MISSED_REFILL here"
    );
    assert_eq!(missed(&with_config), 0);

    std::fs::write(&path, "refill_grace = \"soon\"\n").expect("write");
    let error = fleet_detector::load_config(Some(&path)).expect_err("bad duration");
    assert!(error.to_string().contains("detector.toml"), "{error}");
}
