//! `reconciler trace`: "where is my message?". With the reconciler's own list of outbox and
//! inbox databases (same flags and variables), it follows one message id, or the newest
//! messages of one topic and key, through every database: the outbox row (enqueued, published
//! at which partition and offset, or parked and why), each inbox (stored when and where, or
//! dead-lettered and why, or not subscribed), and the receiving service's processing (processed,
//! failing, parked or skipped, after how many attempts). Dead letters are matched by the
//! message id in their envelope when it decodes.
//!
//! Rows are read as JSON (`to_jsonb`), so a database whose schema predates a column (an inbox
//! without processing) is traced with what it has. Read only. Exit 0 found, 1 found nowhere.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use prost::Message as _;
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    config::Inbox,
    db_error,
    trace_report::{
        DeadLetterStep, InboxStep, MessagePath, OutboxStep, ProcessingStep, Query, Stored, Trace,
    },
    Config, Format, ReconcileError, TraceQuery, EXIT_CLEAN, EXIT_DISCREPANCIES,
};

/// The dead letters of one inbox and a note, as [`dead_letters`] returns them.
type Letters = (Vec<Letter>, Option<String>);

/// An inbox database and what is fixed about it for this trace.
struct InboxDb<'a> {
    config: &'a Inbox,
    client: Client,
    processing: bool,
    /// Dead letters read so far, by Kafka topic (`None`: every topic): read once per trace.
    letters: Mutex<HashMap<Option<String>, Letters>>,
}

async fn connect(url: &relay_config::DatabaseUrl, what: String) -> Result<Client, ReconcileError> {
    let client = relay_db::connect(url)
        .await
        .map_err(|source| ReconcileError::Database { what: what.clone(), source })?;
    // Times as PostgreSQL renders them in JSON, in UTC.
    client.batch_execute("SET TimeZone = 'UTC'").await.map_err(db_error(what))?;
    Ok(client)
}

/// Runs the trace, prints it in `config.format`; returns the exit code.
pub(crate) async fn run(config: &Config, query: &TraceQuery) -> Result<i32, ReconcileError> {
    let mut outboxes = Vec::new();
    for (source, url) in &config.outboxes {
        outboxes.push((source.as_str(), connect(url, format!("outbox {source}")).await?));
    }
    let mut inboxes = Vec::new();
    for inbox in &config.inboxes {
        let what = format!("inbox {}", inbox.name);
        let client = connect(&inbox.url, what.clone()).await?;
        let processing = processing_enabled(&client, &inbox.name).await.map_err(db_error(what))?;
        inboxes.push(InboxDb { config: inbox, client, processing, letters: Mutex::default() });
    }
    let (ids, key) = match query {
        TraceQuery::Message(id) => (vec![*id], None),
        TraceQuery::Key { topic, key, limit } => {
            (key_ids(&outboxes, &inboxes, topic, key, *limit).await?, Some((topic.as_str(), key.as_str())))
        }
    };
    let mut messages = Vec::new();
    for id in ids {
        let path = trace_one(&outboxes, &inboxes, id, key.map(|(t, _)| t)).await?;
        if !path.outboxes.is_empty()
            || path.inboxes.iter().any(|i| i.stored.is_some() || !i.dead_letters.is_empty())
        {
            messages.push(path);
        }
    }
    let mut undecodable = Vec::new();
    if let Some((topic, key)) = key {
        for inbox in &inboxes {
            let (letters, _) = dead_letters(inbox, Some(topic)).await?;
            undecodable.extend(
                letters
                    .into_iter()
                    .filter(|l| l.message_id.is_none() && l.raw_key.as_deref() == Some(key.as_bytes()))
                    .map(|l| l.step),
            );
        }
    }
    let trace = Trace {
        query: match query {
            TraceQuery::Message(id) => Query { message_id: Some(*id), topic: None, key: None },
            TraceQuery::Key { topic, key, .. } => {
                Query { message_id: None, topic: Some(topic.clone()), key: Some(key.clone()) }
            }
        },
        found: !messages.is_empty() || !undecodable.is_empty(),
        messages,
        undecodable_dead_letters: undecodable,
        checked_outboxes: outboxes.iter().map(|(s, _)| s.to_string()).collect(),
        checked_inboxes: inboxes.iter().map(|i| i.config.name.clone()).collect(),
    };
    match config.format {
        Format::Table => print!("{}", trace.to_table()),
        Format::Json => println!("{}", trace.to_json()),
    }
    Ok(if trace.found { EXIT_CLEAN } else { EXIT_DISCREPANCIES })
}

