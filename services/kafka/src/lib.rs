//! The fleet's Kafka surface: topic names, client settings, and the readings topic's
//! producer. Readings are keyed by `pump_id`, so one pump's readings stay in one
//! partition, in order, for the detector's per-pump state.

pub mod batch;
pub mod lag;

use std::time::Duration;

use fleet_core::{AlarmEvent, InvalidReading, Reading, protobuf};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
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
        .set("auto.offset.reset", "earliest")
        // Alarm latency is counted in these waits (two consumer hops from reading to
        // page). A broker with long polling answers as soon as data arrives anyway; the
        // local broker answers a fetch only when this runs out, so it is kept short.
        .set("fetch.wait.max.ms", "20");
    config
}

/// [`consumer_config`] for a member of a replicated service's group: the group waits
/// `session_timeout` for a member that stopped heartbeating (a crash) before handing
/// its partitions to the others, and members heartbeat three times per session, as
/// Kafka recommends.
pub fn group_member_config(
    brokers: &str,
    group_id: &str,
    session_timeout: Duration,
) -> ClientConfig {
    let mut config = consumer_config(brokers, group_id);
    config
        .set(
            "session.timeout.ms",
            session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (session_timeout.as_millis() / 3).max(100).to_string(),
        );
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

/// The topic names a process uses; tests give each run its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub readings: String,
    pub alarms: String,
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            readings: topics::READINGS.to_owned(),
            alarms: topics::ALARMS.to_owned(),
            dead_letter: topics::DEAD_LETTER.to_owned(),
        }
    }
}

impl Topics {
    /// The same topics with a suffix, for an isolated test run.
    pub fn with_suffix(suffix: &str) -> Self {
        let base = Topics::default();
        Topics {
            readings: format!("{}.{suffix}", base.readings),
            alarms: format!("{}.{suffix}", base.alarms),
            dead_letter: format!("{}.{suffix}", base.dead_letter),
        }
    }
}

/// The topic flags every service shares: how many partitions a topic it creates gets,
/// and a name suffix (tests run in isolation with their own topics).
#[derive(Debug, Clone, clap::Args)]
pub struct TopicArgs {
    /// Partitions for the topics this service creates if they are missing.
    #[arg(long, env = "FLEET_KAFKA_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Suffix for topic names (tests run in isolation with their own topics).
    #[arg(long, env = "FLEET_TOPIC_SUFFIX")]
    pub topic_suffix: Option<String>,
}

impl TopicArgs {
    pub fn topics(&self) -> Topics {
        self.topic_suffix
            .as_deref()
            .map_or_else(Topics::default, Topics::with_suffix)
    }

    /// Creates each of `topics` that does not exist yet.
    pub async fn ensure(&self, brokers: &str, topics: &[&str]) -> anyhow::Result<()> {
        for topic in topics {
            ensure_topic(brokers, topic, self.partitions)
                .await
                .map_err(|e| anyhow::anyhow!("creating topic {topic} on {brokers}: {e}"))?;
        }
        Ok(())
    }
}

/// Input that was rejected, kept with everything needed to understand or replay it.
///
/// On the wire: the record's value is the raw payload, byte for byte (cut to
/// `MAX_DEAD_LETTER_PAYLOAD_BYTES`, which the headers say); the rest are headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Partitioning key: the publishing gateway, when known.
    pub key: String,
    /// Where the payload came from (an MQTT topic).
    pub source_topic: String,
    /// A short stable code (`undecodable`, `unknown_pump`, ...); also a metric label.
    pub reason: String,
    /// One human sentence.
    pub detail: String,
    pub payload: Vec<u8>,
    /// The payload's size before any cut.
    pub payload_bytes: usize,
    /// RFC 3339 time the input was received.
    pub received_at: String,
}

/// Kafka's default message size limit is 1 MB; a dead letter keeps the first 64 KiB of
/// an oversized payload, which is enough to see what it was.
pub const MAX_DEAD_LETTER_PAYLOAD_BYTES: usize = 64 * 1024;

/// Header of an alarm record: `alarm_id#revision`, the key consumers deduplicate by.
pub const HEADER_ALARM_KEY: &str = "alarm_key";

const HEADER_SOURCE_TOPIC: &str = "source_topic";
const HEADER_REASON: &str = "reason";
const HEADER_DETAIL: &str = "detail";
const HEADER_PAYLOAD_BYTES: &str = "payload_bytes";
const HEADER_RECEIVED_AT: &str = "received_at";

