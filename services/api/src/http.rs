//! The API over HTTP/JSON, for the dashboard and for scripts: the same operations as
//! gRPC, `Authorization: Bearer <token>` on every call but the login.
//!
//! | method and path | operation |
//! |---|---|
//! | `POST /api/v1/login` `{"token": ...}` | check a token, audited; answers who it is |
//! | `GET /api/v1/alarms?state=&priority=&kind=&pump_id=&since=&until=&active=&limit=` | ListAlarms |
//! | `GET /api/v1/alarms/{alarm_id}` | GetAlarm |
//! | `POST /api/v1/alarms/{alarm_id}/acknowledge` `{"clinician": ..., "note": ...}` | AcknowledgeAlarm |
//! | `GET /api/v1/pumps` | ListPumps |
//! | `GET /api/v1/pumps/{pump_id}/timeline?from=&to=` | GetPumpTimeline |
//! | `GET /api/v1/pumps/{pump_id}/chart.svg?from=&to=` | the pump page's chart |
//! | `GET /`, `/dashboard.js`, `/dashboard.css` | the clinic dashboard (no token needed to load it) |
//!
//! Errors are `{"error": "..."}` with 400, 401, 403, 404, 429 (with `Retry-After`) or
//! 503. The caller's address is the TCP peer's (served with
//! `into_make_service_with_connect_info`), or the client a trusted proxy names in
//! `X-Forwarded-For` (see `limits.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use fleet_store::access::{self, User};
use serde::{Deserialize, Serialize};

use crate::limits::Origin;
use crate::metrics::ApiMetrics;
use crate::model::{AcknowledgeRequest, AlarmFilter, Me};
use crate::service::{ApiError, Caller, Service};

// The dashboard: three files, built into the binary, nothing fetched from elsewhere.
const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("../dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../dashboard/dashboard.css");

/// Only this server's own scripts, styles and API; no framing by other sites.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

