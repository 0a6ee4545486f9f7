//! Workers that die: SIGKILLed mid-run, every message's effect still commits exactly once and in
//! key order; SIGTERM lets a worker finish the message in hand before it stops.
use std::time::Duration;

use super::{
    assert_effects_once_in_key_order, await_processed, inbox_db, insert_messages, processed, worker_env,
    WORKER,
};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_messages_over_200_keys_are_acted_on_once_in_key_order_while_workers_are_killed() {
    const TEST: &str = "processing_killed";
    let db = inbox_db().await;
    let client = db.client().await;
    let keys: Vec<String> = (0..200).map(|k| format!("account-{k}")).collect();
    let total = insert_messages(&client, "ledger", "it-origin", &keys, 100, 1).await as i64;
    assert_eq!(total, 20_000);
    // Four processes with different worker counts and batch sizes; each effect takes at least
    // a millisecond with its transaction open, so a kill lands inside transactions.
    let shapes = [("2", "1"), ("2", "10"), ("3", "5"), ("1", "1")];
    let envs: Vec<_> = shapes
        .iter()
        .map(|(workers, batch)| {
            worker_env(
                &db,
                "ledger",
                "effects",
                &[
                    ("PROCESSING_WORKERS", workers),
                    ("PROCESSING_BATCH", batch),
                    ("EXAMPLE_HANDLER_DELAY_MS", "1"),
                ],
            )
        })
        .collect();
    let mut workers: Vec<Service> =
        envs.iter().enumerate().map(|(i, env)| spawn(TEST, &format!("worker-{i}"), WORKER, env)).collect();

    // Ten kills spread over the run (after 1,500, 3,000, ... 15,000 of 20,000 are done), each
    // worker restarted at once.
    for kill in 1..=10i64 {
        await_processed(&client, "ledger", kill * 1_500, Duration::from_secs(300)).await;
        let victim = kill as usize % workers.len();
        workers[victim].kill().await;
        workers[victim] = spawn(TEST, &format!("worker-{victim}"), WORKER, &envs[victim]);
    }
    await_processed(&client, "ledger", total, Duration::from_secs(600)).await;
    for worker in &mut workers {
        let status = worker.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "{status}: {}", worker.log_text());
    }

    assert_eq!(assert_effects_once_in_key_order(&client, "ledger", "effects").await, total);
    let per_key =
        "SELECT count(*) FROM (SELECT key FROM effects GROUP BY key HAVING max(position) = 100) AS k";
    assert_eq!(count(&client, per_key, &[]).await, 200, "every key's 100 effects, numbered 1 to 100");
    let untouched = "SELECT count(*) FROM relay.inbox WHERE attempts > 0 OR parked_at IS NOT NULL OR skipped_at IS NOT NULL";
    assert_eq!(
        count(&client, untouched, &[]).await,
        0,
        "no attempt failed: a killed worker's attempt is not one"
    );
    assert_eq!(processed(&client, "ledger").await, total);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_worker_finish_the_message_in_hand_and_commit_it_before_stopping() {
    const TEST: &str = "processing_sigterm";
    let db = inbox_db().await;
    let client = db.client().await;
    let keys: Vec<String> = (0..3).map(|k| format!("k{k}")).collect();
    insert_messages(&client, "ledger", "it-origin", &keys, 20, 1).await;
    // One worker, one message per transaction, each effect taking 3 s with the transaction open.
    let env = worker_env(
        &db,
        "ledger",
        "effects",
        &[("PROCESSING_WORKERS", "1"), ("EXAMPLE_HANDLER_DELAY_MS", "3000")],
    );
    let mut worker = spawn(TEST, "worker", WORKER, &env);
    await_processed(&client, "ledger", 1, Duration::from_secs(60)).await;
    // The worker is inside a handler: its transaction is open, the effect written, the handler
    // sleeping.
    let in_handler = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                        AND state = 'idle in transaction' AND query LIKE '%INSERT INTO effects%'";
    eventually(Duration::from_secs(30), "the worker inside a handler", || async {
        (count(&client, in_handler, &[]).await == 1).then_some(())
    })
    .await;
    let before = processed(&client, "ledger").await;
    let status = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}: {}", worker.log_text());
    let after = processed(&client, "ledger").await;
    assert!(
        after > before,
        "the message in hand was finished: {before} processed before SIGTERM, {after} after"
    );
    assert!(after < 60, "the worker stopped instead of working through the backlog: {after}");
    assert_eq!(assert_effects_once_in_key_order(&client, "ledger", "effects").await, after);
}
