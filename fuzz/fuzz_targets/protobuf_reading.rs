//! The protobuf decoders that read what arrives from outside: a gateway's reading
//! (ingest, MQTT) and an alarm event (notifier, Kafka).
//!
//! Properties, beyond "never panics":
//! - whatever decodes re-encodes to bytes that decode to the same value (numbers
//!   compared as numbers: see `common`), and the encoding is stable
//!   (encode . decode . encode == encode, byte for byte; prost writes fields in
//!   order and the evidence map is a BTreeMap);
//! - a reading that also validates re-serialised as JSON parses back (JSON and
//!   protobuf readings mean the same thing at every hop);
//! - decode-then-validate (`parse_reading`) agrees with `decode_reading` followed by
//!   `validate`.
#![no_main]

use fleet_core::{json, protobuf};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    reading(data);
    alarm(data);
});

fn reading(data: &[u8]) {
    let parsed = protobuf::parse_reading(data);
    let Ok(reading) = protobuf::decode_reading(data) else {
        assert!(parsed.is_err(), "parse accepted what decode refused");
        return;
    };
    assert_eq!(
        parsed.is_ok(),
        reading.validate().is_ok(),
        "parse_reading disagrees with decode_reading + validate"
    );

    let bytes = protobuf::encode_reading(&reading);
    let again = protobuf::decode_reading(&bytes)
        .unwrap_or_else(|e| panic!("re-encoded reading does not decode: {e}\n{reading:?}"));
    assert!(
        common::same_reading(&again, &reading),
        "protobuf round trip changed the reading\n{reading:?}\n{again:?}"
    );
    assert_eq!(
        protobuf::encode_reading(&again),
        bytes,
        "encoding is not stable"
    );

    if parsed.is_ok() {
        let text = json::to_json(&reading);
        let from_json = json::parse_reading(&text).unwrap_or_else(|e| {
            panic!("a valid protobuf reading's JSON does not parse: {e}\n{text}")
        });
        assert!(
            common::same_reading(&from_json, &reading),
            "JSON round trip changed the reading\n{text}\n{reading:?}\n{from_json:?}"
        );
    }
}

fn alarm(data: &[u8]) {
    let Ok(alarm) = protobuf::decode_alarm(data) else {
        return;
    };
    let bytes = protobuf::encode_alarm(&alarm);
    let again = protobuf::decode_alarm(&bytes)
        .unwrap_or_else(|e| panic!("re-encoded alarm does not decode: {e}\n{alarm:?}"));
    assert!(
        common::same_alarm(&again, &alarm),
        "protobuf round trip changed the alarm\n{alarm:?}\n{again:?}"
    );
    assert_eq!(
        protobuf::encode_alarm(&again),
        bytes,
        "encoding is not stable"
    );
}
