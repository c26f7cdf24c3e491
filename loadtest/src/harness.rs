//! Starting and stopping the project's own service binaries, and the local stack's
//! components, from tests and benchmarks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use fleet_core::Reading;

/// The three endpoints, which must be set: a harness run without a stack is an error,
/// never a silent skip.
#[derive(Debug, Clone)]
pub struct StackEnv {
    pub mqtt_url: String,
    pub kafka_brokers: String,
    pub database_url: String,
}

impl StackEnv {
    pub fn from_env() -> anyhow::Result<StackEnv> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!(
                    "{name} is not set: start the stack and eval \"$(deploy/local/stack.sh env)\""
                )
            })
        };
        Ok(StackEnv {
            mqtt_url: var("FLEET_MQTT_URL")?,
            kafka_brokers: var("FLEET_KAFKA_BROKERS")?,
            database_url: var("FLEET_DATABASE_URL")?,
        })
    }

    /// The MQTT broker with the TLS material of the environment (`FLEET_MQTT_CA_FILE`,
    /// `FLEET_MQTT_CERT_DIR`, ...: what `stack.sh env` exports; child processes inherit
    /// the same variables). Connect as a gateway only after
    /// [`issue_gateway_certs`] for it; as the operator (`fleet-operator`) at any time.
    pub fn mqtt(&self) -> fleet_runtime::MqttConfig {
        fleet_runtime::MqttConfig::from_env_with_url(&self.mqtt_url)
    }

    /// A command for workspace binary `name` (built first) pointed at this stack,
    /// with `database_url` as its database (a test's own, or the stack's).
    pub fn command(&self, name: &str, database_url: &str) -> anyhow::Result<Command> {
        Ok(self.command_at(&binary(name)?, database_url))
    }

    /// A command for `program` pointed at this stack.
    pub fn command_at(&self, program: &Path, database_url: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("FLEET_MQTT_URL", &self.mqtt_url)
            .env("FLEET_KAFKA_BROKERS", &self.kafka_brokers)
            .env("FLEET_DATABASE_URL", database_url);
        command
    }
}

/// The repository root (this crate lives in `loadtest/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path to a workspace binary, built first (quick when it is up to date) with the same
/// profile as the running executable. Built once per process: asking again costs no
/// cargo run, so a benchmark can build before its clock starts and spawn inside it.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    binaries(&[name])?;
    Ok(profile_dir()?.join(name))
}

/// [`binary`] for several at once, in one cargo run: with a target directory shared
/// with other builds, each cargo run may first wait for its lock, so a benchmark
/// that needs several binaries asks for them all up front.
pub fn binaries(names: &[&str]) -> anyhow::Result<()> {
    static BUILT: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let dir = profile_dir()?;
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| {
            !(BUILT.lock().is_ok_and(|built| built.contains(*name)) && dir.join(name).exists())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(repo_root()).args(["build", "--quiet"]);
    for name in &missing {
        build.args(["--bin", name]);
    }
    if release {
        build.arg("--release");
    }
    let list = missing.join(", ");
    let status = build.status().with_context(|| format!("building {list}"))?;
    if !status.success() {
        bail!("building {list} failed");
    }
    for name in &missing {
        let path = dir.join(name);
        anyhow::ensure!(path.exists(), "{} was not built", path.display());
    }
    if let Ok(mut built) = BUILT.lock() {
        built.extend(missing.iter().map(|n| (*n).to_owned()));
    }
    Ok(())
}

/// Path to a workspace binary already built beside the running executable (a tool run
/// by a script that built everything first, such as the demo): no cargo run, so it
/// never waits on another build.
pub fn built_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = profile_dir()?.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built (cargo build -p {name}, with the same profile)",
        path.display()
    );
    Ok(path)
}

/// The target directory of the running executable's profile (`target/debug`, ...).
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// A free loopback port (for a service's metrics endpoint).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process of ours, killed when dropped so a failed test leaves nothing behind.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    child: Child,
}

impl Service {
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> anyhow::Result<Service> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Service {
            name: name.to_owned(),
            child,
        })
    }

    /// `kill -9`: no chance to flush, ack or say goodbye.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then up to `grace` for an orderly exit; SIGKILL after that.
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        bail!("{} did not stop within {grace:?}", self.name)
    }

    /// Waits for the process to exit by itself, bounded.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

