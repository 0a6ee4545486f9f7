//! `relay-admin dead-letters`: records an inbox-consumer could not store, and their resolution.
//!
//! A re-drive runs each raw record through the consumer's own checks and insert
//! (`relay_inbox::redrive_dead_letters`), useful once a payload limit was raised or a database
//! constraint fixed. Signatures are checked with `INBOX_VERIFY_KEYS` from the environment, as the
//! consumer checks them; without keys, signature failures are not re-driven. Discarding resolves
//! a dead letter without storing it. Nothing is deleted. Both are dry runs unless `--execute`
//! (a dry re-drive runs each dead letter through the checks and the insert, then rolls back),
//! and each change writes an audit row.
use relay_config::{DatabaseUrl, ProcessEnv, Reader};
use serde::Serialize;
use tokio_postgres::{types::ToSql, Client};

use crate::{
    act,
    cli::{Act, DeadLetters, Format, Selection},
    db,
    output::{bytes_text, count_line, id_list, Shown, Table},
    unmatched, AdminError, Changed, EXIT_INCOMPLETE, EXIT_OK,
};

#[derive(Debug, Serialize)]
struct DeadLetterRow {
    id: i64,
    kafka_topic: String,
    kafka_partition: i32,
    kafka_offset: i64,
    /// The record key as text, or `0x…` hex when it is not printable.
    key: Option<String>,
    value_bytes: Option<i32>,
    created_at: String,
    error: String,
    resolved_at: Option<String>,
    resolution: Option<String>,
    resolution_note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Listing {
    total: i64,
    rows: Vec<DeadLetterRow>,
}

#[derive(Debug, Serialize)]
struct StillFailing {
    id: i64,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Redriven {
    /// True when nothing was changed (no `--execute`): the outcomes are what a re-drive would do.
    dry_run: bool,
    redriven: Vec<i64>,
    already_present: Vec<i64>,
    still_failing: Vec<StillFailing>,
    unmatched: Vec<i64>,
}

/// Runs one `dead-letters` command; returns the exit code.
pub(crate) async fn run(
    client: &mut Client,
    url: &DatabaseUrl,
    command: DeadLetters,
    format: Format,
) -> Result<i32, AdminError> {
    match command {
        DeadLetters::List { inbox, limit, include_resolved } => {
            list(client, &inbox, limit, include_resolved, format).await
        }
        DeadLetters::Redrive { inbox, selection, max_payload_bytes, act } => {
            redrive(url, &inbox, &selection, max_payload_bytes, &act, format).await
        }
        DeadLetters::Discard { inbox, selection, act } => {
            let actor = act.actor()?;
            let params: [&(dyn ToSql + Sync); 5] =
                [&inbox, &selection.all, &selection.ids, &actor.operator, &actor.reason];
            let sql = include_str!("sql/dead_letters_discard.sql");
            let rows = act::apply(client, &act, sql, &params, None).await?;
            let changes = act::changes(&rows);
            let mut ids: Vec<i64> = changes.iter().filter_map(|c| c.target.parse().ok()).collect();
            ids.sort_unstable();
            let missed = unmatched(&selection, &ids);
            let mut lines =
                vec![act::headline(&act, "discarded", ids.len(), "dead letter(s)", &id_list(&ids))];
            if !missed.is_empty() {
                lines.push(format!(
                    "not discarded (no unresolved dead letter of inbox {inbox}): {}",
                    id_list(&missed)
                ));
            }
            let code = Changed::exit_code(&missed);
            let json = Changed {
                verb: "discarded",
                dry_run: !act.execute,
                count: ids.len(),
                ids,
                unmatched: missed,
                changes,
            };
            Shown { table: Some(act::table(&json.changes)), lines, json }.print(format);
            Ok(code)
        }
    }
}

async fn list(
    client: &Client,
    inbox: &str,
    limit: i64,
    include_resolved: bool,
    format: Format,
) -> Result<i32, AdminError> {
    let rows = client
        .query(include_str!("sql/dead_letters_list.sql"), &[&inbox, &include_resolved, &limit])
        .await
        .map_err(db)?;
    let total = rows.first().map_or(0, |r| r.get::<_, i64>("total"));
    let rows: Vec<DeadLetterRow> = rows
        .iter()
        .map(|r| DeadLetterRow {
            id: r.get("id"),
            kafka_topic: r.get("kafka_topic"),
            kafka_partition: r.get("kafka_partition"),
            kafka_offset: r.get("kafka_offset"),
            key: bytes_text(r.get::<_, Option<&[u8]>>("raw_key")),
            value_bytes: r.get("value_bytes"),
            created_at: r.get("created_at"),
            error: r.get("error"),
            resolved_at: r.get("resolved_at"),
            resolution: r.get("resolution"),
            resolution_note: r.get("resolution_note"),
        })
        .collect();
    let mut headers = vec!["ID", "TOPIC", "PARTITION", "OFFSET", "KEY", "BYTES", "CREATED_AT", "ERROR"];
    if include_resolved {
        headers.extend(["RESOLVED_AT", "RESOLUTION", "NOTE"]);
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let table_rows = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.id.to_string(),
                r.kafka_topic.clone(),
                r.kafka_partition.to_string(),
                r.kafka_offset.to_string(),
                dash(&r.key),
                r.value_bytes.map_or_else(|| "-".into(), |n| n.to_string()),
                r.created_at.clone(),
                r.error.clone(),
            ];
            if include_resolved {
                cells.extend([dash(&r.resolved_at), dash(&r.resolution), dash(&r.resolution_note)]);
            }
            cells
        })
        .collect();
    let what = if include_resolved { "dead letters (resolved included)" } else { "unresolved dead letters" };
    let lines = vec![format!("{} in inbox {inbox}", count_line(what, rows.len(), total))];
    Shown { table: Some(Table { headers, rows: table_rows }), lines, json: Listing { total, rows } }
        .print(format);
    Ok(EXIT_OK)
}

