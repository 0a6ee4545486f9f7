//! A claimed message as the handler sees it: the stored envelope of one `relay.inbox` row.
use std::time::SystemTime;

/// One message handed to a [`crate::Handler`]; the columns `relay.claim` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The id the origin gave it; unique per inbox (the deduplication key).
    pub message_id: uuid::Uuid,
    /// The origin service (`OUTBOX_SOURCE` of its poller).
    pub source: String,
    /// The logical topic it was enqueued to.
    pub topic: String,
    /// Its ordering key: messages of one (source, topic, key) are handled one at a time, in
    /// `sequence` order.
    pub key: String,
    pub msg_type: String,
    pub content_type: String,
    /// The payload bytes as enqueued.
    pub payload: Vec<u8>,
    /// The application's headers (a JSON object of strings).
    pub headers: serde_json::Value,
    /// W3C trace context of the transaction that enqueued it, when there was one.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The origin's outbox id: increases in commit order per key.
    pub sequence: i64,
    /// When it was enqueued at the origin.
    pub created_at: SystemTime,
    /// When the inbox-consumer stored it.
    pub received_at: SystemTime,
    /// Failed attempts so far (0 on the first).
    pub attempts: i32,
}

impl Message {
    /// The message in a row of `claim.sql`.
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            message_id: row.try_get("message_id")?,
            source: row.try_get("source")?,
            topic: row.try_get("topic")?,
            key: row.try_get("key")?,
            msg_type: row.try_get("msg_type")?,
            content_type: row.try_get("content_type")?,
            payload: row.try_get("payload")?,
            headers: row.try_get("headers")?,
            traceparent: row.try_get("traceparent")?,
            tracestate: row.try_get("tracestate")?,
            sequence: row.try_get("sequence")?,
            created_at: row.try_get("created_at")?,
            received_at: row.try_get("received_at")?,
            attempts: row.try_get("attempts")?,
        })
    }
}
