//! The Rust face of the outbox contract: [`enqueue`] a message in the caller's transaction.
//!
//! It calls the same `relay.enqueue(...)` SQL function that Django or any other client calls, so
//! validation and ordering rules live in one place (the database). The message becomes visible
//! to the poller only if the caller's transaction commits, together with its business change.
//!
//! ```no_run
//! # async fn demo(client: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let tx = client.transaction().await?;
//! tx.execute("UPDATE account SET balance = balance - 10 WHERE id = 42", &[]).await?;
//! let id = relay_outbox::enqueue(&tx, &relay_outbox::Message::new("payments.v1", "42", b"{}")).await?;
//! tx.commit().await?;
//! # let _ = id; Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use tokio_postgres::Transaction;
use uuid::Uuid;

/// Why a message could not be enqueued. The transaction should be rolled back.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("relay.enqueue failed: {}", server_says(.0))]
    Database(#[from] tokio_postgres::Error),
}

/// The server's SQLSTATE and message (tokio-postgres alone says only "db error"), so an
/// application logging the error learns why `relay.enqueue` refused the message.
fn server_says(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub payload: &'a [u8],
    pub headers: BTreeMap<String, String>,
    pub msg_type: &'a str,
    pub content_type: &'a str,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

impl<'a> Message<'a> {
    /// A message with no headers, type or trace context, and an opaque payload.
    pub fn new(topic: &'a str, key: &'a str, payload: &'a [u8]) -> Self {
        Self {
            topic,
            key,
            payload,
            headers: BTreeMap::new(),
            msg_type: "",
            content_type: "application/octet-stream",
            traceparent: None,
            tracestate: None,
        }
    }
}

/// Enqueues `message` in `tx` and returns its message id.
pub async fn enqueue(tx: &Transaction<'_>, message: &Message<'_>) -> Result<Uuid, EnqueueError> {
    let headers = serde_json::to_value(&message.headers).unwrap_or_default();
    let row = tx
        .query_one(
            include_str!("enqueue.sql"),
            &[
                &message.topic,
                &message.key,
                &message.payload,
                &headers,
                &message.msg_type,
                &message.content_type,
                &message.traceparent,
                &message.tracestate,
            ],
        )
        .await?;
    Ok(row.get(0))
}
