//! One reconciliation of every (inbox, outbox) pair, plus the findings about each outbox and
//! each inbox by itself.
//!
//! Every age is measured on a database's clock, never on this host's: each outbox's cutoff
//! (`now() - grace`) is read from that outbox at the start of the pass and used on both sides
//! of its pairs (an inbox keeps the origin's `created_at`); stuck, unprocessed and settled ages
//! are computed in SQL with the database's own `now()`. Inbox rows from no configured source or
//! topic have no outbox cutoff: their origin's `created_at` is aged by the inbox's `now()`.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio_postgres::Client;

use crate::{
    compare::{self, unix, Meter, Scope},
    db_error,
    horizon::{self, Horizon, NoSkip},
    progress::Progress,
    report::{self, InboxReport, OutboxReport, ParkedRow, Report, Stats},
    unprocessed, Config, Inbox, ReconcileError,
};

/// What service mode keeps between passes.
#[derive(Debug, Default)]
pub(crate) struct ServeState {
    /// Per (inbox, source): ids below this were verified and are final.
    watermarks: HashMap<(String, String), i64>,
    /// Per source: which settled bounds no running transaction can still fill.
    horizons: HashMap<String, Horizon>,
    /// Per source: why nothing is skipped, as last logged (logged again only when it changes).
    no_skip: HashMap<String, Option<NoSkip>>,
    /// When the last pass that re-read every range started (this host's monotonic clock: an
    /// interval between passes, not the age of any row).
    last_full_pass: Option<Instant>,
}

impl ServeState {
    /// Before a pass: forgets the verified ranges when a full pass is due, so this one re-reads
    /// everything, as a one-shot run would.
    pub(crate) fn begin_pass(&mut self, full_pass_every: Duration) {
        if self.last_full_pass.is_none_or(|at| at.elapsed() >= full_pass_every) {
            self.watermarks.clear();
            self.last_full_pass = Some(Instant::now());
        }
    }
}

/// One outbox during a pass.
struct Outbox<'c> {
    source: &'c str,
    client: Client,
    cutoff: std::time::SystemTime,
    /// Service mode: clean buckets below this are final.
    final_below: Option<i64>,
}

/// One reconciliation of every pair. `serve` carries service mode's verified ranges.
pub(crate) async fn reconcile(
    config: &Config,
    mut serve: Option<&mut ServeState>,
    progress: &Progress,
) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    let max_ids = usize::try_from(config.max_ids).unwrap_or(usize::MAX);
    let mut meter = Meter::default();
    let mut outboxes = Vec::new();
    for (source, url) in &config.outboxes {
        let client = relay_db::connect_checked(url)
            .await
            .map_err(|e| ReconcileError::Database { what: format!("outbox {source}"), source: e })?;
        let clock = client
            .query_one(include_str!("sql/outbox_clock.sql"), &[&config.grace.as_secs_f64()])
            .await
            .map_err(db_error(format!("outbox {source}")))?;
        let final_below = match serve.as_deref_mut() {
            None => None,
            Some(state) => final_below(config, source, &client, state).await?,
        };
        meter.rows += 2;
        outboxes.push(Outbox { source, client, cutoff: clock.get(0), final_below });
    }
    let mut inboxes = Vec::new();
    for inbox in &config.inboxes {
        let client = relay_db::connect_checked(&inbox.url)
            .await
            .map_err(|e| ReconcileError::Database { what: format!("inbox {}", inbox.name), source: e })?;
        inboxes.push((inbox, client));
    }
    let watermark = |serve: &Option<&mut ServeState>, inbox: &str, source: &str| {
        serve.as_deref().and_then(|s| s.watermarks.get(&(inbox.to_string(), source.to_string())).copied())
    };
    if progress.is_drawn() {
        for (inbox, client) in &inboxes {
            for outbox in &outboxes {
                let scope =
                    scope(config, max_ids, inbox, outbox, watermark(&serve, &inbox.name, outbox.source));
                let n = compare::to_compare(&outbox.client, client, &scope)
                    .await
                    .map_err(db_error(format!("inbox {} and outbox {}", inbox.name, outbox.source)))?;
                progress.add_total(n);
            }
        }
        progress.start();
    }
    let sources: Vec<&str> = config.outboxes.keys().map(String::as_str).collect();
    let grace = config.grace.as_secs_f64();
    let mut pairs = Vec::new();
    let mut inbox_reports = Vec::new();
    for (inbox, client) in &inboxes {
        for outbox in &outboxes {
            progress.pair(&inbox.name, outbox.source);
            let scope = scope(config, max_ids, inbox, outbox, watermark(&serve, &inbox.name, outbox.source));
            let (pair, next) =
                compare::compare(&outbox.client, client, &scope, &mut meter, progress).await.map_err(
                    db_error(format!("comparing inbox {} with outbox {}", inbox.name, outbox.source)),
                )?;
            if let Some(state) = serve.as_deref_mut() {
                state.watermarks.insert((inbox.name.clone(), outbox.source.to_string()), next);
            }
            pairs.push(pair);
        }
        let strays = client
            .query(
                include_str!("sql/inbox_strays.sql"),
                &[&inbox.name, &sources, &inbox.topics, &grace, &config.max_ids],
            )
            .await
            .map_err(db_error(format!("inbox {}", inbox.name)))?;
        meter.rows += strays.len() as u64;
        meter.bytes += strays.len() as u64 * 24;
        let unprocessed =
            unprocessed::findings(client, &inbox.name, config.unprocessed, config.max_ids, &mut meter)
                .await
                .map_err(db_error(format!("inbox {}", inbox.name)))?;
        inbox_reports.push(InboxReport {
            inbox: inbox.name.clone(),
            extra_unknown_source_or_topic: report::Ids::from_rows(&strays, 1),
            unprocessed,
        });
    }
    let mut outbox_reports = Vec::new();
    for outbox in &outboxes {
        outbox_reports.push(outbox_findings(config, outbox.source, &outbox.client, &mut meter).await?);
    }
    let earliest = outboxes.iter().map(|o| o.cutoff).min();
    let mut report = Report {
        clean: false,
        cutoff_unix: earliest.map_or(0.0, unix),
        pairs,
        inboxes: inbox_reports,
        outboxes: outbox_reports,
        stats: Stats {
            rows_read: meter.rows,
            bytes_read: meter.bytes,
            messages_compared: meter.messages,
            elapsed_ms: started.elapsed().as_millis() as u64,
        },
    };
    report.clean = report.compute_clean();
    Ok(report)
}

