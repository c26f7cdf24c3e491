//! The detector: per-pump state machines, one per alarm kind, as pure code. The same
//! [`Detector`] serves the offline replay and the streaming service; its clock is event
//! time (the fleet watermark), never the wall clock, so a replayed history and the live
//! fleet raise the same alarms at the same event times.
//!
//! Input order is arrival order. A reading whose `seq` is at or below its pump's
//! high-water mark (a duplicate, or a stale retransmission) changes nothing.

mod battery;
mod config;
mod episode;
mod occlusion;
mod pump_state;
mod reservoir;
mod telemetry;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, Utc};

pub use config::DetectorConfig;
pub use pump_state::PumpState;

use crate::alarm::AlarmEvent;
use crate::reading::Reading;

/// A deadline at which a pump's condition may change with no reading arriving: silence
/// (telemetry lost) or an appointment passing (missed refill, overdue projection).
type Deadline = Reverse<(DateTime<Utc>, usize)>;

/// Every pump's state, the fleet clock and the pending deadlines.
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    pumps: Vec<PumpState>,
    index: HashMap<String, usize>,
    clock: Option<DateTime<Utc>>,
    deadlines: BinaryHeap<Deadline>,
}

impl Detector {
    pub fn new(config: DetectorConfig) -> Self {
        Detector {
            config,
            pumps: Vec::new(),
            index: HashMap::new(),
            clock: None,
            deadlines: BinaryHeap::new(),
        }
    }

    /// The detector's clock: the largest `measured_at` seen (or advanced to).
    pub fn clock(&self) -> Option<DateTime<Utc>> {
        self.clock
    }

    /// Rebuilds a detector from a checkpoint: its clock and its pumps' states in the
    /// order [`Detector::for_each_changed`] numbered them. Deadlines are rebuilt from
    /// the pumps, so the restored detector behaves exactly as the saved one would have.
    pub fn restore(
        config: DetectorConfig,
        clock: Option<DateTime<Utc>>,
        pumps: impl IntoIterator<Item = PumpState>,
    ) -> Self {
        let mut detector = Detector::new(config);
        detector.clock = clock;
        for (index, pump) in pumps.into_iter().enumerate() {
            if let Some(at) = pump.scheduled {
                detector.deadlines.push(Reverse((at, index)));
            }
            detector.index.insert(pump.pump_id.clone(), index);
            detector.pumps.push(pump);
        }
        detector
    }

    /// Visits every pump whose state changed since the last visit, with its ordinal
    /// (first-seen order, which keeps the order of simultaneous deadlines stable across
    /// a restore), and marks it saved.
    pub fn for_each_changed(&mut self, mut visit: impl FnMut(usize, &PumpState)) {
        for (ordinal, pump) in self.pumps.iter_mut().enumerate() {
            if pump.changed {
                visit(ordinal, pump);
                pump.changed = false;
            }
        }
    }

    /// Pumps with state (bounded per pump: windows are capped in size).
    pub fn pump_count(&self) -> usize {
        self.pumps.len()
    }

    /// Feeds one reading in arrival order; returns the alarm events it causes, in a
    /// deterministic order (deadlines that passed first, then this pump's rules).
    pub fn observe(&mut self, reading: &Reading) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        if self.clock.is_none_or(|c| reading.measured_at > c) {
            self.advance_to(reading.measured_at, &mut out);
        }
        let clock = self.clock.unwrap_or(reading.measured_at);
        let index = match self.index.get(&reading.pump_id) {
            Some(&i) => i,
            None => {
                self.pumps.push(PumpState::new(reading));
                self.index
                    .insert(reading.pump_id.clone(), self.pumps.len() - 1);
                self.pumps.len() - 1
            }
        };
        let pump = &mut self.pumps[index];
        if !pump.accept(reading) {
            return out;
        }
        pump.evaluate(reading, clock, &self.config, &mut out);
        pump.changed = true;
        self.schedule(index, clock);
        out
    }

    /// Keeps one live deadline per pump: a new one is pushed only when it is earlier
    /// than the one already scheduled (a later one is found when that one fires), so
    /// the heap stays about as large as the fleet.
    fn schedule(&mut self, index: usize, now: DateTime<Utc>) {
        let pump = &mut self.pumps[index];
        let Some(next) = pump.next_deadline(now, &self.config) else {
            return;
        };
        if pump.scheduled.is_none_or(|s| next < s) {
            pump.scheduled = Some(next);
            self.deadlines.push(Reverse((next, index)));
        }
    }

    /// Moves the clock forward (streaming: wall time when the fleet is silent), firing
    /// every deadline that passed.
    pub fn advance_to(&mut self, now: DateTime<Utc>, out: &mut Vec<AlarmEvent>) {
        if self.clock.is_some_and(|c| now <= c) {
            return;
        }
        self.clock = Some(now);
        while let Some(&Reverse((at, index))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let pump = &mut self.pumps[index];
            if pump.scheduled != Some(at) {
                // Superseded by an earlier deadline that already fired.
                continue;
            }
            pump.scheduled = None;
            pump.changed = true;
            pump.on_clock(now, &self.config, out);
            self.schedule(index, now);
        }
    }
}
