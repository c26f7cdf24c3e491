//! `fleetctl readings validate` on the smoke scenario and on a corrupted copy of it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const SMOKE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/data/smoke.readings.jsonl.gz"
);

fn fleetctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
}

fn smoke_lines(n: usize) -> Vec<String> {
    let file = std::fs::File::open(SMOKE).expect("scenario in the repository");
    BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .take(n)
        .map(|l| l.expect("readable"))
        .collect()
}

#[test]
fn accepts_every_line_of_the_gzipped_scenario() {
    let out = fleetctl()
        .args(["readings", "validate", SMOKE])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.trim(), "23177 valid readings, 0 invalid lines");
}

#[test]
fn names_exactly_the_corrupted_lines_and_why() {
    let mut lines = smoke_lines(40);
    lines[2] = set_field(&lines[2], "battery_pct", "138.5");
    lines[9] = lines[9].replacen("\"pump_id\":\"", "\"pump_id\":\"\",\"x\":\"", 1);
    lines[20] = "{\"pump_id\": truncated".to_owned();
    lines[33] = lines[33].replacen("\"refill_due_at\":\"2026", "\"refill_due_at\":\"20x6", 1);
    lines[39] = lines[39].replacen("\"reservoir_ml\":", "\"reservoir_ml\":\"lots\",\"r\":", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corrupt.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("written");

    let out = fleetctl()
        .args(["readings", "validate"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "invalid lines exit 1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Vec<&str> = stdout.lines().collect();
    assert_eq!(report.len(), 6, "{stdout}");
    assert_eq!(report[0], "line 3: battery_pct: 138.5 is outside 0..=100");
    assert_eq!(report[1], "line 10: pump_id: empty");
    assert!(
        report[2].starts_with("line 21: undecodable:"),
        "{}",
        report[2]
    );
    assert!(
        report[3].starts_with("line 34: refill_due_at: unparseable timestamp"),
        "{}",
        report[3]
    );
    assert!(
        report[4].starts_with("line 40: reservoir_ml: wrong type"),
        "{}",
        report[4]
    );
    assert_eq!(report[5], "35 valid readings, 5 invalid lines");
}

#[test]
fn reads_standard_input_and_survives_non_utf8() {
    let mut lines = smoke_lines(3).join("\n").into_bytes();
    lines.extend_from_slice(b"\n\xff\xfe\n");
    let mut child = fleetctl()
        .args(["readings", "validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawns");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&lines)
        .expect("written");
    let out = child.wait_with_output().expect("finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.starts_with("line 4: undecodable: not UTF-8"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("3 valid readings, 1 invalid lines\n"),
        "{stdout}"
    );
}

#[test]
fn a_missing_file_is_an_error_not_a_verdict() {
    let out = fleetctl()
        .args(["readings", "validate", "/nonexistent/readings.jsonl"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/readings.jsonl"));
}

/// Replaces one top-level field's value in a JSON line.
fn set_field(line: &str, field: &str, value_json: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
    v[field] = serde_json::from_str(value_json).expect("json value");
    v.to_string()
}
