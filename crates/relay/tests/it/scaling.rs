//! Scaling out on Kafka and PostgreSQL: two origin databases, each with its own poller pair
//! (leader and standby), feed one inbox through a 12-partition topic read by three
//! inbox-consumer replicas in one consumer group. The load comes from several connections per
//! origin writing the same keys at once (so same-key writers wait for each other and rows commit
//! out of id order), and mid-run the leading poller of one origin is killed (its standby takes
//! over) and one consumer replica is killed and started again (the group rebalances under
//! load). Every message is stored once, each source's keys keep their order, and the reconciler
//! is clean over both outboxes.
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use crate::{failover::leader_of, harness::*};

const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");
const TEST: &str = "scaling";
const SOURCES: [&str; 2] = ["payments-eu", "payments-us"];
const PARTITIONS: i32 = 12;
const REPLICAS: usize = 3;
/// Messages per origin in the main load, over `KEYS` keys (the same key names in both origins).
const PER_ORIGIN: usize = 3_000;
const KEYS: usize = 60;
/// Connections per origin enqueueing the main load at once, every one over all `KEYS` keys.
const WRITERS: usize = 4;

/// One origin database with its two pollers.
struct Origin {
    source: &'static str,
    db: TestDb,
    pollers: Vec<(Service, String)>,
}

async fn start_origin(source: &'static str, topic: &str) -> Origin {
    let db = TestDb::new().await;
    let pollers = (0..2)
        .map(|i| {
            let addr = free_addr();
            let mut env = poller_env(&db, topic);
            env.insert("OUTBOX_SOURCE".into(), source.into());
            env.insert("RELAY_HTTP_ADDR".into(), addr.clone());
            (spawn(TEST, &format!("poller-{source}-{i}"), POLLER, &env), addr)
        })
        .collect();
    await_table(&db, "relay.outbox").await;
    Origin { source, db, pollers }
}

