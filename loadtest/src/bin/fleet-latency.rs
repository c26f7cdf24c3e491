//! `fleet-latency`: alarm latency end to end, from a reading leaving a gateway to the
//! clinic's receiver accepting the page, while the telemetry path carries a fleet's
//! load. Runs the real services (ingest pairing from the database, detector, notifier,
//! `fleetctl receiver`) against the local stack (`deploy/local/stack.sh up`).
//!
//! Probe pumps publish one reading each, stamped with the moment it leaves, at the
//! low-reservoir threshold: the detector raises LOW_RESERVOIR on it, and the page's
//! arrival at the receiver minus that moment is one latency sample. Background
//! gateways replay a healthy fleet at full speed meanwhile. Prints the figures and
//! writes them as JSON (`--out`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use fleet_core::gateway_protocol::{ReadingEncoding, readings_topic};
use fleet_core::{Reading, Registry};
use fleet_kafka::{Topics, ensure_topic};
use fleet_loadtest::harness::{self, Service, StackEnv};
use rumqttc::{AsyncClient, QoS};

const SECRET: &str = "latency-benchmark-secret-0123";

#[derive(Debug, Parser)]
#[command(
    name = "fleet-latency",
    about = "Alarm latency, gateway to clinic, under load"
)]
struct Cli {
    /// Background gateways (one healthy pump each), all in one gateway process.
    #[arg(long, default_value_t = 200)]
    gateways: usize,
    /// Background readings per gateway.
    #[arg(long, default_value_t = 300)]
    readings_per_gateway: usize,
    /// Probe readings (one pump each), spread over the background replay.
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// Time between two probes.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    probe_every: Duration,
    #[arg(long, default_value = "loadtest/results/alarm-latency.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = StackEnv::from_env()?;
    let run = format!("latency-{}", Utc::now().timestamp());
    let dir = harness::kept_dir("fleet-latency-")?;

    let background = harness::healthy_fleet(cli.gateways, cli.readings_per_gateway);
    let probes: Vec<String> = (0..cli.probes).map(|i| format!("PROBE-{i:05}")).collect();
    let receiver_port = harness::free_port()?;
    let database_url = fleet_store::testing::fresh_database(&env.database_url, "latency").await?;
    register(&database_url, &background, &probes, receiver_port).await?;
    let topics = Topics::with_suffix(&run);
    for topic in [&topics.readings, &topics.alarms, &topics.dead_letter] {
        ensure_topic(&env.kafka_brokers, topic, 6).await?;
    }

    let spawn = |name: &str, args: &[String]| -> anyhow::Result<(Service, u16)> {
        let port = harness::free_port()?;
        let service = Service::spawn(
            name,
            Command::new(harness::binary(name)?)
                .env("FLEET_MQTT_URL", &env.mqtt_url)
                .env("FLEET_KAFKA_BROKERS", &env.kafka_brokers)
                .env("FLEET_DATABASE_URL", &database_url)
                .env("FLEET_SIGNING_SECRET", SECRET)
                .env("FLEET_TOPIC_SUFFIX", &run)
                // Under this load the local broker answers heartbeats slowly; a short
                // session would make the groups rebalance mid-measurement.
                .env("FLEET_DETECTOR_SESSION_TIMEOUT", "15s")
                .env("FLEET_NOTIFIER_SESSION_TIMEOUT", "15s")
                .args(args)
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")]),
            &dir.join(format!("{name}.log")),
        )?;
        Ok((service, port))
    };
    let mut receiver = Service::spawn(
        "fleetctl receiver",
        Command::new(harness::binary("fleetctl")?)
            .env("FLEET_RECEIVER_SECRET", SECRET)
            .args([
                "receiver",
                "--listen",
                &format!("127.0.0.1:{receiver_port}"),
            ])
            .args(["--out", &dir.join("pages.jsonl").display().to_string()]),
        &dir.join("receiver.log"),
    )?;
    let (mut detector, detector_port) = spawn(
        "fleet-detector",
        &[
            "--group".into(),
            format!("{run}-detector"),
            "--checkpoint-interval".into(),
            "200ms".into(),
        ],
    )?;
    let (mut notifier, notifier_port) = spawn(
        "fleet-notifier",
        &["--group".into(), format!("{run}-notifier")],
    )?;
    let (mut ingest, ingest_port) = spawn(
        "fleet-ingest",
        &["--client-id".into(), format!("{run}-ingest")],
    )?;
    for port in [detector_port, notifier_port, ingest_port] {
        harness::wait_ready(port, Duration::from_secs(60)).await?;
    }
    harness::wait_port(receiver_port, Duration::from_secs(30)).await?;
    // The detector's group must own its partitions before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let replay = harness::write_replay(&dir, &background)?;
    let started = Instant::now();
    let mut gateways = harness::replay_through_gateways(&env, &dir, &replay)?;
    // Let the background reach full speed before the first probe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = send_probes(&env.mqtt_url, &run, &probes, cli.probe_every).await?;
    gateways.wait_exit(Duration::from_secs(600))?;
    let background_rate = background.len() as f64 / started.elapsed().as_secs_f64();

