//! The telemetry path against the real local stack: gateways → Mosquitto → ingest →
//! Kafka. Every unique `(pump_id, seq)` of the smoke scenario must arrive, also when
//! the ingest and a gateway are killed with `kill -9` and Mosquitto restarts mid-run;
//! bad input must reach the dead-letter topic with its reason while good traffic flows.
//!
//! Each test uses its own topics (a suffix) and its own MQTT client ids, so runs never
//! see each other's data on the durable broker.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleet_loadtest::harness::{self, Service, StackEnv};
use fleet_loadtest::kafka_count::{self, Arrivals};

const SMOKE: &str = harness::SMOKE_SCENARIO;

/// One isolated run: a suffix for topics and client ids, a scratch directory.
struct Run {
    env: StackEnv,
    suffix: String,
    dir: tempfile::TempDir,
}

/// These tests share the broker and the scenario's gateway ids: one at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

impl Run {
    fn new(name: &str) -> Run {
        let env = StackEnv::from_env().expect("stack endpoints");
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        Run {
            env,
            suffix: format!("{name}-{nanos}"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The smoke scenario's readings, and a registry pairing its pumps written for
    /// this run.
    fn smoke_scenario(&self) -> (Vec<fleet_core::Reading>, PathBuf) {
        let readings = harness::load_readings(Path::new(SMOKE)).expect("scenario");
        let registry = self.path("registry.toml");
        harness::write_registry(&readings, &registry).expect("registry");
        (readings, registry)
    }

    /// Counts what reaches this run's readings topic.
    async fn watch(&self) -> tokio::sync::watch::Receiver<Arrivals> {
        kafka_count::watch_readings(&self.env.kafka_brokers, &self.readings_topic())
            .await
            .expect("consumer")
    }

    fn readings_topic(&self) -> String {
        format!("{}.{}", fleet_kafka::topics::READINGS, self.suffix)
    }

    fn dead_letter_topic(&self) -> String {
        format!("{}.{}", fleet_kafka::topics::DEAD_LETTER, self.suffix)
    }

    /// Starts an ingest replica and waits until it is subscribed.
    async fn ingest(&self, registry: &Path, generation: u32) -> Service {
        let bin = harness::binary("fleet-ingest").expect("fleet-ingest builds");
        let port = harness::free_port().expect("port");
        let service = Service::spawn(
            "fleet-ingest",
            Command::new(bin)
                .env("FLEET_MQTT_URL", &self.env.mqtt_url)
                .env("FLEET_KAFKA_BROKERS", &self.env.kafka_brokers)
                .args(["--registry-file", &registry.display().to_string()])
                .args(["--client-id", &format!("ingest-{}", self.suffix)])
                .args(["--topic-suffix", &self.suffix])
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")]),
            &self.path(&format!("ingest-{generation}.log")),
        )
        .expect("ingest starts");
        harness::wait_ready(port, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log(&format!("ingest-{generation}.log"))));
        service
    }

    fn gateways(&self, replay: &Path, generation: u32, extra: &[&str]) -> Service {
        let bin = harness::binary("fleet-gateway").expect("fleet-gateway builds");
        harness::issue_replay_certs(replay).expect("gateway certificates");
        let port = harness::free_port().expect("port");
        Service::spawn(
            "fleet-gateway",
            Command::new(bin)
                .env("FLEET_MQTT_URL", &self.env.mqtt_url)
                .args(["--fleet", "--exit-when-drained"])
                .args(["--replay", &replay.display().to_string()])
                .args(["--state-dir", &self.path("gateways").display().to_string()])
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                .args(["--resend-after", "5s"])
                .args(extra),
            &self.path(&format!("gateway-{generation}.log")),
        )
        .expect("gateways start")
    }

    /// Waits for the replay to be fully acknowledged and every expected reading to be
    /// in Kafka; prints the figures and fails naming what is missing.
    async fn drain_and_count(
        &self,
        label: &str,
        mut gateways: Service,
        generation: u32,
        arrivals: &mut tokio::sync::watch::Receiver<Arrivals>,
        expected: &BTreeSet<(String, u64)>,
    ) {
        let status = gateways
            .wait_exit(Duration::from_secs(600))
            .expect("replay drains");
        let log = self.log(&format!("gateway-{generation}.log"));
        assert!(status.success(), "gateways failed:\n{log}");
        let seen = kafka_count::wait_for(arrivals, Duration::from_secs(60), |a| {
            a.unique.len() >= expected.len()
        })
        .await;
        report(label, expected.len(), &seen);
        assert_all_arrived(expected, &seen);
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

/// Fails naming how many expected readings are missing (and a few of them), or which
/// unexpected ones turned up.
fn assert_all_arrived(expected: &BTreeSet<(String, u64)>, seen: &Arrivals) {
    let missing: Vec<_> = expected.difference(&seen.unique).collect();
    let unexpected: Vec<_> = seen.unique.difference(expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{} of {} readings missing (e.g. {:?}); {} unexpected (e.g. {:?})",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)],
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
}

/// Waits (up to two minutes) until `count` unique readings arrived; returns how many.
async fn arrived_at_least(
    arrivals: &mut tokio::sync::watch::Receiver<Arrivals>,
    count: usize,
) -> usize {
    kafka_count::wait_for(arrivals, Duration::from_secs(120), |a| {
        a.unique.len() >= count
    })
    .await
    .unique
    .len()
}

fn report(label: &str, expected: usize, arrivals: &Arrivals) {
    eprintln!(
        "{label}: expected {expected} unique readings; arrived {} unique in {} records ({} duplicates); missing {}",
        arrivals.unique.len(),
        arrivals.records,
        arrivals.records - arrivals.unique.len() as u64,
        expected - arrivals.unique.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it and runs ignored tests"]
async fn every_reading_of_the_smoke_scenario_arrives() {
    let _serial = serial().await;
    let run = Run::new("smoke");
    let (readings, registry) = run.smoke_scenario();
    let expected = harness::unique_keys(&readings);

    let _ingest = run.ingest(&registry, 0).await;
    let mut arrivals = run.watch().await;
    let gateways = run.gateways(Path::new(SMOKE), 0, &[]);
    run.drain_and_count("smoke", gateways, 0, &mut arrivals, &expected)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it and runs ignored tests"]
async fn kill_9_of_ingest_and_gateway_and_a_mosquitto_restart_lose_nothing() {
    let _serial = serial().await;
    let run = Run::new("faults");
    let (readings, registry) = run.smoke_scenario();
    let expected = harness::unique_keys(&readings);
    let total = expected.len();

    let mut arrivals = run.watch().await;
    let mut ingest = run.ingest(&registry, 0).await;
    // Paced so the faults land mid-run: one reading per gateway every 2 ms at most.
    let pacing = ["--replay-batch", "1", "--replay-interval", "2ms"];
    let mut gateways = run.gateways(Path::new(SMOKE), 0, &pacing);
    let at = |fraction: f64| (total as f64 * fraction) as usize;

    let arrived = arrived_at_least(&mut arrivals, at(0.2)).await;
    ingest.kill9();
    eprintln!("kill -9 ingest at {arrived} arrived");
    let mut ingest = run.ingest(&registry, 1).await;

    let arrived = arrived_at_least(&mut arrivals, at(0.4)).await;
    gateways.kill9();
    eprintln!("kill -9 gateways at {arrived} arrived");
    // The same state directory: the outboxes, and the replay from the start (the
    // outbox ignores readings it already holds; acknowledged ones are published again
    // and deduplicated downstream by (pump_id, seq)).
    let gateways = run.gateways(Path::new(SMOKE), 1, &pacing);

    let arrived = arrived_at_least(&mut arrivals, at(0.6)).await;
    eprintln!("restarting mosquitto at {arrived} arrived");
    harness::restart_mosquitto().expect("mosquitto restarts");

    run.drain_and_count("faults", gateways, 1, &mut arrivals, &expected)
        .await;
    assert!(
        ingest.is_running(),
        "ingest survived:\n{}",
        run.log("ingest-1.log")
    );
    ingest
        .terminate(Duration::from_secs(15))
        .expect("ingest stops on SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it and runs ignored tests"]
async fn bad_input_is_dead_lettered_with_its_reason_while_good_traffic_flows() {
    use fleet_core::gateway_protocol::{ReadingEncoding, readings_topic};
    use fleet_core::{json, protobuf};
    use rumqttc::{AsyncClient, Event, Packet, QoS};

    let _serial = serial().await;
    let run = Run::new("deadletter");
    let (readings, registry) = run.smoke_scenario();
    // Two gateways' first 50 readings each are the good traffic.
    let good: Vec<_> = readings
        .iter()
        .filter(|r| r.gateway_id == "gw-100001" || r.gateway_id == "gw-100002")
        .take(100)
        .cloned()
        .collect();
    let _ingest = run.ingest(&registry, 0).await;
    let mut arrivals = run.watch().await;

    // One client per gateway: with TLS on, a client publishes only under its own
    // certificate's gateway id (the broker's ACL), as a real gateway does.
    let gateways = ["gw-100001", "gw-100002"];
    harness::issue_gateway_certs(gateways).expect("gateway certificates");
    let mut clients = std::collections::BTreeMap::new();
    let mut pumps = Vec::new();
    for gw in gateways {
        let mut options = run
            .env
            .mqtt()
            .options(&format!("bad-publisher-{gw}-{}", run.suffix), gw)
            .expect("mqtt options");
        options.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        pumps.push(tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }));
        clients.insert(gw.to_owned(), client);
    }
    let client_for = |topic: &str| {
        let (gw, _) = fleet_core::gateway_protocol::parse_topic(topic).expect("contract topic");
        clients[gw].clone()
    };
    let sample = &good[0];
    let pb = protobuf::encode_reading(sample);
    let mut unknown = sample.clone();
    unknown.pump_id = "ITP40-999999".into();
    let mut wrong_json: serde_json::Value =
        serde_json::from_str(&json::to_json(sample)).expect("json");
    wrong_json["battery_pct"] = "about half".into();
    let gw = sample.gateway_id.clone();
    let pb_topic = readings_topic(&gw, ReadingEncoding::Protobuf);
    let json_topic = readings_topic(&gw, ReadingEncoding::Json);
    // A reading of this pump, published by a gateway it is not paired with.
    let other_gw = if gw == "gw-100001" {
        "gw-100002"
    } else {
        "gw-100001"
    };
    let mut foreign = sample.clone();
    foreign.gateway_id = other_gw.into();
    let bad: Vec<(String, Vec<u8>, &str)> = vec![
        (
            pb_topic.clone(),
            b"\x00\xffgarbage bytes\x07".to_vec(),
            "undecodable",
        ),
        (pb_topic.clone(), pb[..pb.len() / 2].to_vec(), "undecodable"),
        (
            json_topic.clone(),
            wrong_json.to_string().into_bytes(),
            "wrong_type",
        ),
        (
            json_topic.clone(),
            vec![b'x'; 10 * 1024 * 1024],
            "oversized",
        ),
        (
            pb_topic.clone(),
            protobuf::encode_reading(&unknown),
            "unknown_pump",
        ),
        (
            readings_topic(other_gw, ReadingEncoding::Protobuf),
            protobuf::encode_reading(&foreign),
            "wrong_gateway",
        ),
    ];
    for (i, reading) in good.iter().enumerate() {
        let topic = readings_topic(&reading.gateway_id, ReadingEncoding::Protobuf);
        client_for(&topic)
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                protobuf::encode_reading(reading),
            )
            .await
            .expect("queued");
        if let Some((topic, payload, _)) = bad.get(i / 10)
            && i % 10 == 5
        {
            client_for(topic)
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("queued");
        }
    }

    let letters = kafka_count::read_dead_letters(
        &run.env.kafka_brokers,
        &run.dead_letter_topic(),
        bad.len(),
        Duration::from_secs(60),
    )
    .await
    .expect("dead letters readable");
    let seen = kafka_count::wait_for(&mut arrivals, Duration::from_secs(60), |a| {
        a.unique.len() >= good.len()
    })
    .await;
    for client in clients.values() {
        let _ = client.disconnect().await;
    }
    for pump in pumps {
        let _ = pump.await;
    }

    let mut want: Vec<&str> = bad.iter().map(|(_, _, reason)| *reason).collect();
    let mut got: Vec<&str> = letters.iter().map(|dl| dl.reason.as_str()).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(
        got,
        want,
        "dead letters: {:?}\ningest log:\n{}",
        kafka_count::by_reason(&letters),
        run.log("ingest-0.log")
    );
    let oversized = letters
        .iter()
        .find(|dl| dl.reason == "oversized")
        .expect("oversized letter");
    assert_eq!(
        oversized.payload_bytes,
        10 * 1024 * 1024,
        "the original size is recorded"
    );
    assert_eq!(
        oversized.payload.len(),
        fleet_kafka::MAX_DEAD_LETTER_PAYLOAD_BYTES,
        "the stored payload is cut"
    );
    let garbage = letters
        .iter()
        .find(|dl| dl.payload.starts_with(b"\x00\xffgarbage"))
        .expect("raw payload kept");
    assert_eq!(garbage.source_topic, pb_topic);
    assert_all_arrived(&harness::unique_keys(&good), &seen);
}
