//! Reading pending rows so that no single row can stop the outbox. The scan returns ids only;
//! the rows are then read together, and if the server cannot send one of them (text it cannot
//! convert to UTF-8, say), one by one: a row that fails on its own is handed back as unreadable,
//! with the server's reason, to be parked, and every other row flows. A payload over the
//! largest payload limit is not read at all, only its size, so a writer's oversized payloads
//! cannot exhaust the poller's memory: the row is parked from its size alone. A batch is bounded
//! by payload bytes as well as rows (`OUTBOX_BATCH_MAX_BYTES`): the scan returns each row's size,
//! and only the longest prefix that fits is read (at least one row, so a row at the largest
//! limit still moves), so the poller's memory does not grow with the payloads' size.
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
    /// The most payload bytes read in one batch (the first row is read whatever its size).
    pub batch_max_bytes: usize,
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

    /// Up to `batch_size` pending rows in id order, no more than `batch_max_bytes` of payload
    /// (and at least one row).
    pub(crate) async fn fetch(&self, client: &Client, scan: &Scan<'_>) -> Result<Vec<Fetched>, PollerError> {
        let highest = scan.exclude.iter().copied().max().unwrap_or(0);
        let (held_topics, held_keys): (Vec<&str>, Vec<&str>) =
            scan.held.iter().map(|(t, k)| (t.as_str(), k.as_str())).unzip();
        let pending = client
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
            .await?;
        let sized = pending.iter().map(|row| (row.get(0), row.get(1)));
        let ids = within_bytes(sized, scan.batch_max_bytes, self.largest_payload);
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

/// The longest prefix of `(id, payload bytes)` whose payloads add up to at most `max_bytes`,
/// and at least the first. A payload over `largest_payload` is not read (`fetch_rows.sql`), so it
/// counts as nothing.
fn within_bytes(sized: impl Iterator<Item = (i64, i64)>, max_bytes: usize, largest_payload: i64) -> Vec<i64> {
    let mut total: u64 = 0;
    let mut ids = Vec::new();
    for (id, length) in sized {
        let read = if length > largest_payload { 0 } else { u64::try_from(length).unwrap_or(0) };
        total = total.saturating_add(read);
        if !ids.is_empty() && total > max_bytes as u64 {
            break;
        }
        ids.push(id);
    }
    ids
}

/// Whether a failed read is about the data read (class 22, data exception: an untranslatable
/// character, an invalid byte sequence; class 54, a value too large to send), so that reading
/// the rows one at a time finds the row at fault, rather than about the session or the server.
fn about_one_row(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| matches!(&code.code()[..2], "22" | "54"))
}

#[cfg(test)]
mod tests {
    use super::within_bytes;

    #[test]
    fn a_batch_takes_the_rows_that_fit_its_bytes_and_always_the_first() {
        let sized =
            |lengths: &[i64]| lengths.iter().enumerate().map(|(i, l)| (i as i64 + 1, *l)).collect::<Vec<_>>();
        let limit = 1 << 20;
        // 1 MiB rows under an 8 MiB bound: eight of them.
        let rows = sized(&[1 << 20; 20]);
        assert_eq!(within_bytes(rows.into_iter(), 8 << 20, limit), (1..=8).collect::<Vec<_>>());
        // One row larger than the bound still moves, alone.
        assert_eq!(within_bytes(sized(&[3000, 10]).into_iter(), 1024, 4096), vec![1]);
        // Small rows: the row count bounds the batch, not the bytes.
        assert_eq!(within_bytes(sized(&[128; 5]).into_iter(), 8 << 20, limit).len(), 5);
        // A payload over the largest limit is never read, so it costs nothing.
        assert_eq!(within_bytes(sized(&[100, 1 << 30, 100]).into_iter(), 300, limit), vec![1, 2, 3]);
        // Stops at the first row that does not fit, to keep id order.
        assert_eq!(within_bytes(sized(&[600, 600, 10]).into_iter(), 1000, limit), vec![1]);
        assert_eq!(within_bytes(std::iter::empty(), 1000, limit), Vec::<i64>::new());
    }
}
