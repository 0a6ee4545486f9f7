//! Writes a batch in one transaction: new messages, then dead letters.
//!
//! A database error that a retry cannot fix (bad data, a constraint other than the dedup key, a
//! size limit) must not block the partition: the batch is then written row by row under
//! savepoints and each refused row becomes a dead letter with the database's reason.
//!
//! A record whose message id is already stored is a duplicate only when its content is the
//! stored content ([`crate::content`]); otherwise it is a conflict, dead-lettered with both
//! content digests. The stored message stays as it is.
use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use relay_kafka::raw::RawMessage;

use crate::{
    content,
    records::{DeadLetter, InboxRow, Position, RawRecord, Record},
};

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub inserted: u64,
    /// Already stored with the same content: dropped.
    pub duplicates: u64,
    /// Dead letters, conflicts included.
    pub dead_lettered: u64,
    /// Already stored with other content: dead-lettered.
    pub conflicts: u64,
}

/// What became of one row given to [`insert_rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    New,
    /// The id was stored already, with this content.
    Duplicate,
    /// The id was stored already with other content; the dead-letter reason.
    Conflict(String),
}

/// True for SQLSTATE classes that mean "this data will never go in": data exceptions (22),
/// integrity violations (23) and program limits (54).
pub(crate) fn is_poison(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| matches!(&code.code()[..2], "22" | "23" | "54"))
}

/// Inserts `records` in `tx`. On a poison error, the caller rolls back and uses [`write_each`].
pub(crate) async fn write_all(
    tx: &Transaction<'_>,
    inbox: &str,
    records: &[(RawMessage, Record)],
) -> Result<Written, tokio_postgres::Error> {
    let (messages, rows): (Vec<&RawMessage>, Vec<&InboxRow>) = records
        .iter()
        .filter_map(|(message, r)| match r {
            Record::Store(row) => Some((message, row.as_ref())),
            Record::Dead(_) => None,
        })
        .unzip();
    let mut written = Written::default();
    let mut conflicts = Vec::new();
    for (message, stored) in messages.into_iter().zip(insert_rows(tx, inbox, &rows).await?) {
        match stored {
            Stored::New => written.inserted += 1,
            Stored::Duplicate => written.duplicates += 1,
            Stored::Conflict(reason) => {
                conflicts.push(DeadLetter::from_refused(&RawRecord::from(message), reason))
            }
        }
    }
    let dead: Vec<&DeadLetter> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Dead(d) => Some(d),
            Record::Store(_) => None,
        })
        .chain(&conflicts)
        .collect();
    insert_dead(tx, inbox, &dead).await?;
    written.conflicts = conflicts.len() as u64;
    written.dead_lettered = dead.len() as u64;
    Ok(written)
}

