//! The local stack's components (Mosquitto, the tansu broker, PostgreSQL) killed with
//! SIGKILL through the pid files `deploy/local/stack.sh` keeps, and started again by
//! `stack.sh up`, which starts what is not running and waits until it answers. The
//! script gets this process's environment as it is (`FLEET_STATE_DIR`, the
//! `FLEET_STACK_*` ports and whatever else the stack reads), so the components come
//! back exactly as the stack's owner configured them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::schedule::Component;
use crate::harness;

#[derive(Debug, Clone)]
pub struct Stack {
    state: PathBuf,
    script: PathBuf,
    /// Where the output of every `stack.sh` call is appended.
    log: PathBuf,
}

/// How many times `stack.sh up` was run before the stack answered again.
#[derive(Debug, Clone, Copy)]
pub struct Up {
    pub attempts: u32,
}

impl Stack {
    /// The stack this process's environment names (`FLEET_STATE_DIR`, default
    /// `.state/stack`), with `stack.sh`'s output appended to `log`.
    pub fn from_env(log: &Path) -> Stack {
        let state = std::env::var("FLEET_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| harness::repo_root().join(".state/stack"));
        Stack {
            state,
            script: harness::repo_root().join("deploy/local/stack.sh"),
            log: log.to_owned(),
        }
    }

    fn pidfile(&self, component: Component) -> Option<(PathBuf, &'static str)> {
        match component {
            Component::Mosquitto => Some((self.state.join("run/mosquitto.pid"), "mosquitto")),
            Component::Kafka => Some((self.state.join("run/tansu.pid"), "tansu")),
            // The first line of postmaster.pid is the server's pid.
            Component::Postgres => Some((self.state.join("pg/data/postmaster.pid"), "postgres")),
            _ => None,
        }
    }

    /// SIGKILL to the component's process, from its pid file; for PostgreSQL to the
    /// server's whole process group (the postmaster and every backend at once, as a
    /// crash of the machine would leave it). Returns the pid.
    pub fn kill9(&self, component: Component) -> anyhow::Result<u32> {
        let (pidfile, comm) = self
            .pidfile(component)
            .with_context(|| format!("{component} is not a stack component"))?;
        let text = std::fs::read_to_string(&pidfile)
            .with_context(|| format!("reading {}", pidfile.display()))?;
        let pid: u32 = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .parse()
            .with_context(|| format!("{} holds no pid", pidfile.display()))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("{component} (pid {pid}) is not running"))?;
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(name, _)| name);
        anyhow::ensure!(
            name == Some(comm),
            "pid {pid} from {} is {name:?}, not {comm}",
            pidfile.display()
        );
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let group_leader = fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pid);
        let target = if component == Component::Postgres && group_leader {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        let status = Command::new("kill")
            .args(["-KILL", "--", &target])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -KILL {target} failed");
        Ok(pid)
    }

    /// `stack.sh up`, again and again until it succeeds or `within` has passed: after
    /// a SIGKILL a component can refuse to start for a moment (PostgreSQL while its
    /// killed postmaster has not been reaped still finds its lock file held).
    pub fn up(&self, within: Duration) -> anyhow::Result<Up> {
        let deadline = Instant::now() + within;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.run("up", left.max(Duration::from_secs(5))) {
                Ok(true) => return Ok(Up { attempts }),
                Ok(false) if Instant::now() + Duration::from_secs(1) < deadline => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Ok(false) => bail!(
                    "stack.sh up failed {attempts} times within {within:?}; see {}",
                    self.log.display()
                ),
                Err(e) => return Err(e),
            }
        }
    }

    /// `stack.sh status`: every component answers.
    pub fn healthy(&self) -> bool {
        self.run("status", Duration::from_secs(60)).unwrap_or(false)
    }

    /// Runs `stack.sh COMMAND`, bounded: whether it succeeded (killed and `false` when
    /// it runs over `timeout`).
    fn run(&self, command: &str, timeout: Duration) -> anyhow::Result<bool> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut child = Command::new(&self.script)
            .arg(command)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("running {} {command}", self.script.display()))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