async fn processing_enabled(client: &Client, inbox: &str) -> Result<bool, tokio_postgres::Error> {
    let exists: bool =
        client.query_one("SELECT to_regclass('relay.processing') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(false);
    }
    Ok(client.query_one(include_str!("sql/processing_enabled.sql"), &[&inbox]).await?.get(0))
}

/// The newest `limit` message ids of a key across every outbox, inbox and dead letter, newest
/// first (by outbox id, which inboxes keep as `sequence`; those known only from a dead letter
/// last).
async fn key_ids(
    outboxes: &[(&str, Client)],
    inboxes: &[InboxDb<'_>],
    topic: &str,
    key: &str,
    limit: i64,
) -> Result<Vec<Uuid>, ReconcileError> {
    let mut found: BTreeMap<Uuid, i64> = BTreeMap::new();
    for (source, client) in outboxes {
        let rows = client
            .query(include_str!("sql/trace_outbox_key.sql"), &[&topic, &key, &limit])
            .await
            .map_err(db_error(format!("outbox {source}")))?;
        for row in rows {
            found.insert(row.get(0), row.get(1));
        }
    }
    for inbox in inboxes {
        let rows = inbox
            .client
            .query(include_str!("sql/trace_inbox_key.sql"), &[&inbox.config.name, &topic, &key, &limit])
            .await
            .map_err(db_error(format!("inbox {}", inbox.config.name)))?;
        for row in rows {
            found.entry(row.get(0)).or_insert(row.get(1));
        }
    }
    // Dead-lettered everywhere and purged from the outbox: known only by its envelope.
    for inbox in inboxes {
        let (letters, _) = dead_letters(inbox, Some(topic)).await?;
        for letter in letters.iter().filter(|l| l.key.as_deref() == Some(key)) {
            if let Some(id) = letter.message_id {
                found.entry(id).or_insert(0);
            }
        }
    }
    let mut ids: Vec<(i64, Uuid)> = found.into_iter().map(|(id, order)| (order, id)).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(ids.into_iter().take(usize::try_from(limit).unwrap_or(usize::MAX)).map(|(_, id)| id).collect())
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(String::from)
}

fn int(v: &Value, field: &str) -> Option<i64> {
    v.get(field).and_then(Value::as_i64)
}

async fn trace_one(
    outboxes: &[(&str, Client)],
    inboxes: &[InboxDb<'_>],
    id: Uuid,
    key_topic: Option<&str>,
) -> Result<MessagePath, ReconcileError> {
    let mut path = MessagePath {
        message_id: id,
        topic: None,
        key: None,
        outboxes: Vec::new(),
        outbox_note: None,
        inboxes: Vec::new(),
    };
    for (source, client) in outboxes {
        let row = client
            .query_opt(include_str!("sql/trace_outbox.sql"), &[&id])
            .await
            .map_err(db_error(format!("outbox {source}")))?;
        let Some(v) = row.map(|r| r.get::<_, Value>(0)) else { continue };
        path.topic = path.topic.or_else(|| text(&v, "topic"));
        path.key = path.key.or_else(|| text(&v, "key"));
        let state = match (text(&v, "published_at"), text(&v, "parked_at"), text(&v, "discarded_at")) {
            (Some(_), _, _) => "published",
            (None, Some(_), Some(_)) => "discarded",
            (None, Some(_), None) => "parked",
            _ => "pending",
        };
        path.outboxes.push(OutboxStep {
            source: source.to_string(),
            id: int(&v, "id").unwrap_or_default(),
            state,
            enqueued_at: text(&v, "created_at"),
            published_at: text(&v, "published_at"),
            kafka_partition: int(&v, "kafka_partition"),
            kafka_offset: int(&v, "kafka_offset"),
            parked_at: text(&v, "parked_at"),
            park_reason: text(&v, "park_reason"),
            discarded_at: text(&v, "discarded_at"),
            discard_reason: text(&v, "discard_reason"),
        });
    }
    let mut stored_rows = Vec::new();
    for inbox in inboxes {
        let row = inbox
            .client
            .query_opt(include_str!("sql/trace_inbox.sql"), &[&inbox.config.name, &id])
            .await
            .map_err(db_error(format!("inbox {}", inbox.config.name)))?;
        let v = row.map(|r| r.get::<_, Value>(0));
        if let Some(v) = &v {
            path.topic = path.topic.clone().or_else(|| text(v, "topic"));
            path.key = path.key.clone().or_else(|| text(v, "key"));
        }
        stored_rows.push(v);
    }
    let topic = path.topic.clone().or(key_topic.map(String::from));
    for (inbox, row) in inboxes.iter().zip(stored_rows) {
        path.inboxes.push(inbox_step(inbox, row, id, topic.as_deref()).await?);
    }
    for inbox in inboxes {
        if path.topic.is_some() && path.key.is_some() {
            break;
        }
        // Known only from a dead letter: its envelope names the topic and key.
        let (letters, _) = dead_letters(inbox, topic.as_deref()).await?;
        if let Some(letter) = letters.iter().find(|l| l.message_id == Some(id)) {
            path.topic = path.topic.or_else(|| letter.topic.clone());
            path.key = path.key.or_else(|| letter.key.clone());
        }
    }
    if path.outboxes.is_empty() {
        path.outbox_note = Some(outbox_note(outboxes, &path).await?);
    }
    Ok(path)
}

async fn inbox_step(
    inbox: &InboxDb<'_>,
    row: Option<Value>,
    id: Uuid,
    topic: Option<&str>,
) -> Result<InboxStep, ReconcileError> {
    let is_subscribed = subscribed(topic, &inbox.config.topics);
    let (letters, dead_letters_note) = dead_letters(inbox, topic).await?;
    let dead_letters: Vec<DeadLetterStep> =
        letters.into_iter().filter(|l| l.message_id == Some(id)).map(|l| l.step).collect();
    let state = match (&row, dead_letters.is_empty()) {
        (Some(_), _) => "stored",
        (None, false) => "dead_lettered",
        (None, true) if !is_subscribed => "not_subscribed",
        (None, true) => "not_stored",
    };
    let stored = row.as_ref().map(|v| Stored {
        source: text(v, "source"),
        received_at: text(v, "received_at"),
        sequence: int(v, "sequence"),
        kafka_topic: text(v, "kafka_topic"),
        kafka_partition: int(v, "kafka_partition"),
        kafka_offset: int(v, "kafka_offset"),
    });
    let processing = row.as_ref().filter(|_| inbox.processing).map(|v| {
        let state = match (text(v, "processed_at"), text(v, "skipped_at"), text(v, "parked_at")) {
            (Some(_), Some(_), _) => "skipped",
            (Some(_), None, _) => "processed",
            (None, _, Some(_)) => "parked",
            _ if int(v, "attempts").unwrap_or(0) > 0 => "failing",
            _ => "waiting",
        };
        ProcessingStep {
            state,
            attempts: int(v, "attempts").unwrap_or(0),
            processed_at: text(v, "processed_at"),
            skipped_at: text(v, "skipped_at"),
            skip_reason: text(v, "skip_reason"),
            last_error: text(v, "last_error"),
            next_attempt_at: text(v, "next_attempt_at"),
            parked_at: text(v, "parked_at"),
            park_reason: text(v, "park_reason"),
        }
    });
    Ok(InboxStep {
        inbox: inbox.config.name.clone(),
        state,
        stored,
        processing_enabled: inbox.processing,
        processing,
        dead_letters,
        dead_letters_note,
    })
}

/// Whether an inbox subscribes to `topic`; true when the topic is unknown.
fn subscribed(topic: Option<&str>, topics: &[String]) -> bool {
    topic.is_none_or(|topic| topics.iter().any(|t| t == topic))
}

/// A dead letter with the message id its envelope names, when it decodes.
#[derive(Clone)]
struct Letter {
    message_id: Option<Uuid>,
    /// The topic and key its envelope names, when it decodes.
    topic: Option<String>,
    key: Option<String>,
    raw_key: Option<Vec<u8>>,
    step: DeadLetterStep,
}

/// The dead letters of an inbox (of `topic` when known). Without the privilege to read them,
/// none, and a note saying so.
async fn dead_letters(inbox: &InboxDb<'_>, topic: Option<&str>) -> Result<Letters, ReconcileError> {
    let cache_key = topic.map(String::from);
    if let Some(read) = inbox.letters.lock().unwrap_or_else(|e| e.into_inner()).get(&cache_key) {
        return Ok(read.clone());
    }
    let read = read_dead_letters(inbox, topic).await?;
    inbox.letters.lock().unwrap_or_else(|e| e.into_inner()).insert(cache_key, read.clone());
    Ok(read)
}

async fn read_dead_letters(inbox: &InboxDb<'_>, topic: Option<&str>) -> Result<Letters, ReconcileError> {
    let rows = match inbox
        .client
        .query(include_str!("sql/trace_dead_letters.sql"), &[&inbox.config.name, &topic])
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            return Ok((Vec::new(), Some("dead letters not checked: no SELECT on relay.dead_letter".into())));
        }
        Err(e) => return Err(db_error(format!("inbox {}", inbox.config.name))(e)),
    };
    let letters = rows
        .iter()
        .map(|r| {
            let v: Value = r.get(2);
            let (message_id, topic, key) = identity(r.get(0), &v["raw_headers"]);
            Letter {
                message_id,
                topic,
                key,
                raw_key: r.get(1),
                step: DeadLetterStep {
                    inbox: inbox.config.name.clone(),
                    id: int(&v, "id").unwrap_or_default(),
                    kafka_topic: text(&v, "kafka_topic"),
                    kafka_partition: int(&v, "kafka_partition"),
                    kafka_offset: int(&v, "kafka_offset"),
                    created_at: text(&v, "created_at"),
                    error: text(&v, "error"),
                    resolved_at: text(&v, "resolved_at"),
                    resolution: text(&v, "resolution"),
                    resolution_note: text(&v, "resolution_note"),
                },
            }
        })
        .collect();
    Ok((letters, None))
}

