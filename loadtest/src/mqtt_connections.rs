//! Many gateways connected at once and idle, as a deployed fleet's are most of the
//! time: each a client of its own that says once that it is online (a gateway status at
//! QoS 1) and then only keeps its connection alive. They are held open while the
//! telemetry path is measured, so that figure is what the broker and the path carry
//! beside a fleet's worth of connections, not beside an empty broker.
//!
//! Connecting is bounded (a fixed number in progress at once) so the benchmark measures
//! the broker accepting a fleet, not a SYN flood; the open-files limits of this process
//! and of the broker are checked first, so a run that cannot succeed says which limit
//! to raise instead of failing thousands of connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use fleet_core::gateway_protocol::{GatewayStatus, status_topic};
use futures_util::StreamExt;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::task::JoinSet;

use crate::harness;
use crate::procfs::{self, Proc};

/// Open files kept free for everything else a process holds (Kafka and database
/// clients, the pipeline's own gateways and ingest at the broker, other tests).
pub const FD_RESERVE: u64 = 1024;

/// How long one client may take to connect and have its status acknowledged.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long closing waits for the clients to say goodbye before dropping the rest.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many, how fast, and how they idle.
#[derive(Debug, Clone)]
pub struct Plan {
    pub count: usize,
    /// Connections being set up at once.
    pub concurrency: usize,
    /// A real gateway's keep-alive is tens of seconds; idle clients cost the broker one
    /// ping each per interval.
    pub keep_alive: Duration,
}

/// What opening and holding the connections cost and how many stayed up.
#[derive(Debug, Clone, Default)]
pub struct ConnectionsReport {
    pub requested: usize,
    pub established: usize,
    pub failed: usize,
    /// The first failure's reason, if any failed.
    pub first_error: Option<String>,
    /// From the first connection attempt until the last one succeeded or failed.
    pub establish_s: f64,
    /// This process's resident memory before connecting and once all were up.
    pub rss_kib_before: u64,
    pub rss_kib_after: u64,
    /// The broker's, when its pid is known (the stack's pid file).
    pub broker_rss_kib: Option<(u64, u64)>,
    /// Established connections still open when they were closed: a connection the
    /// broker dropped while the pipeline ran is missing here.
    pub held_at_end: usize,
}

impl ConnectionsReport {
    pub fn json(&self) -> serde_json::Value {
        let per_connection = |before: u64, after: u64| {
            let grown = after.saturating_sub(before) as f64;
            (grown / self.established.max(1) as f64 * 10.0).round() / 10.0
        };
        serde_json::json!({
            "requested": self.requested,
            "established": self.established,
            "failed": self.failed,
            "first_error": self.first_error,
            "establish_s": (self.establish_s * 100.0).round() / 100.0,
            "held_at_end": self.held_at_end,
            "rss_kib_before": self.rss_kib_before,
            "rss_kib_after": self.rss_kib_after,
            "rss_kib_per_connection": per_connection(self.rss_kib_before, self.rss_kib_after),
            "broker_rss_kib_before": self.broker_rss_kib.map(|b| b.0),
            "broker_rss_kib_after": self.broker_rss_kib.map(|b| b.1),
            "broker_rss_kib_per_connection": self.broker_rss_kib.map(|(b, a)| per_connection(b, a)),
        })
    }
}

/// Open connections, each kept alive by a task of its own until [`Held::close`].
#[derive(Debug)]
pub struct Held {
    clients: Vec<AsyncClient>,
    /// Aborted when dropped, so an error path leaves no connection behind.
    tasks: JoinSet<()>,
    dropped: Arc<AtomicUsize>,
    closing: Arc<AtomicBool>,
    report: ConnectionsReport,
}

impl Held {
    /// What opening them cost (`held_at_end` is filled in by [`Held::close`]).
    pub fn opened(&self) -> &ConnectionsReport {
        &self.report
    }

    /// Established connections the broker has not dropped.
    pub fn still_open(&self) -> usize {
        self.clients.len() - self.dropped.load(Ordering::SeqCst)
    }

