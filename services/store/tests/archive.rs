//! The archive's writes against the real PostgreSQL: readings above a pump's
//! high-water mark, below it (late or re-sent), and inside one batch twice.

use chrono::{DateTime, Utc};
use fleet_core::Reading;
use fleet_store::archive::{self, Partitions};
use sqlx::PgPool;

async fn pool() -> PgPool {
    fleet_store::testing::fresh_pool("archive").await.1
}

/// Hourly readings of one pump; sub-microsecond parts included, as gateways may send.
fn reading(seq: u64) -> Reading {
    let at = DateTime::parse_from_rfc3339("2026-03-04T00:00:00.123456789Z")
        .expect("time")
        .to_utc()
        + chrono::Duration::hours(seq as i64);
    Reading::example("ITP40-100001", seq, at)
}

async fn write(pool: &PgPool, partitions: &mut Partitions, batch: &[Reading]) -> u64 {
    partitions.ensure(pool, batch).await.expect("partitions");
    let mut tx = pool.begin().await.expect("begin");
    let new = archive::insert_readings(&mut tx, batch)
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    new
}

async fn scalar(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn late_and_repeated_readings_are_archived_once_and_counted_once() {
    let pool = pool().await;
    let mut partitions = Partitions::default();
    // Seq 1, 2, 3 and 6 (twice in the batch): the mark becomes 6.
    let first: Vec<Reading> = [1, 2, 3, 6, 6].into_iter().map(reading).collect();
    assert_eq!(write(&pool, &mut partitions, &first).await, 4);
    // 4 and 5 arrive late (below the mark), with 2 and 6 re-sent: only 4 and 5 are new.
    let late: Vec<Reading> = [2, 4, 5, 6].into_iter().map(reading).collect();
    assert_eq!(write(&pool, &mut partitions, &late).await, 2);
    // The same late batch again changes nothing.
    assert_eq!(write(&pool, &mut partitions, &late).await, 0);

    assert_eq!(scalar(&pool, "SELECT count(*) FROM reading").await, 6);
    assert_eq!(
        scalar(&pool, "SELECT sum(readings)::bigint FROM pump_day").await,
        6,
        "the rollup counts the late readings once"
    );
    assert_eq!(
        scalar(&pool, "SELECT max_seq FROM archive_watermark").await,
        6
    );
    let stored: DateTime<Utc> = sqlx::query_scalar("SELECT measured_at FROM reading WHERE seq = 4")
        .fetch_one(&pool)
        .await
        .expect("seq 4");
    assert_eq!(
        stored.to_rfc3339(),
        "2026-03-04T04:00:00.123456+00:00",
        "time kept to the microsecond"
    );
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn without_timescaledb_the_archive_stays_partitioned_and_says_why() {
    use fleet_store::layout::{self, Layout};
    let pool = pool().await;
    let available: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
    )
    .fetch_one(&pool)
    .await
    .expect("catalogue");
    assert!(
        !available,
        "this test is about a server without TimescaleDB; the local stack has none"
    );

    let (path, reason) = layout::settle(&pool, true).await.expect("settled");
    assert_eq!(path, Layout::Partitioned);
    assert!(reason.contains("extension is not installed"), "{reason}");
    assert_eq!(
        layout::current(&pool).await.expect("read back"),
        (path, reason.clone())
    );

    let (path, reason) = layout::settle(&pool, false).await.expect("settled");
    assert_eq!(path, Layout::Partitioned);
    assert!(reason.contains("turned off"), "{reason}");

    // Still a partitioned table, and writes still go through its monthly partitions.
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'reading'")
            .fetch_one(&pool)
            .await
            .expect("catalogue");
    assert_eq!(kind, "p", "reading is a partitioned table");
    let mut partitions = Partitions::for_layout(path);
    assert_eq!(write(&pool, &mut partitions, &[reading(1)]).await, 1);
}
