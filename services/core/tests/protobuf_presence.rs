//! proto3 has no required fields: decoding must still reject readings that lack them.

use fleet_core::Problem;
use fleet_core::protobuf::parse_reading;
use fleet_proto::prost::Message;
use fleet_proto::telemetry::v1 as pb;

fn base() -> pb::Reading {
    pb::Reading {
        pump_id: "ITV20-1".into(),
        gateway_id: "gw-1".into(),
        seq: 1,
        measured_at: Some(prost_types::Timestamp {
            seconds: 1_767_225_600,
            nanos: 0,
        }),
        reservoir_capacity_ml: 20.0,
        refill_due_at: Some(prost_types::Timestamp {
            seconds: 1_769_904_000,
            nanos: 0,
        }),
        ..Default::default()
    }
}

#[test]
fn minimal_reading_decodes() {
    assert!(parse_reading(&base().encode_to_vec()).is_ok());
}

#[test]
fn missing_timestamp_is_named() {
    let mut m = base();
    m.measured_at = None;
    let err = parse_reading(&m.encode_to_vec()).expect_err("missing measured_at");
    assert_eq!(err.violations[0].field, "measured_at");
    assert_eq!(err.violations[0].problem, Problem::Missing);
}

#[test]
fn event_without_a_type_is_named() {
    let mut m = base();
    m.events.push(pb::PumpEvent {
        at: m.measured_at,
        kind: None,
    });
    let err = parse_reading(&m.encode_to_vec()).expect_err("untyped event");
    assert_eq!(err.violations[0].field, "events[0].type");
}

#[test]
fn out_of_range_timestamp_is_named() {
    let mut m = base();
    m.refill_due_at = Some(prost_types::Timestamp {
        seconds: 0,
        nanos: -5,
    });
    let err = parse_reading(&m.encode_to_vec()).expect_err("bad nanos");
    assert_eq!(err.violations[0].field, "refill_due_at");
    assert!(matches!(
        err.violations[0].problem,
        Problem::UnparseableTimestamp { .. }
    ));
}

#[test]
fn truncated_and_garbage_bytes_are_undecodable() {
    let bytes = base().encode_to_vec();
    for bad in [
        &bytes[..bytes.len() / 2],
        b"\xff\xff\xff\xff garbage".as_slice(),
    ] {
        let err = parse_reading(bad).expect_err("undecodable");
        assert_eq!(err.reason_code(), "undecodable", "{err}");
    }
}

#[test]
fn nan_from_protobuf_is_rejected_by_validation() {
    let mut m = base();
    m.reservoir_ml = f64::NAN;
    let err = parse_reading(&m.encode_to_vec()).expect_err("nan");
    assert_eq!(err.violations[0].field, "reservoir_ml");
    assert!(matches!(
        err.violations[0].problem,
        Problem::NotFinite { .. }
    ));
}

#[test]
fn a_page_carries_its_alarm_event_whole() {
    use fleet_core::protobuf::{PageHeader, alarm_of_notification, notification};
    let alarm = fleet_core::AlarmEvent {
        alarm_id: "P-1:OCCLUSION:1767571200".into(),
        revision: 2,
        pump_id: "P-1".into(),
        kind: fleet_core::AlarmKind::Occlusion,
        priority: fleet_core::AlarmPriority::High,
        state: fleet_core::AlarmState::Updated,
        detected_at: chrono::DateTime::from_timestamp(1_767_571_200, 0).expect("time"),
        onset_at: None,
        message: "Pump P-1: check the catheter.".into(),
        evidence: [(
            "pressure_rise_kpa".to_owned(),
            fleet_core::Evidence::Number(9.5),
        )]
        .into_iter()
        .collect(),
    };
    let header = PageHeader {
        clinic_id: "clinic-001",
        delivery_attempt: 3,
        escalation: 1,
    };
    let page = notification(&alarm, header);
    assert_eq!(page.clinic_id, "clinic-001");
    assert_eq!((page.delivery_attempt, page.escalation), (3, 1));
    assert_eq!(alarm_of_notification(&page).expect("decodes"), alarm);
}
