//! Every service's side door, against the test stack: `/healthz` answers at once,
//! `/readyz` once its dependencies are usable, `/metrics` carries the service's own
//! families (named `fleet_<component>_...`, none labelled by pump), and SIGTERM ends
//! it cleanly within its grace period.

use std::time::Duration;

use fleet_loadtest::harness::{self, Service, StackEnv};

/// A service, the families it must export from the start, and extra arguments.
struct Case {
    binary: &'static str,
    component: &'static str,
    /// Components whose metrics it also serves under their own names (the canary runs
    /// a gateway session: its metrics are the gateway's, named as the gateway's).
    hosts: &'static [&'static str],
    families: &'static [&'static str],
    args: Vec<String>,
}

fn cases(dir: &std::path::Path, api_http: u16) -> Vec<Case> {
    vec![
        Case {
            binary: "fleet-ingest",
            component: "ingest",
            hosts: &[],
            families: &[
                "fleet_ingest_readings_total",
                "fleet_ingest_produce_seconds_bucket",
                "fleet_ingest_gateway_outbox_readings",
            ],
            args: vec![],
        },
        Case {
            binary: "fleet-detector",
            component: "detector",
            hosts: &[],
            families: &[
                "fleet_detector_readings_total",
                "fleet_detector_checkpoint_seconds_bucket",
                "fleet_detector_pumps",
                "fleet_detector_consumer_lag_records",
            ],
            args: vec!["--group".into(), format!("probes-{}", std::process::id())],
        },
        Case {
            binary: "fleet-archiver",
            component: "archiver",
            hosts: &[],
            families: &[
                "fleet_archiver_batches_total",
                "fleet_archiver_batch_write_seconds_bucket",
                "fleet_archiver_consumer_lag_records",
            ],
            args: vec![],
        },
        Case {
            binary: "fleet-notifier",
            component: "notifier",
            hosts: &[],
            families: &[
                "fleet_notifier_in_flight",
                "fleet_notifier_consumer_lag_records",
            ],
            args: vec![],
        },
        Case {
            binary: "fleet-api",
            component: "api",
            hosts: &[],
            // Counted per call: the test makes one before it looks.
            families: &["fleet_api_requests_total"],
            args: vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--http-listen".into(),
                format!("127.0.0.1:{api_http}"),
            ],
        },
        Case {
            binary: "fleet-gateway",
            component: "gateway",
            hosts: &[],
            // Its certificate is issued by the test before it starts (TLS on).
            families: &["fleet_gateway_outbox_depth_readings"],
            args: vec![
                "--gateway-id".into(),
                format!("gw-probes-{}", std::process::id()),
                "--state-dir".into(),
                dir.join("gateway").display().to_string(),
            ],
        },
        Case {
            binary: "fleet-canary",
            component: "canary",
            hosts: &["gateway"],
            // Its gateway's certificate is issued by the test too.
            families: &[
                "fleet_canary_last_success_timestamp_seconds",
                "fleet_canary_operator_alarm_active",
                "fleet_canary_round_trip_seconds_bucket",
                // Its gateway session's, served beside its own.
                "fleet_gateway_mqtt_certificate_expiry_timestamp_seconds",
            ],
            args: vec![
                "--gateway-id".into(),
                format!("gw-canary-probes-{}", std::process::id()),
                "--pump-id".into(),
                format!("CANARY-probes-{}", std::process::id()),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--state-dir".into(),
                dir.join("canary").display().to_string(),
            ],
        },
    ]
}

#[test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
fn every_service_answers_its_probes_exports_its_metrics_and_stops_on_sigterm() {
    let env = StackEnv::from_env().expect("stack endpoints");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database_url = runtime
        .block_on(fleet_store::testing::fresh_database(
            &env.database_url,
            "probes",
        ))
        .expect("fresh database");
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix = format!("probes-{}", std::process::id());
    let api_http = harness::free_port().expect("port");
    harness::issue_gateway_certs([
        format!("gw-probes-{}", std::process::id()),
        format!("gw-canary-probes-{}", std::process::id()),
    ])
    .expect("gateway certificate");
    for case in cases(dir.path(), api_http) {
        let port = harness::free_port().expect("port");
        let mut service = Service::spawn(
            case.binary,
            env.command(case.binary, &database_url)
                .expect("binary")
                .env("FLEET_TOPIC_SUFFIX", &suffix)
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                .args(&case.args),
            &dir.path().join(format!("{}.log", case.binary)),
        )
        .expect("starts");
        let log = || {
            std::fs::read_to_string(dir.path().join(format!("{}.log", case.binary)))
                .unwrap_or_default()
        };
        runtime.block_on(async {
            harness::wait_port(port, Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", case.binary, log()));
            let health = harness::http_get(port, "/healthz")
                .await
                .unwrap_or_default();
            assert!(
                status_is(&health, 200),
                "{}: /healthz {health}",
                case.binary
            );
            harness::wait_ready(port, Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", case.binary, log()));
            if case.component == "api" {
                let answer = harness::http_get(api_http, "/api/v1/alarms")
                    .await
                    .unwrap_or_default();
                assert!(status_is(&answer, 401), "{answer}");
            }
            let response = harness::http_get(port, "/metrics")
                .await
                .unwrap_or_default();
            let metrics = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            for family in case.families {
                assert!(
                    metrics.lines().any(|l| l.starts_with(family)),
                    "{} does not export {family}:\n{metrics}",
                    case.binary
                );
            }
            for line in metrics
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                let prefix = format!("fleet_{}_", case.component);
                assert!(
                    std::iter::once(case.component)
                        .chain(case.hosts.iter().copied())
                        .any(|c| line.starts_with(&format!("fleet_{c}_"))),
                    "{}: {line} is not named {prefix}...",
                    case.binary
                );
                let labels = line.split_once('{').map_or("", |(_, rest)| rest);
                assert!(
                    !labels.contains("pump"),
                    "{}: a per-pump label: {line}",
                    case.binary
                );
            }
        });
        service
            .terminate(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", case.binary, log()));
        println!("{}: probes, metrics and SIGTERM as expected", case.binary);
    }
}

fn status_is(response: &str, code: u16) -> bool {
    response
        .lines()
        .next()
        .and_then(|status| status.split_whitespace().nth(1))
        .is_some_and(|c| c == code.to_string())
}
