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

mod args;
mod compare;
mod config;
mod databases;
mod horizon;
mod pass;
mod progress;
mod report;
mod service;
mod trace;
mod trace_report;
mod unprocessed;

use std::collections::HashMap;

pub use args::{names, Args, Command, TraceArgs};
pub use config::{Config, Format, Inbox, TraceQuery};
pub use report::Report;
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
    let progress = progress::Progress::on_terminal(config.no_color);
    let report = pass::reconcile(&config, None, &progress).await;
    progress.finish();
    let report = report?;
    match config.format {
        Format::Table => print!("{}", report.to_table()),
        Format::Json => println!("{}", report.to_json()),
    }
    if config.repair {
        repair(&config, &report).await?;
    }
    Ok(if report.clean { EXIT_CLEAN } else { EXIT_DISCREPANCIES })
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
