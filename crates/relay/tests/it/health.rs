//! `/healthz`, `/readyz` and `/metrics` of the running services, and readiness through outages:
//! a service waits out a broker or database outage by itself, says it is not ready meanwhile,
//! and loses nothing.
use std::{collections::BTreeMap, time::Duration};

use crate::{harness::*, verify::inbox_equals_outbox};

/// Adds an HTTP endpoint and a fast probe to a service's environment; returns its address.
pub fn with_endpoint(env: &mut BTreeMap<String, String>) -> String {
    let addr = free_addr();
    env.insert("RELAY_HTTP_ADDR".into(), addr.clone());
    env.insert("RELAY_PROBE_INTERVAL_MS".into(), "200".into());
    addr
}

/// Waits until `/readyz` on `addr` answers `status`; returns the body.
pub async fn await_readiness(addr: &str, status: u16, what: &str) -> String {
    eventually(Duration::from_secs(60), &format!("{what}: /readyz {status}"), || async {
        let (code, body) = http_get(addr, "/readyz").await?;
        (code == status).then_some(body)
    })
    .await
}

/// Waits until `/readyz` on `addr` answers 503 naming `part` as degraded; returns the body.
pub async fn await_degraded(addr: &str, part: &str, what: &str) -> String {
    let wanted = format!("{part}: degraded");
    eventually(Duration::from_secs(60), &format!("{what}: /readyz 503 with {wanted}"), || async {
        let (code, body) = http_get(addr, "/readyz").await?;
        (code == 503 && body.contains(&wanted)).then_some(body)
    })
    .await
}

