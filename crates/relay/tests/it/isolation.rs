//! A row the broker will not take holds back its own key and nothing else: healthy messages of
//! every other key and topic keep their usual delay while it waits for its delivery report, and
//! it is then parked with the broker's reason, its key's later rows waiting behind it. More such
//! keys than a batch holds hold back their topics, not the others, and readiness says so.
use std::time::Duration;

use crate::{harness::*, verify::inbox_equals_outbox};

/// The largest delay (published_at - created_at, seconds) of the published rows of `topic`.
async fn max_delay(origin: &TestDb, topic: &str) -> f64 {
    let client = origin.client().await;
    let sql = "SELECT max(extract(epoch FROM published_at - created_at))::float8 FROM relay.outbox
               WHERE topic = $1 AND published_at IS NOT NULL";
    client.query_one(sql, &[&topic]).await.expect("delays").get(0)
}

/// Healthy messages are enqueued in 20 rounds of 10, one round every 200 ms, while `bad` runs.
async fn healthy_while(
    origin: &TestDb,
    topic: &str,
    bad: tokio::task::JoinHandle<Vec<uuid::Uuid>>,
) -> Vec<uuid::Uuid> {
    for _ in 0..20 {
        enqueue_many(origin, topic, 10, 7, 10).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bad.await.expect("bad writer")
}

/// The park reason of each row, in enqueue order (None: not parked).
async fn reasons(origin: &TestDb, ids: &[uuid::Uuid]) -> Vec<Option<String>> {
    let client = origin.client().await;
    let mut reasons = Vec::new();
    for id in ids {
        let row = client
            .query_one("SELECT park_reason FROM relay.outbox WHERE message_id = $1", &[id])
            .await
            .expect("outbox row");
        reasons.push(row.get(0));
    }
    reasons
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_for_a_missing_topic_delay_no_healthy_message_and_are_parked_one_per_key() {
    // librdkafka gives up on the unknown topic after 8 s: long against the delay allowed below,
    // so a batch waiting for those reports would show.
    let poller = [
        ("OUTBOX_TOPICS", ""),
        ("KAFKA_PROPERTY_ALLOW_AUTO_CREATE_TOPICS", "false"),
        ("KAFKA_PROPERTY_TOPIC_METADATA_PROPAGATION_MAX_MS", "8000"),
    ];
    let relay = Pipeline::start_with("missing_topic_isolation", 2, &poller, &[]).await;
    let (origin, topic) = (&relay.origin, relay.topic.clone());
    let nowhere = format!("it-never-created-{}", unique());
    let url = origin.url.clone();
    // Every 300 ms a row for the missing topic, over three keys.
    let bad = tokio::spawn(async move {
        let db = TestDb::from_url(&url);
        let mut ids = Vec::new();
        for i in 0..12 {
            ids.push(
                enqueue_one(&db, &nowhere, &format!("lost-{}", i % 3), b"for a topic nobody created").await,
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        ids
    });
    let lost = healthy_while(origin, &topic, bad).await;
    relay.await_ledger(200).await;
    assert_eq!(inbox_equals_outbox(origin, &relay.inbox, "ledger", &topic).await, 200);
    let delay = max_delay(origin, &topic).await;
    // Before the fix: the batch waited for the unknown topic (p50 44 s, max 60 s).
    assert!(delay < 3.0, "a healthy message waited {delay:.1} s behind the missing topic");

    // The first row of each key is parked once librdkafka gives up; the later ones wait behind
    // it (a later row sent in the same batch, before the refusal came, is refused and parked too).
    eventually(Duration::from_secs(60), "the first row of each key of the missing topic parked", || {
        let (origin, lost) = (&origin, &lost);
        async move { reasons(origin, &lost[..3]).await.iter().all(Option::is_some).then_some(()) }
    })
    .await;
    let reasons = reasons(origin, &lost).await;
    for key in 0..3 {
        let of_key: Vec<_> = reasons.iter().skip(key).step_by(3).collect();
        let parked = of_key.iter().take_while(|r| r.is_some()).count();
        assert!(of_key[parked..].iter().all(|r| r.is_none()), "key lost-{key}: {of_key:?}");
        for reason in of_key.iter().filter_map(|r| r.as_deref()) {
            assert!(reason.contains("UnknownTopic"), "{reason}");
        }
    }
    let client = origin.client().await;
    let sql = "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL AND topic <> $1";
    assert_eq!(count(&client, sql, &[&topic]).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_refused_before_sending_delay_no_healthy_message_and_hold_back_their_key() {
    // Refusals found before the broker sees the record: a payload over the topic's limit and a
    // topic name Kafka does not allow (written past relay.enqueue, by a writer with INSERT rights).
    let poller = [("OUTBOX_TOPICS", ""), ("OUTBOX_MAX_PAYLOAD_BYTES", "1000")];
    let relay = Pipeline::start_with("refused_isolation", 2, &poller, &[]).await;
    let (origin, topic) = (&relay.origin, relay.topic.clone());
    let url = origin.url.clone();
    let shared_topic = topic.clone();
    let bad = tokio::spawn(async move {
        let db = TestDb::from_url(&url);
        let client = db.client().await;
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(enqueue_one(&db, &shared_topic, &format!("big-{}", i % 2), &[0x5a; 1001]).await);
            let row = client
                .query_one(
                    "INSERT INTO relay.outbox (topic, key, payload) VALUES ($1, $2, 'x') RETURNING message_id",
                    &[&"no such topic!", &format!("odd-{}", i % 2)],
                )
                .await
                .expect("direct insert");
            ids.push(row.get(0));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        ids
    });
    let refused = healthy_while(origin, &topic, bad).await;
    await_inbox(&relay.inbox, "ledger", &topic, 200, Duration::from_secs(120)).await;
    let delay = max_delay(origin, &topic).await;
    assert!(delay < 3.0, "a healthy message waited {delay:.1} s behind refused rows");

    let reasons = reasons(origin, &refused).await;
    // Rows 0-3 are the first of their keys: parked. The later ones of each key wait behind them.
    assert_eq!(reasons[0].as_deref(), Some("payload of 1001 bytes exceeds the limit of 1000 bytes"));
    assert_eq!(reasons[1].as_deref(), Some("topic \"no such topic!\" is not a valid Kafka topic name"));
    assert!(reasons[2].is_some() && reasons[3].is_some(), "{reasons:?}");
    assert!(reasons[4..].iter().all(Option::is_none), "later rows of a parked key wait: {reasons:?}");
    let client = origin.client().await;
    let sql = "SELECT count(*) FROM relay.inbox WHERE key LIKE 'big-%' OR key LIKE 'odd-%'";
    assert_eq!(count(&relay.inbox.client().await, sql, &[]).await, 0);
    let sql = "SELECT count(*) FROM relay.outbox WHERE published_at IS NULL AND parked_at IS NULL";
    assert_eq!(count(&client, sql, &[]).await, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn more_broken_keys_than_a_batch_delay_no_healthy_topic_and_readiness_says_so() {
    // Batches of 5 and librdkafka retrying the missing topics for a minute: twelve keys over two
    // missing topics keep more records waiting for their reports than a batch holds, the whole
    // time the healthy topic is written.
    let addr = free_addr();
    let poller = [
        ("OUTBOX_TOPICS", ""),
        ("OUTBOX_BATCH_SIZE", "5"),
        ("RELAY_HTTP_ADDR", addr.as_str()),
        ("KAFKA_PROPERTY_ALLOW_AUTO_CREATE_TOPICS", "false"),
        ("KAFKA_PROPERTY_TOPIC_METADATA_PROPAGATION_MAX_MS", "60000"),
    ];
    let relay = Pipeline::start_with("stragglers_at_the_cap", 2, &poller, &[]).await;
    let (origin, topic) = (&relay.origin, relay.topic.clone());
    let nowhere = [format!("it-never-created-{}", unique()), format!("it-never-created-{}", unique())];
    let mut lost = Vec::new();
    for i in 0..12 {
        lost.push(
            enqueue_one(origin, &nowhere[i % 2], &format!("lost-{i}"), b"for a topic nobody created").await,
        );
    }
    let readiness = eventually(Duration::from_secs(30), "/readyz degraded by the stragglers", || {
        let addr = &addr;
        async move {
            let (code, body) = http_get(addr, "/readyz").await?;
            (code == 503 && body.contains("await their delivery report")).then_some(body)
        }
    })
    .await;
    assert!(readiness.contains("publishing"), "{readiness}");
    let waiting = sample(&scrape(&addr).await.expect("metrics"), "relay_outbox_unacknowledged", &[]);
    assert!(waiting.is_some_and(|n| n >= 5.0), "gauge: {waiting:?}");

    let healthy = tokio::spawn(async { Vec::new() });
    healthy_while(origin, &topic, healthy).await;
    relay.await_ledger(200).await;
    assert_eq!(inbox_equals_outbox(origin, &relay.inbox, "ledger", &topic).await, 200);
    let delay = max_delay(origin, &topic).await;
    // Before the fix: nothing was published on any topic until librdkafka gave up (60 s).
    assert!(delay < 3.0, "a healthy message waited {delay:.1} s behind the stragglers");
    let (code, body) = http_get(&addr, "/readyz").await.expect("readyz");
    assert_eq!(code, 503, "still degraded while the stragglers wait: {body}");
    let client = origin.client().await;
    let sql = "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL AND topic <> $1";
    assert_eq!(count(&client, sql, &[&topic]).await, 0);
    assert_eq!(reasons(origin, &lost).await.iter().flatten().count(), 0, "nothing parked yet");
}
