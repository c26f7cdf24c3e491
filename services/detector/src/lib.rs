//! The detector service: the alarm rules of `fleet_core::detect`, run two ways with the
//! same code.
//!
//! - [`replay`]: over a file of readings, in file order, with the fleet watermark as the
//!   clock; deterministic output (the contract's replay CLI).
//! - [`stream`]: as a Kafka consumer group member on the readings topic, one detector
//!   per partition, alarm events to the alarms topic, state and offsets checkpointed
//!   together in PostgreSQL.

pub mod baseline;
pub mod replay;
pub mod stream;

pub use replay::{ReplaySummary, replay, replay_baseline, replay_files};
