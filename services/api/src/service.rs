//! The API's operations and who may do what; the HTTP and gRPC transports both call
//! these. A clinic's user sees and acknowledges only the pumps the registry assigns to
//! its clinic; the manufacturer's user reads everything, device data only, and
//! acknowledges nothing. Every login, acknowledgement and denied access is written to
//! the audit log, with the caller's address, before the answer goes out. Failed
//! authentications per address and requests per user are rate limited (`limits.rs`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_report::pump::{PumpTimeline, Record};
use fleet_store::access::{self, Role, User};
use serde_json::json;
use sqlx::PgPool;

use crate::limits::{Failure, Limit, Limits, Origin};
use crate::metrics::ApiMetrics;
use crate::model::{
    AcknowledgeAnswer, AcknowledgeRequest, Acknowledgement, Alarm, AlarmDetail, AlarmFilter,
    AlarmRevision, Delivery, DeliveryAttempt, Pump,
};

/// Field lengths a client may send; longer is refused, not cut.
const MAX_FIELD_CHARS: usize = 200;
const MAX_NOTE_CHARS: usize = 2_000;
const DEFAULT_LIMIT: u32 = 200;
const MAX_LIMIT: u32 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid access token is required (Authorization: Bearer ...)")]
    Unauthenticated,
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the database is unavailable; try again")]
    Unavailable(#[from] sqlx::Error),
    /// A fault of ours (logged in full); the caller hears only that it happened.
    #[error("internal error; it has been logged")]
    Internal(String),
    /// Over a rate limit: 429 / RESOURCE_EXHAUSTED.
    #[error("{}; retry in {} s", limit_reason(*.limit), crate::limits::retry_seconds(*.retry_after))]
    RateLimited { limit: Limit, retry_after: Duration },
}

fn limit_reason(limit: Limit) -> &'static str {
    match limit {
        Limit::AuthFailures => "too many failed authentications from this address",
        Limit::UserRequests => "too many requests from this user",
    }
}

/// An authenticated call: who, and from where.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Service {
    pool: PgPool,
    limits: Arc<Limits>,
    metrics: ApiMetrics,
}

impl Service {
    pub fn new(pool: PgPool, limits: Arc<Limits>, metrics: ApiMetrics) -> Self {
        Self {
            pool,
            limits,
            metrics,
        }
    }

    /// The limits and trusted proxies (the transports ask it who is calling).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks a token and records the login (or the failed one).
    pub async fn login(&self, token: &str, origin: Origin) -> Result<User, ApiError> {
        self.not_blocked(origin)?;
        match access::user_for_token(&self.pool, token).await? {
            Some(user) => {
                self.within_user_rate(&user, origin)?;
                self.audit(
                    &user.name,
                    "login",
                    &user.name,
                    json!({"role": access::role_name(&user.role)}),
                    origin,
                )
                .await?;
                Ok(user)
            }
            None => {
                let failure = self.limits.failed(origin.addr);
                self.audit("(unknown token)", "login_failed", "", json!({}), origin)
                    .await?;
                self.audit_block(failure, "login", origin).await?;
                Err(ApiError::Unauthenticated)
            }
        }
    }

    /// The user behind a request's token; a missing or unknown token is a denied
    /// access, and audited as one. An address out of failed authentications is refused
    /// before its token is looked up.
    pub async fn authenticate(
        &self,
        token: Option<&str>,
        what: &str,
        origin: Origin,
    ) -> Result<Caller, ApiError> {
        self.not_blocked(origin)?;
        let user = match token {
            Some(token) => access::user_for_token(&self.pool, token).await?,
            None => None,
        };
        match user {
            Some(user) => {
                self.within_user_rate(&user, origin)?;
                Ok(Caller { user, origin })
            }
            None => {
                let why = if token.is_some() {
                    "unknown token"
                } else {
                    "no token"
                };
                let failure = self.limits.failed(origin.addr);
                self.audit(
                    "(anonymous)",
                    "denied",
                    what,
                    json!({"reason": why}),
                    origin,
                )
                .await?;
                self.audit_block(failure, what, origin).await?;
                Err(ApiError::Unauthenticated)
            }
        }
    }

