//! `relay-admin processing`: inbox messages the receiving service could not act on, and the
//! operator's decision.
//!
//! A worker that fails on a message records it with `relay.failed`; after `max_attempts` the
//! message is parked and the later messages of its key wait. Retrying makes it due again at
//! once (its failed attempts and last error stay, so a retried message that fails again is
//! parked again at once). Skipping marks it processed without acting on it (`skipped_at`,
//! `skip_reason`), so the key moves on. Both wake the workers (`NOTIFY relay_inbox`). Nothing
//! is deleted: a retry keeps the parking as `previous_parked_at`/`previous_park_reason`. Both are
//! dry runs unless `--execute`, and each change writes an audit row.
use serde::Serialize;
use tokio_postgres::{types::ToSql, Client};
use uuid::Uuid;

use crate::{
    act,
    cli::{Act, Format, MessageSelection, Processing},
    db,
    output::{count_line, Shown, Table},
    AdminError, EXIT_INCOMPLETE, EXIT_OK,
};

#[derive(Debug, Serialize)]
struct FailingRow {
    message_id: Uuid,
    source: String,
    topic: String,
    key: String,
    sequence: i64,
    /// Failed attempts recorded by `relay.failed` (kept across retries).
    attempts: i32,
    /// `parked` (its key waits for a decision) or `failing` (retried after its backoff).
    state: &'static str,
    received_at: String,
    parked_at: Option<String>,
    park_reason: Option<String>,
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    /// Later unprocessed messages of the same key, held up behind this one.
    waiting: i64,
}

#[derive(Debug, Serialize)]
struct Listing {
    inbox: String,
    total: i64,
    rows: Vec<FailingRow>,
}

/// What a retry or skip changed.
#[derive(Debug, Serialize)]
struct Changed {
    action: &'static str,
    /// True when nothing was changed (no `--execute`).
    dry_run: bool,
    count: usize,
    message_ids: Vec<Uuid>,
    /// Ids named with --message-id that were not acted on.
    unmatched: Vec<Uuid>,
    /// Each message's changed columns, before and after (as in its audit row).
    changes: Vec<act::Change>,
}

/// Runs one `processing` command; returns the exit code.
pub(crate) async fn run(client: &mut Client, command: Processing, format: Format) -> Result<i32, AdminError> {
    let inbox = match &command {
        Processing::List { inbox, .. } | Processing::Retry { inbox, .. } | Processing::Skip { inbox, .. } => {
            inbox.clone()
        }
    };
    let enabled: bool =
        client.query_one(include_str!("sql/processing_enabled.sql"), &[&inbox]).await.map_err(db)?.get(0);
    if !enabled {
        return Err(AdminError::ProcessingOff(inbox));
    }
    match command {
        Processing::List { inbox, limit } => list(client, &inbox, limit, format).await,
        Processing::Retry { inbox, selection, act } => {
            let sql = include_str!("sql/processing_retry.sql");
            let changes = decide(client, sql, &inbox, &selection, &act).await?;
            Ok(report("retried", &inbox, &selection, &act, changes, format))
        }
        Processing::Skip { inbox, selection, act } => {
            let sql = include_str!("sql/processing_skip.sql");
            let changes = decide(client, sql, &inbox, &selection, &act).await?;
            Ok(report("skipped", &inbox, &selection, &act, changes, format))
        }
    }
}

async fn list(client: &Client, inbox: &str, limit: i64, format: Format) -> Result<i32, AdminError> {
    let rows = client.query(include_str!("sql/processing_list.sql"), &[&inbox, &limit]).await.map_err(db)?;
    let total = rows.first().map_or(0, |r| r.get::<_, i64>("total"));
    let rows: Vec<FailingRow> = rows
        .iter()
        .map(|r| {
            let parked_at: Option<String> = r.get("parked_at");
            FailingRow {
                message_id: r.get("message_id"),
                source: r.get("source"),
                topic: r.get("topic"),
                key: r.get("key"),
                sequence: r.get("sequence"),
                attempts: r.get("attempts"),
                state: if parked_at.is_some() { "parked" } else { "failing" },
                received_at: r.get("received_at"),
                parked_at,
                park_reason: r.get("park_reason"),
                next_attempt_at: r.get("next_attempt_at"),
                last_error: r.get("last_error"),
                waiting: r.get("waiting"),
            }
        })
        .collect();
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let headers =
        vec!["MESSAGE_ID", "TOPIC", "KEY", "STATE", "ATTEMPTS", "WAITING", "SINCE", "NEXT_ATTEMPT", "ERROR"];
    let table_rows = rows
        .iter()
        .map(|r| {
            vec![
                r.message_id.to_string(),
                r.topic.clone(),
                r.key.clone(),
                r.state.to_string(),
                r.attempts.to_string(),
                r.waiting.to_string(),
                r.parked_at.clone().unwrap_or_else(|| r.received_at.clone()),
                dash(&r.next_attempt_at),
                r.park_reason.clone().or_else(|| r.last_error.clone()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let lines =
        vec![format!("{} in inbox {inbox}", count_line("parked or failing messages", rows.len(), total))];
    let json = Listing { inbox: inbox.to_string(), total, rows };
    Shown { table: Some(Table { headers, rows: table_rows }), lines, json }.print(format);
    Ok(EXIT_OK)
}

/// Runs a retry or skip statement with its audit rows and wakes the inbox's workers, in one
/// transaction (rolled back in a dry run).
async fn decide(
    client: &mut Client,
    sql: &str,
    inbox: &str,
    selection: &MessageSelection,
    act: &Act,
) -> Result<Vec<act::Change>, AdminError> {
    let actor = act.actor()?;
    let params: [&(dyn ToSql + Sync); 5] =
        [&inbox, &selection.all, &selection.message_ids, &actor.operator, &actor.reason];
    // Delivered at commit: waiting workers claim the key's next message at once.
    let rows = act::apply(client, act, sql, &params, Some(("relay_inbox", inbox))).await?;
    Ok(act::changes(&rows))
}

/// Prints what a retry or skip changed (or would); exit 1 when a named message was not acted on.
fn report(
    action: &'static str,
    inbox: &str,
    selection: &MessageSelection,
    act: &Act,
    changes: Vec<act::Change>,
    format: Format,
) -> i32 {
    let mut ids: Vec<Uuid> = changes.iter().filter_map(|c| c.target.parse().ok()).collect();
    ids.sort_unstable();
    let mut missed: Vec<Uuid> = if selection.all {
        Vec::new()
    } else {
        selection.message_ids.iter().copied().filter(|id| ids.binary_search(id).is_err()).collect()
    };
    missed.sort_unstable();
    missed.dedup();
    let list = |ids: &[Uuid]| {
        if ids.is_empty() {
            "-".to_string()
        } else {
            ids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    let what = format!("message(s) of inbox {inbox}");
    let mut lines = vec![act::headline(act, action, ids.len(), &what, &list(&ids))];
    if !missed.is_empty() {
        lines.push(format!(
            "not {action} (not in inbox {inbox}, already processed, or neither parked nor failed): {}",
            list(&missed)
        ));
    }
    let code = if missed.is_empty() { EXIT_OK } else { EXIT_INCOMPLETE };
    let table = act::table(&changes);
    let json = Changed {
        action,
        dry_run: !act.execute,
        count: ids.len(),
        message_ids: ids,
        unmatched: missed,
        changes,
    };
    Shown { table: Some(table), lines, json }.print(format);
    code
}
