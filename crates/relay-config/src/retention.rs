//! Retention settings, shared by the poller (published outbox rows) and the consumer (inbox
//! dedup entries): both read the same three variables under their own prefix.
use std::time::Duration;

use crate::Reader;

/// `{prefix}RETENTION_HOURS`, `{prefix}RETENTION_BATCH` and `{prefix}RETENTION_INTERVAL_MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Rows older than this many hours are deleted.
    pub hours: i32,
    /// Rows deleted per statement; each batch is its own short transaction.
    pub batch: i64,
    /// Time between retention passes.
    pub interval: Duration,
}

/// Rows deleted per statement by default, and at most.
const DEFAULT_BATCH: u64 = 1000;
const MAX_BATCH: u64 = 100_000;
/// About 100 years: anything longer is a typo.
const MAX_HOURS: u64 = 876_000;

impl Retention {
    /// Reads the settings for a service whose variables start with `prefix` (`OUTBOX_`,
    /// `INBOX_`). `None` when `{prefix}RETENTION_HOURS` is unset or 0: keep forever. The batch
    /// and interval are checked either way, so a typo is reported before retention is turned on.
    pub fn read(reader: &mut Reader<'_>, prefix: &str) -> Option<Self> {
        let hours = reader.number(&format!("{prefix}RETENTION_HOURS"), 0, 0, MAX_HOURS);
        let batch = reader.number(&format!("{prefix}RETENTION_BATCH"), DEFAULT_BATCH, 1, MAX_BATCH);
        let interval = reader.millis(&format!("{prefix}RETENTION_INTERVAL_MS"), 60_000, 1, 86_400_000);
        (hours > 0).then_some(Self { hours: hours as i32, batch: batch as i64, interval })
    }
}
