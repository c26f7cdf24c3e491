//! The dead man's switch against the real stack: `fleet-canary`'s synthetic pump is
//! paged through MQTT → ingest → Kafka → detector → notifier every round; stopping a
//! stage fires the operator alarm, naming where the canary's readings stopped, and
//! restarting it ends the alarm.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_loadtest::harness::{self, Service, StackEnv};

/// The pipeline's stages, each restartable, plus the canary.
struct Pipeline {
    env: StackEnv,
    database_url: String,
    suffix: String,
    dir: tempfile::TempDir,
    canary_port: u16,
    ingest_port: u16,
}

impl Pipeline {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn start(&self, binary: &str, generation: u32, args: &[String]) -> Service {
        self.start_on(binary, generation, 0, args)
    }

    /// A stage whose metrics are on `port` (0: any).
    fn start_on(&self, binary: &str, generation: u32, port: u16, args: &[String]) -> Service {
        let mut command = self
            .env
            .command(binary, &self.database_url)
            .expect("binary");
        command
            .env("RUST_LOG", "info")
            .env("FLEET_TOPIC_SUFFIX", &self.suffix)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(args);
        Service::spawn(
            binary,
            &mut command,
            &self.log(&format!("{binary}-{generation}")),
        )
        .unwrap_or_else(|e| panic!("{binary}: {e}"))
    }

    fn ingest(&self, generation: u32) -> Service {
        self.start_on(
            "fleet-ingest",
            generation,
            self.ingest_port,
            &to_args(&["--registry-refresh", "1s"]),
        )
    }

    fn detector(&self, generation: u32) -> Service {
        let group = format!("detector-{}", self.suffix);
        self.start(
            "fleet-detector",
            generation,
            &to_args(&["--group", &group, "--session-timeout", "6s"]),
        )
    }

    fn notifier(&self, generation: u32) -> Service {
        let group = format!("notifier-{}", self.suffix);
        self.start(
            "fleet-notifier",
            generation,
            &to_args(&[
                "--group",
                &group,
                "--session-timeout",
                "6s",
                "--registry-refresh",
                "1s",
                "--poll",
                "100ms",
                "--retry-initial",
                "100ms",
                "--retry-max",
                "1s",
            ]),
        )
    }

    fn gateway_id(&self) -> String {
        format!("gw-canary-{}", self.suffix)
    }

    fn canary(&self) -> Service {
        // Like any gateway, the canary's needs a certificate of its own on a TLS broker.
        harness::issue_gateway_certs([self.gateway_id()]).expect("canary gateway certificate");
        let listen = format!("127.0.0.1:{}", harness::free_port().expect("port"));
        let state = self.dir.path().join("canary-state").display().to_string();
        let mut command = self
            .env
            .command("fleet-canary", &self.database_url)
            .expect("binary");
        command
            .env("RUST_LOG", "info")
            .args(["--metrics-addr", &format!("127.0.0.1:{}", self.canary_port)])
            .args(["--listen", &listen, "--state-dir", &state])
            .args(["--pump-id", &format!("CANARY-{}", self.suffix)])
            .args(["--gateway-id", &self.gateway_id()])
            .args(["--interval", "2s", "--deadline", "12s"]);
        Service::spawn("fleet-canary", &mut command, &self.log("fleet-canary"))
            .expect("canary starts")
    }

    async fn canary_metric(&self, name: &str) -> f64 {
        harness::metric_sum(self.canary_port, name)
            .await
            .unwrap_or(f64::NAN)
    }

    async fn alarms(&self, stage: &str) -> f64 {
        let page = harness::http_get(self.canary_port, "/metrics")
            .await
            .unwrap_or_default();
        let series = format!("fleet_canary_alarms_total{{stage=\"{stage}\"}}");
        page.lines()
            .find_map(|l| {
                l.strip_prefix(&series)
                    .map(|v| v.trim().parse().unwrap_or(0.0))
            })
            .unwrap_or(0.0)
    }

