//! Reading pending rows so that no single row can stop the outbox. The scan returns ids only;
//! the rows are then read together, and if the server cannot send one of them (text it cannot
//! convert to UTF-8, say), one by one: a row that fails on its own is handed back as unreadable,
//! with the server's reason, to be parked, and every other row flows. A payload over the
//! largest payload limit is not read at all, only its size, so a writer's oversized payloads
//! cannot exhaust the poller's memory: the row is parked from its size alone.
use tokio_postgres::{Client, Row, Statement};

use crate::PollerError;

/// A pending row, or the id of one that cannot be read and why.
pub(crate) enum Fetched {
    Row(Row),
    Unreadable { id: i64, reason: String },
}

/// What to leave out of a scan.
pub(crate) struct Scan<'a> {
    pub topics: &'a [String],
    pub batch_size: i64,
    /// Rows in flight or awaiting their delivery report.
    pub exclude: &'a [i64],
    /// `(topic, key)` pairs whose rows wait for an earlier row's delivery report.
    pub held: &'a [(String, String)],
    /// Topics left out whole (those with stragglers, once the stragglers reach a batch).
    pub held_topics: &'a [String],
    pub parked_holds_key: bool,
}

/// The two statements, prepared once per leadership, and the largest payload read (bytes).
pub(crate) struct Fetcher {
    ids: Statement,
    rows: Statement,
    largest_payload: i64,
}

impl Fetcher {
    /// `largest_payload`: the largest payload limit of any topic, in bytes; a larger payload is
    /// not read (the row's `payload` is NULL and `payload_length` its size).
    pub(crate) async fn prepare(client: &Client, largest_payload: usize) -> Result<Self, PollerError> {
        Ok(Self {
            ids: client.prepare(include_str!("fetch_pending.sql")).await?,
            rows: client.prepare(include_str!("fetch_rows.sql")).await?,
            largest_payload: i64::try_from(largest_payload).unwrap_or(i64::MAX),
        })
    }

    /// Up to `batch_size` pending rows in id order.
    pub(crate) async fn fetch(&self, client: &Client, scan: &Scan<'_>) -> Result<Vec<Fetched>, PollerError> {
        let highest = scan.exclude.iter().copied().max().unwrap_or(0);
        let (held_topics, held_keys): (Vec<&str>, Vec<&str>) =
            scan.held.iter().map(|(t, k)| (t.as_str(), k.as_str())).unzip();
        let ids: Vec<i64> = client
            .query(
                &self.ids,
                &[
                    &scan.topics,
                    &scan.batch_size,
                    &highest,
                    &scan.exclude,
                    &scan.parked_holds_key,
                    &held_topics,
                    &held_keys,
                    &scan.held_topics,
                ],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match client.query(&self.rows, &[&ids, &self.largest_payload]).await {
            Ok(rows) => Ok(rows.into_iter().map(Fetched::Row).collect()),
            Err(e) if about_one_row(&e) => {
                tracing::warn!(error = %relay_db::describe(&e), "a pending row cannot be read; reading rows one by one");
                let mut fetched = Vec::with_capacity(ids.len());
                for id in ids {
                    match client.query(&self.rows, &[&vec![id], &self.largest_payload]).await {
                        Ok(rows) => fetched.extend(rows.into_iter().map(Fetched::Row)),
                        Err(e) if about_one_row(&e) => fetched.push(Fetched::Unreadable {
                            id,
                            reason: format!("the row cannot be read: {}", relay_db::describe(&e)),
                        }),
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(fetched)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a failed read is about the data read (class 22, data exception: an untranslatable
/// character, an invalid byte sequence; class 54, a value too large to send), so that reading
/// the rows one at a time finds the row at fault, rather than about the session or the server.
fn about_one_row(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| matches!(&code.code()[..2], "22" | "54"))
}
