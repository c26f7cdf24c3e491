//! `fleet-loadtest`: each hop on this machine next to its raw ceiling measured in the
//! same run: the telemetry path (gateways → Mosquitto → ingest → Kafka) against MQTT
//! publish→subscribe through the same broker and Kafka produce to the same broker, with
//! a fleet's worth of idle MQTT connections held open meanwhile; the archive's write
//! path against a raw `COPY` into the same database, and the real archiver and the real
//! detector working off a backlog against a bare Kafka consumer; the real notifier
//! paging the real receiver against bare tonic. Needs the local stack
//! (`deploy/local/stack.sh up`).
//!
//! The telemetry phase offers `--rate` readings/s across the fleet for `--duration`
//! (or `--readings-per-gateway` each), paced as a gateway relays its pump, or replays
//! as fast as the path takes them without `--rate`; `--faults` sets the fraction of
//! pumps carrying each fault. It counts every reading by `(pump_id, seq)`: offered,
//! arrived, lost, duplicated. The alarm-latency phase follows ([`latency`], the core
//! `fleet-latency` runs too): probes paged end to end while the path carries a fleet at
//! the offered rate (half the measured full-speed rate without `--rate`).
//!
//! Prints the figures, writes them as JSON (`--out`, every hop alike in `hops`, the
//! latency percentiles and histogram in `alarm_latency`) and draws the ratios
//! (`--plot`) and the latency histogram (beside it, `NAME-latency.svg`). `--quick` is
//! a small run (well under two minutes) for CI's smoke test: its figures are not
//! comparable with a full run's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use fleet_core::Reading;
use fleet_kafka::{FleetProducer, Topics, ensure_topic};
use fleet_loadtest::archive_ceiling::{self, ArchiveRates};
use fleet_loadtest::faults::Faults;
use fleet_loadtest::harness::{self, Service, StackEnv};
use fleet_loadtest::hop::{Hop, per_second};
use fleet_loadtest::hop_detector::{self, DetectorDrain};
use fleet_loadtest::latency::{self, Latency};
use fleet_loadtest::mqtt_connections::{self, ConnectionsReport};
use fleet_loadtest::{hop_notifier, kafka_count, kafka_load, pages, plot, tonic_ceiling};
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
    /// Readings per gateway in the telemetry phase (default 150, 30 with `--quick`).
    /// With `--rate`, `--duration` may decide it instead.
    #[arg(long)]
    readings_per_gateway: Option<usize>,
    /// Readings/s the whole fleet offers in the telemetry phase, paced (each gateway
    /// hands its outbox a small batch every 250 ms or so, as the gateway process's
    /// replay does). Without it the fleet replays as fast as the path acknowledges.
    #[arg(long, allow_negative_numbers = true)]
    rate: Option<f64>,
    /// How long the telemetry phase offers `--rate` (needs `--rate`): readings per
    /// gateway are rate × duration / gateways. E.g. `60s`, `5m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// The fault mix, as fractions of pumps: `low-reservoir=0.05,occlusion=0.02,...`;
    /// `low-reservoir` ends a pump's readings at its threshold, every other name is a
    /// simulator fault (`missed-refill`, `reprogram-up`, `battery-premature`,
    /// `motor-stall`, `gateway-outage-backlog`, ...). Applies to the telemetry
    /// phase's fleet and the latency phase's background.
    #[arg(long, default_value = "")]
    faults: Faults,
    /// Alarm-latency probes (one pump each) sent while the path carries the load.
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// Time between two probes.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    probe_every: Duration,
    /// Ingest replicas sharing the subscription.
    #[arg(long, default_value_t = 1)]
    ingest_replicas: usize,
    /// Messages for each raw ceiling.
    #[arg(long, default_value_t = 20_000)]
    raw_messages: usize,
    /// Idle MQTT connections (one gateway each) held open while the telemetry path
    /// is measured.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Keep-alive of the idle connections.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    keep_alive: Duration,
    /// Readings the detector works off (spread over `--gateways` pumps).
    #[arg(long, default_value_t = 100_000)]
    detector_readings: usize,
    /// Alarm events the notifier pages (one pump each).
    #[arg(long, default_value_t = 2_000)]
    alarms: usize,
    /// Calls for the bare tonic ceiling.
    #[arg(long, default_value_t = 40_000)]
    tonic_calls: usize,
    /// Where to write the JSON result.
    #[arg(long, default_value = "loadtest/results/telemetry.json")]
    out: PathBuf,
    /// Where to draw each hop's ratio to its ceiling (SVG); the latency histogram goes
    /// beside it, as `NAME-latency.svg`.
    #[arg(long, default_value = "loadtest/results/telemetry.svg")]
    plot: PathBuf,
    /// A small run for a smoke test: 40 gateways × 30 readings, 3,000 raw messages,
    /// 500 connections, 4,000 detector readings, 300 alarms, 3,000 tonic calls, 20
    /// probes (each unless given explicitly).
    #[arg(long)]
    quick: bool,
}

