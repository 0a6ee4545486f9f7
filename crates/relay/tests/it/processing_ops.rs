//! Operating inbox processing against real databases and services: `relay-admin processing`
//! resumes a key held up by a parked message (retry and skip), retention keeps every message not
//! processed yet, and the consumer's probe publishes the processing backlog.
use std::{collections::BTreeSet, time::Duration};

use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    admin::{admin, admin_raw},
    harness::*,
    health::{await_metric, with_endpoint},
};

/// Applies every migration of `schema` to `db`, as a service would at start.
pub(crate) async fn migrate(db: &TestDb, schema: relay_db::Schema) {
    let url = relay_config::DatabaseUrl::parse(db.url.clone().into()).expect("url");
    relay_db::prepare_schema(&url, schema, true).await.expect("schema");
}

/// Stores a message in `inbox` as the consumer would (source it-origin); returns its id.
pub(crate) async fn store(client: &Client, inbox: &str, topic: &str, key: &str, sequence: i64) -> Uuid {
    let id = Uuid::new_v4();
    client
        .execute(
            "INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload,
                                      headers, sequence, created_at, kafka_topic, kafka_partition, kafka_offset)
             VALUES ($1, $2, 'it-origin', $3, $4, '', '', 'x', '{}', $5, now(), $3, 0, $5)",
            &[&inbox, &id, &topic, &key, &sequence],
        )
        .await
        .expect("store an inbox row");
    id
}

/// What `relay.claim(inbox, 10)` hands out now (rolled back: nothing changes).
pub(crate) async fn claimable(client: &mut Client, inbox: &str) -> BTreeSet<Uuid> {
    let tx = client.transaction().await.expect("begin");
    let rows = tx.query("SELECT message_id FROM relay.claim($1, 10)", &[&inbox]).await.expect("claim");
    tx.rollback().await.expect("rollback");
    rows.iter().map(|r| r.get(0)).collect()
}

/// A worker's failed attempt: claims the message and records `error`; returns `retry` or `parked`.
pub(crate) async fn fail(client: &mut Client, inbox: &str, id: Uuid, error: &str) -> String {
    let tx = client.transaction().await.expect("begin");
    let claimed: Vec<Uuid> = tx
        .query("SELECT message_id FROM relay.claim($1, 10)", &[&inbox])
        .await
        .expect("claim")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(claimed.contains(&id), "{id} is not claimable: {claimed:?}");
    let outcome: String =
        tx.query_one("SELECT relay.failed($1, $2, $3)", &[&inbox, &id, &error]).await.expect("failed").get(0);
    tx.commit().await.expect("commit");
    outcome
}

