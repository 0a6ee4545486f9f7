//! Turns Kafka records into what the inbox stores: a message row, or a dead letter with a reason.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Message, OwnedMessage};

use crate::ConsumerConfig;

/// Where a record sits in Kafka; offsets are stored from these after the batch commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A decoded message, ready to insert.
#[derive(Debug, Clone)]
pub(crate) struct InboxRow {
    pub position: Position,
    pub message_id: uuid::Uuid,
    pub source: String,
    pub topic: String,
    pub key: String,
    pub msg_type: String,
    pub content_type: String,
    pub payload: Vec<u8>,
    pub headers: serde_json::Value,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub sequence: i64,
    pub created_at: SystemTime,
}

/// A record that cannot be stored as a message, kept raw with the reason.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub position: Position,
    pub raw_key: Option<Vec<u8>>,
    pub raw_value: Option<Vec<u8>>,
    pub error: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Record {
    Store(Box<InboxRow>),
    Dead(DeadLetter),
}

impl Record {
    pub fn position(&self) -> &Position {
        match self {
            Record::Store(row) => &row.position,
            Record::Dead(dead) => &dead.position,
        }
    }
}

impl DeadLetter {
    /// The dead letter for a row the database refused, keeping the original bytes.
    pub fn from_refused(message: &OwnedMessage, error: String) -> Self {
        Self {
            position: position_of(message),
            raw_key: message.key().map(<[u8]>::to_vec),
            raw_value: message.payload().map(<[u8]>::to_vec),
            error,
        }
    }
}

fn position_of(message: &OwnedMessage) -> Position {
    Position { topic: message.topic().to_string(), partition: message.partition(), offset: message.offset() }
}

/// Decodes and checks one record.
pub(crate) fn classify(message: &OwnedMessage, config: &ConsumerConfig) -> Record {
    let decoded = match relay_envelope::decode(message.payload()) {
        Ok(decoded) => decoded,
        Err(e) => return Record::Dead(DeadLetter::from_refused(message, e.to_string())),
    };
    let envelope = decoded.envelope;
    let limit = config.max_payload.for_topic(message.topic());
    if envelope.payload.len() > limit {
        let error = format!("payload of {} bytes exceeds the limit of {limit} bytes", envelope.payload.len());
        return Record::Dead(DeadLetter::from_refused(message, error));
    }
    let sequence = match i64::try_from(envelope.sequence) {
        Ok(sequence) => sequence,
        Err(_) => return Record::Dead(DeadLetter::from_refused(message, "sequence out of range".into())),
    };
    let micros = envelope.created_at_unix_micros;
    let created_at = if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    };
    let trace = envelope.trace.unwrap_or_default();
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let headers = serde_json::Value::Object(
        envelope.headers.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect(),
    );
    Record::Store(Box::new(InboxRow {
        position: position_of(message),
        message_id: decoded.message_id,
        source: envelope.source,
        topic: envelope.topic,
        key: envelope.key,
        msg_type: envelope.r#type,
        content_type: envelope.content_type,
        payload: envelope.payload,
        headers,
        traceparent: non_empty(trace.traceparent),
        tracestate: non_empty(trace.tracestate),
        sequence,
        created_at,
    }))
}
