//! The simulated pump link: a virtual pump from `fleet-simulator`, interrogated on its
//! own schedule against a clock that starts in the past and runs faster than real time
//! until it reaches now, then at real time. A fleet started 60 days back therefore
//! replays its history in minutes and then carries on live.
//!
//! Gateway outages the simulator planned are played here, where they happen: powered
//! off, the pump is not interrogated; offline but powered, readings are buffered and
//! released together when the outage ends (a late backlog, as real homes produce).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fleet_core::Reading;
use fleet_simulator::{Fleet, FleetSpec, VirtualPump};

use crate::link::PumpLink;

/// Simulated time: `speedup` times faster than the wall clock from `sim_start`, until it
/// catches up with real time, then real time.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    sim_start: DateTime<Utc>,
    wall_start: Instant,
    speedup: f64,
}

impl SimClock {
    pub fn new(sim_start: DateTime<Utc>, speedup: f64) -> Self {
        SimClock {
            sim_start,
            wall_start: Instant::now(),
            speedup: speedup.max(1.0),
        }
    }

    fn accelerated(&self) -> DateTime<Utc> {
        let elapsed_ms = self.wall_start.elapsed().as_secs_f64() * 1000.0 * self.speedup;
        self.sim_start + chrono::Duration::milliseconds(elapsed_ms.min(1e15) as i64)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.accelerated().min(Utc::now())
    }

    /// Wall time until simulated time reaches `at` (re-checked by callers: the rate
    /// changes when the clock catches up with real time).
    pub fn wait_for(&self, at: DateTime<Utc>) -> Duration {
        let now = self.now();
        if at <= now {
            return Duration::ZERO;
        }
        let ahead = (at - now).to_std().unwrap_or_default();
        if self.accelerated() >= Utc::now() {
            ahead
        } else {
            ahead.div_f64(self.speedup).max(Duration::from_millis(1))
        }
    }
}

#[derive(Debug)]
pub struct SimulatedLink {
    pump: VirtualPump,
    clock: SimClock,
    backlog: Vec<Reading>,
}

impl SimulatedLink {
    pub fn new(pump: VirtualPump, clock: SimClock) -> Self {
        SimulatedLink {
            pump,
            clock,
            backlog: Vec::new(),
        }
    }

    pub fn gateway_id(&self) -> &str {
        self.pump.gateway_id()
    }
}

impl PumpLink for SimulatedLink {
    async fn next_readings(&mut self) -> Option<Vec<Reading>> {
        loop {
            let due = self.pump.next_due();
            let outage = self.pump.gateway_outage().filter(|o| o.covers(due));
            if let Some(o) = outage
                && !o.buffered
            {
                self.pump.skip_until(o.end);
                continue;
            }
            // Nothing is taken from the pump before the wait ends: cancel-safe.
            loop {
                let wait = self.clock.wait_for(due);
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
            }
            let reading = self.pump.next_reading();
            if outage.is_some() {
                self.backlog.push(reading);
                continue;
            }
            let mut out = std::mem::take(&mut self.backlog);
            out.push(reading);
            return Some(out);
        }
    }
}

/// Links for `pumps` simulated pumps with the realistic fault mix, starting `history`
/// ago; each pump has its own gateway id.
pub fn links(
    seed: u64,
    pumps: usize,
    history: chrono::Duration,
    speedup: f64,
) -> Vec<SimulatedLink> {
    let now = Utc::now();
    let start = now - history;
    // Far enough ahead that a live fleet never runs out of schedule.
    let end = now + chrono::Duration::days(3650);
    let clock = SimClock::new(start, speedup);
    Fleet::new(FleetSpec::new(seed, pumps, start, end))
        .into_pumps()
        .into_iter()
        .map(|pump| SimulatedLink::new(pump, clock))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_runs_fast_until_it_reaches_now() {
        let start = Utc::now() - chrono::Duration::days(1);
        let clock = SimClock::new(start, 86_400.0 * 10.0);
        // A day behind at 10 days per second: caught up within 0.1 s of wall time.
        std::thread::sleep(Duration::from_millis(150));
        let drift = (Utc::now() - clock.now()).num_milliseconds().abs();
        assert!(
            drift < 50,
            "simulated time is real time once caught up ({drift} ms apart)"
        );
        let slow = SimClock::new(Utc::now() - chrono::Duration::days(30), 3600.0);
        let wait = slow.wait_for(slow.now() + chrono::Duration::hours(1));
        assert!(
            wait <= Duration::from_millis(1000),
            "{wait:?}: an hour takes a second at 3600x"
        );
    }
}