impl Cli {
    /// The command line, with `--quick`'s sizes for every size not given explicitly.
    fn parse_with_quick() -> Cli {
        use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if cli.quick {
            let defaulted = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
            for (id, size, quick) in [
                ("gateways", &mut cli.gateways, 40),
                ("raw_messages", &mut cli.raw_messages, 3000),
                ("connections", &mut cli.connections, 500),
                ("detector_readings", &mut cli.detector_readings, 4000),
                ("alarms", &mut cli.alarms, 300),
                ("tonic_calls", &mut cli.tonic_calls, 3000),
                ("probes", &mut cli.probes, 20),
            ] {
                if defaulted(id) {
                    *size = quick;
                }
            }
        }
        cli
    }

    /// Checks the knobs together; readings per gateway in the telemetry phase.
    fn readings_per_gateway(&self) -> anyhow::Result<usize> {
        anyhow::ensure!(self.gateways > 0, "--gateways must be at least 1");
        anyhow::ensure!(self.probes > 0, "--probes must be at least 1");
        anyhow::ensure!(
            !self.probe_every.is_zero(),
            "--probe-every must be longer than 0"
        );
        if let Some(rate) = self.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number of readings/s (leave it out for full speed), not {rate}"
            );
        }
        let default = if self.quick { 30 } else { 150 };
        let per_gateway = match (self.rate, self.duration, self.readings_per_gateway) {
            (None, Some(_), _) => {
                anyhow::bail!("--duration needs --rate: how long to offer which rate")
            }
            (Some(_), Some(_), Some(_)) => anyhow::bail!(
                "--duration and --readings-per-gateway both decide the readings per gateway: give one"
            ),
            (Some(rate), Some(duration), None) => {
                anyhow::ensure!(!duration.is_zero(), "--duration must be longer than 0");
                (rate * duration.as_secs_f64() / self.gateways as f64).ceil() as usize
            }
            (_, None, given) => given.unwrap_or(default),
        };
        anyhow::ensure!(per_gateway > 0, "--readings-per-gateway must be at least 1");
        Ok(per_gateway)
    }

    /// How the telemetry phase's gateways are paced.
    fn pace(&self) -> harness::Pace {
        match self.rate {
            Some(total) => harness::Pace::ReadingsPerSecond {
                total,
                gateways: self.gateways,
            },
            None => harness::Pace::FullSpeed,
        }
    }
}

/// The raw ceilings of the telemetry path: the same brokers doing the same kind of
/// work with nothing of ours in the way. (The consume ceiling is measured with the
/// detector, on its larger backlog; the paging ceiling with the notifier.)
#[derive(Debug, Clone, Copy)]
struct Ceilings {
    mqtt: f64,
    kafka_produce: f64,
}

/// The telemetry path's figures, measured beside the idle connections.
#[derive(Debug, Clone)]
struct Telemetry {
    readings_per_s: f64,
    counts: Counts,
    connections: ConnectionsReport,
}

