//! A circuit breaker per receiver endpoint (a clinic's webhook, its fallback, its
//! escalation receiver): after `threshold` consecutive failures the endpoint is not
//! attempted for `cool_down`; then one page is let through, and its outcome closes or
//! reopens the circuit. One dead clinic then costs the others nothing (its pages are not
//! even claimed while all its endpoints are open), and its own pages go to its fallback
//! at once instead of each failing against the dead webhook first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Cool-down over: one trial page may go.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    cool_down: Duration,
    circuits: HashMap<String, State>,
}

impl Breakers {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Breakers {
            threshold: threshold.max(1),
            cool_down,
            circuits: HashMap::new(),
        }
    }

    /// Endpoints that must not be attempted now.
    pub fn open(&mut self, now: Instant) -> Vec<String> {
        let mut open = Vec::new();
        for (clinic, state) in &mut self.circuits {
            if let State::Open { until } = *state {
                if now >= until {
                    *state = State::HalfOpen;
                } else {
                    open.push(clinic.clone());
                }
            }
        }
        open
    }

    pub fn succeeded(&mut self, clinic: &str) {
        self.circuits
            .insert(clinic.to_owned(), State::Closed { failures: 0 });
    }

    /// Records a failure; true if this opened the circuit.
    pub fn failed(&mut self, clinic: &str, now: Instant) -> bool {
        let state = self
            .circuits
            .entry(clinic.to_owned())
            .or_insert(State::Closed { failures: 0 });
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen => self.threshold,
            State::Open { .. } => return false,
        };
        if failures >= self.threshold {
            *state = State::Open {
                until: now + self.cool_down,
            };
            true
        } else {
            *state = State::Closed { failures };
            false
        }
    }

    pub fn is_open(&self, clinic: &str) -> bool {
        matches!(self.circuits.get(clinic), Some(State::Open { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_only_for_that_clinic() {
        let mut b = Breakers::new(3, Duration::from_secs(10));
        let t = Instant::now();
        assert!(!b.failed("dead", t));
        assert!(!b.failed("dead", t));
        assert!(b.failed("dead", t), "third failure opens");
        b.failed("alive", t);
        assert_eq!(b.open(t), vec!["dead".to_owned()]);
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = Breakers::new(2, Duration::from_secs(10));
        let t = Instant::now();
        b.failed("c", t);
        b.succeeded("c");
        assert!(!b.failed("c", t));
        assert!(!b.is_open("c"));
    }

    #[test]
    fn after_the_cool_down_one_trial_decides() {
        let mut b = Breakers::new(1, Duration::from_secs(10));
        let t = Instant::now();
        assert!(b.failed("c", t));
        assert_eq!(b.open(t + Duration::from_secs(5)).len(), 1);
        // Cool-down over: half-open, the clinic may be tried.
        assert!(b.open(t + Duration::from_secs(11)).is_empty());
        // The trial fails: open again at once.
        assert!(b.failed("c", t + Duration::from_secs(11)));
        assert!(b.is_open("c"));
        assert!(b.open(t + Duration::from_secs(22)).is_empty());
        b.succeeded("c");
        assert!(b.open(t + Duration::from_secs(23)).is_empty());
    }
}
