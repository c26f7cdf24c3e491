//! Property tests: any valid reading or alarm event survives protobuf and JSON unchanged.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleet_core::alarm::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState, Evidence};
use fleet_core::{
    Bolus, BolusSource, DeviceAlarm, LowBatteryReset, MotorStall, Mri, PumpEvent, Reading, Refill,
    Reprogram, json, protobuf,
};
use proptest::prelude::*;

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // 1970 to 2100, with any sub-second part.
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range"))
}

fn volume() -> impl Strategy<Value = f64> {
    0.0f64..1_000.0
}

fn event() -> impl Strategy<Value = PumpEvent> {
    prop_oneof![
        (timestamp(), volume(), volume(), volume(), timestamp()).prop_map(|(at, e, m, a, due)| {
            PumpEvent::Refill(Refill {
                at,
                residual_expected_ml: e,
                residual_measured_ml: m,
                volume_added_ml: a,
                refill_due_at: due,
            })
        }),
        (timestamp(), volume(), volume(), timestamp()).prop_map(|(at, r, p, due)| {
            PumpEvent::Reprogram(Reprogram {
                at,
                rate_ml_per_day: r,
                previous_rate_ml_per_day: p,
                refill_due_at: due,
            })
        }),
        (timestamp(), any::<bool>(), volume(), any::<bool>()).prop_map(
            |(at, clinician, v, granted)| {
                PumpEvent::Bolus(Bolus {
                    at,
                    source: if clinician {
                        BolusSource::Clinician
                    } else {
                        BolusSource::Patient
                    },
                    volume_ml: v,
                    granted,
                })
            }
        ),
        (timestamp(), any::<u32>()).prop_map(|(at, d)| PumpEvent::Mri(Mri { at, duration_s: d })),
        (timestamp(), any::<u32>())
            .prop_map(|(at, d)| PumpEvent::MotorStall(MotorStall { at, duration_s: d })),
        timestamp().prop_map(|at| PumpEvent::LowBatteryReset(LowBatteryReset { at })),
        (timestamp(), "[A-Z_]{1,16}")
            .prop_map(|(at, code)| PumpEvent::DeviceAlarm(DeviceAlarm { at, code })),
    ]
}

prop_compose! {
    fn reading()(
        pump_id in "[A-Z0-9-]{1,24}",
        gateway_id in "[a-z0-9-]{1,24}",
        seq in any::<u64>(),
        measured_at in timestamp(),
        model in prop_oneof![Just("ITP-20".to_owned()), Just("ITV-40".to_owned()), "\\PC{0,12}"],
        firmware in "\\PC{0,12}",
        drug in prop_oneof![Just("BACLOFEN".to_owned()), "\\PC{0,12}"],
        concentration in 0.0f64..50.0,
        capacity in 1.0f64..100.0,
        fill in 0.0f64..=1.0,
        threshold_fill in 0.0f64..=1.0,
        rate in 0.0f64..20.0,
        delivered in 0.0f64..1e6,
        battery_v in 0.0f64..5.0,
        battery_pct in 0.0f64..=100.0,
        eri in any::<bool>(),
        eos in any::<bool>(),
        temperature_c in -40.0f64..80.0,
        refill_due_at in timestamp(),
        stalls in any::<u32>(),
        pressure in proptest::option::of(-50.0f64..500.0),
        current in proptest::option::of(0.0f64..100.0),
        events in proptest::collection::vec(event(), 0..4),
    ) -> Reading {
        Reading {
            pump_id, gateway_id, seq, measured_at, model, firmware, drug,
            concentration_mg_per_ml: concentration,
            reservoir_ml: capacity * fill,
            reservoir_capacity_ml: capacity,
            low_reservoir_threshold_ml: capacity * threshold_fill,
            programmed_rate_ml_per_day: rate,
            delivered_total_ml: delivered,
            battery_v, battery_pct, eri, eos, temperature_c, refill_due_at,
            motor_stall_count: stalls,
            catheter_pressure_kpa: pressure,
            motor_current_ma: current,
            events,
        }
    }
}

fn evidence() -> impl Strategy<Value = Evidence> {
    prop_oneof![
        (-1e9f64..1e9).prop_map(Evidence::Number),
        "\\PC{0,20}".prop_map(Evidence::Text),
    ]
}

prop_compose! {
    fn alarm_event()(
        alarm_id in "[a-z0-9:-]{1,40}",
        revision in 1u32..1000,
        pump_id in "[A-Z0-9-]{1,24}",
        kind in proptest::sample::select(AlarmKind::ALL.to_vec()),
        priority in proptest::sample::select(vec![AlarmPriority::Low, AlarmPriority::Medium, AlarmPriority::High]),
        state in proptest::sample::select(vec![AlarmState::Raised, AlarmState::Updated, AlarmState::Cleared]),
        detected_at in timestamp(),
        onset_at in proptest::option::of(timestamp()),
        message in "\\PC{0,80}",
        evidence in proptest::collection::btree_map("[a-z_]{1,20}", evidence(), 0..6),
    ) -> AlarmEvent {
        AlarmEvent { alarm_id, revision, pump_id, kind, priority, state, detected_at, onset_at, message, evidence: evidence.into_iter().collect::<BTreeMap<_, _>>() }
    }
}

proptest! {
    #[test]
    fn generated_readings_are_valid(r in reading()) {
        prop_assert!(r.validate().is_ok(), "{:?}", r.validate());
    }

    #[test]
    fn reading_round_trips_through_json(r in reading()) {
        let text = json::to_json(&r);
        prop_assert_eq!(json::parse_reading(&text).map_err(|e| e.to_string()), Ok(r));
    }

    #[test]
    fn reading_round_trips_through_protobuf(r in reading()) {
        let bytes = protobuf::encode_reading(&r);
        prop_assert_eq!(protobuf::parse_reading(&bytes).map_err(|e| e.to_string()), Ok(r));
    }

    #[test]
    fn alarm_event_round_trips_through_json_and_protobuf(a in alarm_event()) {
        let text = serde_json::to_string(&a).expect("serialisable");
        let from_json: AlarmEvent = serde_json::from_str(&text).expect("readable");
        prop_assert_eq!(&from_json, &a);
        let from_pb = protobuf::decode_alarm(&protobuf::encode_alarm(&a)).expect("decodable");
        prop_assert_eq!(from_pb, a);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = protobuf::parse_reading(&bytes);
        let _ = json::parse_reading(&String::from_utf8_lossy(&bytes));
    }
}
