//! No secret in the logs: the real `fleet-api` binary at `RUST_LOG=trace`, called with
//! right and wrong tokens over both transports (logins, reads, refusals, rate limits),
//! must never write a token or the database password to its stdout or stderr. Nor may
//! `--help`, nor a start against a database that refuses the password.
//!
//! The local stack's role has the password `fleet`, which is also its name and half
//! the schema's words, so for the running server the test looks for the password in
//! the forms it would take in a leak (`fleet:fleet@`, the whole URL, a `password`
//! field); where no connection is needed (`--help`, a refused password) it uses a
//! password of its own that appears nowhere else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_proto::api::v1 as pb;
use fleet_proto::api::v1::fleet_api_client::FleetApiClient;
use fleet_store::access::{self, Role};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-api");

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("no-secrets-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Starts fleet-api with `env`, its stdout and stderr into files in `dir`.
fn start(dir: &Path, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(BIN);
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .env_remove("FLEET_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"));
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("fleet-api starts")
}

/// Everything the process wrote, both streams.
fn output(dir: &Path) -> String {
    ["stdout", "stderr"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_for(dir: &Path, what: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = output(dir);
        if out.contains(what) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "fleet-api never logged {what:?}:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then the exit (SIGKILL if it lingers).
async fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `host:port` of `key=` in the startup line.
fn logged_addr(out: &str, key: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.contains("fleet API serving"))
        .expect("startup line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_owned()
}

fn password_of(url: &str) -> String {
    let rest = url.split_once("://").expect("scheme").1;
    let userinfo = rest.split_once('@').expect("user info").0;
    userinfo.split_once(':').expect("password").1.to_owned()
}

fn assert_absent(out: &str, secret: &str, what: &str) {
    assert!(!secret.is_empty());
    if let Some(at) = out.find(secret) {
        let from = out[..at].rfind('\n').map_or(0, |i| i + 1);
        let to = out[at..].find('\n').map_or(out.len(), |i| at + i);
        panic!("{what} leaked into the logs: {}", &out[from..to]);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn tokens_and_the_database_password_never_reach_the_logs_even_at_trace() {
    let base = std::env::var("FLEET_DATABASE_URL")
        .expect("FLEET_DATABASE_URL is not set: scripts/test.sh starts the stack");
    let url = fleet_store::testing::fresh_database(&base, "api_logs")
        .await
        .expect("a database of our own");
    let pool = fleet_store::connect(&url).await.expect("connect");
    sqlx::raw_sql(
        "INSERT INTO clinic (id, name, webhook, escalation_after_ms) VALUES
           ('clinic-a', 'A', 'http://127.0.0.1:1', 60000);
         INSERT INTO pump (pump_id, gateway_id, clinic_id) VALUES
           ('ITP40-100001', 'gw-1', 'clinic-a');",
    )
    .execute(&pool)
    .await
    .expect("registry");
    let nurse = access::add_user(&pool, "nurse-a", &Role::Clinic("clinic-a".into()))
        .await
        .expect("user");
    let maker = access::add_user(&pool, "surveillance", &Role::Manufacturer)
        .await
        .expect("user");
    let wrong: Vec<String> = (0..6)
        .map(|i| format!("fleet_WrongTokenThatMustNotBeLogged{i}xYz"))
        .collect();

    let dir = scratch("trace");
    let child = start(
        &dir,
        &[
            ("RUST_LOG", "trace"),
            ("FLEET_DATABASE_URL", &url),
            // Small enough for the test to reach it, so refusals are logged too.
            ("FLEET_API_AUTH_FAILURE_BURST", "3"),
        ],
    );
    let out = wait_for(&dir, "fleet API serving", Duration::from_secs(60)).await;
    let http = format!("http://{}", logged_addr(&out, "http"));
    let grpc_addr = format!("http://{}", logged_addr(&out, "grpc"));

    let client = reqwest::Client::new();
    let get = |token: &str, path: &str| {
        client
            .get(format!("{http}{path}"))
            .bearer_auth(token)
            .send()
    };
    for (token, expect) in [(&nurse, 200), (&maker, 200), (&wrong[0], 401)] {
        let status = client
            .post(format!("{http}/api/v1/login"))
            .json(&json!({"token": token}))
            .send()
            .await
            .expect("answered")
            .status();
        assert_eq!(status.as_u16(), expect);
        let status = get(token, "/api/v1/alarms")
            .await
            .expect("answered")
            .status();
        assert_eq!(status.as_u16(), expect);
    }
    assert_eq!(
        get(&nurse, "/api/v1/pumps/ITP40-100001/timeline?from=x")
            .await
            .expect("answered")
            .status()
            .as_u16(),
        400
    );
    let mut grpc = FleetApiClient::connect(grpc_addr).await.expect("gRPC");
    let with = |token: &str| {
        let mut r = tonic::Request::new(pb::ListPumpsRequest {});
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
        r
    };
    grpc.list_pumps(with(&nurse)).await.expect("served");
    grpc.list_pumps(with(&maker)).await.expect("served");
    assert_eq!(
        grpc.list_pumps(with(&wrong[1]))
            .await
            .expect_err("refused")
            .code(),
        tonic::Code::Unauthenticated
    );
    // Over the failure limit (3 at once): refused, and the refusal logged by address.
    for token in &wrong[2..] {
        let _ = get(token, "/api/v1/alarms").await.expect("answered");
    }
    assert_eq!(
        get(&nurse, "/api/v1/alarms")
            .await
            .expect("answered")
            .status()
            .as_u16(),
        429
    );
    wait_for(
        &dir,
        "too many failed authentications from this address",
        Duration::from_secs(30),
    )
    .await;
    stop(child).await;

    let out = output(&dir);
    assert!(
        out.contains("TRACE"),
        "the test needs trace-level logs to mean anything:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("WARN") && l.contains("address=127.0.0.1")),
        "the refusal is logged with the address:\n{out}"
    );
    for token in [&nurse, &maker].into_iter().chain(&wrong) {
        assert_absent(&out, token, "a token");
        // Also without its prefix, as a log might cut it.
        assert_absent(&out, &token["fleet_".len()..], "a token's secret part");
    }
    let password = password_of(&url);
    assert_absent(&out, &url, "the database URL with its password");
    assert_absent(&out, &base, "the database URL with its password");
    assert_absent(&out, &format!(":{password}@"), "the database password");
    assert_absent(&out, "password: Some(", "a password field");
    assert_absent(
        &out,
        &format!("password={password}"),
        "the database password",
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_refused_database_password_and_the_help_do_not_show_it() {
    let base = std::env::var("FLEET_DATABASE_URL")
        .expect("FLEET_DATABASE_URL is not set: scripts/test.sh starts the stack");
    let secret = format!("Pa55-{}-NeverInALog", std::process::id());
    let (scheme, rest) = base.split_once("://").expect("scheme");
    let (userinfo, host) = rest.split_once('@').expect("user info");
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let url = format!("{scheme}://{user}:{secret}@{host}");

    // --help shows the environment's values unless told not to.
    let help = Command::new(BIN)
        .arg("--help")
        .env("FLEET_DATABASE_URL", &url)
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&help.stdout),
        String::from_utf8_lossy(&help.stderr)
    );
    assert!(text.contains("--database-url"), "{text}");
    assert_absent(&text, &secret, "the database password (--help)");

    // A start the database refuses: the retries and their errors are logged.
    let dir = scratch("refused");
    let child = start(&dir, &[("RUST_LOG", "trace"), ("FLEET_DATABASE_URL", &url)]);
    wait_for(&dir, "database not ready", Duration::from_secs(60)).await;
    // It would retry for a minute (a signal is heard only once it serves).
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    let out = output(&dir);
    assert!(out.contains("password authentication failed"), "{out}");
    assert_absent(&out, &secret, "the database password");
}
