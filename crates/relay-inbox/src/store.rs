//! Writes a batch in one transaction: new messages, then dead letters.
//!
//! A database error that a retry cannot fix (bad data, a constraint other than the dedup key, a
//! size limit) must not block the partition: the batch is then written row by row under
//! savepoints and each refused row becomes a dead letter with the database's reason.
use deadpool_postgres::Transaction;
use relay_kafka::raw::RawMessage;

use crate::records::{DeadLetter, InboxRow, RawRecord, Record};

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
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
    let rows: Vec<&InboxRow> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Store(row) => Some(row.as_ref()),
            Record::Dead(_) => None,
        })
        .collect();
    let dead: Vec<&DeadLetter> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Dead(d) => Some(d),
            Record::Store(_) => None,
        })
        .collect();
    let inserted = insert_rows(tx, inbox, &rows).await?;
    insert_dead(tx, inbox, &dead).await?;
    Ok(Written { inserted, duplicates: rows.len() as u64 - inserted, dead_lettered: dead.len() as u64 })
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
                match insert_rows(&savepoint, inbox, &[row.as_ref()]).await {
                    Ok(n) => {
                        savepoint.commit().await?;
                        written.inserted += n;
                        written.duplicates += 1 - n;
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

/// Inserts decoded messages; returns how many were new (the rest were already in the inbox).
pub(crate) async fn insert_rows(
    tx: &Transaction<'_>,
    inbox: &str,
    rows: &[&InboxRow],
) -> Result<u64, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
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
    tx.execute(
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
    .await
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
        tracing::warn!(
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
