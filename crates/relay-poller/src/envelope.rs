//! An outbox row as Kafka sees it: the protobuf envelope, the headers that repeat its id and
//! trace context for consumers that do not decode envelopes, and, when signing is on, the
//! signature of the encoded envelope with the key's id.
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use relay_envelope::{Envelope, SigningKey, TraceContext};
use tokio_postgres::Row;

/// Builds the envelope for one outbox row; returns it with the row's topic and key.
pub(crate) fn envelope_of<'r>(row: &'r Row, source: &str) -> (&'r str, &'r str, Envelope) {
    let topic: &str = row.get("topic");
    let key: &str = row.get("key");
    let message_id: uuid::Uuid = row.get("message_id");
    let headers: serde_json::Value = row.get("headers");
    let headers = match headers {
        serde_json::Value::Object(map) => {
            map.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect()
        }
        _ => Default::default(),
    };
    let created_at: SystemTime = row.get("created_at");
    let created_at_unix_micros = match created_at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_micros() as i64,
        Err(before) => -(before.duration().as_micros() as i64),
    };
    let traceparent: Option<String> = row.get("traceparent");
    let tracestate: Option<String> = row.get("tracestate");
    let trace = (traceparent.is_some() || tracestate.is_some()).then(|| TraceContext {
        traceparent: traceparent.unwrap_or_default(),
        tracestate: tracestate.unwrap_or_default(),
    });
    let envelope = Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: message_id.to_string(),
        source: source.to_string(),
        topic: topic.to_string(),
        key: key.to_string(),
        r#type: row.get("msg_type"),
        content_type: row.get("content_type"),
        payload: row.get("payload"),
        headers,
        created_at_unix_micros,
        trace,
        sequence: row.get::<_, i64>("id") as u64,
    };
    (topic, key, envelope)
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