/// Says how signatures were checked, so an operator sees why signature failures stay.
fn signature_line(verification: &relay_inbox::Verification) -> String {
    if !verification.is_on() {
        return "signatures: not checked (INBOX_VERIFY_KEYS not set); signature failures are not re-driven"
            .into();
    }
    let unsigned = if verification.requires_signature() { "refused" } else { "accepted" };
    format!(
        "signatures: checked with key ids {}; unsigned records {unsigned}",
        verification.key_ids().join(", ")
    )
}

async fn redrive(
    url: &DatabaseUrl,
    inbox: &str,
    selection: &Selection,
    max_payload_bytes: u64,
    act: &Act,
    format: Format,
) -> Result<i32, AdminError> {
    let actor = act.actor()?;
    let chosen = if selection.all {
        relay_inbox::Selection::All
    } else {
        relay_inbox::Selection::Ids(selection.ids.clone())
    };
    let limit = usize::try_from(max_payload_bytes).unwrap_or(usize::MAX);
    // The consumer's own signature settings, from this process's environment.
    let mut reader = Reader::new(&ProcessEnv);
    let verification = relay_inbox::Verification::read(&mut reader);
    reader.finish()?;
    let report =
        relay_inbox::redrive_dead_letters(url, inbox, &chosen, limit, &verification, &actor, act.execute)
            .await?;
    let mut acted: Vec<i64> = report
        .redriven
        .iter()
        .chain(&report.already_present)
        .copied()
        .chain(report.still_failing.iter().map(|(id, _)| *id))
        .collect();
    acted.sort_unstable();
    let missed = unmatched(selection, &acted);
    let mut lines = vec![
        format!("redriven: {} ({})", report.redriven.len(), id_list(&report.redriven)),
        format!("already present: {} ({})", report.already_present.len(), id_list(&report.already_present)),
        format!("still failing: {}", report.still_failing.len()),
    ];
    lines.insert(0, signature_line(&verification));
    if !act.execute {
        lines.insert(
            0,
            "dry run: each dead letter was re-driven and rolled back; nothing changed (add --execute, \
             --operator and --reason to act)"
                .into(),
        );
    }
    for (id, reason) in &report.still_failing {
        lines.push(format!("  {id}: {reason}"));
    }
    if !missed.is_empty() {
        lines.push(format!("not found (no unresolved dead letter of inbox {inbox}): {}", id_list(&missed)));
    }
    let code = if report.still_failing.is_empty() && missed.is_empty() { EXIT_OK } else { EXIT_INCOMPLETE };
    let json = Redriven {
        dry_run: !act.execute,
        redriven: report.redriven,
        already_present: report.already_present,
        still_failing: report
            .still_failing
            .into_iter()
            .map(|(id, reason)| StillFailing { id, reason })
            .collect(),
        unmatched: missed,
    };
    Shown { table: None, lines, json }.print(format);
    Ok(code)
}
