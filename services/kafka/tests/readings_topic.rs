//! Produce and consume the readings topic keyed by `pump_id`: against rdkafka's built-in
//! mock cluster (fast, no broker), and against the real local broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_core::Reading;
use fleet_kafka::{FleetProducer, Topics, consumer_config, decode_reading, ensure_topic};
use futures_util::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;

const PUMPS: usize = 5;
const PER_PUMP: u64 = 40;
const PARTITIONS: i32 = 3;

fn reading(pump: usize, seq: u64) -> Reading {
    let t0 = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).expect("valid");
    let mut r = Reading::example(
        &format!("ITP40-{pump:06}"),
        seq,
        t0 + chrono::Duration::hours(seq as i64),
    );
    r.reservoir_ml = 30.0 - seq as f64 * 0.03;
    r
}

/// Produces every pump's readings, consumes them back, and checks that each arrives
/// once, keyed by its pump, with one pump's readings in one partition and in order.
async fn round_trip(brokers: &str, topic: &str) {
    let topics = Topics {
        readings: topic.to_owned(),
        ..Topics::default()
    };
    let producer = FleetProducer::new(brokers, topics).expect("producer");
    for seq in 1..=PER_PUMP {
        for pump in 0..PUMPS {
            producer
                .send_reading(&reading(pump, seq))
                .await
                .expect("delivered");
        }
    }

    let consumer: StreamConsumer = consumer_config(brokers, &format!("{topic}-test"))
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let expected = PUMPS * PER_PUMP as usize;
    let mut stream = consumer.stream();
    let mut received = 0;
    while received < expected {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {received} of {expected} readings consumed in 60 s"))
            .expect("stream open")
            .expect("message");
        let r = decode_reading(&message).expect("a reading");
        assert_eq!(
            message.key(),
            Some(r.pump_id.as_bytes()),
            "keyed by pump_id"
        );
        partitions
            .entry(r.pump_id.clone())
            .or_default()
            .insert(message.partition());
        seen.entry(r.pump_id).or_default().push(r.seq);
        received += 1;
    }
    assert_eq!(seen.len(), PUMPS);
    for (pump, seqs) in &seen {
        let want: Vec<u64> = (1..=PER_PUMP).collect();
        assert_eq!(seqs, &want, "{pump}: every reading once, in order");
        assert_eq!(partitions[pump].len(), 1, "{pump}: one partition");
    }
}

#[tokio::test]
async fn readings_round_trip_through_the_mock_cluster() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic("fleet.readings.v1", PARTITIONS, 1)
        .expect("topic");
    round_trip(&cluster.bootstrap_servers(), "fleet.readings.v1").await;
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it and runs ignored tests"]
async fn readings_round_trip_through_the_local_broker() {
    let brokers = std::env::var("FLEET_KAFKA_BROKERS")
        .expect("FLEET_KAFKA_BROKERS must point at a running broker (eval \"$(deploy/local/stack.sh env)\")");
    // A fresh topic per run: the broker's data is durable across runs.
    let topic = format!(
        "fleet.readings.v1.test-{}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    ensure_topic(&brokers, &topic, PARTITIONS)
        .await
        .expect("topic created");
    round_trip(&brokers, &topic).await;
}
