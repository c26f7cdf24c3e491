//! The streaming detector against the real stack, killed with `kill -9` twice in the
//! middle of the smoke scenario: after each restart it resumes from its PostgreSQL
//! checkpoint, and its alarm stream, once repeated `(alarm_id, revision)` pairs are
//! dropped, is exactly what an uninterrupted detector emits for the same records. Every
//! repeat must be identical to the event it repeats.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use fleet_core::AlarmEvent;
use fleet_core::detect::{Detector, DetectorConfig};
use fleet_kafka::{FleetProducer, Topics};
use fleet_loadtest::harness::{self, Service, StackEnv};
use fleet_loadtest::kafka_count;
use rdkafka::message::Message;

const SMOKE: &str = harness::SMOKE_SCENARIO;

struct Run {
    env: StackEnv,
    suffix: String,
    group: String,
    topics: Topics,
    dir: tempfile::TempDir,
    metrics_port: u16,
}

impl Run {
    fn new() -> Run {
        let env = StackEnv::from_env().expect("stack endpoints");
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let suffix = format!("detector-crash-{nanos}");
        Run {
            env,
            group: format!("fleet-detector-{suffix}"),
            topics: Topics::with_suffix(&suffix),
            suffix,
            dir: tempfile::tempdir().expect("tempdir"),
            metrics_port: harness::free_port().expect("free port"),
        }
    }

