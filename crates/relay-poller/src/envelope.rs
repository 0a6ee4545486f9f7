//! An outbox row as Kafka sees it: the protobuf envelope, the headers that repeat its id and
//! trace context for consumers that do not decode envelopes, and, when signing is on, the
//! signature of the encoded envelope with the key's id. On a CloudEvents topic the same envelope
//! becomes the payload as the value and its fields as headers ([`cloudevent_headers`]).
//!
//! A row is read column by column and checked against the documented limits
//! (`relay_config::KEY_MAX_BYTES` and the others), so a row written past `relay.enqueue`'s checks
//! (a writer with INSERT rights, a dropped constraint, a database in another encoding) is
//! refused with its reason and parked alone instead of stopping the poller.
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use relay_config::{
    HEADERS_MAX_BYTES, HEADERS_MAX_COUNT, KEY_MAX_BYTES, TRACEPARENT_MAX_BYTES, TRACESTATE_MAX_BYTES,
    TYPE_MAX_BYTES,
};
use relay_envelope::{Envelope, Signed, SigningKey, TraceContext};
use tokio_postgres::{types::FromSql, Row};

/// Builds the envelope for one outbox row (its topic and key are the envelope's). `Err` is why
/// the row cannot be sent as it is: a column that cannot be read, a field over its limit, or
/// headers that are not a JSON object of strings.
pub(crate) fn envelope_of(row: &Row, source: &str) -> Result<Envelope, String> {
    let topic: String = column(row, "topic")?;
    let key: String = column(row, "key")?;
    let message_id: uuid::Uuid = column(row, "message_id")?;
    let headers = headers(column(row, "headers")?)?;
    let created_at: SystemTime = column(row, "created_at")?;
    let created_at_unix_micros = match created_at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_micros() as i64,
        Err(before) => -(before.duration().as_micros() as i64),
    };
    let traceparent: Option<String> = column(row, "traceparent")?;
    let tracestate: Option<String> = column(row, "tracestate")?;
    let msg_type: String = column(row, "msg_type")?;
    let content_type: String = column(row, "content_type")?;
    let id: i64 = column(row, "id")?;
    if !valid_topic(&topic) {
        return Err(format!("topic {topic:?} is not a valid Kafka topic name"));
    }
    within("key", &key, KEY_MAX_BYTES)?;
    within("msg_type", &msg_type, TYPE_MAX_BYTES)?;
    within("content_type", &content_type, TYPE_MAX_BYTES)?;
    within("traceparent", traceparent.as_deref().unwrap_or_default(), TRACEPARENT_MAX_BYTES)?;
    within("tracestate", tracestate.as_deref().unwrap_or_default(), TRACESTATE_MAX_BYTES)?;
    for (name, text) in [("key", &key), ("msg_type", &msg_type), ("content_type", &content_type)] {
        if text.contains('\0') {
            return Err(format!("{name} contains a NUL character, which consumers refuse"));
        }
    }
    let trace = (traceparent.is_some() || tracestate.is_some()).then(|| TraceContext {
        traceparent: traceparent.unwrap_or_default(),
        tracestate: tracestate.unwrap_or_default(),
    });
    Ok(Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: message_id.to_string(),
        source: source.to_string(),
        topic,
        key,
        r#type: msg_type,
        content_type,
        payload: column(row, "payload")?,
        headers,
        created_at_unix_micros,
        trace,
        sequence: id as u64,
    })
}

/// One column, or why it cannot be read (text that is not valid UTF-8, say).
fn column<'r, T: FromSql<'r>>(row: &'r Row, name: &str) -> Result<T, String> {
    row.try_get(name).map_err(|e| format!("column {name} cannot be read: {}", relay_db::describe(&e)))
}

/// Kafka's rule, which `relay.enqueue` checks too: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn valid_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn within(name: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!("{name} of {} bytes exceeds the limit of {max} bytes", text.len()));
    }
    Ok(())
}

