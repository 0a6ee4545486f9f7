//! One test per infrastructure fault, each mid-stream and each ending with the full check (every
//! message once, byte-equal, in per-key order): the broker restarted on durable storage,
//! PostgreSQL restarted, connections cut, connections slowed. Each test has its own broker,
//! PostgreSQL cluster or proxies (from `relay_chaos`), so faults never reach another test.
use std::{
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use relay_chaos::{
    broker::{Broker, Storage},
    postgres::PgCluster,
    proxy::Proxy,
    workload::Workload,
};

use crate::{harness::*, verify::inbox_equals_outbox};

fn log_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-logs").join(test);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// A Tansu broker of the test's own, advertising `advertised` (itself, or a proxy before it).
async fn own_broker(test: &str, port: u16, advertised: SocketAddr, storage: Storage) -> Broker {
    Broker::start(port, advertised, storage, &log_dir(test)).await.expect("start Tansu")
}

async fn own_topic(brokers: &str, partitions: i32) -> String {
    let name = format!("it-{}", unique());
    relay_kafka::create_topics(brokers, &Default::default(), std::slice::from_ref(&name), partitions)
        .await
        .expect("create topic");
    name
}

/// The shared PostgreSQL server's address, for a proxy in front of it.
fn shared_pg_addr() -> SocketAddr {
    let config = tokio_postgres::Config::from_str(&pg_base()).expect("RELAY_TEST_PG");
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("RELAY_TEST_PG must name a TCP host, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" { "127.0.0.1".to_string() } else { host };
    SocketAddr::new(host.parse().expect("an IP address in RELAY_TEST_PG"), port)
}

/// Waits until the inbox holds at least `n` messages, so the next fault lands mid-stream.
async fn await_partly_delivered(db: &TestDb, n: i64) -> i64 {
    await_table(db, "relay.inbox").await;
    let client = db.client().await;
    eventually(Duration::from_secs(120), &format!("{n} messages stored"), || {
        let client = &client;
        async move {
            let stored = count(client, "SELECT count(*) FROM relay.inbox", &[]).await;
            (stored >= n).then_some(stored)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restarted_on_durable_storage_mid_stream_loses_and_doubles_nothing() {
    let test = "fault_broker_restart";
    let storage = tempdir(test);
    let port = relay_chaos::free_port().expect("port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut broker = own_broker(test, port, addr, Storage::Sqlite(storage.clone())).await;
    let brokers = addr.to_string();
    let topic = own_topic(&brokers, 3).await;
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let mut poller = poller_env(&origin, &topic);
    poller.insert("KAFKA_BROKERS".into(), brokers.clone());
    poller.insert("OUTBOX_BATCH_SIZE".into(), "200".into());
    let mut consumer = consumer_env(&inbox, "ledger", &topic);
    consumer.insert("KAFKA_BROKERS".into(), brokers.clone());
    let _poller = spawn(test, "poller", POLLER, &poller);
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer);
    await_table(&origin, "relay.outbox").await;

    // 7,000 messages written over several seconds, so both restarts land while messages flow.
    let writer = trickle(&origin, &topic, 350);
    let at_restart = await_partly_delivered(&inbox, 200).await;
    assert_eq!(broker.restart().await.expect("restart Tansu"), relay_chaos::broker::StopSignal::Kill);
    await_partly_delivered(&inbox, at_restart + 200).await;
    assert_eq!(broker.restart().await.expect("restart Tansu"), relay_chaos::broker::StopSignal::Term);
    assert!(!writer.is_finished(), "restarted too late to test anything: the workload had ended");
    writer.await.expect("writer");

    await_inbox(&inbox, "ledger", &topic, 7_000, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 7_000);
    drop(broker);
    let _ = std::fs::remove_dir_all(storage);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_mid_stream_loses_and_doubles_nothing() {
    let test = "fault_postgres_restart";
    let mut pg = PgCluster::start().await.expect("a private PostgreSQL");
    let base = format!("postgres://postgres@127.0.0.1:{}", pg.port());
    let (origin, inbox) = (TestDb::on(&base).await, TestDb::on(&base).await);
    let topic = topic(3).await;
    let _poller = spawn(test, "poller", POLLER, &poller_env(&origin, &topic));
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_env(&inbox, "ledger", &topic));

    // An application that goes on through the restarts: it reconnects and retries, and checks
    // its own business row after a COMMIT whose answer was lost.
    let (allow, allowed) = tokio::sync::watch::channel(3_000u64);
    let workload = Workload {
        url: origin.url.clone(),
        topic: topic.clone(),
        messages: 6_000,
        keys: 50,
        per_tx: 10,
        writers: 2,
    };
    let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writing = tokio::spawn(workload.run(allowed, committed));

    let at_restart = await_partly_delivered(&inbox, 300).await;
    assert_eq!(pg.restart().await.expect("restart"), relay_chaos::postgres::StopMode::Fast);
    assert!(at_restart < 6_000, "restarted too late to test anything: {at_restart} stored");
    // The second half is written while the server goes down again, this time without a
    // shutdown checkpoint: the next start replays the WAL.
    allow.send(6_000).expect("workload running");
    assert_eq!(pg.restart().await.expect("restart"), relay_chaos::postgres::StopMode::Immediate);

    let stats = writing.await.expect("workload task").expect("workload");
    assert_eq!(stats.messages, 6_000);
    await_inbox(&inbox, "ledger", &topic, 6_000, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 6_000);
    let outbox = count(&origin.client().await, "SELECT count(*) FROM relay.outbox", &[]).await;
    assert_eq!(outbox, 6_000, "no message enqueued twice by a retried transaction");
}

/// A pipeline whose every connection, to PostgreSQL and to its own broker, passes a proxy.
struct Proxied {
    origin: TestDb,
    inbox: TestDb,
    topic: String,
    pg_proxy: Proxy,
    kafka_proxy: Proxy,
    _broker: Broker,
    _services: [Service; 2],
}

impl Proxied {
    async fn start(test: &str) -> Self {
        let pg_proxy = Proxy::start("postgres", 0, shared_pg_addr()).await.expect("PostgreSQL proxy");
        let broker_port = relay_chaos::free_port().expect("port");
        let kafka_proxy = Proxy::start("kafka", 0, SocketAddr::from(([127, 0, 0, 1], broker_port)))
            .await
            .expect("Kafka proxy");
        let broker = own_broker(test, broker_port, kafka_proxy.addr(), Storage::Memory).await;
        let brokers = kafka_proxy.addr().to_string();
        let topic = own_topic(&brokers, 3).await;
        let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
        let mut poller = poller_env(&origin, &topic);
        poller.insert("DATABASE_URL".into(), origin.url_via(pg_proxy.addr()));
        poller.insert("KAFKA_BROKERS".into(), brokers.clone());
        poller.insert("OUTBOX_BATCH_SIZE".into(), "200".into());
        let mut consumer = consumer_env(&inbox, "ledger", &topic);
        consumer.insert("DATABASE_URL".into(), inbox.url_via(pg_proxy.addr()));
        consumer.insert("KAFKA_BROKERS".into(), brokers);
        let services = [spawn(test, "poller", POLLER, &poller), spawn(test, "consumer", CONSUMER, &consumer)];
        await_table(&origin, "relay.outbox").await;
        Self { origin, inbox, topic, pg_proxy, kafka_proxy, _broker: broker, _services: services }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_cut_to_the_database_and_the_broker_mid_stream_lose_and_double_nothing() {
    let relay = Proxied::start("fault_connection_cut").await;
    let (pg, kafka) = (relay.pg_proxy.control(), relay.kafka_proxy.control());
    // 6,000 messages written over several seconds, so every cut lands while messages flow.
    let writer = trickle(&relay.origin, &relay.topic, 300);
    await_partly_delivered(&relay.inbox, 200).await;
    let connections_before = (pg.stats().connections, kafka.stats().connections);
    pg.cut(Duration::from_millis(1_000));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    kafka.cut(Duration::from_millis(1_000));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Both at once.
    pg.cut(Duration::from_millis(800));
    kafka.cut(Duration::from_millis(800));
    assert!(!writer.is_finished(), "cut too late to test anything: the workload had ended");
    writer.await.expect("writer");

    await_inbox(&relay.inbox, "ledger", &relay.topic, 6_000, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox_equals_outbox(&relay.origin, &relay.inbox, "ledger", &relay.topic).await, 6_000);
    let (pg, kafka) = (pg.stats(), kafka.stats());
    assert_eq!((pg.cuts, kafka.cuts), (2, 2));
    assert!(
        pg.connections > connections_before.0 && kafka.connections > connections_before.1,
        "the services reconnected after the cuts: {pg:?} {kafka:?}, before {connections_before:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_slowed_to_the_database_and_the_broker_mid_stream_lose_and_double_nothing() {
    let relay = Proxied::start("fault_connection_slow").await;
    let (pg, kafka) = (relay.pg_proxy.control(), relay.kafka_proxy.control());
    // 6,000 messages written over several seconds, so every slowdown lands while messages flow.
    let writer = trickle(&relay.origin, &relay.topic, 300);
    await_partly_delivered(&relay.inbox, 200).await;
    pg.slow(Duration::from_millis(200), Duration::from_secs(2));
    kafka.slow(Duration::from_millis(200), Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.slow(Duration::from_millis(300), Duration::from_secs(1));
    kafka.slow(Duration::from_millis(300), Duration::from_secs(1));
    assert!(!writer.is_finished(), "slowed too late to test anything: the workload had ended");
    writer.await.expect("writer");

    await_inbox(&relay.inbox, "ledger", &relay.topic, 6_000, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox_equals_outbox(&relay.origin, &relay.inbox, "ledger", &relay.topic).await, 6_000);
    assert_eq!((pg.stats().slows, kafka.stats().slows), (2, 2));
}

/// A fresh directory under the test's target dir (removed by the test when it passes).
fn tempdir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}-{}", unique()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_waiting_on_an_unreachable_broker_stands_down_as_soon_as_its_session_ends() {
    let test = "fault_leader_session_while_waiting";
    let broker_port = relay_chaos::free_port().expect("port");
    let kafka_proxy =
        Proxy::start("kafka", 0, SocketAddr::from(([127, 0, 0, 1], broker_port))).await.expect("Kafka proxy");
    let _broker = own_broker(test, broker_port, kafka_proxy.addr(), Storage::Memory).await;
    let brokers = kafka_proxy.addr().to_string();
    let topic = own_topic(&brokers, 2).await;
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let mut poller = poller_env(&origin, &topic);
    poller.insert("KAFKA_BROKERS".into(), brokers.clone());
    let addr = crate::health::with_endpoint(&mut poller);
    let mut consumer = consumer_env(&inbox, "ledger", &topic);
    consumer.insert("KAFKA_BROKERS".into(), brokers);
    let _services = [spawn(test, "poller", POLLER, &poller), spawn(test, "consumer", CONSUMER, &consumer)];
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 50, 5, 10).await;
    await_inbox(&inbox, "ledger", &topic, 50, Duration::from_secs(60)).await;
    crate::health::await_metric(&addr, "relay_outbox_leader_terms_total", &[], 1.0).await;

    // The broker becomes unreachable, and the leader sends rows whose acknowledgements cannot come.
    let cut = Duration::from_secs(20);
    kafka_proxy.control().cut(cut);
    let cut_at = Instant::now();
    enqueue_many(&origin, &topic, 20, 5, 10).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Its lease session ends: it must stop waiting and stand down now,
    // not when the broker answers again.
    let db = origin.client().await;
    let pid: i32 =
        db.query_one(crate::failover::LEASE_HOLDER, &[]).await.expect("the leader holds the lease").get(0);
    let ended = Instant::now();
    db.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.expect("terminate the lock session");
    crate::health::await_metric(&addr, "relay_outbox_leader_terms_total", &[], 2.0).await;
    let stood_down = ended.elapsed();
    println!("leader stood down and led again {} ms after its lease session ended", stood_down.as_millis());
    assert!(
        cut_at.elapsed() < cut,
        "the new term began only after the broker was back ({stood_down:?} after the session ended)"
    );
    assert!(stood_down < Duration::from_secs(5), "stood down after {stood_down:?}");

    await_inbox(&inbox, "ledger", &topic, 70, Duration::from_secs(120)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 70);
}
