//! What the fuzz targets (`fuzz/`, docs/fuzzing-and-supply-chain.md) found, kept as
//! tests that run with the rest of the suite, without a fuzzer.
//!
//! Every file under `tests/data/fuzz/TARGET/` is an input a target once failed on (the
//! file libFuzzer wrote, renamed after what it shows), or an edge case kept on purpose
//! where a target has not failed yet (the registry's: a last line without a newline,
//! CRLF line endings). It is replayed here through the same properties the target
//! checks, so a new crash becomes a regression test by dropping its file into that
//! folder.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use fleet_core::{Reading, Registry, json, protobuf};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    // Every target keeps at least one input: a missing or misnamed folder must fail
    // here, not pass having replayed nothing.
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<_> = entries
        .map(|e| e.expect("readable directory").path())
        .collect();
    assert!(!files.is_empty(), "{}: no input kept", dir.display());
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("readable input");
            (path.display().to_string(), bytes)
        })
        .collect()
}

/// As ingest and `fleetctl` receive text: bytes that may not be UTF-8.
fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether every number is finite. A NaN or an infinity has no JSON form (serde_json
/// writes null, and an absent optional field is left out, never null), and NaN != NaN:
/// such readings are compared through their encoding only. Validation refuses them.
fn all_finite(r: &Reading) -> bool {
    fn no_null(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => false,
            serde_json::Value::Array(items) => items.iter().all(no_null),
            serde_json::Value::Object(fields) => fields.values().all(no_null),
            _ => true,
        }
    }
    no_null(&serde_json::to_value(r).expect("a reading serialises"))
}

#[test]
fn protobuf_inputs_round_trip() {
    for (name, bytes) in inputs("protobuf_reading") {
        if let Ok(reading) = protobuf::decode_reading(&bytes) {
            let encoded = protobuf::encode_reading(&reading);
            let again = protobuf::decode_reading(&encoded)
                .unwrap_or_else(|e| panic!("{name}: re-encoded reading does not decode: {e}"));
            if all_finite(&reading) {
                assert_eq!(again, reading, "{name}");
            }
            assert_eq!(protobuf::encode_reading(&again), encoded, "{name}");
            if reading.validate().is_ok() {
                let text = json::to_json(&reading);
                let from_json = json::parse_reading(&text)
                    .unwrap_or_else(|e| panic!("{name}: JSON form refused: {e}\n{text}"));
                assert_eq!(from_json, reading, "{name}");
            }
        }
        if let Ok(alarm) = protobuf::decode_alarm(&bytes) {
            let encoded = protobuf::encode_alarm(&alarm);
            let again = protobuf::decode_alarm(&encoded)
                .unwrap_or_else(|e| panic!("{name}: re-encoded alarm does not decode: {e}"));
            assert_eq!(protobuf::encode_alarm(&again), encoded, "{name}");
        }
    }
}

#[test]
fn json_inputs_round_trip() {
    for (name, bytes) in inputs("json_reading") {
        let text = text_of(&bytes);
        let Ok(reading) = json::decode_reading(&text) else {
            assert!(json::parse_reading(&text).is_err(), "{name}");
            continue;
        };
        assert_eq!(
            json::parse_reading(&text).is_ok(),
            reading.validate().is_ok(),
            "{name}"
        );
        if all_finite(&reading) {
            let written = json::to_json(&reading);
            let again = json::decode_reading(&written)
                .unwrap_or_else(|e| panic!("{name}: own JSON refused: {e}\n{written}"));
            assert_eq!(again, reading, "{name}");
            let via_protobuf = protobuf::decode_reading(&protobuf::encode_reading(&reading))
                .unwrap_or_else(|e| panic!("{name}: own protobuf refused: {e}"));
            assert_eq!(via_protobuf, reading, "{name}");
        }
    }
}

#[test]
fn registry_inputs_are_refused_with_a_line_or_round_trip() {
    for (name, bytes) in inputs("registry_toml") {
        let text = text_of(&bytes);
        match Registry::from_toml(&text) {
            Err(e) => {
                let lines = text.matches('\n').count() + 1;
                assert!((1..=lines).contains(&e.line), "{name}: {e}");
            }
            Ok(registry) => {
                for pump in registry.pumps.values() {
                    assert!(registry.clinics.contains_key(&pump.clinic_id), "{name}");
                }
            }
        }
    }
}

