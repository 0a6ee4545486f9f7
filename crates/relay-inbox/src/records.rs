//! Turns Kafka records into what the inbox stores: a message row, or a dead letter with a reason.
//!
//! [`classify`] works on a record's raw parts, so the consumer (records fresh from Kafka) and a
//! re-drive (records kept raw in `relay.dead_letter`, headers included) apply exactly the same
//! checks. The headers are judged first ([`crate::headers`]), then the signature (when
//! signatures are on), before any decoding.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// PostgreSQL's earliest `timestamptz` (4714-11-24 00:00 UTC BC) in microseconds since 1970.
/// Earlier instants cannot be stored, and the driver's encoding wraps those near `i64::MIN`
/// around to a date in the year 294,000 instead of failing. Its latest (294276 AD) lies beyond
/// what an `i64` of microseconds can name, so there is no upper bound to check.
const PG_MIN_UNIX_MICROS: i64 = -210_866_803_200_000_000;

/// Checks one record's headers and signature (when `verification` is on), decodes and checks
/// it; payloads over `limit` bytes (the topic's) are refused. Never panics, whatever the record.
pub fn classify(raw: &RawRecord<'_>, limit: usize, verification: &Verification) -> Record {
    let signed = match headers::check(raw.headers) {
        Ok(signed) => signed,
        Err(reason) => return Record::Dead(DeadLetter::from_refused(raw, reason)),
    };
    if let Err(e) = verification.check(signed.key_id, signed.signature, raw.value) {
        let mut dead = DeadLetter::from_refused(raw, e.to_string());
        dead.signature_failure = e.signature_failure();
        return Record::Dead(dead);
    }
    let decoded = match relay_envelope::decode(raw.value) {
        Ok(decoded) => decoded,
        Err(e) => return Record::Dead(DeadLetter::from_refused(raw, e.to_string())),
    };
    let envelope = decoded.envelope;
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
mod tests {
    use super::*;

    fn envelope(payload: &[u8]) -> relay_envelope::Envelope {
        relay_envelope::Envelope {
            version: relay_envelope::ENVELOPE_VERSION,
            message_id: "0b6f5c1e-8a0e-4c3e-9d37-5b0b0d3a1f10".into(),
            source: "payments".into(),
            topic: "payments.v1".into(),
            key: "acct-1".into(),
            payload: payload.to_vec(),
            sequence: 7,
            ..Default::default()
        }
    }

    fn raw(value: &[u8]) -> RawRecord<'_> {
        RawRecord {
            topic: "payments.v1",
            partition: 2,
            offset: 40,
            key: Some(b"acct-1"),
            value: Some(value),
            headers: Ok(&[]),
        }
    }

    fn dead_reason(record: Record) -> String {
        match record {
            Record::Dead(dead) => dead.error,
            Record::Store(row) => panic!("stored {}", row.message_id),
        }
    }

    #[test]
    fn stores_a_payload_at_the_limit_and_dead_letters_one_byte_over() {
        let bytes = relay_envelope::encode(&envelope(&[7; 100]));
        match classify(&raw(&bytes), 100, &Verification::off()) {
            Record::Store(row) => {
                assert_eq!(row.payload, vec![7; 100]);
                assert_eq!(row.sequence, 7);
                assert_eq!(row.position, Position { topic: "payments.v1".into(), partition: 2, offset: 40 });
            }
            Record::Dead(dead) => panic!("dead-lettered: {}", dead.error),
        }
        let reason = dead_reason(classify(&raw(&bytes), 99, &Verification::off()));
        assert_eq!(reason, "payload of 100 bytes exceeds the limit of 99 bytes");
    }

    #[test]
    fn dead_letters_garbage_and_future_versions_keeping_the_raw_bytes() {
        let garbage = b"\xde\xad\xbe\xef";
        match classify(&raw(garbage), 1000, &Verification::off()) {
            Record::Dead(dead) => {
                assert!(dead.error.contains("not a protobuf envelope"), "{}", dead.error);
                assert_eq!(dead.raw_value.as_deref(), Some(&garbage[..]));
                assert_eq!(dead.raw_key.as_deref(), Some(&b"acct-1"[..]));
                assert_eq!(dead.position.offset, 40);
            }
            Record::Store(_) => panic!("garbage stored"),
        }
        let mut future = envelope(b"x");
        future.version = 9;
        let reason =
            dead_reason(classify(&raw(&relay_envelope::encode(&future)), 1000, &Verification::off()));
        assert!(reason.contains("unsupported envelope version 9"), "{reason}");
    }

    #[test]
    fn checks_the_signature_before_decoding_and_keeps_the_headers_of_a_failure() {
        use relay_config::{MapEnv, Reader};
        let secret = "k3y-0123456789abcdefghijklmnopqrstuv";
        let env = MapEnv::new([("INBOX_VERIFY_KEYS", format!("k1={secret}"))]);
        let mut reader = Reader::new(&env);
        let verification = Verification::read(&mut reader);
        reader.finish().expect("valid");
        let signer = relay_envelope::SigningKey::new("k1", &secret.to_string().into()).expect("key");
        let bytes = relay_envelope::encode(&envelope(b"x"));
        let signature = signer.sign(&bytes);
        let signature_headers = [
            RawHeader { name: b"relay-key-id".to_vec(), value: Some(b"k1".to_vec()) },
            RawHeader { name: b"relay-signature".to_vec(), value: Some(signature.clone().into_bytes()) },
        ];
        let signed = RawRecord { headers: Ok(&signature_headers), ..raw(&bytes) };
        assert!(matches!(classify(&signed, 1000, &verification), Record::Store(_)));
        let garbage = b"\xde\xad";
        let forged = RawRecord { value: Some(garbage), ..signed };
        match classify(&forged, 1000, &verification) {
            Record::Dead(dead) => {
                assert_eq!(dead.error, "signature does not match the record value (key id \"k1\")");
                assert_eq!(dead.signature_failure, Some("mismatch"));
                assert_eq!(dead.raw_key_id.as_deref(), Some(&b"k1"[..]));
                assert_eq!(dead.raw_signature.as_deref(), Some(signature.as_bytes()));
            }
            Record::Store(_) => panic!("forged record stored"),
        }
        let reason = dead_reason(classify(&raw(&bytes), 1000, &verification));
        assert!(reason.starts_with("signature missing"), "{reason}");
        let Record::Dead(dead) = classify(&raw(garbage), 1000, &Verification::off()) else { panic!() };
        assert_eq!(dead.signature_failure, None, "not a signature failure when the check is off");
    }

    #[test]
    fn bad_headers_dead_letter_a_valid_envelope_keeping_every_header_whatever_the_signature_setting() {
        let bytes = relay_envelope::encode(&envelope(b"x"));
        let bad_name = vec![
            RawHeader { name: b"\xff\xfe".to_vec(), value: None },
            RawHeader { name: vec![], value: Some(vec![]) },
        ];
        let doubled = vec![
            RawHeader { name: b"relay-signature".to_vec(), value: Some(b"a".to_vec()) },
            RawHeader { name: b"relay-signature".to_vec(), value: Some(b"b".to_vec()) },
        ];
        for (headers, reason) in [
            (&bad_name, "header 1 has a name that is not UTF-8 (hex fffe)"),
            (&doubled, "header relay-signature appears 2 times; a record may carry it once"),
        ] {
            let record = RawRecord { headers: Ok(headers), ..raw(&bytes) };
            let Record::Dead(dead) = classify(&record, 1000, &Verification::off()) else { panic!("stored") };
            assert_eq!(dead.error, reason);
            assert_eq!(dead.raw_headers, KeptHeaders::Headers(headers.clone()));
            assert_eq!(dead.raw_value.as_deref(), Some(&bytes[..]));
        }
        let unreadable =
            RawRecord { headers: Err("the record's headers cannot be parsed: bad"), ..raw(&bytes) };
        let Record::Dead(dead) = classify(&unreadable, 1000, &Verification::off()) else { panic!("stored") };
        assert_eq!(dead.error, "the record's headers cannot be parsed: bad");
        assert_eq!(
            dead.raw_headers,
            KeptHeaders::Unreadable("the record's headers cannot be parsed: bad".into())
        );
    }

    /// `i64::MIN` microseconds used to be classified as storable, and the PostgreSQL driver
    /// would have written it as a date in the year 294,000 (the `consumer_record` fuzz target
    /// checks that every stored row fits PostgreSQL's range).
    #[test]
    fn dead_letters_a_creation_time_before_postgresql_can_store_and_keeps_its_earliest() {
        let mut ancient = envelope(b"x");
        ancient.created_at_unix_micros = i64::MIN;
        let reason =
            dead_reason(classify(&raw(&relay_envelope::encode(&ancient)), 1000, &Verification::off()));
        assert_eq!(
            reason,
            format!(
                "created_at_unix_micros {} is before PostgreSQL's earliest timestamp (4714 BC)",
                i64::MIN
            )
        );
        ancient.created_at_unix_micros = PG_MIN_UNIX_MICROS - 1;
        assert!(matches!(
            classify(&raw(&relay_envelope::encode(&ancient)), 1000, &Verification::off()),
            Record::Dead(_)
        ));
        ancient.created_at_unix_micros = PG_MIN_UNIX_MICROS;
        match classify(&raw(&relay_envelope::encode(&ancient)), 1000, &Verification::off()) {
            Record::Store(row) => {
                let before_1970 = UNIX_EPOCH.duration_since(row.created_at).expect("before 1970");
                assert_eq!(before_1970, Duration::from_micros(PG_MIN_UNIX_MICROS.unsigned_abs()));
            }
            Record::Dead(dead) => panic!("dead-lettered: {}", dead.error),
        }
    }
}
