//! The synthetic pump. Each round it reports twice: first a reservoir just under its
//! low-reservoir threshold (the detector raises LOW_RESERVOIR, MEDIUM), then a refill
//! (the detector clears it). So every round ends as a page whatever state the detector
//! was left in, through the detector's ordinary rules: nothing in the pipeline knows
//! the canary from a patient's pump.
//!
//! The low reading's volume marks the round (1.00 mL + slot × 0.01 mL, under the 2 mL
//! threshold), and the page's `reservoir_ml` evidence carries it back, so a page is
//! matched to the round that caused it, even when pages arrive late or out of turn.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_core::Reading;
use fleet_core::reading::{PumpEvent, Refill};
use fleet_gateway::link::PumpLink;
use prometheus::IntCounter;

use crate::watch::Watch;

/// Distinct round marks; more rounds than this outstanding at once count as lost.
pub const SLOTS: u64 = 100;
const THRESHOLD_ML: f64 = 2.0;
const CAPACITY_ML: f64 = 20.0;
const LOW_BASE_ML: f64 = 1.0;
const SLOT_ML: f64 = 0.01;
/// Slow enough that the projected volume the detector reports moves less than half a
/// slot in over an hour.
const RATE_ML_PER_DAY: f64 = 0.05;

/// The round's mark in the low reading's volume.
pub fn low_volume(slot: u64) -> f64 {
    LOW_BASE_ML + (slot % SLOTS) as f64 * SLOT_ML
}

/// The round slot a page's `reservoir_ml` evidence points to, if it is one of ours.
pub fn slot_of(reservoir_ml: f64) -> Option<u64> {
    let slot = ((reservoir_ml - LOW_BASE_ML) / SLOT_ML).round();
    let near = (reservoir_ml - low_volume(slot.max(0.0) as u64)).abs() < SLOT_ML / 2.0;
    (near && (0.0..SLOTS as f64).contains(&slot)).then_some(slot as u64)
}

/// The two readings of one round, at `at`.
pub fn round_readings(
    pump_id: &str,
    gateway_id: &str,
    slot: u64,
    at: DateTime<Utc>,
) -> [Reading; 2] {
    // Time-based, so they only grow across restarts without any state to keep.
    let seq = u64::try_from(at.timestamp_millis()).unwrap_or_default() * 2;
    let refill_due_at = at + chrono::Duration::days(30);
    let base = Reading {
        gateway_id: gateway_id.to_owned(),
        model: "CANARY".into(),
        firmware: concat!("fleet-canary/", env!("CARGO_PKG_VERSION")).into(),
        // Not a drug with a withdrawal risk: the alarm stays MEDIUM, never HIGH.
        drug: "SALINE".into(),
        concentration_mg_per_ml: 0.0,
        reservoir_capacity_ml: CAPACITY_ML,
        low_reservoir_threshold_ml: THRESHOLD_ML,
        programmed_rate_ml_per_day: RATE_ML_PER_DAY,
        refill_due_at,
        // No pressure or motor sensors: nothing for the occlusion rules to read.
        catheter_pressure_kpa: None,
        motor_current_ma: None,
        ..Reading::example(pump_id, seq, at)
    };
    let low_ml = low_volume(slot);
    let low = Reading {
        reservoir_ml: low_ml,
        ..base.clone()
    };
    let refilled = Reading {
        seq: seq + 1,
        reservoir_ml: CAPACITY_ML,
        events: vec![PumpEvent::Refill(Refill {
            at,
            residual_expected_ml: low_ml,
            residual_measured_ml: low_ml,
            volume_added_ml: CAPACITY_ML - low_ml,
            refill_due_at,
        })],
        ..base
    };
    [low, refilled]
}

/// The pump side of the canary's gateway: a round every `interval`, each recorded in
/// the watch as it is handed to the outbox.
#[derive(Debug)]
pub struct CanaryLink {
    pump_id: String,
    gateway_id: String,
    watch: Arc<Mutex<Watch>>,
    started: IntCounter,
    schedule: tokio::time::Interval,
}

impl CanaryLink {
    pub fn new(
        pump_id: &str,
        gateway_id: &str,
        interval: Duration,
        watch: Arc<Mutex<Watch>>,
        started: IntCounter,
    ) -> Self {
        let mut schedule = tokio::time::interval(interval);
        // A stalled outbox delays rounds; it must not make up for them in a burst.
        schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        CanaryLink {
            pump_id: pump_id.to_owned(),
            gateway_id: gateway_id.to_owned(),
            watch,
            started,
            schedule,
        }
    }
}

impl PumpLink for CanaryLink {
    async fn next_readings(&mut self) -> Option<Vec<Reading>> {
        self.schedule.tick().await; // cancel-safe; nothing happens before it completes
        let now = Utc::now();
        let slot = crate::watch::lock(&self.watch).start_round(std::time::Instant::now());
        self.started.inc();
        Some(round_readings(&self.pump_id, &self.gateway_id, slot, now).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_under_the_threshold_and_reads_back() {
        for slot in 0..SLOTS {
            let ml = low_volume(slot);
            assert!(ml < THRESHOLD_ML, "slot {slot}: {ml} mL");
            assert_eq!(slot_of(ml), Some(slot));
            // As the detector reports it: projected up to an hour later, at 2 decimals.
            let reported = ((ml - RATE_ML_PER_DAY / 24.0) * 100.0).round() / 100.0;
            assert_eq!(
                slot_of(reported),
                Some(slot),
                "slot {slot} reported as {reported}"
            );
        }
        assert_eq!(slot_of(20.0), None, "the refilled volume is no mark");
        assert_eq!(slot_of(0.5), None);
        assert_eq!(slot_of(2.0), None, "the threshold itself is no mark");
    }

    #[test]
    fn a_round_is_a_valid_low_reading_then_a_valid_refill() {
        let at = Utc::now();
        let [low, refilled] = round_readings("CANARY-1", "gw-canary", 7, at);
        low.validate().expect("the low reading is valid");
        refilled.validate().expect("the refill is valid");
        assert_eq!(refilled.seq, low.seq + 1);
        assert!(low.reservoir_ml <= low.low_reservoir_threshold_ml);
        assert!(refilled.reservoir_ml > refilled.low_reservoir_threshold_ml);
        assert_eq!(low.gateway_id, "gw-canary");
        let later = round_readings(
            "CANARY-1",
            "gw-canary",
            8,
            at + chrono::Duration::seconds(1),
        );
        assert!(later[0].seq > refilled.seq, "seq grows with time");
    }
}