    fn start_detector(&self, attempt: u32) -> Service {
        let log = self.dir.path().join(format!("detector-{attempt}.log"));
        let mut command = self
            .env
            .command("fleet-detector", &self.env.database_url)
            .expect("detector binary");
        command
            .env(
                "RUST_LOG",
                std::env::var("DETECTOR_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .args(["--topic-suffix", &self.suffix, "--group", &self.group])
            // Frequent checkpoints: a kill lands between many of them.
            .args(["--checkpoint-interval", "100ms"])
            // Historic data: the wall clock must not move the clock during the test.
            .args(["--idle-advance-after", "1h"])
            // The killed replica's partitions move on soon after it stops heartbeating.
            .args(["--session-timeout", "6s"])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.metrics_port),
            ]);
        Service::spawn("fleet-detector", &mut command, &log).expect("detector starts")
    }

    /// The warnings and errors a detector run logged, and how it claimed partitions.
    fn log_summary(&self, attempt: u32) -> String {
        let path = self.dir.path().join(format!("detector-{attempt}.log"));
        let log = std::fs::read_to_string(path).unwrap_or_default();
        log.lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("claimed")
                    || l.contains("checkpoint ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Readings the running detector has applied (since it started).
    async fn applied(&self) -> f64 {
        harness::metric(self.metrics_port, "fleet_detector_readings_total")
            .await
            .unwrap_or(0.0)
    }

    /// Every partition's checkpoint has reached the end of the readings topic.
    async fn checkpoints_at(&self, ends: &BTreeMap<i32, i64>) -> bool {
        let Ok(pool) = sqlx::PgPool::connect(&self.env.database_url).await else {
            return false;
        };
        let rows: Vec<(i32, Option<i64>)> = sqlx::query_as(
            "SELECT partition, next_offset FROM detector_partition WHERE consumer_group = $1",
        )
        .bind(&self.group)
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        pool.close().await;
        let saved: BTreeMap<i32, i64> =
            rows.into_iter().map(|(p, o)| (p, o.unwrap_or(0))).collect();
        ends.iter()
            .filter(|(_, end)| **end > 0)
            .all(|(p, end)| saved.get(p) == Some(end))
    }
}

/// What an uninterrupted detector emits: one detector per partition, fed the
/// partition's records in offset order (as the streaming replica does).
fn uninterrupted(records: &[rdkafka::message::OwnedMessage]) -> Vec<AlarmEvent> {
    let mut by_partition: BTreeMap<i32, Vec<(i64, fleet_core::Reading)>> = BTreeMap::new();
    for m in records {
        let reading = fleet_kafka::decode_reading(m).expect("readings decode");
        by_partition
            .entry(m.partition())
            .or_default()
            .push((m.offset(), reading));
    }
    let mut events = Vec::new();
    for (_, mut readings) in by_partition {
        readings.sort_by_key(|(offset, _)| *offset);
        let mut detector = Detector::new(DetectorConfig::default());
        for (_, reading) in &readings {
            events.extend(detector.observe(reading));
        }
    }
    events
}

fn per_pump(events: impl IntoIterator<Item = AlarmEvent>) -> BTreeMap<String, Vec<AlarmEvent>> {
    let mut out: BTreeMap<String, Vec<AlarmEvent>> = BTreeMap::new();
    for e in events {
        out.entry(e.pump_id.clone()).or_default().push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn killed_detector_resumes_from_its_checkpoint() {
    let run = Run::new();
    let brokers = run.env.kafka_brokers.clone();
    for topic in [
        &run.topics.readings,
        &run.topics.alarms,
        &run.topics.dead_letter,
    ] {
        fleet_kafka::ensure_topic(&brokers, topic, kafka_count::DEFAULT_PARTITIONS)
            .await
            .expect("topic");
    }

    // The scenario, in the readings topic, before the detector starts.
    let readings = harness::load_readings(Path::new(SMOKE)).expect("scenario");
    let producer = FleetProducer::new(&brokers, run.topics.clone()).expect("producer");
    let mut pending = Vec::with_capacity(readings.len());
    for r in &readings {
        pending.push(producer.queue_reading(r).await.expect("queued"));
    }
    for d in pending {
        d.delivered().await.expect("reading delivered");
    }
    let total = readings.len() as f64;
    let ends = kafka_count::high_watermarks(&brokers, &run.topics.readings).expect("watermarks");
    println!("readings in the topic: {}", ends.values().sum::<i64>());

    // Two kills, each once the replica has applied a third of the scenario.
    for attempt in 0..2 {
        let mut detector = run.start_detector(attempt);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        let mut applied = 0.0;
        while applied < total / 3.0 {
            assert!(
                Instant::now() < deadline,
                "detector made no progress; see its log"
            );
            assert!(detector.is_running(), "detector exited early");
            tokio::time::sleep(Duration::from_millis(20)).await;
            applied = run.applied().await;
        }
        detector.kill9();
        println!(
            "kill -9 number {} after {applied} readings applied ({:?} after start)\n{}",
            attempt + 1,
            started.elapsed(),
            run.log_summary(attempt)
        );
        assert!(applied < total, "the kill must land mid-stream");
    }

    // The last run goes to the end of the topic, then stops in an orderly way.
    let mut detector = run.start_detector(2);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    while !run.checkpoints_at(&ends).await {
        assert!(
            Instant::now() < deadline,
            "detector did not reach the end of the topic"
        );
        assert!(detector.is_running(), "detector exited early");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "last run applied {} readings in {:?}\n{}",
        run.applied().await,
        started.elapsed(),
        run.log_summary(2)
    );
    detector
        .terminate(Duration::from_secs(10))
        .expect("orderly stop");

    let records = kafka_count::read_records(
        &brokers,
        &run.topics.readings,
        readings.len(),
        Duration::from_secs(10),
        Duration::from_secs(60),
    )
    .await
    .expect("readings back");
    assert_eq!(records.len(), readings.len());
    let expected = per_pump(uninterrupted(&records));

    let alarm_records = kafka_count::read_records(
        &brokers,
        &run.topics.alarms,
        usize::MAX,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await
    .expect("alarms back");
    let emitted: Vec<AlarmEvent> = alarm_records
        .iter()
        .map(|m| {
            fleet_core::protobuf::decode_alarm(m.payload().unwrap_or_default())
                .expect("alarm decodes")
        })
        .collect();
    let emitted_count = emitted.len();

    // Drop repeats, checking each is identical to the first emission.
    let mut first: HashMap<(String, u32), AlarmEvent> = HashMap::new();
    let mut deduplicated = Vec::new();
    let mut repeats = 0;
    for e in emitted {
        let key = (e.alarm_id.clone(), e.revision);
        match first.get(&key) {
            Some(original) => {
                assert_eq!(&e, original, "a repeat differs from the event it repeats");
                repeats += 1;
            }
            None => {
                first.insert(key, e.clone());
                deduplicated.push(e);
            }
        }
    }
    let actual = per_pump(deduplicated);
    let expected_count: usize = expected.values().map(Vec::len).sum();
    println!(
        "alarm events: {emitted_count} emitted, {repeats} repeats, {expected_count} expected from an uninterrupted run"
    );
    assert!(expected_count >= 6, "the smoke scenario raises alarms");
    assert_eq!(
        actual, expected,
        "alarm stream differs from an uninterrupted run"
    );
}
