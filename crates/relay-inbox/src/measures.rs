//! The consumer's metrics in one place: each one's description (the `# HELP` line), the
//! counters registered at 0 for its inbox at start-up so a rate or an increase is defined before
//! the first event, and the commit-to-stored latency histogram. `topic` label values are the
//! configured topics, any other topic counted as `other` ([`relay_health::TopicLabels`]).
use std::time::SystemTime;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use relay_health::TopicLabels;

use crate::{records::Record, store::Written, ConsumerConfig};

const INSERTED: &str = "relay_inbox_inserted_total";
const DUPLICATES: &str = "relay_inbox_duplicates_total";
const DEAD_LETTERS: &str = "relay_inbox_dead_letters_total";
const CONFLICTS: &str = "relay_inbox_conflicts_total";
pub(crate) const WRITE_ERRORS: &str = "relay_inbox_write_errors_total";
pub(crate) const SIGNATURE_FAILURES: &str = "relay_inbox_signature_failures_total";
/// Seconds from a message's `created_at` (its outbox row's transaction start, carried in the
/// envelope) to the commit of the batch that stored it, per inbox and topic.
const STORE_LATENCY: &str = "relay_inbox_store_latency_seconds";

/// Describes every consumer metric and registers its counters at 0 for `config.inbox`.
pub(crate) fn describe(config: &ConsumerConfig, topics: &TopicLabels) {
    describe_counter!(INSERTED, "Messages stored in the inbox for the first time");
    describe_counter!(
        DUPLICATES,
        "Messages already stored with the same content: dropped, their offsets committed"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Records stored as dead letters with their reason (conflicts and signature failures included)"
    );
    describe_counter!(
        CONFLICTS,
        "Records reusing a stored message id with other content; each is also a dead letter"
    );
    describe_counter!(WRITE_ERRORS, "Batches whose write to the inbox database failed and was retried");
    describe_counter!(
        SIGNATURE_FAILURES,
        "Records whose envelope signature failed, by reason; each is also a dead letter"
    );
    describe_gauge!(
        "relay_inbox_consumer_lag",
        "High watermark minus this member's position, per owned topic and partition (records)"
    );
    describe_gauge!("relay_inbox_unprocessed", "Stored messages the receiving service has not yet processed");
    describe_gauge!(
        "relay_inbox_oldest_unprocessed_age_seconds",
        Unit::Seconds,
        "Age of the oldest stored message not yet processed (0 when none)"
    );
    describe_gauge!(
        "relay_inbox_processing_attempts",
        "Processing attempts of the messages not yet processed"
    );
    describe_gauge!(
        "relay_inbox_processing_parked",
        "Messages whose processing is parked after too many failures"
    );
    describe_gauge!(
        "relay_inbox_assigned_partitions",
        "Partitions of the subscribed topics this member owns (0 while it has none)"
    );
    describe_counter!(
        "relay_inbox_rejoins_total",
        "Times this consumer left a stalled group membership and joined again with a fresh client"
    );
    describe_histogram!(
        STORE_LATENCY,
        Unit::Seconds,
        "Seconds from a message's created_at (its outbox transaction's start) to the commit that stored it, per topic"
    );
    let inbox = config.inbox.clone();
    for name in [INSERTED, DUPLICATES, DEAD_LETTERS, CONFLICTS, WRITE_ERRORS] {
        metrics::counter!(name, "inbox" => inbox.clone()).absolute(0);
    }
    for reason in relay_envelope::SIGNATURE_FAILURE_KINDS {
        metrics::counter!(SIGNATURE_FAILURES, "inbox" => inbox.clone(), "reason" => reason).absolute(0);
    }
    for topic in topics.all() {
        // Registered so that its buckets are exported (at 0) before the first message.
        let _ = metrics::histogram!(STORE_LATENCY, "inbox" => inbox.clone(), "topic" => topic);
    }
}

/// Counts a stored batch, and records each stored or already-stored message's latency.
pub(crate) fn stored<'a>(
    inbox: &str,
    topics: &TopicLabels,
    written: &Written,
    records: impl Iterator<Item = &'a Record>,
) {
    let labels = [("inbox", inbox.to_string())];
    metrics::counter!(INSERTED, &labels).increment(written.inserted);
    metrics::counter!(DUPLICATES, &labels).increment(written.duplicates);
    metrics::counter!(DEAD_LETTERS, &labels).increment(written.dead_lettered);
    metrics::counter!(CONFLICTS, &labels).increment(written.conflicts);
    let now = SystemTime::now();
    for record in records {
        let Record::Store(row) = record else { continue };
        // A created_at ahead of this host's clock counts as 0.
        let seconds = now.duration_since(row.created_at).map_or(0.0, |d| d.as_secs_f64());
        metrics::histogram!(STORE_LATENCY, "inbox" => inbox.to_string(), "topic" => topics.label(&row.position.topic))
            .record(seconds);
    }
}
