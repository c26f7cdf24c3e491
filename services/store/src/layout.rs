//! Which storage path the archive takes: plain PostgreSQL (monthly range partitions
//! made by the archiver) or TimescaleDB (a compressed hypertable). Recorded in the
//! one-row `archive_layout` table (migration 0006) so anyone can tell which path a
//! database took: `SELECT path, reason FROM archive_layout`.
//!
//! The choice is made once, by the archiver at start-up: TimescaleDB when the server
//! offers the extension and the archive is still empty (a partitioned table with rows
//! cannot become a hypertable in place). Anything else, including a conversion that
//! fails, leaves the archive on the plain path, with the reason recorded and logged.
//! Both paths serve the same queries, and the daily rollup (`pump_day`) is the
//! archiver's table on both: it is written in the readings' own transaction, so it is
//! exact through replays and never waits for a refresh, which a continuous aggregate
//! would.

use sqlx::PgPool;

/// The statements that move an empty archive onto TimescaleDB.
const CONVERT: &str = include_str!("../timescaledb/convert.sql");

/// Serialises replicas settling the layout at the same moment.
const LOCK_KEY: i64 = 0x0061_7263_6869_7665; // "archive" in ASCII

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Partitioned,
    TimescaleDb,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Partitioned => "partitioned",
            Layout::TimescaleDb => "timescaledb",
        }
    }
}

/// The path the archive has taken, and why.
pub async fn current(pool: &PgPool) -> Result<(Layout, String), sqlx::Error> {
    let (path, reason): (String, String) =
        sqlx::query_as("SELECT path, reason FROM archive_layout")
            .fetch_one(pool)
            .await?;
    let layout = if path == "timescaledb" {
        Layout::TimescaleDb
    } else {
        Layout::Partitioned
    };
    Ok((layout, reason))
}

/// Settles the path: converts an empty archive to TimescaleDB when `allow_timescaledb`
/// and the server has the extension; otherwise records why it stays partitioned.
/// Returns the path taken and the reason. Only database errors outside the conversion
/// are errors: a failed conversion is rolled back and reported as the reason.
pub async fn settle(
    pool: &PgPool,
    allow_timescaledb: bool,
) -> Result<(Layout, String), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let (path,): (String,) = sqlx::query_as("SELECT path FROM archive_layout FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    if path == "timescaledb" {
        tx.commit().await?;
        return current(pool).await;
    }
    let available: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
    )
    .fetch_one(&mut *tx)
    .await?;
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM reading)")
        .fetch_one(&mut *tx)
        .await?;
    let stay = if !allow_timescaledb {
        Some("TimescaleDB turned off (--timescaledb off)".to_owned())
    } else if !available {
        Some("the TimescaleDB extension is not installed on this server".to_owned())
    } else if !empty {
        Some(
            "TimescaleDB is available but the archive already holds readings on the plain \
             path; convert by dump and restore into a new database (README)"
                .to_owned(),
        )
    } else {
        None
    };
    if let Some(reason) = stay {
        record(&mut tx, &reason).await?;
        tx.commit().await?;
        return Ok((Layout::Partitioned, reason));
    }
    // The conversion runs in a savepoint: if the server lists the extension but cannot
    // load it (not in shared_preload_libraries, say), the archive stays as it was.
    sqlx::query("SAVEPOINT convert").execute(&mut *tx).await?;
    match sqlx::raw_sql(CONVERT).execute(&mut *tx).await {
        Ok(_) => {
            tx.commit().await?;
            current(pool).await
        }
        Err(e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT convert")
                .execute(&mut *tx)
                .await?;
            let reason = format!("converting to TimescaleDB failed, staying partitioned: {e}");
            record(&mut tx, &reason).await?;
            tx.commit().await?;
            Ok((Layout::Partitioned, reason))
        }
    }
}

async fn record(tx: &mut sqlx::PgConnection, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE archive_layout SET reason = $1, chosen_at = now() WHERE reason <> $1")
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
