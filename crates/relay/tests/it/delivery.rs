//! Fan-out, exactly-once storage and per-key order in the normal course of things.
use std::time::Duration;

use crate::{harness::*, verify::inbox_equals_outbox};

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_messages_reach_two_inboxes_exactly_once_byte_equal_in_key_order() {
    let test = "ten_thousand";
    let (origin, ledger_db, notify_db) = (TestDb::new().await, TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    let _poller = spawn(test, "poller", POLLER, &poller_env(&origin, &topic));
    let _ledger = spawn(test, "ledger", CONSUMER, &consumer_env(&ledger_db, "ledger", &topic));
    let _notify = spawn(test, "notify", CONSUMER, &consumer_env(&notify_db, "notifications", &topic));
    // Wait for the schema, then write from four concurrent "application" connections.
    await_table(&origin, "relay.outbox").await;
    let writers: Vec<_> = (0..4).map(|_| enqueue_many(&origin, &topic, 2_500, 50, 25)).collect();
    let ids: Vec<_> = futures::future::join_all(writers).await.into_iter().flatten().collect();
    assert_eq!(ids.len(), 10_000);
    await_inbox(&ledger_db, "ledger", &topic, 10_000, Duration::from_secs(180)).await;
    await_inbox(&notify_db, "notifications", &topic, 10_000, Duration::from_secs(180)).await;
    assert_eq!(inbox_equals_outbox(&origin, &ledger_db, "ledger", &topic).await, 10_000);
    assert_eq!(inbox_equals_outbox(&origin, &notify_db, "notifications", &topic).await, 10_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_inboxes_sharing_one_database_each_get_their_own_copy() {
    let test = "shared_database";
    let (origin, shared) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(2).await;
    let _poller = spawn(test, "poller", POLLER, &poller_env(&origin, &topic));
    let _a = spawn(test, "fraud", CONSUMER, &consumer_env(&shared, "fraud", &topic));
    let _b = spawn(test, "audit", CONSUMER, &consumer_env(&shared, "audit", &topic));
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 300, 7, 10).await;
    await_inbox(&shared, "fraud", &topic, 300, Duration::from_secs(60)).await;
    await_inbox(&shared, "audit", &topic, 300, Duration::from_secs(60)).await;
    assert_eq!(inbox_equals_outbox(&origin, &shared, "fraud", &topic).await, 300);
    assert_eq!(inbox_equals_outbox(&origin, &shared, "audit", &topic).await, 300);
    let client = shared.client().await;
    assert_eq!(count(&client, "SELECT count(*) FROM relay.inbox", &[]).await, 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_republished_duplicate_is_stored_once() {
    // One partition, so the later message below is read only after every duplicate before it.
    let relay = Pipeline::start("republished", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.as_str());
    enqueue_many(origin, topic, 100, 5, 10).await;
    relay.await_ledger(100).await;

    // Forget that half of them were published, as a crash between send and mark would.
    let db = origin.client().await;
    let before: Vec<(i64, i64)> = db
        .query("SELECT id, kafka_offset FROM relay.outbox WHERE id <= 50 ORDER BY id", &[])
        .await
        .expect("offsets")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let reset =
        db.execute("UPDATE relay.outbox SET published_at = NULL WHERE id <= 50", &[]).await.expect("reset");
    assert_eq!(reset, 50);
    eventually(Duration::from_secs(60), "re-publication", || async {
        let n = count(&db, "SELECT count(*) FROM relay.outbox WHERE published_at IS NULL", &[]).await;
        (n == 0).then_some(())
    })
    .await;
    let after: Vec<(i64, i64)> = db
        .query("SELECT id, kafka_offset FROM relay.outbox WHERE id <= 50 ORDER BY id", &[])
        .await
        .expect("offsets")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for ((id, old), (_, new)) in before.iter().zip(&after) {
        assert_ne!(old, new, "row {id} was not sent again");
    }
    // A later message proves the consumer read past the duplicates.
    enqueue_many(origin, topic, 1, 1, 1).await;
    relay.await_ledger(101).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", topic).await, 101);
}
