//! What the ingest counts. Names follow `fleet_<component>_<what>_<unit>[_total]`; no
//! label ever names a pump or a gateway (that would be one series per patient).

use fleet_runtime::metrics::{counter, counter_vec, gauge, gauge_vec, seconds_histogram};
use fleet_runtime::mqtt::certificate::CertificateExpiry;

use crate::gateway_status::StatusMetrics;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    /// The gateways' retained statuses, totalled ([`crate::gateway_status`]).
    pub gateway_status: StatusMetrics,
    pub readings_total: IntCounter,
    pub produce_seconds: Histogram,
    pub dead_letters_total: IntCounterVec,
    pub produce_retries_total: IntCounter,
    pub acks_sent_total: IntCounter,
    pub acks_dropped_total: IntCounter,
    pub puback_waits_total: IntCounter,
    pub mqtt_disconnects_total: IntCounter,
    pub subscribe_retries_total: IntCounter,
    pub subscribe_refused_total: IntCounter,
    pub connect_failures_total: IntCounterVec,
    pub in_flight: IntGauge,
    pub registry_version: IntGauge,
    pub registry_refresh_failures_total: IntCounter,
    /// When ingest's own MQTT certificate, or its CA, expires.
    pub certificate_expiry: CertificateExpiry,
}

impl IngestMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        // Shared by the readings subscription and the gateway statuses' one.
        let subscribe_refused_total = counter(
            &r,
            "fleet_ingest_subscribe_refused_total",
            "Subscriptions the broker refused, to the readings or to the gateway statuses (ACL: the certificate is not ingest's)",
        );
        IngestMetrics {
            readings_total: counter(
                &r,
                "fleet_ingest_readings_total",
                "Valid readings durably written to the readings topic",
            ),
            produce_seconds: seconds_histogram(
                &r,
                "fleet_ingest_produce_seconds",
                "Time from a valid reading's arrival to Kafka confirming it durable (retries included)",
            ),
            dead_letters_total: counter_vec(
                &r,
                "fleet_ingest_dead_letters_total",
                "Payloads written to the dead-letter topic, by reason",
                &["reason"],
            ),
            produce_retries_total: counter(
                &r,
                "fleet_ingest_produce_retries_total",
                "Kafka writes that failed and were retried",
            ),
            acks_sent_total: counter(
                &r,
                "fleet_ingest_acks_sent_total",
                "End-to-end ack messages sent to gateways",
            ),
            acks_dropped_total: counter(
                &r,
                "fleet_ingest_acks_dropped_total",
                "End-to-end acks dropped for want of room (their readings are resent)",
            ),
            puback_waits_total: counter(
                &r,
                "fleet_ingest_puback_waits_total",
                "Times a PUBACK waited for room in the MQTT client's queue",
            ),
            mqtt_disconnects_total: counter(
                &r,
                "fleet_ingest_mqtt_disconnects_total",
                "MQTT connection losses (each is followed by a reconnect with backoff)",
            ),
            subscribe_retries_total: counter(
                &r,
                "fleet_ingest_subscribe_retries_total",
                "Readings subscriptions sent again after going unanswered (no reading arrives meanwhile)",
            ),
            subscribe_refused_total: subscribe_refused_total.clone(),
            connect_failures_total: {
                let c = counter_vec(
                    &r,
                    "fleet_ingest_connect_failures_total",
                    "MQTT connection attempts that failed before the broker accepted them, by reason (tls, refused, closed, unreachable, timeout, other)",
                    &["reason"],
                );
                for reason in fleet_runtime::mqtt::FAILURE_REASONS {
                    c.with_label_values(&[reason]);
                }
                c
            },
            in_flight: gauge(
                &r,
                "fleet_ingest_in_flight_readings",
                "Readings received but not yet durably written",
            ),
            registry_version: gauge(
                &r,
                "fleet_ingest_registry_version",
                "Version of the registry pairing is checked against",
            ),
            registry_refresh_failures_total: counter(
                &r,
                "fleet_ingest_registry_refresh_failures_total",
                "Registry refreshes that failed (the registry in hand stays in use)",
            ),
            certificate_expiry: CertificateExpiry::new(gauge(
                &r,
                "fleet_ingest_mqtt_certificate_expiry_timestamp_seconds",
                "When ingest's own MQTT certificate, or its CA, expires (Unix seconds; 0 on plain MQTT)",
            )),
            gateway_status: StatusMetrics {
                gateways: gauge_vec(
                    &r,
                    "fleet_ingest_gateways",
                    "Gateways by their last retained status (online, offline)",
                    &["state"],
                ),
                outbox_readings: gauge(
                    &r,
                    "fleet_ingest_gateway_outbox_readings",
                    "Readings waiting in the gateways' outboxes for an end-to-end ack, as the gateways last reported",
                ),
                outbox_max_readings: gauge(
                    &r,
                    "fleet_ingest_gateway_outbox_max_readings",
                    "The deepest single gateway outbox, as last reported",
                ),
                outbox_dropped_readings: gauge(
                    &r,
                    "fleet_ingest_gateway_outbox_dropped_readings",
                    "Readings the gateways report having dropped from full outboxes (lifetime, summed)",
                ),
                certificate_earliest_expiry: gauge(
                    &r,
                    "fleet_ingest_gateway_certificate_earliest_expiry_timestamp_seconds",
                    "The first expiry among the gateways' MQTT certificates (or their CA), as they last reported (Unix seconds; 0 when none reports one)",
                ),
                certificates_expiring: gauge(
                    &r,
                    "fleet_ingest_gateway_certificates_expiring",
                    "Gateways whose MQTT certificate (or CA) has expired or expires within 30 days, as they last reported",
                ),
                invalid_total: counter(
                    &r,
                    "fleet_ingest_gateway_status_invalid_total",
                    "Gateway statuses that could not be read or named another gateway than their topic",
                ),
                subscribe_refused_total,
                over_capacity_total: counter(
                    &r,
                    "fleet_ingest_gateway_status_over_capacity_total",
                    "Statuses of gateways beyond --gateway-status-capacity, not counted",
                ),
            },
            registry: r,
        }
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}
