//! Alarm latency end to end, from a reading leaving a gateway to the clinic's receiver
//! accepting the page, while the telemetry path carries a fleet's load: the measuring
//! core of `fleet-latency` and of `fleet-loadtest`'s latency phase. Runs the real
//! services (ingest pairing from the database, detector, notifier, `fleetctl
//! receiver`) against the local stack, on topics, a database and consumer groups of
//! the run's own; the clinic and the receiver are set up as for the paging hop
//! ([`hop_notifier::register_clinic`], [`hop_notifier::start_receiver`]).
//!
//! Probe pumps publish one reading each, noting the moment it leaves, at the
//! low-reservoir threshold: the detector raises LOW_RESERVOIR on it, and the page's
//! arrival at the receiver minus that moment is one latency sample. Background
//! gateways replay a fleet meanwhile, at full speed or at an offered rate.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fleet_core::Reading;
use fleet_core::gateway_protocol::{ReadingEncoding, readings_topic};
use fleet_kafka::{Topics, ensure_topic};
use rumqttc::{AsyncClient, QoS};

use crate::harness::{self, Pace, Service, StackEnv};
use crate::hop_notifier;
use crate::kafka_count::read_records;

/// What one latency measurement does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The background fleet's readings, replayed through one gateway process.
    pub background: Vec<Reading>,
    /// How fast the background is offered.
    pub pace: Pace,
    /// Probe readings (one pump each), spread over the background replay.
    pub probes: usize,
    /// Time between two probes.
    pub probe_every: Duration,
}

/// Time the background runs before the first probe.
pub const WARM_UP: Duration = Duration::from_secs(2);

impl Plan {
    /// How long the background must be offered to cover the warm-up and every probe.
    pub fn probing_span(probes: usize, probe_every: Duration) -> Duration {
        WARM_UP + probe_every * u32::try_from(probes).unwrap_or(u32::MAX)
    }
}

/// What one measurement found.
#[derive(Debug, Clone)]
pub struct Latency {
    /// One sample per probe, milliseconds, sorted.
    pub samples_ms: Vec<f64>,
    pub background_readings: usize,
    /// The background's offered rate (`None`: full speed).
    pub offered_per_s: Option<f64>,
    /// Background readings over the time from the gateways' start to their exit.
    pub background_readings_per_s: f64,
    /// Readings the telemetry path wrote to Kafka while the probes were sent.
    pub readings_per_s_while_probing: f64,
    /// Each hop's share of the probes' time (p50/p90/p99/max per hop).
    pub hops_ms: serde_json::Value,
    pub cpu_cores_used_while_probing: serde_json::Value,
}

