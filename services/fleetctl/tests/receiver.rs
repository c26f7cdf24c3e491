//! `fleetctl receiver`, in-process on a free port, paged with the generated tonic client;
//! and once as the real binary, for the flags, `listening on ADDR` and SIGTERM.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use fleet_core::protobuf::{PageHeader, notification};
use fleet_core::signing::{SIGNATURE_METADATA_KEY, sign};
use fleet_core::{AlarmEvent, AlarmKind, AlarmPriority, AlarmState, Evidence};
use fleet_proto::clinic::v1::AlarmNotification;
use fleet_proto::clinic::v1::alarm_receiver_client::AlarmReceiverClient;
use fleet_proto::prost::Message;
use fleetctl::receiver::{Receiver, ReceiverConfig, Secret};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

const SECRET: &str = "clinic-001 shared secret";
const CLINIC: &str = "clinic-001";

fn alarm(alarm_id: &str, revision: u32) -> AlarmEvent {
    AlarmEvent {
        alarm_id: alarm_id.to_owned(),
        revision,
        pump_id: "ITP40-100002".to_owned(),
        kind: AlarmKind::Occlusion,
        priority: AlarmPriority::High,
        state: AlarmState::Raised,
        detected_at: Utc.with_ymd_and_hms(2026, 1, 4, 23, 58, 19).unwrap(),
        onset_at: Some(Utc.with_ymd_and_hms(2026, 1, 4, 20, 0, 0).unwrap()),
        message: "Catheter pressure rising for 6 h; therapy may have stopped.".to_owned(),
        evidence: [
            ("catheter_pressure_kpa".to_owned(), Evidence::Number(41.5)),
            ("drug".to_owned(), Evidence::from("BACLOFEN")),
        ]
        .into(),
    }
}

fn page(alarm_id: &str, revision: u32, attempt: u32, escalation: u32) -> AlarmNotification {
    page_for(CLINIC, alarm_id, revision, attempt, escalation)
}

fn page_for(
    clinic_id: &str,
    alarm_id: &str,
    revision: u32,
    attempt: u32,
    escalation: u32,
) -> AlarmNotification {
    notification(
        &alarm(alarm_id, revision),
        PageHeader {
            clinic_id,
            delivery_attempt: attempt,
            escalation,
        },
    )
}

/// The request as the notifier sends it: signed over the page's protobuf bytes.
fn signed_with(secret: &str, page: AlarmNotification) -> Request<AlarmNotification> {
    let signature = sign(secret.as_bytes(), &page.encode_to_vec());
    let mut request = Request::new(page);
    request.metadata_mut().insert(
        SIGNATURE_METADATA_KEY,
        signature.parse().expect("ascii signature"),
    );
    request
}

fn signed(page: AlarmNotification) -> Request<AlarmNotification> {
    signed_with(SECRET, page)
}

fn config(out: &Path) -> ReceiverConfig {
    ReceiverConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        out: out.to_owned(),
        secret: Secret::new(SECRET).expect("a non-empty secret"),
        clinic_id: None,
        delay: Duration::ZERO,
        tls: None,
    }
}

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(config: ReceiverConfig) -> Running {
        let receiver = Receiver::bind(config).await.expect("receiver starts");
        let addr = receiver.local_addr();
        assert_ne!(addr.port(), 0, "the bound port, not the requested 0");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(receiver.run(shutdown.clone()));
        Running {
            addr,
            shutdown,
            task,
        }
    }

    async fn client(&self) -> AlarmReceiverClient<Channel> {
        AlarmReceiverClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connects")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("stops promptly")
            .expect("task not panicked")
            .expect("served without error");
    }
}

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("out file exists");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "every record ends its line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn out_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pages.jsonl");
    (dir, path)
}

