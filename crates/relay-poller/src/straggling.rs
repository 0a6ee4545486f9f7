//! Telling operators when records wait on the broker. A record whose delivery report has not
//! come within `OUTBOX_DELIVERY_WAIT_MS` (a straggler) holds back its key; once as many wait as
//! a batch holds, their topics are held back whole (bounding the memory they keep), and the
//! other topics flow. Either way the broker is refusing something it may retry forever
//! (`message.timeout.ms=0`), so the gauge `relay_outbox_unacknowledged` counts stragglers and
//! the `publishing` readiness part is degraded, with the reason, while they sit at the cap or
//! the oldest has waited longer than [`AGE_LIMIT`]. One warning is logged when that starts.
//! [`Progress`] notices when no report comes at all, and has the producer replaced.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    delivery::Stragglers,
    publishing::{Publishing, Source},
    PollerConfig, PollerError,
};

/// How long a record may await its delivery report before readiness says so.
pub(crate) const AGE_LIMIT: Duration = Duration::from_secs(30);

/// The gauge of records awaiting their delivery report.
pub(crate) const GAUGE: &str = "relay_outbox_unacknowledged";

/// Whether stragglers currently degrade readiness.
pub(crate) struct Watch {
    cap: usize,
    cap_bytes: usize,
    degraded: AtomicBool,
}

impl Watch {
    /// `cap`: the number of stragglers (a batch, `OUTBOX_BATCH_SIZE`) at which their topics wait;
    /// `cap_bytes`: their payload bytes at which they wait too (a batch's bytes,
    /// `OUTBOX_BATCH_MAX_BYTES`), so large records never reach the loop's byte ceiling while other
    /// topics could still flow.
    pub(crate) fn new(cap: usize, cap_bytes: usize) -> Self {
        metrics::gauge!(GAUGE).set(0.0);
        Self { cap, cap_bytes, degraded: AtomicBool::new(false) }
    }

    /// Whether the stragglers fill the cap (rows or bytes), so that their topics must wait.
    pub(crate) fn at_cap(&self, stragglers: &Stragglers) -> bool {
        stragglers.len() >= self.cap || stragglers.bytes() >= self.cap_bytes
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
        let at_cap = self.at_cap(stragglers);
        let degraded = at_cap || oldest > AGE_LIMIT;
        if degraded {
            let topics = stragglers.topics();
            let reason = format!(
                "{count} records await their delivery report (cap {}, oldest {} s) on topics {topics:?}; \
                 their keys{} wait, other topics flow",
                self.cap,
                oldest.as_secs(),
                if at_cap { " and topics" } else { "" },
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

/// When a delivery report last arrived, or nothing was outstanding.
pub(crate) struct Progress(std::sync::Mutex<tokio::time::Instant>);

impl Default for Progress {
    fn default() -> Self {
        Self(std::sync::Mutex::new(tokio::time::Instant::now()))
    }
}

impl Progress {
    pub(crate) fn set(&self, at: tokio::time::Instant) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }

    fn get(&self) -> tokio::time::Instant {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails when records await their reports and none has arrived for `OUTBOX_PRODUCER_STALL_MS`:
    /// the producer keeps retrying something the broker refuses without end (an idempotent
    /// producer the broker no longer knows, `UNKNOWN_PRODUCER_ID`, after a broker lost its state),
    /// or cannot reach the broker at all. A fresh producer is the cure for the first and costs
    /// nothing in the second; the rows stay pending and are sent again (inboxes drop duplicates).
    ///
    /// Readiness says so sooner, after a third of that wait (at most [`AGE_LIMIT`]).
    pub(crate) fn check(
        &self,
        stragglers: &Stragglers,
        config: &PollerConfig,
        publishing: &Publishing,
        shutdown: &CancellationToken,
    ) -> Result<(), PollerError> {
        let waited = self.get().elapsed();
        if stragglers.len() == 0 || shutdown.is_cancelled() {
            return Ok(());
        }
        if waited < config.producer_stall {
            let soon = (config.producer_stall / 3).min(AGE_LIMIT);
            if waited >= soon {
                // A fixed text: readiness logs each change of reason.
                publishing.degraded(
                    Source::Loop,
                    format!(
                        "no delivery report for over {} s while records await theirs; a fresh \
                         producer takes over after {} s",
                        soon.as_secs(),
                        config.producer_stall.as_secs()
                    ),
                );
            }
            return Ok(());
        }
        let stall = PollerError::ProducerStalled {
            waited,
            outstanding: stragglers.len(),
            last_error: stragglers.last_error().unwrap_or_else(|| "none reported".into()),
        };
        publishing.degraded(Source::Loop, &stall);
        Err(stall)
    }
}
