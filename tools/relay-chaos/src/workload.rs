//! The application under test: a service that writes its business row and its outbox messages in
//! one transaction, over many keys, while the faults happen.
//!
//! It connects to PostgreSQL directly (not through the proxy: the faults are Relay's, not the
//! application's) and survives restarts: every failed transaction is retried on a new
//! connection. A COMMIT whose answer was lost may or may not have committed; the business row
//! (`chaos_app.batch`, one per chunk) tells which, so no message is enqueued twice and the outbox
//! ends with exactly the requested messages. Writers take chunks only up to the limit the fault
//! injector allows, so messages keep flowing while faults happen instead of all up front.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::ChaosError;

/// Messages enqueued per transaction.
pub const DEFAULT_PER_TX: u64 = 10;
/// Give up on one chunk after this long without a successful attempt.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(180);

/// What to write.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The origin database, directly.
    pub url: String,
    pub topic: String,
    pub messages: u64,
    pub keys: u64,
    pub per_tx: u64,
    /// Concurrent transactions.
    pub writers: usize,
}

/// Counts of a finished workload.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct WorkloadStats {
    pub messages: u64,
    pub transactions: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// COMMITs whose answer was lost but that had committed.
    pub uncertain_commits_committed: u64,
    pub seconds: f64,
}

#[derive(Debug, Default)]
struct Counters {
    next_chunk: AtomicU64,
    committed: Arc<AtomicU64>,
    transactions: AtomicU64,
    retries: AtomicU64,
    uncertain: AtomicU64,
}

/// The key of message `i`: zero-padded, so sorting keys as text sorts them as numbers.
pub fn key_for(i: u64, keys: u64) -> String {
    format!("key-{:05}", i % keys.max(1))
}

/// The payload of message `i`: 1 to 300 bytes, including NUL and high bytes.
pub fn payload_for(i: u64) -> Vec<u8> {
    let len = 1 + (i * 7919) % 300;
    (0..len).map(|j| ((i * 31 + j * 17) % 256) as u8).collect()
}

