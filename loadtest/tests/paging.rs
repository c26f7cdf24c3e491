//! Paging against the real stack: alarm events in Kafka → `fleet-notifier` → clinics'
//! `fleetctl receiver` processes. Each test has its own database, topics and consumer
//! group, and registers its clinics on free loopback ports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fleet_core::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState};
use fleet_kafka::{FleetProducer, Topics};
use fleet_loadtest::harness::{self, Service, StackEnv};

const SECRET: &str = "test-clinic-secret-0123456789";

struct Clinic {
    id: &'static str,
    port: u16,
    fallback_port: Option<u16>,
    escalation_after: &'static str,
    /// Paged at `https://localhost:PORT` (the receiver serves the run's TLS identity).
    tls: bool,
}

struct Run {
    env: StackEnv,
    database_url: String,
    suffix: String,
    topics: Topics,
    dir: tempfile::TempDir,
    metrics_port: u16,
    api_port: u16,
}

impl Run {
    async fn new(name: &str, clinics: &[Clinic], pumps: &[(&str, &str)]) -> Run {
        let env = StackEnv::from_env().expect("stack endpoints");
        let database_url = fleet_store::testing::fresh_database(&env.database_url, name)
            .await
            .expect("a database of our own");
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let suffix = format!("{name}-{nanos}");
        let run = Run {
            topics: Topics::with_suffix(&suffix),
            suffix,
            env,
            database_url,
            dir: tempfile::tempdir().expect("tempdir"),
            metrics_port: harness::free_port().expect("port"),
            api_port: harness::free_port().expect("port"),
        };
        let mut toml = String::new();
        for c in clinics {
            let webhook = if c.tls {
                format!("https://localhost:{}", c.port)
            } else {
                format!("http://127.0.0.1:{}", c.port)
            };
            toml += &format!(
                "[[clinic]]\nid = \"{}\"\nname = \"{} clinic\"\nwebhook = \"{webhook}\"\nescalation_after = \"{}\"\nsigning_secret = \"{SECRET}\"\n",
                c.id, c.id, c.escalation_after
            );
            if let Some(port) = c.fallback_port {
                toml += &format!("fallback_webhook = \"http://127.0.0.1:{port}\"\n");
            }
        }
        for (pump, clinic) in pumps {
            toml += &format!(
                "[[pump]]\npump_id = \"{pump}\"\ngateway_id = \"gw-{pump}\"\nclinic_id = \"{clinic}\"\n"
            );
        }
        let registry = fleet_core::Registry::from_toml(&toml).expect("test registry");
        let pool = fleet_store::connect(&run.database_url).await.expect("db");
        fleet_store::registry::import(&pool, &registry, false)
            .await
            .expect("registry import");
        pool.close().await;
        for topic in [&run.topics.alarms] {
            fleet_kafka::ensure_topic(&run.env.kafka_brokers, topic, 6)
                .await
                .expect("topic");
        }
        run
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn notifier(&self, generation: u32, extra: &[&str]) -> Service {
        let mut command = self
            .env
            .command("fleet-notifier", &self.database_url)
            .expect("binary");
        command
            .env("RUST_LOG", "info")
            .args(["--topic-suffix", &self.suffix])
            .args(["--group", &format!("notifier-{}", self.suffix)])
            // The first replica's metrics are the ones tests read.
            .args([
                "--metrics-addr",
                &format!(
                    "127.0.0.1:{}",
                    if generation == 0 {
                        self.metrics_port
                    } else {
                        harness::free_port().expect("port")
                    }
                ),
            ])
            .args(["--retry-initial", "100ms", "--retry-max", "1s"])
            .args(["--poll", "100ms", "--registry-refresh", "1s"])
            .args(["--session-timeout", "6s"])
            .args(extra);
        Service::spawn(
            "fleet-notifier",
            &mut command,
            &self.path(&format!("notifier-{generation}.log")),
        )
        .expect("notifier starts")
    }

    fn receiver(&self, name: &str, port: u16, extra: &[&str]) -> Service {
        let mut command = Command::new(harness::binary("fleetctl").expect("binary"));
        command
            .env("FLEET_RECEIVER_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .args(["receiver", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--out",
                &self.path(&format!("{name}.jsonl")).display().to_string(),
            ])
            .args(extra);
        Service::spawn(
            "fleetctl receiver",
            &mut command,
            &self.path(&format!("{name}.log")),
        )
        .expect("receiver starts")
    }

