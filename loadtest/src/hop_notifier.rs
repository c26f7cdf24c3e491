//! The paging hop: the real `fleet-notifier` working off a backlog of alarm events and
//! delivering each as a signed page to the real `fleetctl receiver`, which verifies,
//! records and fsyncs every page before its receipt. Everything the notifier needs is
//! the run's own: a fresh database with the registry (one clinic, every pump), a fresh
//! alarms topic already holding the events, its own consumer group.
//!
//! The rate comes from the receiver's own marks: distinct `(alarm_id, revision)` pages
//! over the time from the first one's `received_at` to the last one's, so the
//! notifier's start-up and group join are not counted, and neither is how often this
//! side looks at the file.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_core::{AlarmEvent, Registry};
use fleet_kafka::{FleetProducer, Topics, ensure_topic};

use crate::harness::{self, Service, StackEnv};
use crate::hop::per_second;
use crate::kafka_count::DEFAULT_PARTITIONS;
use crate::{drain, kafka_load, pages};

/// Shared by the registry's clinic (the notifier signs with it) and the receiver.
pub const SECRET: &str = "loadtest-paging-secret-0123";

/// How long the whole backlog may take to arrive.
const LIMIT: Duration = Duration::from_secs(600);

/// Delivers `alarms` (one per pump, see [`pages::alarms`]) through the notifier to a
/// receiver; pages/s. Fails unless every alarm arrives as a page. Logs and the
/// receiver's file go to `dir`.
pub async fn measure(
    env: &StackEnv,
    run: &str,
    alarms: &[AlarmEvent],
    dir: &Path,
) -> anyhow::Result<f64> {
    let suffix = format!("{run}-paging");
    let receiver_port = harness::free_port()?;
    let database_url =
        fleet_store::testing::fresh_database(&env.database_url, "loadtest_paging").await?;
    let gateways: Vec<String> = alarms.iter().map(|a| format!("gw-{}", a.pump_id)).collect();
    let pumps = alarms
        .iter()
        .zip(&gateways)
        .map(|(a, g)| (a.pump_id.as_str(), g.as_str()));
    register_clinic(&database_url, pumps, receiver_port).await?;
    let topics = Topics::with_suffix(&suffix);
    ensure_topic(&env.kafka_brokers, &topics.alarms, DEFAULT_PARTITIONS).await?;
    kafka_load::alarms(&FleetProducer::new(&env.kafka_brokers, topics)?, alarms).await?;

    let out = dir.join("pages.jsonl");
    let mut receiver = start_receiver(receiver_port, &out, dir)?;
    harness::wait_port(receiver_port, Duration::from_secs(30)).await?;
    let group = format!("{suffix}-notifier");
    // Under load the local broker answers heartbeats slowly; a short session would
    // make the group rebalance mid-measurement.
    let args = [
        "--topic-suffix",
        &suffix,
        "--group",
        &group,
        "--session-timeout",
        "15s",
    ];
    let (mut notifier, _) = drain::start(env, "fleet-notifier", &database_url, &args, dir).await?;
    let arrived = wait_for_pages(&out, alarms.len()).await;
    let _ = notifier.terminate(Duration::from_secs(10));
    let _ = receiver.terminate(Duration::from_secs(10));
    let span = arrived?;
    Ok(per_second(alarms.len().saturating_sub(1), span))
}

/// One clinic, paged at the receiver on `receiver_port` and signing with [`SECRET`],
/// following every pump, each relayed by its `(pump_id, gateway_id)` gateway;
/// imported into `database_url`, where the notifier (and ingest, for its pairing)
/// reads it. The paging hop and the alarm-latency phase both page through this.
pub async fn register_clinic<'a>(
    database_url: &str,
    pumps: impl IntoIterator<Item = (&'a str, &'a str)>,
    receiver_port: u16,
) -> anyhow::Result<()> {
    let mut toml = format!(
        "[[clinic]]\nid = \"{}\"\nname = \"Load-test clinic\"\n\
         webhook = \"http://127.0.0.1:{receiver_port}\"\nescalation_after = \"1h\"\n\
         signing_secret = \"{SECRET}\"\n",
        pages::CLINIC
    );
    let pumps: BTreeMap<&str, &str> = pumps.into_iter().collect();
    for (pump, gateway) in pumps {
        toml += &format!(
            "[[pump]]\npump_id = \"{pump}\"\ngateway_id = \"{gateway}\"\nclinic_id = \"{}\"\n",
            pages::CLINIC
        );
    }
    let registry = Registry::from_toml(&toml).context("the load test's registry")?;
    let pool = fleet_store::connect(database_url).await?;
    fleet_store::registry::import(&pool, &registry, false).await?;
    pool.close().await;
    Ok(())
}

