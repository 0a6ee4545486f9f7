//! Readiness that tells whether messages can move now: a consumer of a topic that does not
//! exist, a poller whose broker is cut off, a broker restarted empty (its idempotent producers
//! forgotten) must each show as not ready, and each must heal without a restart of the service.
//! SIGTERM while the broker is away ends each service within its grace, marking nothing that
//! was not acknowledged.
use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use relay_chaos::{
    broker::{Broker, Storage},
    proxy::Proxy,
};

use crate::{
    harness::*,
    health::{await_degraded, await_readiness, with_endpoint},
    verify::inbox_equals_outbox,
};

fn log_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-logs").join(test);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    relay_kafka::create_topics(brokers, &Default::default(), &[name.to_string()], partitions)
        .await
        .expect("create topic");
}

/// A memory-backed Tansu of the test's own behind a proxy that can cut it off; the proxy's
/// address is what the services use.
async fn broker_behind_proxy(test: &str) -> (Broker, Proxy, String) {
    let port = relay_chaos::free_port().expect("port");
    let proxy = Proxy::start("kafka", 0, SocketAddr::from(([127, 0, 0, 1], port))).await.expect("proxy");
    let broker =
        Broker::start(port, proxy.addr(), Storage::Memory, &log_dir(test)).await.expect("start Tansu");
    let brokers = proxy.addr().to_string();
    (broker, proxy, brokers)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_of_topics_that_do_not_exist_is_not_ready_names_them_exports_its_metrics_and_heals() {
    let test = "readiness_missing_topic";
    let existing = topic(2).await;
    let (missing_a, missing_b) = (format!("it-missing-{}", unique()), format!("it-missing-{}", unique()));
    let origin = TestDb::new().await;
    // One consumer subscribed to a missing topic only, one to an existing and a missing one.
    let cases =
        [(missing_a.clone(), vec![missing_a.as_str()]), (missing_b.clone(), vec![&existing, &missing_b])];
    let mut running = Vec::new();
    for (i, (missing, topics)) in cases.iter().enumerate() {
        let inbox = TestDb::new().await;
        let mut env = consumer_env(&inbox, "ledger", &topics.join(","));
        env.insert("INBOX_ASSIGNMENT_TIMEOUT_MS".into(), "5000".into());
        let addr = with_endpoint(&mut env);
        let consumer = spawn(test, &format!("consumer-{i}"), CONSUMER, &env);
        let body = eventually(Duration::from_secs(60), "/readyz naming the missing topic", || async {
            let (code, body) = http_get(&addr, "/readyz").await?;
            (code == 503 && body.contains(missing.as_str())).then_some(body)
        })
        .await;
        assert!(body.contains("assignment: degraded: subscribed topics"), "{body}");
        let text = eventually(Duration::from_secs(30), "the consumer's metrics", || async {
            let text = scrape(&addr).await?;
            sample(&text, "relay_inbox_assigned_partitions", &[]).is_some().then_some(text)
        })
        .await;
        for metric in
            ["relay_inbox_inserted_total", "relay_inbox_dead_letters_total", "relay_inbox_rejoins_total"]
        {
            assert_eq!(sample(&text, metric, &["inbox=\"ledger\""]), Some(0.0), "{metric} in {text}");
        }
        assert_eq!(sample(&text, "relay_ready", &[]), Some(0.0));
        running.push((inbox, addr, consumer));
    }
    let all = [existing.as_str(), &missing_a, &missing_b].join(",");
    let _poller = spawn(test, "poller", POLLER, &poller_env(&origin, &all));
    await_table(&origin, "relay.outbox").await;
    // The existing topic flows meanwhile.
    for i in 0..10 {
        enqueue_one(&origin, &existing, &format!("k{i}"), b"flowing").await;
    }
    await_inbox(&running[1].0, "ledger", &existing, 10, Duration::from_secs(60)).await;

    // The topics are created and written to: both consumers store them and turn ready.
    for (missing, _) in &cases {
        create_topic(&brokers(), missing, 2).await;
        for i in 0..20 {
            enqueue_one(&origin, missing, &format!("k{}", i % 4), format!("m{i}").as_bytes()).await;
        }
    }
    for ((missing, _), (inbox, addr, _)) in cases.iter().zip(&running) {
        await_inbox(inbox, "ledger", missing, 20, Duration::from_secs(60)).await;
        await_readiness(addr, 200, "the topic exists and is consumed").await;
    }
    // Exactly once and in order; the second inbox holds the existing topic's messages as well.
    assert_eq!(inbox_equals_outbox(&origin, &running[0].0, "ledger", &missing_a).await, 20);
    let db = running[1].0.client().await;
    let per_topic = "SELECT count(DISTINCT message_id) FROM relay.inbox WHERE topic = $1";
    for (topic, n) in [(&missing_b, 20), (&existing, 10)] {
        assert_eq!(count(&db, per_topic, &[topic]).await, n, "{topic}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poller_cut_off_from_its_broker_is_not_ready_for_publishing_and_recovers_by_itself() {
    let test = "readiness_broker_cut";
    let (_broker, proxy, brokers) = broker_behind_proxy(test).await;
    let topic = format!("it-{}", unique());
    create_topic(&brokers, &topic, 2).await;
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let mut poller = poller_env(&origin, &topic);
    poller.insert("KAFKA_BROKERS".into(), brokers.clone());
    let addr = with_endpoint(&mut poller);
    let mut consumer = consumer_env(&inbox, "ledger", &topic);
    consumer.insert("KAFKA_BROKERS".into(), brokers);
    let _services = [spawn(test, "poller", POLLER, &poller), spawn(test, "consumer", CONSUMER, &consumer)];
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 30, 5, 10).await;
    await_inbox(&inbox, "ledger", &topic, 30, Duration::from_secs(60)).await;
    await_readiness(&addr, 200, "flowing").await;

    // Idle, then with rows waiting: either way publishing is not ready while no broker answers.
    proxy.control().cut(Duration::from_secs(25));
    let body = await_degraded(&addr, "publishing", "the broker is cut off").await;
    assert!(body.contains("kafka: degraded"), "{body}");
    enqueue_many(&origin, &topic, 30, 5, 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = http_get(&addr, "/readyz?parts=publishing").await.expect("readyz");
    assert_eq!(status, 503, "{body}");

    await_inbox(&inbox, "ledger", &topic, 60, Duration::from_secs(90)).await;
    await_readiness(&addr, 200, "the broker answers again").await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restarted_empty_is_healed_and_readiness_returns_without_a_restart() {
    let test = "readiness_broker_restarted_empty";
    let port = relay_chaos::free_port().expect("port");
    let addr_broker = SocketAddr::from(([127, 0, 0, 1], port));
    let mut broker =
        Broker::start(port, addr_broker, Storage::Memory, &log_dir(test)).await.expect("start Tansu");
    let brokers = addr_broker.to_string();
    let topic = format!("it-{}", unique());
    create_topic(&brokers, &topic, 2).await;
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let mut poller = poller_env(&origin, &topic);
    poller.insert("KAFKA_BROKERS".into(), brokers.clone());
    let addr = with_endpoint(&mut poller);
    let mut consumer = consumer_env(&inbox, "ledger", &topic);
    consumer.insert("KAFKA_BROKERS".into(), brokers.clone());
    let services = [spawn(test, "poller", POLLER, &poller), spawn(test, "consumer", CONSUMER, &consumer)];
    await_table(&origin, "relay.outbox").await;
    let before = enqueue_many(&origin, &topic, 100, 10, 10).await;
    await_inbox(&inbox, "ledger", &topic, 100, Duration::from_secs(60)).await;
    await_readiness(&addr, 200, "flowing").await;
    let interruptions = || async {
        let text = scrape(&addr).await.expect("poller metrics");
        sample(&text, "relay_outbox_interruptions_total", &[]).expect("interruptions exported")
    };
    let interrupted_before = interruptions().await;

    // The broker comes back with nothing: no topic, no group, no producer ids. The poller's
    // producer is refused (UNKNOWN_PRODUCER_ID) until it is replaced by a fresh one.
    broker.restart().await.expect("restart Tansu");
    create_topic(&brokers, &topic, 2).await;
    let restarted = Instant::now();
    let after = enqueue_many(&origin, &topic, 100, 10, 10).await;
    await_degraded(&addr, "publishing", "the producer gets no delivery report").await;
    // A consumer in a new group reads the recreated topic from its start.
    let fresh = TestDb::new().await;
    let mut consumer = consumer_env(&fresh, "ledger", &topic);
    consumer.insert("KAFKA_BROKERS".into(), brokers);
    let _fresh = spawn(test, "consumer-new-group", CONSUMER, &consumer);
    await_readiness(&addr, 200, "publishing again").await;
    // Two ways back, depending on how long the broker was gone: when librdkafka saw every broker
    // down with nothing in flight, it takes a new producer id itself; otherwise the broker refuses
    // the stale one and the stalled producer's term ends, and a fresh producer's begins. Either
    // way every row below is published and stored, with no restart of the service.
    let log = services[0].log_text();
    if log.contains("starting a fresh producer") {
        assert!(interruptions().await > interrupted_before, "no term was interrupted");
    } else {
        assert!(
            log.contains("no broker answered"),
            "the poller healed without a fresh producer, but never saw the broker gone"
        );
        assert_eq!(interruptions().await, interrupted_before, "a term ended without a fresh producer");
    }
    let db = origin.client().await;
    let published =
        "SELECT count(*) FROM relay.outbox WHERE message_id = ANY($1) AND published_at IS NOT NULL";
    eventually(Duration::from_secs(60), "the rows enqueued after the restart published", || async {
        (count(&db, published, &[&after]).await == 100).then_some(())
    })
    .await;
    println!("published again and the poller ready {} ms after the restart", restarted.elapsed().as_millis());
    await_table(&fresh, "relay.inbox").await;
    let stored = fresh.client().await;
    let sql = "SELECT count(*) FROM relay.inbox WHERE message_id = ANY($1)";
    eventually(Duration::from_secs(60), "the rows enqueued after the restart stored", || async {
        (count(&stored, sql, &[&after]).await == 100).then_some(())
    })
    .await;
    let old = inbox.client().await;
    assert_eq!(count(&old, sql, &[&before]).await, 100, "everything before the restart was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_the_broker_cut_off_ends_each_service_within_its_grace_marking_nothing_unacknowledged() {
    let test = "readiness_sigterm_broker_down";
    let (_broker, proxy, brokers) = broker_behind_proxy(test).await;
    let topic = format!("it-{}", unique());
    create_topic(&brokers, &topic, 2).await;
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let mut poller_vars = poller_env(&origin, &topic);
    poller_vars.insert("KAFKA_BROKERS".into(), brokers.clone());
    let mut consumer_vars = consumer_env(&inbox, "ledger", &topic);
    consumer_vars.insert("KAFKA_BROKERS".into(), brokers);
    for (grace, vars) in [("4000", &mut poller_vars), ("3000", &mut consumer_vars)] {
        let name = if vars.contains_key("OUTBOX_SOURCE") { "OUTBOX" } else { "INBOX" };
        vars.insert(format!("{name}_SHUTDOWN_GRACE_MS"), grace.into());
    }
    let mut poller = spawn(test, "poller", POLLER, &poller_vars);
    let mut consumer = spawn(test, "consumer", CONSUMER, &consumer_vars);
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 20, 5, 10).await;
    await_inbox(&inbox, "ledger", &topic, 20, Duration::from_secs(60)).await;

    proxy.control().cut(Duration::from_secs(120));
    let cut_off = enqueue_many(&origin, &topic, 20, 5, 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (service, grace, name) in [(&mut poller, 4, "poller"), (&mut consumer, 3, "consumer")] {
        let asked = Instant::now();
        let status = service.terminate(Duration::from_secs(grace + 10)).await;
        let took = asked.elapsed();
        println!(
            "{name} exited {} ms after SIGTERM with the broker cut off (grace {grace} s)",
            took.as_millis()
        );
        assert!(status.success(), "{name} exit status {status}");
        assert!(took < Duration::from_secs(grace + 2), "{name} took {took:?} with a grace of {grace} s");
    }
    let db = origin.client().await;
    let unmarked = "SELECT count(*) FROM relay.outbox WHERE message_id = ANY($1) AND published_at IS NULL";
    assert_eq!(
        count(&db, unmarked, &[&cut_off]).await,
        20,
        "rows the broker never acknowledged stay pending"
    );
}
