//! One inbox against one outbox: bucket summaries first, rows only where buckets differ.
//!
//! Both sides bucket by outbox id (the inbox keeps it as `sequence`) and compute, per bucket, a
//! count and the sum of a 64-bit hash of (message id, topic, key, payload digest). Equal buckets
//! hold the same messages with overwhelming probability, so only differing buckets are read row
//! by row. Only rows created before one cutoff, taken from the outbox database's clock, are
//! compared on both sides, so messages still in flight are not reported. The id range is read in
//! chunks of [`CHUNK_BUCKETS`] whole buckets, so the progress bar advances as messages are compared.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    progress::Progress,
    report::{Ids, PairReport, Purged},
};

/// Buckets summarised per query, so that progress shows as the id range is read. Empty id
/// ranges between rows are jumped over, not walked.
const CHUNK_BUCKETS: i64 = 16;

/// Rows and approximate bytes received, and outbox messages compared, for the report's stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Meter {
    pub rows: u64,
    pub bytes: u64,
    pub messages: u64,
}

impl Meter {
    fn add(&mut self, rows: usize, bytes_per_row: u64) {
        self.rows += rows as u64;
        self.bytes += rows as u64 * bytes_per_row;
    }
}

/// What is fixed for one comparison.
pub(crate) struct Scope<'a> {
    pub inbox: &'a str,
    pub source: &'a str,
    pub topics: &'a [String],
    /// Messages created before this, by the outbox database's clock, are compared.
    pub cutoff: SystemTime,
    pub bucket_size: i64,
    pub max_ids: usize,
    /// Start at this id (service mode: everything below was verified in an earlier cycle).
    pub watermark: i64,
    /// Service mode: clean buckets wholly below this id are final and skipped from now on
    /// (see [`crate::horizon`]).
    pub final_below: Option<i64>,
}

type Bucket = (i64, String);

async fn purged_below(
    outbox: &Client,
    inbox: &Client,
    scope: &Scope<'_>,
) -> Result<(i64, i64), tokio_postgres::Error> {
    let origin = outbox.query_opt("SELECT below_id FROM relay.outbox_purged", &[]).await?;
    let receiver = inbox
        .query_opt(
            "SELECT below_sequence FROM relay.inbox_purged WHERE inbox = $1 AND source = $2",
            &[&scope.inbox, &scope.source],
        )
        .await?;
    Ok((origin.map_or(0, |r| r.get(0)), receiver.map_or(0, |r| r.get(0))))
}

