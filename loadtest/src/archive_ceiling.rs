//! The archive hop against its raw ceiling, in the same database and the same run: one
//! `COPY` of the readings into a plain table with the archive's columns and key, then
//! the archiver's own write path (partitions, high-water marks, COPY, rollup, events,
//! one transaction per batch) fed from memory; and the real `fleet-archiver` draining
//! readings already in Kafka. Shared by `fleet-archive-bench` and `fleet-loadtest`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleet_core::Reading;
use sqlx::PgPool;

use crate::drain;
use crate::harness::StackEnv;
use crate::hop::per_second;

const ARCHIVED: &str = "fleet_archiver_archived_total{kind=\"reading\"}";

/// The archiver's default `--batch`.
pub const BATCH: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchiveRates {
    pub raw_copy_rows_per_s: f64,
    pub write_path_rows_per_s: f64,
}

impl ArchiveRates {
    pub fn ratio(&self) -> f64 {
        self.write_path_rows_per_s / self.raw_copy_rows_per_s
    }
}

/// Measures both on `pool` (a database of the benchmark's own, migrated) and leaves
/// the archive empty again, so a later run of the real archiver starts from nothing.
pub async fn measure(pool: &PgPool, readings: &[Reading]) -> anyhow::Result<ArchiveRates> {
    let rows = readings.len();
    sqlx::query("CREATE TABLE IF NOT EXISTS raw_reading (LIKE reading INCLUDING ALL)")
        .execute(pool)
        .await?;
    let text = fleet_store::archive::copy_text(&readings.iter().collect::<Vec<_>>());
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY raw_reading FROM STDIN")
        .await
        .context("starting COPY")?;
    copy.send(text.as_bytes()).await?;
    let copied = copy.finish().await?;
    let raw_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        copied as usize == rows,
        "COPY wrote {copied} of {rows} rows"
    );
    drop(conn);

    let mut partitions = fleet_store::archive::Partitions::default();
    let started = Instant::now();
    for batch in readings.chunks(BATCH) {
        partitions.ensure(pool, batch).await?;
        let mut tx = pool.begin().await?;
        fleet_store::archive::insert_readings(&mut tx, batch).await?;
        tx.commit().await?;
    }
    let write_path_s = started.elapsed().as_secs_f64();
    sqlx::query("TRUNCATE raw_reading, reading, pump_day, pump_event, archive_watermark")
        .execute(pool)
        .await?;
    Ok(ArchiveRates {
        raw_copy_rows_per_s: rows as f64 / raw_s.max(1e-6),
        write_path_rows_per_s: rows as f64 / write_path_s.max(1e-6),
    })
}

/// Runs the real `fleet-archiver` on the topics of `suffix`, which already hold `rows`
/// unique readings, into `database_url`; rows/s from the moment before its first row
/// was archived to its last, by its own metric. Its log goes to `dir`.
pub async fn archiver_drain(
    env: &StackEnv,
    database_url: &str,
    suffix: &str,
    rows: usize,
    dir: &Path,
) -> anyhow::Result<f64> {
    let group = format!("{suffix}-archiver");
    let args = ["--topic-suffix", suffix, "--group", &group];
    let (mut archiver, port) =
        drain::start(env, "fleet-archiver", database_url, &args, dir).await?;
    let took = drain::time_to_count(port, ARCHIVED, rows as f64, Duration::from_secs(600))
        .await
        .with_context(|| format!("fleet-archiver (log in {})", dir.display()));
    let _ = archiver.terminate(Duration::from_secs(10));
    Ok(per_second(rows, took?))
}