/// Readings counted end to end by `(pump_id, seq)`: what the gateways were given,
/// what reached Kafka, and the time that took.
#[derive(Debug, Clone, Copy)]
struct Counts {
    offered: usize,
    arrived: usize,
    lost: usize,
    duplicates: u64,
    elapsed_s: f64,
}

/// Paging: the real notifier to the real receiver, and bare tonic.
#[derive(Debug, Clone, Copy)]
struct Paging {
    pages_per_s: f64,
    bare_tonic_calls_per_s: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_with_quick();
    let readings_per_gateway = cli.readings_per_gateway()?;
    let env = StackEnv::from_env()?;
    // Every service binary in one cargo run, before anything is timed.
    harness::binaries(&[
        "fleet-ingest",
        "fleet-gateway",
        "fleet-detector",
        "fleet-notifier",
        "fleet-archiver",
        "fleetctl",
    ])?;
    // Before anything is measured: a run that cannot hold its connections fails now.
    mqtt_connections::preflight(cli.connections)?;
    let run = format!("bench-{}", Utc::now().timestamp());
    let dir = harness::kept_dir("fleet-loadtest-")?;

    let (readings, pumps_by_fault) = cli.faults.fleet(cli.gateways, readings_per_gateway);
    let sample_bytes = fleet_core::protobuf::encode_reading(&readings[0]).len();
    eprintln!(
        "{} readings from {} gateways ({} bytes each as protobuf), offered {}; pumps by fault: {pumps_by_fault:?}",
        readings.len(),
        cli.gateways,
        sample_bytes,
        cli.rate
            .map_or("at full speed".to_owned(), |r| format!("at {r} readings/s")),
    );

    let ceilings = ceilings(&env, &run, &readings, cli.raw_messages, sample_bytes).await?;
    let telemetry = telemetry_beside_connections(&cli, &env, &run, &dir, &readings).await?;
    let latency = alarm_latency(&cli, &env, &run, &dir, telemetry.readings_per_s).await?;
    let (archive, drained) = archive(&env, &run, &dir, &readings).await?;
    let detector = detector(&cli, &env, &run, &dir).await?;
    let paging = paging(&cli, &env, &run, &dir).await?;

    let hops = hops(&ceilings, &telemetry, &archive, drained, &detector, &paging);
    write_creating_dir(&cli.plot, plot::ratios(&hops).map_err(anyhow::Error::msg)?)?;
    let latency_plot = latency_plot_path(&cli.plot);
    write_creating_dir(
        &latency_plot,
        plot::latency_histogram(&latency).map_err(anyhow::Error::msg)?,
    )?;
    let report = Report {
        cli: &cli,
        readings_per_gateway,
        pumps_by_fault,
        latency,
        latency_plot,
        readings: readings.len(),
        reading_bytes: sample_bytes,
        ceilings,
        telemetry,
        archive,
        drained,
        detector,
        hops,
    };
    let text = serde_json::to_string_pretty(&report.json())? + "\n";
    write_creating_dir(&cli.out, &text)?;
    print!("{text}");
    let counts = report.telemetry.counts;
    anyhow::ensure!(
        counts.lost == 0,
        "{} of {} readings never reached Kafka (logs in {})",
        counts.lost,
        counts.offered,
        dir.display()
    );
    Ok(())
}

/// `DIR/NAME-latency.svg` beside the ratios' `DIR/NAME.svg`.
fn latency_plot_path(plot: &Path) -> PathBuf {
    let stem = plot.file_stem().and_then(|s| s.to_str()).unwrap_or("plot");
    plot.with_file_name(format!("{stem}-latency.svg"))
}

