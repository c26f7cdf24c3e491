//! The delivery log in PostgreSQL (`services/store/migrations/0003_paging.sql`): pages
//! to deliver and delivered, escalation timers. Every change a replica makes is one
//! statement or one transaction, and rows being worked on are leased (`FOR UPDATE SKIP
//! LOCKED`), so any number of notifier replicas share the work without paging twice.

use std::time::Duration;

use fleet_core::{AlarmEvent, AlarmPriority, AlarmState, protobuf};
use sqlx::{PgConnection, PgPool, Row};

/// What receivers deduplicate on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub alarm_id: String,
    pub revision: i32,
    pub escalation: i32,
}

/// Where a page is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    Escalation,
    Fallback,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Primary => "primary",
            Target::Escalation => "escalation",
            Target::Fallback => "fallback",
        }
    }

    fn parse(name: &str) -> Target {
        match name {
            "escalation" => Target::Escalation,
            "fallback" => Target::Fallback,
            _ => Target::Primary,
        }
    }
}

/// A page claimed for delivery.
#[derive(Debug, Clone)]
pub struct Page {
    pub key: PageKey,
    pub clinic_id: String,
    pub target: Target,
    /// Attempts made before this one.
    pub attempts: i32,
    pub operator_alerted: bool,
    pub event: AlarmEvent,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Records an alarm event's page (and keeps its escalation timer), once: a replayed
/// event changes nothing. Runs inside the caller's transaction (`tx`), so a batch of
/// events costs one commit. Returns whether the page is new.
pub async fn enqueue(
    tx: &mut PgConnection,
    event: &AlarmEvent,
    clinic_id: &str,
    escalation_after: Duration,
) -> Result<bool, sqlx::Error> {
    let bytes = protobuf::encode_alarm(event);
    let revision = i32::try_from(event.revision).unwrap_or(i32::MAX);
    let priority = event.priority.name();
    let inserted = sqlx::query(
        "INSERT INTO page (alarm_id, revision, escalation, pump_id, clinic_id, priority, state, event)
         VALUES ($1, $2, 0, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&event.alarm_id)
    .bind(revision)
    .bind(&event.pump_id)
    .bind(clinic_id)
    .bind(priority)
    .bind(event.state.name())
    .bind(&bytes)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        return Ok(false);
    }
    match (event.state, event.priority) {
        (AlarmState::Cleared, _) => {
            sqlx::query(
                "UPDATE escalation SET cleared_at = now(), due_at = NULL WHERE alarm_id = $1",
            )
            .bind(&event.alarm_id)
            .execute(&mut *tx)
            .await?;
        }
        (_, AlarmPriority::Low) => {
            sqlx::query(
                "UPDATE escalation SET priority = 'LOW', revision = $2, event = $3, due_at = NULL
                 WHERE alarm_id = $1 AND revision < $2",
            )
            .bind(&event.alarm_id)
            .bind(revision)
            .bind(&bytes)
            .execute(&mut *tx)
            .await?;
        }
        (_, _) => {
            // HIGH or MEDIUM: a timer from now, unless one is already running; an
            // older revision arriving late does not overwrite a newer one.
            sqlx::query(
                "INSERT INTO escalation (alarm_id, pump_id, clinic_id, priority, revision, event, due_at)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + $7 * interval '1 millisecond')
                 ON CONFLICT (alarm_id) DO UPDATE SET
                   priority = CASE WHEN EXCLUDED.revision > escalation.revision THEN EXCLUDED.priority ELSE escalation.priority END,
                   event = CASE WHEN EXCLUDED.revision > escalation.revision THEN EXCLUDED.event ELSE escalation.event END,
                   revision = GREATEST(escalation.revision, EXCLUDED.revision),
                   due_at = CASE
                     WHEN escalation.acknowledged_at IS NOT NULL OR escalation.cleared_at IS NOT NULL THEN NULL
                     WHEN escalation.due_at IS NULL AND EXCLUDED.revision > escalation.revision
                          AND (EXCLUDED.priority = 'HIGH' OR escalation.level = 0) THEN EXCLUDED.due_at
                     ELSE escalation.due_at END",
            )
            .bind(&event.alarm_id)
            .bind(&event.pump_id)
            .bind(clinic_id)
            .bind(priority)
            .bind(revision)
            .bind(&bytes)
            .bind(millis(escalation_after))
            .execute(&mut *tx)
            .await?;
            // Acknowledged before this event was seen: no escalation.
            sqlx::query(
                "UPDATE escalation SET due_at = NULL WHERE alarm_id = $1
                 AND EXISTS (SELECT 1 FROM acknowledgement a WHERE a.alarm_id = $1)",
            )
            .bind(&event.alarm_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(true)
}

/// Leases up to `limit` pages that are due, in arrival order, at most one per pump
/// (a pump's next page waits until the one before it is accepted), skipping clinics
/// whose circuit is open.
pub async fn claim(
    pool: &PgPool,
    limit: usize,
    open_clinics: &[String],
    lease: Duration,
) -> Result<Vec<Page>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH due AS (
           SELECT p.alarm_id, p.revision, p.escalation FROM page p
           WHERE p.status = 'pending' AND p.next_attempt_at <= now()
             AND (p.lease_until IS NULL OR p.lease_until < now())
             AND p.clinic_id <> '' AND NOT (p.clinic_id = ANY($2))
             AND NOT EXISTS (SELECT 1 FROM page q WHERE q.status = 'pending'
                             AND q.pump_id = p.pump_id AND q.seq < p.seq)
           ORDER BY p.seq LIMIT $1
           FOR UPDATE OF p SKIP LOCKED)
         UPDATE page SET lease_until = now() + $3 * interval '1 millisecond'
         FROM due
         WHERE page.alarm_id = due.alarm_id AND page.revision = due.revision
           AND page.escalation = due.escalation
         RETURNING page.alarm_id, page.revision, page.escalation, page.clinic_id, page.target,
                   page.attempts, page.operator_alerted, page.event, page.seq",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(open_clinics)
    .bind(millis(lease))
    .fetch_all(pool)
    .await?;
    let mut pages = Vec::with_capacity(rows.len());
    for row in rows {
        let alarm_id: String = row.try_get("alarm_id")?;
        let bytes: Vec<u8> = row.try_get("event")?;
        let event = protobuf::decode_alarm(&bytes).map_err(|e| {
            sqlx::Error::Decode(format!("page {alarm_id}: stored alarm event: {e}").into())
        })?;
        pages.push((
            row.try_get::<i64, _>("seq")?,
            Page {
                key: PageKey {
                    alarm_id,
                    revision: row.try_get("revision")?,
                    escalation: row.try_get("escalation")?,
                },
                clinic_id: row.try_get("clinic_id")?,
                target: Target::parse(row.try_get::<&str, _>("target")?),
                attempts: row.try_get("attempts")?,
                operator_alerted: row.try_get("operator_alerted")?,
                event,
            },
        ));
    }
    pages.sort_by_key(|(seq, _)| *seq);
    Ok(pages.into_iter().map(|(_, p)| p).collect())
}

/// One delivery attempt: which page, and where it went.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub key: &'a PageKey,
    /// The receiver's URL ('' when the clinic was not in the registry).
    pub endpoint: &'a str,
    pub target: Target,
}

/// A page update (`$1`-`$3` its key) that also appends the attempt to the page's
/// history, numbered by the page's new attempt count, in the same statement. The
/// update returns `accepted` and `detail`; `$4`, `$5` are the endpoint and target.
macro_rules! and_record_attempt {
    ($update:literal) => {
        concat!(
            "WITH updated AS (",
            $update,
            ") INSERT INTO page_attempt
               (alarm_id, revision, escalation, attempt, endpoint, target, accepted, detail)
             SELECT alarm_id, revision, escalation, attempts, $4, $5, accepted, detail
             FROM updated ON CONFLICT DO NOTHING"
        )
    };
}

/// The receiver accepted the page.
pub async fn delivered(
    pool: &PgPool,
    attempt: Attempt<'_>,
    receipt_id: &str,
) -> Result<(), sqlx::Error> {
    let sql = and_record_attempt!(
        "UPDATE page SET status = 'delivered', receipt_id = $6, delivered_at = now(),
             attempts = attempts + 1, lease_until = NULL, last_error = NULL, target = $5
         WHERE alarm_id = $1 AND revision = $2 AND escalation = $3
         RETURNING alarm_id, revision, escalation, attempts, true AS accepted, $6 AS detail"
    );
    record(sql, attempt).bind(receipt_id).execute(pool).await?;
    Ok(())
}

/// An attempt failed: try again after `retry_in`, to `next` (the fallback, once the
/// page is past its bound).
pub async fn failed(
    pool: &PgPool,
    attempt: Attempt<'_>,
    error: &str,
    retry_in: Duration,
    next: Target,
    operator_alerted: bool,
) -> Result<(), sqlx::Error> {
    let sql = and_record_attempt!(
        "UPDATE page SET attempts = attempts + 1, last_error = $6, lease_until = NULL,
             next_attempt_at = now() + $7 * interval '1 millisecond', target = $8,
             operator_alerted = $9
         WHERE alarm_id = $1 AND revision = $2 AND escalation = $3
         RETURNING alarm_id, revision, escalation, attempts, false AS accepted, $6 AS detail"
    );
    record(sql, attempt)
        .bind(error)
        .bind(millis(retry_in))
        .bind(next.name())
        .bind(operator_alerted)
        .execute(pool)
        .await?;
    Ok(())
}

/// The statement with the attempt's own parameters bound as `$1`-`$5`.
fn record<'q>(
    sql: &'static str,
    attempt: Attempt<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(&attempt.key.alarm_id)
        .bind(attempt.key.revision)
        .bind(attempt.key.escalation)
        .bind(attempt.endpoint)
        .bind(attempt.target.name())
}

/// Fires escalation timers that are due: each becomes a page (to the escalation
/// receiver) in the same transaction as the timer's next step, so exactly one replica
/// escalates, once. HIGH alarms re-arm at the clinic's interval; MEDIUM escalate once.
/// Returns the number of escalation pages created.
pub async fn escalate_due(pool: &PgPool, limit: usize) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "WITH due AS (
           SELECT e.alarm_id FROM escalation e WHERE e.due_at <= now()
           ORDER BY e.due_at LIMIT $1 FOR UPDATE OF e SKIP LOCKED)
         UPDATE escalation e SET level = e.level + 1,
           due_at = CASE WHEN e.priority = 'HIGH'
             THEN GREATEST(e.due_at + c.escalation_after_ms * interval '1 millisecond', now())
             ELSE NULL END
         FROM due, clinic c
         WHERE e.alarm_id = due.alarm_id AND c.id = e.clinic_id
         RETURNING e.alarm_id, e.revision, e.level, e.pump_id, e.clinic_id, e.priority, e.event",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    let count = rows.len();
    for row in rows {
        sqlx::query(
            "INSERT INTO page (alarm_id, revision, escalation, pump_id, clinic_id, priority, state, event, target)
             VALUES ($1, $2, $3, $4, $5, $6, 'ESCALATED', $7, 'escalation') ON CONFLICT DO NOTHING",
        )
        .bind(row.try_get::<String, _>("alarm_id")?)
        .bind(row.try_get::<i32, _>("revision")?)
        .bind(row.try_get::<i32, _>("level")?)
        .bind(row.try_get::<String, _>("pump_id")?)
        .bind(row.try_get::<String, _>("clinic_id")?)
        .bind(row.try_get::<String, _>("priority")?)
        .bind(row.try_get::<Vec<u8>, _>("event")?)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(count)
}
