//! The demo's processes: each clinic's reference receiver, the five services and the
//! simulated fleet's gateway process, started against the stack and stopped in the
//! order that loses nothing (intake first, the receivers last).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};

use fleet_gateway::simulated::SimClock;

use super::plan::Plan;
use crate::harness::{self, Service, StackEnv};

/// Where the services listen. The defaults are the services' own defaults; tests take
/// free ports so that nothing clashes with a demo already running.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub api_grpc: u16,
    pub api_http: u16,
    pub ingest: u16,
    pub gateway: u16,
    pub detector: u16,
    pub notifier: u16,
    pub archiver: u16,
}

impl Ports {
    pub fn defaults() -> Ports {
        Ports {
            api_grpc: 50051,
            api_http: 8080,
            ingest: 9181,
            gateway: 9182,
            detector: 9183,
            notifier: 9184,
            archiver: 9185,
        }
    }

    pub fn free() -> anyhow::Result<Ports> {
        let p = harness::free_port;
        Ok(Ports {
            api_grpc: p()?,
            api_http: p()?,
            ingest: p()?,
            gateway: p()?,
            detector: p()?,
            notifier: p()?,
            archiver: p()?,
        })
    }
}

/// Every binary the demo's processes run (the demo and the chaos run spawn them from
/// beside themselves; their tests build them all first, in one cargo run).
pub const BINARIES: [&str; 7] = [
    "fleet-ingest",
    "fleet-detector",
    "fleet-archiver",
    "fleet-notifier",
    "fleet-api",
    "fleet-gateway",
    "fleetctl",
];

/// A command for `tool` (`fleet-demo`, `fleet-chaos`: what runs the demo's processes)
/// on the stack, kept apart from every other run: `tool` and the binaries it spawns are
/// built, and it gets a fresh database and a topic suffix of its own, both named after
/// `label`. Blocking: for a test's set-up, outside any runtime.
pub fn isolated_command(env: &StackEnv, tool: &str, label: &str) -> anyhow::Result<Command> {
    let mut binaries = BINARIES.to_vec();
    binaries.push(tool);
    harness::binaries(&binaries)?;
    let database_url = tokio::runtime::Runtime::new()?.block_on(
        fleet_store::testing::fresh_database(&env.database_url, label),
    )?;
    let mut command = env.command(tool, &database_url)?;
    command.env(
        "FLEET_TOPIC_SUFFIX",
        format!("{label}-{}", Utc::now().timestamp_millis()),
    );
    Ok(command)
}

/// How the gateway process plays the simulated fleet.
#[derive(Debug, Clone, Copy)]
pub struct FleetClock {
    pub speedup: f64,
    /// The wall moment simulated time is at the plan's start.
    pub origin: DateTime<Utc>,
}

/// The running processes, in the order they stop.
#[derive(Debug)]
pub struct Processes {
    env: StackEnv,
    dir: PathBuf,
    secret: String,
    pub ports: Ports,
    running: Vec<Service>,
    /// How each process was started, to start it again the same way (the chaos test),
    /// and how many times it has been started.
    recipes: BTreeMap<String, (Command, u32)>,
}

const GRACE: Duration = Duration::from_secs(20);

impl Processes {
    /// Starts the clinics' receivers and the services, and waits until each is ready.
    /// Logs go to `dir/logs`, pages to `dir/pages/{clinic}.jsonl`.
    pub async fn start(
        env: &StackEnv,
        dir: &Path,
        plan: &Plan,
        ports: Ports,
        secret: &str,
    ) -> anyhow::Result<Processes> {
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(dir.join("pages"))?;
        let mut p = Processes {
            env: env.clone(),
            dir: dir.to_owned(),
            secret: secret.to_owned(),
            ports,
            running: Vec::new(),
            recipes: BTreeMap::new(),
        };
        // Intake first in the list: it stops first.
        p.service("fleet-ingest", ports.ingest)?;
        p.service("fleet-detector", ports.detector)?;
        p.service("fleet-archiver", ports.archiver)?;
        p.service("fleet-notifier", ports.notifier)?;
        p.spawn(
            "fleet-api",
            p.command("fleet-api")?.args([
                "--listen",
                &format!("127.0.0.1:{}", ports.api_grpc),
                "--http-listen",
                &format!("127.0.0.1:{}", ports.api_http),
            ]),
        )?;
        for clinic in &plan.clinics {
            let out = p.pages_file(&clinic.id);
            p.spawn(
                &format!("receiver-{}", clinic.id),
                Command::new(harness::built_binary("fleetctl")?)
                    .env("FLEET_RECEIVER_SECRET", secret)
                    .args(["receiver", "--clinic-id", &clinic.id])
                    .args(["--listen", &format!("127.0.0.1:{}", clinic.receiver_port)])
                    .args(["--out", &out.display().to_string()]),
            )?;
        }
        let ready = Duration::from_secs(120);
        for port in [ports.ingest, ports.detector, ports.archiver, ports.notifier] {
            harness::wait_ready(port, ready).await?;
        }
        harness::wait_port(ports.api_grpc, ready).await?;
        for clinic in &plan.clinics {
            harness::wait_port(clinic.receiver_port, ready).await?;
        }
        Ok(p)
    }