#[tokio::test]
async fn records_a_page_once_and_each_escalation_as_a_new_page() {
    let (_dir, out) = out_file();
    let receiver = Running::start(config(&out)).await;
    let mut client = receiver.client().await;
    let before = Utc::now();

    let receipt = client
        .deliver(signed(page("alarm-7", 1, 1, 0)))
        .await
        .expect("accepted")
        .into_inner();
    assert!(receipt.accepted);
    assert_eq!(receipt.receipt_id, "rcpt-alarm-7#1#0");

    let recorded = lines(&out);
    assert_eq!(recorded.len(), 1);
    let line = &recorded[0];
    let fields: BTreeSet<&str> = line
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "alarm_id",
            "revision",
            "pump_id",
            "kind",
            "priority",
            "state",
            "detected_at",
            "onset_at",
            "message",
            "evidence",
            "clinic_id",
            "delivery_attempt",
            "escalation",
            "received_at",
            "receipt_id",
        ])
    );
    assert_eq!(line["alarm_id"], "alarm-7");
    assert_eq!(line["revision"], 1);
    assert_eq!(line["pump_id"], "ITP40-100002");
    assert_eq!(line["kind"], "OCCLUSION");
    assert_eq!(line["priority"], "HIGH");
    assert_eq!(line["state"], "RAISED");
    assert_eq!(line["detected_at"], "2026-01-04T23:58:19Z");
    assert_eq!(line["onset_at"], "2026-01-04T20:00:00Z");
    assert_eq!(
        line["message"],
        "Catheter pressure rising for 6 h; therapy may have stopped."
    );
    assert_eq!(line["evidence"]["catheter_pressure_kpa"], 41.5);
    assert_eq!(line["evidence"]["drug"], "BACLOFEN");
    assert_eq!(line["clinic_id"], CLINIC);
    assert_eq!(line["delivery_attempt"], 1);
    assert_eq!(line["escalation"], 0);
    assert_eq!(line["receipt_id"], "rcpt-alarm-7#1#0");
    let received_at = DateTime::parse_from_rfc3339(line["received_at"].as_str().expect("text"))
        .expect("RFC 3339");
    // Millisecond precision, so compare against the truncated start time.
    assert!(received_at >= before - chrono::Duration::milliseconds(1));
    assert!(received_at <= Utc::now());

    // A retry of the same page: the first receipt again, nothing written.
    let retry = client
        .deliver(signed(page("alarm-7", 1, 2, 0)))
        .await
        .expect("accepted")
        .into_inner();
    assert!(retry.accepted);
    assert_eq!(retry.receipt_id, receipt.receipt_id);
    assert_eq!(lines(&out), recorded, "a duplicate is not written again");

    // The first escalation of the same event is a new page, not a duplicate.
    let escalation = client
        .deliver(signed(page("alarm-7", 1, 1, 1)))
        .await
        .expect("accepted")
        .into_inner();
    assert!(escalation.accepted);
    assert_eq!(escalation.receipt_id, "rcpt-alarm-7#1#1");
    // So is the next revision of the episode.
    let revision = client
        .deliver(signed(page("alarm-7", 2, 1, 0)))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(revision.receipt_id, "rcpt-alarm-7#2#0");

    let recorded = lines(&out);
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[1]["escalation"], 1);
    assert_eq!(recorded[1]["receipt_id"], "rcpt-alarm-7#1#1");
    assert_eq!(recorded[2]["revision"], 2);
    receiver.stop().await;
}

#[tokio::test]
async fn refuses_unsigned_wrongly_signed_and_altered_pages_without_writing() {
    let (_dir, out) = out_file();
    let receiver = Running::start(config(&out)).await;
    let mut client = receiver.client().await;

    let unsigned = client
        .deliver(Request::new(page("alarm-1", 1, 1, 0)))
        .await
        .expect_err("refused");
    assert_eq!(unsigned.code(), Code::Unauthenticated, "{unsigned:?}");
    assert!(
        unsigned.message().contains("x-fleet-signature"),
        "{unsigned:?}"
    );

    let wrong_secret = client
        .deliver(signed_with(
            "another clinic's secret",
            page("alarm-1", 1, 1, 0),
        ))
        .await
        .expect_err("refused");
    assert_eq!(
        wrong_secret.code(),
        Code::Unauthenticated,
        "{wrong_secret:?}"
    );

    // Signed correctly, then changed on the way: the signature covers the content.
    let mut altered = signed(page("alarm-1", 1, 1, 0));
    altered.get_mut().priority = fleet_proto::alarm::v1::AlarmPriority::Low as i32;
    let altered = client.deliver(altered).await.expect_err("refused");
    assert_eq!(altered.code(), Code::Unauthenticated, "{altered:?}");

    let mut garbage = Request::new(page("alarm-1", 1, 1, 0));
    garbage
        .metadata_mut()
        .insert(SIGNATURE_METADATA_KEY, "v1=nothex".parse().expect("ascii"));
    let garbage = client.deliver(garbage).await.expect_err("refused");
    assert_eq!(garbage.code(), Code::Unauthenticated, "{garbage:?}");

    assert!(lines(&out).is_empty(), "no unverified page is written");

    // The same page, properly signed, is recorded: the refusals were the signature's.
    let receipt = client
        .deliver(signed(page("alarm-1", 1, 1, 0)))
        .await
        .expect("accepted");
    assert!(receipt.into_inner().accepted);
    assert_eq!(lines(&out).len(), 1);
    receiver.stop().await;
}

