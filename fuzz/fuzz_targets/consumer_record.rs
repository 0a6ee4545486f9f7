//! The consumer's record check (`relay_inbox::classify`) on arbitrary raw records, headers
//! included: never panics, and returns either a row PostgreSQL can store that says what the
//! envelope (or, for a CloudEvents record, its headers) says, or a dead letter that keeps the record's exact bytes, headers and position with
//! a short, storable reason. The headers go through librdkafka and back first (the code that
//! reads a consumed record's headers), so names of any bytes reach the check as a consumer
//! would see them.
#![no_main]

use std::{sync::OnceLock, time::UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use relay_fuzz::RawParts;
use relay_inbox::{
    classify, DeadLetter, InboxRow, KeptHeaders, Position, RawHeader, RawRecord, Record, Verification,
};
use relay_kafka::raw::NativeHeaders;

const TOPIC: &str = "payments.v1";
/// PostgreSQL's earliest `timestamptz` (4714-11-24 BC) in microseconds since 1970.
const PG_MIN_UNIX_MICROS: u64 = 210_866_803_200_000_000;
/// A dead-letter reason is logged and stored with every refused record; it must not grow with
/// the input.
const MAX_REASON_BYTES: usize = 1024;
const UNREADABLE: &str = "the record's headers cannot be parsed: Local: Bad message format";
const SECRET: &str = "fuzz-key-0123456789abcdefghijklmnopqrstuvwxyz";

/// The check with key `k1` and the key to sign with, made once.
fn keys() -> &'static (Verification, relay_envelope::SigningKey) {
    static KEYS: OnceLock<(Verification, relay_envelope::SigningKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let env = relay_config::MapEnv::new([("INBOX_VERIFY_KEYS", format!("k1={SECRET}"))]);
        let mut reader = relay_config::Reader::new(&env);
        let verification = Verification::read(&mut reader);
        reader.finish().expect("valid keys");
        let signer = relay_envelope::SigningKey::new("k1", &SECRET.to_string().into()).expect("key");
        (verification, signer)
    })
}

fuzz_target!(|data: &[u8]| {
    let parts = RawParts::parse(data);
    let signature = parts.signed.then(|| keys().1.sign(parts.value.unwrap_or_default()));
    let mut written = parts.headers.clone();
    if let Some(signature) = &signature {
        written.push((b"relay-key-id", Some(b"k1")));
        written.push((b"relay-signature", Some(signature.as_bytes())));
    }
    let read = NativeHeaders::new(&written).read();
    check_read_back(&written, &read);
    let headers: Result<&[RawHeader], &str> = if parts.unreadable { Err(UNREADABLE) } else { Ok(&read) };
    let raw = RawRecord {
        topic: TOPIC,
        partition: parts.partition,
        offset: parts.offset,
        key: parts.key,
        value: parts.value,
        headers,
    };
    let verification = if parts.signed { keys().0.clone() } else { Verification::off() };
    let position = Position { topic: TOPIC.into(), partition: parts.partition, offset: parts.offset };
    match classify(&raw, parts.limit, &verification) {
        Record::Store(row) => {
            check_headers_acceptable(headers);
            check_row(&row, &parts, &position, headers.unwrap_or_default());
        }
        Record::Dead(dead) => check_dead(&dead, &parts, &position, headers),
    }
});

/// librdkafka gives back every header in order, each name up to its first NUL.
fn check_read_back(written: &[(&[u8], Option<&[u8]>)], read: &[RawHeader]) {
    assert_eq!(read.len(), written.len());
    for ((name, value), header) in written.iter().zip(read) {
        let cut = name.iter().position(|b| *b == 0).map_or(*name, |nul| &name[..nul]);
        assert_eq!(header.name, cut);
        assert_eq!(header.value.as_deref(), *value);
    }
}

