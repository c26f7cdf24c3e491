//! The dead man's switch: which rounds are out, which came back as pages, and whether
//! the oldest has been out longer than the deadline. Pure state, driven by the caller's
//! clock, so every transition is unit-tested without waiting.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::pump::SLOTS;

/// Where the pipeline stopped, as far as the canary can tell from its own side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The canary has not started a round for longer than the deadline.
    NotStarted,
    /// Its readings are not acknowledged: the MQTT broker, ingest or Kafka.
    Unacknowledged,
    /// Acknowledged (in the log) but no page: the detector, the notifier, or the way
    /// back to this receiver.
    Unpaged,
}

impl Stage {
    /// The `stage` label of `fleet_canary_alarms_total`.
    pub fn label(self) -> &'static str {
        match self {
            Stage::NotStarted => "not_started",
            Stage::Unacknowledged => "unacknowledged",
            Stage::Unpaged => "unpaged",
        }
    }

    pub fn suspects(self) -> &'static str {
        match self {
            Stage::NotStarted => "the canary itself (its gateway cannot take readings)",
            Stage::Unacknowledged => "the MQTT broker, ingest or Kafka",
            Stage::Unpaged => {
                "the detector, the notifier, or the way back to the operator receiver"
            }
        }
    }
}

/// What a page did to the watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Paged {
    /// It completed this round, after `latency`; `lost` earlier rounds can no longer
    /// complete (a pump's pages arrive in order, so theirs are gone).
    Completed {
        round: u64,
        latency: Duration,
        lost: u64,
    },
    /// No round out has this mark: a duplicate, an escalation, or a page from before a
    /// restart.
    Unmatched,
}

/// A change of the operator alarm.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Fired { stage: Stage, overdue: Duration },
    Recovered { after: Duration },
}

#[derive(Debug)]
pub struct Watch {
    deadline: Duration,
    next_round: u64,
    /// Rounds out, by number, with when each started.
    out: BTreeMap<u64, Instant>,
    last_started: Option<Instant>,
    created: Instant,
    /// Since when the operator alarm has been on.
    alarm: Option<(Stage, Instant)>,
    /// Rounds that can no longer complete, not yet reported.
    lost_unreported: u64,
}

