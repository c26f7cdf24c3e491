//! What a gateway process counts; in fleet mode the figures are sums over its virtual
//! gateways (never a label per gateway or pump).

use fleet_runtime::metrics::{counter, gauge};
use fleet_runtime::serve::Readiness;
use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    pub published_total: IntCounter,
    pub acked_total: IntCounter,
    pub resent_total: IntCounter,
    pub dropped_total: IntCounter,
    pub reconnects_total: IntCounter,
    pub bad_acks_total: IntCounter,
    pub outbox_depth: IntGauge,
    pub connected: IntGauge,
    /// Ready while at least one of the process's gateways is connected.
    pub readiness: Readiness,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        GatewayMetrics {
            published_total: counter(
                &r,
                "fleet_gateway_published_total",
                "Readings published (first sends and resends)",
            ),
            acked_total: counter(
                &r,
                "fleet_gateway_acked_total",
                "Readings removed from the outbox on an end-to-end ack",
            ),
            resent_total: counter(
                &r,
                "fleet_gateway_resent_total",
                "Readings published again for want of an ack",
            ),
            dropped_total: counter(
                &r,
                "fleet_gateway_outbox_dropped_total",
                "Readings dropped because the outbox was full",
            ),
            reconnects_total: counter(
                &r,
                "fleet_gateway_mqtt_reconnects_total",
                "MQTT connections lost",
            ),
            bad_acks_total: counter(
                &r,
                "fleet_gateway_bad_acks_total",
                "End-to-end acks that could not be read",
            ),
            outbox_depth: gauge(
                &r,
                "fleet_gateway_outbox_depth_readings",
                "Readings waiting for an end-to-end ack",
            ),
            connected: gauge(
                &r,
                "fleet_gateway_mqtt_connected_gateways",
                "Gateways of this process connected to the broker",
            ),
            readiness: Readiness::default(),
            registry: r,
        }
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
