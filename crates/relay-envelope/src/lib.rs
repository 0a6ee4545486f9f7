//! The wire format between the outbox-poller and every consumer.
//!
//! A Kafka record's value is a protobuf [`Envelope`] (see `proto/relay/envelope/v1`). This crate
//! owns encoding, strict decoding (so a bad record is rejected with a reason rather than stored
//! half-understood), the names of the Kafka headers that duplicate the id and trace context, and
//! the opt-in record signatures (HMAC-SHA256 with key ids, see `signing`). A topic may instead
//! carry CloudEvents in binary content mode ([`cloudevents`]): the same message, encoded as a
//! plain value and headers that any Kafka client reads.
#![forbid(unsafe_code)]

use prost::Message as _;

pub mod cloudevents;
mod signing;

pub use signing::{
    check_key_id, Signed, SigningKey, VerifyKeys, HEADER_KEY_ID, HEADER_SIGNATURE, MAX_KEY_ID_CHARS,
    MIN_KEY_BYTES,
};

#[allow(missing_docs, clippy::all, missing_debug_implementations)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/relay.envelope.v1.rs"));
}

pub use generated::{Envelope, TraceContext};

/// The envelope version this build writes and the only one it accepts.
pub const ENVELOPE_VERSION: u32 = 1;
/// Kafka header carrying the message id (UUID text), for consumers that do not decode envelopes.
pub const HEADER_MESSAGE_ID: &str = "relay-message-id";
/// Kafka header carrying the envelope version.
pub const HEADER_ENVELOPE_VERSION: &str = "relay-envelope-version";
/// W3C trace context header.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// W3C trace state header.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// Why a record could not be accepted as an envelope. The text is stored with dead letters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record has no value")]
    Empty,
    #[error("value is not a protobuf envelope: {0}")]
    Malformed(String),
    #[error("unsupported envelope version {0} (this consumer understands version {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
    #[error("message_id {0:?} is not a UUID")]
    BadMessageId(String),
    #[error("field {0} is empty")]
    MissingField(&'static str),
    #[error("field {0} contains a NUL character")]
    NulCharacter(&'static str),
    #[error("CloudEvents record: {0}")]
    CloudEvents(String),
    #[error("signature missing: the record has no {HEADER_SIGNATURE} and {HEADER_KEY_ID} headers")]
    Unsigned,
    #[error("signature key id {0} is not one this consumer accepts")]
    UnknownKeyId(String),
    #[error("signature header is not a hex HMAC-SHA256 (key id {0})")]
    MalformedSignature(String),
    #[error("signature does not match the record value (key id {0})")]
    BadSignature(String),
    #[error("signature does not match the record value and headers (key id {0})")]
    BadHeadersSignature(String),
}

/// Every value [`DecodeError::signature_failure`] returns.
pub const SIGNATURE_FAILURE_KINDS: [&str; 4] = ["missing", "unknown_key", "malformed", "mismatch"];

impl DecodeError {
    /// For a signature failure, its kind as a metric label (`missing`, `unknown_key`,
    /// `malformed`, `mismatch`); `None` for every other reason.
    pub fn signature_failure(&self) -> Option<&'static str> {
        match self {
            Self::Unsigned => Some("missing"),
            Self::UnknownKeyId(_) => Some("unknown_key"),
            Self::MalformedSignature(_) => Some("malformed"),
            Self::BadSignature(_) | Self::BadHeadersSignature(_) => Some("mismatch"),
            _ => None,
        }
    }
}

/// True when a stored dead-letter reason is a signature failure (they all begin this way).
pub fn is_signature_failure_reason(reason: &str) -> bool {
    reason.starts_with(SIGNATURE_REASON_PREFIX)
}

/// How every signature failure's reason begins.
pub const SIGNATURE_REASON_PREFIX: &str = "signature ";

/// An envelope that passed validation, with its id parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub message_id: uuid::Uuid,
    pub envelope: Envelope,
}

/// Encodes an envelope to bytes.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    envelope.encode_to_vec()
}

/// Decodes and validates a record value.
///
/// Rejects anything a consumer could not store faithfully: not protobuf, an unknown version, a
/// message id that is not a UUID, missing source or topic, or text PostgreSQL cannot hold (NUL).
pub fn decode(value: Option<&[u8]>) -> Result<Decoded, DecodeError> {
    let bytes = match value {
        None | Some([]) => return Err(DecodeError::Empty),
        Some(bytes) => bytes,
    };
    let envelope = Envelope::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    validate(envelope)
}

