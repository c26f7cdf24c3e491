//! `fleet-loadtest`: each hop on this machine next to its raw ceiling measured in the
//! same run: the telemetry path (gateways → Mosquitto → ingest → Kafka) against MQTT
//! publish→subscribe through the same broker and Kafka produce to the same broker; the
//! archive's write path against a raw `COPY` into the same database. Needs the local
//! stack (`deploy/local/stack.sh up`).
//!
//! Prints the figures, writes them as JSON (`--out`) and draws the ratios (`--plot`).
//! `--quick` is a small run (well under two minutes) for CI's smoke test: its figures
//! are not comparable with a full run's.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use fleet_core::Reading;
use fleet_kafka::{FleetProducer, Topics, ensure_topic};
use fleet_loadtest::harness::{self, Service, StackEnv};
use fleet_loadtest::kafka_count;
use fleet_loadtest::{archive_ceiling, plot};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rumqttc::{AsyncClient, Event, Packet, QoS};

#[derive(Debug, Parser)]
#[command(
    name = "fleet-loadtest",
    about = "Each hop's throughput against its raw ceiling, measured in the same run"
)]
struct Cli {
    /// Virtual gateways (one pump each), all in one gateway process.
    #[arg(long, default_value_t = 200)]
    gateways: usize,
    /// Readings per gateway.
    #[arg(long, default_value_t = 150)]
    readings_per_gateway: usize,
    /// Ingest replicas sharing the subscription.
    #[arg(long, default_value_t = 1)]
    ingest_replicas: usize,
    /// Messages for each raw ceiling.
    #[arg(long, default_value_t = 20_000)]
    raw_messages: usize,
    /// Where to write the JSON result.
    #[arg(long, default_value = "loadtest/results/telemetry.json")]
    out: PathBuf,
    /// Where to draw each hop's ratio to its ceiling (SVG).
    #[arg(long, default_value = "loadtest/results/telemetry.svg")]
    plot: PathBuf,
    /// A small run for a smoke test: 40 gateways × 30 readings, 3,000 raw messages
    /// (overrides those three settings).
    #[arg(long)]
    quick: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        (cli.gateways, cli.readings_per_gateway, cli.raw_messages) = (40, 30, 3000);
    }
    let env = StackEnv::from_env()?;
    let run = format!("bench-{}", Utc::now().timestamp());
    let dir = harness::kept_dir("fleet-loadtest-")?;

    let readings = harness::healthy_fleet(cli.gateways, cli.readings_per_gateway);
    let sample_bytes = fleet_core::protobuf::encode_reading(&readings[0]).len();
    eprintln!(
        "{} readings from {} gateways ({} bytes each as protobuf)",
        readings.len(),
        cli.gateways,
        sample_bytes
    );

    let mqtt_ceiling = raw_mqtt(&env.mqtt_url, &run, cli.raw_messages, sample_bytes).await?;
    eprintln!("raw mqtt publish→subscribe: {mqtt_ceiling:.0} msg/s");
    let (kafka_ceiling, consume_ceiling) =
        raw_kafka(&env.kafka_brokers, &run, &readings, cli.raw_messages).await?;
    eprintln!("raw kafka produce: {kafka_ceiling:.0} msg/s; consume: {consume_ceiling:.0} msg/s");
    let (pipeline, duplicates) = pipeline(&env, &run, &dir, &readings, cli.ingest_replicas).await?;
    eprintln!("pipeline: {pipeline:.0} readings/s");

    let database_url = fleet_store::testing::fresh_database(&env.database_url, "loadtest").await?;
    let pool = fleet_store::connect(&database_url).await?;
    let archive = archive_ceiling::measure(&pool, &readings).await?;
    eprintln!(
        "archive write path: {:.0} rows/s; raw COPY: {:.0} rows/s",
        archive.write_path_rows_per_s, archive.raw_copy_rows_per_s
    );
    // The real archiver drains what the telemetry path put in Kafka.
    let unique = harness::unique_keys(&readings).len();
    let drained =
        archive_ceiling::archiver_drain(&env, &database_url, &format!("{run}-path"), unique, &dir)
            .await?;
    eprintln!("archiver from Kafka: {drained:.0} rows/s");

    let slower = mqtt_ceiling.min(kafka_ceiling);
    let hops = [
        ("telemetry path / MQTT pub→sub", pipeline, mqtt_ceiling),
        ("telemetry path / Kafka produce", pipeline, kafka_ceiling),
        (
            "archive write path / COPY",
            archive.write_path_rows_per_s,
            archive.raw_copy_rows_per_s,
        ),
        (
            "archiver from Kafka / Kafka consume",
            drained,
            consume_ceiling,
        ),
        (
            "archiver from Kafka / COPY",
            drained,
            archive.raw_copy_rows_per_s,
        ),
    ];
    if let Some(parent) = cli.plot.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.plot, plot::ratios(&hops).map_err(anyhow::Error::msg)?)?;
    let result = serde_json::json!({
        "measured_at": Utc::now().to_rfc3339(),
        "gateways": cli.gateways,
        "readings": readings.len(),
        "reading_bytes": sample_bytes,
        "ingest_replicas": cli.ingest_replicas,
        "pipeline_readings_per_s": pipeline.round(),
        "duplicates_in_kafka": duplicates,
        "raw_mqtt_msgs_per_s": mqtt_ceiling.round(),
        "raw_kafka_produce_msgs_per_s": kafka_ceiling.round(),
        "ratio_to_slower_raw": (pipeline / slower * 100.0).round() / 100.0,
        "raw_copy_rows_per_s": archive.raw_copy_rows_per_s.round(),
        "archive_write_path_rows_per_s": archive.write_path_rows_per_s.round(),
        "archive_ratio_to_copy": (archive.ratio() * 100.0).round() / 100.0,
        "raw_kafka_consume_msgs_per_s": consume_ceiling.round(),
        "archiver_from_kafka_rows_per_s": drained.round(),
        "archiver_ratio_to_consume": (drained / consume_ceiling * 100.0).round() / 100.0,
        "quick": cli.quick,
        "command": if cli.quick { "fleet-loadtest --quick" } else { "cargo run --release -p fleet-loadtest" },
    });
    if let Some(parent) = cli.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&result)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// `gateways` simulated pumps, `per_gateway` readings each, all healthy and recent.