    let pages = wait_for_pages(&dir.join("pages.jsonl"), &probes, Duration::from_secs(120)).await;
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(pump, at)| pages.get(pump).map(|got| (*got - *at).num_microseconds()))
        .flatten()
        .map(|us| us as f64 / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    for service in [&mut ingest, &mut detector, &mut notifier, &mut receiver] {
        let _ = service.terminate(Duration::from_secs(10));
    }
    anyhow::ensure!(
        latencies.len() == probes.len(),
        "only {} of {} probe pages arrived (logs in {})",
        latencies.len(),
        probes.len(),
        dir.display()
    );
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let result = serde_json::json!({
        "measured_at": Utc::now().to_rfc3339(),
        "background_gateways": cli.gateways,
        "background_readings": background.len(),
        "background_readings_per_s": background_rate.round(),
        "probes": latencies.len(),
        "latency_ms": { "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0) },
        "command": "loadtest/bench-latency.sh",
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(parent) = cli.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&result)? + "\n")?;
    Ok(())
}

/// Every pump, background and probe, followed by one clinic: the receiver.
async fn register(
    database_url: &str,
    background: &[Reading],
    probes: &[String],
    receiver_port: u16,
) -> anyhow::Result<()> {
    let mut toml = format!(
        "[[clinic]]\nid = \"bench\"\nname = \"Benchmark clinic\"\nwebhook = \"http://127.0.0.1:{receiver_port}\"\nescalation_after = \"1h\"\n"
    );
    let mut pumps: BTreeMap<&str, &str> = BTreeMap::new();
    for r in background {
        pumps.insert(&r.pump_id, &r.gateway_id);
    }
    let probe_gateways: Vec<String> = probes.iter().map(|p| format!("gw-{p}")).collect();
    for (p, g) in probes.iter().zip(&probe_gateways) {
        pumps.insert(p, g);
    }
    for (pump, gateway) in pumps {
        toml += &format!(
            "[[pump]]\npump_id = \"{pump}\"\ngateway_id = \"{gateway}\"\nclinic_id = \"bench\"\n"
        );
    }
    let registry = Registry::from_toml(&toml).context("benchmark registry")?;
    let pool = fleet_store::connect(database_url).await?;
    fleet_store::registry::import(&pool, &registry, false).await?;
    pool.close().await;
    Ok(())
}

/// Publishes one reading per probe pump, at the low-reservoir threshold, stamped with
/// the moment it is handed to MQTT; returns those moments.
async fn send_probes(
    mqtt_url: &str,
    run: &str,
    probes: &[String],
    every: Duration,
) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    let options = fleet_runtime::mqtt_options(mqtt_url, &format!("{run}-probes"))?;
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let mut sent = Vec::with_capacity(probes.len());
    let mut tick = tokio::time::interval(every);
    for pump_id in probes {
        tick.tick().await;
        let at = Utc::now();
        let mut reading = Reading::example(pump_id, 1, at);
        reading.gateway_id = format!("gw-{pump_id}");
        reading.reservoir_ml = reading.low_reservoir_threshold_ml;
        let payload = fleet_core::protobuf::encode_reading(&reading);
        client
            .publish(
                readings_topic(&reading.gateway_id, ReadingEncoding::Protobuf),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        sent.push((pump_id.clone(), at));
    }
    // Let the last publishes leave before the connection goes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = client.disconnect().await;
    pump.abort();
    Ok(sent)
}

/// Waits until the receiver has a page for every probe; returns when each arrived.
async fn wait_for_pages(
    path: &Path,
    probes: &[String],
    timeout: Duration,
) -> BTreeMap<String, DateTime<Utc>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut pages = BTreeMap::new();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let Ok(page) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let pump = page["pump_id"].as_str().unwrap_or_default();
            if page["kind"] == "LOW_RESERVOIR"
                && page["state"] == "RAISED"
                && let Some(at) = page["received_at"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            {
                pages.entry(pump.to_owned()).or_insert(at.to_utc());
            }
        }
        if probes.iter().all(|p| pages.contains_key(p)) || Instant::now() > deadline {
            return pages;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
