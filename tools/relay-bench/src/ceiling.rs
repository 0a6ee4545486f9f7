//! The drain's ceiling: the same database work the drain does, by SQL alone, in the same run.
//!
//! Raw inserts into one table ignore most of what a message costs PostgreSQL. Here every message
//! is read from the outbox (the poller's scan and row read), marked published (its mark), and
//! inserted into each of two inboxes with their unique constraint (the consumer's insert, one
//! transaction per batch, then its notification, a statement of its own whose commit does not
//! wait for its flush), with the poller's statements and session settings (its marks do not wait for
//! their flush either) and the bench's batch
//! sizes, the outbox side and each inbox on its own connection, concurrently, as the services
//! run. What is left out is exactly what Relay adds: Kafka, envelopes and the services' work.
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::stack::{backlog, Stack};

/// The SQL-alone drain.
#[derive(Debug, Clone, Serialize)]
pub struct SqlAlone {
    pub messages: i64,
    /// Outbox rows read, marked and stored in both inboxes, per second, first scan to last commit.
    pub per_sec: f64,
    pub outbox_batch: i64,
    pub inbox_batch: usize,
}

/// One outbox batch as the consumer would decode it.
struct Batch {
    ids: Vec<uuid::Uuid>,
    keys: Vec<String>,
    payloads: Vec<Vec<u8>>,
    headers: Vec<serde_json::Value>,
    created: Vec<SystemTime>,
    sequences: Vec<i64>,
}

/// Drains `n` messages of the drain's workload by SQL alone, in batches of `outbox_batch` rows
/// (the poller) and `inbox_batch` rows (the consumers).
pub async fn measure(
    stack: &Stack,
    n: i64,
    outbox_batch: i64,
    inbox_batch: usize,
) -> anyhow::Result<SqlAlone> {
    let dbs = ["relay_bench_sql_origin", "relay_bench_sql_a", "relay_bench_sql_b"];
    let origin = stack.database(dbs[0], relay_db::Schema::Outbox).await?;
    let inboxes = [
        stack.database(dbs[1], relay_db::Schema::Inbox).await?,
        stack.database(dbs[2], relay_db::Schema::Inbox).await?,
    ];
    let topic = "sql-alone".to_string();
    backlog(&origin, &topic, n).await?;

    let started = Instant::now();
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for (client, name) in inboxes.into_iter().zip(["a", "b"]) {
        let (tx, rx) = mpsc::channel::<std::sync::Arc<Batch>>(2);
        senders.push(tx);
        let topic = topic.clone();
        writers.push(tokio::spawn(async move { store(client, name, &topic, rx, inbox_batch).await }));
    }
    publish(&origin, &topic, outbox_batch, &senders).await?;
    drop(senders);
    let mut stored = 0;
    for writer in writers {
        stored += writer.await??;
    }
    let per_sec = n as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(stored == 2 * n, "SQL alone stored {stored} of {} rows", 2 * n);
    drop(origin);
    stack.drop_databases(&dbs).await?;
    Ok(SqlAlone { messages: n, per_sec, outbox_batch, inbox_batch })
}

