//! Who may see and do what, over both transports, against the real PostgreSQL: two
//! clinics and the manufacturer; every endpoint tried across clinics (denied, with the
//! right status), without a token (refused), and every login, acknowledgement and
//! denial found in the audit log with the caller's address; failed authentications
//! limited per address and requests per user, on both transports.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroU32;

use chrono::{DateTime, Duration, Utc};
use fleet_api::limits::LimitsConfig;
use fleet_core::{AlarmEvent, Reading};
use fleet_proto::api::v1 as pb;
use fleet_proto::api::v1::fleet_api_client::FleetApiClient;
use fleet_store::access::{self, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const PUMP_A: &str = "ITP40-100001";
const PUMP_B: &str = "ITP40-100002";

struct Fixture {
    pool: PgPool,
    http: String,
    grpc_addr: std::net::SocketAddr,
    grpc: FleetApiClient<Channel>,
    clinic_a: String,
    clinic_b: String,
    manufacturer: String,
    alarm_a: String,
    alarm_b: String,
    start: DateTime<Utc>,
    metrics: fleet_api::metrics::ApiMetrics,
    _stop: tokio_util::sync::DropGuard,
}

fn alarm_event(pump: &str, at: DateTime<Utc>) -> AlarmEvent {
    serde_json::from_value(json!({
        "alarm_id": format!("{pump}:OCCLUSION:{}", at.timestamp()),
        "revision": 1,
        "pump_id": pump,
        "kind": "OCCLUSION",
        "priority": "HIGH",
        "state": "RAISED",
        "detected_at": at.to_rfc3339(),
        "message": "Catheter pressure rising.",
        "evidence": {"pressure_kpa": 180.0},
    }))
    .expect("an alarm event")
}

/// Limits no test of access rules reaches (they try many wrong tokens on purpose).
fn generous() -> LimitsConfig {
    let n = |v: u32| NonZeroU32::new(v).expect("not zero");
    LimitsConfig {
        auth_failures_per_minute: n(10_000),
        auth_failure_burst: n(10_000),
        user_requests_per_second: n(10_000),
        user_request_burst: n(10_000),
        ..LimitsConfig::default()
    }
}

async fn fixture() -> Fixture {
    fixture_with(generous()).await
}

async fn fixture_with(limits: LimitsConfig) -> Fixture {
    let (_, pool) = fleet_store::testing::fresh_pool("api").await;
    sqlx::raw_sql(
        "INSERT INTO clinic (id, name, webhook, escalation_after_ms) VALUES
           ('clinic-a', 'A', 'http://127.0.0.1:1', 60000),
           ('clinic-b', 'B', 'http://127.0.0.1:1', 60000);
         INSERT INTO pump (pump_id, gateway_id, clinic_id) VALUES
           ('ITP40-100001', 'gw-1', 'clinic-a'), ('ITP40-100002', 'gw-2', 'clinic-b');",
    )
    .execute(&pool)
    .await
    .expect("registry");
    let start = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .expect("time")
        .to_utc();
    // A day of readings and one alarm (with its page) per pump.
    let readings: Vec<Reading> = [PUMP_A, PUMP_B]
        .iter()
        .flat_map(|pump| {
            (1..=24).map(move |h| Reading::example(pump, h, start + Duration::hours(h as i64)))
        })
        .collect();
    let alarms = [
        alarm_event(PUMP_A, start + Duration::hours(12)),
        alarm_event(PUMP_B, start + Duration::hours(12)),
    ];
    let mut partitions = fleet_store::archive::Partitions::default();
    partitions
        .ensure(&pool, &readings)
        .await
        .expect("partitions");
    let mut tx = pool.begin().await.expect("begin");
    fleet_store::archive::insert_readings(&mut tx, &readings)
        .await
        .expect("readings");
    fleet_store::archive::insert_alarms(&mut tx, &alarms)
        .await
        .expect("alarms");
    tx.commit().await.expect("commit");
    for a in &alarms {
        sqlx::query(
            "INSERT INTO page (alarm_id, revision, escalation, pump_id, clinic_id, priority, state, event)
             VALUES ($1, 1, 0, $2, $3, 'HIGH', 'RAISED', '\\x00')",
        )
        .bind(&a.alarm_id)
        .bind(&a.pump_id)
        .bind(if a.pump_id == PUMP_A { "clinic-a" } else { "clinic-b" })
        .execute(&pool)
        .await
        .expect("page");
        // Its delivery history: refused once, then accepted.
        sqlx::query(
            "INSERT INTO page_attempt (alarm_id, revision, escalation, attempt, endpoint, target, accepted, detail)
             VALUES ($1, 1, 0, 1, 'http://127.0.0.1:1', 'primary', false, 'connection refused'),
                    ($1, 1, 0, 2, 'http://127.0.0.1:1', 'primary', true, 'receipt-1')",
        )
        .bind(&a.alarm_id)
        .execute(&pool)
        .await
        .expect("attempts");
    }
    let clinic_a = access::add_user(&pool, "nurse-a", &Role::Clinic("clinic-a".into()))
        .await
        .expect("user");
    let clinic_b = access::add_user(&pool, "nurse-b", &Role::Clinic("clinic-b".into()))
        .await
        .expect("user");
    let manufacturer = access::add_user(&pool, "surveillance", &Role::Manufacturer)
        .await
        .expect("user");

    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let grpc_addr = grpc_listener.local_addr().expect("addr");
    let http = format!("http://{}", http_listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let metrics = fleet_api::metrics::ApiMetrics::new();
    tokio::spawn({
        let (pool, metrics, stop) = (pool.clone(), metrics.clone(), stop.clone());
        async move { fleet_api::serve(pool, grpc_listener, http_listener, metrics, &limits, stop).await }
    });
    let grpc = FleetApiClient::connect(format!("http://{grpc_addr}"))
        .await
        .expect("gRPC connects");
    Fixture {
        pool,
        http,
        grpc_addr,
        grpc,
        clinic_a,
        clinic_b,
        manufacturer,
        alarm_a: alarms[0].alarm_id.clone(),
        alarm_b: alarms[1].alarm_id.clone(),
        start,
        metrics,
        _stop: stop.drop_guard(),
    }
}

async fn call(
    f: &Fixture,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().expect("method"), format!("{}{path}", f.http));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let value = response.json().await.unwrap_or(Value::Null);
    (status, value)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    request
}

/// The status code of a failed call; None if it succeeded.
fn code<T>(answer: Result<T, tonic::Status>) -> Option<tonic::Code> {
    answer.err().map(|s| s.code())
}

async fn audit(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT actor, action, subject FROM audit_log ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("audit log")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_clinic_sees_and_acknowledges_only_its_own_pumps_over_http() {
    let f = fixture().await;
    let window = format!(
        "from={}&to={}",
        f.start.format("%Y-%m-%dT%H:%M:%SZ"),
        (f.start + Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let a = Some(f.clinic_a.as_str());

    // Login: the right token names its user; a wrong one is refused and audited.
    let (status, me) = call(
        &f,
        None,
        "POST",
        "/api/v1/login",
        Some(json!({"token": f.clinic_a})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me,
        json!({"name": "nurse-a", "role": "clinic", "clinic_id": "clinic-a"})
    );
    let (status, _) = call(
        &f,
        None,
        "POST",
        "/api/v1/login",
        Some(json!({"token": "fleet_wrong"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Own pump: everything works.
    let (status, alarms) = call(&f, a, "GET", "/api/v1/alarms", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = alarms
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["alarm_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, vec![f.alarm_a.as_str()], "only clinic A's alarm");
    let (status, pumps) = call(&f, a, "GET", "/api/v1/pumps", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pumps.as_array().expect("list").len(), 1);
    assert_eq!(pumps[0]["pump_id"], PUMP_A);
    assert_eq!(pumps[0]["open_alarms"], 1);
    assert!(pumps[0]["drug"].is_string(), "a clinic sees the therapy");
    let (status, detail) = call(&f, a, "GET", &format!("/api/v1/alarms/{}", f.alarm_a), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        detail["deliveries"].as_array().expect("deliveries").len(),
        1
    );
    let history = &detail["deliveries"][0]["history"];
    assert_eq!(history[0]["accepted"], false);
    assert_eq!(history[0]["detail"], "connection refused");
    assert_eq!(history[1]["accepted"], true);
    assert_eq!(history[1]["detail"], "receipt-1");
    let (status, timeline) = call(
        &f,
        a,
        "GET",
        &format!("/api/v1/pumps/{PUMP_A}/timeline?{window}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{timeline}");
    assert!(timeline["entries"].as_array().expect("entries").len() >= 24);

    // The other clinic's pump: denied, every endpoint, and nothing leaks.
    let b_alarm = format!("/api/v1/alarms/{}", f.alarm_b);
    for (method, path, body) in [
        ("GET", b_alarm.clone(), None),
        (
            "POST",
            format!("{b_alarm}/acknowledge"),
            Some(json!({"clinician": "Dr A"})),
        ),
        (
            "GET",
            format!("/api/v1/pumps/{PUMP_B}/timeline?{window}"),
            None,
        ),
    ] {
        let (status, answer) = call(&f, a, method, &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains("Catheter"), "{answer}");
    }
    let (status, filtered) = call(
        &f,
        a,
        "GET",
        &format!("/api/v1/alarms?pump_id={PUMP_B}"),
        None,
    )
    .await;
    assert_eq!(
        (status, filtered),
        (StatusCode::OK, json!([])),
        "a filter does not widen the scope"
    );

    // No token, or a wrong one: 401 everywhere.
    for path in [
        "/api/v1/alarms",
        "/api/v1/pumps",
        &format!("/api/v1/alarms/{}", f.alarm_a),
    ] {
        assert_eq!(
            call(&f, None, "GET", path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(&f, Some("fleet_nope"), "GET", path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }

    // Bad input: 400 with the reason.
    let (status, answer) = call(&f, a, "GET", "/api/v1/alarms?priority=URGENT", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("priority 'URGENT'"),
        "{answer}"
    );

    // Acknowledging its own alarm works and shows.
    let (status, answer) = call(
        &f,
        a,
        "POST",
        &format!("/api/v1/alarms/{}/acknowledge", f.alarm_a),
        Some(json!({"clinician": "Dr A", "note": "on my way"})),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"known": true})));
    let (_, alarms) = call(&f, a, "GET", "/api/v1/alarms", None).await;
    assert_eq!(alarms[0]["acknowledged_by"], "Dr A");

    let log = audit(&f.pool).await;
    let has = |actor: &str, action: &str, subject: &str| {
        log.iter()
            .any(|(a, b, c)| a == actor && b == action && c == subject)
    };
    assert!(has("nurse-a", "login", "nurse-a"), "{log:?}");
    assert!(has("(unknown token)", "login_failed", ""), "{log:?}");
    assert!(has("nurse-a", "denied", &f.alarm_b), "{log:?}");
    assert!(has("nurse-a", "denied", PUMP_B), "{log:?}");
    assert!(has("nurse-a", "acknowledge", &f.alarm_a), "{log:?}");
    assert!(
        log.iter()
            .filter(|(a, b, _)| a == "(anonymous)" && b == "denied")
            .count()
            >= 6,
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn the_manufacturer_reads_the_whole_fleet_without_therapy_data_and_changes_nothing() {
    let f = fixture().await;
    let m = Some(f.manufacturer.as_str());
    let (status, alarms) = call(&f, m, "GET", "/api/v1/alarms", None).await;
    assert_eq!(status, StatusCode::OK);
    let pumps: BTreeSet<&str> = alarms
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["pump_id"].as_str().expect("pump"))
        .collect();
    assert_eq!(pumps, BTreeSet::from([PUMP_A, PUMP_B]));
    assert!(
        alarms
            .as_array()
            .expect("list")
            .iter()
            .all(|x| x["clinic_id"].is_null())
    );
    let (_, list) = call(&f, m, "GET", "/api/v1/pumps", None).await;
    for pump in list.as_array().expect("pumps") {
        for field in ["clinic_id", "drug", "reservoir_ml", "refill_due_at"] {
            assert!(
                pump[field].is_null(),
                "{field} shown to the manufacturer: {pump}"
            );
        }
        assert!(pump["model"].is_string());
    }
    // Alarm messages and evidence name the drug and the dose: left out.
    assert!(
        alarms
            .as_array()
            .expect("list")
            .iter()
            .all(|x| x["message"] == "")
    );
    let (_, detail) = call(&f, m, "GET", &format!("/api/v1/alarms/{}", f.alarm_b), None).await;
    assert_eq!(detail["deliveries"], json!([]));
    assert_eq!(detail["acknowledgements"], json!([]));
    assert_eq!(detail["revisions"][0]["evidence"], json!({}));
    assert_eq!(detail["revisions"][0]["message"], "");
    // The timeline: device measurements and that an alarm happened; no reservoir, no
    // pages, no alarm wording.
    let window = format!(
        "from={}&to={}",
        f.start.format("%Y-%m-%dT%H:%M:%SZ"),
        (f.start + Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let (status, timeline) = call(
        &f,
        m,
        "GET",
        &format!("/api/v1/pumps/{PUMP_B}/timeline?{window}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let entries = timeline["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["record"] == "reading" && e["battery_pct"].is_number())
    );
    assert!(entries.iter().any(|e| e["record"] == "alarm"));
    for e in entries {
        assert!(e["reservoir_ml"].is_null(), "{e}");
        assert!(
            !["page", "acknowledgement"].contains(&e["record"].as_str().unwrap_or_default()),
            "{e}"
        );
        if e["record"] == "alarm" {
            assert_eq!(e["detail"], "", "{e}");
        }
    }
    // Read-only, whatever the request: the role is checked (and the attempt audited)
    // before anything else.
    for body in [json!({"clinician": "x"}), json!({"clinician": ""})] {
        let (status, _) = call(
            &f,
            m,
            "POST",
            &format!("/api/v1/alarms/{}/acknowledge", f.alarm_b),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "read-only");
    }
    let denials = audit(&f.pool)
        .await
        .iter()
        .filter(|(a, b, c)| a == "surveillance" && b == "denied" && *c == f.alarm_b)
        .count();
    assert_eq!(denials, 2, "both attempts audited");
    let acks: i64 = sqlx::query_scalar("SELECT count(*) FROM acknowledgement")
        .fetch_one(&f.pool)
        .await
        .expect("count");
    assert_eq!(acks, 0);
    assert!(
        audit(&f.pool)
            .await
            .iter()
            .any(|(a, b, c)| a == "surveillance" && b == "denied" && *c == f.alarm_b)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn grpc_enforces_the_same_rules() {
    let f = fixture().await;
    let mut grpc = f.grpc.clone();
    let (a, b) = (f.clinic_a.as_str(), f.clinic_b.as_str());
    let window = (
        Some(prost_types::Timestamp {
            seconds: f.start.timestamp(),
            nanos: 0,
        }),
        Some(prost_types::Timestamp {
            seconds: (f.start + Duration::days(2)).timestamp(),
            nanos: 0,
        }),
    );

    assert_eq!(
        code(
            grpc.list_alarms(tonic::Request::new(pb::ListAlarmsRequest::default()))
                .await
        ),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        code(
            grpc.get_alarm(with_token(
                pb::GetAlarmRequest {
                    alarm_id: f.alarm_b.clone()
                },
                a
            ))
            .await
        ),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(
            grpc.acknowledge_alarm(with_token(
                pb::AcknowledgeAlarmRequest {
                    alarm_id: f.alarm_b.clone(),
                    clinician: "Dr A".into(),
                    note: String::new()
                },
                a
            ))
            .await
        ),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(
            grpc.get_pump_timeline(with_token(
                pb::GetPumpTimelineRequest {
                    pump_id: PUMP_B.into(),
                    from: window.0,
                    to: window.1
                },
                a
            ))
            .await
        ),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(
            grpc.get_alarm(with_token(
                pb::GetAlarmRequest {
                    alarm_id: "no-such-alarm".into()
                },
                a
            ))
            .await
        ),
        Some(tonic::Code::NotFound)
    );

    let mine = grpc
        .list_alarms(with_token(pb::ListAlarmsRequest::default(), b))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        mine.alarms
            .iter()
            .map(|x| x.alarm_id.as_str())
            .collect::<Vec<_>>(),
        vec![f.alarm_b.as_str()]
    );
    let pumps = grpc
        .list_pumps(with_token(pb::ListPumpsRequest {}, b))
        .await
        .expect("pumps")
        .into_inner();
    assert_eq!(
        pumps
            .pumps
            .iter()
            .map(|p| p.pump_id.as_str())
            .collect::<Vec<_>>(),
        vec![PUMP_B]
    );
    let detail = grpc
        .get_alarm(with_token(
            pb::GetAlarmRequest {
                alarm_id: f.alarm_b.clone(),
            },
            b,
        ))
        .await
        .expect("detail")
        .into_inner();
    assert_eq!(detail.revisions.len(), 1);
    assert_eq!(detail.deliveries.len(), 1);
    assert_eq!(detail.deliveries[0].history.len(), 2, "both attempts");
    assert!(detail.deliveries[0].history[1].accepted);
    let timeline = grpc
        .get_pump_timeline(with_token(
            pb::GetPumpTimelineRequest {
                pump_id: PUMP_B.into(),
                from: window.0,
                to: window.1,
            },
            b,
        ))
        .await
        .expect("timeline")
        .into_inner();
    assert!(timeline.entries.iter().any(|e| e.record == "alarm"));
    let answer = grpc
        .acknowledge_alarm(with_token(
            pb::AcknowledgeAlarmRequest {
                alarm_id: f.alarm_b.clone(),
                clinician: "Dr B".into(),
                note: "seen".into(),
            },
            b,
        ))
        .await
        .expect("ack")
        .into_inner();
    assert!(answer.known);

    let log = audit(&f.pool).await;
    assert!(
        log.iter()
            .any(|(a, b, c)| a == "nurse-a" && b == "denied" && *c == f.alarm_b),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|(a, b, c)| a == "nurse-b" && b == "acknowledge" && *c == f.alarm_b),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn the_dashboard_is_served_under_a_strict_policy_and_loads_nothing_from_elsewhere() {
    let f = fixture().await;
    let client = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let response = client
            .get(format!("{}{path}", f.http))
            .send()
            .await
            .expect("served");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
            "{path}: {policy}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = response.text().await.expect("body");
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{path} refers to another origin"
        );
    }
    let page = client
        .get(format!("{}/", f.http))
        .send()
        .await
        .expect("served")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("secondary alarm system"),
        "the page says what it is"
    );

    // The pump page's chart: the clinic's own pump, drawn; another clinic's, refused.
    let window = format!(
        "from={}&to={}",
        f.start.format("%Y-%m-%dT%H:%M:%SZ"),
        (f.start + Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let chart = |pump: &str| {
        client
            .get(format!("{}/api/v1/pumps/{pump}/chart.svg?{window}", f.http))
            .bearer_auth(&f.clinic_a)
            .send()
    };
    let own = chart(PUMP_A).await.expect("answered");
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(
        own.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/svg+xml")
    );
    let svg = own.text().await.expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("OCCLUSION"),
        "the alarm is marked"
    );
    assert_eq!(
        chart(PUMP_B).await.expect("answered").status(),
        StatusCode::FORBIDDEN
    );
}

/// The value of counter `family` summed over the series carrying every one of `labels`
/// (0 when never counted).
fn counter(f: &Fixture, family: &str, labels: &[(&str, &str)]) -> f64 {
    f.metrics
        .registry
        .gather()
        .iter()
        .filter(|fam| fam.name() == family)
        .flat_map(|fam| fam.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(name, value)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *name && l.value() == *value)
            })
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// The value of `fleet_api_requests_total` for one label set.
fn requests(f: &Fixture, transport: &str, operation: &str, outcome: &str) -> f64 {
    counter(
        f,
        "fleet_api_requests_total",
        &[
            ("transport", transport),
            ("operation", operation),
            ("outcome", outcome),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn every_call_is_counted_by_transport_operation_and_outcome_never_by_id() {
    let f = fixture().await;
    let (status, _) = call(&f, Some(&f.clinic_a), "GET", "/api/v1/alarms", None).await;
    assert_eq!(status, StatusCode::OK);
    let other = format!("/api/v1/alarms/{}", f.alarm_b);
    let (status, _) = call(&f, Some(&f.clinic_a), "GET", &other, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&f, None, "GET", "/api/v1/pumps", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut grpc = f.grpc.clone();
    let denied = grpc
        .get_alarm(with_token(
            pb::GetAlarmRequest {
                alarm_id: f.alarm_b.clone(),
            },
            &f.clinic_a,
        ))
        .await;
    assert_eq!(code(denied), Some(tonic::Code::PermissionDenied));

    assert_eq!(requests(&f, "http", "GET /api/v1/alarms", "200"), 1.0);
    assert_eq!(
        requests(&f, "http", "GET /api/v1/alarms/{alarm_id}", "403"),
        1.0,
        "the route's template, not the path with its id"
    );
    assert_eq!(requests(&f, "http", "GET /api/v1/pumps", "401"), 1.0);
    assert_eq!(requests(&f, "grpc", "GetAlarm", "PermissionDenied"), 1.0);
    let text = f
        .metrics
        .registry
        .gather()
        .iter()
        .flat_map(|family| family.get_metric().iter())
        .flat_map(|m| m.get_label().iter().map(|l| l.value().to_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        !text.contains(&f.alarm_b) && !text.contains(PUMP_A) && !text.contains(PUMP_B),
        "no id in any label: {text}"
    );
}

/// An HTTP client whose connections come from `from` (every 127.0.0.0/8 address is
/// this machine, so a test can be several callers).
fn http_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().ok())
        .build()
        .expect("client")
}

/// A gRPC client whose connection comes from `from`.
async fn grpc_from(f: &Fixture, from: &str) -> FleetApiClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", f.grpc_addr))
        .expect("uri")
        .local_address(Some(from.parse().expect("ip")))
        .connect()
        .await
        .expect("gRPC connects");
    FleetApiClient::new(channel)
}

/// One HTTP call with extra headers; the status, the body and the Retry-After header.
async fn send(
    f: &Fixture,
    client: &reqwest::Client,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, Option<u64>) {
    let mut request = client.request(method.parse().expect("method"), format!("{}{path}", f.http));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let value = response.json().await.unwrap_or(Value::Null);
    (status, value, retry_after)
}

fn forwarded_for<T>(mut request: tonic::Request<T>, value: &str) -> tonic::Request<T> {
    request
        .metadata_mut()
        .insert("x-forwarded-for", value.parse().expect("metadata"));
    request
}

#[derive(Debug)]
struct AuditRow {
    actor: String,
    action: String,
    subject: String,
    addr: Option<String>,
    detail: Value,
}

async fn audit_rows(pool: &PgPool) -> Vec<AuditRow> {
    let rows: Vec<(String, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT actor, action, subject, host(caller_addr), detail::text FROM audit_log ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("audit log");
    rows.into_iter()
        .map(|(actor, action, subject, addr, detail)| AuditRow {
            actor,
            action,
            subject,
            addr,
            detail: serde_json::from_str(&detail).expect("json"),
        })
        .collect()
}

/// The one audit row with this actor and action (panics if there is not exactly one).
fn the_row<'a>(log: &'a [AuditRow], actor: &str, action: &str) -> &'a AuditRow {
    let rows: Vec<&AuditRow> = log
        .iter()
        .filter(|r| r.actor == actor && r.action == action)
        .collect();
    assert_eq!(rows.len(), 1, "{actor} {action}: {log:#?}");
    rows[0]
}

/// The value of `fleet_api_rate_limited_total` for one transport and limit.
fn rate_limited(f: &Fixture, transport: &str, limit: &str) -> f64 {
    counter(
        f,
        "fleet_api_rate_limited_total",
        &[("transport", transport), ("limit", limit)],
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn every_audit_row_names_the_callers_address_and_a_forwarded_for_header_is_not_believed() {
    let f = fixture().await;
    let (status, _) = call(
        &f,
        None,
        "POST",
        "/api/v1/login",
        Some(json!({"token": f.clinic_a})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A failed login from another address, claiming to be someone else: no proxy is
    // trusted, so the claim is ignored.
    let (status, _, _) = send(
        &f,
        &http_from("127.0.0.2"),
        None,
        "POST",
        "/api/v1/login",
        Some(json!({"token": "fleet_wrong"})),
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A denial over gRPC from a third address, with the same claim in metadata.
    let mut grpc = grpc_from(&f, "127.0.0.3").await;
    let denied = grpc
        .get_alarm(forwarded_for(
            with_token(
                pb::GetAlarmRequest {
                    alarm_id: f.alarm_b.clone(),
                },
                &f.clinic_a,
            ),
            "203.0.113.8",
        ))
        .await;
    assert_eq!(code(denied), Some(tonic::Code::PermissionDenied));
    // An anonymous call over gRPC, and an acknowledgement over HTTP.
    let anonymous = grpc
        .list_pumps(tonic::Request::new(pb::ListPumpsRequest {}))
        .await;
    assert_eq!(code(anonymous), Some(tonic::Code::Unauthenticated));
    let (status, _) = call(
        &f,
        Some(&f.clinic_a),
        "POST",
        &format!("/api/v1/alarms/{}/acknowledge", f.alarm_a),
        Some(json!({"clinician": "Dr A"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let log = audit_rows(&f.pool).await;
    assert!(log.iter().all(|r| r.addr.is_some()), "{log:#?}");
    let addr = |actor: &str, action: &str| the_row(&log, actor, action).addr.clone();
    assert_eq!(addr("nurse-a", "login").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        addr("(unknown token)", "login_failed").as_deref(),
        Some("127.0.0.2")
    );
    assert_eq!(addr("nurse-a", "denied").as_deref(), Some("127.0.0.3"));
    assert_eq!(addr("(anonymous)", "denied").as_deref(), Some("127.0.0.3"));
    assert_eq!(addr("nurse-a", "acknowledge").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        the_row(&log, "nurse-a", "denied").detail["transport"],
        "grpc"
    );
    assert!(
        log.iter().all(|r| r.detail.get("via").is_none()),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_trusted_proxy_names_the_caller_and_nobody_else_can() {
    let f = fixture_with(LimitsConfig {
        trusted_proxies: vec![fleet_api::limits::parse_net("127.0.0.2").expect("net")],
        ..generous()
    })
    .await;
    let proxy = http_from("127.0.0.2");
    let other = format!("/api/v1/alarms/{}", f.alarm_b);
    // Through the proxy: the rightmost address it was given (the client may have
    // written anything to the left).
    let (status, _, _) = send(
        &f,
        &proxy,
        Some(&f.clinic_a),
        "GET",
        &other,
        None,
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Not through the proxy: the header is the client's word, ignored.
    let (status, _, _) = send(
        &f,
        &http_from("127.0.0.3"),
        Some(&f.clinic_b),
        "GET",
        &format!("/api/v1/alarms/{}", f.alarm_a),
        None,
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // gRPC through the proxy.
    let mut grpc = grpc_from(&f, "127.0.0.2").await;
    let refused = grpc
        .list_pumps(forwarded_for(
            with_token(pb::ListPumpsRequest {}, "fleet_wrong"),
            "203.0.113.10",
        ))
        .await;
    assert_eq!(code(refused), Some(tonic::Code::Unauthenticated));

    let log = audit_rows(&f.pool).await;
    let a = the_row(&log, "nurse-a", "denied");
    assert_eq!(a.addr.as_deref(), Some("203.0.113.7"));
    assert_eq!(a.detail["via"], "127.0.0.2");
    let b = the_row(&log, "nurse-b", "denied");
    assert_eq!(b.addr.as_deref(), Some("127.0.0.3"));
    assert!(b.detail.get("via").is_none());
    let anonymous = the_row(&log, "(anonymous)", "denied");
    assert_eq!(anonymous.addr.as_deref(), Some("203.0.113.10"));
    assert_eq!(anonymous.detail["via"], "127.0.0.2");
    assert_eq!(anonymous.detail["transport"], "grpc");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn failed_authentications_are_limited_per_address_before_any_token_is_looked_up() {
    // The defaults: 10 a minute, 5 at once.
    let f = fixture_with(LimitsConfig::default()).await;
    let guesser = http_from("127.0.0.2");
    for i in 0..5 {
        let (status, _, _) = send(
            &f,
            &guesser,
            Some(&format!("fleet_guess{i}")),
            "GET",
            "/api/v1/alarms",
            None,
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    // The sixth: refused, with when to come back.
    let (status, body, retry_after) = send(
        &f,
        &guesser,
        Some("fleet_guess5"),
        "GET",
        "/api/v1/alarms",
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("failed authentications"),
        "{body}"
    );
    let retry_after = retry_after.expect("Retry-After");
    assert!((1..=6).contains(&retry_after), "{retry_after}");
    // Now even a right token is not looked up from there, nor a login, over either
    // transport.
    let (status, _, _) = send(
        &f,
        &guesser,
        Some(&f.clinic_a),
        "GET",
        "/api/v1/alarms",
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = send(
        &f,
        &guesser,
        None,
        "POST",
        "/api/v1/login",
        Some(json!({"token": f.clinic_a})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let mut grpc_guesser = grpc_from(&f, "127.0.0.2").await;
    let refused = grpc_guesser
        .list_alarms(with_token(pb::ListAlarmsRequest::default(), &f.clinic_a))
        .await;
    assert_eq!(code(refused), Some(tonic::Code::ResourceExhausted));

    // Another address is not affected.
    let (status, _) = call(&f, Some(&f.clinic_a), "GET", "/api/v1/alarms", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&f, Some("fleet_wrong"), "GET", "/api/v1/alarms", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A guesser over gRPC from a third address: the same limit.
    let mut grpc = grpc_from(&f, "127.0.0.3").await;
    for i in 0..5 {
        let answer = grpc
            .list_pumps(with_token(pb::ListPumpsRequest {}, &format!("fleet_g{i}")))
            .await;
        assert_eq!(
            code(answer),
            Some(tonic::Code::Unauthenticated),
            "guess {i}"
        );
    }
    let answer = grpc
        .list_pumps(with_token(pb::ListPumpsRequest {}, "fleet_g5"))
        .await;
    assert_eq!(code(answer), Some(tonic::Code::ResourceExhausted));

    // The audit log: each failure looked up, and each block once, not each refusal.
    let log = audit_rows(&f.pool).await;
    let from = |addr: &str, action: &str| {
        log.iter()
            .filter(|r| r.addr.as_deref() == Some(addr) && r.action == action)
            .count()
    };
    assert_eq!(from("127.0.0.2", "denied"), 5, "{log:#?}");
    assert_eq!(from("127.0.0.2", "rate_limited"), 1, "{log:#?}");
    assert_eq!(from("127.0.0.2", "login"), 0, "{log:#?}");
    assert_eq!(from("127.0.0.3", "denied"), 5, "{log:#?}");
    assert_eq!(from("127.0.0.3", "rate_limited"), 1, "{log:#?}");
    assert_eq!(from("127.0.0.1", "rate_limited"), 0, "{log:#?}");
    let block = log
        .iter()
        .find(|r| r.action == "rate_limited")
        .expect("a block");
    assert_eq!(block.detail["limit"], "auth_failures");
    assert_eq!(
        block.subject, "GET /api/v1/alarms",
        "what the blocking failure tried"
    );
    assert_eq!(rate_limited(&f, "http", "auth_failures"), 3.0);
    assert_eq!(rate_limited(&f, "grpc", "auth_failures"), 2.0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_user_over_its_request_rate_is_limited_and_another_user_is_not() {
    let n = |v: u32| NonZeroU32::new(v).expect("not zero");
    let f = fixture_with(LimitsConfig {
        user_requests_per_second: n(1),
        user_request_burst: n(3),
        ..generous()
    })
    .await;
    let client = http_from("127.0.0.1");
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(
            send(
                &f,
                &client,
                Some(&f.clinic_a),
                "GET",
                "/api/v1/pumps",
                None,
                &[],
            )
            .await,
        );
    }
    let statuses: Vec<StatusCode> = answers.iter().map(|a| a.0).collect();
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3], "{statuses:?}");
    let limited = answers
        .iter()
        .find(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
        .unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert_eq!(limited.2, Some(1), "Retry-After");
    assert!(
        limited.1["error"]
            .as_str()
            .unwrap_or_default()
            .contains("too many requests from this user"),
        "{:?}",
        limited.1
    );
    // Another user from the same address is served.
    let (status, _) = call(&f, Some(&f.clinic_b), "GET", "/api/v1/pumps", None).await;
    assert_eq!(status, StatusCode::OK);
    // The same user over gRPC shares the limit. A token comes back every second, and a
    // loaded machine may take that long to get here: a few calls in a row are more
    // than a second's worth, so one of them must be refused.
    let mut grpc = f.grpc.clone();
    let mut grpc_codes = Vec::new();
    for _ in 0..4 {
        let answer = grpc
            .list_pumps(with_token(pb::ListPumpsRequest {}, &f.clinic_a))
            .await;
        grpc_codes.push(code(answer));
    }
    assert!(
        grpc_codes.contains(&Some(tonic::Code::ResourceExhausted)),
        "{grpc_codes:?}"
    );
    grpc.list_pumps(with_token(pb::ListPumpsRequest {}, &f.manufacturer))
        .await
        .expect("another user is served over gRPC");
    assert!(rate_limited(&f, "http", "user_requests") >= 1.0);
    assert!(rate_limited(&f, "grpc", "user_requests") >= 1.0);
    assert_eq!(rate_limited(&f, "http", "auth_failures"), 0.0);
    // A limited user is not a failed authentication: nothing audited, nobody blocked.
    assert!(
        audit_rows(&f.pool)
            .await
            .iter()
            .all(|r| r.action != "rate_limited")
    );
    // A second later, one more request is allowed.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, _) = call(&f, Some(&f.clinic_a), "GET", "/api/v1/pumps", None).await;
    assert_eq!(status, StatusCode::OK);
}
