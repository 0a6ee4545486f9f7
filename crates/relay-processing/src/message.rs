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
    /// The message in a row of `claim.sql`, or why the row cannot be one (a column the driver
    /// cannot decode, headers that are not a JSON object of strings): text for `relay.failed`.
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Self, String> {
        fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
            row: &'a tokio_postgres::Row,
            name: &str,
        ) -> Result<T, String> {
            row.try_get(name).map_err(|e| {
                let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
                format!("the message cannot be decoded: column {name}: {e}{cause}")
            })
        }
        let headers: serde_json::Value = column(row, "headers")?;
        let strings = headers.as_object().is_some_and(|o| o.values().all(serde_json::Value::is_string));
        if !strings {
            let mut shown = headers.to_string();
            if shown.len() > 200 {
                let end = (0..=200).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
                shown.truncate(end);
                shown.push_str("...");
            }
            return Err(format!(
                "the message cannot be decoded: column headers: not a JSON object of strings: {shown}"
            ));
        }
        Ok(Self {
            message_id: column(row, "message_id")?,
            source: column(row, "source")?,
            topic: column(row, "topic")?,
            key: column(row, "key")?,
            msg_type: column(row, "msg_type")?,
            content_type: column(row, "content_type")?,
            payload: column(row, "payload")?,
            headers,
            traceparent: column(row, "traceparent")?,
            tracestate: column(row, "tracestate")?,
            sequence: column(row, "sequence")?,
            created_at: column(row, "created_at")?,
            received_at: column(row, "received_at")?,
            attempts: column(row, "attempts")?,
        })
    }
}