/// The alarm-latency phase: probes paged end to end while a fleet with the run's
/// faults offers `--rate` (half of `measured`, the path's full-speed rate, without
/// it), for long enough to cover every probe.
async fn alarm_latency(
    cli: &Cli,
    env: &StackEnv,
    run: &str,
    dir: &Path,
    measured: f64,
) -> anyhow::Result<Latency> {
    let offered = cli.rate.unwrap_or((measured / 2.0).max(1.0));
    // A second's margin at either end of the probing.
    let span = latency::Plan::probing_span(cli.probes, cli.probe_every) + Duration::from_secs(2);
    let per_gateway = ((offered * span.as_secs_f64() / cli.gateways as f64).ceil() as usize).max(2);
    let (background, _) = cli.faults.fleet(cli.gateways, per_gateway);
    let plan = latency::Plan {
        background,
        pace: harness::Pace::ReadingsPerSecond {
            total: offered,
            gateways: cli.gateways,
        },
        probes: cli.probes,
        probe_every: cli.probe_every,
    };
    let measured = latency::measure(env, run, dir, &plan).await?;
    eprintln!(
        "alarm latency: {} ({} probes) while the path carried {} readings/s",
        measured.percentiles(),
        measured.samples_ms.len(),
        measured.readings_per_s_while_probing
    );
    Ok(measured)
}

fn write_creating_dir(path: &Path, contents: impl AsRef<[u8]>) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// MQTT publish→subscribe and Kafka produce, each on its own.
async fn ceilings(
    env: &StackEnv,
    run: &str,
    readings: &[Reading],
    messages: usize,
    bytes: usize,
) -> anyhow::Result<Ceilings> {
    let mqtt = raw_mqtt(&env.mqtt(), run, messages, bytes).await?;
    eprintln!("raw mqtt publish→subscribe: {mqtt:.0} msg/s");
    let kafka_produce = raw_kafka_produce(&env.kafka_brokers, run, readings, messages).await?;
    eprintln!("raw kafka produce: {kafka_produce:.0} msg/s");
    Ok(Ceilings {
        mqtt,
        kafka_produce,
    })
}

/// The telemetry path measured while `--connections` idle gateways hold connections
/// to the same broker; they are closed afterwards and what they cost is reported.
async fn telemetry_beside_connections(
    cli: &Cli,
    env: &StackEnv,
    run: &str,
    dir: &Path,
    readings: &[Reading],
) -> anyhow::Result<Telemetry> {
    let plan = mqtt_connections::Plan {
        count: cli.connections,
        concurrency: cli.connect_concurrency,
        keep_alive: cli.keep_alive,
    };
    let held = mqtt_connections::open(&env.mqtt(), run, &plan).await?;
    let opened = held.opened();
    eprintln!(
        "mqtt connections: {} of {} up in {:.1} s, {} failed; this process {} → {} KiB",
        opened.established,
        opened.requested,
        opened.establish_s,
        opened.failed,
        opened.rss_kib_before,
        opened.rss_kib_after
    );
    let counts = pipeline(env, run, dir, readings, cli.ingest_replicas, cli.pace()).await?;
    let readings_per_s = counts.arrived as f64 / counts.elapsed_s;
    eprintln!(
        "pipeline: {readings_per_s:.0} readings/s beside {} open connections",
        held.still_open()
    );
    Ok(Telemetry {
        readings_per_s,
        counts,
        connections: held.close().await,
    })
}

/// The archive's write path against COPY, then the real archiver draining what the
/// telemetry path put in Kafka (rows/s).
async fn archive(
    env: &StackEnv,
    run: &str,
    dir: &Path,
    readings: &[Reading],
) -> anyhow::Result<(ArchiveRates, f64)> {
    let database_url = fleet_store::testing::fresh_database(&env.database_url, "loadtest").await?;
    let pool = fleet_store::connect(&database_url).await?;
    let archive = archive_ceiling::measure(&pool, readings).await?;
    pool.close().await;
    eprintln!(
        "archive write path: {:.0} rows/s; raw COPY: {:.0} rows/s",
        archive.write_path_rows_per_s, archive.raw_copy_rows_per_s
    );
    let unique = harness::unique_keys(readings).len();
    let drained =
        archive_ceiling::archiver_drain(env, &database_url, &format!("{run}-path"), unique, dir)
            .await?;
    eprintln!("archiver from Kafka: {drained:.0} rows/s");
    Ok((archive, drained))
}

