//! The SQL contract and its migrations.
use std::time::Duration;

use relay_config::DatabaseUrl;

use crate::harness::*;

fn url(db: &TestDb) -> DatabaseUrl {
    DatabaseUrl::parse(db.url.clone().into()).expect("valid url")
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_start_ups_migrate_once_and_all_succeed() {
    let db = TestDb::new().await;
    let url = url(&db);
    let runs = (0..4).map(|i| {
        let url = url.clone();
        let schema = if i % 2 == 0 { relay_db::Schema::Outbox } else { relay_db::Schema::Inbox };
        async move { relay_db::prepare_schema(&url, schema, true).await }
    });
    for result in futures::future::join_all(runs).await {
        result.expect("every concurrent migration succeeds");
    }
    // Running again is a no-op.
    relay_db::prepare_schema(&url, relay_db::Schema::Outbox, true).await.expect("idempotent");
    let client = db.client().await;
    // Every migration of each schema applied exactly once.
    let outbox = relay_db::migrations(relay_db::Schema::Outbox).len() as i64;
    let inbox = relay_db::migrations(relay_db::Schema::Inbox).len() as i64;
    assert_eq!(count(&client, "SELECT count(*) FROM relay_outbox_schema_history", &[]).await, outbox);
    assert_eq!(count(&client, "SELECT count(*) FROM relay_inbox_schema_history", &[]).await, inbox);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_relay_migrate_false_a_missing_schema_is_a_clear_error() {
    let db = TestDb::new().await;
    let mut env = poller_env(&db, "t");
    env.insert("RELAY_MIGRATE".into(), "false".into());
    let mut poller = spawn("migrate_false", "poller", POLLER, &env);
    let status = tokio::time::timeout(Duration::from_secs(30), poller.child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(!status.success());
    let log = poller.log_text();
    assert!(log.contains("relay.outbox does not exist and RELAY_MIGRATE=false"), "{log}");
    let client = db.client().await;
    assert_eq!(count(&client, "SELECT count(*) FROM pg_namespace WHERE nspname = 'relay'", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_validates_input_and_commits_or_rolls_back_with_the_business_change() {
    let db = TestDb::new().await;
    relay_db::prepare_schema(&url(&db), relay_db::Schema::Outbox, true).await.expect("schema");
    let mut client = db.client().await;
    client.batch_execute("CREATE TABLE account (id int PRIMARY KEY, balance bigint)").await.expect("table");
    client.batch_execute("INSERT INTO account VALUES (1, 100)").await.expect("row");

    for (sql, reason) in [
        ("SELECT relay.enqueue('bad topic', 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue('', 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue(NULL, 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue('.', 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue('..', 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue(repeat('a', 250), 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue('payments/eu', 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue('paymënts', 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue(E'payments\n', 'k', 'x'::bytea)", "not a valid Kafka topic name"),
        ("SELECT relay.enqueue('t', NULL, 'x'::bytea)", "key must not be null"),
        ("SELECT relay.enqueue('t', 'k', NULL)", "payload must not be null"),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '{\"n\": 1}')",
            "headers must be a JSON object of string values",
        ),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '[]')",
            "headers must be a JSON object of string values",
        ),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '{\"a\": \"x\", \"b\": [\"y\"]}')",
            "headers must be a JSON object of string values",
        ),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '{\"a\": {\"b\": \"c\"}}')",
            "headers must be a JSON object of string values",
        ),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '{\"a\": null}')",
            "headers must be a JSON object of string values",
        ),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '\"text\"')",
            "headers must be a JSON object of string values",
        ),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, NULL)",
            "headers must be a JSON object of string values",
        ),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '{}', NULL)",
            "msg_type and content_type must not be null",
        ),
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '{}', '', NULL)",
            "msg_type and content_type must not be null",
        ),
        // Two faults at once: the headers are named first, as before V9.
        (
            "SELECT relay.enqueue('t', 'k', 'x'::bytea, '[]', NULL)",
            "headers must be a JSON object of string values",
        ),
    ] {
        let err = client.query_one(sql, &[]).await.expect_err(sql);
        let text = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
        assert!(text.contains(reason), "{sql}: {text}");
    }

    // Kafka's own rule accepts these: every allowed character, and the longest name.
    for topic in ["a", "...", "Pay_ments-1.v2", &"a".repeat(249)] {
        client.query_one("SELECT relay.enqueue($1, 'k', 'x'::bytea)", &[&topic]).await.expect(topic);
    }
    assert_eq!(count(&client, "SELECT count(*) FROM relay.outbox", &[]).await, 4);
    client.batch_execute("TRUNCATE relay.outbox").await.expect("truncate");

    // Rolled back with the business change: neither is visible.
    let tx = client.transaction().await.expect("begin");
    tx.execute("UPDATE account SET balance = balance - 10 WHERE id = 1", &[]).await.expect("debit");
    relay_outbox::enqueue(&tx, &relay_outbox::Message::new("payments", "1", b"-10")).await.expect("enqueue");
    tx.rollback().await.expect("rollback");
    assert_eq!(count(&client, "SELECT count(*) FROM relay.outbox", &[]).await, 0);

    // Committed with it: both are, and the returned id is the row's.
    let tx = client.transaction().await.expect("begin");
    tx.execute("UPDATE account SET balance = balance - 10 WHERE id = 1", &[]).await.expect("debit");
    let mut message = relay_outbox::Message::new("payments", "1", b"-10");
    message.headers.insert("tenant".into(), "acme".into());
    message.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let id = relay_outbox::enqueue(&tx, &message).await.expect("enqueue");
    tx.commit().await.expect("commit");
    let row = client
        .query_one("SELECT topic, key, payload, headers->>'tenant', traceparent FROM relay.outbox WHERE message_id = $1", &[&id])
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "payments");
    assert_eq!(row.get::<_, String>(1), "1");
    assert_eq!(row.get::<_, Vec<u8>>(2), b"-10");
    assert_eq!(row.get::<_, String>(3), "acme");
    assert_eq!(row.get::<_, String>(4), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_eq!(count(&client, "SELECT balance FROM account WHERE id = 1", &[]).await, 90);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_behind_an_open_transaction_steps_aside_and_is_retried() {
    let db = TestDb::new().await;
    let url = url(&db);
    relay_db::prepare_schema(&url, relay_db::Schema::Inbox, true).await.expect("migrate");
    // Back before V9, so that V9 (an ALTER TABLE of relay.inbox) is pending again. The newest
    // migration, so that no applied later one makes refinery call it missing.
    let admin = db.client().await;
    admin
        .batch_execute(
            "ALTER TABLE relay.inbox DROP COLUMN retried_at, DROP COLUMN previous_parked_at,
                 DROP COLUMN previous_park_reason;
             DELETE FROM relay_inbox_schema_history WHERE version = 9",
        )
        .await
        .expect("revert V9");

    // An application transaction reads the table and stays open.
    let mut holder = db.client().await;
    let open = holder.transaction().await.expect("begin");
    open.execute("SELECT count(*) FROM relay.inbox", &[]).await.expect("read");

    let shutdown = tokio_util::sync::CancellationToken::new();
    let (tx, mut retries) = tokio::sync::mpsc::unbounded_channel();
    let migrating = tokio::spawn({
        let (url, shutdown) = (url.clone(), shutdown.clone());
        async move {
            relay_db::prepare_schema_patiently(&url, relay_db::Schema::Inbox, true, &shutdown, |e| {
                let _ = tx.send(e.to_string());
            })
            .await
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(30), retries.recv())
        .await
        .expect("the migration gives up within its lock timeout")
        .expect("a retry");
    assert!(first.contains("waited 1s for a table lock"), "{first}");

    // Meanwhile other sessions are not queued behind the waiting ALTER TABLE for long.
    let reader = db.client().await;
    reader.batch_execute("SET statement_timeout = '10s'").await.expect("timeout");
    let started = std::time::Instant::now();
    reader.execute("SELECT count(*) FROM relay.inbox", &[]).await.expect("another reader gets through");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "another reader waited {waited:?}");
    assert!(!migrating.is_finished(), "the migration cannot finish while the transaction is open");

    // Once the transaction ends, the retried migration completes.
    open.commit().await.expect("commit");
    let done =
        tokio::time::timeout(Duration::from_secs(30), migrating).await.expect("migrated").expect("task");
    assert!(done.expect("migration"), "not cancelled");
    let columns = count(
        &admin,
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'relay' \
         AND table_name = 'inbox' AND column_name = 'retried_at'",
        &[],
    )
    .await;
    assert_eq!(columns, 1);
    assert_eq!(
        count(&admin, "SELECT count(*) FROM relay_inbox_schema_history WHERE version = 9", &[]).await,
        1
    );
}

/// V1's per-key lock class, which relay.enqueue took before migration V5.
const V1_KEY_LOCK_CLASS: i32 = 1_380_273_217;

#[tokio::test(flavor = "multi_thread")]
async fn upgrading_to_v9_waits_for_writers_still_holding_v1_key_locks_and_enqueue_stops_asking_for_them() {
    let db = TestDb::new().await;
    let url = url(&db);
    relay_db::prepare_schema(&url, relay_db::Schema::Outbox, true).await.expect("migrate");
    // Back before V9 (the newest outbox migration; its statements can run again).
    let admin = db.client().await;
    admin
        .batch_execute("DELETE FROM relay_outbox_schema_history WHERE version = 9")
        .await
        .expect("revert V9");

    // A writer that began under V1 holds a key's V1 lock, of a negative hash (pg_locks shows it
    // as an unsigned objid above 2^31, which V9 must turn back into the signed key to wait on).
    let mut holder = db.client().await;
    let open = holder.transaction().await.expect("begin");
    open.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&V1_KEY_LOCK_CLASS, &-5_i32])
        .await
        .expect("V1 lock");

    let shutdown = tokio_util::sync::CancellationToken::new();
    let (tx, mut retries) = tokio::sync::mpsc::unbounded_channel();
    let migrating = tokio::spawn({
        let (url, shutdown) = (url.clone(), shutdown.clone());
        async move {
            relay_db::prepare_schema_patiently(&url, relay_db::Schema::Outbox, true, &shutdown, |e| {
                let _ = tx.send(e.to_string());
            })
            .await
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(60), retries.recv())
        .await
        .expect("the migration waits for the V1 holder and gives up within its lock timeout")
        .expect("a retry");
    assert!(first.contains("waited"), "{first}");
    assert!(!migrating.is_finished(), "V9 cannot finish while a V1 lock is held");
    assert_eq!(
        count(&admin, "SELECT count(*) FROM relay_outbox_schema_history WHERE version = 9", &[]).await,
        0
    );

    // Once the old writer commits, the retried migration completes.
    open.commit().await.expect("commit");
    let done =
        tokio::time::timeout(Duration::from_secs(60), migrating).await.expect("migrated").expect("task");
    assert!(done.expect("migration"), "not cancelled");
    assert_eq!(
        count(&admin, "SELECT count(*) FROM relay_outbox_schema_history WHERE version = 9", &[]).await,
        1
    );

    // relay.enqueue takes only its slot lock now, and never asks for V1's class.
    let source: String = admin
        .query_one("SELECT prosrc FROM pg_proc WHERE oid = 'relay.enqueue(text,text,bytea,jsonb,text,text,text,text)'::regprocedure", &[])
        .await
        .expect("source")
        .get(0);
    assert!(!source.contains(&V1_KEY_LOCK_CLASS.to_string()), "{source}");
    let mut writer = db.client().await;
    let tx = writer.transaction().await.expect("begin");
    tx.execute("SELECT relay.enqueue('payments', 'k', 'x'::bytea)", &[]).await.expect("enqueue");
    let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let held: Vec<(i64, bool)> = admin
        .query(
            "SELECT classid::bigint, granted FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
            &[&pid],
        )
        .await
        .expect("locks")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(held, vec![(1_380_273_221, true)], "only the key's slot is held");
    tx.commit().await.expect("commit");
    assert_eq!(count(&admin, "SELECT count(*) FROM relay.outbox", &[]).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn v9_applied_with_v5_in_one_upgrade_transaction_keeps_the_per_call_wait_for_v1_key_locks() {
    let db = TestDb::new().await;
    relay_db::prepare_schema(&url(&db), relay_db::Schema::Outbox, true).await.expect("migrate");
    let v9 = relay_db::migrations(relay_db::Schema::Outbox)
        .into_iter()
        .find(|m| m.version() == 9)
        .and_then(|m| m.sql().map(str::to_owned))
        .expect("V9's SQL");
    let enqueue_source = "SELECT prosrc FROM pg_proc \
                          WHERE oid = 'relay.enqueue(text,text,bytea,jsonb,text,text,text,text)'::regprocedure";
    let mut client = db.client().await;
    let mut other = db.client().await;
    // As the install script does from V4: V5 (here, its fence function written again, as V5
    // writes it) and V9 in one transaction, once directly and once inside a subtransaction.
    for savepoint in [false, true] {
        // A V1 lock held by another writer is not waited for then (it could be a V4 writer
        // queued behind this very transaction): V9 completes at once.
        let old = other.transaction().await.expect("begin");
        old.execute("SELECT pg_advisory_xact_lock($1, 11)", &[&V1_KEY_LOCK_CLASS]).await.expect("V1 lock");
        let tx = client.transaction().await.expect("begin");
        if savepoint {
            tx.batch_execute("SAVEPOINT v5").await.expect("savepoint");
        }
        tx.batch_execute(
            "DO $$ BEGIN EXECUTE pg_get_functiondef('relay.outbox_leader_fence()'::regprocedure); END $$",
        )
        .await
        .expect("V5's fence function written in this transaction");
        if savepoint {
            tx.batch_execute("RELEASE SAVEPOINT v5").await.expect("release");
        }
        tx.batch_execute("SET LOCAL lock_timeout = '2s'").await.expect("timeout");
        tx.batch_execute(&v9).await.expect("V9 does not wait for V1 holders when V5 is in its transaction");
        let source: String = tx.query_one(enqueue_source, &[]).await.expect("source").get(0);
        assert!(source.contains(&V1_KEY_LOCK_CLASS.to_string()), "savepoint {savepoint}: {source}");
        tx.execute("SELECT relay.enqueue('payments', 'k', 'x'::bytea)", &[]).await.expect("enqueue");
        tx.rollback().await.expect("rollback");
        old.rollback().await.expect("rollback");
    }
    // A fresh install applies V1 in the same transaction too: no writer can have run V4's
    // relay.enqueue, so the function does not ask.
    let tx = client.transaction().await.expect("begin");
    tx.batch_execute(
        "UPDATE relay_outbox_schema_history SET name = name WHERE version = 1;
         DO $$ BEGIN EXECUTE pg_get_functiondef('relay.outbox_leader_fence()'::regprocedure); END $$",
    )
    .await
    .expect("V1's history row and V5's fence function written in this transaction");
    tx.batch_execute(&v9).await.expect("V9");
    let source: String = tx.query_one(enqueue_source, &[]).await.expect("source").get(0);
    assert!(!source.contains(&V1_KEY_LOCK_CLASS.to_string()), "fresh install: {source}");
    tx.rollback().await.expect("rollback");
    // Applied on its own (V5 committed long before), the function does not ask.
    let source: String = client.query_one(enqueue_source, &[]).await.expect("source").get(0);
    assert!(!source.contains(&V1_KEY_LOCK_CLASS.to_string()), "{source}");
}
