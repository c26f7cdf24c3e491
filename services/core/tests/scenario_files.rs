//! Every line of the labelled smoke scenario (copied from the shared scenarios) is a
//! valid reading in both encodings.

use std::io::{BufRead, BufReader};

use fleet_core::{json, protobuf};

#[test]
fn smoke_scenario_is_accepted_and_survives_both_encodings() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/smoke.readings.jsonl.gz"
    );
    let file = std::fs::File::open(path).expect("scenario file is in the repository");
    let lines = BufReader::new(flate2::read::MultiGzDecoder::new(file)).lines();
    let mut count = 0;
    for (n, line) in lines.enumerate() {
        let line = line.expect("readable");
        let reading = json::parse_reading(&line).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        let back = protobuf::parse_reading(&protobuf::encode_reading(&reading))
            .unwrap_or_else(|e| panic!("line {} via protobuf: {e}", n + 1));
        assert_eq!(back, reading, "line {}", n + 1);
        count += 1;
    }
    assert_eq!(count, 23_177, "the smoke scenario has 23,177 readings");
}