/// A stored record had readable headers, names all UTF-8, each signature header at most once.
fn check_headers_acceptable(headers: Result<&[RawHeader], &str>) {
    let headers = headers.expect("a record with unreadable headers was stored");
    assert!(headers.iter().all(|h| std::str::from_utf8(&h.name).is_ok()), "a name that is not UTF-8 passed");
    for name in [&b"relay-key-id"[..], b"relay-signature"] {
        assert!(headers.iter().filter(|h| h.name == name).count() <= 1, "a repeated signature header passed");
    }
}

fn check_row(row: &InboxRow, parts: &RawParts<'_>, position: &Position, headers: &[RawHeader]) {
    assert_eq!(&row.position, position);
    assert_eq!(row.topic, TOPIC, "stored a record whose envelope names another topic");
    assert!(row.payload.len() <= parts.limit, "payload of {} over limit {}", row.payload.len(), parts.limit);
    // A record with `ce_specversion` is a CloudEvent: its message is in its headers.
    let pairs: Vec<(&[u8], Option<&[u8]>)> =
        headers.iter().map(|h| (h.name.as_slice(), h.value.as_deref())).collect();
    let decoded = if relay_envelope::cloudevents::is_cloudevent(&pairs) {
        relay_envelope::cloudevents::decode(parts.key, parts.value, &pairs)
    } else {
        relay_envelope::decode(parts.value)
    };
    let decoded = decoded.expect("a stored record decodes");
    let envelope = &decoded.envelope;
    assert_eq!(row.message_id, decoded.message_id);
    assert_eq!(row.payload, envelope.payload);
    assert_eq!((&row.source, &row.topic, &row.key), (&envelope.source, &envelope.topic, &envelope.key));
    assert!(!row.source.is_empty() && !row.topic.is_empty());
    for text in [&row.source, &row.topic, &row.key, &row.msg_type, &row.content_type] {
        assert!(!text.contains('\0'), "NUL in stored text {text:?}");
    }
    for text in [&row.traceparent, &row.tracestate].into_iter().flatten() {
        assert!(!text.is_empty() && !text.contains('\0'), "bad trace text {text:?}");
    }
    let headers = row.headers.as_object().expect("headers are a JSON object");
    assert_eq!(headers.len(), envelope.headers.len());
    for (name, value) in headers {
        let value = value.as_str().expect("header values are strings");
        assert_eq!(envelope.headers.get(name).map(String::as_str), Some(value));
        assert!(!name.contains('\0') && !value.contains('\0'), "NUL in header {name:?}");
    }
    assert!(row.sequence >= 0 && row.sequence as u64 == envelope.sequence);
    if let Ok(before_1970) = UNIX_EPOCH.duration_since(row.created_at) {
        let micros = before_1970.as_micros();
        assert!(
            micros <= u128::from(PG_MIN_UNIX_MICROS),
            "created_at {micros} µs before 1970 is out of PostgreSQL's range"
        );
    }
}

fn check_dead(
    dead: &DeadLetter,
    parts: &RawParts<'_>,
    position: &Position,
    headers: Result<&[RawHeader], &str>,
) {
    assert_eq!(&dead.position, position);
    assert_eq!(dead.raw_key.as_deref(), parts.key, "dead letter lost the key");
    assert_eq!(dead.raw_value.as_deref(), parts.value, "dead letter lost the value");
    let kept = match headers {
        Ok(headers) => KeptHeaders::Headers(headers.to_vec()),
        Err(reason) => KeptHeaders::Unreadable(reason.to_string()),
    };
    assert_eq!(dead.raw_headers, kept, "dead letter lost the headers");
    assert_eq!(
        KeptHeaders::from_json(&kept.to_json()).as_ref(),
        Some(&kept),
        "raw_headers column round trip"
    );
    if let Ok(headers) = headers {
        if headers.iter().any(|h| std::str::from_utf8(&h.name).is_err()) {
            assert!(dead.error.contains("name that is not UTF-8"), "{}", dead.error);
        }
    }
    assert!(!dead.error.is_empty(), "dead letter without a reason");
    assert!(!dead.error.contains('\0'), "reason PostgreSQL cannot store: {:?}", dead.error);
    assert!(dead.error.len() <= MAX_REASON_BYTES, "reason of {} bytes", dead.error.len());
}
