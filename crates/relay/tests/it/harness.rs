//! Test harness: fresh databases, unique topics, and the real binaries as child processes.
//!
//! Needs PostgreSQL (`RELAY_TEST_PG`, default postgres://postgres@127.0.0.1:5432) and a
//! Kafka-protocol broker (`KAFKA_BROKERS`); `make test` provides both. Each child's stderr goes
//! to `target/it-logs/<test>/<name>.log`.
use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};
use tokio_postgres::{Client, NoTls};

pub const POLLER: &str = env!("CARGO_BIN_EXE_outbox-poller");
pub const CONSUMER: &str = env!("CARGO_BIN_EXE_inbox-consumer");

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").expect("KAFKA_BROKERS must name a broker; run the suite with `make test`")
}

pub fn pg_base() -> String {
    std::env::var("RELAY_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A short unique suffix for database and topic names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A database created for one test.
pub struct TestDb {
    /// `postgres://user@host:port` without the database.
    pub base: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh database on the shared server (`RELAY_TEST_PG`).
    pub async fn new() -> Self {
        Self::on(&pg_base()).await
    }

    /// A fresh database on the server at `base` (`postgres://user@host:port`).
    pub async fn on(base: &str) -> Self {
        let name = format!("relay_it_{}", unique());
        let admin = connect(&format!("{base}/postgres")).await;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        Self { base: base.to_string(), url: format!("{base}/{name}"), name }
    }

    /// An existing database by its URL (`postgres://user@host:port/name`).
    pub fn from_url(url: &str) -> Self {
        let (base, name) = url.rsplit_once('/').expect("a URL ending in /database");
        Self { base: base.to_string(), name: name.to_string(), url: url.to_string() }
    }

    /// The URL of this database reached through `addr` (a proxy) instead of its server.
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let user = self.base.rsplit_once('@').map_or("postgres://postgres", |(user, _)| user);
        format!("{user}@{addr}/{}", self.name)
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A fresh topic with `partitions` partitions.
pub async fn topic(partitions: i32) -> String {
    let name = format!("it-{}", unique());
    relay_kafka::create_topics(&brokers(), &Default::default(), std::slice::from_ref(&name), partitions)
        .await
        .expect("create topic");
    name
}

/// Environment for an outbox-poller on `db`, publishing `topic`.
pub fn poller_env(db: &TestDb, topic: &str) -> BTreeMap<String, String> {
    [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BROKERS", &brokers()),
        ("OUTBOX_SOURCE", "it-origin"),
        ("OUTBOX_TOPICS", topic),
        ("OUTBOX_POLL_INTERVAL_MS", "200"),
        ("OUTBOX_LEADER_RETRY_MS", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Environment for an inbox-consumer storing `topic` into inbox `name` on `db`.
pub fn consumer_env(db: &TestDb, name: &str, topic: &str) -> BTreeMap<String, String> {
    [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BROKERS", &brokers()),
        ("INBOX_NAME", name),
        ("INBOX_TOPICS", topic),
        ("INBOX_GROUP_ID", &format!("{name}-{}", unique())),
        ("KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000"),
        ("KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A running Relay binary; killed if the test ends first.
pub struct Service {
    pub child: Child,
    pub log: PathBuf,
}

/// Creates a new log file for `name` under the test's directory; never shares one.
fn log_file(test: &str, name: &str) -> (PathBuf, std::fs::File) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-logs").join(test);
    std::fs::create_dir_all(&dir).expect("log dir");
    for n in 1.. {
        let path = if n == 1 { dir.join(format!("{name}.log")) } else { dir.join(format!("{name}-{n}.log")) };
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return (path, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", path.display()),
        }
    }
    unreachable!("1.. is endless")
}

/// Starts `binary` with exactly `env` (plus PATH and RUST_LOG).
pub fn spawn(test: &str, name: &str, binary: &str, env: &BTreeMap<String, String>) -> Service {
    let (log, file) = log_file(test, name);
    let child = Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", std::env::var("RELAY_TEST_LOG").unwrap_or_else(|_| "info".into()))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn service");
    Service { child, log }
}

impl Service {
    /// SIGKILL: no flush, no offset commit, no cleanup.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        assert!(sent.success());
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("did not exit within {within:?} of SIGTERM; log: {}", self.log.display())
            })
            .expect("wait")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Polls `probe` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn count(client: &Client, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
    client.query_one(sql, params).await.expect("count query").get(0)
}

/// Waits until inbox `name` on `db` holds `n` messages of `topic`.
pub async fn await_inbox(db: &TestDb, name: &str, topic: &str, n: i64, timeout: Duration) {
    await_table(db, "relay.inbox").await;
    let client = db.client().await;
    let sql = "SELECT count(*) FROM relay.inbox WHERE inbox = $1 AND topic = $2";
    eventually(timeout, &format!("{n} messages in inbox {name}"), || {
        let client = &client;
        async move { (count(client, sql, &[&name, &topic]).await >= n).then_some(()) }
    })
    .await;
}

/// Enqueues `n` messages over `keys` keys with varied binary payloads, `per_tx` per transaction.
/// Returns the message ids in enqueue order.
pub async fn enqueue_many(db: &TestDb, topic: &str, n: usize, keys: usize, per_tx: usize) -> Vec<uuid::Uuid> {
    let mut client = db.client().await;
    let mut ids = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let count = per_tx.min(n - i);
        // Concurrent writers of several keys per transaction can deadlock on the keys' lock
        // slots (README, "Sending a message"); like any application, retry the transaction.
        let written = loop {
            match enqueue_tx(&mut client, topic, i, count, keys).await {
                Ok(written) => break written,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) => {
                    continue
                }
                Err(e) => panic!("enqueue: {e:?}"),
            }
        };
        ids.extend(written);
        i += count;
    }
    ids
}

/// One transaction of `enqueue_many`: messages `first..first + count`.
async fn enqueue_tx(
    client: &mut tokio_postgres::Client,
    topic: &str,
    first: usize,
    count: usize,
    keys: usize,
) -> Result<Vec<uuid::Uuid>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let mut ids = Vec::with_capacity(count);
    for i in first..first + count {
        let key = format!("key-{}", i % keys);
        let payload = payload_for(i);
        let mut message = relay_outbox::Message::new(topic, &key, &payload);
        message.headers.insert("n".into(), i.to_string());
        message.msg_type = "it.message";
        match relay_outbox::enqueue(&tx, &message).await {
            Ok(id) => ids.push(id),
            Err(relay_outbox::EnqueueError::Database(e)) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(ids)
}

/// Enqueues one message in its own transaction; returns its id.
pub async fn enqueue_one(db: &TestDb, topic: &str, key: &str, payload: &[u8]) -> uuid::Uuid {
    let client = db.client().await;
    let row = client
        .query_one("SELECT relay.enqueue($1, $2, $3)", &[&topic, &key, &payload])
        .await
        .expect("enqueue one");
    row.get(0)
}

/// A deterministic payload of 1..=300 bytes that includes NUL and high bytes.
pub fn payload_for(i: usize) -> Vec<u8> {
    let len = 1 + (i * 7919) % 300;
    (0..len).map(|j| ((i * 31 + j * 17) % 256) as u8).collect()
}

/// Waits until a service has created `table`; for `relay.outbox` and `relay.inbox`, until every
/// migration of that schema ran, so a test's open transaction cannot hold up a later one.
pub async fn await_table(db: &TestDb, table: &str) {
    let history = match table {
        "relay.outbox" => {
            Some(("relay_outbox_schema_history", relay_db::latest_version(relay_db::Schema::Outbox)))
        }
        "relay.inbox" => {
            Some(("relay_inbox_schema_history", relay_db::latest_version(relay_db::Schema::Inbox)))
        }
        _ => None,
    };
    let client = db.client().await;
    eventually(Duration::from_secs(30), &format!("{table} to exist"), || {
        let client = &client;
        async move {
            let row = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.ok()?;
            if !row.get::<_, bool>(0) {
                return None;
            }
            let Some((history, latest)) = history else { return Some(()) };
            let sql = format!("SELECT coalesce(max(version), 0) FROM {history}");
            let row = client.query_one(&sql, &[]).await.ok()?;
            (row.get::<_, i32>(0) >= latest).then_some(())
        }
    })
    .await;
}

/// The usual arrangement: an origin database with a poller, an inbox database with a consumer
/// for inbox `ledger`, a fresh topic, and both schemas in place.
pub struct Pipeline {
    pub origin: TestDb,
    pub inbox: TestDb,
    pub topic: String,
    pub poller: Service,
    pub consumer: Service,
}

impl Pipeline {
    pub async fn start(test: &str, partitions: i32) -> Self {
        Self::start_with(test, partitions, &[], &[]).await
    }

    /// As [`Pipeline::start`], with extra (or replaced) variables for the poller and the consumer.
    pub async fn start_with(
        test: &str,
        partitions: i32,
        poller_extra: &[(&str, &str)],
        consumer_extra: &[(&str, &str)],
    ) -> Self {
        let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
        let topic = topic(partitions).await;
        let mut poller_vars = poller_env(&origin, &topic);
        poller_vars.extend(poller_extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut consumer_vars = consumer_env(&inbox, "ledger", &topic);
        consumer_vars.extend(consumer_extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let poller = spawn(test, "poller", POLLER, &poller_vars);
        let consumer = spawn(test, "consumer", CONSUMER, &consumer_vars);
        await_table(&origin, "relay.outbox").await;
        await_table(&inbox, "relay.inbox").await;
        Self { origin, inbox, topic, poller, consumer }
    }

    /// Waits until inbox `ledger` holds `n` messages.
    pub async fn await_ledger(&self, n: i64) {
        await_inbox(&self.inbox, "ledger", &self.topic, n, Duration::from_secs(120)).await;
    }
}

/// A free address on loopback for a service's HTTP endpoint.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    format!("127.0.0.1:{}", listener.local_addr().expect("local addr").port())
}

/// `GET path` on `addr`: the status code and the body, or None while nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The Prometheus text from `addr`.
pub async fn scrape(addr: &str) -> Option<String> {
    http_get(addr, "/metrics").await.map(|(_, body)| body)
}

/// The value of the first sample of `metric` whose line contains every one of `labels`.
pub fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric).is_some_and(|rest| rest.starts_with([' ', '{']))
                && labels.iter().all(|want| l.contains(want))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Enqueues `batches` of 20 messages, one batch every 50 ms, in the background.
pub fn trickle(origin: &TestDb, topic: &str, batches: usize) -> tokio::task::JoinHandle<()> {
    let (url, topic) = (origin.url.clone(), topic.to_string());
    tokio::spawn(async move {
        let db = TestDb::from_url(&url);
        for _ in 0..batches {
            enqueue_many(&db, &topic, 20, 40, 20).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
