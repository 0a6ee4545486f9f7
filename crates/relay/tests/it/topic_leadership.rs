//! One publisher per topic (outbox migration V7): pollers of one outbox whose `OUTBOX_TOPICS`
//! overlap without being equal ({a,b} and {b,c}, two replicas each) used to both lead and both
//! publish b. Now each topic is claimed by exactly one selection's leader: every message reaches
//! its topic exactly once, all three topics flow, the refused poller says so (log line,
//! `/readyz` part `topics`, `relay_outbox_topics_refused`), and a topic whose leader dies is
//! taken over by the other selection's leader.
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::Headers,
    ClientConfig, Message, Offset, TopicPartitionList,
};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    harness::*,
    health::{await_metric, with_endpoint},
    processing_ops::migrate,
};

mod takeover;

const PARTITIONS: i32 = 2;

/// How many records of `topic` carry each message id: read from the start of every partition
/// until `expected` distinct messages were seen and then nothing more came for two seconds
/// (so a duplicate written after them is counted too).
async fn records_per_message(topic: &str, expected: usize) -> HashMap<Uuid, usize> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("it-count-{}", unique()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            assignment.add_partition_offset(&topic, partition, Offset::Beginning).expect("partition");
        }
        consumer.assign(&assignment).expect("assign");
        let mut counts = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Instant::now();
        while counts.len() < expected || last.elapsed() < Duration::from_secs(2) {
            assert!(Instant::now() < deadline, "{topic}: {} of {expected} messages read", counts.len());
            let Some(record) = consumer.poll(Duration::from_millis(200)) else { continue };
            let record = record.expect("record");
            let id = record
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == relay_envelope::HEADER_MESSAGE_ID))
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<Uuid>().ok())
                .expect("a relay-message-id header");
            *counts.entry(id).or_insert(0) += 1;
            last = Instant::now();
        }
        counts
    })
    .await
    .expect("reader")
}

/// Asserts that every message enqueued for `topic` is on it exactly once, and nothing else is.
async fn exactly_once(topic: &str, enqueued: &[Uuid]) {
    let counts = records_per_message(topic, enqueued.len()).await;
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "{topic}: messages published more than once: {doubled:?}");
    let mut on_topic: Vec<Uuid> = counts.keys().copied().collect();
    let mut expected = enqueued.to_vec();
    on_topic.sort();
    expected.sort();
    assert_eq!(on_topic, expected, "{topic}: the records are exactly the messages enqueued for it");
}

/// One poller of `topics` with a short lease, a fast retry and an endpoint.
fn poller(test: &str, name: &str, origin: &TestDb, topics: &str) -> (Service, String) {
    let mut env = poller_env(origin, topics);
    env.insert("OUTBOX_LEADER_RETRY_MS".into(), "250".into());
    env.insert("OUTBOX_LEADER_LEASE_MS".into(), "2000".into());
    let addr = with_endpoint(&mut env);
    (spawn(test, name, POLLER, &env), addr)
}