/// The watch is shared by the pump link, the receiver and the checker; each holds it
/// for a few instructions. A panic while holding it leaves consistent state.
pub fn lock(watch: &Mutex<Watch>) -> MutexGuard<'_, Watch> {
    watch
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watch {
    pub fn new(deadline: Duration, now: Instant) -> Self {
        Watch {
            deadline,
            next_round: 0,
            out: BTreeMap::new(),
            last_started: None,
            created: now,
            alarm: None,
            lost_unreported: 0,
        }
    }

    /// Numbers rounds from `first` on. A restarted canary starts where the wall clock
    /// says (seconds since the epoch over the interval), not at 0: a page for a round
    /// of the process before it, still arriving, must not complete a new round that
    /// happens to have the same slot.
    pub fn starting_at_round(mut self, first: u64) -> Self {
        self.next_round = first;
        self
    }

    /// Nothing is owed before `now` (the canary waited before its first round).
    pub fn restart_clock(&mut self, now: Instant) {
        if self.out.is_empty() && self.last_started.is_none() {
            self.created = now;
        }
    }

    /// Records a new round; its slot (the mark in its reading).
    pub fn start_round(&mut self, now: Instant) -> u64 {
        let round = self.next_round;
        self.next_round += 1;
        // Its slot's previous holder, SLOTS rounds ago, can no longer be told apart.
        if round >= SLOTS && self.out.remove(&(round - SLOTS)).is_some() {
            self.lost_unreported += 1;
        }
        self.out.insert(round, now);
        self.last_started = Some(now);
        round % SLOTS
    }

    /// A page of ours arrived, carrying `slot`.
    pub fn paged(&mut self, slot: u64, now: Instant) -> Paged {
        let Some((&round, &started)) = self.out.iter().find(|(round, _)| *round % SLOTS == slot)
        else {
            return Paged::Unmatched;
        };
        let earlier: Vec<u64> = self.out.range(..round).map(|(r, _)| *r).collect();
        for r in &earlier {
            self.out.remove(r);
        }
        self.out.remove(&round);
        Paged::Completed {
            round,
            latency: now.saturating_duration_since(started),
            lost: earlier.len() as u64 + std::mem::take(&mut self.lost_unreported),
        }
    }

    /// Rounds out now.
    pub fn outstanding(&self) -> usize {
        self.out.len()
    }

    /// Rounds evicted unanswered since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.lost_unreported)
    }

    /// How long the pipeline has owed the canary something at `now`: the oldest round
    /// out, or the time since a round last started (or since the start).
    fn overdue(&self, now: Instant) -> Option<Duration> {
        let owed_since = match self.out.values().next() {
            Some(&oldest) => oldest,
            None => self.last_started.unwrap_or(self.created),
        };
        let waited = now.saturating_duration_since(owed_since);
        // With nothing out, a round is due every interval; the deadline covers it.
        (waited > self.deadline).then_some(waited)
    }

    /// Re-evaluates the operator alarm. `unacknowledged`: whether the canary's gateway
    /// still holds readings the cloud has not acknowledged.
    pub fn check(&mut self, now: Instant, unacknowledged: bool) -> Option<Change> {
        match (self.overdue(now), self.alarm) {
            (Some(overdue), None) => {
                let stage = if self.out.is_empty() {
                    Stage::NotStarted
                } else if unacknowledged {
                    Stage::Unacknowledged
                } else {
                    Stage::Unpaged
                };
                self.alarm = Some((stage, now));
                Some(Change::Fired { stage, overdue })
            }
            (None, Some((_, since))) => {
                self.alarm = None;
                Some(Change::Recovered {
                    after: now.saturating_duration_since(since),
                })
            }
            _ => None,
        }
    }

    pub fn alarm(&self) -> Option<Stage> {
        self.alarm.map(|(stage, _)| stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(300);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_page_completes_its_round_with_its_latency() {
        let t0 = Instant::now();
        let mut w = Watch::new(DEADLINE, t0);
        let slot = w.start_round(t0);
        assert_eq!(w.outstanding(), 1);
        assert_eq!(
            w.paged(slot, t0 + secs(2)),
            Paged::Completed {
                round: 0,
                latency: secs(2),
                lost: 0
            }
        );
        assert_eq!(w.outstanding(), 0);
        assert_eq!(w.paged(slot, t0 + secs(3)), Paged::Unmatched, "a duplicate");
    }

    #[test]
    fn a_restarted_canary_numbers_its_rounds_on_so_an_old_page_matches_none() {
        let t0 = Instant::now();
        // The process before ended after round 1000 (slot 0) was paged late.
        let mut w = Watch::new(DEADLINE, t0).starting_at_round(1001);
        let slot = w.start_round(t0);
        assert_eq!(slot, 1);
        assert_eq!(
            w.paged(0, t0 + secs(1)),
            Paged::Unmatched,
            "the old round's page"
        );
        assert!(matches!(
            w.paged(slot, t0 + secs(2)),
            Paged::Completed { round: 1001, .. }
        ));
    }

    #[test]
    fn a_later_round_paged_first_means_the_earlier_ones_are_lost() {
        let t0 = Instant::now();
        let mut w = Watch::new(DEADLINE, t0);
        w.start_round(t0);
        w.start_round(t0 + secs(60));
        let third = w.start_round(t0 + secs(120));
        match w.paged(third, t0 + secs(121)) {
            Paged::Completed {
                round: 2, lost: 2, ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn the_alarm_fires_once_past_the_deadline_and_names_the_stage() {
        let t0 = Instant::now();
        let mut w = Watch::new(DEADLINE, t0);
        w.start_round(t0);
        assert_eq!(w.check(t0 + secs(299), true), None, "within the deadline");
        assert_eq!(
            w.check(t0 + secs(301), true),
            Some(Change::Fired {
                stage: Stage::Unacknowledged,
                overdue: secs(301)
            })
        );
        assert_eq!(w.check(t0 + secs(400), true), None, "fires once");
        assert_eq!(w.alarm(), Some(Stage::Unacknowledged));
    }

    #[test]
    fn acknowledged_but_unpaged_points_past_the_log() {
        let t0 = Instant::now();
        let mut w = Watch::new(DEADLINE, t0);
        w.start_round(t0);
        match w.check(t0 + secs(301), false) {
            Some(Change::Fired {
                stage: Stage::Unpaged,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_alarm_recovers_when_the_backlog_is_paged() {
        let t0 = Instant::now();
        let mut w = Watch::new(DEADLINE, t0);
        w.start_round(t0);
        let second = w.start_round(t0 + secs(60));
        assert!(matches!(
            w.check(t0 + secs(301), false),
            Some(Change::Fired { .. })
        ));
        w.paged(second, t0 + secs(320));
        assert_eq!(
            w.check(t0 + secs(321), false),
            Some(Change::Recovered { after: secs(20) })
        );
        assert_eq!(w.alarm(), None);
    }

    #[test]
    fn no_round_started_is_overdue_too() {
        let t0 = Instant::now();
        let mut w = Watch::new(DEADLINE, t0);
        assert_eq!(w.check(t0 + secs(10), false), None);
        assert_eq!(
            w.check(t0 + secs(301), false),
            Some(Change::Fired {
                stage: Stage::NotStarted,
                overdue: secs(301)
            })
        );
    }

    #[test]
    fn rounds_out_are_bounded_by_the_slots() {
        let t0 = Instant::now();
        let mut w = Watch::new(DEADLINE, t0);
        for i in 0..(SLOTS + 5) {
            w.start_round(t0 + secs(i));
        }
        assert_eq!(w.outstanding() as u64, SLOTS);
        assert_eq!(w.take_evicted(), 5);
    }
}