/// Found by `protobuf_reading` and `json_reading` (tests/data/fuzz/*/negative-zero-*):
/// proto3 leaves out a double equal to its default, and prost compares numerically, so
/// a -0.0 (which JSON carries, and validation accepts: it is not below zero) reaches
/// Kafka as 0.0. The same number to every rule and every comparison; only its sign bit
/// is lost. Pinned here so that a change of encoder that starts treating them
/// differently is noticed.
#[test]
fn negative_zero_crosses_protobuf_as_zero() {
    let at = Utc
        .with_ymd_and_hms(2026, 1, 5, 2, 0, 0)
        .single()
        .expect("a valid time");
    let mut reading = Reading::example("ITP40-100002", 7, at);
    reading.battery_v = -0.0;
    reading.reservoir_capacity_ml = -0.0;
    reading.reservoir_ml = 0.0;
    reading.low_reservoir_threshold_ml = 0.0;
    assert!(reading.validate().is_ok(), "-0.0 is not negative");

    let from_json = json::decode_reading(&json::to_json(&reading)).expect("own JSON");
    assert!(
        from_json.battery_v.is_sign_negative(),
        "JSON keeps the sign"
    );

    let via_protobuf =
        protobuf::decode_reading(&protobuf::encode_reading(&reading)).expect("own protobuf");
    assert_eq!(via_protobuf, reading, "equal as numbers");
    assert!(via_protobuf.battery_v.is_sign_positive());
    assert!(via_protobuf.reservoir_capacity_ml.is_sign_positive());
    assert!(via_protobuf.validate().is_ok());
}

/// A breach of `protobuf_reading`'s JSON round-trip property, found while writing the
/// target (its 7 minutes of fuzzing had not reached it): protobuf carried any instant
/// chrono can hold, so a reading dated in year 10000 (or before year 1) was accepted by
/// ingest and validated, while its JSON form (`+10000-01-01T00:00:00Z`) was refused by our own
/// JSON reader. Both readers now take the years 0001 to 9999 only, the range of
/// `google.protobuf.Timestamp` (and of RFC 3339's four-digit years, less year 0000).
#[test]
fn timestamps_outside_years_1_to_9999_are_refused_in_both_encodings() {
    let at = Utc
        .with_ymd_and_hms(2026, 1, 5, 2, 0, 0)
        .single()
        .expect("a valid time");
    let example = Reading::example("ITP40-100002", 7, at);
    let instant = |secs| chrono::DateTime::from_timestamp(secs, 0).expect("in chrono's range");

    // 10000-01-01T00:00:00Z, 0000-12-31T23:59:59Z, 0000-01-01T00:00:00Z.
    for secs in [253_402_300_800_i64, -62_135_596_801, -62_167_219_200] {
        let mut reading = example.clone();
        reading.measured_at = instant(secs);
        let e = protobuf::parse_reading(&protobuf::encode_reading(&reading))
            .expect_err("outside Timestamp's range");
        assert_eq!(e.violations[0].field, "measured_at", "{e}");
        assert_eq!(e.reason_code(), "unparseable_timestamp", "{e}");

        let mut reading = example.clone();
        reading.events = vec![fleet_core::PumpEvent::LowBatteryReset(
            fleet_core::LowBatteryReset { at: instant(secs) },
        )];
        let e = protobuf::decode_reading(&protobuf::encode_reading(&reading))
            .expect_err("an event outside Timestamp's range");
        assert_eq!(e.violations[0].field, "events[0].at", "{e}");
    }

    let written = json::format_timestamp(&example.measured_at);
    for text in [
        "0000-01-01T00:00:00Z",
        "0000-12-31T23:59:59Z",
        "0001-01-01T00:30:00+01:00", // year 0000 once in UTC
        "+10000-01-01T00:00:00Z",
    ] {
        let line = json::to_json(&example).replacen(&written, text, 1);
        let e = json::parse_reading(&line).expect_err(text);
        assert_eq!(e.violations[0].field, "measured_at", "{text}: {e}");
        assert_eq!(e.reason_code(), "unparseable_timestamp", "{text}: {e}");
    }

    // The ends of the range, and a leap second at the very end, cross both ways.
    for text in [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:60Z",
    ] {
        let line = json::to_json(&example).replacen(&written, text, 1);
        let reading = json::parse_reading(&line).unwrap_or_else(|e| panic!("{text}: {e}"));
        let via_protobuf = protobuf::parse_reading(&protobuf::encode_reading(&reading))
            .unwrap_or_else(|e| panic!("{text} via protobuf: {e}"));
        assert_eq!(via_protobuf, reading, "{text}");
        let again = json::parse_reading(&json::to_json(&via_protobuf))
            .unwrap_or_else(|e| panic!("{text} back to JSON: {e}"));
        assert_eq!(again, reading, "{text}");
    }
}

#[test]
fn alarm_timestamps_outside_years_1_to_9999_are_refused() {
    let at = Utc
        .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
        .single()
        .expect("chrono holds year 10000");
    let alarm = fleet_core::AlarmEvent {
        alarm_id: "ITP40-100002:OCCLUSION:1".into(),
        revision: 1,
        pump_id: "ITP40-100002".into(),
        kind: fleet_core::AlarmKind::Occlusion,
        priority: fleet_core::AlarmPriority::High,
        state: fleet_core::AlarmState::Raised,
        detected_at: at,
        onset_at: None,
        message: String::new(),
        evidence: Default::default(),
    };
    let e = protobuf::decode_alarm(&protobuf::encode_alarm(&alarm)).expect_err("year 10000");
    assert_eq!(e.0.field, "detected_at", "{e}");
}