    /// Refuses an address that has used up its failed authentications.
    fn not_blocked(&self, origin: Origin) -> Result<(), ApiError> {
        match self.limits.blocked(origin.addr) {
            None => Ok(()),
            Some(retry_after) => Err(self.refused(
                Limit::AuthFailures,
                &address(origin.addr),
                origin,
                retry_after,
            )),
        }
    }

    fn within_user_rate(&self, user: &User, origin: Origin) -> Result<(), ApiError> {
        self.limits.user_request(&user.name).map_err(|retry_after| {
            self.refused(Limit::UserRequests, &user.name, origin, retry_after)
        })
    }

    /// Counts and notes a refusal (logged in aggregate by the sweep, never per request).
    fn refused(&self, limit: Limit, who: &str, origin: Origin, retry_after: Duration) -> ApiError {
        self.metrics.rate_limited(origin.transport, limit.as_str());
        self.limits.note_refused(limit, who);
        ApiError::RateLimited { limit, retry_after }
    }

    /// The audit row of a new block: one per block, not one per refused request, so a
    /// guesser cannot flood the audit log.
    async fn audit_block(
        &self,
        failure: Failure,
        what: &str,
        origin: Origin,
    ) -> Result<(), ApiError> {
        if let Failure::NowBlocked { retry_after } = failure {
            self.audit(
                "(anonymous)",
                "rate_limited",
                what,
                json!({
                    "limit": Limit::AuthFailures.as_str(),
                    "blocked_seconds": retry_after.as_secs_f64(),
                }),
                origin,
            )
            .await?;
        }
        Ok(())
    }

