//! The assignment watchdog: a consumer that owns no partitions while its topics hold records
//! nobody stores is stalled, however healthy its database and brokers look.
//!
//! A consumer restarted quickly can rejoin a group whose rebalance never finishes for it (the
//! old member's session is still open, or the broker's group state is stuck): it then consumes
//! nothing, for good. A topic created after the consumer subscribed is likewise not consumed
//! until librdkafka next refreshes its metadata (minutes). Every few seconds this module looks
//! at the partitions of the subscribed topics this member does not own, and compares their high
//! watermarks with the group's committed offsets. Records wait beyond those offsets, and the
//! offsets have not moved (so no other member of the group is storing them) for
//! `INBOX_ASSIGNMENT_TIMEOUT_MS`: the stall is logged once, the `assignment` readiness part is
//! degraded, and the consumer asks for a fresh client, which joins the group as a new member. A subscribed topic that does not exist degrades the part too,
//! naming the topic; a fatal client error (for example `FENCED_INSTANCE_ID`: another live process
//! uses the same `group.instance.id`) degrades it at once and is cured the same way after the
//! timeout.
//!
//! Gauge `relay_inbox_assigned_partitions{inbox}`: partitions this member owns. Counter
//! `relay_inbox_rejoins_total{inbox}`: fresh clients made because of a stall.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    Offset, TopicPartitionList,
};
use relay_health::Health;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::ConsumerConfig;

/// The readiness part this module owns.
pub(crate) const ASSIGNMENT: &str = "assignment";

/// Where each partition with records nobody stored stands: `(topic, partition)` to the offset
/// storing resumes from (the group's committed offset, else the low watermark).
type Waiting = BTreeMap<(String, i32), i64>;

/// One look at the consumer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Observation {
    /// Subscribed topics the brokers do not know.
    pub missing: Vec<String>,
    /// Partitions this member owns.
    pub assigned: usize,
    /// The client's fatal error, if it has one.
    pub fatal: Option<String>,
    /// Partitions this member does not own with records beyond where storing resumes.
    pub waiting: Waiting,
}

/// What the watchdog concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ready,
    NotReady(String),
    /// Stalled for the timeout: make a fresh client.
    Rejoin(String),
}

/// The watchdog's memory between looks.
#[derive(Debug)]
pub(crate) struct Watchdog {
    timeout: Duration,
    group: String,
    /// Since when the stall (unchanged waiting offsets, or a fatal error) has lasted.
    since: Option<tokio::time::Instant>,
    last: Option<Waiting>,
    reported: bool,
}

impl Watchdog {
    pub(crate) fn new(timeout: Duration, group: &str) -> Self {
        Self { timeout, group: group.to_string(), since: None, last: None, reported: false }
    }

    fn reset(&mut self) {
        self.since = None;
        self.last = None;
        if std::mem::take(&mut self.reported) {
            tracing::info!(group = %self.group, "partitions assigned again; the stall is over");
        }
    }

    /// Judges one observation made at `now`.
    pub(crate) fn judge(&mut self, seen: &Observation, now: tokio::time::Instant) -> Verdict {
        if let Some(fatal) = &seen.fatal {
            let since = *self.since.get_or_insert(now);
            let hint = if fatal.contains("Fenced") {
                " (another live process uses the same group.instance.id, INBOX_GROUP_INSTANCE_ID)"
            } else {
                ""
            };
            let reason = format!("the consumer client failed: {fatal}{hint}");
            return match self.stalled(now, since, reason.clone()) {
                Verdict::Ready => Verdict::NotReady(reason),
                rejoin => rejoin,
            };
        }
        if !seen.missing.is_empty() {
            // Nothing to rejoin for; once the topic exists, the stall check below takes over.
            self.since = None;
            self.last = None;
            return Verdict::NotReady(format!(
                "subscribed topics {:?} do not exist; nothing of theirs can be stored",
                seen.missing
            ));
        }
        if seen.waiting.is_empty() {
            self.reset();
            return Verdict::Ready;
        }
        if self.last.as_ref() != Some(&seen.waiting) {
            // First look, or another member stored some: the clock starts (again) now.
            self.last = Some(seen.waiting.clone());
            self.since = Some(now);
        }
        let since = *self.since.get_or_insert(now);
        let reason = format!(
            "{} partitions that no member of group {} consumes hold records not stored, for {} s \
             ({} partitions assigned here)",
            seen.waiting.len(),
            self.group,
            now.duration_since(since).as_secs(),
            seen.assigned,
        );
        self.stalled(now, since, reason)
    }

    fn stalled(&mut self, now: tokio::time::Instant, since: tokio::time::Instant, reason: String) -> Verdict {
        if now.duration_since(since) < self.timeout {
            return Verdict::Ready;
        }
        if !std::mem::replace(&mut self.reported, true) {
            tracing::error!(group = %self.group, "consumer stalled: {reason}; joining again with a fresh client");
        }
        // The fresh client gets a whole timeout of its own.
        self.since = Some(now);
        self.last = None;
        Verdict::Rejoin(reason)
    }

    /// Whether a stall was reported and is not over yet.
    pub(crate) fn stalled_now(&self) -> bool {
        self.reported
    }
}