#[tokio::test]
async fn refuses_a_page_addressed_to_another_clinic() {
    let (_dir, out) = out_file();
    let receiver = Running::start(ReceiverConfig {
        clinic_id: Some(CLINIC.to_owned()),
        ..config(&out)
    })
    .await;
    let mut client = receiver.client().await;

    let misrouted = client
        .deliver(signed(page_for("clinic-002", "alarm-1", 1, 1, 0)))
        .await
        .expect_err("refused");
    assert_eq!(misrouted.code(), Code::InvalidArgument, "{misrouted:?}");
    assert!(misrouted.message().contains("misrouted"), "{misrouted:?}");
    assert!(misrouted.message().contains("clinic-002"), "{misrouted:?}");
    assert!(lines(&out).is_empty());

    let ours = client
        .deliver(signed(page_for(CLINIC, "alarm-1", 1, 1, 0)))
        .await
        .expect("accepted");
    assert!(ours.into_inner().accepted);
    assert_eq!(lines(&out).len(), 1);
    receiver.stop().await;
}

#[tokio::test]
async fn refuses_a_page_that_is_not_a_valid_alarm_event() {
    let (_dir, out) = out_file();
    let receiver = Running::start(config(&out)).await;
    let mut client = receiver.client().await;

    let mut no_kind = page("alarm-1", 1, 1, 0);
    no_kind.kind = 0;
    let status = client.deliver(signed(no_kind)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("kind"), "{status:?}");

    let status = client
        .deliver(signed(page("", 1, 1, 0)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("alarm_id"), "{status:?}");

    assert!(lines(&out).is_empty());
    receiver.stop().await;
}

#[tokio::test]
async fn deduplication_survives_a_restart() {
    let (_dir, out) = out_file();
    let first = Running::start(config(&out)).await;
    let receipt = first
        .client()
        .await
        .deliver(signed(page("alarm-3", 4, 1, 2)))
        .await
        .expect("accepted")
        .into_inner();
    first.stop().await;
    let before_restart = lines(&out);
    assert_eq!(before_restart.len(), 1);

    let second = Running::start(config(&out)).await;
    let mut client = second.client().await;
    let again = client
        .deliver(signed(page("alarm-3", 4, 3, 2)))
        .await
        .expect("accepted")
        .into_inner();
    assert!(again.accepted);
    assert_eq!(again.receipt_id, receipt.receipt_id);
    assert_eq!(
        lines(&out),
        before_restart,
        "recognised as a duplicate after the restart"
    );

    // And the restarted receiver still records new pages, after the old ones.
    client
        .deliver(signed(page("alarm-3", 5, 1, 0)))
        .await
        .expect("accepted");
    let after = lines(&out);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], before_restart[0]);
    assert_eq!(after[1]["revision"], 5);
    second.stop().await;

    // The library reads the same file back as typed records.
    let pages = fleetctl::receiver::read_pages(&out).expect("readable");
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].alarm, alarm("alarm-3", 4));
    assert_eq!(pages[0].escalation, 2);
}

#[tokio::test]
async fn refuses_to_start_over_an_out_file_it_cannot_read_back() {
    let (_dir, out) = out_file();
    let receiver = Running::start(config(&out)).await;
    receiver
        .client()
        .await
        .deliver(signed(page("alarm-1", 1, 1, 0)))
        .await
        .expect("accepted");
    receiver.stop().await;
    let mut text = std::fs::read_to_string(&out).expect("out file");
    text.push_str("{\"alarm_id\": \"alarm-2\", truncated\n");
    std::fs::write(&out, text).expect("written");

    let error = Receiver::bind(config(&out)).await.expect_err("refuses");
    let message = format!("{error:#}");
    assert!(message.contains("pages.jsonl line 2:"), "{message}");
}

#[tokio::test]
async fn concurrent_deliveries_record_each_page_exactly_once() {
    let (_dir, out) = out_file();
    let receiver = Running::start(config(&out)).await;
    let client = receiver.client().await;
    let mut calls = Vec::new();
    for attempt in 1..=8 {
        for alarm_id in ["alarm-a", "alarm-b", "alarm-c"] {
            let mut client = client.clone();
            calls.push(tokio::spawn(async move {
                client
                    .deliver(signed(page(alarm_id, 1, attempt, 0)))
                    .await
                    .expect("accepted")
                    .into_inner()
                    .receipt_id
            }));
        }
    }
    let mut receipts = BTreeSet::new();
    for call in calls {
        receipts.insert(call.await.expect("call task"));
    }
    assert_eq!(
        receipts,
        BTreeSet::from([
            "rcpt-alarm-a#1#0".to_owned(),
            "rcpt-alarm-b#1#0".to_owned(),
            "rcpt-alarm-c#1#0".to_owned(),
        ])
    );
    let mut recorded: Vec<String> = lines(&out)
        .iter()
        .map(|l| l["alarm_id"].as_str().expect("text").to_owned())
        .collect();
    recorded.sort();
    assert_eq!(recorded, ["alarm-a", "alarm-b", "alarm-c"]);
    receiver.stop().await;
}