    pub async fn list_alarms(
        &self,
        caller: &Caller,
        filter: AlarmFilter,
    ) -> Result<Vec<Alarm>, ApiError> {
        let user = &caller.user;
        check_filter(&filter)?;
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        let rows: Vec<AlarmRow> = sqlx::query_as(ALARMS)
            .bind(clinic_of(user))
            .bind(&filter.state)
            .bind(&filter.priority)
            .bind(&filter.kind)
            .bind(&filter.pump_id)
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.active)
            .bind(i64::from(limit))
            .bind(Option::<&str>::None)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| alarm(r, user)).collect())
    }

    pub async fn get_alarm(
        &self,
        caller: &Caller,
        alarm_id: &str,
    ) -> Result<AlarmDetail, ApiError> {
        let user = &caller.user;
        check_field("alarm_id", alarm_id, MAX_FIELD_CHARS)?;
        self.may_see_alarm(caller, alarm_id, "get_alarm").await?;
        let row: Option<AlarmRow> = sqlx::query_as(ALARMS)
            .bind(Option::<&str>::None)
            .bind(Option::<&str>::None)
            .bind(Option::<&str>::None)
            .bind(Option::<&str>::None)
            .bind(Option::<&str>::None)
            .bind(Option::<DateTime<Utc>>::None)
            .bind(Option::<DateTime<Utc>>::None)
            .bind(false)
            .bind(1_i64)
            .bind(alarm_id)
            .fetch_optional(&self.pool)
            .await?;
        let manufacturer = user.role == Role::Manufacturer;
        let alarm = row
            .map(|r| alarm(r, user))
            .ok_or_else(|| not_archived(alarm_id))?;
        let revisions: Vec<(i32, String, String, DateTime<Utc>, String, String)> = sqlx::query_as(
            "SELECT revision, state, priority, detected_at, message, evidence::text
             FROM alarm_event WHERE alarm_id = $1 ORDER BY revision",
        )
        .bind(alarm_id)
        .fetch_all(&self.pool)
        .await?;
        let revisions = revisions
            .into_iter()
            .map(
                |(revision, state, priority, detected_at, message, evidence)| AlarmRevision {
                    revision: revision.max(0) as u32,
                    state,
                    priority,
                    detected_at,
                    // A clinician's sentence and the detector's numbers carry the drug,
                    // the dose rate and the reservoir: the clinic's, not the maker's.
                    message: if manufacturer { String::new() } else { message },
                    evidence: if manufacturer {
                        serde_json::json!({})
                    } else {
                        serde_json::from_str(&evidence).unwrap_or_default()
                    },
                },
            )
            .collect();
        // Pages and acknowledgements name clinics and staff: the clinic's business.
        let (deliveries, acknowledgements) = match &user.role {
            Role::Manufacturer => (Vec::new(), Vec::new()),
            Role::Clinic(clinic) => (
                self.deliveries(alarm_id, clinic).await?,
                self.acknowledgements(alarm_id).await?,
            ),
        };
        Ok(AlarmDetail {
            alarm,
            revisions,
            deliveries,
            acknowledgements,
        })
    }

    pub async fn acknowledge(
        &self,
        caller: &Caller,
        alarm_id: &str,
        request: &AcknowledgeRequest,
    ) -> Result<AcknowledgeAnswer, ApiError> {
        let user = &caller.user;
        // The role first: a read-only user's attempt is denied (and audited) whatever
        // else is wrong with it.
        if user.role == Role::Manufacturer {
            return Err(self
                .deny(
                    caller,
                    "acknowledge",
                    alarm_id,
                    "the manufacturer's role is read-only",
                )
                .await);
        }
        check_field("alarm_id", alarm_id, MAX_FIELD_CHARS)?;
        check_field("clinician", &request.clinician, MAX_FIELD_CHARS)?;
        if request.note.chars().count() > MAX_NOTE_CHARS {
            return Err(ApiError::Invalid(format!(
                "note is longer than {MAX_NOTE_CHARS} characters"
            )));
        }
        self.may_see_alarm(caller, alarm_id, "acknowledge").await?;
        // The acknowledgement and its audit row commit together or not at all.
        let mut tx = self.pool.begin().await?;
        let outcome = fleet_store::acknowledgement::acknowledge_in(
            &mut tx,
            alarm_id,
            &request.clinician,
            &request.note,
        )
        .await?;
        access::audit(
            &mut *tx,
            &user.name,
            "acknowledge",
            alarm_id,
            &with_origin(
                json!({"clinician": request.clinician, "note": request.note}),
                caller.origin,
            ),
            caller.origin.addr,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(%alarm_id, user = %user.name, clinician = %request.clinician, ?outcome, "alarm acknowledged");
        Ok(AcknowledgeAnswer {
            known: outcome == fleet_store::acknowledgement::Acknowledged::Known,
        })
    }

    pub async fn list_pumps(&self, caller: &Caller) -> Result<Vec<Pump>, ApiError> {
        let user = &caller.user;
        let rows: Vec<PumpRow> = sqlx::query_as(PUMPS)
            .bind(clinic_of(user))
            .fetch_all(&self.pool)
            .await?;
        let manufacturer = user.role == Role::Manufacturer;
        Ok(rows
            .into_iter()
            .map(|r| Pump {
                pump_id: r.0,
                clinic_id: (!manufacturer).then_some(r.1),
                model: r.2,
                firmware: r.3,
                last_contact: r.4,
                open_alarms: r.8.max(0) as u32,
                drug: r.5.filter(|_| !manufacturer),
                reservoir_ml: r.6.filter(|_| !manufacturer),
                refill_due_at: r.7.filter(|_| !manufacturer),
            })
            .collect())
    }

    pub async fn pump_timeline(
        &self,
        caller: &Caller,
        pump_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<PumpTimeline, ApiError> {
        let user = &caller.user;
        check_field("pump_id", pump_id, MAX_FIELD_CHARS)?;
        let window =
            fleet_report::Window::new(from, to).map_err(|e| ApiError::Invalid(e.to_string()))?;
        if let Role::Clinic(clinic) = &user.role {
            let owner: Option<String> =
                sqlx::query_scalar("SELECT clinic_id FROM pump WHERE pump_id = $1")
                    .bind(pump_id)
                    .fetch_optional(&self.pool)
                    .await?;
            if owner.as_deref() != Some(clinic.as_str()) {
                return Err(self
                    .deny(
                        caller,
                        "pump_timeline",
                        pump_id,
                        "the pump is not this clinic's",
                    )
                    .await);
            }
        }
        let mut timeline = fleet_report::pump::build(&self.pool, pump_id, window)
            .await
            .map_err(|e| match e {
                fleet_report::ReportError::UnknownPump(_) => ApiError::NotFound(e.to_string()),
                fleet_report::ReportError::Database(e) => ApiError::Unavailable(e),
                other => ApiError::Invalid(other.to_string()),
            })?;
        if user.role == Role::Manufacturer {
            device_only(&mut timeline);
        }
        Ok(timeline)
    }

    /// Allows a clinic's user only the alarms of its own pumps; an alarm nobody has
    /// heard of is NOT_FOUND (a clinic learns alarm ids from pages and the dashboard,
    /// both after the notifier has the alarm).
    async fn may_see_alarm(
        &self,
        caller: &Caller,
        alarm_id: &str,
        action: &str,
    ) -> Result<(), ApiError> {
        let user = &caller.user;
        // Every record of the alarm (archived events and pages) must name a pump of the
        // caller's clinic; a pump outside the registry belongs to no clinic.
        let (records, all_mine): (i64, Option<bool>) = sqlx::query_as(
            "SELECT count(*), bool_and(p.clinic_id IS NOT DISTINCT FROM $2 AND $2 IS NOT NULL)
             FROM (SELECT pump_id FROM alarm_event WHERE alarm_id = $1
                   UNION SELECT pump_id FROM page WHERE alarm_id = $1) a
             LEFT JOIN pump p USING (pump_id)",
        )
        .bind(alarm_id)
        .bind(clinic_of(user))
        .fetch_one(&self.pool)
        .await?;
        if records == 0 {
            return Err(ApiError::NotFound(format!("no alarm {alarm_id}")));
        }
        match &user.role {
            Role::Clinic(_) if all_mine != Some(true) => Err(self
                .deny(caller, action, alarm_id, "the alarm is another clinic's")
                .await),
            _ => Ok(()),
        }
    }

    /// The alarm's pages to this clinic (a pump that changed clinics keeps its earlier
    /// clinic's pages private to that clinic).
    async fn deliveries(&self, alarm_id: &str, clinic: &str) -> Result<Vec<Delivery>, ApiError> {
        type Row = (
            i32,
            i32,
            String,
            String,
            i32,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT revision, escalation, target, status, attempts, created_at, delivered_at, last_error
             FROM page WHERE alarm_id = $1 AND clinic_id = $2 ORDER BY seq",
        )
        .bind(alarm_id)
        .bind(clinic)
        .fetch_all(&self.pool)
        .await?;
        type AttemptRow = (i32, i32, i32, DateTime<Utc>, String, String, bool, String);
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT a.revision, a.escalation, a.attempt, a.at, a.target, a.endpoint, a.accepted,
                    a.detail
             FROM page_attempt a JOIN page p USING (alarm_id, revision, escalation)
             WHERE a.alarm_id = $1 AND p.clinic_id = $2
             ORDER BY a.revision, a.escalation, a.attempt",
        )
        .bind(alarm_id)
        .bind(clinic)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Delivery {
                history: attempts
                    .iter()
                    .filter(|a| (a.0, a.1) == (r.0, r.1))
                    .map(|a| DeliveryAttempt {
                        attempt: a.2.max(0) as u32,
                        at: a.3,
                        target: a.4.clone(),
                        endpoint: a.5.clone(),
                        accepted: a.6,
                        detail: a.7.clone(),
                    })
                    .collect(),
                revision: r.0.max(0) as u32,
                escalation: r.1.max(0) as u32,
                target: r.2,
                status: r.3,
                attempts: r.4.max(0) as u32,
                created_at: r.5,
                delivered_at: r.6,
                last_error: r.7,
            })
            .collect())
    }

    async fn acknowledgements(&self, alarm_id: &str) -> Result<Vec<Acknowledgement>, ApiError> {
        let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT clinician, note, acknowledged_at FROM acknowledgement
             WHERE alarm_id = $1 ORDER BY acknowledged_at",
        )
        .bind(alarm_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(clinician, note, at)| Acknowledgement {
                clinician,
                note,
                at,
            })
            .collect())
    }

    /// Audits a denied access and returns the error to answer with.
    async fn deny(&self, caller: &Caller, action: &str, subject: &str, why: &str) -> ApiError {
        let user = &caller.user;
        tracing::warn!(user = %user.name, address = %address(caller.origin.addr), %action, %subject, reason = %why, "access denied");
        if let Err(e) = self
            .audit(
                &user.name,
                "denied",
                subject,
                json!({"action": action, "reason": why}),
                caller.origin,
            )
            .await
        {
            return e;
        }
        ApiError::Denied(format!("{action} {subject}: {why}"))
    }

    /// Appends to the audit log with the caller's address (subjects cut to 200
    /// characters: a request path is chosen by the caller).
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
        origin: Origin,
    ) -> Result<(), ApiError> {
        let subject: String = subject.chars().take(200).collect();
        let detail = with_origin(detail, origin);
        access::audit(&self.pool, actor, action, &subject, &detail, origin.addr).await.map_err(|e| {
            tracing::error!(error = %e, %actor, %action, "audit log not written: refusing the request");
            ApiError::Unavailable(e)
        })
    }
}

