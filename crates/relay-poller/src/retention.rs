//! Outbox retention: while leading, deletes rows published more than `OUTBOX_RETENTION_HOURS`
//! ago, oldest first, in small batches, and records in `relay.outbox_purged` how far it got, so
//! the reconciler knows that range was purged on purpose.
//!
//! Only a contiguous prefix in id order is deleted (`purge_published.sql`): the first row that is
//! unpublished, parked or published too recently stops it. So a row still to be sent is never
//! deleted, and the marker is exact: below it, every row was deleted by retention. Failures are
//! logged and retried next interval; they never end leadership.
use std::time::Duration;

use relay_config::{DatabaseUrl, Retention};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{PollerConfig, PollerError};

/// Pause between two batches of one pass, so the rows' other writers get in between.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// Session settings of the retention connection. A batch that would wait on a row lock gives up
/// within half a second (before PostgreSQL's deadlock check, so it is the one that yields) and
/// is retried next interval; nothing a batch does should take long.
const SESSION: &str = "SET lock_timeout = '500ms'; SET statement_timeout = '30s'";

/// Starts retention for one leadership term when it is configured. It stops when the returned
/// guard is dropped (leadership ended, however `lead` returns) or at shutdown.
pub(crate) fn spawn(config: &PollerConfig, shutdown: &CancellationToken) -> Option<DropGuard> {
    let retention = config.retention?;
    let stop = shutdown.child_token();
    tokio::spawn(run(config.database_url.clone(), retention, stop.clone()));
    Some(stop.drop_guard())
}

/// What one pass deleted.
#[derive(Debug, Default)]
struct Pass {
    deleted: u64,
    batches: u32,
    below_id: Option<i64>,
}

async fn run(url: DatabaseUrl, retention: Retention, stop: CancellationToken) {
    tracing::info!(
        hours = retention.hours,
        batch = retention.batch,
        interval_ms = retention.interval.as_millis() as u64,
        "outbox retention on"
    );
    loop {
        let mut done = Pass::default();
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = pass(&url, &retention, &mut done) => result,
        };
        if done.deleted > 0 {
            tracing::info!(
                deleted = done.deleted,
                batches = done.batches,
                below_id = done.below_id,
                "outbox retention pass"
            );
        } else {
            tracing::debug!("outbox retention pass: nothing to delete");
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_in_ms = retention.interval.as_millis() as u64, "outbox retention failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retention.interval) => {}
        }
    }
}

/// Deletes batch after batch until one deletes nothing. Each batch commits on its own.
async fn pass(url: &DatabaseUrl, retention: &Retention, done: &mut Pass) -> Result<(), PollerError> {
    let client = relay_db::connect(url).await?;
    client.batch_execute(SESSION).await?;
    let statement = client.prepare(include_str!("purge_published.sql")).await?;
    loop {
        let row = client.query_one(&statement, &[&retention.hours, &retention.batch]).await?;
        let deleted: i64 = row.get(0);
        if deleted == 0 {
            return Ok(());
        }
        done.deleted += deleted as u64;
        done.batches += 1;
        done.below_id = row.get(1);
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}
