//! Inbox retention: deletes dedup entries (inbox rows) received more than
//! `INBOX_RETENTION_HOURS` ago, in small batches, and records per (inbox, source) in
//! `relay.inbox_purged` how far it got, so the reconciler knows that range was purged on purpose.
//!
//! Per source, only a contiguous prefix in sequence order is deleted (`purge_received.sql`): the
//! first row received too recently stops it, so the marker is exact. A message delivered again
//! after its entry was deleted is stored again; that is why the retention must outlast every
//! redelivery window (see the README). Dead letters are never deleted here, nor, in an inbox
//! with processing enabled (`relay.processing`), a row not processed yet: it ends the run.
//!
//! Several consumers of one inbox may run; a transaction-scoped advisory lock per inbox lets only
//! one of them delete at a time, the others skip the pass. Failures are logged and retried next
//! interval; they never stop consuming.
use std::time::Duration;

use relay_config::{DatabaseUrl, Retention};
use relay_db::DbError;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::ConsumerConfig;

/// The retention lock's class: apart from `relay.enqueue`'s per-key locks (1380273217), the
/// poller's leader lock (1380273218) and the migration lock (1380273219). The object is
/// `hashtext(inbox)`.
const LOCK_CLASS: i32 = 1_380_273_220;

/// Pause between two batches of one pass, so the consumer's inserts get in between.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// Session settings of the retention connection: nothing a batch does should take long, and
/// a batch that cannot finish is retried next interval.
const SESSION: &str = "SET lock_timeout = '500ms'; SET statement_timeout = '30s'";

/// Starts retention when it is configured. It stops at shutdown or when the returned guard is
/// dropped.
pub(crate) fn spawn(config: &ConsumerConfig, shutdown: &CancellationToken) -> Option<DropGuard> {
    let retention = config.retention?;
    let stop = shutdown.child_token();
    tokio::spawn(run(config.database_url.clone(), config.inbox.clone(), retention, stop.clone()));
    Some(stop.drop_guard())
}

/// What one pass deleted from one source.
#[derive(Debug)]
struct SourcePass {
    source: String,
    deleted: u64,
    batches: u32,
    below_sequence: Option<i64>,
}

async fn run(url: DatabaseUrl, inbox: String, retention: Retention, stop: CancellationToken) {
    tracing::info!(
        inbox = %inbox,
        hours = retention.hours,
        batch = retention.batch,
        interval_ms = retention.interval.as_millis() as u64,
        "inbox retention on"
    );
    loop {
        let mut done = Vec::new();
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = pass(&url, &inbox, &retention, &mut done) => result,
        };
        for d in done.iter().filter(|d| d.deleted > 0) {
            tracing::info!(
                inbox = %inbox,
                source = %d.source,
                deleted = d.deleted,
                batches = d.batches,
                below_sequence = d.below_sequence,
                "inbox retention pass"
            );
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_in_ms = retention.interval.as_millis() as u64, "inbox retention failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retention.interval) => {}
        }
    }
}

/// Purges every source of the inbox, batch after batch until one deletes nothing. Each batch is
/// its own transaction under the inbox's retention lock.
async fn pass(
    url: &DatabaseUrl,
    inbox: &str,
    retention: &Retention,
    done: &mut Vec<SourcePass>,
) -> Result<(), DbError> {
    let mut client = relay_db::connect(url).await?;
    client.batch_execute(SESSION).await?;
    let sources: Vec<String> =
        client.query(include_str!("inbox_sources.sql"), &[&inbox]).await?.iter().map(|r| r.get(0)).collect();
    let statement = client.prepare(include_str!("purge_received.sql")).await?;
    for source in sources {
        done.push(SourcePass { source, deleted: 0, batches: 0, below_sequence: None });
        let this = done.last_mut().expect("just pushed");
        loop {
            let tx = client.transaction().await?;
            let held: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", &[&LOCK_CLASS, &inbox])
                .await?
                .get(0);
            if !held {
                tracing::debug!(inbox, "another consumer of this inbox is purging it; skipping this pass");
                return Ok(());
            }
            let row =
                tx.query_one(&statement, &[&inbox, &this.source, &retention.hours, &retention.batch]).await?;
            tx.commit().await?;
            let deleted: i64 = row.get(0);
            if deleted == 0 {
                break;
            }
            this.deleted += deleted as u64;
            this.batches += 1;
            this.below_sequence = row.get(1);
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    Ok(())
}