/// Looks at the consumer (blocking: broker requests of up to `timeout` each).
fn observe(consumer: &StreamConsumer, topics: &[String], timeout: Duration) -> Result<Observation, String> {
    let assignment = consumer.assignment().map_err(|e| e.to_string())?;
    let owned: std::collections::HashSet<(String, i32)> =
        assignment.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    let mut seen = Observation {
        fatal: consumer.client().fatal_error().map(|(code, reason)| format!("{code:?}: {reason}")),
        assigned: owned.len(),
        ..Observation::default()
    };
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| e.to_string())?;
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                for p in t.partitions().iter().filter(|p| !owned.contains(&(topic.clone(), p.id()))) {
                    partitions.add_partition(topic, p.id());
                }
            }
            _ => seen.missing.push(topic.clone()),
        }
    }
    if partitions.count() == 0 || seen.fatal.is_some() {
        return Ok(seen);
    }
    // Without a coordinator answer, storing resumes from the low watermark as far as we know.
    let committed = consumer.committed_offsets(partitions.clone(), timeout).unwrap_or(partitions);
    for element in committed.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).map_err(|e| e.to_string())?;
        let from = match element.offset() {
            Offset::Offset(committed) => committed.max(low),
            _ => low,
        };
        if high > from {
            seen.waiting.insert((topic.to_string(), partition), from);
        }
    }
    Ok(seen)
}

/// Watches the current client (`consumers` holds it; `None` once the consumer stops) until `shutdown`, and signals
/// `rejoin` when a fresh one is needed.
pub(crate) async fn watch(
    config: ConsumerConfig,
    mut consumers: watch::Receiver<Option<Arc<StreamConsumer>>>,
    health: Health,
    rejoin: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let labels = [("inbox", config.inbox.clone())];
    metrics::counter!("relay_inbox_rejoins_total", &labels).increment(0);
    let mut watchdog = Watchdog::new(config.assignment_timeout, &config.group_id);
    let every = (config.assignment_timeout / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let timeout = config.common.probe_interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        let Some(consumer) = consumers.borrow_and_update().clone() else { return };
        let topics = config.topics.clone();
        let seen = tokio::task::spawn_blocking(move || observe(&consumer, &topics, timeout)).await;
        match seen {
            Ok(Ok(seen)) => {
                metrics::gauge!("relay_inbox_assigned_partitions", &labels).set(seen.assigned as f64);
                match watchdog.judge(&seen, tokio::time::Instant::now()) {
                    Verdict::Ready if !watchdog.stalled_now() => health.ok(ASSIGNMENT),
                    Verdict::Ready => {}
                    Verdict::NotReady(reason) => health.degraded(ASSIGNMENT, reason),
                    Verdict::Rejoin(reason) => {
                        health.degraded(ASSIGNMENT, reason);
                        metrics::counter!("relay_inbox_rejoins_total", &labels).increment(1);
                        rejoin.notify_one();
                    }
                }
            }
            // The brokers do not answer: the `kafka` part says so; nothing to judge.
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot look at the consumer's assignment"),
            Err(e) => tracing::debug!(error = %e, "assignment check did not finish"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(offsets: &[(i32, i64)]) -> Observation {
        let waiting = offsets.iter().map(|(p, o)| (("t".to_string(), *p), *o)).collect();
        Observation { waiting, ..Observation::default() }
    }

    #[test]
    fn no_assignment_with_records_waiting_rejoins_after_the_timeout_and_again_later() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(30), "g");
        assert_eq!(dog.judge(&waiting(&[(0, 5)]), start), Verdict::Ready);
        assert_eq!(dog.judge(&waiting(&[(0, 5)]), start + Duration::from_secs(29)), Verdict::Ready);
        let at = start + Duration::from_secs(30);
        assert!(matches!(dog.judge(&waiting(&[(0, 5)]), at), Verdict::Rejoin(r) if r.contains("group g")));
        assert!(dog.stalled_now());
        // The fresh client gets a whole timeout, then is replaced too if it is stuck as well.
        assert_eq!(dog.judge(&waiting(&[(0, 5)]), at + Duration::from_secs(10)), Verdict::Ready);
        assert!(matches!(dog.judge(&waiting(&[(0, 5)]), at + Duration::from_secs(60)), Verdict::Rejoin(_)));
        // Assigned again, so nothing waits outside this member: over.
        let owned = Observation { assigned: 2, ..waiting(&[]) };
        assert_eq!(dog.judge(&owned, at + Duration::from_secs(61)), Verdict::Ready);
        assert!(!dog.stalled_now());
    }

    #[test]
    fn an_idle_member_whose_group_stores_everything_is_not_stalled() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(30), "g");
        for s in 0..100 {
            // Another member owns the partitions and keeps storing: the offsets move.
            let seen = waiting(&[(0, s), (1, 2 * s)]);
            assert_eq!(dog.judge(&seen, start + Duration::from_secs(s as u64)), Verdict::Ready);
        }
        // Nothing waits at all: an idle member in an idle group.
        assert_eq!(dog.judge(&waiting(&[]), start + Duration::from_secs(500)), Verdict::Ready);
    }

    #[test]
    fn a_missing_topic_is_named_and_a_fatal_error_rejoins_after_the_timeout() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(5), "g");
        let missing = Observation { missing: vec!["payments.v9".into()], ..Observation::default() };
        for s in [0, 10, 100] {
            let verdict = dog.judge(&missing, start + Duration::from_secs(s));
            assert!(matches!(verdict, Verdict::NotReady(r) if r.contains("payments.v9")));
        }
        let fenced = Observation { fatal: Some("FencedInstanceId: fenced".into()), ..Observation::default() };
        let verdict = dog.judge(&fenced, start + Duration::from_secs(200));
        assert!(matches!(verdict, Verdict::NotReady(r) if r.contains("same group.instance.id")));
        let verdict = dog.judge(&fenced, start + Duration::from_secs(205));
        assert!(matches!(verdict, Verdict::Rejoin(r) if r.contains("FencedInstanceId")));
    }
}