/// The application headers: a JSON object of string values, within the count and size limits.
/// Anything else is refused rather than sent with headers silently dropped.
fn headers(value: serde_json::Value) -> Result<std::collections::HashMap<String, String>, String> {
    let serde_json::Value::Object(map) = value else {
        return Err(format!("headers must be a JSON object of strings, not {}", kind(&value)));
    };
    if map.len() > HEADERS_MAX_COUNT {
        return Err(format!("{} headers exceed the limit of {HEADERS_MAX_COUNT}", map.len()));
    }
    let mut total = 0;
    let mut headers = std::collections::HashMap::with_capacity(map.len());
    for (name, value) in map {
        let serde_json::Value::String(text) = value else {
            return Err(format!("header {name:?} must be a string, not {}", kind(&value)));
        };
        if name.contains('\0') || text.contains('\0') {
            return Err(format!("header {name:?} contains a NUL character, which consumers refuse"));
        }
        total += name.len() + text.len();
        headers.insert(name, text);
    }
    if total > HEADERS_MAX_BYTES {
        return Err(format!("headers of {total} bytes exceed the limit of {HEADERS_MAX_BYTES} bytes"));
    }
    Ok(headers)
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The id and trace context again as Kafka headers, for consumers that do not decode envelopes;
/// with a signing key, also its id and the signature of `value` (the encoded envelope).
pub(crate) fn headers_of(envelope: &Envelope, signing: Option<&SigningKey>, value: &[u8]) -> OwnedHeaders {
    let version = relay_envelope::ENVELOPE_VERSION.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(6)
        .insert(Header { key: relay_envelope::HEADER_MESSAGE_ID, value: Some(envelope.message_id.as_str()) })
        .insert(Header { key: relay_envelope::HEADER_ENVELOPE_VERSION, value: Some(version.as_str()) });
    if let Some(trace) = &envelope.trace {
        if !trace.traceparent.is_empty() {
            headers = headers.insert(Header {
                key: relay_envelope::HEADER_TRACEPARENT,
                value: Some(trace.traceparent.as_str()),
            });
        }
        if !trace.tracestate.is_empty() {
            headers = headers.insert(Header {
                key: relay_envelope::HEADER_TRACESTATE,
                value: Some(trace.tracestate.as_str()),
            });
        }
    }
    if let Some(key) = signing {
        let signature = key.sign(value);
        headers = headers
            .insert(Header { key: relay_envelope::HEADER_KEY_ID, value: Some(key.id()) })
            .insert(Header { key: relay_envelope::HEADER_SIGNATURE, value: Some(signature.as_str()) });
    }
    headers
}

/// The headers of `envelope` as a CloudEvent in binary content mode (its value is the payload);
/// with a signing key, also its id and the signature over the value and those headers. `Err` is
/// why the message cannot be sent so (an application header with a reserved name, say).
pub(crate) fn cloudevent_headers(
    envelope: &Envelope,
    signing: Option<&SigningKey>,
) -> Result<OwnedHeaders, String> {
    let mut headers = relay_envelope::cloudevents::headers_of(envelope)?;
    if let Some(key) = signing {
        headers.push((relay_envelope::HEADER_KEY_ID.to_string(), key.id().to_string()));
        let signed: Vec<(&[u8], Option<&[u8]>)> =
            headers.iter().map(|(name, value)| (name.as_bytes(), Some(value.as_bytes()))).collect();
        let signature = key.sign_input(Signed::CloudEvent { value: &envelope.payload, headers: &signed });
        headers.push((relay_envelope::HEADER_SIGNATURE.to_string(), signature));
    }
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (name, value) in &headers {
        owned = owned.insert(Header { key: name, value: Some(value.as_str()) });
    }
    Ok(owned)
}

/// The bytes librdkafka counts against `message.max.bytes` for one record: key, value and
/// headers (name and value of each, with a few bytes of framing), plus the framing of the record
/// in its batch, so a record under the limit is never refused by the client.
pub(crate) fn record_size(key: &str, value: &[u8], headers: &OwnedHeaders) -> usize {
    use rdkafka::message::Headers;
    let headers: usize = headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 10).sum();
    key.len() + value.len() + headers + RECORD_FRAMING
}

/// A record's framing in a Kafka record batch, with the batch header: under 100 bytes.
const RECORD_FRAMING: usize = 128;

#[cfg(test)]
mod tests {
    use super::headers;

    #[test]
    fn headers_must_be_an_object_of_strings_within_the_limits() {
        assert_eq!(
            headers(serde_json::json!({"a": "1"})).expect("ok").get("a").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            headers(serde_json::json!([1])).expect_err("array"),
            "headers must be a JSON object of strings, not an array"
        );
        assert_eq!(
            headers(serde_json::json!({"n": 1})).expect_err("number"),
            "header \"n\" must be a string, not a number"
        );
        assert_eq!(
            headers(serde_json::json!({"o": {"x": "y"}})).expect_err("nested"),
            "header \"o\" must be a string, not an object"
        );
        let many: serde_json::Map<String, serde_json::Value> =
            (0..257).map(|i| (format!("h{i}"), serde_json::Value::String(String::new()))).collect();
        assert_eq!(
            headers(serde_json::Value::Object(many)).expect_err("count"),
            "257 headers exceed the limit of 256"
        );
        let big = serde_json::json!({"big": "x".repeat(64 * 1024)});
        assert_eq!(headers(big).expect_err("size"), "headers of 65539 bytes exceed the limit of 65536 bytes");
        let at_limit = serde_json::json!({"big": "x".repeat(64 * 1024 - 3)});
        assert!(headers(at_limit).is_ok());
    }
}
