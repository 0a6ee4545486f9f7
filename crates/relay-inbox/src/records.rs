//! Turns Kafka records into what the inbox stores: a message row, or a dead letter with a reason.
//!
//! [`classify`] works on a record's raw parts, so the consumer (records fresh from Kafka) and a
//! re-drive (records kept raw in `relay.dead_letter`, headers included) apply exactly the same
//! checks. The headers are judged first ([`crate::headers`]), then the record's format is told
//! from them (a `ce_specversion` header makes it a CloudEvent in binary content mode, otherwise
//! its value is an envelope), then the signature (when signatures are on), before any decoding.
//! Both formats decode to the same envelope, so a message is stored as the same row either way.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_envelope::{cloudevents, Signed};
use relay_kafka::raw::{RawHeader, RawMessage};

use crate::{
    headers::{self, KeptHeaders},
    Verification,
};

/// A Kafka record as it arrived: where it sits, its key, value and headers, undecoded.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Every header in record order, names as raw bytes; or why they cannot be read.
    pub headers: Result<&'a [RawHeader], &'a str>,
}

impl<'a> From<&'a RawMessage> for RawRecord<'a> {
    fn from(message: &'a RawMessage) -> Self {
        Self {
            topic: &message.topic,
            partition: message.partition,
            offset: message.offset,
            key: message.key.as_deref(),
            value: message.value.as_deref(),
            headers: message.headers.as_deref().map_err(String::as_str),
        }
    }
}

/// Where a record sits in Kafka; offsets are stored from these after the batch commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A decoded message, ready to insert.
#[derive(Debug, Clone)]
pub struct InboxRow {
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
pub struct DeadLetter {
    pub position: Position,
    pub raw_key: Option<Vec<u8>>,
    pub raw_value: Option<Vec<u8>>,
    /// The first `relay-key-id` and `relay-signature` headers, if any (their own columns, which
    /// re-drives of dead letters older than `raw_headers` read).
    pub raw_key_id: Option<Vec<u8>>,
    pub raw_signature: Option<Vec<u8>>,
    /// Every header as it arrived.
    pub raw_headers: KeptHeaders,
    pub error: String,
    /// For a signature failure, its kind (the `reason` label of the failure counter).
    pub signature_failure: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub enum Record {
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
    /// The dead letter for a record that cannot be stored, keeping the original bytes.
    pub fn from_refused(raw: &RawRecord<'_>, error: String) -> Self {
        Self {
            position: position_of(raw),
            raw_key: raw.key.map(<[u8]>::to_vec),
            raw_value: raw.value.map(<[u8]>::to_vec),
            raw_key_id: headers::first(raw.headers, relay_envelope::HEADER_KEY_ID).map(<[u8]>::to_vec),
            raw_signature: headers::first(raw.headers, relay_envelope::HEADER_SIGNATURE).map(<[u8]>::to_vec),
            raw_headers: KeptHeaders::of(raw.headers),
            error,
            signature_failure: None,
        }
    }
}

fn position_of(raw: &RawRecord<'_>) -> Position {
    Position { topic: raw.topic.to_string(), partition: raw.partition, offset: raw.offset }
}

/// How much of a foreign text a reason quotes: it is logged and stored with every dead letter,
/// and the whole record is kept beside it.
const QUOTED_CHARS: usize = 64;

/// `text` quoted and escaped, cut to [`QUOTED_CHARS`] characters plus its length in bytes.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

/// PostgreSQL's earliest `timestamptz` (4714-11-24 00:00 UTC BC) in microseconds since 1970.
/// Earlier instants cannot be stored, and the driver's encoding wraps those near `i64::MIN`
/// around to a date in the year 294,000 instead of failing. Its latest (294276 AD) lies beyond
/// what an `i64` of microseconds can name, so there is no upper bound to check.
const PG_MIN_UNIX_MICROS: i64 = -210_866_803_200_000_000;

/// Checks one record's headers and signature (when `verification` is on), decodes and checks
/// it: its envelope must name the topic it arrived on (exactly), and payloads over `limit` bytes
/// (the topic's) are refused. Never panics, whatever the record.
pub fn classify(raw: &RawRecord<'_>, limit: usize, verification: &Verification) -> Record {
    let signed = match headers::check(raw.headers) {
        Ok(signed) => signed,
        Err(reason) => return Record::Dead(DeadLetter::from_refused(raw, reason)),
    };
    let all: Vec<(&[u8], Option<&[u8]>)> = match raw.headers {
        Ok(headers) => headers.iter().map(|h| (h.name.as_slice(), h.value.as_deref())).collect(),
        Err(_) => Vec::new(), // refused by `headers::check` above
    };
    let cloudevent = cloudevents::is_cloudevent(&all);
    if let Some(name) = (!cloudevent).then(|| cloudevents::stray_attribute(&all)).flatten() {
        let error = format!(
            "header {} is a CloudEvents attribute, but the record has no {}",
            quoted(&String::from_utf8_lossy(name)),
            cloudevents::HEADER_SPECVERSION
        );
        return Record::Dead(DeadLetter::from_refused(raw, error));
    }
    let value = raw.value.unwrap_or_default();
    let input = if cloudevent { Signed::CloudEvent { value, headers: &all } } else { Signed::Value(value) };
    if let Err(e) = verification.check_input(signed.key_id, signed.signature, input) {
        let mut dead = DeadLetter::from_refused(raw, e.to_string());
        dead.signature_failure = e.signature_failure();
        return Record::Dead(dead);
    }
    let decoded = if cloudevent {
        cloudevents::decode(raw.key, raw.value, &all)
    } else {
        relay_envelope::decode(raw.value)
    };
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(e) => return Record::Dead(DeadLetter::from_refused(raw, e.to_string())),
    };
    let envelope = decoded.envelope;
    if envelope.topic != raw.topic {
        // A genuine record copied onto another topic: the envelope or `ce_relaytopic` (signed,
        // when signatures are on) names the topic it was written for, and only there is it a
        // message.
        let field = if cloudevent { cloudevents::HEADER_RELAYTOPIC } else { "envelope topic" };
        let error = format!(
            "{field} {} is not the topic the record arrived on ({:?})",
            quoted(&envelope.topic),
            raw.topic
        );
        return Record::Dead(DeadLetter::from_refused(raw, error));
    }
    if envelope.payload.len() > limit {
        let error = format!("payload of {} bytes exceeds the limit of {limit} bytes", envelope.payload.len());
        return Record::Dead(DeadLetter::from_refused(raw, error));
    }
    let sequence = match i64::try_from(envelope.sequence) {
        Ok(sequence) => sequence,
        Err(_) => return Record::Dead(DeadLetter::from_refused(raw, "sequence out of range".into())),
    };
    let micros = envelope.created_at_unix_micros;
    if micros < PG_MIN_UNIX_MICROS {
        let error =
            format!("created_at_unix_micros {micros} is before PostgreSQL's earliest timestamp (4714 BC)");
        return Record::Dead(DeadLetter::from_refused(raw, error));
    }
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
        position: position_of(raw),
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cloudevents_tests;
