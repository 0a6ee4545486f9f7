//! The poller's metrics in one place: each one's description (the `# HELP` line), the counters
//! registered at 0 at start-up so a rate or an increase is defined before the first event, and
//! the commit-to-publish latency histogram. The process adds `outbox="<OUTBOX_SOURCE>"` to every
//! series (`relay_health::serve_labelled`), so alerts group by outbox wherever they run.
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{describe_counter, describe_gauge, describe_histogram, SharedString, Unit};

use crate::PollerConfig;

pub(crate) const PUBLISHED: &str = "relay_outbox_published_total";
pub(crate) const PARKED: &str = "relay_outbox_parked_total";
pub(crate) const PUBLISH_ERRORS: &str = "relay_outbox_publish_errors_total";
pub(crate) const INTERRUPTIONS: &str = "relay_outbox_interruptions_total";
pub(crate) const LEADER_TERMS: &str = "relay_outbox_leader_terms_total";
pub(crate) const LEADER: &str = "relay_outbox_leader";
/// Topics of this leader's selection that another lease leads (so this one does not publish them).
pub(crate) const TOPICS_REFUSED: &str = "relay_outbox_topics_refused";
/// Seconds from an outbox row's `created_at` (the enqueuing transaction's start, from the
/// database clock) to the broker's acknowledgement of its record, per topic.
pub(crate) const PUBLISH_LATENCY: &str = "relay_outbox_publish_latency_seconds";

/// Describes every poller metric and registers its counters (per configured topic for the
/// histogram's label set) at 0.
pub(crate) fn describe(config: &PollerConfig) {
    describe_counter!(PUBLISHED, "Outbox rows marked published after the broker acknowledged their record");
    describe_counter!(PARKED, "Outbox rows parked: refused for good by the broker or unsendable as they are");
    describe_counter!(
        PUBLISH_ERRORS,
        "Records not acknowledged by the broker; their rows stay pending and are sent again"
    );
    describe_counter!(
        INTERRUPTIONS,
        "Publishing terms that ended on an error (database, broker, lease) and were retried"
    );
    describe_counter!(LEADER_TERMS, "Leadership terms this replica started");
    describe_gauge!(LEADER, "1 while this replica holds the outbox lease and publishes, else 0");
    describe_gauge!(
        "relay_outbox_leader_present",
        "1 while this replica sees a valid lease holder for its outbox (itself or another), else 0"
    );
    describe_gauge!(
        "relay_outbox_leader_absent_seconds",
        Unit::Seconds,
        "How long this replica has seen no valid lease holder for its outbox (0 while one holds it)"
    );
    describe_gauge!(
        TOPICS_REFUSED,
        "Topics of this poller's selection that another poller's lease publishes, so this one does not"
    );
    describe_gauge!("relay_outbox_backlog", "Outbox rows neither published nor parked");
    describe_gauge!(
        "relay_outbox_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest outbox row neither published nor parked (0 when none)"
    );
    describe_gauge!("relay_outbox_parked", "Outbox rows parked and not yet retried or discarded");
    describe_histogram!(
        PUBLISH_LATENCY,
        Unit::Seconds,
        "Seconds from an outbox row's created_at (its transaction's start) to the broker's acknowledgement, per topic"
    );
    for name in [PUBLISHED, PARKED, PUBLISH_ERRORS, INTERRUPTIONS, LEADER_TERMS] {
        metrics::counter!(name).absolute(0);
    }
    metrics::gauge!(LEADER).set(0.0);
    for topic in &config.topics {
        // Registered so that its buckets are exported (at 0) before the first row.
        let _ = metrics::histogram!(PUBLISH_LATENCY, "topic" => topic.clone());
    }
}

/// The `topic` label value of a row: its topic when configured, `other` otherwise (also when
/// `OUTBOX_TOPICS` is empty and every topic is published), so label values stay bounded.
pub(crate) fn topic_label(config: &PollerConfig, topic: &str) -> SharedString {
    if config.topics.iter().any(|t| t == topic) {
        SharedString::from(topic.to_string())
    } else {
        SharedString::const_str(relay_health::OTHER_TOPIC)
    }
}

/// Records one acknowledged row's commit-to-publish latency; a `created_at` ahead of this
/// host's clock counts as 0.
pub(crate) fn published(topic: &SharedString, created_at_unix_micros: i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let seconds = now.saturating_sub(created_at_unix_micros).max(0) as f64 / 1e6;
    metrics::histogram!(PUBLISH_LATENCY, "topic" => topic.clone()).record(seconds);
}
