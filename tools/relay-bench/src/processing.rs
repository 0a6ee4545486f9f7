//! The receiving side's processing: `relay-processing` workers (claim in key order, savepoint,
//! empty handler, done, commit) beside a bare `SELECT ... FOR UPDATE SKIP LOCKED` + `UPDATE`
//! loop on the same table and index, in the same run. The ratio is what key order and the
//! protocol cost over the least a worker can do per message.
use std::time::{Duration, SystemTime};

use relay_processing::{Handler, HandlerError, Message, ProcessingConfig};
use serde::Serialize;
use tokio_postgres::{Client, Transaction};
use tokio_util::sync::CancellationToken;

use crate::stack::{connect, wait_for_count, Stack};

/// One worker count's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessingRun {
    pub workers: usize,
    /// relay-processing, one message per transaction, empty handler.
    pub relay_per_sec: f64,
    /// The bare loop, one message per transaction, no key order.
    pub bare_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Processing {
    pub messages: i64,
    pub keys: i64,
    pub runs: Vec<ProcessingRun>,
}

/// The business effect of nothing.
struct Empty;

impl Handler for Empty {
    async fn handle(&self, _message: &Message, _tx: &Transaction<'_>) -> Result<(), HandlerError> {
        Ok(())
    }
}

const DB: &str = "relay_bench_processing";

/// Runs both loops with each of `workers` concurrent workers over `n` messages of 1,000 keys.
pub async fn measure(stack: &Stack, n: i64, workers: &[usize]) -> anyhow::Result<Processing> {
    const KEYS: i64 = 1_000;
    let client = stack.database(DB, relay_db::Schema::Inbox).await?;
    let mut runs = Vec::new();
    for &w in workers {
        let (relay_inbox, bare_inbox) = (format!("relay-{w}"), format!("bare-{w}"));
        for inbox in [&relay_inbox, &bare_inbox] {
            client.execute(include_str!("processing_fill.sql"), &[inbox, &n, &KEYS]).await?;
        }
        client.batch_execute("VACUUM ANALYZE relay.inbox").await?;
        let relay_per_sec = relay(stack, &client, &relay_inbox, n, w).await?;
        let bare_per_sec = bare(stack, &client, &bare_inbox, n, w).await?;
        eprintln!("  {w} workers: relay {relay_per_sec:.0}/s, bare loop {bare_per_sec:.0}/s");
        runs.push(ProcessingRun { workers: w, relay_per_sec, bare_per_sec });
    }
    drop(client);
    stack.drop_databases(&[DB]).await?;
    Ok(Processing { messages: n, keys: KEYS, runs })
}

async fn now(client: &Client) -> anyhow::Result<SystemTime> {
    Ok(client.query_one("SELECT clock_timestamp()", &[]).await?.get(0))
}

async fn rate(client: &Client, inbox: &str, started: SystemTime) -> anyhow::Result<f64> {
    Ok(client.query_one(include_str!("processing_rate.sql"), &[&inbox, &started]).await?.get(0))
}

fn processed_sql(inbox: &str) -> String {
    format!("SELECT count(*) FROM relay.inbox WHERE inbox = '{inbox}' AND processed_at IS NOT NULL")
}

async fn relay(stack: &Stack, client: &Client, inbox: &str, n: i64, workers: usize) -> anyhow::Result<f64> {
    let env = relay_config::MapEnv::new([
        ("DATABASE_URL", stack.url(DB)),
        ("PROCESSING_INBOX", inbox.to_string()),
        ("PROCESSING_WORKERS", workers.to_string()),
        ("RELAY_MIGRATE", "false".to_string()),
    ]);
    let config = ProcessingConfig::from_env(&env)?;
    let shutdown = CancellationToken::new();
    let started = now(client).await?;
    let running = tokio::spawn(relay_processing::run(config, Empty, shutdown.clone()));
    wait_for_count(client, &processed_sql(inbox), n, Duration::from_secs(600)).await?;
    shutdown.cancel();
    running.await??;
    rate(client, inbox, started).await
}

async fn bare(stack: &Stack, client: &Client, inbox: &str, n: i64, workers: usize) -> anyhow::Result<f64> {
    let started = now(client).await?;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (url, inbox) = (stack.url(DB), inbox.to_string());
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&url).await?;
            let claim = client.prepare(include_str!("processing_bare_claim.sql")).await?;
            let mark = client.prepare(include_str!("processing_bare_mark.sql")).await?;
            loop {
                let tx = client.transaction().await?;
                let Some(row) = tx.query_opt(&claim, &[&inbox]).await? else { break };
                let id: uuid::Uuid = row.get(0);
                tx.execute(&mark, &[&inbox, &id]).await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    wait_for_count(client, &processed_sql(inbox), n, Duration::from_secs(60)).await?;
    rate(client, inbox, started).await
}
