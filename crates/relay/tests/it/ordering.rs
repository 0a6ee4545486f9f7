//! Out-of-order commits: the case a plain `id > last_id` cursor loses.
use std::time::Duration;

use crate::{harness::*, verify::inbox_equals_outbox};

/// A key made from `prefix` whose `relay.enqueue` lock slot (one of 1024, migration V5) is none
/// of `others`' slots: a test that keeps a transaction open while other keys are written must
/// not have them wait for it (the key itself when `prefix` already qualifies).
pub async fn key_apart(db: &TestDb, topic: &str, prefix: &str, others: &[&str]) -> String {
    let client = db.client().await;
    let others: Vec<String> = others.iter().map(|o| o.to_string()).collect();
    client
        .query_one(
            "SELECT k FROM (SELECT $3 AS k, 0 AS n UNION ALL
                            SELECT $3 || '-' || g, g FROM generate_series(1, 1000) AS g) AS c
             WHERE hashtext($1 || chr(31) || k) & 1023
                   <> ALL (SELECT hashtext($1 || chr(31) || o) & 1023 FROM unnest($2::text[]) AS o)
             ORDER BY n LIMIT 1",
            &[&topic, &others, &prefix],
        )
        .await
        .expect("a key in a slot of its own")
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_committing_late_with_a_lower_id_is_not_skipped() {
    let relay = Pipeline::start("late_commit", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());

    // A takes the lower id and stays open; B takes a higher id and commits first.
    let key_b = key_apart(origin, &topic, "account-b", &["account-a"]).await;
    let mut a = origin.client().await;
    let mut b = origin.client().await;
    let tx_a = a.transaction().await.expect("begin A");
    let id_a =
        relay_outbox::enqueue(&tx_a, &relay_outbox::Message::new(&topic, "account-a", b"first in, last out"))
            .await
            .expect("enqueue A");
    let tx_b = b.transaction().await.expect("begin B");
    let id_b =
        relay_outbox::enqueue(&tx_b, &relay_outbox::Message::new(&topic, &key_b, b"second in, first out"))
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
    let others: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    let late = key_apart(&origin, &topic, "late", &others).await;
    let mut a = origin.client().await;
    let tx_a = a.transaction().await.expect("begin A");
    let id_a = relay_outbox::enqueue(&tx_a, &relay_outbox::Message::new(&topic, &late, b"committed last"))
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
    b.query_one("SELECT relay.enqueue($1, $2, 'committed after A'::bytea)", &[&topic, &late])
        .await
        .expect("enqueue B");

    await_inbox(&inbox, "ledger", &topic, 2_002, Duration::from_secs(120)).await;
    let check = inbox.client().await;
    let stored = count(&check, "SELECT count(*) FROM relay.inbox WHERE message_id = $1", &[&id_a]).await;
    assert_eq!(stored, 1, "the late commit was skipped");
    let late: Vec<Vec<u8>> = check
        .query("SELECT payload FROM relay.inbox WHERE key = $1 ORDER BY seq", &[&late])
        .await
        .expect("late key")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(late, vec![b"committed last".to_vec(), b"committed after A".to_vec()]);
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 2_002);
}

/// The most `relay.enqueue` locks one transaction (or one database) ever holds (migration V5).
const LOCK_SLOTS: i64 = 1024;

