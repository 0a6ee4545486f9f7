//! End to end: messages enqueued at the origin go through the poller, the broker and the
//! inbox-consumer, whose notification wakes the idle worker, and each is acted on once, in key
//! order; and the worker deployed as it should be, with a user that has only the processor role.
use std::{collections::BTreeSet, time::Duration};

use super::{
    assert_effects_once_in_key_order, await_processed, inbox_db, insert_messages, worker_env, WORKER,
};
use crate::{
    harness::*,
    roles::{as_user, Users},
};

#[tokio::test(flavor = "multi_thread")]
async fn messages_enqueued_at_the_origin_are_acted_on_once_in_key_order_through_poller_consumer_and_worker() {
    const TEST: &str = "processing_pipeline";
    let mut pipeline = Pipeline::start(TEST, 3).await;
    let client = pipeline.inbox.client().await;
    let url = relay_config::DatabaseUrl::parse(pipeline.inbox.url.clone().into()).expect("url");
    let (_listener, mut notifications) = relay_db::listen(&url, "relay_inbox", None).await.expect("listen");

    // Idle workers look by themselves only once a minute, so what wakes them within the
    // 45 s allowed below is the consumer's notification.
    let env = worker_env(
        &pipeline.inbox,
        "ledger",
        "effects",
        &[("PROCESSING_WORKERS", "3"), ("PROCESSING_BATCH", "4"), ("PROCESSING_POLL_INTERVAL_MS", "60000")],
    );
    let mut worker = spawn(TEST, "worker", WORKER, &env);
    let listening = "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND query = 'LISTEN relay_inbox'";
    eventually(Duration::from_secs(60), "the worker listening", || async {
        (count(&client, listening, &[]).await >= 2).then_some(())
    })
    .await;

    // Two rounds, each found by idle workers: the second starts right after the first was done.
    let mut ids = Vec::new();
    for round in 1..=2i64 {
        ids.extend(enqueue_many(&pipeline.origin, &pipeline.topic, 150, 10, 10).await);
        await_processed(
            &client,
            "ledger",
            150 * round,
            Duration::from_secs(if round == 1 { 120 } else { 45 }),
        )
        .await;
        assert!(notifications.try_recv().is_ok(), "round {round}: the consumer notified relay_inbox");
    }
    let status = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}: {}", worker.log_text());

    assert_eq!(assert_effects_once_in_key_order(&client, "ledger", "effects").await, 300);
    let acted: BTreeSet<uuid::Uuid> =
        client.query("SELECT message_id FROM effects", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(acted, ids.into_iter().collect::<BTreeSet<_>>(), "exactly the enqueued messages");
    pipeline.poller.terminate(Duration::from_secs(30)).await;
    pipeline.consumer.terminate(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_runs_as_a_user_with_only_the_processor_role_and_its_business_table() {
    const TEST: &str = "processing_least_privilege";
    let db = inbox_db().await;
    let client = db.client().await;
    let keys: Vec<String> = (0..5).map(|k| format!("k{k}")).collect();
    insert_messages(&client, "ledger", "it-origin", &keys, 10, 1).await;
    let (_users, names) = Users::create(&[("worker", Some("relay_inbox_processor"))]).await;
    // The business table belongs to the application, which lets the worker's user write it.
    let create =
        include_str!("../../../src/bin/relay-example-worker/create.sql").replace("{table}", "effects");
    client.batch_execute(&create).await.expect("business table");
    client.batch_execute(&format!("GRANT SELECT, INSERT ON effects TO {}", names[0])).await.expect("grant");

    let worker_db = TestDb::from_url(&as_user(&db.url, &names[0]));
    let env = worker_env(&worker_db, "ledger", "effects", &[("RELAY_MIGRATE", "false")]);
    let mut worker = spawn(TEST, "worker", WORKER, &env);
    await_processed(&client, "ledger", 50, Duration::from_secs(60)).await;
    let status = worker.terminate(Duration::from_secs(30)).await;
    let log = worker.log_text();
    assert!(status.success(), "{status}: {log}");
    assert!(!log.contains("permission denied"), "{log}");
    assert_eq!(assert_effects_once_in_key_order(&client, "ledger", "effects").await, 50);
    // The user's grant goes with the table, so that the user can be dropped.
    client.batch_execute("DROP TABLE effects").await.expect("drop business table");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_bad_settings_lists_every_problem_exits_2_and_prints_no_password() {
    let secret = "Sup3rS3cret-processing";
    let env: std::collections::BTreeMap<String, String> = [
        ("DATABASE_URL", format!("postgres://app:{secret}@db:not-a-port/ledger")),
        ("PROCESSING_WORKERS", "0".into()),
        ("PROCESSING_BACKOFF_INITIAL_MS", "5000".into()),
        ("PROCESSING_BACKOFF_MAX_MS", "1000".into()),
        ("PROCESSING_BACTH", "10".into()),
        ("EXAMPLE_TABLE", "Robert'); DROP TABLE x;--".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut worker = spawn("processing_config", "worker", WORKER, &env);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.child.wait())
        .await
        .expect("exits promptly")
        .expect("wait");
    let stderr = worker.log_text();
    assert_eq!(status.code(), Some(2), "{stderr}");
    for expected in [
        "DATABASE_URL: is not a valid PostgreSQL connection string",
        "PROCESSING_INBOX: is required",
        "PROCESSING_WORKERS: 0 is outside 1..=256",
        "PROCESSING_BACKOFF_MAX_MS: 1000 is below PROCESSING_BACKOFF_INITIAL_MS (5000)",
        "PROCESSING_BACTH: is not a setting",
        "EXAMPLE_TABLE: must be a plain lower-case table name",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in {stderr}");
    }
    assert!(!stderr.contains(secret), "the password leaked: {stderr}");
}