/// The real detector working off its own backlog, and a bare consumer reading it.
async fn detector(
    cli: &Cli,
    env: &StackEnv,
    run: &str,
    dir: &Path,
) -> anyhow::Result<DetectorDrain> {
    let workload = hop_detector::Workload::new(cli.gateways, cli.detector_readings);
    let drained = hop_detector::measure(env, run, &workload, dir).await?;
    eprintln!(
        "detector from Kafka: {:.0} readings/s ({} LOW_RESERVOIR raised); bare consumer: {:.0} records/s",
        drained.readings_per_s, drained.low_reservoir_alarms, drained.consume_ceiling_per_s
    );
    Ok(drained)
}

/// Bare tonic with the same pages, then the real notifier paging the real receiver.
async fn paging(cli: &Cli, env: &StackEnv, run: &str, dir: &Path) -> anyhow::Result<Paging> {
    let alarms = pages::alarms(cli.alarms, Utc::now());
    let signed: Vec<_> = alarms
        .iter()
        .map(|a| pages::signed(a, hop_notifier::SECRET.as_bytes()))
        .collect();
    let bare_tonic_calls_per_s = tonic_ceiling::measure(cli.tonic_calls, &signed).await?;
    eprintln!("bare tonic: {bare_tonic_calls_per_s:.0} calls/s");
    let pages_per_s = hop_notifier::measure(env, run, &alarms, dir).await?;
    eprintln!("notifier → receiver: {pages_per_s:.0} pages/s");
    Ok(Paging {
        pages_per_s,
        bare_tonic_calls_per_s,
    })
}

/// Every hop against its ceiling, in the order of the pipeline.
fn hops(
    ceilings: &Ceilings,
    telemetry: &Telemetry,
    archive: &ArchiveRates,
    drained: f64,
    detector: &DetectorDrain,
    paging: &Paging,
) -> Vec<Hop> {
    let path = telemetry.readings_per_s;
    vec![
        Hop::new(
            "telemetry path / MQTT pub→sub",
            "readings",
            path,
            ceilings.mqtt,
        ),
        Hop::new(
            "telemetry path / Kafka produce",
            "readings",
            path,
            ceilings.kafka_produce,
        ),
        Hop::new(
            "detector from Kafka / Kafka consume",
            "readings",
            detector.readings_per_s,
            detector.consume_ceiling_per_s,
        ),
        Hop::new(
            "notifier → receiver / bare tonic",
            "pages",
            paging.pages_per_s,
            paging.bare_tonic_calls_per_s,
        ),
        Hop::new(
            "archive write path / COPY",
            "rows",
            archive.write_path_rows_per_s,
            archive.raw_copy_rows_per_s,
        ),
        Hop::new(
            "archiver from Kafka / Kafka consume",
            "rows",
            drained,
            detector.consume_ceiling_per_s,
        ),
        Hop::new(
            "archiver from Kafka / COPY",
            "rows",
            drained,
            archive.raw_copy_rows_per_s,
        ),
    ]
}

/// Everything the run measured, for the JSON.
struct Report<'a> {
    cli: &'a Cli,
    readings_per_gateway: usize,
    pumps_by_fault: std::collections::BTreeMap<String, usize>,
    latency: Latency,
    latency_plot: PathBuf,
    readings: usize,
    reading_bytes: usize,
    ceilings: Ceilings,
    telemetry: Telemetry,
    archive: ArchiveRates,
    drained: f64,
    detector: DetectorDrain,
    hops: Vec<Hop>,
}

