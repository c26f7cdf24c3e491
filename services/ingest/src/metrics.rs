//! What the ingest counts. Names follow `fleet_<component>_<what>_<unit>[_total]`; no
//! label ever names a pump or a gateway (that would be one series per patient).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    pub readings_total: IntCounter,
    pub dead_letters_total: IntCounterVec,
    pub produce_retries_total: IntCounter,
    pub acks_sent_total: IntCounter,
    pub mqtt_disconnects_total: IntCounter,
    pub in_flight: IntGauge,
}

impl IngestMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            c
        };
        let readings_total = counter(
            "fleet_ingest_readings_total",
            "Valid readings durably written to the readings topic",
        );
        let produce_retries_total = counter(
            "fleet_ingest_produce_retries_total",
            "Kafka writes that failed and were retried",
        );
        let acks_sent_total = counter(
            "fleet_ingest_acks_sent_total",
            "End-to-end ack messages sent to gateways",
        );
        let mqtt_disconnects_total = counter(
            "fleet_ingest_mqtt_disconnects_total",
            "MQTT connection losses (each is followed by a reconnect with backoff)",
        );
        let dead_letters_total = IntCounterVec::new(
            Opts::new(
                "fleet_ingest_dead_letters_total",
                "Payloads written to the dead-letter topic, by reason",
            ),
            &["reason"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(dead_letters_total.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let in_flight = IntGauge::new(
            "fleet_ingest_in_flight_readings",
            "Readings received but not yet durably written",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(in_flight.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        IngestMetrics {
            registry,
            readings_total,
            dead_letters_total,
            produce_retries_total,
            acks_sent_total,
            mqtt_disconnects_total,
            in_flight,
        }
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}