/// The number of outbox messages [`compare`] will check for `scope`, for the progress bar.
pub(crate) async fn to_compare(
    outbox: &Client,
    inbox: &Client,
    scope: &Scope<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let (origin_below, inbox_below) = purged_below(outbox, inbox, scope).await?;
    let from = origin_below.max(inbox_below).max(scope.watermark);
    let row =
        outbox.query_one(include_str!("sql/pair_count.sql"), &[&scope.topics, &scope.cutoff, &from]).await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// Compares and returns the report with the next watermark.
pub(crate) async fn compare(
    outbox: &Client,
    inbox: &Client,
    scope: &Scope<'_>,
    meter: &mut Meter,
    progress: &Progress,
) -> Result<(PairReport, i64), tokio_postgres::Error> {
    let (origin_below, inbox_below) = purged_below(outbox, inbox, scope).await?;
    let from = origin_below.max(inbox_below).max(scope.watermark);
    let b = scope.bucket_size;
    let chunk = b.saturating_mul(CHUNK_BUCKETS);
    let newest_id: i64 = outbox.query_one("SELECT coalesce(max(id), 0) FROM relay.outbox", &[]).await?.get(0);
    let newest_sequence: i64 = inbox
        .query_one(
            "SELECT coalesce(max(sequence), 0) FROM relay.inbox WHERE inbox = $1 AND source = $2",
            &[&scope.inbox, &scope.source],
        )
        .await?
        .get(0);
    meter.add(2, 8);
    let newest = newest_id.max(newest_sequence);

    let mut all = BTreeSet::new();
    let mut differing = BTreeSet::new();
    let (mut missing, mut extra, mut mismatched) = (Vec::new(), Vec::new(), Ids::default());
    let mut lo = from;
    loop {
        // Whole buckets up to the next chunk boundary; the last chunk is open-ended, so rows
        // committed while the pass runs are seen as a single query would have seen them.
        let hi = match chunk_end(lo, chunk) {
            Some(boundary) if boundary <= newest => boundary,
            _ => i64::MAX,
        };
        let last = last_id(hi);
        let rows = outbox
            .query(include_str!("sql/outbox_buckets.sql"), &[&scope.topics, &scope.cutoff, &lo, &b, &last])
            .await?;
        meter.add(rows.len(), 8 + 8 + 24);
        let origin_buckets: HashMap<i64, Bucket> =
            rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
        let rows = inbox
            .query(
                include_str!("sql/inbox_buckets.sql"),
                &[&scope.inbox, &scope.source, &scope.topics, &scope.cutoff, &lo, &b, &last],
            )
            .await?;
        meter.add(rows.len(), 8 + 8 + 24);
        let inbox_buckets: HashMap<i64, Bucket> =
            rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
        let here: BTreeSet<i64> = origin_buckets.keys().chain(inbox_buckets.keys()).copied().collect();
        for &bucket in here.iter().filter(|k| origin_buckets.get(k) != inbox_buckets.get(k)) {
            let (from_id, to_id) = ((bucket * b).max(lo), bucket_end(bucket, b).min(hi));
            drill(
                outbox,
                inbox,
                scope,
                from_id,
                last_id(to_id),
                meter,
                &mut missing,
                &mut extra,
                &mut mismatched,
            )
            .await?;
            differing.insert(bucket);
        }
        all.extend(here);
        let messages: u64 = origin_buckets.values().map(|(n, _)| (*n).max(0) as u64).sum();
        meter.messages += messages;
        progress.advance(messages);
        if hi == i64::MAX {
            break;
        }
        // Ids need not be dense (a sequence that starts high, gaps, a forged inbox sequence far
        // above every id): the next chunk starts at the bucket of the next existing row, so the
        // walk costs queries per chunk of rows, not per chunk of id space.
        lo = match next_row(outbox, inbox, scope, hi, meter).await? {
            Some(next) => hi.max(next - next % b),
            None => hi,
        };
    }

    let mut report = PairReport {
        inbox: scope.inbox.to_string(),
        source: scope.source.to_string(),
        cutoff_unix: unix(scope.cutoff),
        missing: Ids::default(),
        extra: Ids::default(),
        mismatched,
        lag_messages: 0,
        lag_seconds: 0.0,
        purged_at_origin: None,
        purged_at_inbox: None,
        buckets_compared: all.len() as u64,
        buckets_differing: differing.len() as u64,
    };
    // A message present on both sides under a different sequence or topic is one mismatch, not a
    // loss plus a stranger.
    let missing_set: HashSet<Uuid> = missing.iter().copied().collect();
    let moved: HashSet<Uuid> = extra.iter().copied().filter(|id| missing_set.contains(id)).collect();
    for id in missing {
        if moved.contains(&id) {
            report.mismatched.push(id, scope.max_ids);
        } else {
            report.missing.push(id, scope.max_ids);
        }
    }
    for id in extra.into_iter().filter(|id| !moved.contains(id)) {
        report.extra.push(id, scope.max_ids);
    }

    purges(outbox, inbox, scope, origin_below, inbox_below, &mut report, meter).await?;
    lag(outbox, inbox, scope, &mut report, meter).await?;

    // The next cycle may start after the leading run of clean buckets lying wholly below the
    // final bound (anything at or above it can still change or still gain a row).
    let mut watermark = from;
    if let Some(final_below) = scope.final_below {
        for bucket in &all {
            let end = bucket_end(*bucket, b);
            if differing.contains(bucket) || end > final_below {
                break;
            }
            watermark = watermark.max(end);
        }
    }
    Ok((report, watermark))
}

/// The first id of the chunk after the one holding `lo`; `None` past `i64::MAX`.
fn chunk_end(lo: i64, chunk: i64) -> Option<i64> {
    lo.checked_div(chunk)?.checked_add(1)?.checked_mul(chunk)
}

/// The first id after `bucket`, or `i64::MAX` when that lies past the id range.
fn bucket_end(bucket: i64, size: i64) -> i64 {
    bucket.checked_add(1).and_then(|n| n.checked_mul(size)).unwrap_or(i64::MAX)
}

/// The last id of the range ending at `end` (exclusive); `i64::MAX` stands for no end, so a row
/// with id `i64::MAX` is still compared.
fn last_id(end: i64) -> i64 {
    if end == i64::MAX {
        end
    } else {
        end - 1
    }
}

/// The lowest outbox id or inbox sequence at or above `from` in `scope`, if any (both indexed).
async fn next_row(
    outbox: &Client,
    inbox: &Client,
    scope: &Scope<'_>,
    from: i64,
    meter: &mut Meter,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let origin: Option<i64> = outbox.query_one(include_str!("sql/outbox_next.sql"), &[&from]).await?.get(0);
    let receiver: Option<i64> = inbox
        .query_one(include_str!("sql/inbox_next.sql"), &[&scope.inbox, &scope.source, &from])
        .await?
        .get(0);
    meter.add(2, 8);
    Ok(origin.into_iter().chain(receiver).min())
}

/// Seconds since the Unix epoch.
pub(crate) fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[allow(clippy::too_many_arguments)]
async fn drill(
    outbox: &Client,
    inbox: &Client,
    scope: &Scope<'_>,
    lo: i64,
    hi: i64,
    meter: &mut Meter,
    missing: &mut Vec<Uuid>,
    extra: &mut Vec<Uuid>,
    mismatched: &mut Ids,
) -> Result<(), tokio_postgres::Error> {
    let sent =
        outbox.query(include_str!("sql/outbox_rows.sql"), &[&scope.topics, &scope.cutoff, &lo, &hi]).await?;
    meter.add(sent.len(), 16 + 8 + 1);
    let received = inbox
        .query(
            include_str!("sql/inbox_rows.sql"),
            &[&scope.inbox, &scope.source, &scope.topics, &scope.cutoff, &lo, &hi],
        )
        .await?;
    meter.add(received.len(), 16 + 8);
    let received: HashMap<Uuid, i64> = received.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut seen = HashSet::new();
    for row in &sent {
        let (id, hash, published): (Uuid, i64, bool) = (row.get(0), row.get(1), row.get(2));
        seen.insert(id);
        match received.get(&id) {
            // Unpublished rows are not missing yet: the stuck check reports them past its threshold.
            None if published => missing.push(id),
            None => {}
            Some(h) if *h != hash => mismatched.push(id, scope.max_ids),
            Some(_) => {}
        }
    }
    extra.extend(received.keys().filter(|id| !seen.contains(id)));
    Ok(())
}

async fn purges(
    outbox: &Client,
    inbox: &Client,
    scope: &Scope<'_>,
    origin_below: i64,
    inbox_below: i64,
    report: &mut PairReport,
    meter: &mut Meter,
) -> Result<(), tokio_postgres::Error> {
    if origin_below > 0 {
        let row = inbox
            .query_one(
                "SELECT count(*) FROM relay.inbox WHERE inbox = $1 AND source = $2 AND topic = ANY($3) AND sequence < $4",
                &[&scope.inbox, &scope.source, &scope.topics, &origin_below],
            )
            .await?;
        meter.add(1, 8);
        report.purged_at_origin = Some(Purged { below: origin_below, unverifiable_rows: row.get(0) });
    }
    if inbox_below > 0 {
        let row = outbox
            .query_one(
                "SELECT count(*) FROM relay.outbox WHERE topic = ANY($1) AND id < $2",
                &[&scope.topics, &inbox_below],
            )
            .await?;
        meter.add(1, 8);
        report.purged_at_inbox = Some(Purged { below: inbox_below, unverifiable_rows: row.get(0) });
    }
    Ok(())
}

async fn lag(
    outbox: &Client,
    inbox: &Client,
    scope: &Scope<'_>,
    report: &mut PairReport,
    meter: &mut Meter,
) -> Result<(), tokio_postgres::Error> {
    // What the inbox has held: its newest row, or, when retention purged up to the end, the
    // sequence just below its purge marker.
    let newest: i64 =
        inbox.query_one(include_str!("sql/inbox_newest.sql"), &[&scope.inbox, &scope.source]).await?.get(0);
    let row = outbox.query_one(include_str!("sql/lag.sql"), &[&scope.topics, &newest]).await?;
    meter.add(2, 16);
    report.lag_messages = row.get(0);
    report.lag_seconds = row.get(1);
    Ok(())
}
