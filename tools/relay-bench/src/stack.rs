//! The pieces a benchmark runs: fresh databases, topics, the real service binaries, their memory.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime},
};

use tokio::process::{Child, Command};
use tokio_postgres::Client;

/// Where things are.
#[derive(Debug, Clone)]
pub struct Stack {
    pub brokers: String,
    /// `postgres://user@host:port` without a database.
    pub pg: String,
    pub bin_dir: PathBuf,
    pub out_dir: PathBuf,
}

pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let url =
        relay_config::DatabaseUrl::parse(url.to_string().into()).map_err(|w| anyhow::anyhow!("URL {w}"))?;
    Ok(relay_db::connect(&url).await?)
}

impl Stack {
    pub fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.pg)
    }

    /// (Re)creates `db` with the outbox or inbox schema.
    pub async fn database(&self, db: &str, schema: relay_db::Schema) -> anyhow::Result<Client> {
        let admin = connect(&self.url("postgres")).await?;
        // Separate statements: CREATE DATABASE cannot run inside the implicit transaction of a batch.
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
        admin.batch_execute(&format!("CREATE DATABASE {db}")).await?;
        let url =
            relay_config::DatabaseUrl::parse(self.url(db).into()).map_err(|w| anyhow::anyhow!("URL {w}"))?;
        relay_db::prepare_schema(&url, schema, true).await?;
        connect(&self.url(db)).await
    }

    /// Drops databases a scenario made, so their vacuuming does not disturb the next scenario.
    pub async fn drop_databases(&self, dbs: &[&str]) -> anyhow::Result<()> {
        let admin = connect(&self.url("postgres")).await?;
        for db in dbs {
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
        }
        Ok(())
    }

    pub async fn topic(&self, name: &str, partitions: i32) -> anyhow::Result<String> {
        let topic = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        relay_kafka::create_topics(
            &self.brokers,
            &Default::default(),
            std::slice::from_ref(&topic),
            partitions,
        )
        .await?;
        Ok(topic)
    }

    /// Starts `binary` with `env`; its log goes to `out_dir/<name>.log`. The bench's own
    /// `KAFKA_PROPERTY_*` variables reach every service, to compare a setting; `env` overrides
    /// them. The bench's own clients do not take them.
    pub fn spawn(&self, name: &str, binary: &str, env: &[(&str, String)]) -> anyhow::Result<Service> {
        let log = std::fs::File::create(self.out_dir.join(format!("{name}.log")))?;
        let child = Command::new(self.bin_dir.join(binary))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KAFKA_BROKERS", &self.brokers)
            .env("RUST_LOG", "warn")
            .envs(
                std::env::vars_os()
                    .filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("KAFKA_PROPERTY_"))),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Service { name: name.to_string(), child })
    }

    pub fn poller(&self, db: &str, topic: &str) -> anyhow::Result<Service> {
        self.spawn(
            &format!("poller-{db}"),
            "outbox-poller",
            &[
                ("DATABASE_URL", self.url(db)),
                ("OUTBOX_SOURCE", "bench".into()),
                ("OUTBOX_TOPICS", topic.into()),
                (
                    "OUTBOX_BATCH_SIZE",
                    std::env::var("BENCH_OUTBOX_BATCH_SIZE").unwrap_or_else(|_| "5000".into()),
                ),
            ],
        )
    }

    pub fn consumer(&self, db: &str, inbox: &str, topic: &str) -> anyhow::Result<Service> {
        self.spawn(
            &format!("consumer-{db}"),
            "inbox-consumer",
            &[
                ("DATABASE_URL", self.url(db)),
                ("INBOX_NAME", inbox.into()),
                ("INBOX_TOPICS", topic.into()),
                ("INBOX_GROUP_ID", format!("{inbox}-{topic}")),
                ("INBOX_BATCH_SIZE", "2000".into()),
                ("KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000".into()),
                ("KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS", "500".into()),
                // Tansu answers a fetch only when this wait runs out (Apache Kafka answers as soon as
                // data arrives), so the local stack sets it low; BENCH_FETCH_WAIT_MAX_MS overrides.
                (
                    "KAFKA_PROPERTY_FETCH_WAIT_MAX_MS",
                    std::env::var("BENCH_FETCH_WAIT_MAX_MS").unwrap_or_else(|_| "10".into()),
                ),
            ],
        )
    }
}

/// A running service binary.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    child: Child,
}

impl Service {
    /// Peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
        let kb: f64 =
            status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// SIGTERM and wait (the services drain and exit).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("{} did not stop within 30 s of SIGTERM", self.name))??;
        Ok(())
    }
}

/// Polls `sql` (a single bigint) on `client` until it reaches `target`; returns when it did.
///
/// The observer must not slow what it observes: between polls it sleeps 50 ms or twenty times
/// as long as the poll took, whichever is longer, so a slow poll (a `count(*)` over a large
/// inbox) runs about 5% of the time instead of back to back. The returned instant is as late as
/// that back-off: the drain takes its rates from the databases' own timestamps instead.
pub async fn wait_for_count(
    client: &Client,
    sql: &str,
    target: i64,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        let asked = Instant::now();
        let n: i64 = client.query_one(sql, &[]).await?.get(0);
        if n >= target {
            return Ok(Instant::now());
        }
        anyhow::ensure!(started.elapsed() < timeout, "timed out at {n} of {target}: {sql}");
        tokio::time::sleep(Duration::from_millis(50).max(asked.elapsed() * 20)).await;
    }
}

/// Fills the outbox with `n` messages of 128-byte payloads (`decode(repeat(md5(i::text), 8), 'hex')`)
/// over 1,000 keys, in one statement; returns when it committed.
pub async fn backlog(origin: &Client, topic: &str, n: i64) -> anyhow::Result<SystemTime> {
    origin
        .execute(
            "INSERT INTO relay.outbox (topic, key, payload)
             SELECT $1, 'key-' || (i % 1000), decode(repeat(md5(i::text), 8), 'hex')
             FROM generate_series(1, $2::bigint) AS i",
            &[&topic, &n],
        )
        .await?;
    let committed = SystemTime::now();
    origin.batch_execute("ANALYZE relay.outbox").await?;
    Ok(committed)
}
