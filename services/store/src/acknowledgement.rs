//! Clinicians acknowledging alarms: recorded as made, and escalation stops.

use sqlx::PgPool;

/// What an acknowledgement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledged {
    /// The alarm is known to the notifier; its escalation (if any) is stopped.
    Known,
    /// Not seen yet (the page may still be on its way): recorded, and it will stop
    /// escalation as soon as the alarm arrives.
    NotYetSeen,
}

/// Records the acknowledgement and stops escalation, in one transaction.
pub async fn acknowledge(
    pool: &PgPool,
    alarm_id: &str,
    clinician: &str,
    note: &str,
) -> Result<Acknowledged, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let outcome = acknowledge_in(&mut tx, alarm_id, clinician, note).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// [`acknowledge`] inside the caller's transaction (the API writes its audit row in
/// the same one).
pub async fn acknowledge_in(
    tx: &mut sqlx::PgConnection,
    alarm_id: &str,
    clinician: &str,
    note: &str,
) -> Result<Acknowledged, sqlx::Error> {
    sqlx::query("INSERT INTO acknowledgement (alarm_id, clinician, note) VALUES ($1, $2, $3)")
        .bind(alarm_id)
        .bind(clinician)
        .bind(note)
        .execute(&mut *tx)
        .await?;
    let updated = sqlx::query(
        "UPDATE escalation SET due_at = NULL,
             acknowledged_at = COALESCE(acknowledged_at, now()),
             acknowledged_by = COALESCE(acknowledged_by, $2),
             note = COALESCE(note, $3)
         WHERE alarm_id = $1",
    )
    .bind(alarm_id)
    .bind(clinician)
    .bind(note)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let known = updated > 0
        || sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM page WHERE alarm_id = $1)")
            .bind(alarm_id)
            .fetch_one(&mut *tx)
            .await?;
    Ok(if known {
        Acknowledged::Known
    } else {
        Acknowledged::NotYetSeen
    })
}
