//! The home gateway: reads its pump over a [`link::PumpLink`], keeps every reading in a
//! durable [`outbox::Outbox`] until the cloud acknowledges it end to end, and publishes
//! over MQTT ([`session`]). [`fleet`] hosts many virtual gateways in one process.

pub mod fleet;
pub mod link;
pub mod metrics;
pub mod outbox;
pub mod session;
pub mod simulated;
