//! The real Relay binaries (outbox-poller, inbox-consumer, reconciler) as child processes the
//! suite kills with SIGKILL and starts again by name, each with its own log in the output dir.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

use crate::{io_error, ChaosError};

/// The directory holding the Relay binaries: the one the current executable runs from (the
/// binaries are built together), or its parent when running from `deps/` (an integration test).
pub fn bin_dir() -> Result<PathBuf, ChaosError> {
    let exe = std::env::current_exe().map_err(io_error("find the current executable"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// One service: which binary, with which environment.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub binary: String,
    pub env: BTreeMap<String, String>,
}

/// Running services by name.
#[derive(Debug)]
pub struct Services {
    bin_dir: PathBuf,
    log_dir: PathBuf,
    specs: BTreeMap<String, ServiceSpec>,
    /// Each running child with the time it was started.
    running: BTreeMap<String, (Child, Instant)>,
}

/// A service that exited without being killed by the suite.
#[derive(Debug, Clone)]
pub struct Exit {
    pub name: String,
    pub status: String,
    /// How long it had run.
    pub after: Duration,
}

impl Services {
    pub fn new(bin_dir: PathBuf, log_dir: PathBuf) -> Self {
        Self { bin_dir, log_dir, specs: BTreeMap::new(), running: BTreeMap::new() }
    }

    /// Path of one of the Relay binaries.
    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Registers and starts `name`.
    pub fn add(&mut self, name: &str, spec: ServiceSpec) -> Result<(), ChaosError> {
        self.specs.insert(name.to_string(), spec);
        self.start(name)
    }

    /// Names of the registered services.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.specs.keys().map(String::as_str)
    }

    /// Starts `name` again with its registered environment; its log continues in `<name>.log`.
    pub fn start(&mut self, name: &str) -> Result<(), ChaosError> {
        let spec = self.specs.get(name).ok_or_else(|| ChaosError::Setup(format!("no service {name}")))?;
        let path = self.log_dir.join(format!("{name}.log"));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(format!("open {}", path.display())))?;
        let _ = writeln!(log, "----- relay-chaos: starting {name} -----");
        let child = Command::new(self.binary(&spec.binary))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", std::env::var("CHAOS_SERVICE_LOG").unwrap_or_else(|_| "info".into()))
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(io_error(format!("start {}", spec.binary)))?;
        self.running.insert(name.to_string(), (child, Instant::now()));
        Ok(())
    }

    /// SIGKILL: no flush, no offset commit, no goodbye to the database or the broker.
    pub async fn kill(&mut self, name: &str) -> Result<(), ChaosError> {
        if let Some((mut child, _)) = self.running.remove(name) {
            child.kill().await.map_err(io_error(format!("kill {name}")))?;
        }
        Ok(())
    }

    /// Services that exited by themselves (the suite did not kill them); they are forgotten
    /// until started again.
    pub fn exited(&mut self) -> Vec<Exit> {
        let mut exited = Vec::new();
        for (name, (child, started)) in &mut self.running {
            if let Ok(Some(status)) = child.try_wait() {
                exited.push(Exit {
                    name: name.clone(),
                    status: status.to_string(),
                    after: started.elapsed(),
                });
            }
        }
        for exit in &exited {
            self.running.remove(&exit.name);
        }
        exited
    }

    /// SIGTERM to every service, then waits (up to 30 s each) for them to drain and exit.
    pub async fn stop_all(&mut self) {
        for (name, (child, _)) in &mut self.running {
            if let Some(pid) = child.id() {
                if let Err(e) = crate::broker::signal_process(pid, "TERM").await {
                    tracing::warn!(service = %name, error = %e, "could not send SIGTERM");
                }
            }
        }
        for (name, (mut child, _)) in std::mem::take(&mut self.running) {
            if tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await.is_err() {
                tracing::warn!(service = %name, "did not exit within 30 s of SIGTERM; killing it");
                let _ = child.kill().await;
            }
        }
    }
}
