//! The receiving side (issue 11): every inbox message is acted on exactly once, in key order,
//! through the SQL contract of inbox migration V6 (`relay.claim`, `relay.done`, `relay.failed`)
//! and the Rust worker (`relay-processing`, run here as the `relay-example-worker` binary, whose
//! business effect is one row per message in a table of the test's choosing).
//!
//! Most tests put messages into `relay.inbox` directly (the consumer's path is tested
//! elsewhere); `pipeline` goes end to end through poller, broker, consumer and worker.
use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::harness::*;

mod claims;
mod crashes;
mod failures;
mod pipeline;
mod undecodable;

pub const WORKER: &str = env!("CARGO_BIN_EXE_relay-example-worker");

/// A fresh database with the inbox schema (migrated as the superuser).
pub async fn inbox_db() -> TestDb {
    let db = TestDb::new().await;
    let url = relay_config::DatabaseUrl::parse(db.url.clone().into()).expect("url");
    relay_db::prepare_schema(&url, relay_db::Schema::Inbox, true).await.expect("migrate the inbox schema");
    db
}

/// Inserts `per_key` messages for each of `keys` into `inbox`, round robin over the keys, with
/// sequences `first`, `first + 1`, ...; returns how many.
pub async fn insert_messages(
    client: &Client,
    inbox: &str,
    source: &str,
    keys: &[String],
    per_key: i64,
    first: i64,
) -> u64 {
    let total = per_key * keys.len() as i64;
    client
        .execute(
            "INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload,
                                      headers, sequence, created_at, kafka_topic, kafka_partition, kafka_offset)
             SELECT $1, gen_random_uuid(), $2, 'payments', ($3::text[])[1 + g % cardinality($3::text[])],
                    'it.message', 'application/octet-stream', convert_to(g::text, 'UTF8'), '{}', $4 + g, now(),
                    'payments', 0, $4 + g
             FROM generate_series(0::bigint, $5::bigint - 1) AS g
             ORDER BY g",
            &[&inbox, &source, &keys, &first, &total],
        )
        .await
        .expect("insert messages")
}

/// The message of `key` with `sequence`.
pub async fn message_id(client: &Client, inbox: &str, key: &str, sequence: i64) -> uuid::Uuid {
    client
        .query_one(
            "SELECT message_id FROM relay.inbox WHERE inbox = $1 AND key = $2 AND sequence = $3",
            &[&inbox, &key, &sequence],
        )
        .await
        .expect("message id")
        .get(0)
}

/// Environment for a `relay-example-worker` on `inbox` of `db` writing its effects to `table`.
pub fn worker_env(db: &TestDb, inbox: &str, table: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("DATABASE_URL", db.url.as_str()),
        ("PROCESSING_INBOX", inbox),
        ("PROCESSING_POLL_INTERVAL_MS", "100"),
        ("EXAMPLE_TABLE", table),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Messages of `inbox` marked processed.
pub async fn processed(client: &Client, inbox: &str) -> i64 {
    count(client, "SELECT count(*) FROM relay.inbox WHERE inbox = $1 AND processed_at IS NOT NULL", &[&inbox])
        .await
}

/// Waits until `n` messages of `inbox` are processed.
pub async fn await_processed(client: &Client, inbox: &str, n: i64, timeout: std::time::Duration) {
    eventually(timeout, &format!("{n} messages of {inbox} processed"), || async {
        (processed(client, inbox).await >= n).then_some(())
    })
    .await;
}

/// Checks the example's effects in `table` against `inbox` and returns how many there are:
/// one effect per processed (not skipped) message and none for any other; per key, effects in
/// sequence order (`position` 1, 2, ... follows `sequence`); no processed message with an
/// earlier unprocessed one of its key; marks (`processed_at`) in sequence order per key.
pub async fn assert_effects_once_in_key_order(client: &Client, inbox: &str, table: &str) -> i64 {
    let checks = [
        (
            "processed messages without exactly one effect",
            format!(
                "SELECT count(*) FROM relay.inbox AS i
                 LEFT JOIN (SELECT message_id, count(*) AS n FROM {table} GROUP BY message_id) AS e
                        ON e.message_id = i.message_id
                 WHERE i.inbox = $1 AND i.processed_at IS NOT NULL AND i.skipped_at IS NULL
                   AND coalesce(e.n, 0) <> 1"
            ),
        ),
        (
            "effects of messages not processed, skipped, or not in the inbox",
            format!(
                "SELECT count(*) FROM {table} AS t
                 LEFT JOIN relay.inbox AS i ON i.inbox = $1 AND i.message_id = t.message_id
                 WHERE i.message_id IS NULL OR i.processed_at IS NULL OR i.skipped_at IS NOT NULL"
            ),
        ),
        (
            "effects out of sequence order within their key",
            format!(
                "SELECT count(*) FROM (
                     SELECT position, sequence, lag(sequence) OVER w AS previous, row_number() OVER w AS n
                     FROM {table} AS t
                     WHERE EXISTS (SELECT FROM relay.inbox AS i WHERE i.inbox = $1 AND i.message_id = t.message_id)
                     WINDOW w AS (PARTITION BY source, topic, key ORDER BY position)) AS e
                 WHERE e.position <> e.n OR e.previous >= e.sequence"
            ),
        ),
        (
            "processed messages with an earlier unprocessed one of their key",
            "SELECT count(*) FROM relay.inbox AS i WHERE i.inbox = $1 AND i.processed_at IS NOT NULL
               AND EXISTS (SELECT FROM relay.inbox AS j WHERE j.inbox = i.inbox AND j.source = i.source
                             AND j.topic = i.topic AND j.key = i.key AND j.sequence < i.sequence
                             AND j.processed_at IS NULL)"
                .to_string(),
        ),
        (
            "marks out of sequence order within their key",
            "SELECT count(*) FROM (
                 SELECT processed_at, lag(processed_at) OVER (PARTITION BY source, topic, key ORDER BY sequence) AS previous
                 FROM relay.inbox WHERE inbox = $1 AND processed_at IS NOT NULL) AS m
             WHERE m.previous > m.processed_at"
                .to_string(),
        ),
    ];
    // Fresh statistics: the planner would otherwise take 20,000 rows for one and nest loops.
    client.batch_execute(&format!("ANALYZE relay.inbox; ANALYZE {table}")).await.expect("analyze");
    for (what, sql) in checks {
        assert_eq!(count(client, &sql, &[&inbox]).await, 0, "{what}");
    }
    count(client, &format!("SELECT count(*) FROM {table}"), &[]).await
}