/// One publisher, one subscriber, QoS 1, through the same broker: messages/s received.
async fn raw_mqtt(url: &str, run: &str, messages: usize, bytes: usize) -> anyhow::Result<f64> {
    let topic = format!("bench/{run}/raw");
    let sub_opts = fleet_runtime::mqtt_options(url, &format!("{run}-sub"))?;
    let (sub, mut sub_loop) = AsyncClient::new(sub_opts, 1000);
    sub.subscribe(&topic, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await? {
            break;
        }
    }
    let mut pub_opts = fleet_runtime::mqtt_options(url, &format!("{run}-pub"))?;
    pub_opts.set_inflight(1000);
    let (publisher, mut pub_loop) = AsyncClient::new(pub_opts, 1000);
    let payload = vec![7u8; bytes];
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for _ in 0..messages {
            publisher
                .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                .await?;
        }
        anyhow::Ok(publisher)
    });
    let pumping = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let mut received = 0;
    while received < messages {
        let event = tokio::time::timeout(Duration::from_secs(60), sub_loop.poll())
            .await
            .context("raw mqtt: subscriber starved")??;
        if let Event::Incoming(Packet::Publish(_)) = event {
            received += 1;
        }
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    let publisher = sender.await??;
    let _ = publisher.disconnect().await;
    pumping.abort();
    Ok(rate)
}

