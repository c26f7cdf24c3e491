//! A virtual fleet of implanted intrathecal pumps with injected faults and labelled
//! ground truth, for the home gateway's simulated pump link, tests and the load
//! harness.
//!
//! Pure and deterministic: no I/O, no async runtime, no wall clock. Time is whatever
//! the caller passes to [`Fleet::advance_until`]; the same [`FleetSpec`] (seed
//! included) gives the same readings and the same [`GroundTruth`], bit for bit.
//!
//! Modelling decisions worth knowing:
//!
//! - `seq` counts interrogations. A gateway that is powered off does not interrogate,
//!   so a lost outage leaves a gap in time but none in `seq`; a buffered outage keeps
//!   interrogating and delivers late.
//! - The reservoir is the pump's estimate from commanded delivery. What is really in
//!   the reservoir differs only under a catheter occlusion, and shows as the measured
//!   residual of the next refill.
//! - The pump's own alarms (`DEVICE_ALARM`: `LOW_RESERVOIR`, `EMPTY_RESERVOIR`, `ERI`,
//!   `EOS`) carry the exact time the level was crossed.
//! - [`FleetSpec`] has knobs to vary the fleet away from the default one, so a detector
//!   can be judged on fleets it was not tuned on: cadence, sensor noise, programmed
//!   rates, pump models ([`ModelMix`]) and fault size. Every knob defaults to the
//!   fleet as it was before the knob existed, bit for bit.

mod fleet;
mod plan;
mod pump;
mod random;
mod score;
mod spec;
mod truth;

pub use fleet::Fleet;
pub use pump::{
    EMPTY_RESERVOIR_ALARM, EOS_BATTERY_PCT, ERI_BATTERY_PCT, GatewayOutage, VirtualPump,
};
pub use score::{Finding, KindScore, RaisedAlarm, Score};
pub use spec::{
    DEFAULT_CADENCE, DEFAULT_FIRST_PUMP_NUMBER, DEFAULT_RATE_RANGE_ML_PER_DAY, FAULT_SCALE_LIMITS,
    FaultKind, FaultMix, FaultShare, FleetSpec, ModelMix, NOISE_SCALE_LIMITS,
    RATE_LIMITS_ML_PER_DAY, SpecError,
};
pub use truth::{Episode, GroundTruth, TruthPump};
