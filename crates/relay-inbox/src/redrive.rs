//! Re-drives dead letters: each one's raw record goes through the consumer's own checks again.
//!
//! A dead letter keeps the record's raw key and value. After an operator raised a payload limit
//! or fixed what made the database refuse a row, [`redrive_dead_letters`] classifies the record
//! with the same code the consumer runs ([`crate::records::classify`]) and stores it with the
//! same insert (`ON CONFLICT (inbox, message_id) DO NOTHING`); a message stored already with
//! other content stays a conflict. Each dead letter is handled in a transaction of its own,
//! under a row lock: the message goes in and the dead letter is resolved together, or neither
//! happens. A record that still fails stays unresolved with the new reason.
//!
//! Headers: the record's headers come back from `raw_headers` as they arrived, so the consumer's
//! header rules judge them again; a dead letter older than that column has only its signature
//! headers (`raw_key_id`, `raw_signature`), which then stand for all of them.
//!
//! Signatures: given the consumer's keys ([`Verification`]), each record's signature is checked
//! again from the headers kept with the dead letter, exactly as the consumer checks it. Without
//! keys, a dead letter that failed its signature check is refused (it stays unresolved), since
//! nothing could tell a forged record from a real one; others are re-driven unchecked.
use relay_config::DatabaseUrl;
use relay_db::Actor;

use relay_kafka::raw::RawHeader;

use crate::{
    records::{self, RawRecord, Record},
    store, InboxError, KeptHeaders, Verification,
};

/// Why a signature failure is not re-driven without keys. Begins as every signature failure does,
/// so a later re-drive still recognises it.
const NEEDS_KEYS: &str = "signature not checked: a signature failure is re-driven only with \
                          INBOX_VERIFY_KEYS (or INBOX_VERIFY_KEYS_FILE) set to the consumer's keys";

/// Which unresolved dead letters of an inbox to re-drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Ids(Vec<i64>),
}

/// What a re-drive did, by dead-letter id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedriveReport {
    /// Stored in the inbox now; resolved as `redriven`.
    pub redriven: Vec<i64>,
    /// The message was already in the inbox (it arrived again another way); resolved as `redriven`.
    pub already_present: Vec<i64>,
    /// Still refused, with the reason; left unresolved.
    pub still_failing: Vec<(i64, String)>,
}

enum Outcome {
    Stored,
    AlreadyPresent,
    StillFailing(String),
}

fn db(error: tokio_postgres::Error) -> InboxError {
    InboxError::Db(error.into())
}

/// Re-drives the selected unresolved dead letters of `inbox`, oldest first, each against a
/// payload limit of `max_payload_bytes` and the signature check `verification`. Dead letters
/// resolved meanwhile are skipped. Each re-drive writes an audit row for `actor` in its own
/// transaction (`relay.operator_audit`, inbox migration V9). Unless `execute`, each transaction
/// is rolled back: the report says what a re-drive would do now, and nothing changes.
pub async fn redrive_dead_letters(
    url: &DatabaseUrl,
    inbox: &str,
    selection: &Selection,
    max_payload_bytes: usize,
    verification: &Verification,
    actor: &Actor,
    execute: bool,
) -> Result<RedriveReport, InboxError> {
    let pool = relay_db::pool(url, 1)?;
    let mut client = pool.get().await.map_err(relay_db::DbError::from)?;
    let (all, ids) = match selection {
        Selection::All => (true, Vec::new()),
        Selection::Ids(ids) => (false, ids.clone()),
    };
    let candidates: Vec<i64> = client
        .query(include_str!("redrive_candidates.sql"), &[&inbox, &all, &ids])
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut report = RedriveReport::default();
    for id in candidates {
        let one = Attempt { inbox, id, limit: max_payload_bytes, verification, actor, execute };
        match redrive_one(&mut client, &one).await.map_err(db)? {
            None => tracing::info!(dead_letter = id, "resolved meanwhile; skipped"),
            Some(Outcome::Stored) => report.redriven.push(id),
            Some(Outcome::AlreadyPresent) => report.already_present.push(id),
            Some(Outcome::StillFailing(reason)) => report.still_failing.push((id, reason)),
        }
    }
    Ok(report)
}