    /// Starts the plan's simulated fleet a second from now at `speedup`: the clock
    /// that maps its simulated time to the wall's, and the clinics' page files.
    pub fn start_fleet(
        &mut self,
        plan: &Plan,
        speedup: f64,
    ) -> anyhow::Result<(SimClock, super::pages::Pages)> {
        let origin = Utc::now() + chrono::Duration::seconds(1);
        self.start_gateways(plan, FleetClock { speedup, origin })?;
        let pages = super::pages::Pages::new(
            plan.clinics
                .iter()
                .map(|c| (c.id.clone(), self.pages_file(&c.id)))
                .collect(),
        );
        Ok((SimClock::anchored(plan.start, origin, speedup), pages))
    }

    /// Starts the gateway process hosting the plan's simulated fleet; it goes first
    /// when everything stops, so that no reading is taken that cannot be delivered.
    pub fn start_gateways(&mut self, plan: &Plan, clock: FleetClock) -> anyhow::Result<()> {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // With TLS on, each gateway connects with a certificate of its own id, issued
        // here under the stack's CA (kept if already there).
        harness::issue_gateway_certs(plan.truth.pumps.iter().map(|p| &p.gateway_id))?;
        let mut command = self.command("fleet-gateway")?;
        command
            .args(["--fleet", "--pumps", &plan.pumps.to_string()])
            .args(["--seed", &plan.seed.to_string()])
            .args(["--start", &time(plan.start), "--end", &time(plan.end)])
            .args(["--clock-origin", &time(clock.origin)])
            .args(["--speedup", &clock.speedup.to_string()])
            .args([
                "--state-dir",
                &self.dir.join("gateways").display().to_string(),
            ])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.ports.gateway),
            ]);
        let log = self.dir.join("logs/fleet-gateway.log");
        self.running
            .insert(0, Service::spawn("fleet-gateway", &mut command, &log)?);
        self.recipes
            .insert("fleet-gateway".into(), (copy_command(&command), 1));
        Ok(())
    }

    /// `kill -9` of the named process (`fleet-ingest`, `fleet-gateway`, ...): its pid,
    /// or `None` when it was not running.
    pub fn kill9(&mut self, name: &str) -> Option<u32> {
        let service = self.running.iter_mut().find(|s| s.name == name)?;
        if !service.is_running() {
            return None;
        }
        let pid = service.pid();
        service.kill9();
        Some(pid)
    }

    /// Starts the named process again exactly as it was first started; its output goes
    /// to `logs/{name}.{n}.log` for its n-th start, so every run's log is kept. It keeps
    /// its place in the stopping order.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let (recipe, starts) = self
            .recipes
            .get_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no process named {name} was started"))?;
        *starts += 1;
        let log = self.dir.join("logs").join(format!("{name}.{starts}.log"));
        let service = Service::spawn(name, &mut copy_command(recipe), &log)?;
        match self.running.iter_mut().find(|s| s.name == name) {
            Some(slot) => {
                if slot.is_running() {
                    slot.kill9();
                }
                *slot = service;
            }
            None => self.running.push(service),
        }
        Ok(())
    }

    /// Whether the named process is running.
    pub fn is_running(&mut self, name: &str) -> bool {
        self.running
            .iter_mut()
            .any(|s| s.name == name && s.is_running())
    }

    /// Every process that has exited, by name.
    pub fn all_exited(&mut self) -> Vec<String> {
        self.running
            .iter_mut()
            .filter_map(|s| (!s.is_running()).then(|| s.name.clone()))
            .collect()
    }

    pub fn pages_file(&self, clinic_id: &str) -> PathBuf {
        self.dir.join("pages").join(format!("{clinic_id}.jsonl"))
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The first process that has exited, if any: the demo cannot go on without it.
    pub fn exited(&mut self) -> Option<String> {
        self.running
            .iter_mut()
            .find_map(|s| (!s.is_running()).then(|| s.name.clone()))
    }

    /// CPU seconds each process has used so far, by name: what the fleet costs.
    pub fn cpu_seconds(&self) -> BTreeMap<String, f64> {
        self.running
            .iter()
            .filter_map(|s| Some((s.name.clone(), harness::cpu_seconds(s.pid())?)))
            .collect()
    }

    /// SIGTERM to each in order, waiting for each to finish its in-flight work.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for mut service in self.running.drain(..) {
            if let Err(e) = service.terminate(GRACE) {
                failed.push(e.to_string());
            }
        }
        anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
        Ok(())
    }

    /// A pipeline service with its metrics on `metrics_port`; the notifier signs pages
    /// with the clinics' shared secret.
    fn service(&mut self, name: &str, metrics_port: u16) -> anyhow::Result<()> {
        let mut command = self.command(name)?;
        command
            .env("FLEET_SIGNING_SECRET", &self.secret)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")]);
        self.spawn(name, &mut command)
    }

    /// Workspace binary `name`, built beforehand (by `scripts/demo.sh`, or a test),
    /// pointed at the stack.
    fn command(&self, name: &str) -> anyhow::Result<Command> {
        Ok(self
            .env
            .command_at(&harness::built_binary(name)?, &self.env.database_url))
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> anyhow::Result<()> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        self.running.push(Service::spawn(name, command, &log)?);
        self.recipes
            .insert(name.to_owned(), (copy_command(command), 1));
        Ok(())
    }
}

/// A new command with `command`'s program, arguments, environment and directory.
fn copy_command(command: &Command) -> Command {
    let mut copy = Command::new(command.get_program());
    copy.args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => copy.env(key, value),
            None => copy.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        copy.current_dir(dir);
    }
    copy
}