/// Upper bounds of the histogram's buckets, in milliseconds; a last bucket takes the
/// rest.
pub const BUCKETS_MS: [f64; 11] = [
    25.0, 50.0, 100.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

impl Latency {
    /// p50, p90, p99 and max.
    pub fn percentiles(&self) -> serde_json::Value {
        percentiles(&self.samples_ms)
    }

    /// Samples per bucket (not cumulative): `[{"above_ms", "up_to_ms", "count"}]`,
    /// the last bucket's `up_to_ms` null.
    pub fn histogram(&self) -> Vec<(f64, Option<f64>, usize)> {
        let mut lower = 0.0;
        let mut out = Vec::new();
        for upper in BUCKETS_MS.into_iter().map(Some).chain([None]) {
            let count = self
                .samples_ms
                .iter()
                .filter(|&&ms| ms > lower && upper.is_none_or(|u| ms <= u))
                .count();
            out.push((lower, upper, count));
            lower = upper.unwrap_or(f64::INFINITY);
        }
        // A sample of exactly 0 ms (clock granularity) belongs in the first bucket.
        let zeros = self.samples_ms.iter().filter(|&&ms| ms <= 0.0).count();
        if let Some(first) = out.first_mut() {
            first.2 += zeros;
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let histogram: Vec<_> = self
            .histogram()
            .into_iter()
            .map(|(above, up_to, count)| {
                serde_json::json!({ "above_ms": above, "up_to_ms": up_to, "count": count })
            })
            .collect();
        serde_json::json!({
            "probes": self.samples_ms.len(),
            "latency_ms": self.percentiles(),
            "histogram": histogram,
            "hops_ms": self.hops_ms,
            "background_readings": self.background_readings,
            "background_offered_per_s": match self.offered_per_s {
                Some(rate) => serde_json::json!(rate),
                None => serde_json::json!("full speed"),
            },
            "background_readings_per_s": self.background_readings_per_s.round(),
            "readings_per_s_while_probing": self.readings_per_s_while_probing,
            "cpu_cores_used_while_probing": self.cpu_cores_used_while_probing,
        })
    }
}

/// Runs one measurement; its logs and the receiver's file go to `dir/latency`. Fails
/// unless every probe was paged.
pub async fn measure(
    env: &StackEnv,
    run: &str,
    dir: &Path,
    plan: &Plan,
) -> anyhow::Result<Latency> {
    let dir = &dir.join("latency");
    std::fs::create_dir_all(dir)?;
    let suffix = format!("{run}-latency");
    let background = &plan.background;
    let probes: Vec<String> = (0..plan.probes).map(|i| format!("PROBE-{i:05}")).collect();
    let receiver_port = harness::free_port()?;
    let database_url = fleet_store::testing::fresh_database(&env.database_url, "latency").await?;
    let pumps = background
        .iter()
        .map(|r| (r.pump_id.as_str(), r.gateway_id.as_str()))
        .chain(probes.iter().map(|p| (p.as_str(), PROBE_GATEWAY)));
    hop_notifier::register_clinic(&database_url, pumps, receiver_port).await?;
    let topics = Topics::with_suffix(&suffix);
    for topic in [&topics.readings, &topics.alarms, &topics.dead_letter] {
        ensure_topic(&env.kafka_brokers, topic, 6).await?;
    }

    let spawn = |name: &str, args: &[String]| -> anyhow::Result<(Service, u16)> {
        let port = harness::free_port()?;
        let service = Service::spawn(
            name,
            env.command(name, &database_url)?
                .env("FLEET_SIGNING_SECRET", hop_notifier::SECRET)
                .env("FLEET_TOPIC_SUFFIX", &suffix)
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
    let pages_file = dir.join("pages.jsonl");
    let mut receiver = hop_notifier::start_receiver(receiver_port, &pages_file, dir)?;
    let (mut detector, detector_port) = spawn(
        "fleet-detector",
        &[
            "--group".into(),
            format!("{suffix}-detector"),
            "--checkpoint-interval".into(),
            "200ms".into(),
        ],
    )?;
    let (mut notifier, notifier_port) = spawn(
        "fleet-notifier",
        &["--group".into(), format!("{suffix}-notifier")],
    )?;
    let (mut ingest, ingest_port) = spawn(
        "fleet-ingest",
        &["--client-id".into(), format!("{suffix}-ingest")],
    )?;
    for port in [detector_port, notifier_port, ingest_port] {
        harness::wait_ready(port, Duration::from_secs(60)).await?;
    }
    harness::wait_port(receiver_port, Duration::from_secs(30)).await?;
    // The detector's group must own its partitions before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let replay = harness::write_replay(dir, background)?;
    // Built now, so the clock below does not time cargo.
    harness::binary("fleet-gateway")?;
    let started = Instant::now();
    let mut gateways = harness::replay_through_gateways(env, dir, &replay, plan.pace)?;
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
    tokio::time::sleep(WARM_UP).await;
    // Probes carry the background's earliest event time: a reading stamped "now" would
    // move its partition's event clock past the background's (simulated, past) history,
    // and the detector would rightly report those pumps silent: a storm of alarms that
    // a live fleet, whose readings all carry real time, never produces.
    let probe_time = background
        .iter()
        .map(|r| r.measured_at)
        .min()
        .unwrap_or_else(Utc::now);
    let sent = send_probes(&env.mqtt(), run, &probes, plan.probe_every, probe_time).await?;
    let cores = cpu.cores_used();
    gateways.wait_exit(Duration::from_secs(600))?;
    let background_readings_per_s = background.len() as f64 / started.elapsed().as_secs_f64();

    let pages = wait_for_pages(&pages_file, &probes, Duration::from_secs(120)).await;
    let mut samples_ms: Vec<f64> = sent
        .iter()
        .filter_map(|(pump, at)| pages.get(pump).map(|got| (*got - *at).num_microseconds()))
        .flatten()
        .map(|us| us as f64 / 1000.0)
        .collect();
    samples_ms.sort_by(f64::total_cmp);
    let breakdown = hop_breakdown(&env.kafka_brokers, &topics, &database_url, &sent, &pages).await;
    for service in [&mut ingest, &mut detector, &mut notifier, &mut receiver] {
        let _ = service.terminate(Duration::from_secs(10));
    }
    anyhow::ensure!(
        samples_ms.len() == probes.len(),
        "only {} of {} probe pages arrived (logs in {})",
        samples_ms.len(),
        probes.len(),
        dir.display()
    );
    let (hops_ms, readings_per_s_while_probing) = breakdown?;
    Ok(Latency {
        samples_ms,
        background_readings: background.len(),
        offered_per_s: match plan.pace {
            Pace::FullSpeed => None,
            Pace::ReadingsPerSecond { total, .. } => Some(total),
        },
        background_readings_per_s,
        readings_per_s_while_probing,
        hops_ms,
        cpu_cores_used_while_probing: cores,
    })
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

/// The `q` quantile (0 to 1) of sorted values, nearest rank; `None` when empty. The
/// harness's one percentile: every report and plot takes its figures from it.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q).round() as usize])
}

/// p50, p90, p99 and max of sorted milliseconds.
pub fn percentiles(sorted: &[f64]) -> serde_json::Value {
    let Some(max) = percentile(sorted, 1.0) else {
        return serde_json::Value::Null;
    };
    let pct = |q: f64| percentile(sorted, q).unwrap_or(max);
    serde_json::json!({ "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": max })
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
        let ends = crate::kafka_count::high_watermarks(brokers, topic)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(samples_ms: Vec<f64>) -> Latency {
        Latency {
            samples_ms,
            background_readings: 0,
            offered_per_s: None,
            background_readings_per_s: 0.0,
            readings_per_s_while_probing: 0.0,
            hops_ms: serde_json::Value::Null,
            cpu_cores_used_while_probing: serde_json::Value::Null,
        }
    }

    #[test]
    fn every_sample_lands_in_exactly_one_bucket() {
        let latency = measured(vec![0.0, 25.0, 25.1, 999.0, 1000.0, 60_000.0]);
        let buckets = latency.histogram();
        assert_eq!(buckets.len(), BUCKETS_MS.len() + 1);
        let count = |up_to: Option<f64>| {
            buckets
                .iter()
                .find(|b| b.1 == up_to)
                .map(|b| b.2)
                .unwrap_or_default()
        };
        assert_eq!(count(Some(25.0)), 2, "0 and 25 ms: {buckets:?}");
        assert_eq!(count(Some(50.0)), 1);
        assert_eq!(count(Some(1000.0)), 2);
        assert_eq!(count(None), 1, "past the last bound");
        assert_eq!(buckets.iter().map(|b| b.2).sum::<usize>(), 6);
        let json = latency.json();
        assert_eq!(
            json["latency_ms"]["p50"], 999.0,
            "the nearest rank, rounded up"
        );
        assert_eq!(json["latency_ms"]["max"], 60_000.0);
        assert_eq!(json["histogram"][0]["up_to_ms"], 25.0);
        assert!(json["histogram"][BUCKETS_MS.len()]["up_to_ms"].is_null());
        assert_eq!(json["background_offered_per_s"], "full speed");
        assert!(measured(Vec::new()).percentiles().is_null());
    }
}
