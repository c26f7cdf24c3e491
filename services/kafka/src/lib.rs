//! The fleet's Kafka surface: topic names, client settings, and the readings topic's
//! producer. Readings are keyed by `pump_id`, so one pump's readings stay in one
//! partition, in order, for the detector's per-pump state.

use std::time::Duration;

use fleet_core::{InvalidReading, Reading, protobuf};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// Topic names, versioned like the protobuf packages their payloads use.
pub mod topics {
    /// Valid readings, protobuf `fleet.telemetry.v1.Reading`, key = `pump_id`.
    pub const READINGS: &str = "fleet.readings.v1";
    /// Alarm events, protobuf `fleet.alarm.v1.AlarmEvent`, key = `pump_id`.
    pub const ALARMS: &str = "fleet.alarms.v1";
    /// Rejected input with its raw payload, source topic and reason.
    pub const DEAD_LETTER: &str = "fleet.deadletter.v1";
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("message at {topic}/{partition}@{offset} has no payload")]
    EmptyMessage {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("message at {topic}/{partition}@{offset}: {source}")]
    InvalidReading {
        topic: String,
        partition: i32,
        offset: i64,
        source: InvalidReading,
    },
}

/// Settings for a producer that never duplicates its own retries (broker-side dedup by
/// producer id and sequence) and waits for all in-sync replicas.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // Bounded: a broker outage longer than this surfaces as an error to the caller,
        // who keeps the input unacknowledged, rather than as an unbounded local queue.
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "100000");
    config
}

/// Settings for a consumer group member that commits offsets itself, only after its
/// output is durable (at-least-once).
pub fn consumer_config(brokers: &str, group_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    config
}

/// Creates a topic if it does not exist yet.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new_topic], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(BusError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// The topics a broker knows: a real Kafka-protocol metadata round trip.
pub fn topic_names(brokers: &str, timeout: Duration) -> Result<Vec<String>, BusError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = consumer.fetch_metadata(None, timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect())
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Produces readings to a topic, keyed by `pump_id`, as protobuf.
#[derive(Clone)]
pub struct ReadingProducer {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for ReadingProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadingProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ReadingProducer {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, BusError> {
        Ok(ReadingProducer {
            producer: producer_config(brokers).create()?,
            topic: topic.to_owned(),
        })
    }

    /// Resolves once the broker has the reading durably (the delivery report).
    pub async fn send(&self, reading: &Reading) -> Result<Delivered, BusError> {
        let payload = protobuf::encode_reading(reading);
        let record = FutureRecord::to(&self.topic)
            .key(reading.pump_id.as_bytes())
            .payload(&payload);
        // The producer's own message.timeout.ms bounds the wait; no second timeout here.
        let delivery = self
            .producer
            .send(record, rdkafka::util::Timeout::Never)
            .await
            .map_err(|(e, _)| e)?;
        Ok(Delivered {
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }
}

/// Decodes a record of the readings topic.
pub fn decode_reading<M: Message>(message: &M) -> Result<Reading, BusError> {
    let payload = message.payload().ok_or_else(|| BusError::EmptyMessage {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    })?;
    protobuf::decode_reading(payload).map_err(|source| BusError::InvalidReading {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        source,
    })
}
