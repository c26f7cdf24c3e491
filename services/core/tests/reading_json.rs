//! The JSON form: what is accepted, and how each kind of bad input is named.

use fleet_core::json::{parse_reading, to_json};
use fleet_core::{Problem, PumpEvent, Reading};

const GOOD: &str = r#"{"pump_id":"ITP40-100002","gateway_id":"gw-100002","seq":7,"measured_at":"2026-01-05T01:00:00Z","model":"ITP-40","firmware":"4.2.1","drug":"BACLOFEN","concentration_mg_per_ml":2.0,"reservoir_ml":12.5,"reservoir_capacity_ml":40.0,"low_reservoir_threshold_ml":2.0,"programmed_rate_ml_per_day":0.8,"delivered_total_ml":300.1,"battery_v":3.1,"battery_pct":55.0,"eri":false,"eos":false,"temperature_c":37.0,"refill_due_at":"2026-02-01T10:00:00Z","motor_stall_count":0,"catheter_pressure_kpa":12.5,"motor_current_ma":3.2,"events":[{"type":"BOLUS","at":"2026-01-05T00:30:00Z","source":"PATIENT","volume_ml":0.02,"granted":true}]}"#;

fn good() -> serde_json::Value {
    serde_json::from_str(GOOD).expect("fixture is JSON")
}

/// Parses a modified copy of the fixture and returns the single violation's field and problem.
fn reject(edit: impl FnOnce(&mut serde_json::Value)) -> (String, Problem) {
    let mut v = good();
    edit(&mut v);
    let err = parse_reading(&v.to_string()).expect_err("edited reading must be rejected");
    let first = err.violations[0].clone();
    (first.field, first.problem)
}

#[test]
fn accepts_the_contract_form() {
    let r = parse_reading(GOOD).expect("valid");
    assert_eq!(r.pump_id, "ITP40-100002");
    assert_eq!(r.seq, 7);
    assert_eq!(r.catheter_pressure_kpa, Some(12.5));
    assert!(matches!(&r.events[0], PumpEvent::Bolus(b) if b.granted));
}

#[test]
fn accepts_lower_camel_case_string_integers_and_prefixed_enums() {
    let camel = GOOD
        .replace("pump_id", "pumpId")
        .replace("measured_at", "measuredAt")
        .replace("reservoir_capacity_ml", "reservoirCapacityMl")
        .replace("\"seq\":7", "\"seq\":\"7\"")
        .replace("\"type\":\"BOLUS\"", "\"type\":\"EVENT_TYPE_BOLUS\"")
        .replace("\"PATIENT\"", "\"BOLUS_SOURCE_PATIENT\"")
        .replace("volume_ml", "volumeMl");
    let r = parse_reading(&camel).expect("camelCase is valid");
    assert_eq!(r, parse_reading(GOOD).expect("valid"));
}

