//! The JSON reading parser, fed raw bytes as ingest and `fleetctl validate` receive
//! them (an MQTT payload, a line of a file).
//!
//! Properties, beyond "never panics":
//! - bytes that are not UTF-8 are refused by the callers' own check, and their lossy
//!   decoding (U+FFFD in place of each bad sequence) is still parsed without a panic;
//! - `parse_reading` agrees with `decode_reading` followed by `validate`;
//! - a decoded reading re-serialised (`to_json`) decodes to the same value when all its
//!   numbers are finite (JSON has no NaN: `to_json` writes null, which is refused), and
//!   always when it also validates;
//! - a decoded reading survives protobuf, the form it travels in after ingest:
//!   JSON -> Reading -> protobuf -> Reading gives the same value.
#![no_main]

use fleet_core::{json, protobuf};
use libfuzzer_sys::fuzz_target;

mod common;

// Valid UTF-8 is borrowed as it is; anything else goes through its lossy decoding.
fuzz_target!(|data: &[u8]| check(&String::from_utf8_lossy(data)));

fn check(text: &str) {
    let parsed = json::parse_reading(text);
    let Ok(reading) = json::decode_reading(text) else {
        assert!(parsed.is_err(), "parse accepted what decode refused");
        return;
    };
    let valid = reading.validate().is_ok();
    assert_eq!(
        parsed.is_ok(),
        valid,
        "parse_reading disagrees with decode_reading + validate"
    );

    if valid || common::all_finite(&reading) {
        let written = json::to_json(&reading);
        let again = json::decode_reading(&written).unwrap_or_else(|e| {
            panic!("a decoded reading's own JSON does not decode: {e}\n{written}")
        });
        assert!(
            common::same_reading(&again, &reading),
            "JSON round trip changed the reading\n{written}\n{reading:?}\n{again:?}"
        );
        assert_eq!(json::to_json(&again), written, "JSON form is not stable");
    }

    let bytes = protobuf::encode_reading(&reading);
    let via_protobuf = protobuf::decode_reading(&bytes)
        .unwrap_or_else(|e| panic!("a decoded reading's protobuf does not decode: {e}"));
    assert!(
        common::same_reading(&via_protobuf, &reading),
        "protobuf round trip changed the reading\n{reading:?}\n{via_protobuf:?}"
    );
}