/// The message id, topic and key a dead letter names: for a CloudEvents record (a
/// `ce_specversion` header), its `ce_id`, `ce_relaytopic` and `ce_partitionkey` headers (kept
/// hex-encoded in `raw_headers`), else the envelope in its value, when it decodes.
fn identity(value: Option<&[u8]>, raw_headers: &Value) -> (Option<Uuid>, Option<String>, Option<String>) {
    use relay_envelope::cloudevents::{
        HEADER_ID, HEADER_PARTITIONKEY, HEADER_RELAYTOPIC, HEADER_SPECVERSION,
    };
    let header = |name: &str| -> Option<String> {
        let found =
            raw_headers.as_array()?.iter().find(|h| h["name"].as_str() == Some(&hex::encode(name)))?;
        String::from_utf8(hex::decode(found["value"].as_str()?).ok()?).ok()
    };
    if header(HEADER_SPECVERSION).is_some() {
        let id = header(HEADER_ID).and_then(|id| Uuid::try_parse(&id).ok());
        return (id, header(HEADER_RELAYTOPIC), header(HEADER_PARTITIONKEY));
    }
    let envelope = value.and_then(|bytes| relay_envelope::Envelope::decode(bytes).ok());
    let message_id = envelope.as_ref().and_then(|e| Uuid::try_parse(&e.message_id).ok());
    (message_id, envelope.as_ref().map(|e| e.topic.clone()), envelope.map(|e| e.key))
}

/// Why no outbox holds a message: its source is not configured, or retention purged it there
/// (its inbox sequence lies below that outbox's purge marker), or it is in none.
async fn outbox_note(outboxes: &[(&str, Client)], path: &MessagePath) -> Result<String, ReconcileError> {
    let stored = path.inboxes.iter().filter_map(|i| i.stored.as_ref()).find(|s| s.source.is_some());
    let Some(stored) = stored else {
        return Ok("in no configured outbox".into());
    };
    let source = stored.source.clone().unwrap_or_default();
    let Some((_, client)) = outboxes.iter().find(|(s, _)| *s == source) else {
        return Ok(format!("from source {source}, which is not a configured outbox"));
    };
    let marker = client
        .query_opt("SELECT below_id FROM relay.outbox_purged", &[])
        .await
        .map_err(db_error(format!("outbox {source}")))?
        .map(|r| r.get::<_, i64>(0));
    Ok(match (marker, stored.sequence) {
        (Some(below), Some(sequence)) if sequence < below => {
            format!("purged from outbox {source} by retention (id {sequence} is below {below})")
        }
        _ => format!("not in outbox {source} (id {})", stored.sequence.unwrap_or_default()),
    })
}
