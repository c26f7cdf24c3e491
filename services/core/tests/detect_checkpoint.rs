//! A detector checkpointed and restored mid-stream carries on exactly as one that never
//! stopped: the streaming detector's crash recovery rests on this.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use fleet_core::detect::{Detector, DetectorConfig, PumpState};
use fleet_core::{AlarmEvent, Reading, json};

fn smoke_readings() -> Vec<Reading> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/smoke.readings.jsonl.gz"
    );
    let file = std::fs::File::open(path).expect("scenario file is in the repository");
    BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .map(|l| json::parse_reading(&l.expect("readable")).expect("valid reading"))
        .collect()
}

fn run(detector: &mut Detector, readings: &[Reading]) -> Vec<AlarmEvent> {
    readings.iter().flat_map(|r| detector.observe(r)).collect()
}

/// What a checkpoint store holds: each pump's latest serialized state by ordinal.
#[derive(Default)]
struct Store {
    pumps: BTreeMap<usize, String>,
}

impl Store {
    fn save(&mut self, detector: &mut Detector) -> usize {
        let mut saved = 0;
        detector.for_each_changed(|ordinal, pump| {
            let text = serde_json::to_string(pump).expect("state serializes");
            self.pumps.insert(ordinal, text);
            saved += 1;
        });
        saved
    }

    fn load(&self, clock: Option<chrono::DateTime<chrono::Utc>>) -> Detector {
        let pumps = self
            .pumps
            .values()
            .map(|text| serde_json::from_str::<PumpState>(text).expect("state deserializes"));
        Detector::restore(DetectorConfig::default(), clock, pumps)
    }
}

#[test]
fn restored_detector_continues_identically() {
    let readings = smoke_readings();
    let uninterrupted = run(&mut Detector::new(DetectorConfig::default()), &readings);
    assert!(uninterrupted.len() >= 6, "the smoke scenario raises alarms");

    // Checkpoint at several points, restoring from the store each time.
    let mut store = Store::default();
    let mut detector = Detector::new(DetectorConfig::default());
    let mut resumed = Vec::new();
    let cuts = [1, 997, 5_000, 11_111, 17_000, readings.len()];
    let mut from = 0;
    for &to in &cuts {
        resumed.extend(run(&mut detector, &readings[from..to]));
        store.save(&mut detector);
        detector = store.load(detector.clock());
        from = to;
    }
    assert_eq!(resumed, uninterrupted);
}

#[test]
fn only_changed_pumps_are_saved() {
    let readings = smoke_readings();
    let mut detector = Detector::new(DetectorConfig::default());
    let mut store = Store::default();
    run(&mut detector, &readings[..2_000]);
    let first = store.save(&mut detector);
    assert_eq!(first, detector.pump_count(), "every pump is new");
    assert_eq!(store.save(&mut detector), 0, "nothing changed since");
    // A duplicate changes nothing, so nothing needs saving.
    run(&mut detector, &readings[1_999..2_000]);
    assert_eq!(store.save(&mut detector), 0, "a duplicate is not a change");
    run(&mut detector, &readings[2_000..2_001]);
    assert_eq!(store.save(&mut detector), 1, "one new reading, one pump");
}
