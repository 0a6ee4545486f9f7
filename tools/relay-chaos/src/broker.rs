//! A Tansu broker the suite may kill and restart, on durable storage (`sqlite://`), so a restart
//! keeps the topics, the records, the producers' sequence state and the consumers' offsets.
//!
//! The broker advertises the address clients should use, normally a [`crate::proxy::Proxy`] in
//! front of it, so every client connection (metadata says "connect here") passes the proxy.
//! Restarts alternate SIGKILL (a crash) and SIGTERM (an orderly stop), always on the same port and
//! the same database file.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

use crate::{io_error, ChaosError};

/// How long a started broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How a restart stopped the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopSignal {
    Kill,
    Term,
}

/// Where the broker keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// `<dir>/tansu.db` (SQLite): survives restarts.
    Sqlite(PathBuf),
    /// In memory: for tests that never restart the broker.
    Memory,
}

/// A SCRAM mechanism Tansu stores credentials for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scram {
    Sha256,
    Sha512,
}

/// A running Tansu broker; killed on drop.
#[derive(Debug)]
pub struct Broker {
    bin: PathBuf,
    port: u16,
    /// `host:port` in the metadata clients receive.
    advertised: String,
    storage: Storage,
    log_dir: PathBuf,
    child: Option<Child>,
    starts: u64,
    /// Whether clients must authenticate with SASL.
    authentication: bool,
}

/// `TANSU_BIN`, else where `scripts/lib.sh` installs it (`~/.cache/relay/tools/bin/tansu`).
pub fn tansu_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/relay/tools/bin/tansu")
}

impl Broker {
    /// Starts Tansu on 127.0.0.1:`port`, advertising `advertised`; logs go to `log_dir/tansu*.log`.
    pub async fn start(
        port: u16,
        advertised: impl ToString,
        storage: Storage,
        log_dir: &Path,
    ) -> Result<Self, ChaosError> {
        let bin = tansu_bin();
        if !bin.is_file() {
            return Err(ChaosError::Setup(format!(
                "no Tansu broker at {} (set TANSU_BIN, or run `make tools`)",
                bin.display()
            )));
        }
        if let Storage::Sqlite(dir) = &storage {
            std::fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
        }
        let mut broker = Self {
            bin,
            port,
            advertised: advertised.to_string(),
            storage,
            log_dir: log_dir.to_path_buf(),
            child: None,
            starts: 0,
            authentication: false,
        };
        broker.launch().await?;
        Ok(broker)
    }

    /// The broker's own address (not the advertised one).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stores SCRAM credentials for `users` (name, password, mechanism), then restarts the broker
    /// so that every client must authenticate with SASL. Needs SQLite storage: Tansu's memory
    /// storage keeps no credentials. (Tansu accepts any password for PLAIN, so only SCRAM
    /// credentials are checked by this broker.)
    pub async fn require_scram(&mut self, users: &[(&str, &str, Scram)]) -> Result<(), ChaosError> {
        if !matches!(self.storage, Storage::Sqlite(_)) {
            return Err(ChaosError::Setup("SCRAM credentials need SQLite storage".into()));
        }
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        for (name, password, mechanism) in users {
            let mechanism = match mechanism {
                Scram::Sha256 => "scram256",
                Scram::Sha512 => "scram512",
            };
            let output = Command::new(&self.bin)
                .args(["user", "create", "--broker", &broker, "--mechanism", mechanism, name, password])
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(io_error("run tansu user create"))?;
            if !output.status.success() {
                return Err(ChaosError::Command {
                    command: format!("tansu user create {name}"),
                    status: output.status.to_string(),
                    output: String::from_utf8_lossy(&output.stderr).into_owned(),
                });
            }
        }
        self.stop(StopSignal::Kill).await?;
        self.authentication = true;
        self.launch().await
    }

    /// Stops the broker (SIGKILL and SIGTERM alternately), then starts it again on the same port
    /// and storage and waits until it accepts connections. Returns the signal used.
    pub async fn restart(&mut self) -> Result<StopSignal, ChaosError> {
        let signal = if self.starts % 2 == 1 { StopSignal::Kill } else { StopSignal::Term };
        self.stop(signal).await?;
        self.launch().await?;
        Ok(signal)
    }

    async fn stop(&mut self, signal: StopSignal) -> Result<(), ChaosError> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        match (signal, child.id()) {
            (StopSignal::Term, Some(pid)) => {
                signal_process(pid, "TERM").await?;
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    tracing::warn!("Tansu did not stop within 10 s of SIGTERM; killing it");
                    child.kill().await.map_err(io_error("kill Tansu"))?;
                }
            }
            _ => child.kill().await.map_err(io_error("kill Tansu"))?,
        }
        Ok(())
    }

    async fn launch(&mut self) -> Result<(), ChaosError> {
        self.starts += 1;
        // Tansu opens a sqlite:// path relative to its working directory, whatever the URL says.
        let (storage, cwd) = match &self.storage {
            Storage::Sqlite(dir) => ("sqlite://tansu.db", dir.clone()),
            Storage::Memory => ("memory://tansu/", self.log_dir.clone()),
        };
        let log_path = self.log_dir.join(format!("tansu-{}.log", self.starts));
        let log =
            std::fs::File::create(&log_path).map_err(io_error(format!("create {}", log_path.display())))?;
        let mut command = Command::new(&self.bin);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .args(["broker", "--kafka-cluster-id", "relay-chaos"])
            .args(["--kafka-listener-url", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--kafka-advertised-listener-url", &format!("tcp://{}", self.advertised)])
            .args(["--storage-engine", storage]);
        if self.authentication {
            command.arg("--authentication");
        }
        let child = command
            .current_dir(cwd)
            .stdin(Stdio::null())
            // Tansu logs to stdout; panics go to stderr.
            .stdout(log.try_clone().map_err(io_error("share Tansu's log"))?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(io_error(format!("start {}", self.bin.display())))?;
        self.child = Some(child);
        crate::await_port(self.port, START_TIMEOUT, "Tansu to accept connections").await.inspect_err(|_| {
            tracing::error!(log = %log_path.display(), "Tansu did not start");
        })
    }
}

/// Sends SIGTERM or another signal by name through `kill(1)`.
pub(crate) async fn signal_process(pid: u32, signal: &str) -> Result<(), ChaosError> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .await
        .map_err(io_error("run kill"))?;
    if status.success() {
        Ok(())
    } else {
        Err(ChaosError::Command {
            command: format!("kill -{signal} {pid}"),
            status: status.to_string(),
            output: String::new(),
        })
    }
}
