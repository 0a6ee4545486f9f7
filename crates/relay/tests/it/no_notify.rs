//! `relay.enqueue` sends no notification (migration V6): a transaction that enqueues can be
//! prepared for two-phase commit, keeps its key's order while prepared, and the poller still finds
//! every committed row by scanning, with nothing to wake it.
use std::time::Duration;

use relay_chaos::postgres::PgCluster;

use crate::{harness::*, verify::inbox_equals_outbox};

/// A server that allows prepared transactions: the shared one when its
/// `max_prepared_transactions` is above 0, else a private cluster started with it set (kept alive
/// by the returned handle). Returns `postgres://user@host:port` without a database.
async fn server_with_prepared_transactions() -> (String, Option<PgCluster>) {
    let admin = connect(&format!("{}/postgres", pg_base())).await;
    let setting: String =
        admin.query_one("SHOW max_prepared_transactions", &[]).await.expect("show setting").get(0);
    if setting.parse::<i64>().expect("a number") > 0 {
        return (pg_base(), None);
    }
    let cluster = PgCluster::start_with(&[("max_prepared_transactions", "8")])
        .await
        .expect("start a private PostgreSQL with max_prepared_transactions = 8");
    (format!("postgres://postgres@127.0.0.1:{}", cluster.port()), Some(cluster))
}

/// Enqueues in a new session, inside a transaction that is then prepared as `gid`.
async fn enqueue_prepared(db: &TestDb, topic: &str, key: &str, payload: &str, gid: &str) {
    let client = db.client().await;
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .query_one("SELECT relay.enqueue($1, $2, convert_to($3, 'UTF8'))", &[&topic, &key, &payload])
        .await
        .expect("enqueue");
    client
        .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
        .await
        .expect("PREPARE TRANSACTION succeeds");
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueues_in_prepared_transactions_publish_after_commit_prepared_in_key_order_and_vanish_after_rollback_prepared(
) {
    let (base, cluster) = server_with_prepared_transactions().await;
    let origin = TestDb::on(&base).await;
    let topic = topic(1).await;
    let _poller = spawn("two_phase", "poller", POLLER, &poller_env(&origin, &topic));
    await_table(&origin, "relay.outbox").await;
    let gid = |name: &str| format!("relay-it-{}-{name}", origin.name);

    enqueue_prepared(&origin, &topic, "account-1", "first", &gid("first")).await;
    enqueue_prepared(&origin, &topic, "account-2", "rolled back", &gid("rolled-back")).await;
    enqueue_prepared(&origin, &topic, "account-3", "other key", &gid("other")).await;
    // A later writer of account-1 waits for the prepared transaction, which holds the key's slot.
    let later = {
        let (origin, topic) = (TestDb::from_url(&origin.url), topic.clone());
        tokio::spawn(async move { enqueue_one(&origin, &topic, "account-1", b"second").await })
    };
    let admin = origin.client().await;
    let waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    eventually(Duration::from_secs(30), "the later writer waiting for the prepared one", || {
        let admin = &admin;
        async move { (count(admin, waiting, &[]).await == 1).then_some(()) }
    })
    .await;
    // Nothing prepared is visible, so nothing is published yet.
    assert_eq!(count(&admin, "SELECT count(*) FROM relay.outbox", &[]).await, 0);

    admin.batch_execute(&format!("COMMIT PREPARED '{}'", gid("first"))).await.expect("commit prepared");
    later.await.expect("the later writer commits after the prepared transaction");
    admin.batch_execute(&format!("ROLLBACK PREPARED '{}'", gid("rolled-back"))).await.expect("rollback");
    admin.batch_execute(&format!("COMMIT PREPARED '{}'", gid("other"))).await.expect("commit prepared");

    let published = "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL";
    eventually(Duration::from_secs(60), "three messages published", || {
        let admin = &admin;
        async move { (count(admin, published, &[]).await == 3).then_some(()) }
    })
    .await;
    let rows = admin
        .query(
            "SELECT key, convert_from(payload, 'UTF8'), kafka_offset FROM relay.outbox ORDER BY kafka_offset",
            &[],
        )
        .await
        .expect("rows");
    let seen: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let account_1: Vec<&str> =
        seen.iter().filter(|(key, _)| key == "account-1").map(|(_, payload)| payload.as_str()).collect();
    assert_eq!(account_1, ["first", "second"], "key order on the broker follows commit order");
    assert!(seen.contains(&("account-3".into(), "other key".into())), "{seen:?}");
    assert!(!seen.iter().any(|(key, _)| key == "account-2"), "a rolled-back prepared enqueue is never sent");
    drop(admin);
    if let Some(cluster) = cluster {
        cluster.stop().await.expect("stop the private PostgreSQL");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_any_notification_bursts_from_concurrent_writers_all_reach_the_inbox() {
    let relay = Pipeline::start("no_notify_bursts", 3).await;
    let url = relay_config::DatabaseUrl::parse(relay.origin.url.clone().into()).expect("url");
    let (_session, mut notifications) =
        relay_db::listen(&url, "relay_outbox", None).await.expect("LISTEN relay_outbox");
    let mut total = 0;
    // Bursts with idle gaps of several poll intervals, so the poller has backed off when each
    // burst comes; single-message bursts as well as several writers at once.
    for (writers, per_writer, gap_ms) in [(1, 1, 400), (4, 5, 50), (1, 1, 700), (8, 3, 0), (2, 10, 250)] {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (origin, topic) = (TestDb::from_url(&relay.origin.url), relay.topic.clone());
                tokio::spawn(async move { enqueue_many(&origin, &topic, per_writer, 3 + w, 1).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
        total += writers * per_writer;
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    relay.await_ledger(total as i64).await;
    assert_eq!(inbox_equals_outbox(&relay.origin, &relay.inbox, "ledger", &relay.topic).await, total);
    assert!(notifications.try_recv().is_err(), "relay.enqueue sent a notification");
}
