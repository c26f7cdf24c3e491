//! `fleet-archive-bench`: the archiver's rows/s against a raw `COPY` of the same rows
//! into the same database in the same run (target: at least 0.6 × raw).
//!
//! The readings are put in Kafka first (not timed). The archiver's rate is counted from
//! the last moment it had archived nothing to its last row (its start-up and group join are not the write
//! path), from its own `fleet_archiver_archived_total` metric. The raw side is one
//! `COPY ... FROM STDIN` of the same rows into `raw_reading`, a plain table with the
//! archive's columns and primary key: no Kafka, no decoding, no rollup, no dedupe.
//! The archiver's write path alone (its per-batch statements, fed from memory) is
//! measured too, to tell the database's share from the broker's.

use std::path::PathBuf;

use chrono::Utc;
use clap::Parser;
use fleet_kafka::{FleetProducer, Topics, ensure_topic};
use fleet_loadtest::archive_ceiling;
use fleet_loadtest::harness::{self, StackEnv};

#[derive(Debug, Parser)]
#[command(
    name = "fleet-archive-bench",
    about = "Archiver rows/s against raw COPY"
)]
struct Cli {
    /// Pumps in the fleet (one gateway each).
    #[arg(long, default_value_t = 200)]
    pumps: usize,
    /// Readings per pump.
    #[arg(long, default_value_t = 1000)]
    readings_per_pump: usize,
    #[arg(long, default_value = "loadtest/results/archiver.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = StackEnv::from_env()?;
    let dir = harness::kept_dir("fleet-archive-bench-")?;
    let run = format!("archive-bench-{}", Utc::now().timestamp());
    let readings = harness::healthy_fleet(cli.pumps, cli.readings_per_pump);
    let rows = readings.len();
    let database_url = fleet_store::testing::fresh_database(&env.database_url, "archbench").await?;
    let pool = fleet_store::connect(&database_url).await?;

    // Raw COPY of the same rows, then the archiver's write path alone (the archive is
    // emptied again for the archiver's run).
    let rates = archive_ceiling::measure(&pool, &readings).await?;
    let (raw_rate, write_path_rate) = (rates.raw_copy_rows_per_s, rates.write_path_rows_per_s);

    // The same rows through Kafka and the archiver.
    let topics = Topics::with_suffix(&run);
    for topic in [&topics.readings, &topics.alarms] {
        ensure_topic(&env.kafka_brokers, topic, 6).await?;
    }
    let producer = FleetProducer::new(&env.kafka_brokers, topics.clone())?;
    let mut pending = Vec::with_capacity(rows);
    for r in &readings {
        pending.push(producer.queue_reading(r).await?);
    }
    for d in pending {
        d.delivered().await?;
    }
    let archiver_rate =
        archive_ceiling::archiver_drain(&env, &database_url, &run, rows, &dir).await?;
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM reading")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(
        archived as usize == rows,
        "archive holds {archived} of {rows} rows"
    );
    pool.close().await;

    let result = serde_json::json!({
        "measured_at": Utc::now().to_rfc3339(),
        "rows": rows,
        "raw_copy_rows_per_s": raw_rate.round(),
        "archiver_rows_per_s": archiver_rate.round(),
        "write_path_rows_per_s": write_path_rate.round(),
        "write_path_ratio": (rates.ratio() * 100.0).round() / 100.0,
        "ratio": (archiver_rate / raw_rate * 100.0).round() / 100.0,
        "target_ratio": 0.6,
        "command": "loadtest/bench-archiver.sh",
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(parent) = cli.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&result)? + "\n")?;
    Ok(())
}
