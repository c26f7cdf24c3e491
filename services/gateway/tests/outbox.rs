//! The outbox keeps readings across reopen, deletes only on ack, and applies its
//! capacity policy: routine readings are dropped before ones carrying events.

use chrono::{DateTime, Utc};
use fleet_core::{LowBatteryReset, PumpEvent, Reading, protobuf};
use fleet_gateway::outbox::Outbox;

fn reading(pump: &str, seq: u64, with_event: bool) -> Reading {
    let at = DateTime::<Utc>::from_timestamp(1_767_225_600 + seq as i64 * 3600, 0).expect("valid");
    let mut r = Reading::example(pump, seq, at);
    if with_event {
        r.events
            .push(PumpEvent::LowBatteryReset(LowBatteryReset { at }));
    }
    r
}

fn keys(outbox: &Outbox) -> Vec<(String, u64)> {
    outbox
        .pending_after(None, usize::MAX)
        .expect("readable")
        .iter()
        .map(|p| p.key())
        .collect()
}

#[test]
fn readings_survive_reopen_and_leave_only_on_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.redb");
    {
        let outbox = Outbox::open(&path, 100).expect("open");
        let put = outbox
            .put(&[
                reading("p1", 1, false),
                reading("p1", 2, false),
                reading("p2", 7, true),
            ])
            .expect("put");
        assert_eq!(put.stored, 3);
        // A duplicate (same pump and seq) is not stored twice.
        assert_eq!(
            outbox.put(&[reading("p1", 2, false)]).expect("put").stored,
            0
        );
    }
    let outbox = Outbox::open(&path, 100).expect("reopen");
    assert_eq!(outbox.depth().expect("depth"), 3);
    let first = &outbox.pending_after(None, 1).expect("pending")[0];
    assert_eq!(
        protobuf::decode_reading(&first.payload).expect("decodes"),
        reading("p1", 1, false)
    );
    assert_eq!(outbox.remove(&[("p1".to_owned(), 1)]).expect("ack"), 1);
    assert_eq!(keys(&outbox), [("p1".to_owned(), 2), ("p2".to_owned(), 7)]);
    // Only the named readings go; absent ones are not counted.
    assert_eq!(
        outbox
            .remove(&[("p2".to_owned(), 6), ("p2".to_owned(), 7)])
            .expect("ack"),
        1
    );
    assert_eq!(keys(&outbox), [("p1".to_owned(), 2)]);
}

#[test]
fn pending_after_pages_in_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = Outbox::open(&dir.path().join("o.redb"), 100).expect("open");
    let batch: Vec<_> = (1..=5).map(|s| reading("p1", s, false)).collect();
    outbox.put(&batch).expect("put");
    let page = outbox
        .pending_after(Some(&("p1".to_owned(), 2)), 2)
        .expect("page");
    let seqs: Vec<u64> = page.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [3, 4]);
}

#[test]
fn when_full_routine_readings_go_first_and_drops_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("o.redb");
    let outbox = Outbox::open(&path, 3).expect("open");
    outbox
        .put(&[
            reading("p1", 1, true),
            reading("p1", 2, false),
            reading("p1", 3, true),
        ])
        .expect("put");
    // Full: the new event reading pushes out the routine seq 2, not the older seq 1.
    let put = outbox.put(&[reading("p1", 4, true)]).expect("put");
    assert_eq!((put.stored, put.dropped), (1, 1));
    let seqs: Vec<u64> = keys(&outbox).into_iter().map(|(_, s)| s).collect();
    assert_eq!(seqs, [1, 3, 4]);
    // Full of event readings: a new routine reading is the one dropped.
    let put = outbox.put(&[reading("p1", 5, false)]).expect("put");
    assert_eq!((put.stored, put.dropped), (0, 1));
    // Full of event readings and another event reading: the oldest goes.
    outbox.put(&[reading("p1", 6, true)]).expect("put");
    let seqs: Vec<u64> = keys(&outbox).into_iter().map(|(_, s)| s).collect();
    assert_eq!(seqs, [3, 4, 6]);
    drop(outbox);
    assert_eq!(
        Outbox::open(&path, 3)
            .expect("reopen")
            .dropped_total()
            .expect("count"),
        3
    );
}
