//! `fleet-latency`: alarm latency end to end, from a reading leaving a gateway to the
//! clinic's receiver accepting the page, while the telemetry path carries a fleet's
//! load. Runs the real services (ingest pairing from the database, detector, notifier,
//! `fleetctl receiver`) against the local stack (`deploy/local/stack.sh up`).
//!
//! Probe pumps publish one reading each, noting the moment it leaves, at the
//! low-reservoir threshold: the detector raises LOW_RESERVOIR on it, and the page's
//! arrival at the receiver minus that moment is one latency sample. Background
//! gateways replay a healthy fleet meanwhile, at full speed or at an offered rate
//! (`--background-rate`). Prints the figures and
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
use fleet_loadtest::kafka_count::read_records;
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
    /// Offered background load in readings/s across the fleet; 0 replays at full
    /// speed, which builds a backlog whenever the path is slower than the gateways.
    /// The default offers a margin over the 5,000 readings/s target: what the path
    /// carried while the probes ran is measured and reported.
    #[arg(long, default_value_t = 6000.0)]
    background_rate: f64,
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
            env.command(name, &database_url)?
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
    let pace = if cli.background_rate > 0.0 {
        harness::Pace::ReadingsPerSecond {
            total: cli.background_rate,
            gateways: cli.gateways,
        }
    } else {
        harness::Pace::FullSpeed
    };
    let mut gateways = harness::replay_through_gateways(&env, &dir, &replay, pace)?;
    let cpu = CpuShare::start(vec![
        ("broker (tansu)", harness::pids_named("tansu")),
        ("postgres", harness::pids_named("postgres")),
        ("mqtt (mosquitto)", harness::pids_named("mosquitto")),
        ("fleet-ingest", vec![ingest.pid()]),
        ("fleet-detector", vec![detector.pid()]),
        ("fleet-notifier", vec![notifier.pid()]),
        ("gateways (load)", vec![gateways.pid()]),
    ]);
    // Let the background reach full speed before the first probe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Probes carry the background's earliest event time: a reading stamped "now" would
    // move its partition's event clock past the background's (simulated, past) history,
    // and the detector would rightly report those pumps silent: a storm of alarms that
    // a live fleet, whose readings all carry real time, never produces.
    let probe_time = background
        .iter()
        .map(|r| r.measured_at)
        .min()
        .unwrap_or_else(Utc::now);
    let sent = send_probes(&env.mqtt(), &run, &probes, cli.probe_every, probe_time).await?;
    let cores = cpu.cores_used();
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
    let (hops, readings_per_s_while_probing) =
        hop_breakdown(&env.kafka_brokers, &topics, &database_url, &sent, &pages).await?;
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
    let result = serde_json::json!({
        "measured_at": Utc::now().to_rfc3339(),
        "background_gateways": cli.gateways,
        "background_readings": background.len(),
        "background_offered_per_s": if cli.background_rate > 0.0 { serde_json::json!(cli.background_rate) } else { serde_json::json!("full speed") },
        "background_readings_per_s": background_rate.round(),
        "readings_per_s_while_probing": readings_per_s_while_probing,
        "probes": latencies.len(),
        "latency_ms": percentiles(&latencies),
        "hops_ms": hops,
        "cpu_cores_used_while_probing": cores,
        "command": "loadtest/bench-latency.sh",
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(parent) = cli.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&result)? + "\n")?;
    Ok(())
}

