//! For tests against the real PostgreSQL: a database of their own, so runs never see
//! each other's rows (the role has CREATEDB on the local stack).

use sqlx::Connection;

/// Creates an empty database next to the one `url` names and returns its URL. Its
/// name carries the test process's id; databases of test processes that have exited
/// are dropped first, so the test stack does not fill up over many runs.
pub async fn fresh_database(url: &str, prefix: &str) -> Result<String, sqlx::Error> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!("test_{prefix}_{}_{nanos}", std::process::id());
    assert!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "database name prefix {prefix:?} must be letters, digits and underscores"
    );
    let mut conn = sqlx::PgConnection::connect(url).await?;
    drop_leftovers(&mut conn).await?;
    // The name is ours and checked above: nothing to inject.
    // Two CREATE DATABASE at once can collide on the template ("being accessed by
    // other users", SQLSTATE 55006) when tests run in parallel: retry a few times.
    let mut attempt = 0;
    loop {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await;
        match created {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("55006") && attempt < 20 =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            other => {
                other?;
                break;
            }
        };
    }
    conn.close().await?;
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    Ok(format!("{server}/{name}{query}"))
}

/// Drops `test_*_PID_*` databases whose process is gone (Linux: no `/proc/PID`).
async fn drop_leftovers(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'")
            .fetch_all(&mut *conn)
            .await?;
    for name in names {
        let pid = name.rsplit('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_none_or(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        let safe = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !alive && safe {
            // Checked above: only letters, digits and underscores.
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut *conn)
                .await
            {
                eprintln!("could not drop leftover test database {name}: {e}");
            }
        }
    }
    Ok(())
}

/// A fresh database next to the test stack's (`FLEET_DATABASE_URL`), migrated and
/// connected: its URL (for a process the test starts) and a pool. Panics with what is
/// missing, as a test should.
pub async fn fresh_pool(prefix: &str) -> (String, sqlx::PgPool) {
    let url = std::env::var("FLEET_DATABASE_URL")
        .expect("FLEET_DATABASE_URL is not set: scripts/test.sh starts the stack");
    let url = fresh_database(&url, prefix)
        .await
        .expect("a database of our own");
    let pool = crate::connect(&url).await.expect("connect and migrate");
    (url, pool)
}