impl DeadLetter {
    /// Reads a dead-letter record back (operators' tools and tests).
    pub fn from_message<M: Message>(message: &M) -> DeadLetter {
        let mut dl = DeadLetter {
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            source_topic: String::new(),
            reason: String::new(),
            detail: String::new(),
            payload: message.payload().unwrap_or_default().to_vec(),
            payload_bytes: 0,
            received_at: String::new(),
        };
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                let value = h
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                match h.key {
                    HEADER_SOURCE_TOPIC => dl.source_topic = value,
                    HEADER_REASON => dl.reason = value,
                    HEADER_DETAIL => dl.detail = value,
                    HEADER_PAYLOAD_BYTES => dl.payload_bytes = value.parse().unwrap_or_default(),
                    HEADER_RECEIVED_AT => dl.received_at = value,
                    _ => {}
                }
            }
        }
        dl
    }
}

/// One idempotent producer for everything a process writes: readings keyed by
/// `pump_id` (protobuf), and dead letters.
#[derive(Clone)]
pub struct FleetProducer {
    producer: FutureProducer,
    topics: Topics,
}

impl std::fmt::Debug for FleetProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetProducer")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl FleetProducer {
    pub fn new(brokers: &str, topics: Topics) -> Result<Self, BusError> {
        Ok(FleetProducer {
            producer: producer_config(brokers).create()?,
            topics,
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Resolves once the broker has the reading durably (the delivery report).
    pub async fn send_reading(&self, reading: &Reading) -> Result<Delivered, BusError> {
        let payload = protobuf::encode_reading(reading);
        let record = FutureRecord::to(&self.topics.readings)
            .key(reading.pump_id.as_bytes())
            .payload(payload.as_slice());
        self.deliver(record).await
    }

    /// Resolves once the broker has the dead letter durably.
    pub async fn send_dead_letter(&self, dl: &DeadLetter) -> Result<Delivered, BusError> {
        let payload = &dl.payload[..dl.payload.len().min(MAX_DEAD_LETTER_PAYLOAD_BYTES)];
        let payload_bytes = dl.payload_bytes.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_SOURCE_TOPIC,
                value: Some(&dl.source_topic),
            })
            .insert(Header {
                key: HEADER_REASON,
                value: Some(&dl.reason),
            })
            .insert(Header {
                key: HEADER_DETAIL,
                value: Some(&dl.detail),
            })
            .insert(Header {
                key: HEADER_PAYLOAD_BYTES,
                value: Some(&payload_bytes),
            })
            .insert(Header {
                key: HEADER_RECEIVED_AT,
                value: Some(&dl.received_at),
            });
        let record = FutureRecord::to(&self.topics.dead_letter)
            .key(dl.key.as_bytes())
            .payload(payload)
            .headers(headers);
        self.deliver(record).await
    }

    /// Queues an alarm event (keyed by `pump_id`, so one pump's events stay in order)
    /// without waiting for its delivery: the detector keeps many in flight and waits for
    /// all of them before it checkpoints.
    pub async fn queue_alarm(&self, alarm: &AlarmEvent) -> Result<PendingDelivery, BusError> {
        let payload = protobuf::encode_alarm(alarm);
        let alarm_key = format!("{}#{}", alarm.alarm_id, alarm.revision);
        let headers = OwnedHeaders::new().insert(Header {
            key: HEADER_ALARM_KEY,
            value: Some(&alarm_key),
        });
        self.queue(&self.topics.alarms, &alarm.pump_id, &payload, Some(headers))
            .await
    }

    /// Queues a reading without waiting for its delivery (bulk loading, tests). Records
    /// are queued in call order, so one pump's readings keep their order.
    pub async fn queue_reading(&self, reading: &Reading) -> Result<PendingDelivery, BusError> {
        let payload = protobuf::encode_reading(reading);
        self.queue(&self.topics.readings, &reading.pump_id, &payload, None)
            .await
    }

    /// Enqueues a record now; waits only while the local queue is full (bounded by
    /// `queue.buffering.max.messages`).
    async fn queue(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<PendingDelivery, BusError> {
        loop {
            let mut record = FutureRecord::to(topic).key(key.as_bytes()).payload(payload);
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(PendingDelivery(delivery)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    async fn deliver(&self, record: FutureRecord<'_, [u8], [u8]>) -> Result<Delivered, BusError> {
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

    /// Waits for everything queued to be delivered (graceful shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        use rdkafka::producer::Producer;
        self.producer.flush(timeout)?;
        Ok(())
    }
}

/// A record queued for delivery; resolves with the broker's delivery report.
pub struct PendingDelivery(DeliveryFuture);

impl std::fmt::Debug for PendingDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingDelivery")
    }
}

impl PendingDelivery {
    pub async fn delivered(self) -> Result<Delivered, BusError> {
        match self.0.await {
            Ok(Ok(delivery)) => Ok(Delivered {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((e, _))) => Err(e.into()),
            Err(_canceled) => Err(BusError::Kafka(KafkaError::Canceled)),
        }
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
