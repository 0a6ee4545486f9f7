//! A handler that keeps failing for one key: the message is retried with growing waits, parked
//! with its reason after the last attempt, its key's later messages wait while every other key
//! flows, and the operator's SQL (skip, or retry once the cause is fixed) makes the key resume.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use super::{
    assert_effects_once_in_key_order, await_processed, inbox_db, insert_messages, message_id, processed,
    worker_env, WORKER,
};
use crate::harness::*;

/// (attempts, next_attempt_at, parked) of one message.
type State = (i32, Option<SystemTime>, bool);

async fn state(client: &tokio_postgres::Client, id: uuid::Uuid) -> State {
    let row = client
        .query_one(
            "SELECT attempts, next_attempt_at, parked_at IS NOT NULL FROM relay.inbox WHERE message_id = $1",
            &[&id],
        )
        .await
        .expect("state");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_key_is_retried_with_backoff_then_parked_while_other_keys_flow_until_an_operator_resolves_it(
) {
    const TEST: &str = "processing_failing_key";
    let db = inbox_db().await;
    let client = db.client().await;
    let keys: Vec<String> = ["bad", "good-1", "good-2", "good-3"].iter().map(|k| k.to_string()).collect();
    // bad: sequences 1, 5, 9; the good keys the rest of 1..12.
    insert_messages(&client, "ledger", "it-origin", &keys, 3, 1).await;
    let bad: Vec<uuid::Uuid> =
        futures::future::join_all([1, 5, 9].map(|s| message_id(&client, "ledger", "bad", s))).await;
    let failing = [
        ("EXAMPLE_FAIL_KEY", "bad"),
        ("PROCESSING_MAX_ATTEMPTS", "3"),
        ("PROCESSING_BACKOFF_INITIAL_MS", "500"),
        ("PROCESSING_BACKOFF_MAX_MS", "5000"),
        ("PROCESSING_POLL_INTERVAL_MS", "20"),
    ];
    let mut worker = spawn(TEST, "worker", WORKER, &worker_env(&db, "ledger", "effects", &failing));

    // Watch the first bad message until it is parked: one next attempt per failed attempt, each
    // further away than the last by at least the doubled wait.
    let mut seen: BTreeMap<i32, Option<SystemTime>> = BTreeMap::new();
    let started = Instant::now();
    loop {
        let (attempts, next, parked) = state(&client, bad[0]).await;
        seen.insert(attempts, next);
        if parked {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not parked within a minute: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for attempts in 1..=3 {
        assert!(seen.contains_key(&attempts), "attempt {attempts} observed: {seen:?}");
    }
    let (first, second) = (seen[&1].expect("a next attempt"), seen[&2].expect("a next attempt"));
    let gap = second.duration_since(first).expect("later");
    assert!(gap >= Duration::from_millis(1000), "the second wait (1 s) starts after the first: gap {gap:?}");
    assert_eq!(seen[&3], None, "a parked message has no next attempt");
    let row = client
        .query_one(
            "SELECT park_reason, last_error, processed_at IS NULL FROM relay.inbox WHERE message_id = $1",
            &[&bad[0]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "example failure for key bad");
    assert_eq!(row.get::<_, String>(1), "example failure for key bad");
    assert!(row.get::<_, bool>(2));

    // Every other key flowed, also messages that arrive after the park; bad's later ones wait
    // untouched.
    insert_messages(&client, "ledger", "it-origin", &keys[1..], 2, 100).await;
    await_processed(&client, "ledger", 9 + 6, Duration::from_secs(60)).await;
    for id in &bad[1..] {
        assert_eq!(state(&client, *id).await, (0, None, false), "a later message of the parked key waits");
    }
    let bad_effects = "SELECT count(*) FROM effects WHERE key = 'bad'";
    assert_eq!(count(&client, bad_effects, &[]).await, 0);

    // The operator skips the parked message (relay-admin processing skip): the key moves on to
    // its next message, which the still-failing handler parks in turn.
    client
        .execute(
            "UPDATE relay.inbox SET processed_at = now(), skipped_at = now() WHERE message_id = $1",
            &[&bad[0]],
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "the second bad message parked", || async {
        state(&client, bad[1]).await.2.then_some(())
    })
    .await;
    assert_eq!(state(&client, bad[2]).await, (0, None, false));
    let status = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");

    // The cause is fixed (a worker without the failure) and the operator retries the parked
    // message (relay-admin processing retry): the key resumes in order.
    let fixed = worker_env(&db, "ledger", "effects", &[("PROCESSING_POLL_INTERVAL_MS", "20")]);
    let mut worker = spawn(TEST, "worker-fixed", WORKER, &fixed);
    client
        .execute(
            "UPDATE relay.inbox SET parked_at = NULL, park_reason = NULL, next_attempt_at = NULL WHERE message_id = $1",
            &[&bad[1]],
        )
        .await
        .unwrap();
    await_processed(&client, "ledger", 18, Duration::from_secs(60)).await;
    let status = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");

    assert_eq!(
        assert_effects_once_in_key_order(&client, "ledger", "effects").await,
        17,
        "all but the skipped one"
    );
    let rows =
        client.query("SELECT sequence FROM effects WHERE key = 'bad' ORDER BY position", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), [5, 9]);
    let row = client
        .query_one(
            "SELECT attempts, last_error, skipped_at IS NULL FROM relay.inbox WHERE message_id = $1",
            &[&bad[1]],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, String>(1), row.get::<_, bool>(2)),
        (3, "example failure for key bad".into(), true),
        "attempts kept as evidence"
    );
    assert_eq!(processed(&client, "ledger").await, 18);
}

/// An in-process handler: a panic for key `panics`, a statement the database refuses for key
/// `refused`, one row in `effects` for every other key.
struct Mixed;

impl relay_processing::Handler for Mixed {
    async fn handle(
        &self,
        message: &relay_processing::Message,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), relay_processing::HandlerError> {
        // The effect is written first, so a failure after it shows whether it was rolled back.
        tx.execute(
            "INSERT INTO effects (message_id, key, sequence) VALUES ($1, $2, $3)",
            &[&message.message_id, &message.key, &message.sequence],
        )
        .await?;
        match message.key.as_str() {
            "panics" => panic!("ledger invariant broken for {}", message.key),
            "refused" => {
                tx.execute("SELECT 1 / 0", &[]).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_or_refused_effect_in_a_batch_is_rolled_back_alone_and_counted_as_an_attempt() {
    let db = inbox_db().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE effects (message_id uuid NOT NULL, key text NOT NULL, sequence bigint NOT NULL)",
        )
        .await
        .unwrap();
    let keys: Vec<String> = ["panics", "refused", "ok-1", "ok-2"].iter().map(|k| k.to_string()).collect();
    insert_messages(&client, "ledger", "it-origin", &keys, 3, 1).await;
    let env = relay_config::MapEnv::new([
        ("DATABASE_URL", db.url.as_str()),
        ("PROCESSING_INBOX", "ledger"),
        ("PROCESSING_WORKERS", "1"),
        // All four keys in one transaction: the failures must not take the others' effects along.
        ("PROCESSING_BATCH", "10"),
        ("PROCESSING_MAX_ATTEMPTS", "2"),
        ("PROCESSING_BACKOFF_INITIAL_MS", "10"),
        ("PROCESSING_POLL_INTERVAL_MS", "20"),
    ]);
    let config = relay_processing::ProcessingConfig::from_env(&env).expect("config");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(relay_processing::run(config, Mixed, shutdown.clone()));
    let parked = "SELECT count(*) FROM relay.inbox WHERE parked_at IS NOT NULL";
    eventually(Duration::from_secs(60), "both failing keys parked and the others done", || async {
        (count(&client, parked, &[]).await == 2 && processed(&client, "ledger").await == 6).then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.expect("join").expect("run");

    let rows = client
        .query(
            "SELECT key, attempts, park_reason FROM relay.inbox WHERE parked_at IS NOT NULL ORDER BY key",
            &[],
        )
        .await
        .unwrap();
    let parked: Vec<(String, i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(parked[0].0, "panics");
    assert_eq!(parked[0].1, 2);
    assert_eq!(parked[0].2, "handler panicked: ledger invariant broken for panics");
    assert_eq!(parked[1].0, "refused");
    assert_eq!(parked[1].1, 2);
    assert!(parked[1].2.contains("division by zero"), "{}", parked[1].2);
    let effects: Vec<String> = client
        .query("SELECT key FROM effects ORDER BY sequence", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        effects,
        ["ok-1", "ok-2", "ok-1", "ok-2", "ok-1", "ok-2"],
        "only the successful effects stayed"
    );
    let untried = "SELECT count(*) FROM relay.inbox WHERE key IN ('panics', 'refused') AND attempts = 0 AND processed_at IS NULL";
    assert_eq!(count(&client, untried, &[]).await, 4, "the failing keys' later messages wait");
}
