//! The clinic dashboard in a real browser (headless Chromium through ChromeDriver),
//! over the real pipeline: a gateway relays two pumps' readings with their reservoirs
//! below the alarm volume; ingest, the streaming detector and the archiver carry the
//! LOW_RESERVOIR alarms into the archive; `fleet-api` serves the dashboard. Clinic A's
//! nurse logs in, sees her pump's alarm, acknowledges it with a note and sees it
//! acknowledged; clinic B's nurse sees her own alarm and not clinic A's. Screenshots
//! go to `target/test-artifacts/dashboard/`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use fantoccini::{Client, ClientBuilder, Locator};
use fleet_loadtest::harness::{self, Pace, Service, StackEnv};
use sqlx::PgPool;

const PUMP_A: &str = "ITP40-910001";
const PUMP_B: &str = "ITP40-910002";

/// ChromeDriver in its own process group, so the browsers it starts go with it even
/// when a test fails half-way.
struct Driver {
    service: Service,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.service.pid());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }
}

fn chromedriver(log: &std::path::Path) -> Driver {
    let port = harness::free_port().expect("port");
    let service = Service::spawn(
        "chromedriver",
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0),
        log,
    )
    .expect("chromedriver starts (scripts/test.sh installs Debian's chromium-driver)");
    Driver { service, port }
}

async fn browser(driver: &Driver) -> Client {
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
        },
    });
    let capabilities = match capabilities {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session")
}

fn artifacts() -> PathBuf {
    let dir = harness::repo_root().join("target/test-artifacts/dashboard");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = artifacts().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("screenshot written");
    println!("screenshot: {}", path.display());
}

/// Waits (bounded) for an element the page shows once it has loaded or polled.
async fn shown(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} not shown: {e}"))
}

async fn log_in(client: &Client, base: &str, token: &str) {
    client.goto(base).await.expect("dashboard loads");
    let field = shown(client, "#token").await;
    field.send_keys(token).await.expect("token typed");
    client
        .find(Locator::Css("#login-form button[type=submit]"))
        .await
        .expect("log in button")
        .click()
        .await
        .expect("clicked");
    shown(client, "#board:not([hidden])").await;
}

/// Waits for the alarm's row on the board (the page polls every few seconds).
async fn alarm_row(client: &Client, alarm_id: &str) -> fantoccini::elements::Element {
    shown(client, &format!("li[data-alarm-id=\"{alarm_id}\"]")).await
}