/// The real `fleetctl receiver` on loopback `port`, checking [`SECRET`] and recording
/// every page it accepts to `out` (JSON Lines); its log in `dir/receiver.log`.
pub fn start_receiver(port: u16, out: &Path, dir: &Path) -> anyhow::Result<Service> {
    Service::spawn(
        "fleetctl receiver",
        Command::new(harness::binary("fleetctl")?)
            .env("FLEET_RECEIVER_SECRET", SECRET)
            .args(["receiver", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--out", &out.display().to_string()]),
        &dir.join("receiver.log"),
    )
}

/// Waits until the receiver's file holds `expected` distinct pages, for at most
/// [`LIMIT`]; the time from the first page's arrival to the last's.
async fn wait_for_pages(out: &Path, expected: usize) -> anyhow::Result<Duration> {
    let mut file = PageFile::new(out);
    let deadline = Instant::now() + LIMIT;
    while file.refresh()? < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {expected} pages at the receiver after {LIMIT:?} (its file: {})",
            file.arrivals.len(),
            out.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = file.arrivals.values().min().copied().unwrap_or_default();
    let last = file.arrivals.values().max().copied().unwrap_or_default();
    Ok((last - first).to_std().unwrap_or_default())
}

/// The receiver's JSON Lines file, read as it grows (only what was added since the
/// last look, up to its last complete line).
#[derive(Debug)]
struct PageFile {
    path: PathBuf,
    read: u64,
    /// When each distinct `(alarm_id, revision)` first arrived.
    arrivals: BTreeMap<(String, u64), DateTime<Utc>>,
}

impl PageFile {
    fn new(path: &Path) -> PageFile {
        PageFile {
            path: path.to_owned(),
            read: 0,
            arrivals: BTreeMap::new(),
        }
    }

    /// Reads what was appended; the number of distinct pages so far.
    fn refresh(&mut self) -> anyhow::Result<usize> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Ok(0); // not created yet
        };
        file.seek(SeekFrom::Start(self.read))?;
        let mut added = Vec::new();
        file.read_to_end(&mut added)?;
        let complete = added.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in added[..complete].split(|&b| b == b'\n') {
            self.record(line)
                .with_context(|| format!("{}: not a recorded page", self.path.display()))?;
        }
        self.read += complete as u64;
        Ok(self.arrivals.len())
    }

    fn record(&mut self, line: &[u8]) -> anyhow::Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let page: serde_json::Value = serde_json::from_slice(line)?;
        let key = (
            page["alarm_id"].as_str().context("no alarm_id")?.to_owned(),
            page["revision"].as_u64().context("no revision")?,
        );
        let at = page["received_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .context("no received_at")?;
        self.arrivals.entry(key).or_insert(at.to_utc());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_page_file_is_read_as_it_grows_and_counts_each_page_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pages.jsonl");
        let mut pages = PageFile::new(&path);
        assert_eq!(pages.refresh().expect("no file yet"), 0);
        let line = |id: &str, at: &str| {
            format!("{{\"alarm_id\":\"{id}\",\"revision\":1,\"received_at\":\"{at}\"}}\n")
        };
        let (first, second) = (
            line("a", "2026-01-01T00:00:00.100Z"),
            line("b", "2026-01-01T00:00:00.300Z"),
        );
        let mut file = std::fs::File::create(&path).expect("file");
        file.write_all(first.as_bytes()).expect("write");
        // A line cut short is left for the next look.
        let (head, tail) = second.split_at(10);
        file.write_all(head.as_bytes()).expect("write");
        assert_eq!(pages.refresh().expect("read"), 1);
        file.write_all(tail.as_bytes()).expect("write");
        // The same page again counts once, at its first arrival.
        file.write_all(line("a", "2026-01-01T00:00:09Z").as_bytes())
            .expect("write");
        assert_eq!(pages.refresh().expect("read"), 2);
        let first_of_a = pages.arrivals[&("a".to_owned(), 1)];
        assert_eq!(first_of_a.timestamp_subsec_millis(), 100);
    }
}
