//! The `publishing` readiness part, which must say whether rows can reach the broker now, not
//! only whether the publishing loop last succeeded. Two observers feed it: the publishing loop
//! (backing off after a failure, stragglers, a producer that gets no delivery report) and the
//! broker probe (no broker answers). The part is ok only while both are; its reason lists every
//! observer's complaint, so `/readyz` never says `publishing: ok` while the brokers are away.
use std::sync::{Arc, Mutex, PoisonError};

use relay_health::Health;

/// Who reports on publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The publishing loop (leader) or the standby loop.
    Loop,
    /// The broker probe: whether any broker answers a metadata request.
    Broker,
}

impl Source {
    fn index(self) -> usize {
        match self {
            Source::Loop => 0,
            Source::Broker => 1,
        }
    }
}

/// The `publishing` part, shared by its observers; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Publishing {
    health: Health,
    /// Each source's complaint, `None` while it is satisfied.
    reasons: Arc<Mutex<[Option<String>; 2]>>,
}

impl Publishing {
    /// Both sources start unsatisfied ("starting"), as the part itself does.
    pub(crate) fn new(health: Health) -> Self {
        let starting = || Some("starting".to_string());
        Self { health, reasons: Arc::new(Mutex::new([starting(), starting()])) }
    }

    /// `source` is satisfied.
    pub(crate) fn ok(&self, source: Source) {
        self.set(source, None);
    }

    /// `source` says rows cannot be published now, and why (shown by `/readyz`).
    pub(crate) fn degraded(&self, source: Source, reason: impl std::fmt::Display) {
        self.set(source, Some(reason.to_string()));
    }

    fn set(&self, source: Source, reason: Option<String>) {
        let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        reasons[source.index()] = reason;
        let complaints: Vec<&str> = reasons.iter().flatten().map(String::as_str).collect();
        if complaints.is_empty() {
            self.health.ok(crate::PUBLISHING);
        } else {
            self.health.degraded(crate::PUBLISHING, complaints.join("; "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_the_loop_and_the_broker_probe_both_are() {
        let health = Health::new(&[crate::PUBLISHING]);
        let publishing = Publishing::new(health.clone());
        publishing.ok(Source::Loop);
        assert!(!health.is_ready(), "the broker probe has not answered yet");
        publishing.ok(Source::Broker);
        assert!(health.is_ready());
        publishing.degraded(Source::Broker, "no broker answered");
        publishing.ok(Source::Loop);
        assert_eq!(health.describe(), "publishing: degraded: no broker answered\n");
        publishing.degraded(Source::Loop, "backing off");
        assert_eq!(health.describe(), "publishing: degraded: backing off; no broker answered\n");
        publishing.ok(Source::Broker);
        publishing.ok(Source::Loop);
        assert!(health.is_ready());
    }
}
