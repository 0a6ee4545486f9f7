//! reconciler: proves that every outbox message reached every inbox that subscribes to it.
//!
//! For every (inbox, outbox) pair it reports messages missing from the inbox, extra in it,
//! stored with different content, and how far the inbox lags; for every outbox, rows stuck
//! unpublished and rows parked; for every inbox with processing enabled, messages its receiving
//! service has not processed in time or parked. It runs once (exit 0 clean, 1 discrepancies, 2
//! could not run) or as a service (a log line and metrics per finding every interval).
//! `--repair` re-drives missing messages through their outbox; inbox data is never edited.
//! `reconciler trace` follows one message (or one key) through every database instead.
#![forbid(unsafe_code)]

mod compare;
mod config;
mod env_args;
mod report;
mod service;
mod trace;
mod trace_report;
mod unprocessed;

use std::{
    collections::HashMap,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

pub use config::{Args, Command, Config, Format, TraceArgs, TraceQuery};
pub use env_args::ENV_PREFIX;
pub use report::Report;
use report::{InboxReport, OutboxReport, ParkedRow, Stats};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Exit codes of one-shot runs.
pub const EXIT_CLEAN: i32 = 0;
pub const EXIT_DISCREPANCIES: i32 = 1;
pub const EXIT_COULD_NOT_RUN: i32 = 2;

/// Why a reconciliation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{what}: {source}")]
    Database { what: String, source: relay_db::DbError },
    #[error("cannot serve metrics: {0}")]
    Metrics(String),
}

