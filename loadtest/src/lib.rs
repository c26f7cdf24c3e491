//! The load and fault harness: starts the real service binaries against the real local
//! stack, injects faults (`kill -9`, broker restarts), and counts what reaches Kafka by
//! `(pump_id, seq)`. The telemetry-path tests and the `fleet-loadtest` benchmark share it.

pub mod archive_ceiling;
pub mod demo;
pub mod harness;
pub mod kafka_count;
pub mod plot;
