//! PgBouncer (Debian's package; `scripts/lib.sh ensure_pgbouncer` installs it for the suite) in
//! front of PostgreSQL. In transaction or statement mode a client's transactions share server
//! sessions, which Relay's sessions (lease, LISTEN, prepared statements) cannot survive: every
//! service refuses to start, says why and exits non-zero. In session mode Relay works as directly.
//! A plain TCP proxy, like the chaos suite's, is never mistaken for a transaction pooler.
use std::{net::SocketAddr, path::PathBuf, process::Stdio, str::FromStr, time::Duration};

use relay_config::DatabaseUrl;
use tokio::process::{Child, Command};

use crate::{failover::leader_of, harness::*, health::with_endpoint, verify::inbox_equals_outbox};

/// What a refused service says (relay_db::DbError::TransactionPooling).
const REFUSAL: &str = "is reached through a transaction- or statement-mode connection pooler";

/// A PgBouncer of the test's own, on a free port, with its configuration in a temporary
/// directory. Killed and cleaned up when dropped.
struct PgBouncer {
    _child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl PgBouncer {
    async fn start(test: &str, pool_mode: &str) -> Self {
        let binary = std::env::var("PGBOUNCER_BIN").unwrap_or_else(|_| "/usr/sbin/pgbouncer".into());
        assert!(
            std::path::Path::new(&binary).exists(),
            "{binary} is missing: the suite installs it (scripts/test.sh, ensure_pgbouncer)"
        );
        let server = server_addr();
        let port = relay_chaos::free_port().expect("free port");
        // PgBouncer refuses to run as root; as root it is started with `-u postgres`, which then
        // reads the files, so the directory is outside the (root-only) target directory.
        let dir = std::env::temp_dir().join(format!("relay-it-pgbouncer-{}", unique()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = format!(
            "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = {pool_mode}\n\
             max_client_conn = 400\ndefault_pool_size = 60\n",
            server.ip(),
            server.port(),
            dir.join("users.txt").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).expect("config");
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").expect("auth file");
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-logs").join(test);
        std::fs::create_dir_all(&log).expect("log dir");
        let log = std::fs::File::create(log.join(format!("pgbouncer-{pool_mode}.log"))).expect("log");
        let mut command = Command::new(&binary);
        if running_as_root() {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start pgbouncer");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        eventually(Duration::from_secs(20), "pgbouncer listening", || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(drop)
        })
        .await;
        Self { _child: child, addr, dir }
    }

    /// `db`'s URL through this PgBouncer.
    fn url(&self, db: &TestDb) -> String {
        db.url_via(self.addr)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The shared PostgreSQL server's address.
fn server_addr() -> SocketAddr {
    let config = tokio_postgres::Config::from_str(&pg_base()).expect("RELAY_TEST_PG");
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) if host == "localhost" => "127.0.0.1".to_string(),
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("RELAY_TEST_PG must name a TCP host, not {other:?}"),
    };
    SocketAddr::new(host.parse().expect("an IP address"), config.get_ports().first().copied().unwrap_or(5432))
}

async fn refusal(url: &str) -> Result<(), relay_db::DbError> {
    relay_db::refuse_transaction_pooling(&DatabaseUrl::parse(url.to_string().into()).expect("url")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn only_transaction_and_statement_poolers_are_refused_not_proxies_or_session_poolers() {
    let test = "pgbouncer_detection";
    let db = TestDb::new().await;
    let proxy = relay_chaos::proxy::Proxy::start("postgres", 0, server_addr()).await.expect("proxy");
    let session = PgBouncer::start(test, "session").await;
    let transaction = PgBouncer::start(test, "transaction").await;
    let statement = PgBouncer::start(test, "statement").await;
    // Several rounds each: the verdict never depends on which server session happened to be free.
    for round in 0..3 {
        for (what, url) in [
            ("direct", db.url.clone()),
            ("TCP proxy", db.url_via(proxy.addr())),
            ("PgBouncer session mode", session.url(&db)),
        ] {
            if let Err(e) = refusal(&url).await {
                panic!("round {round}: {what} refused: {e}");
            }
        }
        for (what, url) in [("transaction", transaction.url(&db)), ("statement", statement.url(&db))] {
            match refusal(&url).await {
                Err(e @ relay_db::DbError::TransactionPooling { .. }) => {
                    assert!(e.to_string().contains(REFUSAL), "{e}");
                    assert!(!e.is_transient(), "a pooler does not go away by waiting");
                }
                other => panic!("round {round}: PgBouncer {what} mode not refused: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn services_behind_a_transaction_pooler_refuse_to_start_and_say_why() {
    let test = "pgbouncer_transaction";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    // Refused before any broker is asked, so the topic need not exist.
    let topic = format!("it-{}", unique());
    let url = DatabaseUrl::parse(origin.url.clone().into()).expect("url");
    relay_db::prepare_schema(&url, relay_db::Schema::Outbox, true).await.expect("schema");
    enqueue_many(&origin, &topic, 300, 10, 30).await;
    let pooler = PgBouncer::start(test, "transaction").await;

    let mut services = Vec::new();
    for name in ["poller-a", "poller-b"] {
        let mut env = poller_env(&origin, &topic);
        env.insert("DATABASE_URL".into(), pooler.url(&origin));
        services.push(spawn(test, name, POLLER, &env));
    }
    let mut env = consumer_env(&inbox, "ledger", &topic);
    env.insert("DATABASE_URL".into(), pooler.url(&inbox));
    services.push(spawn(test, "consumer", CONSUMER, &env));
    for service in &mut services {
        let status = tokio::time::timeout(Duration::from_secs(60), service.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("still running behind a transaction pooler: {}", service.log.display())
            })
            .expect("wait");
        assert!(!status.success(), "{}: exit {status}", service.log.display());
        let log = service.log_text();
        assert!(log.contains(REFUSAL), "{}:\n{log}", service.log.display());
    }
    let db = origin.client().await;
    let published = count(&db, "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL", &[]).await;
    assert_eq!(published, 0);
    let inbox_tables =
        count(&inbox.client().await, "SELECT count(*) FROM pg_tables WHERE schemaname = 'relay'", &[]).await;
    assert_eq!(inbox_tables, 0, "the consumer created nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pollers_behind_a_session_pooler_lead_one_at_a_time_and_publish_everything_once_in_order() {
    let test = "pgbouncer_session";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    let pooler = PgBouncer::start(test, "session").await;
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_env(&inbox, "ledger", &topic));
    let mut pollers = Vec::new();
    let mut addrs = Vec::new();
    for name in ["poller-a", "poller-b"] {
        let mut env = poller_env(&origin, &topic);
        env.insert("DATABASE_URL".into(), pooler.url(&origin));
        addrs.push(with_endpoint(&mut env));
        pollers.push(spawn(test, name, POLLER, &env));
    }
    await_table(&origin, "relay.outbox").await;
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    leader_of(&addr_refs).await;
    enqueue_many(&origin, &topic, 300, 10, 30).await;
    await_inbox(&inbox, "ledger", &topic, 300, Duration::from_secs(120)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 300);

    // One leader for the whole run, and every row published by it exactly once.
    leader_of(&addr_refs).await;
    let mut terms = 0.0;
    let mut published = 0.0;
    for addr in &addrs {
        let text = scrape(addr).await.expect("metrics");
        terms += sample(&text, "relay_outbox_leader_terms_total", &[]).unwrap_or(0.0);
        published += sample(&text, "relay_outbox_published_total", &[]).unwrap_or(0.0);
    }
    assert_eq!((terms, published), (1.0, 300.0));
    for poller in &pollers {
        let log = poller.log_text();
        assert!(
            !log.contains(REFUSAL) && !log.contains("prepared statement"),
            "{}:\n{log}",
            poller.log.display()
        );
    }
}