    /// Counts what is still open, then disconnects every client (MQTT DISCONNECT, so
    /// the broker sees a clean goodbye), bounded by [`CLOSE_TIMEOUT`].
    pub async fn close(mut self) -> ConnectionsReport {
        self.report.held_at_end = self.still_open();
        self.closing.store(true, Ordering::SeqCst);
        for client in &self.clients {
            let _ = client.try_disconnect();
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        self.report
    }
}

/// The one gateway identity every held connection authenticates as when TLS is on
/// (the broker allows many sessions per identity, each with its own client id): ten
/// thousand certificates would cost the run more than they would tell. Each connection
/// still makes a full TLS handshake with a client certificate and passes the ACL.
pub const IDLE_GATEWAY: &str = "gw-idle-connections";

/// Opens `plan.count` connections to the broker, `plan.concurrency` at a time; client
/// ids carry `run`. Fails at once if an open-files limit is too low for the count;
/// individual connections that fail are counted, not fatal.
pub async fn open(
    mqtt: &fleet_runtime::MqttConfig,
    run: &str,
    plan: &Plan,
) -> anyhow::Result<Held> {
    let broker = broker_pid();
    check_fd_limits(plan.count, broker)?;
    harness::issue_gateway_certs([IDLE_GATEWAY])?;
    let rss_before = procfs::resident_kib(Proc::Me).unwrap_or_default();
    let broker_before = broker.and_then(|pid| procfs::resident_kib(Proc::Pid(pid)));
    let started = Instant::now();
    let attempts: Vec<anyhow::Result<(AsyncClient, EventLoop)>> =
        futures_util::stream::iter(0..plan.count)
            .map(|i| connect(mqtt, format!("{run}-idle-{i:05}"), plan.keep_alive))
            .buffer_unordered(plan.concurrency.max(1))
            .collect()
            .await;
    let establish_s = started.elapsed().as_secs_f64();
    let mut held = Held {
        clients: Vec::with_capacity(plan.count),
        tasks: JoinSet::new(),
        dropped: Arc::default(),
        closing: Arc::default(),
        report: ConnectionsReport {
            requested: plan.count,
            establish_s,
            rss_kib_before: rss_before,
            ..ConnectionsReport::default()
        },
    };
    for attempt in attempts {
        match attempt {
            Ok((client, eventloop)) => {
                held.tasks.spawn(keep_alive(
                    eventloop,
                    Arc::clone(&held.dropped),
                    Arc::clone(&held.closing),
                ));
                held.clients.push(client);
            }
            Err(e) => {
                held.report.failed += 1;
                held.report
                    .first_error
                    .get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    held.report.established = held.clients.len();
    held.report.rss_kib_after = procfs::resident_kib(Proc::Me).unwrap_or_default();
    held.report.broker_rss_kib =
        broker_before.zip(broker.and_then(|pid| procfs::resident_kib(Proc::Pid(pid))));
    Ok(held)
}

/// The local stack's Mosquitto, if its pid file names a live `mosquitto`.
fn broker_pid() -> Option<u32> {
    let pid = harness::mosquitto_pid().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "mosquitto").then_some(pid)
}

/// Whether `count` connections can be opened here and accepted by the local stack's
/// broker, as far as open-files limits go: for a run to check before it starts.
pub fn preflight(count: usize) -> anyhow::Result<()> {
    check_fd_limits(count, broker_pid())
}

/// Every connection is a descriptor here and one at the broker: both limits must leave
/// room for `count` plus [`FD_RESERVE`]. The error names the limit and how to raise it.
fn check_fd_limits(count: usize, broker: Option<u32>) -> anyhow::Result<()> {
    let needed = count as u64 + FD_RESERVE;
    let mine = procfs::open_files_limit(Proc::Me)
        .context("cannot read this process's open-files limit from /proc/self/limits")?;
    anyhow::ensure!(
        mine >= needed,
        "{count} MQTT connections need about {needed} open files, but this process's limit \
         (ulimit -n) is {mine}: raise it with `ulimit -n {needed}` or ask for fewer with \
         --connections"
    );
    let Some(pid) = broker else {
        eprintln!(
            "mqtt connections: broker pid unknown (no stack pid file), its limit is not checked"
        );
        return Ok(());
    };
    let theirs = procfs::open_files_limit(Proc::Pid(pid))
        .with_context(|| format!("cannot read /proc/{pid}/limits of the broker"))?;
    anyhow::ensure!(
        theirs >= needed,
        "{count} MQTT connections need about {needed} open files in the broker, but \
         mosquitto (pid {pid}) may open only {theirs} (its ulimit -n): restart the stack \
         (deploy/local/stack.sh down; up) from a shell whose hard limit allows {needed}, \
         or ask for fewer with --connections"
    );
    Ok(())
}

/// One gateway-like client: connected, its status sent and acknowledged (QoS 1).
async fn connect(
    mqtt: &fleet_runtime::MqttConfig,
    client_id: String,
    keep_alive: Duration,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let mut options = mqtt.options(&client_id, IDLE_GATEWAY)?;
    // One message in flight is all an idle gateway needs; rumqttc sizes its per-
    // connection state by this, which is most of what a held client costs here.
    options
        .set_keep_alive(keep_alive)
        .set_clean_session(true)
        .set_inflight(1);
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    // Queued before the first poll: sent as soon as the broker accepts the connection.
    client.try_publish(
        status_topic(IDLE_GATEWAY),
        QoS::AtLeastOnce,
        false,
        status(IDLE_GATEWAY)?,
    )?;
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .with_context(|| format!("{client_id}: no acknowledged status within {CONNECT_TIMEOUT:?}"))?
    .with_context(|| format!("{client_id}: connecting"))?;
    Ok((client, eventloop))
}

/// A gateway's "online" status. Not retained, unlike a real gateway's: ten thousand
/// retained messages would outlive the run in the broker's persistent store.
fn status(gateway_id: &str) -> anyhow::Result<Vec<u8>> {
    let now = Utc::now();
    Ok(serde_json::to_vec(&GatewayStatus {
        gateway_id: gateway_id.to_owned(),
        online: true,
        outbox_depth: 0,
        dropped_total: 0,
        last_pump_contact_at: Some(now),
        certificate_expires_at: None,
        at: now,
    })?)
}

/// Drives one idle connection (keep-alive pings) until it is closed or lost; a loss
/// before closing began is counted, and not reconnected: a held count must mean the
/// same connections throughout.
async fn keep_alive(mut eventloop: EventLoop, dropped: Arc<AtomicUsize>, closing: Arc<AtomicBool>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(_) => {
                if !closing.load(Ordering::SeqCst) {
                    dropped.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}