async fn archived_alarm(pool: &PgPool, pump: &str) -> String {
    for _ in 0..600 {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT alarm_id FROM alarm_event WHERE pump_id = $1 AND kind = 'LOW_RESERVOIR' LIMIT 1",
        )
        .bind(pump)
        .fetch_optional(pool)
        .await
        .expect("query");
        if let Some(id) = id {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no LOW_RESERVOIR alarm for {pump} reached the archive in 60 s");
}

fn user(env: &StackEnv, database_url: &str, name: &str, clinic: &str) -> String {
    let output = env
        .command("fleetctl", database_url)
        .expect("fleetctl")
        .args(["user", "add", name, "--role", "clinic", "--clinic", clinic])
        .output()
        .expect("fleetctl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_clinic_acknowledges_a_pipeline_alarm_on_the_dashboard_and_another_clinic_cannot_see_it()
{
    let env = StackEnv::from_env().expect("stack endpoints");
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix = format!(
        "dashboard-{}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let database_url = fleet_store::testing::fresh_database(&env.database_url, "dashboard")
        .await
        .expect("a database of our own");
    let pool = fleet_store::connect(&database_url).await.expect("connect");

    // Two clinics, one pump each, both reservoirs under their alarm volume.
    let registry = dir.path().join("registry.toml");
    let mut text = String::new();
    for (clinic, pump) in [("clinic-a", PUMP_A), ("clinic-b", PUMP_B)] {
        text.push_str(&format!(
            "[[clinic]]\nid = \"{clinic}\"\nname = \"{clinic}\"\nwebhook = \"http://127.0.0.1:9\"\nescalation_after = \"15m\"\n\n\
             [[pump]]\npump_id = \"{pump}\"\ngateway_id = \"gw-{pump}\"\nclinic_id = \"{clinic}\"\n\n"
        ));
    }
    std::fs::write(&registry, text).expect("registry file");
    let imported = env
        .command("fleetctl", &database_url)
        .expect("fleetctl")
        .args(["registry", "import", &registry.display().to_string()])
        .status()
        .expect("fleetctl runs");
    assert!(imported.success());
    let now = Utc::now();
    let readings: Vec<fleet_core::Reading> = [PUMP_A, PUMP_B]
        .iter()
        .flat_map(|pump| {
            (1..=6).map(move |seq| {
                let mut r = fleet_core::Reading::example(
                    pump,
                    seq,
                    now - chrono::Duration::hours(7 - seq as i64),
                );
                r.reservoir_ml = 1.5 - 0.05 * seq as f64;
                r
            })
        })
        .collect();
    let replay = harness::write_replay(dir.path(), &readings).expect("replay file");

    let service = |name: &str, args: Vec<String>| {
        let port = harness::free_port().expect("port");
        let mut command = env.command(name, &database_url).expect("binary");
        command
            .args(["--topic-suffix", &suffix])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(args);
        (
            Service::spawn(name, &mut command, &dir.path().join(format!("{name}.log")))
                .expect("starts"),
            port,
        )
    };
    let (_ingest, ingest_port) = service(
        "fleet-ingest",
        vec!["--client-id".into(), format!("ingest-{suffix}")],
    );
    let (_detector, detector_port) = service(
        "fleet-detector",
        vec!["--group".into(), format!("detector-{suffix}")],
    );
    let (_archiver, archiver_port) = service(
        "fleet-archiver",
        vec!["--group".into(), format!("archiver-{suffix}")],
    );
    for port in [ingest_port, detector_port, archiver_port] {
        harness::wait_ready(port, Duration::from_secs(60))
            .await
            .expect("service ready");
    }
    let (api_port, grpc_port) = (
        harness::free_port().expect("port"),
        harness::free_port().expect("port"),
    );
    let _api = Service::spawn(
        "fleet-api",
        env.command("fleet-api", &database_url)
            .expect("binary")
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--http-listen", &format!("127.0.0.1:{api_port}")]),
        &dir.path().join("fleet-api.log"),
    )
    .expect("api starts");
    harness::wait_port(api_port, Duration::from_secs(30))
        .await
        .expect("api up");
    let mut gateways = harness::replay_through_gateways(&env, dir.path(), &replay, Pace::FullSpeed)
        .expect("gateways");
    gateways
        .wait_exit(Duration::from_secs(60))
        .expect("every reading acknowledged");
    let alarm_a = archived_alarm(&pool, PUMP_A).await;
    let alarm_b = archived_alarm(&pool, PUMP_B).await;

    let token_a = user(&env, &database_url, "nurse-a", "clinic-a");
    let token_b = user(&env, &database_url, "nurse-b", "clinic-b");
    let base = format!("http://127.0.0.1:{api_port}/");
    let driver = chromedriver(&dir.path().join("chromedriver.log"));
    harness::wait_port(driver.port, Duration::from_secs(20))
        .await
        .expect("chromedriver up");
    let client = browser(&driver).await;

    // Clinic A: the alarm is there, with its priority in words and a shape.
    log_in(&client, &base, &token_a).await;
    let row = alarm_row(&client, &alarm_a).await;
    let text = row.text().await.expect("row text");
    let priority: String = sqlx::query_scalar(
        "SELECT priority FROM alarm_event WHERE alarm_id = $1 ORDER BY revision DESC LIMIT 1",
    )
    .bind(&alarm_a)
    .fetch_one(&pool)
    .await
    .expect("priority");
    let shape = match priority.as_str() {
        "HIGH" => "▲",
        "MEDIUM" => "◆",
        _ => "●",
    };
    assert!(
        text.contains(&format!("{shape} {priority}"))
            && text.contains("LOW_RESERVOIR")
            && text.contains(PUMP_A),
        "{text}"
    );
    assert!(
        client
            .find(Locator::Css(&format!("li[data-alarm-id=\"{alarm_b}\"]")))
            .await
            .is_err(),
        "clinic A sees clinic B's alarm"
    );
    screenshot(&client, "1-clinic-a-alarm").await;

    // One click (and an optional note) acknowledges it; the board shows who did.
    row.find(Locator::Css("input[name=note]"))
        .await
        .expect("note field")
        .send_keys("Refill booked for today")
        .await
        .expect("note typed");
    row.find(Locator::Css("button.acknowledge"))
        .await
        .expect("acknowledge button")
        .click()
        .await
        .expect("clicked");
    let acknowledged = shown(
        &client,
        &format!("li[data-alarm-id=\"{alarm_a}\"] .acknowledged"),
    )
    .await;
    let text = acknowledged.text().await.expect("text");
    assert!(text.contains("Acknowledged by nurse-a"), "{text}");
    let note: String = sqlx::query_scalar("SELECT note FROM acknowledgement WHERE alarm_id = $1")
        .bind(&alarm_a)
        .fetch_one(&pool)
        .await
        .expect("the acknowledgement is recorded");
    assert_eq!(note, "Refill booked for today");
    screenshot(&client, "2-clinic-a-acknowledged").await;

    // The pump page: its chart, drawn by the server.
    alarm_row(&client, &alarm_a)
        .await
        .find(Locator::Css("button.link"))
        .await
        .expect("pump link")
        .click()
        .await
        .expect("clicked");
    shown(&client, "#pump-chart svg").await;

    // A phone-width screen still shows the board and its controls.
    client.set_window_size(390, 844).await.expect("resize");
    assert!(
        alarm_row(&client, &alarm_a)
            .await
            .is_displayed()
            .await
            .expect("displayed")
    );
    screenshot(&client, "3-clinic-a-phone").await;
    client.set_window_size(1280, 1000).await.expect("resize");

    // Clinic B: its own alarm, never clinic A's.
    client
        .find(Locator::Css("#logout"))
        .await
        .expect("logout")
        .click()
        .await
        .expect("clicked");
    log_in(&client, &base, &token_b).await;
    alarm_row(&client, &alarm_b).await;
    assert!(
        client
            .find(Locator::Css(&format!("li[data-alarm-id=\"{alarm_a}\"]")))
            .await
            .is_err(),
        "clinic B sees clinic A's alarm"
    );
    screenshot(&client, "4-clinic-b").await;
    client.close().await.expect("browser closes");

    // Both logins and the acknowledgement are in the audit log.
    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM audit_log ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("audit");
    assert!(
        audit.contains(&("nurse-a".into(), "login".into())),
        "{audit:?}"
    );
    assert!(
        audit.contains(&("nurse-a".into(), "acknowledge".into())),
        "{audit:?}"
    );
    assert!(
        audit.contains(&("nurse-b".into(), "login".into())),
        "{audit:?}"
    );
}