fn db_error(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ReconcileError {
    let what = what.into();
    move |e| ReconcileError::Database { what, source: e.into() }
}

/// Runs once or as a service, according to `config`; returns the process exit code.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<i32, ReconcileError> {
    if let Some(query) = &config.trace {
        return trace::run(&config, query).await;
    }
    if config.serve {
        service::serve(&config, shutdown).await?;
        return Ok(EXIT_CLEAN);
    }
    let progress = indicatif::ProgressBar::new((config.inboxes.len() * config.outboxes.len()) as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} reconciling {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut watermarks = HashMap::new();
    let report = reconcile(&config, &mut watermarks, None, Some(&progress)).await?;
    progress.finish_and_clear();
    match config.format {
        Format::Table => print!("{}", report.to_table()),
        Format::Json => println!("{}", report.to_json()),
    }
    if config.repair {
        repair(&config, &report).await?;
    }
    Ok(if report.clean { EXIT_CLEAN } else { EXIT_DISCREPANCIES })
}

/// One reconciliation of every pair. `watermarks` carries service mode's verified ranges.
pub(crate) async fn reconcile(
    config: &Config,
    watermarks: &mut HashMap<(String, String), i64>,
    settled_before: Option<SystemTime>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    let cutoff = SystemTime::now() - config.grace;
    let max_ids = usize::try_from(config.max_ids).unwrap_or(usize::MAX);
    let mut outboxes: Vec<(&String, Client)> = Vec::new();
    for (source, url) in &config.outboxes {
        let client = relay_db::connect_checked(url).await.map_err(|source_err| ReconcileError::Database {
            what: format!("outbox {source}"),
            source: source_err,
        })?;
        outboxes.push((source, client));
    }
    let mut meter = compare::Meter::default();
    let mut pairs = Vec::new();
    let mut inbox_reports = Vec::new();
    let sources: Vec<&str> = config.outboxes.keys().map(String::as_str).collect();
    for inbox in &config.inboxes {
        let client = relay_db::connect_checked(&inbox.url)
            .await
            .map_err(|e| ReconcileError::Database { what: format!("inbox {}", inbox.name), source: e })?;
        for (source, outbox) in &outboxes {
            if let Some(p) = progress {
                p.set_message(format!("{} <- {}", inbox.name, source));
            }
            let key = (inbox.name.clone(), source.to_string());
            let scope = compare::Scope {
                inbox: &inbox.name,
                source,
                topics: &inbox.topics,
                cutoff,
                bucket_size: config.bucket_size,
                max_ids,
                watermark: watermarks.get(&key).copied().unwrap_or(0),
                settled_before,
            };
            let (pair, watermark) = compare::compare(outbox, &client, &scope, &mut meter)
                .await
                .map_err(db_error(format!("comparing inbox {} with outbox {source}", inbox.name)))?;
            watermarks.insert(key, watermark);
            pairs.push(pair);
            if let Some(p) = progress {
                p.inc(1);
            }
        }
        let strays = client
            .query(
                include_str!("sql/inbox_strays.sql"),
                &[&inbox.name, &sources, &inbox.topics, &cutoff, &config.max_ids],
            )
            .await
            .map_err(db_error(format!("inbox {}", inbox.name)))?;
        meter.rows += strays.len() as u64;
        meter.bytes += strays.len() as u64 * 24;
        let unprocessed =
            unprocessed::findings(&client, &inbox.name, config.unprocessed, config.max_ids, &mut meter)
                .await
                .map_err(db_error(format!("inbox {}", inbox.name)))?;
        inbox_reports.push(InboxReport {
            inbox: inbox.name.clone(),
            extra_unknown_source_or_topic: report::Ids::from_rows(&strays, 1),
            unprocessed,
        });
    }
    let mut outbox_reports = Vec::new();
    for (source, client) in &outboxes {
        outbox_reports.push(outbox_findings(config, source, client, &mut meter).await?);
    }
    let mut report = Report {
        clean: false,
        cutoff_unix: cutoff.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        pairs,
        inboxes: inbox_reports,
        outboxes: outbox_reports,
        stats: Stats {
            rows_read: meter.rows,
            bytes_read: meter.bytes,
            elapsed_ms: started.elapsed().as_millis() as u64,
        },
    };
    report.clean = report.compute_clean();
    Ok(report)
}

async fn outbox_findings(
    config: &Config,
    source: &str,
    client: &Client,
    meter: &mut compare::Meter,
) -> Result<OutboxReport, ReconcileError> {
    let stuck_before = SystemTime::now() - config.stuck;
    let rows = client
        .query(include_str!("sql/stuck.sql"), &[&stuck_before, &config.max_ids])
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

/// Re-drives the listed missing messages through their outboxes (dry run without `--execute`),
/// keeping each row's publication as history and writing an audit row per row re-driven.
async fn repair(config: &Config, report: &Report) -> Result<(), ReconcileError> {
    let mut by_source: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for pair in &report.pairs {
        by_source.entry(pair.source.as_str()).or_default().extend(&pair.missing.ids);
    }
    for (source, mut ids) in by_source {
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            continue;
        }
        let Some(actor) = config.actor.as_ref().filter(|_| config.execute) else {
            println!(
                "repair (dry run): would re-publish {} message(s) from outbox {source}; add --execute",
                ids.len()
            );
            for id in &ids {
                println!("  {id}");
            }
            continue;
        };
        let Some(url) = config.outboxes.get(source) else { continue };
        let mut client = relay_db::connect_checked(url)
            .await
            .map_err(|e| ReconcileError::Database { what: format!("outbox {source}"), source: e })?;
        // The re-drive, its audit rows and the poller's wake-up commit together.
        let tx = client.transaction().await.map_err(db_error("re-drive"))?;
        let rows = tx
            .query(include_str!("sql/redrive.sql"), &[&ids, &actor.operator, &actor.reason])
            .await
            .map_err(db_error("re-drive"))?;
        tx.execute("SELECT pg_notify('relay_outbox', '')", &[]).await.map_err(db_error("re-drive"))?;
        tx.commit().await.map_err(db_error("re-drive"))?;
        println!(
            "repair: re-published {} message(s) from outbox {source} (recorded in relay.operator_audit as {})",
            rows.len(),
            relay_config::printable(&actor.operator)
        );
        for row in &rows {
            println!("  {}", row.get::<_, Uuid>(0));
        }
    }
    Ok(())
}
