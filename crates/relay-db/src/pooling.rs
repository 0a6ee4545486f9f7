//! Start-up refusal of transaction- and statement-mode connection poolers (PgBouncer
//! `pool_mode=transaction` or `statement`). Behind one, consecutive transactions of a client
//! connection run on whichever server session is free: session advisory locks, `LISTEN`, session
//! settings and named prepared statements silently stop meaning anything, and two pollers can
//! both believe they lead. Relay refuses to start instead.
//!
//! The test: two client connections each ask for their server session's process id, in turns,
//! outside any transaction. Directly, through a plain TCP proxy or through a session-mode
//! pooler, each client connection has its own server session for its whole life, so each sees
//! one pid and the two pids differ: the test cannot fire. A transaction pooler hands the server
//! session one client just released to the next client that asks (PgBouncer reuses the most
//! recently released one first), so the two clients see the same pid, or one client sees its
//! pid change. Several turns make a busy pool that happens to answer otherwise unlikely to hide.
use std::collections::BTreeSet;

use relay_config::DatabaseUrl;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::{connect, DbError};

/// Turns of the test; each is two simple-protocol statements.
const TURNS: usize = 4;

/// Fails with [`DbError::TransactionPooling`] when `url` leads to a transaction- or
/// statement-mode pooler; connection errors are returned as they are (and are transient).
pub async fn refuse_transaction_pooling(url: &DatabaseUrl) -> Result<(), DbError> {
    let (a, b) = (connect(url).await?, connect(url).await?);
    let (mut seen_a, mut seen_b) = (BTreeSet::new(), BTreeSet::new());
    for _ in 0..TURNS {
        seen_a.extend(backend_pid(&a).await?);
        seen_b.extend(backend_pid(&b).await?);
    }
    let evidence = if seen_a.len() > 1 || seen_b.len() > 1 {
        Some(format!(
            "one client connection was served by several server sessions: pids {seen_a:?} and {seen_b:?}"
        ))
    } else if !seen_a.is_disjoint(&seen_b) {
        Some(format!("two client connections were served by one server session, pid {seen_a:?}"))
    } else {
        None
    };
    match evidence {
        Some(evidence) => Err(DbError::TransactionPooling { database: url.database_name().into(), evidence }),
        None => Ok(()),
    }
}

/// The server session's pid, by the simple protocol (one message, one transaction: it works
/// through any pooler, where a prepared statement might not). `None` if the answer is not an
/// integer, which then proves nothing either way.
async fn backend_pid(client: &Client) -> Result<Option<i32>, DbError> {
    let messages = client.simple_query("SELECT pg_backend_pid()").await?;
    Ok(messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
        _ => None,
    }))
}