    fn api(&self) -> Service {
        let mut command = Command::new(harness::binary("fleet-api").expect("binary"));
        command
            .env("FLEET_DATABASE_URL", &self.database_url)
            .args(["--listen", &format!("127.0.0.1:{}", self.api_port)])
            .args(["--http-listen", "127.0.0.1:0"]);
        Service::spawn("fleet-api", &mut command, &self.path("api.log")).expect("api starts")
    }

    async fn publish(&self, events: &[AlarmEvent]) {
        let producer =
            FleetProducer::new(&self.env.kafka_brokers, self.topics.clone()).expect("producer");
        let mut pending = Vec::new();
        for e in events {
            pending.push(producer.queue_alarm(e).await.expect("queued"));
        }
        for d in pending {
            d.delivered().await.expect("alarm event delivered to Kafka");
        }
    }

    /// Pages a receiver has recorded: `(alarm_id, revision, escalation)` in file order.
    fn pages(&self, name: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.path(&format!("{name}.jsonl"))).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("receiver lines are JSON"))
            .collect()
    }

    /// The warnings and errors of a service's log, for a failing test's output.
    fn problems(&self, log: &str) -> String {
        let text = std::fs::read_to_string(self.path(log)).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || std::env::var_os("PAGING_LOG_ALL").is_some()
            })
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn log_count(&self, log: &str, needle: &str) -> usize {
        std::fs::read_to_string(self.path(log))
            .unwrap_or_default()
            .matches(needle)
            .count()
    }

    async fn wait_pages(
        &self,
        name: &str,
        count: usize,
        within: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let pages = self.pages(name);
            if pages.len() >= count || Instant::now() > deadline {
                return pages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_571_200 + seconds, 0).expect("time")
}

/// An episode's events: RAISED, UPDATED to HIGH, CLEARED.
fn episode(pump: &str, kind: AlarmKind, start: i64, priority: AlarmPriority) -> Vec<AlarmEvent> {
    let alarm_id = format!("{pump}:{}:{}", kind.name(), at(start).timestamp());
    let event = |revision: u32, state: AlarmState, priority: AlarmPriority, t: i64| AlarmEvent {
        alarm_id: alarm_id.clone(),
        revision,
        pump_id: pump.to_owned(),
        kind,
        priority,
        state,
        detected_at: at(t),
        onset_at: None,
        message: format!("Pump {pump}: test episode."),
        evidence: BTreeMap::new(),
    };
    vec![
        event(1, AlarmState::Raised, priority, start),
        event(2, AlarmState::Updated, AlarmPriority::High, start + 60),
        event(3, AlarmState::Cleared, AlarmPriority::High, start + 120),
    ]
}

fn key(page: &serde_json::Value) -> (String, u64, u64) {
    (
        page["alarm_id"].as_str().unwrap_or_default().to_owned(),
        page["revision"].as_u64().unwrap_or_default(),
        page["escalation"].as_u64().unwrap_or_default(),
    )
}

/// Per pump, the `(alarm_id, revision)` sequence of first-time pages.
fn order_per_pump(pages: &[serde_json::Value]) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for p in pages.iter().filter(|p| p["escalation"].as_u64() == Some(0)) {
        let (alarm_id, revision, _) = key(p);
        out.entry(p["pump_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push((alarm_id, revision));
    }
    out
}

fn expected_order(events: &[AlarmEvent]) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for e in events {
        out.entry(e.pump_id.clone())
            .or_default()
            .push((e.alarm_id.clone(), u64::from(e.revision)));
    }
    out
}

fn fleet(pumps: usize, clinic: &str) -> Vec<(String, String)> {
    (0..pumps)
        .map(|i| (format!("ITP40-9{i:05}"), clinic.to_owned()))
        .collect()
}

fn pairs(fleet: &[(String, String)]) -> Vec<(&str, &str)> {
    fleet
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect()
}