/// Service mode: the id below which clean buckets of `source` are final, or `None` when nothing
/// may be skipped there (see [`horizon::may_skip`]; the reason is logged once, and ranges
/// verified before are read again).
async fn final_below(
    config: &Config,
    source: &str,
    client: &Client,
    state: &mut ServeState,
) -> Result<Option<i64>, ReconcileError> {
    let what = || format!("outbox {source}");
    let check = client.query_one(include_str!("sql/skip_check.sql"), &[]).await.map_err(db_error(what()))?;
    let verdict = horizon::may_skip(check.get(0), check.get::<_, Option<i64>>(1)).err();
    if state.no_skip.get(source) != Some(&verdict) {
        match verdict {
            Some(why) => {
                tracing::warn!(source, reason = %why, "service mode skips no verified range of this outbox: every pass reads it all")
            }
            None if state.no_skip.contains_key(source) => {
                tracing::info!(source, "service mode skips verified ranges of this outbox again")
            }
            None => {}
        }
        state.no_skip.insert(source.to_string(), verdict);
    }
    if verdict.is_some() {
        state.horizons.remove(source);
        state.watermarks.retain(|(_, s), _| s != source);
        return Ok(None);
    }
    let settle = config.settle.max(config.grace).as_secs_f64();
    let settled = || async {
        client.query_one(include_str!("sql/settled_below.sql"), &[&settle]).await.map(|r| r.get::<_, i64>(0))
    };
    let before = settled().await.map_err(db_error(what()))?;
    // Read after the bound, so a writer that drew an id below it is still listed; and the bound
    // again after them, so one that committed in between is bounded by its now visible row.
    let writers: Vec<String> =
        client.query_one(include_str!("sql/outbox_writers.sql"), &[]).await.map_err(db_error(what()))?.get(0);
    let after = settled().await.map_err(db_error(what()))?;
    let released = state.horizons.entry(source.to_string()).or_default().advance(
        before,
        writers.into_iter().collect(),
        after,
    );
    Ok(Some(released.min(before).min(after)))
}

fn scope<'a>(
    config: &Config,
    max_ids: usize,
    inbox: &'a Inbox,
    outbox: &'a Outbox<'_>,
    watermark: Option<i64>,
) -> Scope<'a> {
    Scope {
        inbox: &inbox.name,
        source: outbox.source,
        topics: &inbox.topics,
        cutoff: outbox.cutoff,
        bucket_size: config.bucket_size,
        max_ids,
        watermark: watermark.unwrap_or(0),
        final_below: outbox.final_below,
    }
}

async fn outbox_findings(
    config: &Config,
    source: &str,
    client: &Client,
    meter: &mut Meter,
) -> Result<OutboxReport, ReconcileError> {
    let rows = client
        .query(include_str!("sql/stuck.sql"), &[&config.stuck.as_secs_f64(), &config.max_ids])
        .await
        .map_err(db_error(format!("outbox {source}")))?;
    let stuck = report::Ids::from_rows(&rows, 1);
    let parked_rows = client
        .query(include_str!("sql/parked.sql"), &[&config.max_ids])
        .await
        .map_err(db_error(format!("outbox {source}")))?;
    meter.rows += (rows.len() + parked_rows.len()) as u64;
    meter.bytes += (rows.len() * 24 + parked_rows.len() * 80) as u64;
    Ok(OutboxReport {
        source: source.to_string(),
        stuck,
        parked_count: parked_rows.first().map_or(0, |r| r.get::<_, i64>(2) as u64),
        parked: parked_rows
            .iter()
            .map(|r| ParkedRow {
                message_id: r.get(0),
                reason: r.get::<_, Option<String>>(1).unwrap_or_default(),
            })
            .collect(),
    })
}
