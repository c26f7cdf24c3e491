//! The fleet's domain model, as fixed by the fleet contract: what a gateway sends
//! ([`Reading`]), what the detector decides ([`AlarmEvent`]), and who follows which pump
//! ([`Registry`]); their validation and their JSON and protobuf forms.
//!
//! Pure code: no I/O, no async runtime. Every service and tool builds on it, so a
//! reading means the same thing at every hop.

pub mod alarm;
pub mod detect;
pub mod gateway_protocol;
pub mod json;
pub mod protobuf;
pub mod reading;
pub mod registry;
pub mod signing;
pub mod validation;

mod serde_forms;

pub use alarm::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState, Evidence};
pub use reading::{
    Bolus, BolusSource, DeviceAlarm, Drug, LowBatteryReset, MotorStall, Mri, PumpEvent, PumpModel,
    Reading, Refill, Reprogram,
};
pub use registry::{Clinic, PumpAssignment, Registry, RegistryError};
pub use validation::{InvalidReading, Problem, Violation};
