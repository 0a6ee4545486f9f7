//! What makes two records with one message id the same message: their content digest.
//!
//! A message id is stored once per inbox. A second record with that id is a redelivery (a
//! consumer restart, a re-published outbox row) only if it says the same thing; if it does
//! not, someone sent two different messages under one id, and dropping the second silently
//! would hide it. The content is every field the inbox stores from the envelope: source,
//! topic, key, type, content type, payload, headers (as a map: their order on the wire does not
//! count), trace context, sequence and creation time. Where the record sat in Kafka, when it
//! was received and the Kafka headers (signature included: a re-signed redelivery after a key
//! rotation is the same message) are not content.
use std::{collections::BTreeMap, time::UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::InboxRow;

/// SHA-256 of `row`'s content as lowercase hex: each field in a fixed order, length-prefixed,
/// so no two different contents share an encoding.
pub(crate) fn digest(row: &InboxRow) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    for text in [&row.source, &row.topic, &row.key, &row.msg_type, &row.content_type] {
        field(text.as_bytes());
    }
    field(&row.payload);
    let headers: BTreeMap<&str, String> = match &row.headers {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(name, value)| {
                (name.as_str(), value.as_str().map_or_else(|| value.to_string(), str::to_string))
            })
            .collect(),
        other => BTreeMap::from([("", other.to_string())]),
    };
    field(&(headers.len() as u64).to_le_bytes());
    for (name, value) in &headers {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    for trace in [&row.traceparent, &row.tracestate] {
        match trace {
            None => field(b"\x00"),
            Some(text) => field(&[b"\x01", text.as_bytes()].concat()),
        }
    }
    field(&row.sequence.to_le_bytes());
    field(&micros_since_1970(row).to_le_bytes());
    hex::encode(hash.finalize())
}

/// The creation time in microseconds, the precision PostgreSQL stores.
fn micros_since_1970(row: &InboxRow) -> i128 {
    match row.created_at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_micros() as i128,
        Err(before) => -(before.duration().as_micros() as i128),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Position;

    fn row() -> InboxRow {
        InboxRow {
            position: Position { topic: "t".into(), partition: 0, offset: 1 },
            message_id: uuid::Uuid::nil(),
            source: "s".into(),
            topic: "t".into(),
            key: "k".into(),
            msg_type: "payment.created".into(),
            content_type: "application/json".into(),
            payload: b"{}".to_vec(),
            headers: serde_json::json!({ "a": "1", "b": "2" }),
            traceparent: None,
            tracestate: None,
            sequence: 7,
            created_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001),
        }
    }

    #[test]
    fn every_content_field_changes_the_digest_and_nothing_else_does() {
        let base = digest(&row());
        let mut moved = row();
        moved.position = Position { topic: "t".into(), partition: 3, offset: 99 };
        assert_eq!(digest(&moved), base, "where it sat in Kafka is not content");
        let changes: Vec<fn(&mut InboxRow)> = vec![
            |r| r.source = "s2".into(),
            |r| r.topic = "T".into(),
            |r| r.key = "k2".into(),
            |r| r.msg_type = "x".into(),
            |r| r.content_type = "y".into(),
            |r| r.payload = b"{ }".to_vec(),
            |r| r.headers = serde_json::json!({ "a": "1", "b": "3" }),
            |r| r.headers = serde_json::json!({ "a": "1" }),
            |r| r.traceparent = Some(String::new()),
            |r| r.tracestate = Some("v=1".into()),
            |r| r.sequence = 8,
            |r| r.created_at -= Duration::from_micros(1),
            // Moving a byte between adjacent fields is a change too.
            |r| (r.source, r.topic) = ("st".into(), String::new()),
        ];
        for (n, change) in changes.into_iter().enumerate() {
            let mut changed = row();
            change(&mut changed);
            assert_ne!(digest(&changed), base, "change {n} went unnoticed");
        }
    }
}
