//! The archiver against the real stack, killed with `kill -9` in the middle of a load
//! that carries re-sent readings: after a restart the archive holds every reading
//! exactly once (row count = unique `(pump_id, seq)`), its daily rollup counts each
//! once, and every alarm event is there once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use fleet_core::{AlarmKind, AlarmPriority, AlarmState};
use fleet_kafka::{FleetProducer, Topics};
use fleet_loadtest::harness::{self, Service, StackEnv};
use sqlx::PgPool;

struct Run {
    env: StackEnv,
    database_url: String,
    suffix: String,
    topics: Topics,
    dir: tempfile::TempDir,
}

impl Run {
    async fn new(name: &str) -> Run {
        let env = StackEnv::from_env().expect("stack endpoints");
        let database_url = fleet_store::testing::fresh_database(&env.database_url, name)
            .await
            .expect("a database of our own");
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let suffix = format!("{name}-{nanos}");
        Run {
            topics: Topics::with_suffix(&suffix),
            suffix,
            env,
            database_url,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn archiver(&self, generation: u32) -> Service {
        self.archiver_on(generation, harness::free_port().expect("port"))
    }

    /// An archiver whose metrics are on `port`.
    fn archiver_on(&self, generation: u32, port: u16) -> Service {
        let mut command = self
            .env
            .command("fleet-archiver", &self.database_url)
            .expect("binary");
        command
            .env("RUST_LOG", "info")
            .args(["--topic-suffix", &self.suffix])
            .args(["--group", &format!("archiver-{}", self.suffix)])
            .args(["--session-timeout", "6s"])
            // Small batches: the kill lands between many commits.
            .args(["--batch", "500", "--linger", "50ms"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        Service::spawn(
            "fleet-archiver",
            &mut command,
            &self.dir.path().join(format!("archiver-{generation}.log")),
        )
        .expect("archiver starts")
    }

    fn log(&self, generation: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("archiver-{generation}.log")))
            .unwrap_or_default()
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count query")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_killed_archiver_stores_every_reading_exactly_once() {
    let run = Run::new("archiver_kill").await;
    let readings = harness::healthy_fleet(40, 500);
    let unique = harness::unique_keys(&readings);
    // Alarm events for a few pumps, the last ones sent twice.
    let pumps: BTreeSet<&str> = readings.iter().map(|r| r.pump_id.as_str()).collect();
    let alarms: Vec<_> = pumps
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, pump)| fleet_core::AlarmEvent {
            alarm_id: format!("{pump}:LOW_RESERVOIR:{i}"),
            revision: 1,
            pump_id: (*pump).to_owned(),
            kind: AlarmKind::LowReservoir,
            priority: AlarmPriority::Medium,
            state: AlarmState::Raised,
            detected_at: Utc::now(),
            onset_at: None,
            message: "test".into(),
            evidence: Default::default(),
        })
        .collect();
    let producer =
        FleetProducer::new(&run.env.kafka_brokers, run.topics.clone()).expect("producer");
    fleet_kafka::ensure_topic(&run.env.kafka_brokers, &run.topics.readings, 6)
        .await
        .expect("topic");
    fleet_kafka::ensure_topic(&run.env.kafka_brokers, &run.topics.alarms, 6)
        .await
        .expect("topic");
    let mut pending = Vec::new();
    // Every reading, then a tenth of them again (a gateway re-sending after a lost ack).
    for r in readings.iter().chain(readings.iter().step_by(10)) {
        pending.push(producer.queue_reading(r).await.expect("queued"));
    }
    for a in alarms.iter().chain(alarms.iter().skip(5)) {
        pending.push(producer.queue_alarm(a).await.expect("queued"));
    }
    for d in pending {
        d.delivered().await.expect("delivered to Kafka");
    }
    let sent = readings.len() + readings.len().div_ceil(10);

    let pool = fleet_store::connect(&run.database_url).await.expect("db");
    let mut first = run.archiver(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let archived = count(&pool, "SELECT count(*) FROM reading").await;
        if archived as usize > unique.len() / 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress before the kill:\n{}",
            run.log(0)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    let at_kill = count(&pool, "SELECT count(*) FROM reading").await;
    assert!(
        (at_kill as usize) < unique.len(),
        "the kill must land mid-load ({at_kill} of {} archived)",
        unique.len()
    );

    let _second = run.archiver(1);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut archived = 0;
    while Instant::now() < deadline {
        archived = count(&pool, "SELECT count(*) FROM reading").await;
        if archived as usize >= unique.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let any re-read batch land too: the count must not move past the unique keys.
    tokio::time::sleep(Duration::from_secs(3)).await;
    archived = archived.max(count(&pool, "SELECT count(*) FROM reading").await);
    println!(
        "{sent} readings sent ({} unique); {at_kill} archived before kill -9; {archived} after restart",
        unique.len()
    );
    assert_eq!(
        archived as usize,
        unique.len(),
        "every unique reading once; archiver after restart:\n{}",
        run.log(1)
    );
    let distinct = count(&pool, "SELECT count(DISTINCT (pump_id, seq)) FROM reading").await;
    assert_eq!(distinct as usize, unique.len());
    let rolled = count(&pool, "SELECT sum(readings)::bigint FROM pump_day").await;
    assert_eq!(
        rolled as usize,
        unique.len(),
        "the rollup counts each reading once"
    );
    // The rollup agrees with the readings it summarises, day by day.
    let disagreeing = count(
        &pool,
        "SELECT count(*) FROM pump_day d JOIN LATERAL (
             SELECT count(*) AS n, min(battery_v) AS v, min(reservoir_ml) AS res,
                    (array_agg(battery_pct ORDER BY measured_at))[1] AS first_pct,
                    (array_agg(battery_pct ORDER BY measured_at DESC))[1] AS last_pct
             FROM reading r WHERE r.pump_id = d.pump_id
               AND (r.measured_at AT TIME ZONE 'UTC')::date = d.day) r ON true
         WHERE r.n <> d.readings OR r.v <> d.battery_v_min OR r.res <> d.reservoir_ml_min
            OR r.first_pct <> d.battery_pct_first OR r.last_pct <> d.battery_pct_last",
    )
    .await;
    assert_eq!(
        disagreeing, 0,
        "pump_day rows that disagree with their readings"
    );
    let wrong_marks = count(
        &pool,
        "SELECT count(*) FROM archive_watermark w
         WHERE w.max_seq <> (SELECT max(seq) FROM reading r WHERE r.pump_id = w.pump_id)",
    )
    .await;
    assert_eq!(
        wrong_marks, 0,
        "high-water marks that disagree with the archive"
    );
    let alarm_rows = count(&pool, "SELECT count(*) FROM alarm_event").await;
    assert_eq!(alarm_rows as usize, alarms.len(), "every alarm event once");
    pool.close().await;
}

/// SIGTERM under load, in order: intake stops, the batch in flight is written, its
/// offsets are committed, and only then does the replica exit. The replica after it
/// re-writes nothing (no duplicate is even attempted), and the lag it reports rises
/// with the backlog and falls to zero once it is archived.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_stopped_archiver_commits_what_it_wrote_before_it_exits() {
    let run = Run::new("archiver_stop").await;
    // Large enough that draining it spans several of the consumer's once-a-second lag
    // reports, however fast the machine.
    let readings = harness::healthy_fleet(40, 2000);
    let producer =
        FleetProducer::new(&run.env.kafka_brokers, run.topics.clone()).expect("producer");
    for topic in [&run.topics.readings, &run.topics.alarms] {
        fleet_kafka::ensure_topic(&run.env.kafka_brokers, topic, 6)
            .await
            .expect("topic");
    }
    let mut pending = Vec::new();
    for r in &readings {
        pending.push(producer.queue_reading(r).await.expect("queued"));
    }
    for d in pending {
        d.delivered().await.expect("delivered to Kafka");
    }

    let pool = fleet_store::connect(&run.database_url).await.expect("db");
    let first_port = harness::free_port().expect("port");
    let mut first = run.archiver_on(0, first_port);
    let mut lag_seen = 0.0_f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        lag_seen = lag_seen.max(
            harness::metric(first_port, "fleet_archiver_consumer_lag_records")
                .await
                .unwrap_or(0.0),
        );
        let archived = count(&pool, "SELECT count(*) FROM reading").await as usize;
        if archived > readings.len() / 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress before the stop:\n{}",
            run.log(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}: SIGTERM must end it within its grace:\n{}", run.log(0)));
    let at_stop = count(&pool, "SELECT count(*) FROM reading").await as usize;
    assert!(
        at_stop < readings.len(),
        "the stop must land mid-load ({at_stop} of {} archived)",
        readings.len()
    );
    assert!(
        run.log(0).contains("archiver stopped"),
        "an orderly stop, logged:\n{}",
        run.log(0)
    );

    let second_port = harness::free_port().expect("port");
    let _second = run.archiver_on(1, second_port);
    let deadline = Instant::now() + Duration::from_secs(180);
    while (count(&pool, "SELECT count(*) FROM reading").await as usize) < readings.len() {
        lag_seen = lag_seen.max(
            harness::metric(second_port, "fleet_archiver_consumer_lag_records")
                .await
                .unwrap_or(0.0),
        );
        assert!(
            Instant::now() < deadline,
            "not all archived:\n{}",
            run.log(1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(lag_seen > 0.0, "the backlog showed as consumer lag");
    // Lag is reported every second: wait for the report that shows the backlog gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while harness::metric(second_port, "fleet_archiver_consumer_lag_records").await != Some(0.0) {
        assert!(Instant::now() < deadline, "the lag never went back to 0");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rewritten = harness::metric_sum(second_port, "fleet_archiver_duplicates_total")
        .await
        .expect("the second archiver answers");
    println!(
        "{} readings; {at_stop} archived before SIGTERM; lag seen {lag_seen}; {rewritten} re-written after",
        readings.len()
    );
    assert_eq!(
        rewritten,
        0.0,
        "the stopped archiver committed every batch it wrote, so nothing is read twice:\n{}",
        run.log(0)
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM reading").await as usize,
        readings.len()
    );
    pool.close().await;
}