/// One dead letter's re-drive, and on whose behalf.
struct Attempt<'a> {
    inbox: &'a str,
    id: i64,
    limit: usize,
    verification: &'a Verification,
    actor: &'a Actor,
    execute: bool,
}

/// One dead letter in one transaction: `None` when it is no longer unresolved.
async fn redrive_one(
    client: &mut deadpool_postgres::Object,
    attempt: &Attempt<'_>,
) -> Result<Option<Outcome>, tokio_postgres::Error> {
    let Attempt { inbox, id, limit, verification, actor, execute } = *attempt;
    let mut tx = client.transaction().await?;
    let Some(row) = tx.query_opt(include_str!("redrive_lock.sql"), &[&id, &inbox]).await? else {
        return Ok(None);
    };
    let (topic, key, value, previous): (String, Option<Vec<u8>>, Option<Vec<u8>>, String) =
        (row.get(0), row.get(3), row.get(4), row.get(5));
    let headers = kept_headers(row.get(6), row.get(7), row.get(8));
    let raw = RawRecord {
        topic: &topic,
        partition: row.get(1),
        offset: row.get(2),
        key: key.as_deref(),
        value: value.as_deref(),
        headers: headers.as_record(),
    };
    let unchecked_signature_failure =
        !verification.is_on() && relay_envelope::is_signature_failure_reason(&previous);
    let classified = if unchecked_signature_failure {
        Record::Dead(records::DeadLetter::from_refused(&raw, NEEDS_KEYS.into()))
    } else {
        records::classify(&raw, limit, verification)
    };
    let outcome = match classified {
        Record::Dead(dead) => Outcome::StillFailing(dead.error),
        Record::Store(message) => {
            // Under a savepoint, so a refusal leaves the transaction usable to record the reason.
            let savepoint = tx.savepoint("relay_redrive").await?;
            match store::insert_rows(&savepoint, inbox, &[message.as_ref()]).await.map(|mut s| s.pop()) {
                Ok(stored) => {
                    savepoint.commit().await?;
                    match stored {
                        Some(store::Stored::New) => Outcome::Stored,
                        Some(store::Stored::Conflict(reason)) => Outcome::StillFailing(reason),
                        _ => Outcome::AlreadyPresent,
                    }
                }
                Err(e) if store::is_poison(&e) => {
                    savepoint.rollback().await?;
                    Outcome::StillFailing(store::refused_reason(&e))
                }
                Err(e) => return Err(e),
            }
        }
    };
    match &outcome {
        Outcome::Stored | Outcome::AlreadyPresent => {
            let note = match outcome {
                Outcome::Stored => format!("stored in the inbox; was: {previous}"),
                _ => format!("already in the inbox; was: {previous}"),
            };
            tx.execute(include_str!("redrive_resolve.sql"), &[&id, &note]).await?;
            tracing::info!(dead_letter = id, note = %note, "dead letter re-driven");
        }
        Outcome::StillFailing(reason) => {
            tx.execute(include_str!("redrive_still_failing.sql"), &[&id, reason]).await?;
            tracing::warn!(dead_letter = id, reason = %reason, "dead letter still cannot be stored");
        }
    }
    tx.execute(include_str!("redrive_audit.sql"), &[&actor.operator, &actor.reason, &id, &previous]).await?;
    if execute {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(Some(outcome))
}

/// A dead letter's headers: `raw_headers` as kept, or, for a dead letter older than that column,
/// its signature headers alone. A `raw_headers` value the consumer would not write reads as
/// unreadable headers, so the record is refused again rather than judged without them.
fn kept_headers(
    key_id: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
    kept: Option<serde_json::Value>,
) -> KeptHeaders {
    match kept {
        Some(json) => KeptHeaders::from_json(&json).unwrap_or_else(|| {
            KeptHeaders::Unreadable("raw_headers of this dead letter is not in the consumer's format".into())
        }),
        None => {
            let named =
                [(relay_envelope::HEADER_KEY_ID, key_id), (relay_envelope::HEADER_SIGNATURE, signature)];
            let headers = named
                .into_iter()
                .filter_map(|(name, value)| {
                    value.map(|v| RawHeader { name: name.as_bytes().to_vec(), value: Some(v) })
                })
                .collect();
            KeptHeaders::Headers(headers)
        }
    }
}