async fn dashboard_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// Bodies larger than this are refused before they are read.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn router(service: Arc<Service>, metrics: ApiMetrics) -> Router {
    Router::new()
        .route(
            "/",
            get(|| dashboard_file(INDEX_HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/dashboard.js",
            get(|| dashboard_file(DASHBOARD_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/dashboard.css",
            get(|| dashboard_file(DASHBOARD_CSS, "text/css; charset=utf-8")),
        )
        .route("/api/v1/login", post(login))
        .route("/api/v1/alarms", get(list_alarms))
        .route("/api/v1/alarms/{alarm_id}", get(get_alarm))
        .route("/api/v1/alarms/{alarm_id}/acknowledge", post(acknowledge))
        .route("/api/v1/pumps", get(list_pumps))
        .route("/api/v1/pumps/{pump_id}/timeline", get(timeline))
        .route("/api/v1/pumps/{pump_id}/chart.svg", get(chart))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(metrics, observed))
        .with_state(service)
}

/// Counts each call by its route template (never the path: it holds ids) and status.
async fn observed(
    State(metrics): State<ApiMetrics>,
    route: MatchedPath,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let operation = format!("{} {}", request.method(), route.as_str());
    let response = next.run(request).await;
    metrics.observe(
        "http",
        &operation,
        response.status().as_str(),
        started.elapsed(),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Denied(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(e) => {
                tracing::error!(error = %e, "database error answering an API call");
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error answering an API call");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = Json(serde_json::json!({"error": self.to_string()}));
        let mut response = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let ApiError::RateLimited { retry_after, .. } = &self {
            let seconds = crate::limits::retry_seconds(*retry_after);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// Where the call came from: the TCP peer, or the client a trusted proxy names.
fn origin(parts: &Parts, service: &Service) -> Origin {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    service.limits().origin("http", peer, forwarded)
}

/// The call's origin, for the one route without a token in its header (the login).
#[derive(Debug)]
pub struct CallOrigin(pub Origin);

impl FromRequestParts<Arc<Service>> for CallOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<Service>,
    ) -> Result<Self, Self::Rejection> {
        Ok(CallOrigin(origin(parts, service)))
    }
}

/// The caller, from `Authorization: Bearer <token>` and the connection.
#[derive(Debug)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<Arc<Service>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<Service>,
    ) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let what = format!("{} {}", parts.method, parts.uri.path());
        let origin = origin(parts, service);
        service
            .authenticate(token, &what, origin)
            .await
            .map(Authenticated)
    }
}

/// JSON bodies and query strings that do not parse are 400 with serde's reason.
fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(e.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    token: String,
}

async fn login(
    State(service): State<Arc<Service>>,
    CallOrigin(origin): CallOrigin,
    body: Result<Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Me>, ApiError> {
    let Json(request) = body.map_err(invalid)?;
    let user = service.login(&request.token, origin).await?;
    Ok(Json(me(&user)))
}

fn me(user: &User) -> Me {
    Me {
        name: user.name.clone(),
        role: access::role_name(&user.role),
        clinic_id: match &user.role {
            access::Role::Clinic(id) => Some(id.clone()),
            access::Role::Manufacturer => None,
        },
    }
}

async fn list_alarms(
    State(service): State<Arc<Service>>,
    Authenticated(caller): Authenticated,
    filter: Result<Query<AlarmFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(filter) = filter.map_err(invalid)?;
    Ok(Json(service.list_alarms(&caller, filter).await?))
}

async fn get_alarm(
    State(service): State<Arc<Service>>,
    Authenticated(caller): Authenticated,
    Path(alarm_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(service.get_alarm(&caller, &alarm_id).await?))
}

async fn acknowledge(
    State(service): State<Arc<Service>>,
    Authenticated(caller): Authenticated,
    Path(alarm_id): Path<String>,
    body: Result<Json<AcknowledgeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(request) = body.map_err(invalid)?;
    Ok(Json(
        service.acknowledge(&caller, &alarm_id, &request).await?,
    ))
}

async fn list_pumps(
    State(service): State<Arc<Service>>,
    Authenticated(caller): Authenticated,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(service.list_pumps(&caller).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineQuery {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// One timeline row as JSON.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    at: DateTime<Utc>,
    record: &'a str,
    what: &'a str,
    readings: Option<i64>,
    reservoir_ml: Option<f64>,
    battery_pct: Option<f64>,
    battery_v: Option<f64>,
    catheter_pressure_kpa: Option<f64>,
    motor_current_ma: Option<f64>,
    detail: &'a str,
}

type WindowQuery = Result<Query<TimelineQuery>, axum::extract::rejection::QueryRejection>;

/// The timeline behind both the JSON timeline and the chart.
async fn pump_timeline(
    service: &Service,
    caller: &Caller,
    pump_id: &str,
    query: WindowQuery,
) -> Result<fleet_report::pump::PumpTimeline, ApiError> {
    let Query(q) = query.map_err(invalid)?;
    service.pump_timeline(caller, pump_id, q.from, q.to).await
}

/// The pump page's chart: reservoir, battery and pressure with events, alarms and
/// pages marked (the same drawing as `fleetctl report pump`).
async fn chart(
    State(service): State<Arc<Service>>,
    Authenticated(caller): Authenticated,
    Path(pump_id): Path<String>,
    query: WindowQuery,
) -> Result<Response, ApiError> {
    let timeline = pump_timeline(&service, &caller, &pump_id, query).await?;
    let svg = timeline
        .to_svg()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        svg,
    )
        .into_response())
}

async fn timeline(
    State(service): State<Arc<Service>>,
    Authenticated(caller): Authenticated,
    Path(pump_id): Path<String>,
    query: WindowQuery,
) -> Result<Response, ApiError> {
    let timeline = pump_timeline(&service, &caller, &pump_id, query).await?;
    let entries: Vec<Entry> = timeline
        .rows
        .iter()
        .map(|r| Entry {
            at: r.at,
            record: r.record.as_str(),
            what: &r.what,
            readings: r.readings,
            reservoir_ml: r.reservoir_ml,
            battery_pct: r.battery_pct,
            battery_v: r.battery_v,
            catheter_pressure_kpa: r.catheter_pressure_kpa,
            motor_current_ma: r.motor_current_ma,
            detail: &r.detail,
        })
        .collect();
    Ok(Json(serde_json::json!({
        "pump_id": timeline.pump_id,
        "bucket_seconds": timeline.bucket_seconds,
        "entries": entries,
    }))
    .into_response())
}