/// A worker's successful attempt on a claimable message.
pub(crate) async fn done(client: &mut Client, inbox: &str, id: Uuid) {
    let tx = client.transaction().await.expect("begin");
    let claimed: Vec<Uuid> = tx
        .query("SELECT message_id FROM relay.claim($1, 10)", &[&inbox])
        .await
        .expect("claim")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(claimed.contains(&id), "{id} is not claimable: {claimed:?}");
    tx.execute("SELECT relay.done($1, $2)", &[&inbox, &id]).await.expect("done");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_parked_message_holds_its_key_until_an_operator_retries_or_skips_it() {
    let db = TestDb::new().await;
    migrate(&db, relay_db::Schema::Inbox).await;
    let mut client = db.client().await;
    client.execute("SELECT relay.enable_processing('ledger', 2, 0, 0)", &[]).await.unwrap();
    let a1 = store(&client, "ledger", "payments", "acct-a", 1).await;
    let a2 = store(&client, "ledger", "payments", "acct-a", 2).await;
    let a3 = store(&client, "ledger", "payments", "acct-a", 3).await;
    let b1 = store(&client, "ledger", "payments", "acct-b", 4).await;

    assert_eq!(fail(&mut client, "ledger", a1, "ledger locked").await, "retry");
    assert_eq!(fail(&mut client, "ledger", a1, "account acct-a frozen").await, "parked");
    assert_eq!(claimable(&mut client, "ledger").await, BTreeSet::from([b1]), "acct-a waits behind a1");

    let (code, listing) = admin(&db, &["processing", "list", "--inbox", "ledger"]).await;
    assert_eq!(code, 0);
    assert_eq!(listing["total"], 1, "{listing}");
    let row = &listing["rows"][0];
    assert_eq!(row["message_id"], a1.to_string());
    assert_eq!(
        (row["state"].as_str(), row["attempts"].as_i64(), row["waiting"].as_i64()),
        (Some("parked"), Some(2), Some(2))
    );
    assert_eq!(row["park_reason"], "account acct-a frozen");
    let (_, table, _) = admin_raw(&db, &["processing", "list", "--inbox", "ledger"]).await;
    assert!(table.contains(&a1.to_string()) && table.contains("account acct-a frozen"), "{table}");
    assert!(table.contains("1 parked or failing messages in inbox ledger"), "{table}");

    // Retry: a1 is handed out again (not a2), its failed attempts and last error kept.
    let (code, out) = admin(
        &db,
        &[
            "processing",
            "retry",
            "--execute",
            "--inbox",
            "ledger",
            "--message-id",
            &a1.to_string(),
            "--reason",
            "test",
        ],
    )
    .await;
    assert_eq!((code, out["count"].clone()), (0, 1.into()), "{out}");
    assert_eq!(claimable(&mut client, "ledger").await, BTreeSet::from([a1, b1]));
    let kept = "SELECT attempts, last_error, parked_at IS NULL FROM relay.inbox WHERE message_id = $1";
    let row = client.query_one(kept, &[&a1]).await.unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, String>(1), row.get::<_, bool>(2)),
        (2, "account acct-a frozen".into(), true)
    );
    // It fails again: parked again at once (its attempts were kept).
    assert_eq!(fail(&mut client, "ledger", a1, "account acct-a still frozen").await, "parked");
    assert_eq!(claimable(&mut client, "ledger").await, BTreeSet::from([b1]));

    // Skip: a1 is marked processed and skipped, with the reason; a2 is the key's next message.
    let skip = [
        "processing",
        "skip",
        "--execute",
        "--inbox",
        "ledger",
        "--message-id",
        &a1.to_string(),
        "--reason",
        "refunded by hand",
    ];
    let (code, out) = admin(&db, &skip).await;
    assert_eq!((code, out["count"].clone()), (0, 1.into()), "{out}");
    assert_eq!(claimable(&mut client, "ledger").await, BTreeSet::from([a2, b1]));
    let row = client
        .query_one(
            "SELECT processed_at IS NOT NULL, skipped_at IS NOT NULL, skip_reason, attempts, park_reason
             FROM relay.inbox WHERE message_id = $1",
            &[&a1],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(row.get::<_, String>(2), "refunded by hand");
    assert_eq!((row.get::<_, i32>(3), row.get::<_, String>(4)), (3, "account acct-a still frozen".into()));
    done(&mut client, "ledger", a2).await;
    assert_eq!(claimable(&mut client, "ledger").await, BTreeSet::from([a3, b1]));

    // Naming a processed or unknown message changes nothing and exits 1; --all acts on parked only.
    let unknown = Uuid::new_v4();
    let again = [
        "processing",
        "retry",
        "--execute",
        "--inbox",
        "ledger",
        "--message-id",
        &a1.to_string(),
        &unknown.to_string(),
        "--reason",
        "test",
    ];
    let (code, out) = admin(&db, &again).await;
    assert_eq!((code, out["count"].clone()), (1, 0.into()), "{out}");
    assert_eq!(out["unmatched"].as_array().map(Vec::len), Some(2));
    assert_eq!(fail(&mut client, "ledger", b1, "timeout").await, "retry");
    let (code, out) =
        admin(&db, &["processing", "skip", "--execute", "--inbox", "ledger", "--all", "--reason", "x"]).await;
    assert_eq!((code, out["count"].clone()), (0, 0.into()), "b1 is failing, not parked: {out}");
    let (_, listing) = admin(&db, &["processing", "list", "--inbox", "ledger"]).await;
    assert_eq!(listing["rows"][0]["message_id"], b1.to_string());
    assert_eq!(listing["rows"][0]["state"], "failing");

    // An inbox that does not process messages is refused with the reason.
    let (code, _, stderr) = admin_raw(&db, &["processing", "list", "--inbox", "audit"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("inbox audit does not process messages"), "{stderr}");
}

/// The sequences inbox `ledger` holds, in order.
async fn remaining(client: &Client) -> Vec<i64> {
    let seqs = "SELECT sequence FROM relay.inbox WHERE inbox = 'ledger' ORDER BY sequence";
    client.query(seqs, &[]).await.expect("seqs").iter().map(|r| r.get(0)).collect()
}

/// Waits until `consumer` logged a finished retention pass with every one of `fields`.
async fn await_pass(consumer: &Service, fields: &[&str]) {
    eventually(Duration::from_secs(60), &format!("retention pass {fields:?}"), || async {
        let log = consumer.log_text();
        log.lines()
            .any(|l| l.contains("inbox retention pass") && fields.iter().all(|f| l.contains(f)))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_never_deletes_a_message_not_processed_yet_and_keeps_the_exact_prefix() {
    let retention = [
        ("INBOX_RETENTION_HOURS", "1"),
        ("INBOX_RETENTION_BATCH", "4"),
        ("INBOX_RETENTION_INTERVAL_MS", "200"),
    ];
    let relay = Pipeline::start_with("processing_retention", 1, &[], &retention).await;
    enqueue_many(&relay.origin, &relay.topic, 20, 3, 10).await;
    relay.await_ledger(20).await;
    let mut inbox = relay.inbox.client().await;
    inbox.execute("SELECT relay.enable_processing('ledger', 1, 0, 0)", &[]).await.unwrap();
    let by_seq = |seq: i64| {
        let inbox = &inbox;
        async move {
            let sql = "SELECT message_id FROM relay.inbox WHERE inbox = 'ledger' AND sequence = $1";
            inbox.query_one(sql, &[&seq]).await.expect("row").get::<_, Uuid>(0)
        }
    };
    // 1-10 processed but 6, which is parked; 11-20 not processed. 1-15 are old.
    let (ids, parked) = {
        let mut ids = Vec::new();
        for seq in 1..=20 {
            ids.push(by_seq(seq).await);
        }
        (ids, by_seq(6).await)
    };
    for seq in 1..=10 {
        let id = ids[seq - 1];
        if id == parked {
            assert_eq!(fail(&mut inbox, "ledger", id, "bad account").await, "parked");
        } else {
            inbox.execute("SELECT relay.done('ledger', $1)", &[&id]).await.expect("done");
        }
    }
    let marker = "SELECT below_sequence FROM relay.inbox_purged WHERE inbox = 'ledger'";
    inbox
        .execute("UPDATE relay.inbox SET received_at = now() - interval '2 hours' WHERE sequence <= 15", &[])
        .await
        .unwrap();
    // 1-5 go; the parked 6 stops the run however old it is.
    await_pass(&relay.consumer, &["deleted=5", "below_sequence=6"]).await;
    assert_eq!(remaining(&inbox).await, (6..=20).collect::<Vec<_>>());
    assert_eq!(count(&inbox, marker, &[]).await, 6);

    // Skipped, 6 is processed: 6-10 go, and 11 (old, not processed) stops the run.
    let (code, out) = admin(
        &relay.inbox,
        &["processing", "skip", "--execute", "--inbox", "ledger", "--all", "--reason", "bad account"],
    )
    .await;
    assert_eq!((code, out["count"].clone()), (0, 1.into()), "{out}");
    await_pass(&relay.consumer, &["deleted=5", "below_sequence=11"]).await;
    assert_eq!(remaining(&inbox).await, (11..=20).collect::<Vec<_>>());

    // Once 11-15 are processed they go too; 16 is young.
    for id in &ids[10..15] {
        inbox.execute("SELECT relay.done('ledger', $1)", &[id]).await.expect("done");
    }
    await_pass(&relay.consumer, &["deleted=5", "below_sequence=16"]).await;
    assert_eq!(remaining(&inbox).await, (16..=20).collect::<Vec<_>>());
    assert_eq!(count(&inbox, marker, &[]).await, 16);
    let unprocessed = "SELECT count(*) FROM relay.inbox WHERE inbox = 'ledger' AND processed_at IS NULL";
    assert_eq!(count(&inbox, unprocessed, &[]).await, 5, "16-20, never deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_consumer_publishes_the_processing_backlog_of_an_inbox_that_processes() {
    let (origin, inbox_db) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(1).await;
    let _poller = spawn("processing_metrics", "poller", POLLER, &poller_env(&origin, &topic));
    let mut env = consumer_env(&inbox_db, "ledger", &topic);
    let addr = with_endpoint(&mut env);
    let _consumer = spawn("processing_metrics", "consumer", CONSUMER, &env);
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 6, 2, 6).await;
    await_inbox(&inbox_db, "ledger", &topic, 6, Duration::from_secs(120)).await;
    // Without processing: the lag is published, the backlog is not.
    await_metric(&addr, "relay_inbox_consumer_lag", &["inbox=\"ledger\""], 0.0).await;
    let text = scrape(&addr).await.expect("metrics");
    assert_eq!(sample(&text, "relay_inbox_unprocessed", &[]), None, "{text}");

    let mut inbox = inbox_db.client().await;
    inbox.execute("SELECT relay.enable_processing('ledger', 2, 0, 0)", &[]).await.unwrap();
    let ledger = ["inbox=\"ledger\""];
    await_metric(&addr, "relay_inbox_unprocessed", &ledger, 6.0).await;
    await_metric(&addr, "relay_inbox_processing_parked", &ledger, 0.0).await;
    await_metric(&addr, "relay_inbox_processing_attempts", &ledger, 0.0).await;

    // Key 0 (sequences 1, 3, 5): 1 parked after two failures; key 1: 2 done, 4 failed once.
    let id = |seq: i64| {
        let inbox = &inbox;
        async move {
            let sql = "SELECT message_id FROM relay.inbox WHERE sequence = $1";
            inbox.query_one(sql, &[&seq]).await.expect("row").get::<_, Uuid>(0)
        }
    };
    let (s1, s2, s4) = (id(1).await, id(2).await, id(4).await);
    inbox
        .execute("UPDATE relay.inbox SET received_at = now() - interval '1 hour' WHERE sequence = 1", &[])
        .await
        .unwrap();
    fail(&mut inbox, "ledger", s1, "e1").await;
    fail(&mut inbox, "ledger", s1, "e2").await;
    done(&mut inbox, "ledger", s2).await;
    fail(&mut inbox, "ledger", s4, "e3").await;
    await_metric(&addr, "relay_inbox_unprocessed", &ledger, 5.0).await;
    await_metric(&addr, "relay_inbox_processing_parked", &ledger, 1.0).await;
    await_metric(&addr, "relay_inbox_processing_attempts", &ledger, 3.0).await;
    let text = scrape(&addr).await.expect("metrics");
    let age = sample(&text, "relay_inbox_oldest_unprocessed_age_seconds", &ledger).expect("age");
    assert!((3600.0..3600.0 * 2.0).contains(&age), "sequence 1 was stored an hour ago: {age}");
}