/// An audit row's details, with the proxy the call came through (when a trusted one
/// named the caller) and the transport.
fn with_origin(mut detail: serde_json::Value, origin: Origin) -> serde_json::Value {
    if let Some(map) = detail.as_object_mut() {
        map.insert("transport".into(), origin.transport.into());
        if let Some(via) = origin.via {
            map.insert("via".into(), via.to_string().into());
        }
    }
    detail
}

/// An address for logs (never a token).
fn address(addr: Option<IpAddr>) -> String {
    addr.map_or_else(|| "(unknown)".to_owned(), |a| a.to_string())
}

/// What the manufacturer may see of a timeline: the device's own measurements and
/// events, and that alarms happened. Not the therapy (reservoir, refills, dose changes,
/// boluses), not the alarms' wording (it names drug and dose), not pages or
/// acknowledgements (clinics and staff, and notes may mention patients).
fn device_only(timeline: &mut PumpTimeline) {
    timeline.rows.retain(|r| match r.record {
        Record::Page | Record::Acknowledgement => false,
        Record::Event => !matches!(r.what.as_str(), "REFILL" | "REPROGRAM" | "BOLUS"),
        Record::Reading | Record::Alarm => true,
    });
    for row in &mut timeline.rows {
        match row.record {
            Record::Reading => row.reservoir_ml = None,
            Record::Alarm => row.detail.clear(),
            Record::Event | Record::Page | Record::Acknowledgement => {}
        }
    }
}