/// The checks every decoded message passes, whatever its format (see [`decode`]).
pub(crate) fn validate(envelope: Envelope) -> Result<Decoded, DecodeError> {
    if envelope.version != ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion(envelope.version));
    }
    let message_id = uuid::Uuid::try_parse(&envelope.message_id)
        .map_err(|_| DecodeError::BadMessageId(quoted_prefix(&envelope.message_id)))?;
    for (name, value) in [("source", &envelope.source), ("topic", &envelope.topic)] {
        if value.is_empty() {
            return Err(DecodeError::MissingField(name));
        }
    }
    let trace = envelope.trace.clone().unwrap_or_default();
    let texts = [
        ("source", envelope.source.as_str()),
        ("topic", envelope.topic.as_str()),
        ("key", envelope.key.as_str()),
        ("type", envelope.r#type.as_str()),
        ("content_type", envelope.content_type.as_str()),
        ("trace.traceparent", trace.traceparent.as_str()),
        ("trace.tracestate", trace.tracestate.as_str()),
    ];
    if let Some((name, _)) = texts.iter().find(|(_, text)| text.contains('\0')) {
        return Err(DecodeError::NulCharacter(name));
    }
    if envelope.headers.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err(DecodeError::NulCharacter("headers"));
    }
    Ok(Decoded { message_id, envelope })
}

/// How much of a bad message id a [`DecodeError`] quotes. The reason is logged and stored with
/// every dead letter; the whole value is kept beside it, so the reason need not grow with it.
const QUOTED_CHARS: usize = 64;

fn quoted_prefix(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signature_failure_kind_is_listed_for_the_metric() {
        let kinds: Vec<&str> = [
            DecodeError::Unsigned,
            DecodeError::UnknownKeyId("k".into()),
            DecodeError::MalformedSignature("k".into()),
            DecodeError::BadSignature("k".into()),
        ]
        .iter()
        .filter_map(DecodeError::signature_failure)
        .collect();
        assert_eq!(kinds, SIGNATURE_FAILURE_KINDS);
    }

    fn sample() -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            message_id: "0b6f5c1e-8a0e-4c3e-9d37-5b0b0d3a1f10".into(),
            source: "payments".into(),
            topic: "payments.v1".into(),
            key: "acct-1".into(),
            r#type: "payment.created".into(),
            content_type: "application/json".into(),
            payload: b"{\"amount\":1}".to_vec(),
            headers: [("tenant".to_string(), "a".to_string())].into(),
            created_at_unix_micros: 1_700_000_000_000_000,
            trace: Some(TraceContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                tracestate: String::new(),
            }),
            sequence: 42,
        }
    }

    #[test]
    fn round_trips_every_field() {
        let envelope = sample();
        let decoded = decode(Some(&encode(&envelope))).expect("valid envelope");
        assert_eq!(decoded.envelope, envelope);
        assert_eq!(decoded.message_id.to_string(), envelope.message_id);
    }

    #[test]
    fn rejects_garbage_empty_and_unknown_versions() {
        assert_eq!(decode(None), Err(DecodeError::Empty));
        assert_eq!(decode(Some(b"")), Err(DecodeError::Empty));
        assert!(matches!(decode(Some(b"\xff\xff\xff\xff")), Err(DecodeError::Malformed(_))));
        let mut v2 = sample();
        v2.version = 2;
        assert_eq!(decode(Some(&encode(&v2))), Err(DecodeError::UnsupportedVersion(2)));
    }

    #[test]
    fn rejects_bad_ids_missing_fields_and_nul_text() {
        let mut bad_id = sample();
        bad_id.message_id = "not-a-uuid".into();
        assert!(matches!(decode(Some(&encode(&bad_id))), Err(DecodeError::BadMessageId(_))));
        let mut huge_id = sample();
        huge_id.message_id = "é".repeat(100_000);
        let Err(DecodeError::BadMessageId(quoted)) = decode(Some(&encode(&huge_id))) else {
            panic!("a 200 kB message id was accepted");
        };
        assert_eq!(quoted, format!("{}… (200000 bytes)", "é".repeat(64)));
        let mut no_source = sample();
        no_source.source.clear();
        assert_eq!(decode(Some(&encode(&no_source))), Err(DecodeError::MissingField("source")));
        let mut nul = sample();
        nul.key = "a\0b".into();
        assert_eq!(decode(Some(&encode(&nul))), Err(DecodeError::NulCharacter("key")));
    }
}
