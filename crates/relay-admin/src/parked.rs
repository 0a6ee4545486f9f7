//! `relay-admin parked`: outbox rows the broker refused for good, and the operator's decision.
//!
//! Retrying clears `parked_at` so the outbox-poller sends the row again; it goes out after rows
//! of its key that were sent while it was parked. The parking stays as `previous_parked_at` and
//! `previous_park_reason`. Discarding keeps the row parked for good, with when and why, so the
//! reconciler stops reporting it. Both are dry runs unless `--execute`, and write audit rows.
use serde::Serialize;
use tokio_postgres::{types::ToSql, Client, Row};
use uuid::Uuid;

use crate::{
    act,
    cli::{Act, Format, Parked, Selection},
    db,
    output::{count_line, id_list, Shown, Table},
    unmatched, AdminError, Changed, EXIT_OK,
};

#[derive(Debug, Serialize)]
struct ParkedRow {
    id: i64,
    message_id: Uuid,
    topic: String,
    key: String,
    parked_at: String,
    reason: String,
    discarded_at: Option<String>,
    discard_reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Listing {
    total: i64,
    rows: Vec<ParkedRow>,
}

/// Runs one `parked` command; returns the exit code.
pub(crate) async fn run(client: &mut Client, command: Parked, format: Format) -> Result<i32, AdminError> {
    match command {
        Parked::List { topic, limit, include_discarded } => {
            list(client, topic.as_deref(), limit, include_discarded, format).await
        }
        Parked::Retry { selection, topic, act } => {
            let rows = change(client, include_str!("sql/parked_retry.sql"), &selection, topic, &act).await?;
            Ok(report(
                "retried",
                "not parked, discarded, or of another topic",
                &selection,
                &act,
                rows,
                format,
            ))
        }
        Parked::Discard { selection, topic, act } => {
            let rows =
                change(client, include_str!("sql/parked_discard.sql"), &selection, topic, &act).await?;
            Ok(report(
                "discarded",
                "not parked, already discarded, or of another topic",
                &selection,
                &act,
                rows,
                format,
            ))
        }
    }
}

/// Retries or discards the selected rows with their audit rows, and wakes the poller, in one
/// transaction (rolled back in a dry run).
async fn change(
    client: &mut Client,
    sql: &str,
    selection: &Selection,
    topic: Option<String>,
    act: &Act,
) -> Result<Vec<Row>, AdminError> {
    let actor = act.actor()?;
    let params: [&(dyn ToSql + Sync); 5] =
        [&selection.all, &selection.ids, &topic, &actor.operator, &actor.reason];
    // Delivered at commit: a poller waiting for work scans at once.
    act::apply(client, act, sql, &params, Some(("relay_outbox", ""))).await
}

async fn list(
    client: &Client,
    topic: Option<&str>,
    limit: i64,
    include_discarded: bool,
    format: Format,
) -> Result<i32, AdminError> {
    let rows = client
        .query(include_str!("sql/parked_list.sql"), &[&topic, &include_discarded, &limit])
        .await
        .map_err(db)?;
    let total = rows.first().map_or(0, |r| r.get::<_, i64>("total"));
    let rows: Vec<ParkedRow> = rows
        .iter()
        .map(|r| ParkedRow {
            id: r.get("id"),
            message_id: r.get("message_id"),
            topic: r.get("topic"),
            key: r.get("key"),
            parked_at: r.get("parked_at"),
            reason: r.get("park_reason"),
            discarded_at: r.get("discarded_at"),
            discard_reason: r.get("discard_reason"),
        })
        .collect();
    let mut headers = vec!["ID", "MESSAGE_ID", "TOPIC", "KEY", "PARKED_AT", "REASON"];
    if include_discarded {
        headers.extend(["DISCARDED_AT", "DISCARD_REASON"]);
    }
    let table_rows = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.id.to_string(),
                r.message_id.to_string(),
                r.topic.clone(),
                r.key.clone(),
                r.parked_at.clone(),
                r.reason.clone(),
            ];
            if include_discarded {
                cells.push(r.discarded_at.clone().unwrap_or_else(|| "-".into()));
                cells.push(r.discard_reason.clone().unwrap_or_else(|| "-".into()));
            }
            cells
        })
        .collect();
    let what = if include_discarded { "parked rows (discarded included)" } else { "parked rows" };
    let lines = vec![count_line(what, rows.len(), total)];
    Shown { table: Some(Table { headers, rows: table_rows }), lines, json: Listing { total, rows } }
        .print(format);
    Ok(EXIT_OK)
}

/// Prints what a retry or discard changed (or would); exit 1 when a named id was not acted on.
fn report(
    verb: &'static str,
    why_not: &str,
    selection: &Selection,
    act: &Act,
    rows: Vec<Row>,
    format: Format,
) -> i32 {
    let changes = act::changes(&rows);
    let mut ids: Vec<i64> = changes.iter().filter_map(|c| c.target.parse().ok()).collect();
    ids.sort_unstable();
    let missed = unmatched(selection, &ids);
    let mut lines = vec![act::headline(act, verb, ids.len(), "parked row(s)", &id_list(&ids))];
    if !missed.is_empty() {
        lines.push(format!("not {verb} ({why_not}): {}", id_list(&missed)));
    }
    let code = Changed::exit_code(&missed);
    let json = Changed { verb, dry_run: !act.execute, count: ids.len(), ids, unmatched: missed, changes };
    Shown { table: Some(act::table(&json.changes)), lines, json }.print(format);
    code
}
