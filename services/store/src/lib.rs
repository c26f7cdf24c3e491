//! The fleet's PostgreSQL database: one schema, migrated from one history
//! (`services/store/migrations`), whichever service starts first. Each service owns its
//! own tables and queries; this crate only connects and migrates.

pub mod access;
pub mod acknowledgement;
pub mod archive;
pub mod layout;
pub mod registry;
pub mod testing;

use std::time::Duration;

use fleet_runtime::backoff::Backoff;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrating the fleet schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Connection pool settings shared by the services: small pools (the services batch
/// their writes) and a bounded wait for a connection, so a stuck database shows up as
/// errors rather than as a silent pile of waiting tasks.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
}

/// Connects once, then brings the schema up to date (migrations take a database lock,
/// so replicas starting together do not race).
pub async fn connect(url: &str) -> Result<PgPool, StoreError> {
    let pool = pool_options()
        .connect(url)
        .await
        .map_err(StoreError::Connect)?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// [`connect`], retried with backoff until it works or `attempts` run out; every failed
/// attempt is logged, so a service waiting for its database says so.
pub async fn connect_with_retry(url: &str, attempts: u32) -> Result<PgPool, StoreError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match connect(url).await {
            Ok(pool) => return Ok(pool),
            Err(e) if backoff.attempts() + 1 < attempts => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "database not ready");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}