fn clinic_of(user: &User) -> Option<&str> {
    match &user.role {
        Role::Clinic(id) => Some(id.as_str()),
        Role::Manufacturer => None,
    }
}

fn not_archived(alarm_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "alarm {alarm_id} is not in the archive yet (the archiver stores alarm events within seconds)"
    ))
}

fn check_field(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::Invalid(format!("{name} is empty")));
    }
    if value.chars().count() > max {
        return Err(ApiError::Invalid(format!(
            "{name} is longer than {max} characters"
        )));
    }
    Ok(())
}

fn check_filter(filter: &AlarmFilter) -> Result<(), ApiError> {
    let one_of = |name: &str, value: &Option<String>, allowed: &[&str]| match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::Invalid(format!(
            "{name} '{v}' is not one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    };
    one_of("state", &filter.state, &["RAISED", "UPDATED", "CLEARED"])?;
    one_of("priority", &filter.priority, &["HIGH", "MEDIUM", "LOW"])?;
    for (name, value) in [("kind", &filter.kind), ("pump_id", &filter.pump_id)] {
        if let Some(v) = value {
            check_field(name, v, MAX_FIELD_CHARS)?;
        }
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        return Err(ApiError::Invalid("since must be before until".into()));
    }
    Ok(())
}

type AlarmRow = (
    String,
    i32,
    String,
    Option<String>,
    String,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    Option<DateTime<Utc>>,
    Option<String>,
);

fn alarm(r: AlarmRow, user: &User) -> Alarm {
    let manufacturer = user.role == Role::Manufacturer;
    Alarm {
        alarm_id: r.0,
        revision: r.1.max(0) as u32,
        pump_id: r.2,
        clinic_id: r.3.filter(|_| user.role != Role::Manufacturer),
        kind: r.4,
        priority: r.5,
        state: r.6,
        raised_at: r.7,
        updated_at: r.8,
        // The message names the drug and the dose: the clinic's business.
        message: if manufacturer { String::new() } else { r.9 },
        acknowledged_at: r.10,
        acknowledged_by: r.11.filter(|_| user.role != Role::Manufacturer),
    }
}

/// Latest revision per episode, scoped to a clinic ($1) when given, filtered, most
/// urgent first: priority, then the oldest raised. $10 picks one alarm.
const ALARMS: &str = "
WITH latest AS (
    SELECT DISTINCT ON (a.alarm_id) a.alarm_id, a.revision, a.pump_id, a.kind, a.priority,
           a.state, a.detected_at, a.message
    FROM alarm_event a
    WHERE ($10::text IS NULL OR a.alarm_id = $10)
      AND ($1::text IS NULL OR a.pump_id IN (SELECT pump_id FROM pump WHERE clinic_id = $1))
    ORDER BY a.alarm_id, a.revision DESC
)
SELECT l.alarm_id, l.revision, l.pump_id, p.clinic_id, l.kind, l.priority, l.state,
       (SELECT min(f.detected_at) FROM alarm_event f WHERE f.alarm_id = l.alarm_id) AS raised_at,
       l.detected_at, l.message, k.acknowledged_at, k.clinician
FROM latest l
LEFT JOIN pump p USING (pump_id)
LEFT JOIN LATERAL (
    SELECT acknowledged_at, clinician FROM acknowledgement
    WHERE acknowledgement.alarm_id = l.alarm_id ORDER BY acknowledged_at LIMIT 1) k ON true
WHERE ($2::text IS NULL OR l.state = $2)
  AND ($3::text IS NULL OR l.priority = $3)
  AND ($4::text IS NULL OR l.kind = $4)
  AND ($5::text IS NULL OR l.pump_id = $5)
  AND ($6::timestamptz IS NULL OR l.detected_at >= $6)
  AND ($7::timestamptz IS NULL OR l.detected_at < $7)
  AND (NOT $8 OR l.state <> 'CLEARED')
ORDER BY CASE l.priority WHEN 'HIGH' THEN 0 WHEN 'MEDIUM' THEN 1 ELSE 2 END, raised_at, l.alarm_id
LIMIT $9";

type PumpRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<f64>,
    Option<DateTime<Utc>>,
    i64,
);

/// The registry's pumps (of one clinic when $1 is given), each with its latest
/// archived reading and its episodes not cleared.
const PUMPS: &str = "
SELECT p.pump_id, p.clinic_id, r.model, r.firmware, r.measured_at, r.drug, r.reservoir_ml,
       r.refill_due_at,
       (SELECT count(*) FROM (
            SELECT DISTINCT ON (a.alarm_id) a.state FROM alarm_event a
            WHERE a.pump_id = p.pump_id ORDER BY a.alarm_id, a.revision DESC) s
        WHERE s.state <> 'CLEARED') AS open_alarms
FROM pump p
LEFT JOIN LATERAL (
    SELECT model, firmware, measured_at, drug, reservoir_ml, refill_due_at FROM reading
    WHERE reading.pump_id = p.pump_id ORDER BY seq DESC LIMIT 1) r ON true
WHERE ($1::text IS NULL OR p.clinic_id = $1)
ORDER BY p.pump_id";
