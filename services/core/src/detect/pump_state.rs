//! Everything the detector remembers about one pump, and the order in which a reading
//! is applied to the rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::battery::BatteryRule;
use super::config::DetectorConfig;
use super::episode::Episode;
use super::occlusion::OcclusionRule;
use super::{reservoir, telemetry};
use crate::alarm::AlarmEvent;
use crate::reading::{Drug, PumpEvent, Reading};

/// The latest values the reservoir rules need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub measured_at: DateTime<Utc>,
    pub reservoir_ml: f64,
    pub threshold_ml: f64,
    pub rate_ml_per_day: f64,
    pub refill_due_at: DateTime<Utc>,
}

/// Serializable, so the streaming detector can checkpoint it next to its offsets.
#[derive(Debug, Serialize, Deserialize)]
pub struct PumpState {
    pub(super) pump_id: String,
    pub(super) drug: Drug,
    high_seq: Option<u64>,
    pub(super) snapshot: Snapshot,
    /// The detector's clock when the pump's latest reading arrived.
    pub(super) last_arrival: DateTime<Utc>,
    pub(super) telemetry: Episode,
    pub(super) low_reservoir: Episode,
    pub(super) missed_refill: Episode,
    pub(super) battery: BatteryRule,
    pub(super) occlusion: OcclusionRule,
    /// The deadline this pump has in the detector's heap, if any.
    pub(super) scheduled: Option<DateTime<Utc>>,
    /// Changed since the last checkpoint (not itself checkpointed).
    #[serde(skip)]
    pub(super) changed: bool,
}

impl PumpState {
    pub(super) fn new(r: &Reading) -> Self {
        PumpState {
            pump_id: r.pump_id.clone(),
            drug: r.drug_kind(),
            high_seq: None,
            snapshot: snapshot(r),
            last_arrival: r.measured_at,
            telemetry: Episode::default(),
            low_reservoir: Episode::default(),
            missed_refill: Episode::default(),
            battery: BatteryRule::default(),
            occlusion: OcclusionRule::default(),
            scheduled: None,
            changed: false,
        }
    }

    pub fn pump_id(&self) -> &str {
        &self.pump_id
    }

    /// False for a duplicate or stale reading (seq at or below the high-water mark).
    pub(super) fn accept(&mut self, r: &Reading) -> bool {
        if self.high_seq.is_some_and(|h| r.seq <= h) {
            return false;
        }
        self.high_seq = Some(r.seq);
        true
    }

    pub(super) fn evaluate(
        &mut self,
        r: &Reading,
        clock: DateTime<Utc>,
        config: &DetectorConfig,
        out: &mut Vec<AlarmEvent>,
    ) {
        self.last_arrival = clock;
        telemetry::on_reading(self, clock, out);
        self.drug = r.drug_kind();
        for event in &r.events {
            match event {
                PumpEvent::Refill(refill) => {
                    self.occlusion
                        .on_refill(refill, r.reservoir_capacity_ml, config)
                }
                PumpEvent::Mri(mri) => self.occlusion.on_mri(mri),
                PumpEvent::MotorStall(stall) => self.occlusion.on_stall(stall, config),
                PumpEvent::Bolus(bolus) => self.occlusion.on_bolus(bolus),
                PumpEvent::LowBatteryReset(reset) => self.battery.on_reset(reset.at),
                PumpEvent::Reprogram(_) | PumpEvent::DeviceAlarm(_) => {}
            }
        }
        if r.measured_at >= self.snapshot.measured_at {
            self.snapshot = snapshot(r);
        }
        reservoir::evaluate(self, clock, config, out);
        let (pump_id, drug) = (self.pump_id.as_str(), self.drug);
        self.battery.evaluate(pump_id, r, clock, config, out);
        self.occlusion
            .evaluate(pump_id, drug, r, clock, config, out);
    }

    /// The clock passed one of this pump's deadlines.
    pub(super) fn on_clock(
        &mut self,
        now: DateTime<Utc>,
        config: &DetectorConfig,
        out: &mut Vec<AlarmEvent>,
    ) {
        telemetry::on_clock(self, now, config, out);
        reservoir::evaluate(self, now, config, out);
    }

    /// The next moment after `now` this pump's alarms may change without a reading.
    pub(super) fn next_deadline(
        &self,
        now: DateTime<Utc>,
        config: &DetectorConfig,
    ) -> Option<DateTime<Utc>> {
        let mut next: Option<DateTime<Utc>> = None;
        let mut consider = |t: DateTime<Utc>| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if !self.telemetry.is_open() {
            consider(self.last_arrival + config.telemetry_lost_after);
        }
        if !self.missed_refill.is_open() {
            consider(self.snapshot.refill_due_at + config.refill_grace);
        }
        if !self.low_reservoir.is_open()
            && let Some(at) = reservoir::threshold_at(&self.snapshot)
        {
            consider(at);
        }
        next
    }
}

fn snapshot(r: &Reading) -> Snapshot {
    Snapshot {
        measured_at: r.measured_at,
        reservoir_ml: r.reservoir_ml,
        threshold_ml: r.low_reservoir_threshold_ml,
        rate_ml_per_day: r.programmed_rate_ml_per_day,
        refill_due_at: r.refill_due_at,
    }
}
