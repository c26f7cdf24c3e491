//! The MQTT link's security against the real local stack (TLS only, a client
//! certificate per gateway, an ACL per gateway; docs/security.md):
//!
//! - a plain MQTT client is refused, and so is a certificate of another CA; the real
//!   gateway counts each in `fleet_gateway_connect_failures_total{reason}` and never
//!   becomes ready;
//! - a gateway given another gateway's certificate refuses to start, naming both; one
//!   with its own exports when that certificate expires;
//! - a gateway holding gateway A's certificate cannot publish under gateway B's topics
//!   (readings, status) nor forge B's acks, nor read B's acks: nothing of it reaches a
//!   subscriber or ingest (`fleet_ingest_readings_total` counts A's readings only),
//!   while A under its own id is delivered end to end.
//!
//! Mosquitto 2.0 answers a denied QoS 1 publish of MQTT 3.1.1 with a normal PUBACK and
//! grants a denied subscription (filtering on delivery), so "denied" is proven here by
//! what never arrives.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleet_core::Reading;
use fleet_core::gateway_protocol::{
    EndToEndAck, ReadingEncoding, acks_topic, readings_topic, status_topic,
};
use fleet_loadtest::harness::{self, Service, StackEnv};
use fleet_runtime::MqttConfig;
use fleet_runtime::mqtt::{INGEST_IDENTITY, OPERATOR_IDENTITY};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::mpsc;

