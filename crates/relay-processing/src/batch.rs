//! One transaction of the worker protocol: claim, then each message's effect and mark under its
//! own savepoint, then COMMIT. Kept apart from the loop around it so that the order of the
//! statements, which is what makes a message's effect and its mark commit together, is in one
//! place.
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio_postgres::{Client, Statement, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Handler, Message};

/// What became of one claimed message, as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    Retry,
    Parked,
}

/// The outcomes of one committed transaction.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    pub done: u64,
    pub retried: u64,
    pub parked: u64,
}

impl Committed {
    pub(crate) fn handled(&self) -> u64 {
        self.done + self.retried + self.parked
    }
}

/// The protocol's statements, prepared once per connection.
#[derive(Debug)]
pub(crate) struct Statements {
    claim: Statement,
    done: Statement,
    failed: Statement,
}

impl Statements {
    pub(crate) async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            claim: client.prepare(include_str!("claim.sql")).await?,
            done: client.prepare(include_str!("done.sql")).await?,
            failed: client.prepare(include_str!("failed.sql")).await?,
        })
    }
}

/// Claims up to `limit` messages of `inbox` and handles them in one transaction; returns what
/// was committed (nothing when nothing was due). Messages claimed but not reached because
/// `shutdown` came are left unprocessed. An error means the transaction did not commit.
pub(crate) async fn process<H: Handler>(
    client: &mut Client,
    statements: &Statements,
    inbox: &str,
    limit: i32,
    handler: &H,
    shutdown: &CancellationToken,
) -> Result<Committed, tokio_postgres::Error> {
    let mut tx = client.transaction().await?;
    let rows = tx.query(&statements.claim, &[&inbox, &limit]).await?;
    let mut committed = Committed::default();
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(committed);
    }
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in &rows {
        if shutdown.is_cancelled() {
            break;
        }
        // The id first: with it, a row that cannot be turned into a message is recorded as a
        // failed attempt (retried, then parked with the reason) instead of ending the
        // transaction, which would roll the claim back and hand every worker the same row again.
        let message_id: uuid::Uuid = row.try_get("message_id")?;
        let message = match Message::from_row(row) {
            Ok(message) => message,
            Err(why) => {
                let attempts = row.try_get::<_, i32>("attempts").unwrap_or(0);
                let span = tracing::error_span!("relay.process", inbox, messaging.message.id = %message_id, attempt = attempts + 1);
                let outcome = record_failure(&mut tx, statements, inbox, message_id, attempts, &why)
                    .instrument(span)
                    .await?;
                outcomes.push(outcome);
                continue;
            }
        };
        let span = tracing::info_span!(
            "relay.process",
            inbox,
            messaging.message.id = %message.message_id,
            key = %message.key,
            sequence = message.sequence,
            attempt = message.attempts + 1,
        );
        if let Some(traceparent) = message.traceparent.as_deref() {
            let tracestate = message.tracestate.as_deref().unwrap_or("");
            relay_telemetry::follow_remote_parent(&span, traceparent, tracestate);
        }
        let outcome = handle_one(&mut tx, statements, inbox, &message, handler).instrument(span).await?;
        outcomes.push(outcome);
    }
    tx.commit().await?;
    for outcome in outcomes {
        match outcome {
            Outcome::Done => committed.done += 1,
            Outcome::Retry => committed.retried += 1,
            Outcome::Parked => committed.parked += 1,
        }
    }
    Ok(committed)
}

/// SAVEPOINT, the handler, `relay.done`, RELEASE; or ROLLBACK TO SAVEPOINT and `relay.failed`.
async fn handle_one<H: Handler>(
    tx: &mut Transaction<'_>,
    statements: &Statements,
    inbox: &str,
    message: &Message,
    handler: &H,
) -> Result<Outcome, tokio_postgres::Error> {
    let savepoint = tx.savepoint("relay_message").await?;
    let handled = AssertUnwindSafe(handler.handle(message, &savepoint)).catch_unwind().await;
    let failure = match handled {
        Ok(Ok(())) => {
            match savepoint.execute(&statements.done, &[&inbox, &message.message_id]).await {
                Ok(_) => {
                    savepoint.commit().await?;
                    tracing::debug!("message processed");
                    return Ok(Outcome::Done);
                }
                // Refused (for instance processed meanwhile by an operator's skip): the effect
                // must not stay, and the refusal is recorded like a handler's error.
                Err(e) if e.as_db_error().is_some() => {
                    format!("relay.done refused the message: {}", chain(&e))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Err(error)) => chain(error.as_ref()),
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic payload".into());
            format!("handler panicked: {text}")
        }
    };
    savepoint.rollback().await?;
    record_failure(tx, statements, inbox, message.message_id, message.attempts, &failure).await
}

/// `relay.failed` for message `id` (which had `attempts` failed attempts before this one).
async fn record_failure(
    tx: &mut Transaction<'_>,
    statements: &Statements,
    inbox: &str,
    id: uuid::Uuid,
    attempts: i32,
    failure: &str,
) -> Result<Outcome, tokio_postgres::Error> {
    let state: String = tx.query_one(&statements.failed, &[&inbox, &id, &failure]).await?.get(0);
    if state == "parked" {
        // Evidence (its span names the message): written every time, never summarised.
        tracing::error!(evidence = true, error = %failure, attempts = attempts + 1, "message parked; its key waits for an operator");
        Ok(Outcome::Parked)
    } else {
        tracing::warn!(error = %failure, attempts = attempts + 1, "message failed; it is retried");
        Ok(Outcome::Retry)
    }
}

/// An error and its causes on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("posting refused")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_is_recorded_with_its_causes() {
        let error = Outer(std::io::Error::other("account 42 is closed"));
        assert_eq!(chain(&error), "posting refused: account 42 is closed");
        let plain: Box<dyn std::error::Error + Send + Sync> = "insufficient funds".into();
        assert_eq!(chain(plain.as_ref()), "insufficient funds");
    }
}
