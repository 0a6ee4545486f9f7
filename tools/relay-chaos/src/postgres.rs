//! A private PostgreSQL 15 cluster the suite may restart at will, since restarting the shared
//! server would break everything else running on the machine.
//!
//! `initdb` into a temporary directory, TCP only on 127.0.0.1 with trust authentication, started
//! and restarted with `pg_ctl` (fast and immediate shutdown alternately: a clean stop and a
//! crash-like one that needs WAL recovery). As root the tools run as the `postgres` user, which
//! PostgreSQL requires. `fsync` is off: the suite restarts the server, never the machine, so the
//! kernel keeps every write; commits still wait for WAL, so nothing committed is lost.
use std::{
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::process::Command;

use crate::{io_error, ChaosError};

/// How a restart stopped the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopMode {
    /// Sessions ended, checkpoint written.
    Fast,
    /// Every process killed at once; the start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running private cluster; stopped and removed on [`PgCluster::stop`] or drop.
#[derive(Debug)]
pub struct PgCluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    restarts: u64,
    stopped: bool,
}

impl PgCluster {
    /// Creates and starts a cluster on a free port.
    pub async fn start() -> Result<Self, ChaosError> {
        Self::start_with(&[]).await
    }

    /// As [`PgCluster::start`], with extra server settings (`postgresql.conf` names and values,
    /// for example `("max_prepared_transactions", "8")`).
    pub async fn start_with(extra: &[(&str, &str)]) -> Result<Self, ChaosError> {
        let bindir = bindir().await?;
        let dir = std::env::temp_dir().join(format!("relay-chaos-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        let as_postgres = is_root();
        let cluster =
            Self { bindir, dir, port: crate::free_port()?, as_postgres, restarts: 0, stopped: false };
        if as_postgres {
            cluster.run("chown", &["postgres:", &cluster.dir.display().to_string()], false).await?;
        }
        let data = cluster.data().display().to_string();
        let initdb = cluster.tool("initdb");
        cluster
            .run(&initdb, &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], true)
            .await?;
        let mut settings = format!(
            "\n# relay-chaos\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = ''\n\
             fsync = off\nmax_connections = 200\n",
            cluster.port
        );
        for (name, value) in extra {
            settings.push_str(&format!("{name} = '{value}'\n"));
        }
        let conf = cluster.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io_error("read postgresql.conf"))?;
        text.push_str(&settings);
        std::fs::write(&conf, text).map_err(io_error("write postgresql.conf"))?;
        cluster.pg_ctl(&["start"]).await?;
        crate::await_port(cluster.port, std::time::Duration::from_secs(30), "the private PostgreSQL").await?;
        tracing::info!(port = cluster.port, dir = %cluster.dir.display(), "private PostgreSQL started");
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`: trust authentication, no password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Creates an empty database.
    pub async fn create_database(&self, name: &str) -> Result<(), ChaosError> {
        let admin = crate::connect(&self.url("postgres")).await?;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
        Ok(())
    }

    /// Turns TLS on with `server`'s certificate and, from then on, admits only TLS sessions whose
    /// client presents a certificate issued by `client_ca` naming the database user as its
    /// common name (`pg_hba.conf`: `hostssl ... trust clientcert=verify-full`; plain sessions are
    /// rejected). Restarts the server; [`PgCluster::url`] no longer connects afterwards.
    pub async fn require_client_certificates(
        &self,
        server: &crate::tls::Issued,
        client_ca: &crate::tls::Authority,
    ) -> Result<(), ChaosError> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data();
        let files = [
            ("server.crt", server.cert_pem.clone()),
            ("server.key", server.key_pem.clone()),
            ("client-ca.crt", client_ca.cert_pem()),
        ];
        for (name, text) in files {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(io_error(format!("write {}", path.display())))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_error(format!("chmod {}", path.display())))?;
            if self.as_postgres {
                self.run("chown", &["postgres:", &path.display().to_string()], false).await?;
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io_error("read postgresql.conf"))?;
        text.push_str(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'client-ca.crt'\n",
        );
        std::fs::write(&conf, text).map_err(io_error("write postgresql.conf"))?;
        let hba = "hostssl all all 127.0.0.1/32 trust clientcert=verify-full\nhostnossl all all 127.0.0.1/32 reject\n";
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(io_error("write pg_hba.conf"))?;
        self.pg_ctl(&["restart", "-m", "fast"]).await?;
        crate::await_port(self.port, std::time::Duration::from_secs(30), "PostgreSQL with TLS").await
    }

    /// Restarts the server, fast and immediate shutdown alternately; returns the mode used.
    pub async fn restart(&mut self) -> Result<StopMode, ChaosError> {
        let mode = if self.restarts.is_multiple_of(2) { StopMode::Fast } else { StopMode::Immediate };
        self.restarts += 1;
        self.pg_ctl(&["restart", "-m", mode.arg()]).await?;
        crate::await_port(self.port, std::time::Duration::from_secs(30), "PostgreSQL after a restart")
            .await?;
        Ok(mode)
    }

    /// Stops the server at once and removes its files.
    pub async fn stop(mut self) -> Result<(), ChaosError> {
        self.stopped = true;
        let result = self.pg_ctl(&["stop", "-m", "immediate"]).await;
        let _ = std::fs::remove_dir_all(&self.dir);
        result
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str) -> String {
        self.bindir.join(name).display().to_string()
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<(), ChaosError> {
        let (data, log) = (self.data().display().to_string(), self.log_path().display().to_string());
        let mut all = vec!["-D", &data, "-l", &log, "-w", "-t", "60"];
        all.extend_from_slice(args);
        self.run(&self.tool("pg_ctl"), &all, true).await
    }

    /// Runs `program`, as the postgres user when `as_postgres` and we are root.
    async fn run(&self, program: &str, args: &[&str], as_postgres: bool) -> Result<(), ChaosError> {
        let mut command = if as_postgres && self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        // pg_ctl's server writes to its -l log, so these pipes close when pg_ctl exits.
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io_error(format!("run {program}")))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stderr).to_string();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        Err(ChaosError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: output.status.to_string(),
            output: text.trim().to_string(),
        })
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let data = self.data();
        let pg_ctl = self.bindir.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// We run as root when /proc/self belongs to uid 0; then the tools run as `postgres`.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The PostgreSQL 15 binaries: `pg_config --bindir`, else the Debian location.
async fn bindir() -> Result<PathBuf, ChaosError> {
    let mut candidates = Vec::new();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output().await {
        if output.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
        }
    }
    candidates.push(PathBuf::from("/usr/lib/postgresql/15/bin"));
    candidates.into_iter().find(|dir| has_tools(dir)).ok_or_else(|| {
        ChaosError::Setup(
            "no PostgreSQL server binaries (initdb, pg_ctl): install postgresql-15 or put pg_config on PATH"
                .into(),
        )
    })
}

fn has_tools(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_restarted_cluster_keeps_committed_rows_in_both_modes() {
        let mut pg = PgCluster::start().await.expect("start a private cluster");
        pg.create_database("kept").await.unwrap();
        let client = crate::connect(&pg.url("kept")).await.unwrap();
        client.batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)").await.unwrap();
        assert_eq!(pg.restart().await.unwrap(), StopMode::Fast);
        assert!(client.is_closed() || client.simple_query("SELECT 1").await.is_err(), "sessions end");
        let client = crate::connect(&pg.url("kept")).await.unwrap();
        client.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
        assert_eq!(pg.restart().await.unwrap(), StopMode::Immediate);
        let client = crate::connect(&pg.url("kept")).await.unwrap();
        let n: i64 = client.query_one("SELECT sum(n) FROM t", &[]).await.unwrap().get(0);
        assert_eq!(n, 3);
        let dir = pg.dir.clone();
        pg.stop().await.unwrap();
        assert!(!dir.exists());
    }
}
