//! Service mode: reconcile every interval, log one line per finding, publish metrics. Ranges
//! verified once and final are not re-read (see [`crate::horizon`]). A service pass finds what a
//! one-shot run would above the verified ranges, and below them what transactions add (a late
//! commit); a change below them that no transaction makes (an inbox row deleted by hand) is found
//! by the next full pass, so there it holds as of the last full pass.
//!
//! `relay_reconcile_last_pass_timestamp_seconds` and `relay_reconcile_interval_seconds` let an
//! alert tell a reconciler that stopped completing passes (hung on a database, crashed, its
//! target gone) from one that is merely between passes.
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{describe_gauge, gauge, Unit};
use tokio_util::sync::CancellationToken;

use crate::{pass::ServeState, progress::Progress, Config, ReconcileError, Report};

pub(crate) async fn serve(config: &Config, shutdown: CancellationToken) -> Result<(), ReconcileError> {
    let health = relay_health::Health::new(&["reconcile"]);
    relay_health::serve(Some(config.metrics_addr), health.clone(), shutdown.clone())
        .await
        .map_err(|e| ReconcileError::Metrics(e.to_string()))?;
    describe(config);
    tracing::info!(metrics = %config.metrics_addr, interval_s = config.interval.as_secs(), "reconciler serving");
    let mut state = ServeState::default();
    loop {
        state.begin_pass(config.full_pass);
        match crate::pass::reconcile(config, Some(&mut state), &Progress::hidden()).await {
            Ok(report) => {
                health.ok("reconcile");
                record(&report)
            }
            Err(e) => {
                health.degraded("reconcile", &e);
                gauge!("relay_reconcile_up").set(0.0);
                tracing::error!(error = %e, "reconciliation failed; retrying next interval");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

/// Describes every reconciler metric; the interval is set once, the pass time starts at 0.
fn describe(config: &Config) {
    describe_gauge!(
        "relay_reconcile_up",
        "1 when the last pass completed, 0 when it failed (a database unreachable)"
    );
    describe_gauge!(
        "relay_reconcile_clean",
        "1 when the last completed pass found nothing missing, extra or mismatched"
    );
    describe_gauge!("relay_reconcile_rows_read", "Rows the last completed pass read");
    describe_gauge!(
        "relay_reconcile_last_pass_timestamp_seconds",
        Unit::Seconds,
        "Unix time at which the last pass completed (the process start time before the first)"
    );
    describe_gauge!(
        "relay_reconcile_interval_seconds",
        Unit::Seconds,
        "RECONCILE_INTERVAL_SECS: the time between passes"
    );
    describe_gauge!(
        "relay_reconcile_findings",
        "Messages found missing, extra or mismatched, per kind, inbox and source"
    );
    describe_gauge!(
        "relay_reconcile_lag_messages",
        "Settled outbox messages not yet in the inbox, per inbox and source"
    );
    describe_gauge!(
        "relay_reconcile_lag_seconds",
        Unit::Seconds,
        "Age of the oldest settled outbox message not yet in the inbox, per inbox and source"
    );
    describe_gauge!(
        "relay_reconcile_unprocessed",
        "Stored messages not processed within RECONCILE_UNPROCESSED_SECS, per inbox"
    );
    describe_gauge!("relay_reconcile_unprocessed_parked", "Messages whose processing is parked, per inbox");
    describe_gauge!(
        "relay_reconcile_stuck",
        "Outbox rows unpublished for longer than RECONCILE_STUCK_SECS, per source"
    );
    describe_gauge!("relay_reconcile_parked", "Parked outbox rows, per source");
    gauge!("relay_reconcile_interval_seconds").set(config.interval.as_secs_f64());
    // Before the first pass the process start time stands in for it, so an alert's budget
    // (a few intervals) runs from the start: a slow first pass is not a stall, a hung one is.
    gauge!("relay_reconcile_last_pass_timestamp_seconds").set(unix_now());
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn record(report: &Report) {
    gauge!("relay_reconcile_last_pass_timestamp_seconds").set(unix_now());
    gauge!("relay_reconcile_up").set(1.0);
    gauge!("relay_reconcile_clean").set(if report.clean { 1.0 } else { 0.0 });
    gauge!("relay_reconcile_rows_read").set(report.stats.rows_read as f64);
    for p in &report.pairs {
        for (kind, ids) in [("missing", &p.missing), ("extra", &p.extra), ("mismatched", &p.mismatched)] {
            let labels =
                [("kind", kind.to_string()), ("inbox", p.inbox.clone()), ("source", p.source.clone())];
            gauge!("relay_reconcile_findings", &labels).set(ids.count as f64);
            for id in &ids.ids {
                tracing::warn!(finding = kind, inbox = %p.inbox, source = %p.source, message_id = %id, "reconciliation finding");
            }
        }
        let labels = [("inbox", p.inbox.clone()), ("source", p.source.clone())];
        gauge!("relay_reconcile_lag_messages", &labels).set(p.lag_messages as f64);
        gauge!("relay_reconcile_lag_seconds", &labels).set(p.lag_seconds);
    }
    for i in &report.inboxes {
        let labels =
            [("kind", "extra".to_string()), ("inbox", i.inbox.clone()), ("source", "(unknown)".to_string())];
        gauge!("relay_reconcile_findings", &labels).set(i.extra_unknown_source_or_topic.count as f64);
        for id in &i.extra_unknown_source_or_topic.ids {
            tracing::warn!(finding = "extra", inbox = %i.inbox, message_id = %id, "reconciliation finding: unknown source or topic");
        }
        let Some(u) = &i.unprocessed else { continue };
        gauge!("relay_reconcile_unprocessed", "inbox" => i.inbox.clone()).set(u.late.count as f64);
        gauge!("relay_reconcile_unprocessed_parked", "inbox" => i.inbox.clone()).set(u.parked_count as f64);
        for id in &u.late.ids {
            tracing::warn!(finding = "unprocessed", inbox = %i.inbox, message_id = %id, after_s = u.after_secs, "reconciliation finding");
        }
        for row in &u.parked {
            tracing::warn!(finding = "unprocessed_parked", inbox = %i.inbox, message_id = %row.message_id, reason = %row.reason, "reconciliation finding");
        }
    }
    for o in &report.outboxes {
        gauge!("relay_reconcile_stuck", "source" => o.source.clone()).set(o.stuck.count as f64);
        gauge!("relay_reconcile_parked", "source" => o.source.clone()).set(o.parked_count as f64);
        for id in &o.stuck.ids {
            tracing::warn!(finding = "stuck", source = %o.source, message_id = %id, "reconciliation finding");
        }
        for row in &o.parked {
            tracing::warn!(finding = "parked", source = %o.source, message_id = %row.message_id, reason = %row.reason, "reconciliation finding");
        }
    }
    tracing::info!(
        clean = report.clean,
        rows_read = report.stats.rows_read,
        elapsed_ms = report.stats.elapsed_ms,
        "reconciled"
    );
}