fn suffix() -> String {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

fn tls_env() -> StackEnv {
    let env = StackEnv::from_env().expect("stack endpoints");
    assert!(
        env.mqtt_url.starts_with("mqtts://"),
        "the local stack runs MQTT over TLS only; FLEET_MQTT_URL is {}",
        env.mqtt_url
    );
    env
}

/// A single simulated gateway process (one pump, an hour of history caught up at
/// once) with `vars` added to its environment.
fn gateway(
    dir: &Path,
    name: &str,
    gateway_id: &str,
    vars: &[(&str, String)],
    removed: &[&str],
) -> (Service, u16) {
    let port = harness::free_port().expect("port");
    let mut command = Command::new(harness::binary("fleet-gateway").expect("fleet-gateway builds"));
    command
        .args(["--gateway-id", gateway_id])
        .args(["--state-dir", &dir.join(name).display().to_string()])
        .args(["--history", "2h", "--speedup", "3600"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
    for name in removed {
        command.env_remove(name);
    }
    for (k, v) in vars {
        command.env(k, v);
    }
    let service = Service::spawn(
        "fleet-gateway",
        &mut command,
        &dir.join(format!("{name}.log")),
    )
    .expect("gateway starts");
    (service, port)
}

/// Waits until `name` (a full series, labels included) reaches at least `at_least`.
async fn wait_metric(port: u16, name: &str, at_least: f64, timeout: Duration) -> f64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let value = harness::metric(port, name).await.unwrap_or(0.0);
        if value >= at_least || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_plain_client_and_a_certificate_of_another_ca_are_refused_and_counted() {
    let env = tls_env();
    let dir = tempfile::tempdir().expect("tmp");
    let id = format!("gw-sec-conn-{}", suffix());
    harness::issue_gateway_certs([&id]).expect("certificate");
    let plain_url = env.mqtt_url.replacen("mqtts://", "mqtt://", 1);
    let tls_vars = [
        "FLEET_MQTT_CA_FILE",
        "FLEET_MQTT_CERT_FILE",
        "FLEET_MQTT_KEY_FILE",
        "FLEET_MQTT_CERT_DIR",
    ];

    // Plain MQTT at the TLS-only listener.
    let (mut plain, plain_port) = gateway(
        dir.path(),
        "plain",
        &id,
        &[("FLEET_MQTT_URL", plain_url)],
        &tls_vars,
    );
    // The right broker, but a certificate (of the same gateway id) from another CA.
    let rogue = dir.path().join("rogue-ca");
    fleetctl::certs::make(&fleetctl::certs::CertsPlan {
        out: rogue.clone(),
        gateways: vec![id.clone()],
        ..Default::default()
    })
    .expect("another CA");
    let (mut unknown, unknown_port) = gateway(
        dir.path(),
        "unknown-ca",
        &id,
        &[(
            "FLEET_MQTT_CERT_DIR",
            fleetctl::certs::clients_dir(&rogue).display().to_string(),
        )],
        &[],
    );
    // A gateway that does not trust the broker (its CA file is another CA's).
    let (mut distrust, distrust_port) = gateway(
        dir.path(),
        "distrust",
        &id,
        &[(
            "FLEET_MQTT_CA_FILE",
            rogue.join("ca.crt").display().to_string(),
        )],
        &[],
    );

    let timeout = Duration::from_secs(30);
    let started = std::time::Instant::now();
    let closed = wait_metric(
        plain_port,
        r#"fleet_gateway_connect_failures_total{reason="closed"}"#,
        1.0,
        timeout,
    )
    .await;
    let refused_cert = wait_metric(
        unknown_port,
        r#"fleet_gateway_connect_failures_total{reason="tls"}"#,
        1.0,
        timeout,
    )
    .await;
    let untrusted_broker = wait_metric(
        distrust_port,
        r#"fleet_gateway_connect_failures_total{reason="tls"}"#,
        1.0,
        timeout,
    )
    .await;
    eprintln!("refusals counted after {:?}", started.elapsed());
    for (what, value, name) in [
        ("plain MQTT", closed, "plain"),
        ("a certificate of another CA", refused_cert, "unknown-ca"),
        (
            "a broker outside the gateway's CA",
            untrusted_broker,
            "distrust",
        ),
    ] {
        assert!(
            value >= 1.0,
            "{what}: no refusal counted\n{}",
            log(dir.path(), name)
        );
    }
    for (port, name) in [
        (plain_port, "plain"),
        (unknown_port, "unknown-ca"),
        (distrust_port, "distrust"),
    ] {
        assert_eq!(
            harness::metric(port, "fleet_gateway_mqtt_connected_gateways").await,
            Some(0.0),
            "{name} must never be connected\n{}",
            log(dir.path(), name)
        );
        let readyz = harness::http_get(port, "/readyz").await.unwrap_or_default();
        assert!(!readyz.starts_with("HTTP/1.0 200"), "{name} is not ready");
    }
    // The log line says why, without key material.
    let unknown_log = log(dir.path(), "unknown-ca");
    assert!(
        unknown_log.contains("mqtt connection attempt failed") && unknown_log.contains("UnknownCA"),
        "{unknown_log}"
    );
    assert!(!unknown_log.contains("PRIVATE KEY"));

    // A certificate of the stack's own CA, but issued to another gateway: the broker
    // would let it in as that gateway and drop everything it publishes, so the gateway
    // refuses to start, naming both ids, instead of running deaf.
    let other = format!("{id}-other");
    harness::issue_gateway_certs([&other]).expect("certificate");
    let clients = std::env::var("FLEET_MQTT_CERT_DIR").expect("the stack's client certificates");
    let (mut borrowed, _) = gateway(
        dir.path(),
        "borrowed",
        &id,
        &[
            ("FLEET_MQTT_CERT_FILE", format!("{clients}/{other}.crt")),
            ("FLEET_MQTT_KEY_FILE", format!("{clients}/{other}.key")),
        ],
        &[],
    );
    let exit = borrowed.wait_exit(timeout).expect("refuses to start");
    let borrowed_log = log(dir.path(), "borrowed");
    assert!(!exit.success(), "{borrowed_log}");
    assert!(
        borrowed_log.contains(&format!("is issued to \"{other}\", not to \"{id}\"")),
        "{borrowed_log}"
    );

    // Control: the same gateway with its own certificate from the stack's CA connects,
    // and reports when that certificate (or the CA) expires.
    let (mut good, good_port) = gateway(dir.path(), "good", &id, &[], &[]);
    harness::wait_ready(good_port, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log(dir.path(), "good")));
    eprintln!("control connected after {:?}", started.elapsed());
    let expiry = harness::metric(
        good_port,
        "fleet_gateway_mqtt_certificate_expiry_timestamp_seconds",
    )
    .await
    .unwrap_or(0.0);
    let days_left = (expiry - chrono::Utc::now().timestamp() as f64) / 86_400.0;
    let issued_for = fleetctl::certs::LEAF_DAYS.min(fleetctl::certs::CA_DAYS) as f64;
    assert!(
        (days_left - issued_for).abs() <= 2.0,
        "certificate expiry {expiry}: {days_left:.1} days left, issued for {issued_for}"
    );
    for service in [&mut plain, &mut unknown, &mut distrust, &mut good] {
        let _ = service.terminate(Duration::from_secs(10));
    }
    eprintln!("stopped after {:?}", started.elapsed());
}

/// An in-process client: every message it receives goes to the returned channel.
async fn client(
    mqtt: &MqttConfig,
    client_id: &str,
    identity: &str,
    subscribe: &[String],
) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let options = mqtt.options(client_id, identity).expect("options");
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel();
    let wanted = subscribe.len();
    for topic in subscribe {
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    let identity = identity.to_owned();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{identity}: mqtt error: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    for _ in 0..wanted {
        tokio::time::timeout(Duration::from_secs(20), subscribed.recv())
            .await
            .expect("subscribed in time");
    }
    (client, rx)
}

fn drain(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    while let Ok(m) = rx.try_recv() {
        got.push(m);
    }
    got
}

/// Readings of one pump relayed by `gateway_id`.
fn readings_of(gateway_id: &str, pump: usize, count: usize) -> Vec<Reading> {
    let all = harness::healthy_fleet(pump + 1, count);
    let pump_id = all[pump].pump_id.clone();
    all.into_iter()
        .filter(|r| r.pump_id == pump_id)
        .map(|mut r| {
            r.gateway_id = gateway_id.to_owned();
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_gateway_can_neither_publish_nor_read_under_another_gateways_topics() {
    let env = tls_env();
    let mqtt = env.mqtt();
    let dir = tempfile::tempdir().expect("tmp");
    let run = suffix();
    let (a, b) = (format!("gw-sec-a-{run}"), format!("gw-sec-b-{run}"));
    harness::issue_gateway_certs([&a, &b]).expect("certificates");

    // Who sees what: the operator watches everything of B; B and A listen for acks.
    let (_operator, mut watched) = client(
        &mqtt,
        &format!("sec-operator-{run}"),
        OPERATOR_IDENTITY,
        &[format!("fleet/v1/{b}/#")],
    )
    .await;
    let (_b_client, mut b_acks) =
        client(&mqtt, &format!("sec-b-{run}"), &b, &[acks_topic(&b)]).await;
    // A asks for B's acks: Mosquitto grants the subscription and delivers nothing.
    let (a_client, mut a_sees) = client(
        &mqtt,
        &format!("sec-a-{run}"),
        &a,
        &[acks_topic(&b), acks_topic(&a)],
    )
    .await;

    // A, with its own certificate, publishes as B: a reading, a status, a forged ack.
    let forged_reading = &readings_of(&b, 0, 2)[0];
    let forged_ack = serde_json::to_vec(&EndToEndAck::default()).expect("ack");
    for (topic, payload) in [
        (
            readings_topic(&b, ReadingEncoding::Protobuf),
            fleet_core::protobuf::encode_reading(forged_reading),
        ),
        (status_topic(&b), b"{\"online\":false}".to_vec()),
        (acks_topic(&b), forged_ack.clone()),
    ] {
        a_client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("queued");
    }
    // Ingest's identity writes B's acks: B gets it, A (subscribed to it) does not.
    let (ingest_client, _) = client(&mqtt, &format!("sec-acker-{run}"), INGEST_IDENTITY, &[]).await;
    let real_ack = serde_json::to_vec(&EndToEndAck {
        acks: BTreeMap::from([("ITP40-SEC".to_owned(), 7)]),
        ..EndToEndAck::default()
    })
    .expect("ack");
    ingest_client
        .publish(acks_topic(&b), QoS::AtLeastOnce, false, real_ack.clone())
        .await
        .expect("queued");
    // A under its own topics, last: once the operator-side of that arrives at A's
    // side, everything published before it has been routed.
    ingest_client
        .publish(acks_topic(&a), QoS::AtLeastOnce, false, real_ack.clone())
        .await
        .expect("queued");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut a_got = Vec::new();
    while !a_got.iter().any(|(t, _)| *t == acks_topic(&a)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, a_sees.recv()).await {
            Ok(Some(m)) => a_got.push(m),
            _ => panic!("A's own ack never arrived: {a_got:?}"),
        }
    }
    let b_got = tokio::time::timeout(Duration::from_secs(20), b_acks.recv())
        .await
        .expect("B's ack in time")
        .expect("B's ack");
    // A moment for anything wrongly routed to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a_got.extend(drain(&mut a_sees));
    let mut b_all = vec![b_got];
    b_all.extend(drain(&mut b_acks));
    assert!(
        a_got.iter().all(|(t, _)| *t == acks_topic(&a)),
        "A read another gateway's acks: {a_got:?}"
    );
    assert_eq!(
        b_all,
        vec![(acks_topic(&b), real_ack.clone())],
        "B got exactly ingest's ack, not A's forgery"
    );
    let seen: Vec<String> = drain(&mut watched).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        seen,
        vec![acks_topic(&b)],
        "of B's topics only ingest's ack was routed; A's reading, status and ack were denied"
    );

    // The real services: ingest and the honest gateway A, while A's certificate, in
    // another MQTT client, publishes B's readings under B's topic (a stolen or
    // misissued certificate: our own gateway refuses to start with a certificate that
    // is not its own, tested above, but an attacker brings their own client).
    let readings_a = readings_of(&a, 0, 6);
    let readings_b = readings_of(&b, 1, 6);
    let all: Vec<Reading> = readings_a.iter().chain(&readings_b).cloned().collect();
    let registry = dir.path().join("registry.toml");
    harness::write_registry(&all, &registry).expect("registry");
    let topic_suffix = format!("sec-{run}");
    let ingest_port = harness::free_port().expect("port");
    let mut ingest = Service::spawn(
        "fleet-ingest",
        Command::new(harness::binary("fleet-ingest").expect("fleet-ingest builds"))
            .args(["--registry-file", &registry.display().to_string()])
            .args(["--client-id", &format!("sec-ingest-{run}")])
            .args(["--topic-suffix", &topic_suffix])
            .args(["--metrics-addr", &format!("127.0.0.1:{ingest_port}")]),
        &dir.path().join("ingest.log"),
    )
    .expect("ingest starts");
    harness::wait_ready(ingest_port, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log(dir.path(), "ingest")));
    for reading in &readings_b {
        a_client
            .publish(
                readings_topic(&b, ReadingEncoding::Protobuf),
                QoS::AtLeastOnce,
                false,
                fleet_core::protobuf::encode_reading(reading),
            )
            .await
            .expect("queued");
    }

    let replay_a = dir.path().join("a");
    std::fs::create_dir_all(&replay_a).expect("dir");
    let replay_a = harness::write_replay(&replay_a, &readings_a).expect("replay");
    let honest_port = harness::free_port().expect("port");
    let mut honest = Service::spawn(
        "fleet-gateway",
        Command::new(harness::binary("fleet-gateway").expect("fleet-gateway builds"))
            .args(["--fleet", "--exit-when-drained"])
            .args(["--replay", &replay_a.display().to_string()])
            .args([
                "--state-dir",
                &dir.path().join("honest").display().to_string(),
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{honest_port}")]),
        &dir.path().join("honest.log"),
    )
    .expect("honest gateway starts");
    let status = honest
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", log(dir.path(), "honest")));
    assert!(
        status.success(),
        "A drained: every reading acknowledged end to end"
    );

    let ingested = harness::metric(ingest_port, "fleet_ingest_readings_total")
        .await
        .expect("ingest metrics");
    let dead = harness::metric_sum(ingest_port, "fleet_ingest_dead_letters_total")
        .await
        .expect("ingest metrics");
    assert_eq!(
        (ingested, dead),
        (readings_a.len() as f64, 0.0),
        "ingest got exactly A's readings; none of the forger's\n{}",
        log(dir.path(), "ingest")
    );
    // Certificates seen from the cloud: ingest's own, and the first any gateway
    // reports in its status (A's, at least; rescanned every 10 s). None of the stack's
    // is near its end, so none counts as expiring.
    let now = chrono::Utc::now().timestamp() as f64;
    let month = 30.0 * 86_400.0;
    let own = harness::metric(
        ingest_port,
        "fleet_ingest_mqtt_certificate_expiry_timestamp_seconds",
    )
    .await
    .unwrap_or(0.0);
    assert!(own > now + month, "ingest's certificate expiry {own}");
    let fleet_first = wait_metric(
        ingest_port,
        "fleet_ingest_gateway_certificate_earliest_expiry_timestamp_seconds",
        now + month,
        Duration::from_secs(15),
    )
    .await;
    assert!(
        fleet_first > now + month,
        "the gateways' first certificate expiry {fleet_first}\n{}",
        log(dir.path(), "ingest")
    );
    assert_eq!(
        harness::metric(ingest_port, "fleet_ingest_gateway_certificates_expiring").await,
        Some(0.0)
    );
    let watched_now: Vec<String> = drain(&mut watched).into_iter().map(|(t, _)| t).collect();
    assert!(
        watched_now.is_empty(),
        "nothing of the forger reached B's topics: {watched_now:?}"
    );
    let _ = ingest.terminate(Duration::from_secs(15));
}
