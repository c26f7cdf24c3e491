//! What a gateway process counts; in fleet mode the figures are sums over its virtual
//! gateways (never a label per gateway or pump).

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
    /// Ready while at least one of the process's gateways is connected.
    pub readiness: fleet_runtime::serve::Readiness,
    pub connected: IntGauge,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            c
        };
        let published_total = counter(
            "fleet_gateway_published_total",
            "Readings published (first sends and resends)",
        );
        let acked_total = counter(
            "fleet_gateway_acked_total",
            "Readings removed from the outbox on an end-to-end ack",
        );
        let resent_total = counter(
            "fleet_gateway_resent_total",
            "Readings published again for want of an ack",
        );
        let dropped_total = counter(
            "fleet_gateway_outbox_dropped_total",
            "Readings dropped because the outbox was full",
        );
        let reconnects_total = counter(
            "fleet_gateway_mqtt_reconnects_total",
            "MQTT connections lost",
        );
        let bad_acks_total = counter(
            "fleet_gateway_bad_acks_total",
            "End-to-end acks that could not be read",
        );
        let outbox_depth = IntGauge::new(
            "fleet_gateway_outbox_depth_readings",
            "Readings waiting for an end-to-end ack",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(outbox_depth.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let connected = IntGauge::new(
            "fleet_gateway_mqtt_connected_gateways",
            "Gateways of this process connected to the broker",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(connected.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        GatewayMetrics {
            readiness: Default::default(),
            connected,
            registry,
            published_total,
            acked_total,
            resent_total,
            dropped_total,
            reconnects_total,
            bad_acks_total,
            outbox_depth,
        }
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
