//! One partition of the readings topic as this replica owns it: its detector (its own
//! event-time clock: the pumps of one partition share it), where it is in the log, and
//! what has not been checkpointed yet.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fleet_core::detect::Detector;
use fleet_core::{AlarmEvent, Reading};
use fleet_kafka::PendingDelivery;

use super::checkpoint::{CheckpointError, CheckpointStore, Claimed, Unsaved};

/// What to do with a record at a given offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The next record: apply it.
    Apply,
    /// Already reflected in the restored state (the group's committed offset lags the
    /// checkpoint): skip it.
    Seen,
    /// Past the checkpoint: the records in between must be read first, so seek back.
    Ahead { next_offset: i64 },
    /// Past the checkpoint after seeking back to it: the records in between are gone
    /// from the log. Apply, and say so.
    AfterGap { next_offset: i64 },
}

#[derive(Debug)]
pub struct OwnedPartition {
    pub partition: i32,
    pub epoch: i64,
    detector: Detector,
    /// The first offset not yet applied; `None` until the first record (fresh state).
    next_offset: Option<i64>,
    /// A seek back to `next_offset` was asked for; the first record after it is taken
    /// whatever its offset (records may have expired from the log meanwhile).
    sought: bool,
    /// Deliveries of alarm events from applied records, not yet confirmed.
    pub pending: Vec<PendingDelivery>,
    /// An alarm event could not even be queued: rewind at the next checkpoint.
    pub failed_delivery: bool,
    pub unsaved: Unsaved,
    /// Applied records or fired deadlines since the last checkpoint.
    pub dirty: bool,
    /// Wall time and clock at the last record, for advancing a silent partition.
    last_record: Instant,
    clock_at_last_record: Option<DateTime<Utc>>,
}

impl OwnedPartition {
    pub fn new(partition: i32, claimed: Claimed) -> Self {
        let clock = claimed.detector.clock();
        OwnedPartition {
            partition,
            epoch: claimed.epoch,
            detector: claimed.detector,
            next_offset: claimed.next_offset,
            sought: false,
            pending: Vec::new(),
            failed_delivery: false,
            unsaved: Unsaved::new(),
            dirty: false,
            last_record: Instant::now(),
            clock_at_last_record: clock,
        }
    }

    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Serializes the pumps changed since the last call into `unsaved`.
    pub fn collect_changed(&mut self) -> Result<(), CheckpointError> {
        CheckpointStore::collect_changed(self.partition, &mut self.detector, &mut self.unsaved)
    }

    /// The consumer was sent back to `next_offset`: what comes next is taken as is.
    pub fn mark_sought(&mut self) {
        self.sought = true;
    }

    /// Where a record at `offset` stands against the restored state.
    pub fn position(&mut self, offset: i64) -> Position {
        match self.next_offset {
            None => Position::Apply,
            Some(next) if offset < next => Position::Seen,
            Some(next) if offset > next && !self.sought => {
                self.sought = true;
                Position::Ahead { next_offset: next }
            }
            Some(next) if offset > next => Position::AfterGap { next_offset: next },
            Some(_) => Position::Apply,
        }
    }

    /// Applies a record (`reading` is `None` for one that did not decode and was
    /// dead-lettered: it still moves the offset).
    pub fn apply(&mut self, offset: i64, reading: Option<&Reading>) -> Vec<AlarmEvent> {
        self.next_offset = Some(offset + 1);
        self.dirty = true;
        self.last_record = Instant::now();
        let Some(reading) = reading else {
            return Vec::new();
        };
        let events = self.detector.observe(reading);
        self.clock_at_last_record = self.detector.clock();
        events
    }

    /// A partition with no records for `idle_after` moves its clock on at the wall
    /// clock's pace from its last record, so silence itself can raise TELEMETRY_LOST
    /// (a whole partition of pumps going quiet is what that alarm exists for).
    pub fn advance_if_idle(&mut self, idle_after: Duration, now: Instant) -> Vec<AlarmEvent> {
        let idle = now.saturating_duration_since(self.last_record);
        let mut out = Vec::new();
        if idle < idle_after {
            return out;
        }
        let (Some(clock), Ok(idle)) = (self.clock_at_last_record, chrono::Duration::from_std(idle))
        else {
            return out;
        };
        let before = self.detector.clock();
        self.detector.advance_to(clock + idle, &mut out);
        self.dirty |= self.detector.clock() != before;
        out
    }
}

#[cfg(test)]
mod tests {
    use fleet_core::detect::DetectorConfig;

    use super::*;

    fn restored_at(next_offset: Option<i64>) -> OwnedPartition {
        OwnedPartition::new(
            0,
            Claimed {
                epoch: 1,
                next_offset,
                detector: Detector::new(DetectorConfig::default()),
            },
        )
    }

    #[test]
    fn records_before_the_checkpoint_are_skipped() {
        let mut p = restored_at(Some(10));
        assert_eq!(p.position(9), Position::Seen);
        assert_eq!(p.position(10), Position::Apply);
    }

    #[test]
    fn a_record_past_the_checkpoint_seeks_back_once() {
        let mut p = restored_at(Some(10));
        assert_eq!(p.position(15), Position::Ahead { next_offset: 10 });
        // After the seek the log starts later than the checkpoint: say so, apply.
        assert_eq!(p.position(12), Position::AfterGap { next_offset: 10 });
    }

    #[test]
    fn fresh_state_takes_whatever_comes_first() {
        let mut p = restored_at(None);
        assert_eq!(p.position(42), Position::Apply);
        p.apply(42, None);
        assert_eq!(p.next_offset(), Some(43));
        assert_eq!(p.position(42), Position::Seen);
    }

    #[test]
    fn a_silent_partition_moves_its_clock_at_wall_pace() {
        let mut p = restored_at(None);
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z")
            .map(|t| t.to_utc())
            .expect("time");
        let reading = Reading::example("P-1", 1, at);
        p.apply(0, Some(&reading));
        let later = p.last_record + Duration::from_secs(3_600);
        assert!(
            p.advance_if_idle(Duration::from_secs(7_200), later)
                .is_empty()
        );
        assert_eq!(p.detector().clock(), Some(at), "not idle long enough");
        p.advance_if_idle(Duration::from_secs(600), later);
        assert_eq!(p.detector().clock(), Some(at + chrono::Duration::hours(1)));
        // Thirteen silent hours: the pump's telemetry is lost.
        let much_later = p.last_record + Duration::from_secs(13 * 3_600);
        let events = p.advance_if_idle(Duration::from_secs(600), much_later);
        assert!(
            events
                .iter()
                .any(|e| e.kind == fleet_core::AlarmKind::TelemetryLost),
            "{events:?}"
        );
    }
}