/// Row-by-row fallback: each row under a savepoint; a refused row is dead-lettered instead.
pub(crate) async fn write_each(
    tx: &mut Transaction<'_>,
    inbox: &str,
    records: &[(RawMessage, Record)],
) -> Result<Written, tokio_postgres::Error> {
    let mut written = Written::default();
    for (message, record) in records {
        let dead = match record {
            Record::Dead(dead) => dead.clone(),
            Record::Store(row) => {
                let savepoint = tx.savepoint("relay_row").await?;
                match insert_rows(&savepoint, inbox, &[row.as_ref()]).await.map(|mut s| s.pop()) {
                    Ok(Some(Stored::Conflict(reason))) => {
                        savepoint.commit().await?;
                        written.conflicts += 1;
                        DeadLetter::from_refused(&RawRecord::from(message), reason)
                    }
                    Ok(stored) => {
                        savepoint.commit().await?;
                        match stored {
                            Some(Stored::New) => written.inserted += 1,
                            _ => written.duplicates += 1,
                        }
                        continue;
                    }
                    Err(e) if is_poison(&e) => {
                        savepoint.rollback().await?;
                        DeadLetter::from_refused(&RawRecord::from(message), refused_reason(&e))
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        insert_dead(tx, inbox, &[&dead]).await?;
        written.dead_lettered += 1;
    }
    Ok(written)
}

/// The dead-letter reason for a row the database refused: the server's message and SQLSTATE.
/// Its DETAIL is left out: it can quote the whole row, payload included.
pub(crate) fn refused_reason(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("database refused the message: {} (SQLSTATE {})", db.message(), db.code().code()),
        None => format!("database refused the message: {error}"),
    }
}

/// Wakes the inbox's processing workers (`LISTEN relay_inbox`, payload: the inbox name) after a
/// batch that stored a new message has committed. Sent in a transaction of its own that does not
/// wait for its WAL flush, not in the batch's: PostgreSQL serialises the commits of every
/// notifying transaction of the server behind one lock, so a notification in the batch's
/// transaction made every consumer of the server (and any other notifier) wait for each
/// other's flush. The wake-up is a hint (workers also claim on their own interval), so a failure
/// is logged and the batch, already durable, stands.
pub(crate) async fn notify_if_inserted(client: &deadpool_postgres::Object, inbox: &str, written: &Written) {
    if written.inserted == 0 {
        return;
    }
    // One round trip: the statement is its own transaction, and turns off the flush wait itself.
    let sent = async {
        let statement = client.prepare_cached(include_str!("notify_inbox.sql")).await?;
        client.execute(&statement, &[&inbox]).await
    };
    if let Err(e) = sent.await {
        tracing::debug!(error = %relay_db::describe(&e), "wake-up notification not sent; workers find the messages on their interval");
    }
}

/// Inserts decoded messages (a message id already stored is left as it is) and says, per row,
/// whether it was new, a duplicate of the stored content or a conflict with it. A second row
/// with an id earlier in `rows` is compared with that earlier row, which is stored by then.
pub(crate) async fn insert_rows(
    tx: &Transaction<'_>,
    inbox: &str,
    rows: &[&InboxRow],
) -> Result<Vec<Stored>, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&InboxRow) -> &str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.message_id).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    let headers: Vec<&serde_json::Value> = rows.iter().map(|r| &r.headers).collect();
    let traceparents: Vec<Option<&str>> = rows.iter().map(|r| r.traceparent.as_deref()).collect();
    let tracestates: Vec<Option<&str>> = rows.iter().map(|r| r.tracestate.as_deref()).collect();
    let sequences: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
    let created: Vec<std::time::SystemTime> = rows.iter().map(|r| r.created_at).collect();
    let partitions: Vec<i32> = rows.iter().map(|r| r.position.partition).collect();
    let offsets: Vec<i64> = rows.iter().map(|r| r.position.offset).collect();
    let statement = tx.prepare_cached(include_str!("insert_inbox.sql")).await?;
    let new: HashSet<uuid::Uuid> = tx
        .query(
            &statement,
            &[
                &inbox,
                &ids,
                &col(|r| &r.source),
                &col(|r| &r.topic),
                &col(|r| &r.key),
                &col(|r| &r.msg_type),
                &col(|r| &r.content_type),
                &payloads,
                &headers,
                &traceparents,
                &tracestates,
                &sequences,
                &created,
                &col(|r| &r.position.topic),
                &partitions,
                &offsets,
            ],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut first = HashSet::new();
    let mut stored: Vec<Stored> = rows
        .iter()
        .map(|r| {
            if new.contains(&r.message_id) && first.insert(r.message_id) {
                Stored::New
            } else {
                Stored::Duplicate
            }
        })
        .collect();
    let repeated: Vec<usize> = (0..rows.len()).filter(|&i| stored[i] == Stored::Duplicate).collect();
    if repeated.is_empty() {
        return Ok(stored);
    }
    let kept =
        stored_digests(tx, inbox, &repeated.iter().map(|&i| rows[i].message_id).collect::<Vec<_>>()).await?;
    for i in repeated {
        let id = rows[i].message_id;
        let arriving = content::digest(rows[i]);
        // No stored row: retention deleted it meanwhile; nothing to compare with.
        if let Some(kept) = kept.get(&id).filter(|kept| **kept != arriving) {
            stored[i] = Stored::Conflict(format!(
                "conflicting duplicate: message {id} is stored with content sha256 {kept}; \
                 this record's content is sha256 {arriving}"
            ));
        }
    }
    Ok(stored)
}

/// The content digest of each of `ids` stored in `inbox`.
async fn stored_digests(
    tx: &Transaction<'_>,
    inbox: &str,
    ids: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, String>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(include_str!("select_stored.sql")).await?;
    let rows = tx.query(&statement, &[&inbox, &ids]).await?;
    let digests = rows.iter().map(|row| {
        let stored = InboxRow {
            position: Position {
                topic: row.get("kafka_topic"),
                partition: row.get("kafka_partition"),
                offset: row.get("kafka_offset"),
            },
            message_id: row.get("message_id"),
            source: row.get("source"),
            topic: row.get("topic"),
            key: row.get("key"),
            msg_type: row.get("msg_type"),
            content_type: row.get("content_type"),
            payload: row.get("payload"),
            headers: row.get("headers"),
            traceparent: row.get("traceparent"),
            tracestate: row.get("tracestate"),
            sequence: row.get("sequence"),
            created_at: row.get("created_at"),
        };
        (stored.message_id, content::digest(&stored))
    });
    Ok(digests.collect())
}

async fn insert_dead(
    tx: &Transaction<'_>,
    inbox: &str,
    dead: &[&DeadLetter],
) -> Result<(), tokio_postgres::Error> {
    if dead.is_empty() {
        return Ok(());
    }
    for d in dead {
        // Evidence: each dead letter is written with its position, never summarised (relay-telemetry).
        tracing::warn!(
            evidence = true,
            topic = %d.position.topic, partition = d.position.partition, offset = d.position.offset,
            reason = %d.error, "dead-lettering record"
        );
    }
    let topics: Vec<&str> = dead.iter().map(|d| d.position.topic.as_str()).collect();
    let partitions: Vec<i32> = dead.iter().map(|d| d.position.partition).collect();
    let offsets: Vec<i64> = dead.iter().map(|d| d.position.offset).collect();
    let keys: Vec<Option<&[u8]>> = dead.iter().map(|d| d.raw_key.as_deref()).collect();
    let values: Vec<Option<&[u8]>> = dead.iter().map(|d| d.raw_value.as_deref()).collect();
    let errors: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    let key_ids: Vec<Option<&[u8]>> = dead.iter().map(|d| d.raw_key_id.as_deref()).collect();
    let signatures: Vec<Option<&[u8]>> = dead.iter().map(|d| d.raw_signature.as_deref()).collect();
    let headers: Vec<serde_json::Value> = dead.iter().map(|d| d.raw_headers.to_json()).collect();
    let statement = tx.prepare_cached(include_str!("insert_dead_letter.sql")).await?;
    tx.execute(
        &statement,
        &[&inbox, &topics, &partitions, &offsets, &keys, &values, &errors, &key_ids, &signatures, &headers],
    )
    .await?;
    Ok(())
}
