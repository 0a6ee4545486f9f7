//! The receiving side's worker: a Rust service acts on every message of its inbox exactly once,
//! in key order, and its business effect commits in the same transaction as the mark that the
//! message was acted on.
//!
//! The inbox-consumer stores each message once in `relay.inbox`; this crate runs the worker
//! protocol of inbox migration V6 against it. Per transaction, each of `PROCESSING_WORKERS`
//! workers:
//! 1. claims up to `PROCESSING_BATCH` messages with `relay.claim` (the oldest unprocessed
//!    message of each key, at most one per key, rows locked until COMMIT);
//! 2. per message: `SAVEPOINT`, the [`Handler`] (the business effect, on the same transaction),
//!    `relay.done`, `RELEASE`; or, when the handler fails (an error or a panic),
//!    `ROLLBACK TO SAVEPOINT` and `relay.failed` (retried with backoff, parked after
//!    `PROCESSING_MAX_ATTEMPTS`; a parked message makes its key wait for an operator);
//! 3. COMMIT. A crash anywhere before it rolls everything back and the messages are claimed again.
//!
//! Idle workers wait for a notification on channel `relay_inbox` (sent by the inbox-consumer
//! when it stored messages) or `PROCESSING_POLL_INTERVAL_MS`, whichever comes first. Shutdown
//! lets each worker finish the message in hand, commit, and stop.
//!
//! ```no_run
//! use relay_processing::{Handler, HandlerError, Message, ProcessingConfig};
//!
//! struct Ledger;
//!
//! impl Handler for Ledger {
//!     async fn handle(&self, message: &Message, tx: &tokio_postgres::Transaction<'_>) -> Result<(), HandlerError> {
//!         tx.execute("INSERT INTO postings (message_id, body) VALUES ($1, $2)", &[&message.message_id, &message.payload])
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ProcessingConfig::from_env(&relay_config::ProcessEnv)?;
//! relay_processing::run(config, Ledger, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod batch;
mod config;
mod message;
mod wake;
mod worker;

use std::future::Future;

pub use config::{names, ProcessingConfig};
pub use message::Message;
pub use worker::run;

/// What a handler returns when it could not act on a message; its text (with its causes) is
/// recorded as the attempt's error and, after the last attempt, as the park reason.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The business effect of one message.
///
/// Called with the claimed message and the open transaction (a savepoint of the worker's
/// transaction): do the effect's writes on `tx` and nothing else with the database, so they
/// commit with the mark or not at all. Return an error to have the effect rolled back and the
/// attempt recorded; a panic counts as an error. The same message may be handed over again
/// after a crash or a failed attempt (never after a commit that marked it done), so effects
/// outside the database must be idempotent.
pub trait Handler: Send + Sync + 'static {
    /// Acts on `message` inside `tx`.
    fn handle<'a>(
        &'a self,
        message: &'a Message,
        tx: &'a tokio_postgres::Transaction<'a>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// Errors that stop [`run`] at start. Trouble while running (the database going away, a
/// refused statement) is logged and retried with backoff instead.
#[derive(Debug, thiserror::Error)]
pub enum ProcessingError {
    #[error(transparent)]
    Db(#[from] relay_db::DbError),
    #[error(
        "database {database} lacks the processing functions (relay.enable_processing and relay.claim): \
         apply crates/relay-db/migrations/inbox/ up to V6__processing.sql, or start with RELAY_MIGRATE=true"
    )]
    NotMigrated { database: String },
    #[error("inbox {inbox:?} could not be enabled for processing: {reason}")]
    Enable { inbox: String, reason: String },
}