/// Idempotent produce of readings with many in flight (messages/s acknowledged), then
/// one consumer reading them all back from the beginning (messages/s received).
async fn raw_kafka(
    brokers: &str,
    run: &str,
    readings: &[Reading],
    messages: usize,
) -> anyhow::Result<(f64, f64)> {
    let topics = Topics::with_suffix(&format!("{run}-raw"));
    ensure_topic(brokers, &topics.readings, 6).await?;
    let producer = FleetProducer::new(brokers, topics.clone())?;
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for reading in readings.iter().cycle().take(messages) {
        in_flight.push(producer.send_reading(reading));
        if in_flight.len() >= 2000 {
            in_flight.next().await.context("stream")??;
        }
    }
    while let Some(done) = in_flight.next().await {
        done?;
    }
    let produce = messages as f64 / started.elapsed().as_secs_f64();
    // Timed from the first record read, so connecting and fetching metadata do not
    // count against the broker; from the start if the first look already found most.
    let subscribed = Instant::now();
    let mut arrivals = kafka_count::watch_readings(brokers, &topics.readings).await?;
    let first = kafka_count::wait_for(&mut arrivals, Duration::from_secs(60), |a| a.records > 0)
        .await
        .records;
    let started = Instant::now();
    let seen = kafka_count::wait_for(&mut arrivals, Duration::from_secs(120), |a| {
        a.records >= messages as u64
    })
    .await;
    anyhow::ensure!(
        seen.records >= messages as u64,
        "raw kafka consume: {} of {messages} messages read back",
        seen.records
    );
    let consumed = seen.records - first;
    let consume = if consumed >= messages as u64 / 2 {
        consumed as f64 / started.elapsed().as_secs_f64().max(1e-6)
    } else {
        seen.records as f64 / subscribed.elapsed().as_secs_f64().max(1e-6)
    };
    Ok((produce, consume))
}

/// The real path: the gateway process replays every reading through its outboxes, the
/// ingest writes to Kafka; timed from the gateways' start to the last unique reading in
/// Kafka. Returns readings/s and the duplicate count.
async fn pipeline(
    env: &StackEnv,
    run: &str,
    dir: &std::path::Path,
    readings: &[Reading],
    replicas: usize,
) -> anyhow::Result<(f64, u64)> {
    let registry = dir.join("registry.toml");
    harness::write_registry(readings, &registry)?;
    let expected = harness::unique_keys(readings);
    let suffix = format!("{run}-path");
    let topics = Topics::with_suffix(&suffix);
    ensure_topic(&env.kafka_brokers, &topics.readings, 6).await?;

    let ingest_bin = harness::binary("fleet-ingest")?;
    let mut ingests = Vec::new();
    for i in 0..replicas.max(1) {
        let port = harness::free_port()?;
        ingests.push(Service::spawn(
            "fleet-ingest",
            Command::new(&ingest_bin)
                .env("FLEET_MQTT_URL", &env.mqtt_url)
                .env("FLEET_KAFKA_BROKERS", &env.kafka_brokers)
                .args(["--registry-file", &registry.display().to_string()])
                .args(["--client-id", &format!("{run}-ingest-{i}")])
                .args(["--topic-suffix", &suffix])
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")]),
            &dir.join(format!("ingest-{i}.log")),
        )?);
        harness::wait_ready(port, Duration::from_secs(60)).await?;
    }
    let replay = harness::write_replay(dir, readings)?;
    let started = Instant::now();
    let mut gateways =
        harness::replay_through_gateways(env, dir, &replay, harness::Pace::FullSpeed)?;
    // The gateways exit once every reading is acknowledged end to end, which ingest
    // does only after Kafka's delivery report: that moment is "all in Kafka". The
    // topic is read only afterwards, because a consumer fetching at the same time
    // slows the local broker's writes several-fold and would distort the figure.
    gateways.wait_exit(Duration::from_secs(600))?;
    let elapsed = started.elapsed();
    let mut arrivals = kafka_count::watch_readings(&env.kafka_brokers, &topics.readings).await?;
    let seen = kafka_count::wait_for(&mut arrivals, Duration::from_secs(120), |a| {
        a.unique.len() >= expected.len()
    })
    .await;
    anyhow::ensure!(
        seen.unique.len() >= expected.len(),
        "only {} of {} readings in Kafka after the gateways drained (logs in {})",
        seen.unique.len(),
        expected.len(),
        dir.display()
    );
    for mut ingest in ingests {
        ingest.terminate(Duration::from_secs(15))?;
    }
    Ok((
        expected.len() as f64 / elapsed.as_secs_f64(),
        seen.records - seen.unique.len() as u64,
    ))
}