impl Report<'_> {
    fn json(&self) -> serde_json::Value {
        let ratio = |ours: f64, ceiling: f64| (ours / ceiling * 100.0).round() / 100.0;
        let (ceilings, path, archive) =
            (&self.ceilings, self.telemetry.readings_per_s, &self.archive);
        let consume = self.detector.consume_ceiling_per_s;
        let counts = &self.telemetry.counts;
        serde_json::json!({
            "measured_at": Utc::now().to_rfc3339(),
            "gateways": self.cli.gateways,
            "readings_per_gateway": self.readings_per_gateway,
            "readings": self.readings,
            "reading_bytes": self.reading_bytes,
            "offered_readings_per_s": match self.cli.rate {
                Some(rate) => serde_json::json!(rate),
                None => serde_json::json!("full speed"),
            },
            "faults": self.cli.faults.json(),
            "pumps_by_fault": self.pumps_by_fault,
            "ingest_replicas": self.cli.ingest_replicas,
            "pipeline_readings_per_s": path.round(),
            // Every reading by (pump_id, seq), gateway to Kafka.
            "end_to_end": {
                "offered": counts.offered,
                "arrived": counts.arrived,
                "lost": counts.lost,
                "duplicates": counts.duplicates,
                "seconds": (counts.elapsed_s * 1000.0).round() / 1000.0,
            },
            "duplicates_in_kafka": counts.duplicates,
            "raw_mqtt_msgs_per_s": ceilings.mqtt.round(),
            "raw_kafka_produce_msgs_per_s": ceilings.kafka_produce.round(),
            "ratio_to_slower_raw": ratio(path, ceilings.mqtt.min(ceilings.kafka_produce)),
            "mqtt_connections": self.telemetry.connections.json(),
            "raw_copy_rows_per_s": archive.raw_copy_rows_per_s.round(),
            "archive_write_path_rows_per_s": archive.write_path_rows_per_s.round(),
            "archive_ratio_to_copy": ratio(archive.write_path_rows_per_s, archive.raw_copy_rows_per_s),
            "raw_kafka_consume_msgs_per_s": consume.round(),
            "archiver_from_kafka_rows_per_s": self.drained.round(),
            "archiver_ratio_to_consume": ratio(self.drained, consume),
            // What each of the hops below worked through (their rates are in `hops`).
            "detector": {
                "readings": self.detector.readings,
                "low_reservoir_alarms": self.detector.low_reservoir_alarms,
            },
            "paging": {
                "pages": self.cli.alarms,
                "bare_tonic_calls": self.cli.tonic_calls,
                "bare_tonic_in_flight": tonic_ceiling::IN_FLIGHT,
            },
            "hops": self.hops.iter().map(Hop::json).collect::<Vec<_>>(),
            "alarm_latency": self.latency.json(),
            "latency_plot": self.latency_plot.display().to_string(),
            "quick": self.cli.quick,
            "command": if self.cli.quick { "fleet-loadtest --quick" } else { "cargo run --release -p fleet-loadtest --bin fleet-loadtest" },
        })
    }
}