    /// Waits until `done` holds, bounded; the canary's log in the failure.
    async fn until<F, Fut>(&self, what: &str, timeout: Duration, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        while !done().await {
            if start.elapsed() > timeout {
                panic!(
                    "{what}: not within {timeout:?}\n--- canary log ---\n{}",
                    tail(&self.log("fleet-canary"))
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn to_args(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
fn stopping_a_stage_fires_the_operator_alarm_and_restarting_it_ends_it() {
    let env = StackEnv::from_env().expect("stack endpoints");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database_url = runtime
        .block_on(fleet_store::testing::fresh_database(
            &env.database_url,
            "canary",
        ))
        .expect("fresh database");
    let pipeline = Pipeline {
        env,
        database_url,
        suffix: format!("canary-{}", std::process::id()),
        dir: tempfile::tempdir().expect("tempdir"),
        canary_port: harness::free_port().expect("port"),
        ingest_port: harness::free_port().expect("port"),
    };
    let mut ingest = pipeline.ingest(0);
    let mut detector = pipeline.detector(0);
    let mut notifier = pipeline.notifier(0);
    let _canary = pipeline.canary();

    runtime.block_on(async {
        let p = &pipeline;
        p.until(
            "rounds paged through the whole pipeline",
            Duration::from_secs(120),
            || async { p.canary_metric("fleet_canary_rounds_completed_total").await >= 2.0 },
        )
        .await;
        let last = p
            .canary_metric("fleet_canary_last_success_timestamp_seconds")
            .await;
        let now = chrono::Utc::now().timestamp() as f64;
        assert!((now - last).abs() < 60.0, "last success {last}, now {now}");
        assert_eq!(
            p.canary_metric("fleet_canary_operator_alarm_active").await,
            0.0
        );
        // Ingest follows the gateways' retained statuses: the canary's gateway is one.
        p.until(
            "ingest counting the canary's gateway online",
            Duration::from_secs(30),
            || async {
                let page = harness::http_get(p.ingest_port, "/metrics")
                    .await
                    .unwrap_or_default();
                page.lines().any(|l| {
                    l.strip_prefix("fleet_ingest_gateways{state=\"online\"} ")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .is_some_and(|v| v >= 1.0)
                })
            },
        )
        .await;

        // The detector stops: readings are still acknowledged, no page comes.
        detector
            .terminate(Duration::from_secs(20))
            .expect("detector stops");
        p.until(
            "the alarm, blaming the stages past the log",
            Duration::from_secs(60),
            || async {
                p.canary_metric("fleet_canary_operator_alarm_active").await == 1.0
                    && p.alarms("unpaged").await >= 1.0
            },
        )
        .await;
        assert_eq!(p.alarms("unacknowledged").await, 0.0);
        detector = p.detector(1);
        p.until(
            "recovery once the detector is back",
            Duration::from_secs(90),
            || async { p.canary_metric("fleet_canary_operator_alarm_active").await == 0.0 },
        )
        .await;

        // Ingest stops: nothing is acknowledged any more.
        ingest.kill9();
        p.until(
            "the alarm, blaming the stages before the log",
            Duration::from_secs(60),
            || async {
                p.canary_metric("fleet_canary_operator_alarm_active").await == 1.0
                    && p.alarms("unacknowledged").await >= 1.0
            },
        )
        .await;
        ingest = p.ingest(1);
        let completed = p.canary_metric("fleet_canary_rounds_completed_total").await;
        p.until(
            "recovery once ingest is back",
            Duration::from_secs(90),
            || async {
                p.canary_metric("fleet_canary_operator_alarm_active").await == 0.0
                    && p.canary_metric("fleet_canary_rounds_completed_total").await > completed
            },
        )
        .await;
        // Every page was signed with the secret the canary registered.
        let page = harness::http_get(p.canary_port, "/metrics")
            .await
            .unwrap_or_default();
        assert!(
            !page.contains("fleet_canary_pages_total{outcome=\"refused\"}"),
            "no page refused:\n{page}"
        );
        let log = std::fs::read_to_string(p.log("fleet-canary")).unwrap_or_default();
        assert!(
            log.contains("OPERATOR ALARM"),
            "the alarm is in the log:\n{}",
            tail(&p.log("fleet-canary"))
        );
        assert!(log.contains("operator alarm over"), "so is its end");

        // An import with --prune that drops the canary's pump: put back within the
        // minute, before any round could go unpaged for long.
        let pool = fleet_store::connect(&p.database_url).await.expect("db");
        let pump_id = format!("CANARY-{}", p.suffix);
        sqlx::query("DELETE FROM pump WHERE pump_id = $1")
            .bind(&pump_id)
            .execute(&pool)
            .await
            .expect("pump removed");
        p.until(
            "the canary's pump restored in the registry",
            Duration::from_secs(75),
            || async {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pump WHERE pump_id = $1")
                    .bind(&pump_id)
                    .fetch_one(&pool)
                    .await
                    .is_ok_and(|n| n == 1)
            },
        )
        .await;
        pool.close().await;
    });
    for service in [&mut ingest, &mut detector, &mut notifier] {
        service.terminate(Duration::from_secs(20)).expect("stops");
    }
}
