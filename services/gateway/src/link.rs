//! How a gateway talks to its pump. The radio link of a real gateway is behind this
//! trait; here there are two implementations: a replay of recorded readings (JSON
//! Lines), and the simulated pump in [`crate::simulated`].

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use fleet_core::{Reading, json};

/// The pump side of a gateway.
pub trait PumpLink: Send {
    /// Waits for the pump's next readings; `None` once the link has closed for good
    /// (a replay that ran out). Must be cancel-safe: a reading is handed out only when
    /// the future completes.
    fn next_readings(&mut self) -> impl Future<Output = Option<Vec<Reading>>> + Send;
}

/// Replays recorded readings, in file order (duplicates and late backlog included,
/// as a real gateway would relay them).
#[derive(Debug)]
pub struct ReplayLink {
    readings: VecDeque<Reading>,
    batch: usize,
    interval: Duration,
    /// The steady schedule, made on first use (it needs the runtime's clock).
    schedule: Option<tokio::time::Interval>,
}

impl ReplayLink {
    /// `batch` readings are handed out at a time, one batch every `interval`: a steady
    /// rate, which a slow outbox delays but never turns into a burst (zero: as fast
    /// as the outbox takes them).
    pub fn new(readings: Vec<Reading>, batch: usize, interval: Duration) -> Self {
        ReplayLink {
            readings: readings.into(),
            batch: batch.max(1),
            interval,
            schedule: None,
        }
    }
}

impl PumpLink for ReplayLink {
    async fn next_readings(&mut self) -> Option<Vec<Reading>> {
        if self.readings.is_empty() {
            return None;
        }
        if !self.interval.is_zero() {
            let interval = self.interval;
            let schedule = self.schedule.get_or_insert_with(|| {
                let start = tokio::time::Instant::now() + interval;
                let mut schedule = tokio::time::interval_at(start, interval);
                schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                schedule
            });
            schedule.tick().await; // cancel-safe
        }
        let n = self.batch.min(self.readings.len());
        Some(self.readings.drain(..n).collect())
    }
}

/// Loads a JSON Lines file (plain or gzip) and groups its readings by gateway, in file
/// order. Invalid lines are an error naming the line: a replay is test or demo input,
/// and silently skipping part of it would hide a broken file.
pub fn load_replay(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<Reading>>> {
    let input = fleet_runtime::input::open(path)?;
    let mut by_gateway: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let reading = json::parse_reading(&line)
            .with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        by_gateway
            .entry(reading.gateway_id.clone())
            .or_default()
            .push(reading);
    }
    Ok(by_gateway)
}
