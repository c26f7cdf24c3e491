//! What a gateway process counts; in fleet mode the figures are sums over its virtual
//! gateways (never a label per gateway or pump).

use fleet_runtime::metrics::{counter, counter_vec, gauge};
use fleet_runtime::mqtt::certificate::CertificateExpiry;
use fleet_runtime::serve::Readiness;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    pub published_total: IntCounter,
    pub acked_total: IntCounter,
    pub resent_total: IntCounter,
    pub dropped_total: IntCounter,
    pub reconnects_total: IntCounter,
    pub bad_acks_total: IntCounter,
    /// Connection attempts that failed before the broker accepted them, by
    /// `fleet_runtime::mqtt::failure_reason` (a refused certificate is `tls`).
    pub connect_failures_total: IntCounterVec,
    /// Acks subscriptions the broker refused (its ACL: the certificate is not this
    /// gateway's).
    pub subscribe_refused_total: IntCounter,
    pub outbox_depth: IntGauge,
    pub connected: IntGauge,
    /// The earliest expiry among the process's gateways' certificates and their CA.
    pub certificate_expiry: CertificateExpiry,
    /// Ready while at least one of the process's gateways is connected.
    pub readiness: Readiness,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        Self::in_registry(Registry::new())
    }

    /// The same metrics registered in `r`: a process that hosts a gateway session
    /// beside metrics of its own (the canary) serves them all from one endpoint.
    pub fn in_registry(r: Registry) -> Self {
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
            connect_failures_total: {
                let c = counter_vec(
                    &r,
                    "fleet_gateway_connect_failures_total",
                    "MQTT connection attempts that failed before the broker accepted them, by reason (tls: handshake failed or certificate refused; refused: CONNACK refusal; closed: closed without a word, as a TLS listener does to plain MQTT; unreachable; timeout; other)",
                    &["reason"],
                );
                for reason in fleet_runtime::mqtt::FAILURE_REASONS {
                    c.with_label_values(&[reason]);
                }
                c
            },
            subscribe_refused_total: counter(
                &r,
                "fleet_gateway_subscribe_refused_total",
                "Acks subscriptions the broker refused (ACL: the certificate is not this gateway's)",
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
            certificate_expiry: CertificateExpiry::new(gauge(
                &r,
                "fleet_gateway_mqtt_certificate_expiry_timestamp_seconds",
                "When the first of this process's gateway certificates, or their CA, expires (Unix seconds; 0 on plain MQTT)",
            )),
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
