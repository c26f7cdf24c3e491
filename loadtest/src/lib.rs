//! The load and fault harness: starts the real service binaries against the real local
//! stack, injects faults (`kill -9`, broker restarts), and counts what reaches Kafka by
//! `(pump_id, seq)`. The telemetry-path tests and the `fleet-loadtest` benchmark share it.

pub mod archive_ceiling;
pub mod chaos;
pub mod demo;
pub mod drain;
pub mod faults;
pub mod harness;
pub mod hop;
pub mod hop_detector;
pub mod hop_notifier;
pub mod kafka_count;
pub mod kafka_load;
pub mod latency;
pub mod mqtt_connections;
pub mod pages;
pub mod plot;
pub mod procfs;
pub mod tonic_ceiling;