/// Relay's enqueue locks (V1's per-key class and V5's slot class) held by the session `pid`.
const ENQUEUE_LOCKS: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                             AND classid IN (1380273217, 1380273221) AND pid = $1 AND granted";

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_enqueueing_50_000_keys_holds_a_bounded_number_of_locks_and_other_databases_keep_theirs(
) {
    let origin = TestDb::new().await;
    let url = relay_config::DatabaseUrl::parse(origin.url.clone().into()).expect("url");
    relay_db::prepare_schema(&url, relay_db::Schema::Outbox, true).await.expect("schema");
    // Another database of the same server, with 200 tables to lock.
    let other = TestDb::new().await;
    let other_client = other.client().await;
    let tables: String = (0..200).map(|i| format!("CREATE TABLE t{i} (x int);")).collect();
    other_client.batch_execute(&tables).await.expect("200 tables");

    // Two topics, 25,000 keys each, in one transaction: V1 ran out of shared memory near 12,000.
    let mut writer = origin.client().await;
    let tx = writer.transaction().await.expect("begin");
    for topic in ["many-keys-a", "many-keys-b"] {
        let enqueued = tx
            .query_one(
                "SELECT count(relay.enqueue($1, 'key-' || g, int4send(g))) FROM generate_series(1, 25000) AS g",
                &[&topic],
            )
            .await
            .expect("25,000 distinct keys enqueued in one transaction");
        assert_eq!(enqueued.get::<_, i64>(0), 25_000);
    }
    let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let observer = origin.client().await;
    let held = count(&observer, ENQUEUE_LOCKS, &[&pid]).await;
    assert!(held > 0 && held <= LOCK_SLOTS, "the transaction holds {held} enqueue locks");

    // Meanwhile a session in the other database takes 200 table locks in one transaction.
    let mut other_session = other.client().await;
    let other_tx = other_session.transaction().await.expect("begin in the other database");
    let locks: String = (0..200).map(|i| format!("LOCK TABLE t{i} IN ACCESS EXCLUSIVE MODE;")).collect();
    other_tx.batch_execute(&locks).await.expect("200 table locks while the outbox transaction is open");
    let other_pid: i32 = other_tx.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let table_locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND pid = $1 AND granted \
                       AND relation IN (SELECT oid FROM pg_class WHERE relname ~ '^t[0-9]+$')";
    let granted: i64 = other_tx.query_one(table_locks, &[&other_pid]).await.expect("locks").get(0);
    assert_eq!(granted, 200);
    other_tx.commit().await.expect("commit the other database's transaction");

    tx.commit().await.expect("commit 50,000 messages");
    assert_eq!(count(&observer, ENQUEUE_LOCKS, &[&pid]).await, 0, "locks end with the transaction");
    let stored = count(&observer, "SELECT count(DISTINCT (topic, key)) FROM relay.outbox", &[]).await;
    assert_eq!(stored, 50_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_key_writers_behind_a_transaction_of_many_keys_are_published_in_commit_order() {
    let relay = Pipeline::start("many_keys_order", 3).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());

    // First enqueues 3,000 keys and stays open: it holds every lock slot there is.
    let mut first = origin.client().await;
    let tx_first = first.transaction().await.expect("begin first");
    tx_first
        .execute(
            "SELECT relay.enqueue($1, 'account-' || g, convert_to('first ' || g, 'UTF8')) \
             FROM generate_series(1, 3000) AS g",
            &[&topic],
        )
        .await
        .expect("enqueue 3,000 keys");
    let first_pid: i32 = tx_first.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let held = count(&origin.client().await, ENQUEUE_LOCKS, &[&first_pid]).await;
    assert!(held <= LOCK_SLOTS, "{held} locks");

    // Writers of some of those keys, each in its own session, must wait for First.
    let keys = [1, 17, 1500, 2999, 3000];
    let mut writers = Vec::new();
    for key in keys {
        let client = origin.client().await;
        let topic = topic.clone();
        writers.push(tokio::spawn(async move {
            let key = format!("account-{key}");
            let payload = format!("later {key}").into_bytes();
            client
                .query_one("SELECT relay.enqueue($1, $2, $3)", &[&topic, &key, &payload])
                .await
                .expect("enqueue");
        }));
    }
    let observer = origin.client().await;
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))";
    eventually(Duration::from_secs(10), "every later writer waiting on First", || async {
        (count(&observer, blocked, &[&first_pid]).await == keys.len() as i64).then_some(())
    })
    .await;
    assert!(writers.iter().all(|w| !w.is_finished()), "a later writer of a key did not wait for First");
    tx_first.commit().await.expect("commit first");
    for writer in writers {
        writer.await.expect("later writer");
    }

    relay.await_ledger(3000 + keys.len() as i64).await;
    let check = inbox.client().await;
    for key in keys {
        let key = format!("account-{key}");
        let payloads: Vec<String> = check
            .query(
                "SELECT convert_from(payload, 'UTF8') FROM relay.inbox WHERE key = $1 ORDER BY seq",
                &[&key],
            )
            .await
            .expect("inbox")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let n = key.trim_start_matches("account-");
        assert_eq!(payloads, vec![format!("first {n}"), format!("later account-{n}")], "key {key}");
    }
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 3000 + keys.len());
}