/// The poller's database work: scan, read, hand over, mark.
async fn publish(
    origin: &Client,
    topic: &str,
    batch: i64,
    inboxes: &[mpsc::Sender<std::sync::Arc<Batch>>],
) -> anyhow::Result<()> {
    use relay_poller::statements::*;
    origin.batch_execute("SET plan_cache_mode = force_custom_plan; SET synchronous_commit = off").await?;
    let (scan, read, mark) = (
        origin.prepare(FETCH_PENDING).await?,
        origin.prepare(FETCH_ROWS).await?,
        origin.prepare(MARK_PUBLISHED).await?,
    );
    let topics = vec![topic.to_string()];
    let (none_i, none_t): (Vec<i64>, Vec<String>) = (Vec::new(), Vec::new());
    let largest: i64 = 1 << 20;
    let mut offset = 0i64;
    loop {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
            [&topics, &batch, &0i64, &none_i, &true, &none_t, &none_t, &none_t];
        let ids: Vec<i64> = origin.query(&scan, &params).await?.iter().map(|r| r.get(0)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let rows = origin.query(&read, &[&ids, &largest]).await?;
        let mut b = Batch {
            ids: Vec::new(),
            keys: Vec::new(),
            payloads: Vec::new(),
            headers: Vec::new(),
            created: Vec::new(),
            sequences: Vec::new(),
        };
        for row in &rows {
            b.sequences.push(row.get("id"));
            b.ids.push(row.get("message_id"));
            b.keys.push(row.get("key"));
            b.payloads.push(row.get::<_, Option<Vec<u8>>>("payload").unwrap_or_default());
            b.headers.push(row.get("headers"));
            b.created.push(row.get("created_at"));
        }
        let b = std::sync::Arc::new(b);
        for inbox in inboxes {
            inbox.send(b.clone()).await.map_err(|_| anyhow::anyhow!("an inbox writer stopped"))?;
        }
        let partitions = vec![0i32; ids.len()];
        let offsets: Vec<i64> = (offset..offset + ids.len() as i64).collect();
        offset += ids.len() as i64;
        // Acknowledged just now: the poller passes how long ago each report came.
        let acked_us_ago: Vec<i64> = vec![0; ids.len()];
        origin.execute(&mark, &[&ids, &partitions, &offsets, &acked_us_ago]).await?;
    }
}

/// The consumer's database work for one inbox: a transaction per batch with its insert, then the
/// notification as the consumer sends it. Returns the rows stored.
async fn store(
    mut client: Client,
    inbox: &str,
    topic: &str,
    mut batches: mpsc::Receiver<std::sync::Arc<Batch>>,
    size: usize,
) -> anyhow::Result<i64> {
    use relay_inbox::statements::*;
    let insert = client.prepare(INSERT_INBOX).await?;
    let notify = client.prepare(NOTIFY_INBOX).await?;
    let mut stored = 0;
    while let Some(b) = batches.recv().await {
        for start in (0..b.ids.len()).step_by(size) {
            let r = start..(start + size).min(b.ids.len());
            let k = r.len();
            let text = |s: &str| vec![s.to_string(); k];
            let none: Vec<Option<String>> = vec![None; k];
            let payloads: Vec<&[u8]> = b.payloads[r.clone()].iter().map(Vec::as_slice).collect();
            let tx = client.transaction().await?;
            let new = tx
                .query(
                    &insert,
                    &[
                        &inbox,
                        &&b.ids[r.clone()],
                        &text("bench"),
                        &text(topic),
                        &&b.keys[r.clone()],
                        &text(""),
                        &text("application/octet-stream"),
                        &payloads,
                        &&b.headers[r.clone()],
                        &none,
                        &none,
                        &&b.sequences[r.clone()],
                        &&b.created[r.clone()],
                        &text(topic),
                        &vec![0i32; k],
                        &&b.sequences[r.clone()],
                    ],
                )
                .await?;
            tx.commit().await?;
            if !new.is_empty() {
                client.execute(&notify, &[&inbox]).await?;
            }
            stored += new.len() as i64;
        }
    }
    Ok(stored)
}

/// The drain beside its SQL-alone ceiling, as Markdown.
pub fn render(out: &mut String, drain: &crate::scenarios::Drain, sql: &SqlAlone) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n### The drain beside the same database work by SQL alone ({} messages, two inboxes)\n",
        sql.messages
    );
    let _ = writeln!(out, "| relay drain, end to end (msg/s) | SQL alone (msg/s) | relay / SQL alone |");
    let _ = writeln!(out, "|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {:.0} | {:.0} | {:.2} |",
        drain.end_to_end_per_sec,
        sql.per_sec,
        drain.end_to_end_per_sec / sql.per_sec
    );
    let _ = writeln!(
        out,
        "\nSQL alone: the poller's scan, row read and mark in batches of {}, and per inbox the \
         consumer's insert and notification in transactions of {}, concurrently.",
        sql.outbox_batch, sql.inbox_batch
    );
}
