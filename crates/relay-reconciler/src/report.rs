//! What a reconciliation found, and how it is shown: a table for people, JSON for machines.
//! Names and reasons pass through `relay_config::printable` (table) and `json_printable`
//! (JSON), so writer-chosen text cannot drive the operator's terminal.
use std::fmt::Write as _;

use relay_config::{json_printable, printable};
use serde::Serialize;
use uuid::Uuid;

/// A list of message ids, capped at `--max-ids`, with the full count.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Ids {
    pub count: u64,
    pub ids: Vec<Uuid>,
}

impl Ids {
    /// From rows whose column 0 is a message id and column `total` the full count (a window
    /// `count(*) OVER ()` over a `LIMIT`ed query).
    pub fn from_rows(rows: &[tokio_postgres::Row], total: usize) -> Self {
        Self {
            count: rows.first().map_or(0, |r| r.get::<_, i64>(total) as u64),
            ids: rows.iter().map(|r| r.get(0)).collect(),
        }
    }

    pub fn push(&mut self, id: Uuid, max: usize) {
        self.count += 1;
        if self.ids.len() < max {
            self.ids.push(id);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A range that retention removed on one side, so it could not be compared.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Purged {
    /// Ids (outbox) or sequences (inbox) below this were purged.
    pub below: i64,
    /// Rows on the other side inside the purged range, not checked.
    pub unverifiable_rows: i64,
}

/// One inbox against one outbox.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    pub inbox: String,
    pub source: String,
    /// Messages created before this (Unix seconds, on the outbox database's clock) were compared.
    pub cutoff_unix: f64,
    pub missing: Ids,
    pub extra: Ids,
    pub mismatched: Ids,
    /// Published outbox rows newer than the newest the inbox holds.
    pub lag_messages: i64,
    /// Age of the oldest of those.
    pub lag_seconds: f64,
    pub purged_at_origin: Option<Purged>,
    pub purged_at_inbox: Option<Purged>,
    pub buckets_compared: u64,
    pub buckets_differing: u64,
}

/// Findings about one inbox by itself.
#[derive(Debug, Clone, Serialize)]
pub struct InboxReport {
    pub inbox: String,
    /// Inbox rows that belong to no configured outbox or subscription.
    pub extra_unknown_source_or_topic: Ids,
    /// Messages its receiving service has not processed; `None` when the inbox does not process
    /// messages through `relay.claim`.
    pub unprocessed: Option<Unprocessed>,
}

/// The "unprocessed" finding of an inbox with processing enabled.
#[derive(Debug, Clone, Serialize)]
pub struct Unprocessed {
    /// The threshold: messages stored longer ago than this many seconds are late.
    pub after_secs: u64,
    /// Stored before the threshold, not processed, not parked.
    pub late: Ids,
    /// Parked by the receiving service after its last attempt; each holds up its key.
    pub parked_count: u64,
    pub parked: Vec<ParkedRow>,
}

impl Unprocessed {
    pub fn is_empty(&self) -> bool {
        self.late.is_empty() && self.parked_count == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ParkedRow {
    pub message_id: Uuid,
    pub reason: String,
}

/// Findings about one outbox by itself.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxReport {
    pub source: String,
    pub stuck: Ids,
    pub parked_count: u64,
    pub parked: Vec<ParkedRow>,
}

/// How much was read to reach the verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub rows_read: u64,
    /// Bytes of result data received from the databases (approximate: the values' sizes).
    pub bytes_read: u64,
    /// Outbox messages compared (whole buckets summarised or read row by row).
    pub messages_compared: u64,
    pub elapsed_ms: u64,
}

/// A whole reconciliation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clean: bool,
    /// Messages created before this (Unix seconds) were checked: the earliest of the outboxes'
    /// cutoffs, each taken on its database's clock (every pair has its own).
    pub cutoff_unix: f64,
    pub pairs: Vec<PairReport>,
    pub inboxes: Vec<InboxReport>,
    pub outboxes: Vec<OutboxReport>,
    pub stats: Stats,
}

impl Report {
    /// True when nothing is missing, extra, mismatched, stuck, parked or unprocessed.
    pub fn compute_clean(&self) -> bool {
        self.pairs.iter().all(|p| p.missing.is_empty() && p.extra.is_empty() && p.mismatched.is_empty())
            && self.inboxes.iter().all(|i| {
                i.extra_unknown_source_or_topic.is_empty()
                    && i.unprocessed.as_ref().is_none_or(Unprocessed::is_empty)
            })
            && self.outboxes.iter().all(|o| o.stuck.is_empty() && o.parked_count == 0)
    }

