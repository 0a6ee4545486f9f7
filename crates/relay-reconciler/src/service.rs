//! Service mode: reconcile every interval, log one line per finding, publish metrics. Ranges
//! verified once and final are not re-read (see [`crate::horizon`]), and a service pass finds
//! everything a one-shot run would.

use metrics::gauge;
use tokio_util::sync::CancellationToken;

use crate::{pass::ServeState, progress::Progress, Config, ReconcileError, Report};

pub(crate) async fn serve(config: &Config, shutdown: CancellationToken) -> Result<(), ReconcileError> {
    let health = relay_health::Health::new(&["reconcile"]);
    relay_health::serve(Some(config.metrics_addr), health.clone(), shutdown.clone())
        .await
        .map_err(|e| ReconcileError::Metrics(e.to_string()))?;
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

fn record(report: &Report) {
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
