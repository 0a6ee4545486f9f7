//! The consumer's record check (`relay_inbox::classify`) on arbitrary raw parts: never panics,
//! and returns either a row PostgreSQL can store that says what the envelope says, or a dead
//! letter that keeps the record's exact bytes and position with a short, storable reason.
#![no_main]

use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use relay_fuzz::RawParts;
use relay_inbox::{classify, DeadLetter, InboxRow, Position, RawRecord, Record, Verification};

const TOPIC: &str = "payments.v1";
/// PostgreSQL's earliest `timestamptz` (4714-11-24 BC) in microseconds since 1970.
const PG_MIN_UNIX_MICROS: u64 = 210_866_803_200_000_000;
/// A dead-letter reason is logged and stored with every refused record; it must not grow with
/// the input.
const MAX_REASON_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let parts = RawParts::parse(data);
    let raw = RawRecord {
        topic: TOPIC,
        partition: parts.partition,
        offset: parts.offset,
        key: parts.key,
        value: parts.value,
        key_id: None,
        signature: None,
    };
    let position = Position { topic: TOPIC.into(), partition: parts.partition, offset: parts.offset };
    match classify(&raw, parts.limit, &Verification::off()) {
        Record::Store(row) => check_row(&row, &parts, &position),
        Record::Dead(dead) => check_dead(&dead, &parts, &position),
    }
});

fn check_row(row: &InboxRow, parts: &RawParts<'_>, position: &Position) {
    assert_eq!(&row.position, position);
    assert!(row.payload.len() <= parts.limit, "payload of {} over limit {}", row.payload.len(), parts.limit);
    let decoded = relay_envelope::decode(parts.value).expect("a stored record decodes");
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

fn check_dead(dead: &DeadLetter, parts: &RawParts<'_>, position: &Position) {
    assert_eq!(&dead.position, position);
    assert_eq!(dead.raw_key.as_deref(), parts.key, "dead letter lost the key");
    assert_eq!(dead.raw_value.as_deref(), parts.value, "dead letter lost the value");
    assert!(!dead.error.is_empty(), "dead letter without a reason");
    assert!(!dead.error.contains('\0'), "reason PostgreSQL cannot store: {:?}", dead.error);
    assert!(dead.error.len() <= MAX_REASON_BYTES, "reason of {} bytes", dead.error.len());
}