/// Waits until `metric` (with `labels`) on `addr` equals `value`.
pub async fn await_metric(addr: &str, metric: &str, labels: &[&str], value: f64) {
    eventually(Duration::from_secs(30), &format!("{metric}{labels:?} = {value} on {addr}"), || async {
        let text = scrape(addr).await?;
        (sample(&text, metric, labels)? == value).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_serve_readiness_and_the_metrics_that_count_the_flow() {
    let test = "endpoints";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    let mut poller_vars = poller_env(&origin, &topic);
    poller_vars.insert("OUTBOX_MAX_PAYLOAD_BYTES".into(), "1000".into());
    let poller_addr = with_endpoint(&mut poller_vars);
    let mut consumer_vars = consumer_env(&inbox, "ledger", &topic);
    let consumer_addr = with_endpoint(&mut consumer_vars);
    let _poller = spawn(test, "poller", POLLER, &poller_vars);
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_vars);

    let ready = await_readiness(&poller_addr, 200, "poller").await;
    assert_eq!(ready, "database: ok\nkafka: ok\nleader: ok\npublishing: ok\nschema: ok\ntopics: ok\n");
    assert_eq!(
        await_readiness(&consumer_addr, 200, "consumer").await,
        "assignment: ok\ndatabase: ok\nkafka: ok\nschema: ok\nstoring: ok\n"
    );
    assert_eq!(http_get(&poller_addr, "/healthz").await, Some((200, "ok\n".into())));
    assert_eq!(http_get(&consumer_addr, "/healthz").await, Some((200, "ok\n".into())));

    enqueue_many(&origin, &topic, 300, 7, 50).await;
    // One row over the poller's payload limit: parked and counted, the others flow.
    let client = origin.client().await;
    client
        .execute("SELECT relay.enqueue($1, 'too-big', $2)", &[&topic, &vec![7u8; 2000]])
        .await
        .expect("enqueue oversized");
    await_inbox(&inbox, "ledger", &topic, 300, Duration::from_secs(60)).await;

    await_metric(&poller_addr, "relay_outbox_published_total", &[], 300.0).await;
    await_metric(&poller_addr, "relay_outbox_parked_total", &[], 1.0).await;
    await_metric(&poller_addr, "relay_outbox_parked", &[], 1.0).await;
    await_metric(&poller_addr, "relay_outbox_backlog", &[], 0.0).await;
    await_metric(&poller_addr, "relay_outbox_oldest_pending_age_seconds", &[], 0.0).await;
    await_metric(&poller_addr, "relay_outbox_leader", &[], 1.0).await;
    await_metric(&poller_addr, "relay_ready", &[], 1.0).await;
    let ledger = ["inbox=\"ledger\""];
    await_metric(&consumer_addr, "relay_inbox_inserted_total", &ledger, 300.0).await;
    await_metric(&consumer_addr, "relay_inbox_duplicates_total", &ledger, 0.0).await;
    await_metric(&consumer_addr, "relay_inbox_dead_letters_total", &ledger, 0.0).await;
    for partition in 0..3 {
        let labels =
            ["inbox=\"ledger\"", &format!("topic=\"{topic}\""), &format!("partition=\"{partition}\"")];
        await_metric(&consumer_addr, "relay_inbox_consumer_lag", &labels, 0.0).await;
    }
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 300);
}

/// A poller and a consumer with endpoints, both ready, and 100 messages already delivered.
struct Watched {
    origin: TestDb,
    inbox: TestDb,
    topic: String,
    poller: Service,
    consumer: Service,
    poller_addr: String,
    consumer_addr: String,
}

impl Watched {
    async fn start(test: &str, topic: String, brokers: Option<String>) -> Self {
        let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
        let mut poller_vars = poller_env(&origin, &topic);
        let mut consumer_vars = consumer_env(&inbox, "ledger", &topic);
        if let Some(brokers) = brokers {
            poller_vars.insert("KAFKA_BROKERS".into(), brokers.clone());
            consumer_vars.insert("KAFKA_BROKERS".into(), brokers);
        }
        let poller_addr = with_endpoint(&mut poller_vars);
        let consumer_addr = with_endpoint(&mut consumer_vars);
        let poller = spawn(test, "poller", POLLER, &poller_vars);
        let consumer = spawn(test, "consumer", CONSUMER, &consumer_vars);
        await_readiness(&poller_addr, 200, "poller").await;
        await_readiness(&consumer_addr, 200, "consumer").await;
        enqueue_many(&origin, &topic, 100, 5, 20).await;
        await_inbox(&inbox, "ledger", &topic, 100, Duration::from_secs(60)).await;
        Self { origin, inbox, topic, poller, consumer, poller_addr, consumer_addr }
    }
}

/// Asserts that none of `services` exited.
fn still_running(services: [&mut Service; 2]) {
    for service in services {
        let status = service.child.try_wait().expect("child status");
        assert!(status.is_none(), "{} exited: {status:?}", service.log.display());
    }
}

/// Refuses new connections to `db` and ends the existing ones: the database is unreachable.
async fn cut_off(db: &TestDb) {
    let admin = connect(&format!("{}/postgres", db.url.rsplit_once('/').expect("url").0)).await;
    let name = db.url.rsplit('/').next().expect("db name");
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await.expect("block");
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&name])
        .await
        .expect("terminate sessions");
}

async fn reconnect(db: &TestDb) {
    let admin = connect(&format!("{}/postgres", db.url.rsplit_once('/').expect("url").0)).await;
    let name = db.url.rsplit('/').next().expect("db name");
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await.expect("unblock");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_outages_make_services_not_ready_and_they_recover_by_themselves() {
    let topic = topic(2).await;
    let Watched { origin, inbox, topic, mut poller, mut consumer, poller_addr, consumer_addr } =
        Watched::start("db_outage", topic, None).await;

    // The inbox database goes away while messages keep coming.
    cut_off(&inbox).await;
    enqueue_many(&origin, &topic, 100, 5, 20).await;
    await_degraded(&consumer_addr, "database", "consumer without its database").await;
    reconnect(&inbox).await;
    await_readiness(&consumer_addr, 200, "consumer after the outage").await;
    await_inbox(&inbox, "ledger", &topic, 200, Duration::from_secs(60)).await;

    // The origin database goes away: the poller waits, then publishes what was committed before.
    enqueue_many(&origin, &topic, 100, 5, 20).await;
    cut_off(&origin).await;
    await_degraded(&poller_addr, "database", "poller without its database").await;
    reconnect(&origin).await;
    await_readiness(&poller_addr, 200, "poller after the outage").await;
    enqueue_many(&origin, &topic, 100, 5, 20).await;
    await_inbox(&inbox, "ledger", &topic, 400, Duration::from_secs(60)).await;

    still_running([&mut poller, &mut consumer]);
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 400);
}

