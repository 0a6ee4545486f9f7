//! Rows the worker cannot turn into a message (put into `relay.inbox` past the consumer, for
//! instance by a superuser): each is recorded as a failed attempt with the reason, retried and
//! parked, its key waits, and every other key flows; the worker neither stalls nor spins on it.
//! Also: the worker's LISTEN wakes only for its own inbox's notifications.
use std::time::Duration;

use super::{
    assert_effects_once_in_key_order, await_processed, inbox_db, insert_messages, worker_env, WORKER,
};
use crate::harness::*;

/// Headers no message can have: not a JSON object, or an object with values that are not strings.
const BAD_HEADERS: [(&str, &str); 3] =
    [("bad-array", "[1, 2]"), ("bad-number-value", r#"{"x": 1}"#), ("bad-string", r#""text""#)];

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_rows_are_parked_with_the_reason_while_every_other_key_flows() {
    const TEST: &str = "processing_undecodable";
    let db = inbox_db().await;
    let client = db.client().await;
    let good: Vec<String> = ["good-1", "good-2", "good-3"].iter().map(|k| k.to_string()).collect();
    insert_messages(&client, "ledger", "it-origin", &good, 4, 1).await;
    for (key, headers) in BAD_HEADERS {
        // The undecodable head of the key, then a healthy message of the same key.
        client
            .execute(
                "INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload,
                                          headers, sequence, created_at, kafka_topic, kafka_partition, kafka_offset)
                 SELECT 'ledger', gen_random_uuid(), 'it-origin', 'payments', $1, 'it.message',
                        'application/octet-stream', '\\x01', h, s, now(), 'payments', 1, s
                 FROM (VALUES ($2::text::jsonb, 1000::bigint), ('{}'::jsonb, 1001::bigint)) AS v(h, s)",
                &[&key, &headers],
            )
            .await
            .expect("insert the bad key's messages");
    }
    let env = worker_env(
        &db,
        "ledger",
        "effects",
        &[
            ("PROCESSING_MAX_ATTEMPTS", "3"),
            ("PROCESSING_BACKOFF_INITIAL_MS", "10"),
            ("PROCESSING_BACKOFF_MAX_MS", "20"),
            ("PROCESSING_WORKERS", "2"),
            ("PROCESSING_BATCH", "4"),
        ],
    );
    let mut worker = spawn(TEST, "worker", WORKER, &env);
    await_processed(&client, "ledger", 12, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(60), "every undecodable row parked", || async {
        let parked =
            count(&client, "SELECT count(*) FROM relay.inbox WHERE parked_at IS NOT NULL", &[]).await;
        (parked == BAD_HEADERS.len() as i64).then_some(())
    })
    .await;
    let status = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "worker exit: {status:?}; log: {}", worker.log_text());

    for (key, headers) in BAD_HEADERS {
        let row = client
            .query_one(
                "SELECT attempts, park_reason, last_error, processed_at IS NULL FROM relay.inbox
                 WHERE key = $1 AND sequence = 1000",
                &[&key],
            )
            .await
            .expect("the bad row");
        assert_eq!(row.get::<_, i32>(0), 3, "{key}: every attempt counted");
        let reason: String = row.get(1);
        assert!(
            reason.contains("cannot be decoded") && reason.contains("headers"),
            "{key} ({headers}): reason {reason:?}"
        );
        assert_eq!(row.get::<_, String>(2), reason);
        assert!(row.get::<_, bool>(3), "{key}: not processed");
        let waiting = count(
            &client,
            "SELECT count(*) FROM relay.inbox WHERE key = $1 AND sequence = 1001 AND processed_at IS NULL
               AND attempts = 0",
            &[&key],
        )
        .await;
        assert_eq!(waiting, 1, "{key}: the later message waits behind the parked one, untried");
    }
    assert_eq!(assert_effects_once_in_key_order(&client, "ledger", "effects").await, 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_for_one_inbox_is_not_woken_by_another_inboxs_notifications() {
    let db = TestDb::new().await;
    let url = relay_config::DatabaseUrl::parse(db.url.clone().into()).expect("url");
    let (_mine, mut ledger) = relay_db::listen(&url, "relay_inbox", Some("ledger")).await.expect("listen");
    let (_all, mut every) = relay_db::listen(&url, "relay_inbox", None).await.expect("listen");
    let client = db.client().await;
    for other in ["orders", "ledger-2", "LEDGER"] {
        client.execute("SELECT pg_notify('relay_inbox', $1)", &[&other]).await.expect("notify");
        tokio::time::timeout(Duration::from_secs(10), every.recv()).await.expect("delivered").expect("open");
    }
    // The unfiltered listener got all three; the filtered one, on its own connection, had the
    // same time and must hold nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ledger.try_recv().is_err(), "woken by another inbox's notification");
    client.execute("SELECT pg_notify('relay_inbox', 'ledger')", &[]).await.expect("notify");
    tokio::time::timeout(Duration::from_secs(10), ledger.recv()).await.expect("woken").expect("open");
}