/// Where the machine's CPU goes while the background runs: each component's CPU time
/// over a span of wall time, in cores.
struct CpuShare {
    started: Instant,
    components: Vec<(&'static str, Vec<u32>, f64)>,
}

impl CpuShare {
    fn start(components: Vec<(&'static str, Vec<u32>)>) -> CpuShare {
        let components = components
            .into_iter()
            .map(|(name, pids)| {
                let used = Self::used(&pids);
                (name, pids, used)
            })
            .collect();
        CpuShare {
            started: Instant::now(),
            components,
        }
    }

    fn used(pids: &[u32]) -> f64 {
        pids.iter()
            .filter_map(|&pid| harness::cpu_seconds(pid))
            .sum()
    }

    fn cores_used(&self) -> serde_json::Value {
        let wall = self.started.elapsed().as_secs_f64();
        let mut out = serde_json::Map::new();
        for (name, pids, before) in &self.components {
            let cores = (Self::used(pids) - before) / wall;
            out.insert(
                (*name).to_owned(),
                serde_json::json!((cores * 100.0).round() / 100.0),
            );
        }
        out.into()
    }
}

/// p50, p90, p99 and max of sorted milliseconds.
fn percentiles(sorted: &[f64]) -> serde_json::Value {
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    serde_json::json!({ "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0) })
}

/// Where each probe's time went, hop by hop, from the moments each hop left a mark:
/// the readings record (ingest's produce time), the alarm record (the detector's),
/// the page row (`created_at`, the notifier's intake) and the receiver's arrival.
/// Also returns the readings/s the telemetry path carried while the probes were sent.
async fn hop_breakdown(
    brokers: &str,
    topics: &Topics,
    database_url: &str,
    sent: &[(String, DateTime<Utc>)],
    pages: &BTreeMap<String, DateTime<Utc>>,
) -> anyhow::Result<(serde_json::Value, f64)> {
    // (pump, produce time) of every record up to each partition's current end: all
    // were written before this runs.
    let read_everything = async |topic: &str| -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        use rdkafka::Message;
        let ends = fleet_loadtest::kafka_count::high_watermarks(brokers, topic)?;
        let records = ends.values().map(|&end| end.max(0) as usize).sum();
        let (quiet, timeout) = (Duration::from_secs(10), Duration::from_secs(300));
        let records = read_records(brokers, topic, records, quiet, timeout).await?;
        Ok(records
            .iter()
            .filter_map(|r| {
                let pump = std::str::from_utf8(r.key()?).ok()?.to_owned();
                Some((
                    pump,
                    DateTime::from_timestamp_millis(r.timestamp().to_millis()?)?,
                ))
            })
            .collect())
    };
    let first_per_pump = |records: &[(String, DateTime<Utc>)]| {
        let mut at = BTreeMap::new();
        for (pump, t) in records {
            at.entry(pump.clone()).or_insert(*t);
        }
        at
    };
    let readings = read_everything(&topics.readings).await?;
    let produced = first_per_pump(&readings);
    let alarmed = first_per_pump(&read_everything(&topics.alarms).await?);
    // What the telemetry path carried while the probes were measured.
    let (first, last) = (
        sent.iter().map(|s| s.1).min().unwrap_or_default(),
        sent.iter().map(|s| s.1).max().unwrap_or_default(),
    );
    let window = (last - first).as_seconds_f64().max(0.001);
    let in_window = readings
        .iter()
        .filter(|(_, t)| (first..=last).contains(t))
        .count();
    let rate_while_probing = (in_window as f64 / window).round();
    let pool = fleet_store::connect(database_url).await?;
    let enqueued: BTreeMap<String, DateTime<Utc>> = sqlx::query_as(
        "SELECT pump_id, created_at FROM page
         WHERE alarm_id LIKE 'PROBE-%:LOW_RESERVOIR:%' AND state = 'RAISED' AND escalation = 0",
    )
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    pool.close().await;

    let mut hops: [(&str, Vec<f64>); 4] = [
        ("gateway_to_readings_topic", Vec::new()),
        ("readings_topic_to_alarm", Vec::new()),
        ("alarm_to_page_enqueued", Vec::new()),
        ("page_enqueued_to_accepted", Vec::new()),
    ];
    for (pump, at) in sent {
        let marks = [
            Some(at),
            produced.get(pump),
            alarmed.get(pump),
            enqueued.get(pump),
            pages.get(pump),
        ];
        for (i, pair) in marks.windows(2).enumerate() {
            if let [Some(from), Some(to)] = pair {
                hops[i]
                    .1
                    .push((**to - **from).num_microseconds().unwrap_or_default() as f64 / 1000.0);
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (name, mut ms) in hops {
        anyhow::ensure!(!ms.is_empty(), "no probe left a mark for hop {name}");
        ms.sort_by(f64::total_cmp);
        out.insert(name.to_owned(), percentiles(&ms));
    }
    Ok((out.into(), rate_while_probing))
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
    for p in probes {
        pumps.insert(p, PROBE_GATEWAY);
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

/// The gateway relaying the probe pumps.
const PROBE_GATEWAY: &str = "gw-latency-probes";

/// Publishes one reading per probe pump, at the low-reservoir threshold, with event
/// time `event_time`; returns the moment each was handed to MQTT.
async fn send_probes(
    mqtt: &fleet_runtime::MqttConfig,
    run: &str,
    probes: &[String],
    every: Duration,
    event_time: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    // One gateway relays every probe pump: with TLS on, a client can publish only under
    // its own certificate's gateway id.
    harness::issue_gateway_certs([PROBE_GATEWAY])?;
    let options = mqtt.options(&format!("{run}-probes"), PROBE_GATEWAY)?;
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let mut sent = Vec::with_capacity(probes.len());
    let mut tick = tokio::time::interval(every);
    for pump_id in probes {
        tick.tick().await;
        let at = Utc::now();
        let mut reading = Reading::example(pump_id, 1, event_time);
        reading.gateway_id = PROBE_GATEWAY.to_owned();
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