/// `relay_inbox_inserted_total` of each consumer replica (0 until it stored something).
async fn inserted_per_replica(addrs: &[String]) -> Vec<f64> {
    let mut counts = Vec::new();
    for addr in addrs {
        let text = scrape(addr).await.unwrap_or_default();
        counts.push(sample(&text, "relay_inbox_inserted_total", &["inbox=\"ledger\""]).unwrap_or(0.0));
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn two_origins_with_poller_pairs_feed_one_inbox_through_three_consumer_replicas() {
    let topic = topic(PARTITIONS).await;
    let inbox = TestDb::new().await;
    let group = format!("ledger-{}", unique());
    let consumer_addrs: Vec<String> = (0..REPLICAS).map(|_| free_addr()).collect();
    let consumer_envs: Vec<BTreeMap<String, String>> = consumer_addrs
        .iter()
        .map(|addr| {
            let mut env = consumer_env(&inbox, "ledger", &topic);
            env.insert("INBOX_GROUP_ID".into(), group.clone());
            env.insert("RELAY_HTTP_ADDR".into(), addr.clone());
            env
        })
        .collect();
    let mut consumers: Vec<Service> = consumer_envs
        .iter()
        .enumerate()
        .map(|(i, env)| spawn(TEST, &format!("consumer-{i}"), CONSUMER, env))
        .collect();
    await_table(&inbox, "relay.inbox").await;
    let mut origins = [start_origin(SOURCES[0], &topic).await, start_origin(SOURCES[1], &topic).await];

    // Warm-up: a trickle from both origins until every replica has stored something, so the
    // group has split the partitions among all three before the main load.
    let mut sent = 0_usize;
    eventually(Duration::from_secs(120), "every consumer replica storing messages", || {
        let (origins, addrs, topic) = (&origins, &consumer_addrs, &topic);
        sent += 2 * PARTITIONS as usize;
        async move {
            for origin in origins {
                enqueue_many(&origin.db, topic, PARTITIONS as usize, PARTITIONS as usize, 4).await;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            inserted_per_replica(addrs).await.iter().all(|n| *n > 0.0).then_some(())
        }
    })
    .await;

    // The main load: both origins at once, `WRITERS` connections each over the same keys, many
    // small transactions; meanwhile origin 0 loses its leading poller and the group one replica.
    let urls: Vec<String> = origins.iter().map(|o| o.db.url.clone()).collect();
    let mut writers = Vec::new();
    for url in &urls {
        for _ in 0..WRITERS {
            let (db, topic) = (TestDb::from_url(url), topic.clone());
            writers.push(async move { enqueue_many(&db, &topic, PER_ORIGIN / WRITERS, KEYS, 10).await });
        }
    }
    let load = async {
        for writer in writers.into_iter().map(tokio::spawn).collect::<Vec<_>>() {
            writer.await.expect("writer");
        }
    };
    let total = (sent + 2 * (PER_ORIGIN / WRITERS) * WRITERS) as i64;
    let inbox_client = inbox.client().await;
    let stored = || async {
        let sql = "SELECT count(*) FROM relay.inbox WHERE inbox = 'ledger'";
        count(&inbox_client, sql, &[]).await
    };
    // Each disruption waits for a share of the load to be stored, so it lands mid-run.
    let reached = |share: i64| {
        let stored = &stored;
        async move {
            eventually(Duration::from_secs(120), &format!("{share}% of the load stored"), || async move {
                (stored().await >= sent as i64 + (total - sent as i64) * share / 100).then_some(())
            })
            .await
        }
    };
    let disrupt = async {
        reached(10).await;
        let pollers = &mut origins[0].pollers;
        let addrs: Vec<&str> = pollers.iter().map(|(_, addr)| addr.as_str()).collect();
        let leader = leader_of(&addrs).await;
        pollers[leader].0.kill().await;
        reached(25).await;
        consumers[0].kill().await;
        let at_kill = stored().await;
        assert!(at_kill < total, "the consumer replica was killed mid-run ({at_kill} of {total} stored)");
        // Long enough for the group to drop the killed member: a restart within a second or so
        // meets the slow group recovery of Tansu (see README, Tests: "Where only the local broker (Tansu 0.6) behaves so").
        tokio::time::sleep(Duration::from_secs(3)).await;
        consumers[0] = spawn(TEST, "consumer-0-restarted", CONSUMER, &consumer_envs[0]);
        println!("leader of {} killed; consumer-0 killed at {at_kill} of {total} stored", SOURCES[0]);
        leader
    };
    let ((), killed_leader) = tokio::join!(load, disrupt);
    await_inbox(&inbox, "ledger", &topic, total, Duration::from_secs(300)).await;

    for (n, origin) in origins.iter().enumerate() {
        let mut leaders = 0.0;
        for (i, (_, addr)) in origin.pollers.iter().enumerate() {
            if n == 0 && i == killed_leader {
                continue;
            }
            let text = scrape(addr).await.expect("poller metrics");
            leaders += sample(&text, "relay_outbox_leader", &[]).expect("relay_outbox_leader");
        }
        assert_eq!(leaders, 1.0, "{}: exactly one of its live pollers leads", origin.source);
    }
    // For the log only: the killed replica's counts went with it, so they no longer add up.
    let per_replica = inserted_per_replica(&consumer_addrs).await;
    println!("stored per consumer replica since its start: {per_replica:?} of {total}");

    assert_eq!(stored_once_in_order(&origins, &inbox, &topic).await, total as usize);
    assert_reconciler_clean(&origins, &inbox, &topic).await;
}

/// Asserts that the inbox holds every published row of both outboxes once, under its source,
/// with the outbox id as its sequence, and in per-(source, key) commit order; returns the count.
async fn stored_once_in_order(origins: &[Origin], inbox: &TestDb, topic: &str) -> usize {
    let mut expected: HashMap<(String, uuid::Uuid), i64> = HashMap::new();
    for origin in origins {
        let client = origin.db.client().await;
        // A consumer may store a message before the poller's mark for it commits.
        let pending = "SELECT count(*) FROM relay.outbox WHERE published_at IS NULL";
        eventually(
            Duration::from_secs(10),
            &format!("{}: every row marked published", origin.source),
            || {
                let client = &client;
                async move { (count(client, pending, &[]).await == 0).then_some(()) }
            },
        )
        .await;
        for row in client.query("SELECT message_id, id FROM relay.outbox", &[]).await.expect("outbox") {
            expected.insert((origin.source.to_string(), row.get(0)), row.get(1));
        }
    }
    let rows = inbox
        .client()
        .await
        .query(
            "SELECT source, message_id, sequence, key FROM relay.inbox
             WHERE inbox = 'ledger' AND topic = $1 ORDER BY seq",
            &[&topic],
        )
        .await
        .expect("inbox");
    // Every row below names an outbox row of its source, and relay.inbox is unique per message
    // id: with as many rows as outbox rows, each outbox row is stored exactly once.
    assert_eq!(rows.len(), expected.len(), "inbox rows for outbox rows");
    let mut last: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in &rows {
        let (source, id, sequence, key): (String, uuid::Uuid, i64, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let outbox_id =
            expected.get(&(source.clone(), id)).unwrap_or_else(|| panic!("{source} {id}: never sent"));
        assert_eq!(*outbox_id, sequence, "{source} {id}: sequence is the outbox id");
        if let Some(previous) = last.insert((source.clone(), key.clone()), sequence) {
            assert!(previous < sequence, "{source} key {key}: {sequence} stored after {previous}");
        }
    }
    let keys_per_source = last.keys().filter(|(s, _)| s == SOURCES[0]).count();
    assert!(keys_per_source >= KEYS, "{keys_per_source} keys of {} checked", SOURCES[0]);
    rows.len()
}

/// A one-shot reconciler run over both outboxes and the inbox: clean, one pair per outbox.
async fn assert_reconciler_clean(origins: &[Origin], inbox: &TestDb, topic: &str) {
    let mut command = tokio::process::Command::new(RECONCILER);
    command.env_clear();
    for origin in origins {
        command.args(["--outbox", &format!("{}={}", origin.source, origin.db.url)]);
    }
    let output = command
        .args(["--inbox", &format!("ledger={}", inbox.url)])
        .args(["--subscription", &format!("ledger={topic}")])
        .args(["--grace-secs", "0", "--stuck-secs", "0", "--format", "json"])
        .output()
        .await
        .expect("run reconciler");
    let (code, report, stdout) = crate::reconcile::report_of(output);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["clean"], true, "{stdout}");
    assert_eq!(report["pairs"].as_array().map(Vec::len), Some(origins.len()), "{stdout}");
}
