//! The simulated pump link: a virtual pump from `fleet-simulator`, interrogated on its
//! own schedule against a clock that starts in the past and runs faster than real time
//! until it reaches now, then at real time. A fleet started 60 days back therefore
//! replays its history in minutes and then carries on live.
//!
//! Gateway outages the simulator planned are played here, where they happen: powered
//! off, the pump is not interrogated; offline but powered, readings are buffered and
//! released together when the outage ends (a late backlog, as real homes produce).

use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_core::Reading;
use fleet_simulator::{Fleet, FleetSpec, VirtualPump};

use crate::link::PumpLink;

/// Simulated time: `speedup` times faster than the wall clock from `origin` (the wall
/// moment simulated time was `sim_start`), until it catches up with real time, then real
/// time. Defined on the wall clock rather than a process-local instant so that a harness
/// that chose `origin` knows the mapping exactly (the demo's alarm latency uses it).
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    sim_start: DateTime<Utc>,
    origin: DateTime<Utc>,
    speedup: f64,
}

impl SimClock {
    /// A clock at `sim_start` now.
    pub fn new(sim_start: DateTime<Utc>, speedup: f64) -> Self {
        SimClock::anchored(sim_start, Utc::now(), speedup)
    }

    /// A clock that was at `sim_start` at wall time `origin`.
    pub fn anchored(sim_start: DateTime<Utc>, origin: DateTime<Utc>, speedup: f64) -> Self {
        SimClock {
            sim_start,
            origin,
            speedup: speedup.max(1.0),
        }
    }

    fn accelerated(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed_ms = (wall - self.origin).num_milliseconds() as f64 * self.speedup;
        self.sim_start + chrono::Duration::milliseconds(elapsed_ms.clamp(0.0, 1e15) as i64)
    }

    /// Simulated time at wall time `wall`.
    pub fn sim_at(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        self.accelerated(wall).min(wall)
    }

    /// The wall time at which simulated time reaches `at` (itself once caught up).
    pub fn wall_at(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let sim_ms = (at - self.sim_start).num_milliseconds().max(0) as f64;
        let fast = self.origin + chrono::Duration::milliseconds((sim_ms / self.speedup) as i64);
        // Before the catch-up simulated time lags the wall clock, so the accelerated
        // moment is the later one; after it, simulated time is wall time.
        fast.max(at)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.sim_at(Utc::now())
    }

    /// Wall time until simulated time reaches `at` (re-checked by callers: the rate
    /// changes when the clock catches up with real time).
    pub fn wait_for(&self, at: DateTime<Utc>) -> Duration {
        let wall = Utc::now();
        if at <= self.sim_at(wall) {
            return Duration::ZERO;
        }
        (self.wall_at(at) - wall)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_millis(1))
    }
}

/// Most readings handed over at once while catching up.
const CATCH_UP_BATCH: usize = 500;

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
            // Readings already due (a restarted gateway catching up with its pump's
            // history) go as one batch: one outbox write, not one fsync each, so the
            // gateway is publishing again in seconds rather than minutes.
            while out.len() < CATCH_UP_BATCH {
                let due = self.pump.next_due();
                let in_outage = self.pump.gateway_outage().is_some_and(|o| o.covers(due));
                if in_outage || !self.clock.wait_for(due).is_zero() {
                    break;
                }
                out.push(self.pump.next_reading());
            }
            return Some(out);
        }
    }
}

/// A simulated fleet's history: `pumps` pumps drawn from `seed` with the realistic
/// fault mix injected between `start` and `end`, each pump with its own gateway.
/// Readings carry on past `end` (live, healthy apart from what is already under way).
/// The demo builds the same spec to know the fleet's ground truth.
pub fn fleet_spec(seed: u64, pumps: usize, start: DateTime<Utc>, end: DateTime<Utc>) -> FleetSpec {
    FleetSpec::new(seed, pumps, start, end).with_name(format!("simulated fleet (seed {seed})"))
}

/// Links for the pumps of `spec`, interrogated on `clock`.
pub fn links(spec: FleetSpec, clock: SimClock) -> Vec<SimulatedLink> {
    Fleet::new(spec)
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

    #[test]
    fn wall_and_simulated_time_map_both_ways() {
        let origin = Utc::now() - chrono::Duration::seconds(10);
        let start = origin - chrono::Duration::days(60);
        // A day per second: the clock reaches real time after about 61 s.
        let clock = SimClock::anchored(start, origin, 86_400.0);
        let sim = start + chrono::Duration::days(5);
        let wall = clock.wall_at(sim);
        assert_eq!(wall, origin + chrono::Duration::seconds(5));
        assert_eq!(clock.sim_at(wall), sim);
        // Past the catch-up both are real time.
        let later = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(clock.wall_at(later), later);
        assert_eq!(clock.sim_at(later), later);
        assert_eq!(clock.sim_at(origin - chrono::Duration::seconds(1)), start);
    }
}