#[tokio::test]
async fn a_slow_receiver_outlasts_the_callers_deadline_and_the_retry_is_a_duplicate() {
    let (_dir, out) = out_file();
    let delay = Duration::from_millis(600);
    let receiver = Running::start(ReceiverConfig {
        delay,
        ..config(&out)
    })
    .await;
    let mut client = receiver.client().await;

    let mut request = signed(page("alarm-9", 1, 1, 0));
    request.set_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let status = client.deliver(request).await.expect_err("deadline expires");
    let waited = started.elapsed();
    assert!(
        is_deadline_expiry(&status),
        "expected the deadline to expire, got {status:?}"
    );
    assert!(
        waited < delay,
        "the caller gave up at its deadline ({waited:?}), not after the delay"
    );

    // The receiver recorded the page before its slow answer: the caller lost only the
    // receipt, and its retry (with enough time) is answered as a duplicate.
    let mut retry = signed(page("alarm-9", 1, 2, 0));
    retry.set_timeout(Duration::from_secs(5));
    let receipt = client.deliver(retry).await.expect("accepted").into_inner();
    assert!(receipt.accepted);
    assert_eq!(receipt.receipt_id, "rcpt-alarm-9#1#0");
    let recorded = lines(&out);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["delivery_attempt"], 1);
    receiver.stop().await;
}

/// How a tonic caller sees its own deadline expire. gRPC names it DEADLINE_EXCEEDED;
/// tonic 0.14's timeout layer (client and server side) reports it as CANCELLED with
/// "Timeout expired", so a caller (the notifier) must treat both as a timeout.
fn is_deadline_expiry(status: &tonic::Status) -> bool {
    match status.code() {
        Code::DeadlineExceeded => true,
        Code::Cancelled => status.message().contains("Timeout expired"),
        _ => false,
    }
}

// Multi-threaded: the client's connection must keep answering (the server's GOAWAY and
// PING on graceful shutdown) while this test waits for the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_its_address_serves_and_stops_on_sigterm() {
    let (_dir, out) = out_file();
    let child = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["receiver", "--listen", "127.0.0.1:0", "--clinic-id", CLINIC])
        .arg("--out")
        .arg(&out)
        .env("FLEET_RECEIVER_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut child = KillOnDrop(Some(child));
    let mut stderr = BufReader::new(child.get().stderr.take().expect("piped"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("reads stderr");
    let addr = first
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first stderr line: {first:?}"));
    let addr: SocketAddr = addr.parse().expect("an address");
    assert_ne!(addr.port(), 0);
    // Keep draining stderr, so the receiver's logging never blocks on a full pipe.
    let logs = std::thread::spawn(move || {
        let mut rest = String::new();
        for line in stderr.lines() {
            rest.push_str(&line.unwrap_or_default());
            rest.push('\n');
        }
        rest
    });

    let mut client = AlarmReceiverClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let receipt = client
        .deliver(signed(page("alarm-5", 1, 1, 0)))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(receipt.receipt_id, "rcpt-alarm-5#1#0");
    let refused = client
        .deliver(signed_with("wrong", page("alarm-5", 1, 1, 0)))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(lines(&out).len(), 1);
    drop(client);

    let killed = Command::new("kill")
        .args(["-TERM", &child.get().id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut child = child.0.take().expect("child");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait task")
        .expect("exits");
    let logs = logs.join().expect("log reader");
    assert!(status.success(), "exit {status:?}; stderr:\n{logs}");
    assert!(
        logs.contains("page refused"),
        "refusals are logged:\n{logs}"
    );
}

/// A failing assertion must not leave a receiver running behind the test.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("child")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_binary_requires_a_secret() {
    let (_dir, out) = out_file();
    let output = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["receiver", "--out"])
        .arg(&out)
        .env_remove("FLEET_RECEIVER_SECRET")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--secret"), "{stderr}");
    assert!(!out.exists(), "nothing created without a secret");
}
