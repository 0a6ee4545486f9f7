//! Telling operators when records wait on the broker. A record whose delivery report has not
//! come within `OUTBOX_DELIVERY_WAIT_MS` (a straggler) holds back its key; once as many wait as
//! a batch holds, their topics are held back whole (bounding the memory they keep), and the
//! other topics flow. Either way the broker is refusing something it may retry forever
//! (`message.timeout.ms=0`), so the gauge `relay_outbox_unacknowledged` counts stragglers and
//! the `publishing` readiness part is degraded, with the reason, while they sit at the cap or
//! the oldest has waited longer than [`AGE_LIMIT`]. One warning is logged when that starts.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{
    delivery::Stragglers,
    publishing::{Publishing, Source},
};

/// How long a record may await its delivery report before readiness says so.
pub(crate) const AGE_LIMIT: Duration = Duration::from_secs(30);

/// The gauge of records awaiting their delivery report.
pub(crate) const GAUGE: &str = "relay_outbox_unacknowledged";

/// Whether stragglers currently degrade readiness.
pub(crate) struct Watch {
    cap: usize,
    degraded: AtomicBool,
}

impl Watch {
    /// `cap`: the number of stragglers (a batch, `OUTBOX_BATCH_SIZE`) at which their topics wait.
    pub(crate) fn new(cap: usize) -> Self {
        metrics::gauge!(GAUGE).set(0.0);
        Self { cap, degraded: AtomicBool::new(false) }
    }

    /// Whether the stragglers fill the cap, so that their topics must wait.
    pub(crate) fn at_cap(&self, stragglers: &Stragglers) -> bool {
        stragglers.len() >= self.cap
    }

    /// Whether readiness is degraded by stragglers (the publishing loop must not report it ok).
    pub(crate) fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Updates the gauge and the `publishing` readiness part from the current stragglers.
    pub(crate) fn observe(&self, stragglers: &Stragglers, publishing: &Publishing) {
        let count = stragglers.len();
        metrics::gauge!(GAUGE).set(count as f64);
        let oldest = stragglers.oldest().unwrap_or_default();
        let degraded = count >= self.cap || oldest > AGE_LIMIT;
        if degraded {
            let topics = stragglers.topics();
            let reason = format!(
                "{count} records await their delivery report (cap {}, oldest {} s) on topics {topics:?}; \
                 their keys{} wait, other topics flow",
                self.cap,
                oldest.as_secs(),
                if count >= self.cap { " and topics" } else { "" },
            );
            if !self.degraded.swap(true, Ordering::Relaxed) {
                tracing::warn!(stragglers = count, topics = ?topics, "{reason}");
            }
            publishing.degraded(Source::Loop, reason);
        } else if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(stragglers = count, "delivery reports caught up");
            publishing.ok(Source::Loop);
        }
    }
}