/// A broker of the test's own, on durable storage, that the test can stop and start.
struct OwnBroker {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl OwnBroker {
    async fn start() -> Self {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("broker-{}", unique()));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let port: u16 = free_addr().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let mut broker = Self { port, dir, child: None };
        broker.resume().await;
        broker
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn resume(&mut self) {
        let tansu = std::env::var("TANSU_BIN").expect("TANSU_BIN names the Tansu binary; run `make test`");
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .expect("broker log");
        let child = tokio::process::Command::new(tansu)
            .args(["broker", "--kafka-cluster-id", "relay-it", "--kafka-listener-url", &listener])
            .args(["--kafka-advertised-listener-url", &listener, "--storage-engine"])
            // Tansu reads the path after `sqlite://` relative to its working directory.
            .arg("sqlite://tansu.db")
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start Tansu");
        self.child = Some(child);
        let addr = self.brokers();
        eventually(Duration::from_secs(30), "the broker to listen", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
        })
        .await;
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill broker");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_makes_services_not_ready_and_they_recover_by_themselves() {
    let test = "broker_outage";
    let mut broker = OwnBroker::start().await;
    let topic = format!("it-{}", unique());
    relay_kafka::create_topics(&broker.brokers(), &Default::default(), std::slice::from_ref(&topic), 2)
        .await
        .expect("create topic");
    let Watched { origin, inbox, topic, mut poller, mut consumer, poller_addr, consumer_addr } =
        Watched::start(test, topic, Some(broker.brokers())).await;

    broker.kill().await;
    enqueue_many(&origin, &topic, 100, 5, 20).await;
    for (addr, what) in [(&poller_addr, "poller"), (&consumer_addr, "consumer")] {
        await_degraded(addr, "kafka", &format!("{what} without a broker")).await;
        assert_eq!(http_get(addr, "/healthz").await, Some((200, "ok\n".into())), "{what} is alive");
        // What a sidecar's pod-level readiness probe asks: only whether the schema is in place.
        let schema = http_get(addr, "/readyz?parts=schema").await;
        assert_eq!(schema, Some((200, "schema: ok\n".into())), "{what}: the pod stays ready");
        let (status, body) = http_get(addr, "/readyz?parts=schema,kafka").await.expect("answer");
        assert!(status == 503 && body.contains("kafka: degraded"), "{what}: {status} {body}");
        let (status, body) = http_get(addr, "/readyz?parts=kafak").await.expect("answer");
        assert!(status == 404 && body.contains("no part \"kafak\""), "{what}: {status} {body}");
        for query in ["/readyz?part=schema", "/readyz?parts="] {
            let (status, _) = http_get(addr, query).await.expect("answer");
            assert_eq!(status, 400, "{what}: {query} names no part, so it must not pass");
        }
    }
    // The 100 rows wait in the outbox, and the backlog gauges say so.
    await_metric(&poller_addr, "relay_outbox_backlog", &[], 100.0).await;
    let text = scrape(&poller_addr).await.expect("metrics");
    let oldest = sample(&text, "relay_outbox_oldest_pending_age_seconds", &[]).expect("oldest age");
    assert!(oldest > 0.0, "the oldest pending row has an age: {oldest}");
    let log = poller.log_text();
    assert!(log.contains("librdkafka"), "librdkafka's own log lines reach the service log:\n{log}");
    broker.resume().await;
    await_readiness(&poller_addr, 200, "poller after the outage").await;
    await_readiness(&consumer_addr, 200, "consumer after the outage").await;
    enqueue_many(&origin, &topic, 100, 5, 20).await;
    await_inbox(&inbox, "ledger", &topic, 300, Duration::from_secs(120)).await;

    still_running([&mut poller, &mut consumer]);
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 300);
}