    pub fn to_json(&self) -> String {
        json_printable(
            serde_json::to_string_pretty(self)
                .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string())),
        )
    }

    /// A table, then every listed id under its finding; every name and reason escaped.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:>8} {:>8} {:>10} {:>12} {:>10} {:>8}",
            "inbox", "source", "missing", "extra", "mismatched", "lag msgs", "lag secs", "buckets"
        );
        for p in &self.pairs {
            let _ = writeln!(
                out,
                "{:<16} {:<20} {:>8} {:>8} {:>10} {:>12} {:>10.1} {:>3}/{:<4}",
                printable(&p.inbox),
                printable(&p.source),
                p.missing.count,
                p.extra.count,
                p.mismatched.count,
                p.lag_messages,
                p.lag_seconds,
                p.buckets_differing,
                p.buckets_compared
            );
        }
        for p in &self.pairs {
            for (what, ids) in [("missing", &p.missing), ("extra", &p.extra), ("mismatched", &p.mismatched)] {
                list(&mut out, &format!("{what} in {} from {}", p.inbox, p.source), ids);
            }
            if let Some(purged) = &p.purged_at_origin {
                let _ = writeln!(
                    out,
                    "note: outbox {} purged below id {}; {} rows of inbox {} in that range were not checked",
                    printable(&p.source),
                    purged.below,
                    purged.unverifiable_rows,
                    printable(&p.inbox)
                );
            }
            if let Some(purged) = &p.purged_at_inbox {
                let _ = writeln!(
                    out,
                    "note: inbox {} purged {} below sequence {}; {} outbox rows in that range were not checked",
                    printable(&p.inbox),
                    printable(&p.source),
                    purged.below,
                    purged.unverifiable_rows
                );
            }
        }
        for i in &self.inboxes {
            list(
                &mut out,
                &format!("extra in {} (unknown source or topic)", i.inbox),
                &i.extra_unknown_source_or_topic,
            );
            if let Some(u) = &i.unprocessed {
                list(&mut out, &format!("unprocessed in {} for over {}s", i.inbox, u.after_secs), &u.late);
                parked(
                    &mut out,
                    &format!("parked by the receiving service of {}", i.inbox),
                    u.parked_count,
                    &u.parked,
                );
            }
        }
        for o in &self.outboxes {
            list(&mut out, &format!("stuck in outbox {}", o.source), &o.stuck);
            parked(&mut out, &format!("parked in outbox {}", o.source), o.parked_count, &o.parked);
        }
        let _ = writeln!(
            out,
            "{} ({} messages compared; {} rows, {} bytes read in {} ms)",
            if self.clean { "clean" } else { "DISCREPANCIES FOUND" },
            self.stats.messages_compared,
            self.stats.rows_read,
            self.stats.bytes_read,
            self.stats.elapsed_ms
        );
        out
    }
}

/// `title (count):` and one `id  reason` line per listed row; nothing when `count` is 0.
fn parked(out: &mut String, title: &str, count: u64, rows: &[ParkedRow]) {
    if count == 0 {
        return;
    }
    let _ = writeln!(out, "{} ({count}):", printable(title));
    for row in rows {
        let _ = writeln!(out, "  {}  {}", row.message_id, printable(&row.reason));
    }
}

fn list(out: &mut String, title: &str, ids: &Ids) {
    if ids.is_empty() {
        return;
    }
    let more = ids.count.saturating_sub(ids.ids.len() as u64);
    let _ = writeln!(
        out,
        "{} ({}{}):",
        printable(title),
        ids.count,
        if more > 0 { format!(", {more} not listed") } else { String::new() }
    );
    for id in &ids.ids {
        let _ = writeln!(out, "  {id}");
    }
}
