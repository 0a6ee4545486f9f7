//! Out-of-order commits: the case a plain `id > last_id` cursor loses.
use std::time::Duration;

use crate::{harness::*, verify::inbox_equals_outbox};

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_committing_late_with_a_lower_id_is_not_skipped() {
    let relay = Pipeline::start("late_commit", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());

    // A takes the lower id and stays open; B takes a higher id and commits first.
    let mut a = origin.client().await;
    let mut b = origin.client().await;
    let tx_a = a.transaction().await.expect("begin A");
    let id_a =
        relay_outbox::enqueue(&tx_a, &relay_outbox::Message::new(&topic, "account-a", b"first in, last out"))
            .await
            .expect("enqueue A");
    let tx_b = b.transaction().await.expect("begin B");
    let id_b = relay_outbox::enqueue(
        &tx_b,
        &relay_outbox::Message::new(&topic, "account-b", b"second in, first out"),
    )
    .await
    .expect("enqueue B");
    tx_b.commit().await.expect("commit B");

    // B is published and stored while A is still uncommitted.
    relay.await_ledger(1).await;
    let check = inbox.client().await;
    let stored: uuid::Uuid =
        check.query_one("SELECT message_id FROM relay.inbox", &[]).await.expect("B").get(0);
    assert_eq!(stored, id_b);

    tx_a.commit().await.expect("commit A");
    relay.await_ledger(2).await;
    let db = origin.client().await;
    let ids: Vec<(uuid::Uuid, i64)> = db
        .query("SELECT message_id, id FROM relay.outbox ORDER BY id", &[])
        .await
        .expect("outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(ids.iter().map(|(m, _)| *m).collect::<Vec<_>>(), vec![id_a, id_b], "A holds the lower id");
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_key_writers_are_published_in_commit_order() {
    let relay = Pipeline::start("same_key_order", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());

    // First enqueues and stays open; Second, same key, must wait for it and so comes after.
    let mut first = origin.client().await;
    let second = origin.client().await;
    let tx_first = first.transaction().await.expect("begin first");
    relay_outbox::enqueue(&tx_first, &relay_outbox::Message::new(&topic, "account-1", b"debit"))
        .await
        .expect("enqueue first");
    let topic_2 = topic.clone();
    let waiting = tokio::spawn(async move {
        second
            .query_one("SELECT relay.enqueue($1, 'account-1', 'credit'::bytea)", &[&topic_2])
            .await
            .expect("enqueue second");
    });
    // The server shows the second writer blocked by the first one's session, not merely slow.
    let first_pid: i32 = tx_first.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let observer = origin.client().await;
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))";
    eventually(Duration::from_secs(10), "the second writer waiting on the first", || async {
        (count(&observer, blocked, &[&first_pid]).await == 1).then_some(())
    })
    .await;
    assert!(!waiting.is_finished(), "the second writer of the key must wait for the first to commit");
    tx_first.commit().await.expect("commit first");
    waiting.await.expect("second writer");
    relay.await_ledger(2).await;
    let check = inbox.client().await;
    let payloads: Vec<Vec<u8>> = check
        .query("SELECT payload FROM relay.inbox ORDER BY seq", &[])
        .await
        .expect("inbox")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(payloads, vec![b"debit".to_vec(), b"credit".to_vec()]);
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_commit_is_found_while_the_poller_is_busy_with_full_batches() {
    let test = "late_commit_busy";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(1).await;
    let url = relay_config::DatabaseUrl::parse(origin.url.clone().into()).expect("url");
    relay_db::prepare_schema(&url, relay_db::Schema::Outbox, true).await.expect("schema");

    // A takes id 1 and stays open while 2,000 later rows commit.
    let mut a = origin.client().await;
    let tx_a = a.transaction().await.expect("begin A");
    let id_a = relay_outbox::enqueue(&tx_a, &relay_outbox::Message::new(&topic, "late", b"committed last"))
        .await
        .expect("enqueue A");
    enqueue_many(&origin, &topic, 2_000, 20, 100).await;

    // Batches of 10: the poller works through 200 full batches, sending past a cursor.
    let mut env = poller_env(&origin, &topic);
    env.insert("OUTBOX_BATCH_SIZE".into(), "10".into());
    let _poller = spawn(test, "poller", POLLER, &env);
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_env(&inbox, "ledger", &topic));
    let db = origin.client().await;
    let published = "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL";
    eventually(Duration::from_secs(60), "the poller well into the backlog", || async {
        (count(&db, published, &[]).await >= 200).then_some(())
    })
    .await;
    assert!(count(&db, published, &[]).await < 2_000, "the backlog drained before A committed");
    tx_a.commit().await.expect("commit A");
    // B, same key, right behind A: a poller sending past a cursor would let B overtake A.
    let b = origin.client().await;
    b.query_one("SELECT relay.enqueue($1, 'late', 'committed after A'::bytea)", &[&topic])
        .await
        .expect("enqueue B");

    await_inbox(&inbox, "ledger", &topic, 2_002, Duration::from_secs(120)).await;
    let check = inbox.client().await;
    let stored = count(&check, "SELECT count(*) FROM relay.inbox WHERE message_id = $1", &[&id_a]).await;
    assert_eq!(stored, 1, "the late commit was skipped");
    let late: Vec<Vec<u8>> = check
        .query("SELECT payload FROM relay.inbox WHERE key = 'late' ORDER BY seq", &[])
        .await
        .expect("late key")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(late, vec![b"committed last".to_vec(), b"committed after A".to_vec()]);
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 2_002);
}
