//! Processes killed with SIGKILL mid-stream, and clean SIGTERM shutdown.
use std::time::Duration;

use crate::{harness::*, verify::inbox_equals_outbox};

#[tokio::test(flavor = "multi_thread")]
async fn poller_killed_with_sigkill_mid_stream_loses_nothing() {
    let test = "poller_sigkill";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    let mut env = poller_env(&origin, &topic);
    env.insert("OUTBOX_BATCH_SIZE".into(), "200".into());
    // A backlog first, so the kill lands while the poller is working through it.
    let url = relay_config::DatabaseUrl::parse(origin.url.clone().into()).expect("url");
    relay_db::prepare_schema(&url, relay_db::Schema::Outbox, true).await.expect("schema");
    enqueue_many(&origin, &topic, 20_000, 100, 500).await;
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_env(&inbox, "ledger", &topic));
    let mut poller = spawn(test, "poller", POLLER, &env);

    let db = origin.client().await;
    let published_sql = "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL";
    let at_kill = eventually(Duration::from_secs(60), "part of the backlog published", || async {
        let n = count(&db, published_sql, &[]).await;
        (n >= 200).then_some(n)
    })
    .await;
    poller.kill().await;
    let after_kill = count(&db, published_sql, &[]).await;
    assert!(
        after_kill < 20_000,
        "killed too late to test anything: {after_kill} published (at kill {at_kill})"
    );
    // More work arrives while no poller runs.
    enqueue_many(&origin, &topic, 2_000, 100, 100).await;
    let _restarted = spawn(test, "poller-restarted", POLLER, &env);
    await_inbox(&inbox, "ledger", &topic, 22_000, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 22_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_killed_mid_batch_loses_and_doubles_nothing() {
    let test = "consumer_sigkill";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    let _poller = spawn(test, "poller", POLLER, &poller_env(&origin, &topic));
    let mut env = consumer_env(&inbox, "ledger", &topic);
    env.insert("INBOX_BATCH_SIZE".into(), "100".into());
    // Commit offsets rarely, so the kill lands between stored rows and committed offsets.
    env.insert("KAFKA_PROPERTY_AUTO_COMMIT_INTERVAL_MS".into(), "5000".into());
    // The whole stream is in Kafka before the consumer starts, so the kill lands mid-stream.
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 20_000, 100, 500).await;
    let outbox = origin.client().await;
    eventually(Duration::from_secs(120), "the stream to be published", || async {
        let pending =
            count(&outbox, "SELECT count(*) FROM relay.outbox WHERE published_at IS NULL", &[]).await;
        (pending == 0).then_some(())
    })
    .await;
    let mut consumer = spawn(test, "consumer", CONSUMER, &env);

    let db = inbox.client().await;
    let stored_sql = "SELECT count(*) FROM relay.inbox";
    await_table(&inbox, "relay.inbox").await;
    eventually(Duration::from_secs(120), "part of the stream stored", || async {
        (count(&db, stored_sql, &[]).await >= 500).then_some(())
    })
    .await;
    consumer.kill().await;
    let at_kill = count(&db, stored_sql, &[]).await;
    assert!(at_kill < 20_000, "killed too late to test anything: {at_kill} stored");
    let restarted = spawn(test, "consumer-restarted", CONSUMER, &env);
    await_inbox(&inbox, "ledger", &topic, 20_000, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 20_000);
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_cleanly_with_every_acknowledged_row_marked() {
    let test = "sigterm";
    let mut relay = Pipeline::start(test, 2).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.as_str());
    let env = poller_env(origin, topic);
    enqueue_many(origin, topic, 5_000, 20, 100).await;
    await_inbox(inbox, "ledger", topic, 1, Duration::from_secs(60)).await;

    let status = relay.poller.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "poller exit status {status}");
    assert!(relay.poller.log_text().contains("outbox poller stopped"));
    let db = origin.client().await;
    // Every row marked published carries the broker's position for it.
    let unplaced =
        "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL AND kafka_offset IS NULL";
    assert_eq!(count(&db, unplaced, &[]).await, 0);
    let _poller = spawn(test, "poller-restarted", POLLER, &env);
    await_inbox(inbox, "ledger", topic, 5_000, Duration::from_secs(120)).await;
    let status = relay.consumer.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "consumer exit status {status}");
    assert!(relay.consumer.log_text().contains("inbox consumer stopped"));
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", topic).await, 5_000);
}