#[test]
fn writes_snake_case_and_utc_timestamps() {
    let mut v = good();
    v["measured_at"] = "2026-01-05T03:00:00+02:00".into();
    let r = parse_reading(&v.to_string()).expect("offsets are accepted");
    let json = to_json(&r);
    assert!(
        json.contains(r#""measured_at":"2026-01-05T01:00:00Z""#),
        "{json}"
    );
    assert!(json.contains("\"reservoir_capacity_ml\""));
    assert!(!json.contains("reservoirCapacityMl"));
}

#[test]
fn sensorless_readings_omit_the_sensor_fields() {
    let mut v = good();
    let o = v.as_object_mut().expect("object");
    o.remove("catheter_pressure_kpa");
    o.remove("motor_current_ma");
    let r = parse_reading(&v.to_string()).expect("sensors are optional");
    assert_eq!(r.catheter_pressure_kpa, None);
    assert!(!to_json(&r).contains("catheter_pressure_kpa"));
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let mut v = good();
    v["added_in_v1_1"] = 5.into();
    assert!(parse_reading(&v.to_string()).is_ok());
}

#[test]
fn missing_field_is_named() {
    let (field, problem) = reject(|v| {
        v.as_object_mut().expect("object").remove("seq");
    });
    assert_eq!((field.as_str(), problem), ("seq", Problem::Missing));
}

#[test]
fn missing_event_field_is_named_with_its_index() {
    let (field, problem) = reject(|v| {
        v["events"][0].as_object_mut().expect("object").remove("at");
    });
    assert_eq!(
        (field.as_str(), problem),
        ("events[0].at", Problem::Missing)
    );
}

#[test]
fn wrong_type_is_named() {
    let (field, problem) = reject(|v| v["reservoir_ml"] = "lots".into());
    assert_eq!(field, "reservoir_ml");
    assert!(matches!(problem, Problem::WrongType { .. }), "{problem:?}");
    let (field, _) = reject(|v| v["eri"] = 1.into());
    assert_eq!(field, "eri");
}

#[test]
fn negative_and_non_finite_volumes_are_rejected() {
    let (field, problem) = reject(|v| v["reservoir_ml"] = (-0.5).into());
    assert_eq!(
        (field.as_str(), problem),
        ("reservoir_ml", Problem::Negative { value: -0.5 })
    );
    let (field, problem) = reject(|v| v["programmed_rate_ml_per_day"] = "NaN".into());
    assert_eq!(field, "programmed_rate_ml_per_day");
    assert!(matches!(problem, Problem::NotFinite { .. }));
    let (field, problem) = reject(|v| v["events"][0]["volume_ml"] = (-1.0).into());
    assert_eq!(
        (field.as_str(), problem),
        ("events[0].volume_ml", Problem::Negative { value: -1.0 })
    );
}

#[test]
fn reservoir_above_capacity_is_rejected() {
    let (field, problem) = reject(|v| v["reservoir_ml"] = 41.0.into());
    assert_eq!(field, "reservoir_ml");
    assert_eq!(
        problem,
        Problem::AboveCapacity {
            value_ml: 41.0,
            capacity_ml: 40.0
        }
    );
}

#[test]
fn battery_outside_0_to_100_is_rejected() {
    let (field, problem) = reject(|v| v["battery_pct"] = 100.5.into());
    assert_eq!(field, "battery_pct");
    assert!(matches!(problem, Problem::OutOfRange { .. }));
    let (field, _) = reject(|v| v["battery_pct"] = (-1.0).into());
    assert_eq!(field, "battery_pct");
}

#[test]
fn unparseable_timestamp_is_named() {
    let (field, problem) = reject(|v| v["refill_due_at"] = "next tuesday".into());
    assert_eq!(field, "refill_due_at");
    assert!(
        matches!(problem, Problem::UnparseableTimestamp { .. }),
        "{problem:?}"
    );
    let (field, _) = reject(|v| v["events"][0]["at"] = "2026-13-40T00:00:00Z".into());
    assert_eq!(field, "events[0].at");
}

#[test]
fn empty_ids_are_rejected() {
    let (field, problem) = reject(|v| v["pump_id"] = "".into());
    assert_eq!((field.as_str(), problem), ("pump_id", Problem::Empty));
    let (field, _) = reject(|v| v["gateway_id"] = "  ".into());
    assert_eq!(field, "gateway_id");
}

#[test]
fn unknown_event_type_is_named() {
    let (field, problem) = reject(|v| v["events"][0]["type"] = "TELEPORT".into());
    assert_eq!(field, "events[0].type");
    assert_eq!(
        problem,
        Problem::UnknownEventType {
            found: "TELEPORT".into()
        }
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let mut v = good();
    v["reservoir_ml"] = (-1.0).into();
    v["battery_pct"] = 101.into();
    v["pump_id"] = "".into();
    let err = parse_reading(&v.to_string()).expect_err("invalid");
    let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["pump_id", "reservoir_ml", "battery_pct"]);
    let text = err.to_string();
    assert!(text.contains("reservoir_ml: negative (-1)"), "{text}");
}

#[test]
fn non_json_and_non_objects_are_undecodable() {
    for bad in [
        "",
        "not json",
        "{\"pump_id\":",
        "[1,2,3]",
        "42",
        &format!("{GOOD} trailing"),
    ] {
        let err = parse_reading(bad).expect_err(bad);
        assert_eq!(err.violations[0].field, "", "{bad}: {err}");
        assert_eq!(err.reason_code(), "undecodable", "{bad}: {err}");
    }
}

#[test]
fn reading_exposes_model_and_drug_meaning() {
    let r: Reading = parse_reading(GOOD).expect("valid");
    assert!(r.pump_model().has_flow_sensors());
    assert!(r.drug_kind().has_withdrawal_risk());
}
