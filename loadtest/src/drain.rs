//! A real service working off a backlog it was handed, timed by its own counter: the
//! archiver's rows, the detector's readings. The clock starts at the last moment the
//! counter still read zero, so the service's start-up, migrations and consumer-group
//! join are not counted as its throughput, and stops when the counter reaches the
//! backlog's size. A raw ceiling compared with such a drain is timed the same way.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::harness::{self, Service, StackEnv};

/// How often the counter is read: short next to any drain worth timing, long next to
/// the cost of one `/metrics` request.
const POLL: Duration = Duration::from_millis(20);

/// Starts workspace binary `name` on the stack with `database_url` and `args`, its
/// metrics on a free port and its log in `dir/NAME.log`; returns once it is ready,
/// with the metrics port.
pub async fn start(
    env: &StackEnv,
    name: &str,
    database_url: &str,
    args: &[&str],
    dir: &Path,
) -> anyhow::Result<(Service, u16)> {
    let port = harness::free_port()?;
    let service = Service::spawn(
        name,
        env.command(name, database_url)?
            .args(args)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")]),
        &dir.join(format!("{name}.log")),
    )?;
    harness::wait_ready(port, Duration::from_secs(60)).await?;
    Ok((service, port))
}

/// Reads counter `metric` of the service on `port` until it reaches `target`, for at
/// most `limit`; how long the work took, from the last reading of zero.
pub async fn time_to_count(
    port: u16,
    metric: &str,
    target: f64,
    limit: Duration,
) -> anyhow::Result<Duration> {
    time_until(target, limit, || async move {
        harness::metric(port, metric).await.unwrap_or_default()
    })
    .await
    .with_context(|| format!("{metric} of the service on port {port}"))
}

/// Reads `count` every [`POLL`] until it reaches `target`, for at most `limit`; the
/// time from its last reading of zero to its first of `target` or more. Anything timed
/// against a service's drain (a raw ceiling) is timed through this too, so both sides
/// have the same start, stop and resolution.
pub async fn time_until<F, C>(
    target: f64,
    limit: Duration,
    mut count: C,
) -> anyhow::Result<Duration>
where
    C: FnMut() -> F,
    F: Future<Output = f64>,
{
    let deadline = Instant::now() + limit;
    let mut idle_until = Instant::now();
    loop {
        let counted = count().await;
        let now = Instant::now();
        if counted == 0.0 {
            idle_until = now;
        }
        if counted >= target {
            return Ok(now - idle_until);
        }
        anyhow::ensure!(
            now < deadline,
            "stalled at {counted} of {target} after {limit:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