async fn topic_leases(db: &Client) -> BTreeMap<String, String> {
    db.query("SELECT topic, lease FROM relay.outbox_topic_lease", &[])
        .await
        .expect("topic leases")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn await_published(db: &Client, topic: &str, n: i64) {
    let sql = "SELECT count(*) FROM relay.outbox WHERE topic = $1 AND published_at IS NOT NULL";
    eventually(Duration::from_secs(60), &format!("{n} rows of {topic} published"), || async {
        (count(db, sql, &[&topic]).await == n).then_some(())
    })
    .await;
}

/// The replica (index into `addrs`) that leads, once exactly one of them does.
async fn leader_among(addrs: &[&String]) -> usize {
    eventually(Duration::from_secs(30), "one leader of the selection", || async {
        let mut leaders = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            if sample(&scrape(addr).await?, "relay_outbox_leader", &[])? == 1.0 {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_topic_selections_publish_every_topic_exactly_once_and_report_the_conflict() {
    let test = "topic_leadership_overlap";
    let origin = TestDb::new().await;
    migrate(&origin, relay_db::Schema::Outbox).await;
    let (a, b, c) = (topic(PARTITIONS).await, topic(PARTITIONS).await, topic(PARTITIONS).await);
    let selections = [format!("{a},{b}"), format!("{b},{c}")];
    // A selection's lease is named after its topics, sorted.
    let lease_of = |topics: [&String; 2]| {
        let mut topics = topics.map(String::as_str);
        topics.sort();
        format!("outbox-poller:{}", topics.join(","))
    };
    let leases = [lease_of([&a, &b]), lease_of([&b, &c])];
    let mut pollers: Vec<Vec<(Service, String)>> = Vec::new();
    for (s, topics) in selections.iter().enumerate() {
        pollers.push((0..2).map(|r| poller(test, &format!("poller-{s}-{r}"), &origin, topics)).collect());
    }
    let db = origin.client().await;
    let claimed = eventually(Duration::from_secs(30), "a, b and c claimed", || async {
        let leases = topic_leases(&db).await;
        (leases.len() == 3).then_some(leases)
    })
    .await;
    // a and c by their only selection; b by exactly one of the two.
    assert_eq!((claimed[&a].as_str(), claimed[&c].as_str()), (leases[0].as_str(), leases[1].as_str()));
    let winner = leases.iter().position(|l| *l == claimed[&b]).expect("b claimed by a selection");
    let loser = 1 - winner;

    let mut enqueued: HashMap<String, Vec<Uuid>> = HashMap::new();
    for topic in [&a, &b, &c] {
        enqueued.insert(topic.clone(), enqueue_many(&origin, topic, 60, 6, 10).await);
    }
    for topic in [&a, &b, &c] {
        await_published(&db, topic, 60).await;
    }
    for topic in [&a, &b, &c] {
        exactly_once(topic, &enqueued[topic]).await;
    }

    // The refused selection's leader reports the conflict; the winner does not.
    let loser_addrs: Vec<String> = pollers[loser].iter().map(|(_, addr)| addr.clone()).collect();
    let loser_leader = leader_among(&loser_addrs.iter().collect::<Vec<_>>()).await;
    let addr = &loser_addrs[loser_leader];
    await_metric(addr, "relay_outbox_topics_refused", &[], 1.0).await;
    let (code, body) = http_get(addr, "/readyz?parts=topics").await.expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&format!("{b} (led by {})", leases[winner])), "{body}");
    let log = pollers[loser][loser_leader].0.log_text();
    assert!(log.contains("topic is led by another poller"), "{log}");
    let winner_addrs: Vec<&String> = pollers[winner].iter().map(|(_, addr)| addr).collect();
    let winner_leader = leader_among(&winner_addrs).await;
    await_metric(winner_addrs[winner_leader], "relay_outbox_topics_refused", &[], 0.0).await;
    let (code, body) = http_get(winner_addrs[winner_leader], "/readyz?parts=topics").await.expect("readyz");
    assert_eq!(code, 200, "{body}");

    // Both replicas of the winning selection die (idle: nothing in flight). The other leader
    // takes b over; the topic only the dead selection had waits for a poller of it.
    for (service, _) in &mut pollers[winner] {
        service.kill().await;
    }
    let orphan = if winner == 0 { a.clone() } else { c.clone() };
    let survivor = if winner == 0 { c.clone() } else { a.clone() };
    eventually(Duration::from_secs(30), "b taken over", || async {
        (topic_leases(&db).await.get(&b) == Some(&leases[loser])).then_some(())
    })
    .await;
    await_metric(addr, "relay_outbox_topics_refused", &[], 0.0).await;
    for topic in [&a, &b, &c] {
        let more = enqueue_many(&origin, topic, 30, 6, 10).await;
        enqueued.get_mut(topic).expect("topic").extend(more);
    }
    await_published(&db, &b, 90).await;
    await_published(&db, &survivor, 90).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM relay.outbox WHERE topic = $1 AND published_at IS NULL", &[&orphan])
            .await,
        30,
        "nobody configured for {orphan} runs"
    );

    // A poller of the dead selection comes back: it publishes its own topic, and is refused b.
    let (restarted, restarted_addr) = poller(test, "poller-restarted", &origin, &selections[winner]);
    await_published(&db, &orphan, 90).await;
    await_metric(&restarted_addr, "relay_outbox_topics_refused", &[], 1.0).await;
    assert_eq!(topic_leases(&db).await.get(&b), Some(&leases[loser]));
    for topic in [&a, &b, &c] {
        exactly_once(topic, &enqueued[topic]).await;
    }
    drop(restarted);
}

/// A poller's lease session as the poller role sees it: holds marker `marker` and takes lease
/// `lease` as a new term (what the poller's lease_take.sql does when the lease is free).
async fn lease_session(url: &str, lease: &str, marker: i32) -> (Client, i64) {
    let client = connect(url).await;
    client.execute("SELECT pg_advisory_lock(1380273218, $1)", &[&marker]).await.expect("marker");
    client
        .execute(
            "INSERT INTO relay.outbox_leader (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[&lease],
        )
        .await
        .expect("lease row");
    let term = client
        .query_one(
            "UPDATE relay.outbox_leader SET term = term + 1, holder_pid = pg_backend_pid(), holder_lock = $2,
                    renewed_at = clock_timestamp()
             WHERE name = $1 RETURNING term",
            &[&lease, &marker],
        )
        .await
        .expect("take the lease")
        .get(0);
    (client, term)
}

/// What `relay.outbox_claim_topics` answers: topic -> the other lease leading it (None: ours).
async fn claim(client: &Client, lease: &str, topics: &[&str]) -> BTreeMap<String, Option<String>> {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    client
        .query("SELECT topic, led_by FROM relay.outbox_claim_topics($1, 2, $2)", &[&lease, &topics])
        .await
        .expect("claim")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_is_taken_over_only_from_a_lease_nobody_validly_holds_whose_holder_is_then_fenced() {
    let origin = TestDb::new().await;
    migrate(&origin, relay_db::Schema::Outbox).await;
    let (_users, names) = crate::roles::Users::create(&[
        ("tlpoller", Some("relay_outbox_poller")),
        ("tloperator", Some("relay_operator")),
    ])
    .await;
    let poller_url = crate::roles::as_user(&origin.url, &names[0]);
    let (x, y, all) = ("outbox-poller:a,b", "outbox-poller:b,c", "outbox-poller:");
    let (x_session, x_term) = lease_session(&poller_url, x, 11).await;
    let (y_session, y_term) = lease_session(&poller_url, y, 12).await;
    let ours = |topics: &[&str]| -> BTreeMap<String, Option<String>> {
        topics.iter().map(|t| (t.to_string(), None)).collect()
    };
    assert_eq!(claim(&x_session, x, &["a", "b"]).await, ours(&["a", "b"]));
    let refused = BTreeMap::from([("b".to_string(), Some(x.to_string())), ("c".to_string(), None)]);
    assert_eq!(claim(&y_session, y, &["b", "c"]).await, refused, "b is x's while x validly leads");
    // A poller of every topic conflicts with both; claiming again changes nothing.
    let (all_session, _) = lease_session(&poller_url, all, 13).await;
    let every = claim(&all_session, all, &[]).await;
    assert!(matches!(every.get("*"), Some(Some(_))), "{every:?}");
    assert_eq!(claim(&x_session, x, &["a", "b"]).await, ours(&["a", "b"]));
    // Only the holder of a lease may claim for it, and only the poller role may claim at all.
    let err =
        y_session.query("SELECT * FROM relay.outbox_claim_topics($1, 2, '{a}')", &[&x]).await.unwrap_err();
    assert!(format!("{err:?}").contains("does not hold lease"), "{err:?}");
    let operator = connect(&crate::roles::as_user(&origin.url, &names[1])).await;
    crate::roles::refused(
        &operator,
        "the operator",
        "SELECT * FROM relay.outbox_claim_topics('x', 2, '{a}')",
    )
    .await;
    crate::roles::refused(&operator, "the operator", "DELETE FROM relay.outbox_topic_lease").await;

    // x freezes past its lease (its session stays open): y takes b over, and x's term ends.
    let owner = origin.client().await;
    owner
        .execute(
            "UPDATE relay.outbox_leader SET renewed_at = now() - interval '1 hour' WHERE name = $1",
            &[&x],
        )
        .await
        .expect("expire x");
    assert_eq!(claim(&y_session, y, &["b", "c"]).await, ours(&["b", "c"]));
    assert_eq!(topic_leases(&owner).await.get("b").map(String::as_str), Some(y));
    let x_now: i64 =
        owner.query_one("SELECT term FROM relay.outbox_leader WHERE name = $1", &[&x]).await.unwrap().get(0);
    assert!(x_now > x_term, "x's term ended");

    // Woken up, x can mark nothing (V5's fence); y can.
    let row = enqueue_one(&origin, "b", "k", b"x").await;
    for (session, lease, term, allowed) in [(&x_session, x, x_term, false), (&y_session, y, y_term, true)] {
        session
            .execute(
                "SELECT set_config('relay.leader_lease', $1, false), set_config('relay.leader_term', $2, false)",
                &[&lease, &term.to_string()],
            )
            .await
            .expect("declare the term");
        let marked = session
            .execute(
                "UPDATE relay.outbox SET published_at = now(), kafka_partition = 0, kafka_offset = 0
                 WHERE message_id = $1",
                &[&row],
            )
            .await;
        assert_eq!(marked.is_ok(), allowed, "{lease}: {marked:?}");
    }
}
