//! The ingest service: takes gateway readings off MQTT, checks them, writes the good ones
//! to Kafka keyed by pump and the bad ones to the dead-letter topic, and only then
//! acknowledges them, to the broker and end to end to the gateway.
//!
//! Data flow inside one replica:
//! `mqtt` (event loop) → bounded channel → `pipeline` (triage, produce, in order) →
//! MQTT PUBACK + `acks` (batched end-to-end acks per gateway).

pub mod acks;
pub mod config;
pub mod gateway_status;
pub mod metrics;
pub mod pairing;
pub mod pipeline;
pub mod triage;

pub use config::IngestConfig;
pub use pipeline::run;