/// One publisher, one subscriber, QoS 1, through the same broker: messages/s received.
/// Both are the operator identity, on a probe topic (the one the broker's ACL lets it
/// write), over the same TLS as every other client.
async fn raw_mqtt(
    mqtt: &fleet_runtime::MqttConfig,
    run: &str,
    messages: usize,
    bytes: usize,
) -> anyhow::Result<f64> {
    use fleet_runtime::mqtt::OPERATOR_IDENTITY;
    let topic = format!("fleet/probe/bench/{run}/raw");
    let sub_opts = mqtt.options(&format!("{run}-sub"), OPERATOR_IDENTITY)?;
    let (sub, mut sub_loop) = AsyncClient::new(sub_opts, 1000);
    sub.subscribe(&topic, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await? {
            break;
        }
    }
    let mut pub_opts = mqtt.options(&format!("{run}-pub"), OPERATOR_IDENTITY)?;
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

/// Idempotent produce of readings, many in flight: messages/s acknowledged.
async fn raw_kafka_produce(
    brokers: &str,
    run: &str,
    readings: &[Reading],
    messages: usize,
) -> anyhow::Result<f64> {
    let topics = Topics::with_suffix(&format!("{run}-raw"));
    ensure_topic(brokers, &topics.readings, kafka_count::DEFAULT_PARTITIONS).await?;
    let producer = FleetProducer::new(brokers, topics)?;
    let started = Instant::now();
    kafka_load::readings(&producer, readings.iter().cycle().take(messages)).await?;
    Ok(per_second(messages, started.elapsed()))
}

/// The real path: the gateway process replays every reading through its outboxes at
/// `pace`, the ingest writes to Kafka; timed from the gateways' start to their exit,
/// once every reading is acknowledged. Returns what arrived, by `(pump_id, seq)`.
async fn pipeline(
    env: &StackEnv,
    run: &str,
    dir: &Path,
    readings: &[Reading],
    replicas: usize,
    pace: harness::Pace,
) -> anyhow::Result<Counts> {
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
    // Built now, so the clock below does not time cargo.
    harness::binary("fleet-gateway")?;
    let started = Instant::now();
    let mut gateways = harness::replay_through_gateways(env, dir, &replay, pace)?;
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
    for mut ingest in ingests {
        ingest.terminate(Duration::from_secs(15))?;
    }
    let arrived = expected.intersection(&seen.unique).count();
    Ok(Counts {
        offered: expected.len(),
        arrived,
        lost: expected.len() - arrived,
        duplicates: seen.records - seen.unique.len() as u64,
        elapsed_s: elapsed.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("fleet-loadtest").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn rate_and_duration_decide_the_readings_per_gateway_and_bad_knobs_name_their_flag() {
        let per_gateway = |args: &[&str]| cli(args).readings_per_gateway();
        assert_eq!(per_gateway(&[]).expect("default"), 150);
        assert_eq!(
            per_gateway(&["--gateways", "100", "--rate", "1000", "--duration", "30s"])
                .expect("rate × duration"),
            300
        );
        assert_eq!(
            per_gateway(&["--rate", "1000", "--readings-per-gateway", "7"]).expect("given"),
            7
        );
        for (args, says) in [
            (&["--duration", "30s"][..], "--duration needs --rate"),
            (&["--rate", "0"][..], "--rate must be a positive"),
            (&["--rate", "NaN"][..], "--rate must be a positive"),
            (&["--rate", "-5"][..], "--rate must be a positive"),
            (
                &[
                    "--rate",
                    "10",
                    "--duration",
                    "1m",
                    "--readings-per-gateway",
                    "5",
                ][..],
                "give one",
            ),
            (
                &["--rate", "10", "--duration", "0s"][..],
                "--duration must be",
            ),
            (&["--gateways", "0"][..], "--gateways must be"),
            (
                &["--readings-per-gateway", "0"][..],
                "--readings-per-gateway must be",
            ),
            (&["--probes", "0"][..], "--probes must be"),
        ] {
            let error = per_gateway(args).expect_err(says).to_string();
            assert!(error.contains(says), "{args:?}: {error}");
        }
        let error = Cli::try_parse_from(["fleet-loadtest", "--faults", "leaky=0.1"])
            .expect_err("unknown fault")
            .to_string();
        assert!(
            error.contains("--faults") && error.contains("leaky"),
            "{error}"
        );
        assert!(matches!(
            cli(&["--rate", "500"]).pace(),
            harness::Pace::ReadingsPerSecond { total: 500.0, .. }
        ));
        assert!(matches!(cli(&[]).pace(), harness::Pace::FullSpeed));
    }

    #[test]
    fn the_latency_plot_goes_beside_the_ratios() {
        assert_eq!(
            latency_plot_path(Path::new("a/telemetry.svg")),
            Path::new("a/telemetry-latency.svg")
        );
    }
}