impl Workload {
    /// Writes every message, never past `allowed`; `committed` counts messages as they commit.
    pub async fn run(
        self,
        allowed: watch::Receiver<u64>,
        committed: Arc<AtomicU64>,
    ) -> Result<WorkloadStats, ChaosError> {
        let started = Instant::now();
        setup_retrying(&self.url).await?;
        let counters = Arc::new(Counters { committed, ..Counters::default() });
        let this = Arc::new(self);
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..this.writers.max(1) {
            let (this, counters, allowed) = (this.clone(), counters.clone(), allowed.clone());
            writers.spawn(async move { this.writer(&counters, allowed).await });
        }
        while let Some(result) = writers.join_next().await {
            result.map_err(|e| ChaosError::Setup(format!("workload writer failed: {e}")))??;
        }
        Ok(WorkloadStats {
            messages: counters.committed.load(Ordering::Relaxed),
            transactions: counters.transactions.load(Ordering::Relaxed),
            retries: counters.retries.load(Ordering::Relaxed),
            uncertain_commits_committed: counters.uncertain.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn writer(&self, counters: &Counters, mut allowed: watch::Receiver<u64>) -> Result<(), ChaosError> {
        let per_tx = self.per_tx.max(1);
        let mut client: Option<tokio_postgres::Client> = None;
        loop {
            let chunk = counters.next_chunk.fetch_add(1, Ordering::Relaxed);
            let first = chunk * per_tx;
            if first >= self.messages {
                return Ok(());
            }
            let end = (first + per_tx).min(self.messages);
            // The injector raises the limit as faults progress; past the end it is `messages`.
            if allowed.wait_for(|limit| *limit >= end).await.is_err() {
                return Err(ChaosError::Setup("the fault injector stopped pacing the workload".into()));
            }
            self.write_chunk(&mut client, chunk, first..end, counters).await?;
            counters.committed.fetch_add(end - first, Ordering::Relaxed);
            counters.transactions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Commits chunk `chunk` (messages `range`) exactly once, retrying across failures.
    async fn write_chunk(
        &self,
        client: &mut Option<tokio_postgres::Client>,
        chunk: u64,
        range: std::ops::Range<u64>,
        counters: &Counters,
    ) -> Result<(), ChaosError> {
        let mut indices: Vec<u64> = range.collect();
        // One consistent lock order across transactions: relay.enqueue locks each key.
        indices.sort_by_key(|i| key_for(*i, self.keys));
        let started = Instant::now();
        let mut uncertain = false;
        loop {
            let result = async {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    *client = Some(crate::connect(&self.url).await?);
                }
                let c = client.as_mut().expect("connected above");
                if uncertain && already_committed(c, chunk).await? {
                    return Ok(true);
                }
                self.attempt(c, chunk, &indices).await.map(|()| false)
            }
            .await;
            match result {
                Ok(was_uncertain) => {
                    if was_uncertain {
                        counters.uncertain.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err(e) => {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    // Any failure may have hit the COMMIT: look before writing again.
                    uncertain = true;
                    *client = None;
                    if started.elapsed() > CHUNK_TIMEOUT {
                        tracing::error!(chunk, error = %e, "the workload could not commit a chunk");
                        return Err(e);
                    }
                    tracing::debug!(chunk, error = %e, "workload transaction failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        client: &mut tokio_postgres::Client,
        chunk: u64,
        indices: &[u64],
    ) -> Result<(), ChaosError> {
        let tx = client.transaction().await?;
        for &i in indices {
            let key = key_for(i, self.keys);
            let payload = payload_for(i);
            let mut message = relay_outbox::Message::new(&self.topic, &key, &payload);
            message.headers.insert("n".into(), i.to_string());
            message.msg_type = "chaos.message";
            relay_outbox::enqueue(&tx, &message)
                .await
                .map_err(|relay_outbox::EnqueueError::Database(e)| e)?;
        }
        tx.execute(include_str!("sql/batch_insert.sql"), &[&(chunk as i64), &(indices.len() as i32)]).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn already_committed(client: &tokio_postgres::Client, chunk: u64) -> Result<bool, ChaosError> {
    let row = client.query_one(include_str!("sql/batch_exists.sql"), &[&(chunk as i64)]).await?;
    Ok(row.get(0))
}

/// Waits for `relay.outbox` (the outbox-poller creates it at start-up) and creates the business
/// table, retrying across database restarts for up to two minutes.
async fn setup_retrying(url: &str) -> Result<(), ChaosError> {
    let started = Instant::now();
    loop {
        let attempt = async {
            let client = crate::connect(url).await?;
            let row = client.query_one(include_str!("sql/table_exists.sql"), &[&"relay.outbox"]).await?;
            if !row.get::<_, bool>(0) {
                return Ok(false);
            }
            client.batch_execute(include_str!("sql/app_schema.sql")).await?;
            Ok::<_, ChaosError>(true)
        };
        match attempt.await {
            Ok(true) => return Ok(()),
            Ok(false) | Err(_) if started.elapsed() < Duration::from_secs(120) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(false) => {
                return Err(ChaosError::Timeout {
                    what: "relay.outbox (is a poller running?)".into(),
                    secs: 120,
                })
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_numbers_and_payloads_vary_with_nul_and_high_bytes() {
        assert!(key_for(9, 1000) < key_for(10, 1000));
        assert_eq!(key_for(1003, 1000), key_for(3, 1000));
        let lengths: std::collections::BTreeSet<usize> = (0..1000).map(|i| payload_for(i).len()).collect();
        assert!(lengths.len() > 100 && lengths.iter().all(|l| (1..=300).contains(l)));
        assert!(payload_for(7).contains(&0) || payload_for(8).contains(&0));
        assert!((0..10).any(|i| payload_for(i).iter().any(|b| *b > 200)));
    }
}