/// Reads a JSON Lines file of readings (plain or gzip).
pub fn load_readings(path: &Path) -> anyhow::Result<Vec<Reading>> {
    use std::io::BufRead;
    let input = fleet_runtime::input::open(path)?;
    let mut out = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        out.push(
            fleet_core::json::parse_reading(&line)
                .with_context(|| format!("{}: line {}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

/// Every `(pump_id, seq)` in a set of readings: what must arrive.
pub fn unique_keys(readings: &[Reading]) -> BTreeSet<(String, u64)> {
    readings
        .iter()
        .map(|r| (r.pump_id.clone(), r.seq))
        .collect()
}

/// A registry pairing each pump with the gateway that relays it, all followed by one
/// clinic; written to `path`.
pub fn write_registry(readings: &[Reading], path: &Path) -> anyhow::Result<()> {
    let pairs: BTreeMap<&str, &str> = readings
        .iter()
        .map(|r| (r.pump_id.as_str(), r.gateway_id.as_str()))
        .collect();
    let mut text = String::from(
        "[[clinic]]\nid = \"clinic-test\"\nname = \"Test clinic\"\nwebhook = \"http://127.0.0.1:9\"\nescalation_after = \"15m\"\n",
    );
    for (pump, gateway) in pairs {
        text.push_str(&format!(
            "\n[[pump]]\npump_id = \"{pump}\"\ngateway_id = \"{gateway}\"\nclinic_id = \"clinic-test\"\n"
        ));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The local stack's Mosquitto, from the pid file the stack script keeps under
/// `FLEET_STATE_DIR` (default `.state/stack`).
pub fn mosquitto_pid() -> anyhow::Result<u32> {
    let state = std::env::var("FLEET_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".state/stack"));
    let pidfile = state.join("run/mosquitto.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("reading {}", pidfile.display()))?;
    pid.trim()
        .parse()
        .with_context(|| format!("{} holds no pid", pidfile.display()))
}

/// Restarts the local stack's Mosquitto: SIGTERM to the pid the stack script recorded,
/// then `stack.sh up`, which starts what is not running and waits until it answers.
pub fn restart_mosquitto() -> anyhow::Result<()> {
    let pid = mosquitto_pid()?;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
    // Wait for it to go, so `up` starts a new one rather than finding the old.
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new(repo_root().join("deploy/local/stack.sh"))
        .arg("up")
        .stdout(Stdio::null())
        .status()
        .context("running stack.sh up")?;
    anyhow::ensure!(
        status.success(),
        "stack.sh up failed after stopping mosquitto"
    );
    Ok(())
}

/// One plain HTTP/1.0 GET against a service's side door on loopback; the raw
/// response (status line, headers, body), or `None` if nothing answered.
/// A plain HTTP GET on loopback `port`: the whole response (status line, headers,
/// body), or `None` when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// Waits until a service's `/readyz` on `port` answers 200, bounded.
pub async fn wait_ready(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(response) = http_get(port, "/readyz").await
            && (response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"))
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("service on port {port} not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled counter or gauge from a service's `/metrics`.
pub async fn metric(port: u16, name: &str) -> Option<f64> {
    let response = http_get(port, "/metrics").await?;
    response.lines().find_map(|line| {
        let (series, value) = line.split_once(' ')?;
        (series == name).then(|| value.trim().parse().ok())?
    })
}

/// Waits until something accepts TCP connections on loopback `port`, bounded.
pub async fn wait_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if tokio::time::Instant::now() >= deadline {
            bail!("nothing listening on port {port} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The repository's smoke scenario (the shared one, copied in as test data).
pub const SMOKE_SCENARIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../services/core/tests/data/smoke.readings.jsonl.gz"
);

/// A healthy simulated fleet (one pump per gateway) reporting hourly until an hour ago:
/// load that raises no alarm, even once a probe moves the detector's clock to now.
pub fn healthy_fleet(gateways: usize, per_gateway: usize) -> Vec<Reading> {
    simulated_fleet(gateways, per_gateway, fleet_simulator::FaultMix::none()).0
}

/// [`healthy_fleet`] with the simulator's `faults` injected: the readings, and how
/// many pumps carry each fault (a fault the run is too short to show is not injected,
/// and its pump counts as `none`).
pub fn simulated_fleet(
    gateways: usize,
    per_gateway: usize,
    faults: fleet_simulator::FaultMix,
) -> (Vec<Reading>, BTreeMap<String, usize>) {
    use fleet_simulator::{Fleet, FleetSpec};
    let end = chrono::Utc::now() - chrono::Duration::hours(1);
    let start = end - chrono::Duration::hours(per_gateway as i64);
    let mut fleet = Fleet::new(FleetSpec::new(7, gateways, start, end).with_faults(faults));
    let readings = fleet.advance_until(end);
    let mut pumps = BTreeMap::new();
    for pump in fleet.pumps() {
        *pumps.entry(pump.fault().name().to_owned()).or_insert(0) += 1;
    }
    (readings, pumps)
}

/// A directory for a benchmark's logs and data, kept afterwards: the services' logs are
/// the first thing to read when a figure looks wrong. Says where on stderr.
pub fn kept_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?.keep();
    eprintln!("logs and data in {}", dir.display());
    Ok(dir)
}

/// Writes `readings` as a replay file (JSON Lines) in `dir`, and issues its gateways' certificates now, from the readings in hand: a benchmark
/// writes its replay before its clock starts, and the certificates are part of that
/// set-up, not of what it times.
pub fn write_replay(dir: &Path, readings: &[Reading]) -> anyhow::Result<PathBuf> {
    let replay = dir.join("replay.jsonl");
    let text: String = readings
        .iter()
        .map(|r| fleet_core::json::to_json(r) + "\n")
        .collect();
    std::fs::write(&replay, text)?;
    issue_gateway_certs(readings.iter().map(|r| &r.gateway_id))?;
    Ok(replay)
}

/// How fast the background gateways hand readings to their outboxes.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the path acknowledges them.
    FullSpeed,
    /// About this many readings per second across the fleet, each gateway handing
    /// over a quarter second's readings every 250 ms (one reading at a time when that
    /// is less than one), as a gateway relays what its pump buffered, so the load
    /// generator's own outbox writes stay cheap.
    ReadingsPerSecond { total: f64, gateways: usize },
}

impl Pace {
    fn gateway_args(self) -> Vec<String> {
        match self {
            Pace::FullSpeed => Vec::new(),
            Pace::ReadingsPerSecond { total, gateways } => {
                let per_gateway = total.max(1.0) / gateways.max(1) as f64;
                let batch = (per_gateway * 0.25).round().max(1.0);
                let interval = Duration::from_secs_f64(batch / per_gateway);
                vec![
                    "--replay-batch".into(),
                    batch.to_string(),
                    "--replay-interval".into(),
                    humantime::format_duration(interval).to_string(),
                ]
            }
        }
    }
}

/// Issues client certificates for `gateways` under the local stack's CA (in
/// `FLEET_STACK_CERTS`, which `stack.sh env` exports; `FLEET_MQTT_CERT_DIR` is its
/// `clients` directory), so a gateway process or an in-process client can connect as
/// each. Existing certificates are kept. Nothing to do when the broker is plain MQTT.
pub fn issue_gateway_certs<S: AsRef<str>>(
    gateways: impl IntoIterator<Item = S>,
) -> anyhow::Result<()> {
    let tls = std::env::var("FLEET_MQTT_URL").is_ok_and(|u| u.starts_with("mqtts://"));
    if !tls {
        return Ok(());
    }
    let out = std::env::var_os("FLEET_STACK_CERTS").context(
        "FLEET_STACK_CERTS is not set (the local CA's directory): eval \"$(deploy/local/stack.sh env)\"",
    )?;
    let gateways: BTreeSet<String> = gateways
        .into_iter()
        .map(|g| g.as_ref().to_owned())
        .collect();
    fleetctl::certs::make(&fleetctl::certs::CertsPlan {
        out: PathBuf::from(out),
        gateways: gateways.into_iter().collect(),
        ..Default::default()
    })
    .context("issuing gateway certificates")?;
    Ok(())
}

/// [`issue_gateway_certs`] for every gateway of a replay file (JSON Lines readings).
pub fn issue_replay_certs(replay: &Path) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut gateways = BTreeSet::new();
    for line in fleet_runtime::input::open(replay)?.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: not JSON", replay.display()))?;
        let id = value["gateway_id"].as_str().or(value["gatewayId"].as_str());
        if let Some(id) = id {
            gateways.insert(id.to_owned());
        }
    }
    issue_gateway_certs(gateways)
}

/// Starts one gateway process hosting a gateway per pump that replays `replay` at
/// `pace` and exits once every reading is acknowledged end to end. The gateways'
/// state and log go to `dir`; their certificates must exist ([`write_replay`] issues
/// them).
pub fn replay_through_gateways(
    env: &StackEnv,
    dir: &Path,
    replay: &Path,
    pace: Pace,
) -> anyhow::Result<Service> {
    Service::spawn(
        "fleet-gateway",
        Command::new(binary("fleet-gateway")?)
            .env("FLEET_MQTT_URL", &env.mqtt_url)
            .args(["--fleet", "--exit-when-drained"])
            .args(["--replay", &replay.display().to_string()])
            .args(["--state-dir", &dir.join("gateways").display().to_string()])
            .args(pace.gateway_args())
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)]),
        &dir.join("gateways.log"),
    )
}

/// CPU time (user plus system, in seconds) process `pid` has used so far, from
/// `/proc/PID/stat`; None if it is gone. Linux's clock tick is 100 Hz on every
/// platform this runs on.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Processes whose command line names `path` (a run's gateway process and receivers
/// are given its state directory): what a test that must stop everything checks.
pub fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let cmdline = std::fs::read(e.ok()?.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some(cmdline)
        })
        .collect()
}

/// Processes whose command name is `name` (the stack's broker, its database).
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// The sum over every label set of a counter or gauge from a service's `/metrics`
/// (0 when the service exports none yet; `None` when it does not answer).
pub async fn metric_sum(port: u16, name: &str) -> Option<f64> {
    let response = http_get(port, "/metrics").await?;
    Some(
        response
            .lines()
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let family = series.split('{').next()?;
                (family == name).then(|| value.trim().parse::<f64>().ok())?
            })
            .sum(),
    )
}