/// Three episodes per pump (LOW priority: no escalation in these tests).
fn events_for(fleet: &[(String, String)]) -> Vec<AlarmEvent> {
    let mut events = Vec::new();
    for (i, (pump, _)) in fleet.iter().enumerate() {
        for (k, kind) in [
            AlarmKind::LowReservoir,
            AlarmKind::BatteryEol,
            AlarmKind::Occlusion,
        ]
        .into_iter()
        .enumerate()
        {
            let start = (i * 1000 + k * 200) as i64;
            events.extend(episode(pump, kind, start, AlarmPriority::Low));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn pages_wait_for_a_receiver_that_is_down_and_arrive_in_order() {
    let port = harness::free_port().expect("port");
    let fleet = fleet(4, "clinic-a");
    let clinics = [Clinic {
        id: "clinic-a",
        port,
        fallback_port: None,
        escalation_after: "1h",
        tls: false,
    }];
    let run = Run::new("paging_down", &clinics, &pairs(&fleet)).await;
    let events = events_for(&fleet);
    let _notifier = run.notifier(0, &[]);
    run.publish(&events).await;
    // The clinic is down for a while: attempts fail and are retried.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(run.pages("clinic-a").is_empty());
    let _receiver = run.receiver("clinic-a", port, &["--clinic-id", "clinic-a"]);
    let pages = run
        .wait_pages("clinic-a", events.len(), Duration::from_secs(60))
        .await;
    println!(
        "{} events, {} pages recorded, {} failed attempts logged while down",
        events.len(),
        pages.len(),
        run.log_count("notifier-0.log", "page not delivered")
    );
    assert_eq!(
        pages.len(),
        events.len(),
        "every page arrives once the clinic is back"
    );
    assert_eq!(
        order_per_pump(&pages),
        expected_order(&events),
        "in order per pump"
    );
    let failed = run.log_count("notifier-0.log", "page not delivered");
    assert!(failed > 0, "it was down");
    // Every attempt is in the delivery log's history: each failure, then the receipt.
    let pool = sqlx::PgPool::connect(&run.database_url).await.expect("db");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (accepted, refused) = loop {
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE NOT accepted)
             FROM page_attempt",
        )
        .fetch_one(&pool)
        .await
        .expect("attempt history");
        if counts.0 as usize >= events.len() || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        accepted as usize,
        events.len(),
        "one accepted attempt per page"
    );
    assert_eq!(refused as usize, failed, "every failed attempt recorded");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_dead_clinic_does_not_delay_another_and_goes_to_its_fallback() {
    let (alive_port, dead_port, fallback_port) = (
        harness::free_port().expect("port"),
        harness::free_port().expect("port"),
        harness::free_port().expect("port"),
    );
    let mut pumps = fleet(3, "alive");
    pumps.extend(fleet(6, "dead").into_iter().skip(3));
    let clinics = [
        Clinic {
            id: "alive",
            port: alive_port,
            fallback_port: None,
            escalation_after: "1h",
            tls: false,
        },
        Clinic {
            id: "dead",
            port: dead_port,
            fallback_port: Some(fallback_port),
            escalation_after: "1h",
            tls: false,
        },
    ];
    let run = Run::new("paging_dead", &clinics, &pairs(&pumps)).await;
    let _alive = run.receiver("alive", alive_port, &["--clinic-id", "alive"]);
    let _notifier = run.notifier(0, &["--fallback-after", "3", "--deadline", "500ms"]);
    let events = events_for(&pumps);
    let for_alive: Vec<AlarmEvent> = events
        .iter()
        .filter(|e| pumps.iter().any(|(p, c)| p == &e.pump_id && c == "alive"))
        .cloned()
        .collect();
    let started = Instant::now();
    run.publish(&events).await;
    let pages = run
        .wait_pages("alive", for_alive.len(), Duration::from_secs(20))
        .await;
    let took = started.elapsed();
    println!(
        "alive clinic: {} of {} pages in {took:?}",
        pages.len(),
        for_alive.len()
    );
    assert_eq!(pages.len(), for_alive.len());
    assert!(
        took < Duration::from_secs(10),
        "the dead clinic held the live one back: {took:?}"
    );
    assert_eq!(order_per_pump(&pages), expected_order(&for_alive));

    // The dead clinic's pages raise an operator alarm and then reach its fallback.
    let _fallback = run.receiver("fallback", fallback_port, &["--clinic-id", "dead"]);
    let for_dead = events.len() - for_alive.len();
    let fallback = run
        .wait_pages("fallback", for_dead, Duration::from_secs(60))
        .await;
    let alarms = run.log_count("notifier-0.log", "OPERATOR ALARM");
    println!(
        "dead clinic: {} of {for_dead} pages at its fallback, {alarms} operator alarms",
        fallback.len()
    );
    assert_eq!(fallback.len(), for_dead);
    assert!(alarms > 0, "an operator alarm names the dead clinic");
    let opened = harness::metric(
        run.metrics_port,
        "fleet_notifier_breaker_opened_total{clinic=\"dead\"}",
    )
    .await;
    assert!(
        opened.unwrap_or(0.0) >= 1.0,
        "the dead clinic's circuit opened: {opened:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_slow_receiver_is_retried_and_deduplicated() {
    let port = harness::free_port().expect("port");
    let fleet = fleet(1, "slow");
    let clinics = [Clinic {
        id: "slow",
        port,
        fallback_port: None,
        escalation_after: "1h",
        tls: false,
    }];
    let run = Run::new("paging_slow", &clinics, &pairs(&fleet)).await;
    // Records the page, answers after 1.5 s; the notifier gives up after 500 ms.
    let _receiver = run.receiver("slow", port, &["--delay", "1500ms"]);
    let _notifier = run.notifier(0, &["--deadline", "500ms"]);
    let events: Vec<AlarmEvent> = events_for(&fleet).into_iter().take(2).collect();
    run.publish(&events).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.log_count("notifier-0.log", "page delivered") < events.len() {
        assert!(Instant::now() < deadline, "pages were never confirmed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pages = run.pages("slow");
    let duplicates = run.log_count("slow.log", "duplicate page");
    let timeouts = run.log_count("notifier-0.log", "page not delivered");
    println!(
        "{} pages recorded, {duplicates} duplicates answered, {timeouts} timed-out attempts",
        pages.len()
    );
    assert_eq!(pages.len(), events.len(), "each page recorded once");
    assert!(timeouts >= events.len(), "the first attempts timed out");
    assert!(
        duplicates >= 1,
        "retries reached the receiver as duplicates"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_killed_notifier_loses_no_page() {
    let port = harness::free_port().expect("port");
    let fleet = fleet(20, "clinic-k");
    let clinics = [Clinic {
        id: "clinic-k",
        port,
        fallback_port: None,
        escalation_after: "1h",
        tls: false,
    }];
    let run = Run::new("paging_kill", &clinics, &pairs(&fleet)).await;
    let _receiver = run.receiver("clinic-k", port, &[]);
    let events = events_for(&fleet);
    let mut notifier = run.notifier(0, &[]);
    run.publish(&events).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.pages("clinic-k").len() < events.len() / 4 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    notifier.kill9();
    let at_kill = run.pages("clinic-k").len();
    assert!(at_kill < events.len(), "the kill must land mid-stream");
    let _notifier = run.notifier(1, &[]);
    let pages = run
        .wait_pages("clinic-k", events.len(), Duration::from_secs(60))
        .await;
    let resent = run.log_count("clinic-k.log", "duplicate page");
    println!(
        "{} events; {at_kill} pages before kill -9; {} after restart; {resent} accepted pages sent again",
        events.len(),
        pages.len()
    );
    assert_eq!(
        pages.len(),
        events.len(),
        "no page lost; notifier after restart:\n{}",
        run.problems("notifier-1.log")
    );
    assert_eq!(order_per_pump(&pages), expected_order(&events));
    // A page accepted in the instant before the kill, whose receipt was not yet in the
    // log, is sent again (at-least-once); only those, at most one per pump in flight.
    assert!(
        resent <= fleet.len(),
        "{resent} re-sent pages is more than were in flight"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn an_unacknowledged_high_alarm_escalates_until_acknowledged() {
    let port = harness::free_port().expect("port");
    let fleet = [
        ("ITP40-800001".to_owned(), "clinic-e".to_owned()),
        ("ITP40-800002".to_owned(), "clinic-e".to_owned()),
        ("ITP40-800003".to_owned(), "clinic-e".to_owned()),
        ("ITP40-800004".to_owned(), "clinic-e".to_owned()),
    ];
    let clinics = [Clinic {
        id: "clinic-e",
        port,
        fallback_port: None,
        escalation_after: "2s",
        tls: false,
    }];
    let run = Run::new("paging_escalate", &clinics, &pairs(&fleet)).await;
    let _receiver = run.receiver("clinic-e", port, &[]);
    let _notifier = run.notifier(0, &[]);
    let _api = run.api();
    let high = episode("ITP40-800001", AlarmKind::Occlusion, 0, AlarmPriority::High)[0].clone();
    let medium = episode(
        "ITP40-800002",
        AlarmKind::LowReservoir,
        0,
        AlarmPriority::Medium,
    )[0]
    .clone();
    let low = episode("ITP40-800003", AlarmKind::BatteryEol, 0, AlarmPriority::Low)[0].clone();
    // A HIGH episode cleared at once: CLEARED stops its escalation.
    let cleared = episode("ITP40-800004", AlarmKind::Occlusion, 0, AlarmPriority::High);
    let mut events = vec![high.clone(), medium.clone(), low.clone()];
    events.extend(cleared.iter().cloned());
    // The clock starts before publishing: the notifier may take the events from Kafka
    // before the producer hears its delivery report, so "after publishing" would
    // start the clock late and make an on-time escalation look early.
    let published = Instant::now();
    run.publish(&events).await;

    // HIGH re-pages every 2 s; MEDIUM escalates once; LOW never.
    let escalations = |pages: &[serde_json::Value], alarm: &str| {
        pages
            .iter()
            .filter(|p| p["alarm_id"] == alarm && p["escalation"].as_u64().unwrap_or(0) > 0)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while escalations(&run.pages("clinic-e"), &high.alarm_id) < 2 {
        assert!(
            Instant::now() < deadline,
            "HIGH alarm did not escalate twice"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = published.elapsed();
    println!("two escalations of the HIGH alarm after {took:?}");
    assert!(took >= Duration::from_secs(4), "escalated early: {took:?}");
    assert!(took < Duration::from_secs(12), "escalated late: {took:?}");

    // Acknowledged through the fleet API: escalation stops.
    harness::wait_port(run.api_port, Duration::from_secs(20))
        .await
        .expect("api up");
    let mut api = fleet_proto::api::v1::fleet_api_client::FleetApiClient::connect(format!(
        "http://127.0.0.1:{}",
        run.api_port
    ))
    .await
    .expect("api connects");
    // A clinic-e user's token, as `fleetctl user add` makes it.
    let pool = fleet_store::connect(&run.database_url).await.expect("db");
    let token = fleet_store::access::add_user(
        &pool,
        "nurse-e",
        &fleet_store::access::Role::Clinic("clinic-e".into()),
    )
    .await
    .expect("user");
    let mut request = tonic::Request::new(fleet_proto::api::v1::AcknowledgeAlarmRequest {
        alarm_id: high.alarm_id.clone(),
        clinician: "Dr. Test".into(),
        note: "on my way".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    let answer = api
        .acknowledge_alarm(request)
        .await
        .expect("acknowledged")
        .into_inner();
    assert!(answer.known);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_ack = escalations(&run.pages("clinic-e"), &high.alarm_id);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pages = run.pages("clinic-e");
    assert_eq!(
        escalations(&pages, &high.alarm_id),
        after_ack,
        "escalation went on after the acknowledgement"
    );
    assert_eq!(
        escalations(&pages, &medium.alarm_id),
        1,
        "MEDIUM escalates once"
    );
    assert_eq!(escalations(&pages, &low.alarm_id), 0, "LOW never escalates");
    assert_eq!(
        escalations(&pages, &cleared[0].alarm_id),
        0,
        "CLEARED stops escalation"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn two_notifier_replicas_escalate_once_per_interval() {
    let port = harness::free_port().expect("port");
    let pumps = [("ITP40-700001".to_owned(), "clinic-r".to_owned())];
    let clinics = [Clinic {
        id: "clinic-r",
        port,
        fallback_port: None,
        escalation_after: "1s",
        tls: false,
    }];
    let run = Run::new("paging_replicas", &clinics, &pairs(&pumps)).await;
    let _receiver = run.receiver("clinic-r", port, &[]);
    let _first = run.notifier(0, &[]);
    let _second = run.notifier(1, &[]);
    let high = episode("ITP40-700001", AlarmKind::Occlusion, 0, AlarmPriority::High)[0].clone();
    run.publish(std::slice::from_ref(&high)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pages = run.pages("clinic-r");
    let levels: Vec<u64> = pages
        .iter()
        .map(|p| p["escalation"].as_u64().unwrap_or_default())
        .collect();
    let duplicates = run.log_count("clinic-r.log", "duplicate page");
    println!("escalation levels paged: {levels:?}; {duplicates} duplicates at the receiver");
    assert!(
        levels.len() >= 4,
        "the page and at least three escalations in 8 s: {levels:?}"
    );
    let expected: Vec<u64> = (0..levels.len() as u64).collect();
    assert_eq!(levels, expected, "each level once, in order");
    assert_eq!(duplicates, 0, "no escalation was paged twice");
}

/// A private CA and a `localhost` certificate it signed, as PEM files in `dir`:
/// `(ca, cert, key)`. Clinics with their own PKI look like this to the notifier.
fn private_pki(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write CA");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn an_https_clinic_is_paged_over_verified_tls() {
    let port = harness::free_port().expect("port");
    let fleet = fleet(3, "clinic-t");
    let clinics = [Clinic {
        id: "clinic-t",
        port,
        fallback_port: None,
        escalation_after: "1h",
        tls: true,
    }];
    let run = Run::new("paging_tls", &clinics, &pairs(&fleet)).await;
    let (ca, cert, key) = private_pki(run.dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let _receiver = run.receiver("clinic-t", port, &["--tls-cert", &cert, "--tls-key", &key]);
    let events = events_for(&fleet);
    run.publish(&events).await;

    // Without the clinic's CA the certificate is not trusted: nothing is delivered,
    // and the attempt says why.
    let mut untrusting = run.notifier(0, &[]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    untrusting.kill9();
    assert!(
        run.pages("clinic-t").is_empty(),
        "a page went to a receiver whose certificate is not trusted"
    );
    let pool = fleet_store::connect(&run.database_url).await.expect("db");
    let refused: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM page_attempt WHERE NOT accepted")
            .fetch_all(&pool)
            .await
            .expect("attempts");
    assert!(
        !refused.is_empty(),
        "failed attempts are in the delivery log"
    );

    // Trusting the clinic's CA: every page arrives, signed and in order.
    let ca = ca.display().to_string();
    let _trusting = run.notifier(1, &["--clinic-ca-file", &ca]);
    let pages = run
        .wait_pages("clinic-t", events.len(), Duration::from_secs(60))
        .await;
    assert_eq!(
        pages.len(),
        events.len(),
        "every page over TLS; notifier:\n{}",
        run.problems("notifier-1.log")
    );
    assert_eq!(order_per_pump(&pages), expected_order(&events));
    let delivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM page_attempt WHERE accepted AND endpoint LIKE 'https://localhost:%'",
    )
    .fetch_one(&pool)
    .await
    .expect("attempts");
    assert_eq!(delivered, events.len() as i64);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn an_escalation_timer_survives_a_notifier_crash() {
    let port = harness::free_port().expect("port");
    let pumps = [("ITP40-600001".to_owned(), "clinic-c".to_owned())];
    let clinics = [Clinic {
        id: "clinic-c",
        port,
        fallback_port: None,
        escalation_after: "10s",
        tls: false,
    }];
    let run = Run::new("paging_timer_crash", &clinics, &pairs(&pumps)).await;
    let _receiver = run.receiver("clinic-c", port, &[]);
    let mut notifier = run.notifier(0, &[]);
    let high = episode("ITP40-600001", AlarmKind::Occlusion, 0, AlarmPriority::High)[0].clone();
    run.publish(std::slice::from_ref(&high)).await;
    let first = run.wait_pages("clinic-c", 1, Duration::from_secs(30)).await;
    assert_eq!(first.len(), 1, "the page arrives before the crash");
    // The only replica dies with the timer pending, and stays down past its due time.
    notifier.kill9();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(run.pages("clinic-c").len(), 1, "nothing pages while down");
    let restarted_at = Instant::now();
    let _restarted = run.notifier(1, &[]);
    let pages = run.wait_pages("clinic-c", 2, Duration::from_secs(30)).await;
    let levels: Vec<u64> = pages
        .iter()
        .map(|p| p["escalation"].as_u64().unwrap_or_default())
        .collect();
    let took = restarted_at.elapsed();
    println!("levels {levels:?}; the escalation came {took:?} after the restart");
    assert_eq!(
        levels.get(..2),
        Some(&[0, 1][..]),
        "the overdue escalation is paged once the notifier is back: {levels:?}"
    );
    // Overdue when the replica returns: paged as soon as it is up, not after a new
    // 10 s delay (a timer kept in memory would have been lost with the process).
    assert!(
        took < Duration::from_secs(8),
        "the overdue escalation waited {took:?} after the restart"
    );
}
