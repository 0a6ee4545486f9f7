//! The assignment watchdog's eyes and hands: it looks at the consumer client and the group
//! (blocking broker requests, off the async workers) and asks for a fresh client when
//! [`crate::assignment::Watchdog`] judges the consumer stalled. The judging, and the readiness
//! part and metrics this loop keeps, are described in [`crate::assignment`].
use std::time::Duration;

use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    Offset, TopicPartitionList,
};
use relay_health::Health;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    assignment::{Observation, Stand, Verdict, Watchdog, ASSIGNMENT},
    clients::Current,
    membership, ConsumerConfig,
};

/// Looks at the consumer (blocking: broker requests of up to `timeout` each). `Err` when the
/// brokers or the group coordinator do not answer: nothing can be judged from such a look.
fn observe(
    consumer: &StreamConsumer,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Observation, String> {
    let assignment = consumer.assignment().map_err(|e| e.to_string())?;
    let owned: membership::Owned =
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
    let committed = match consumer.committed_offsets(partitions, timeout) {
        Ok(committed) => committed,
        Err(e) => {
            // Not "nothing committed": nothing is known about the offsets this time.
            tracing::debug!(error = %e, "the coordinator gave no committed offsets");
            seen.coordinator = Some(e.to_string());
            return Ok(seen);
        }
    };
    let group_owns = membership::owned_by_group(consumer, group, &owned, timeout);
    tracing::debug!(known = group_owns.is_some(), "who owns the group's partitions");
    for element in committed.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (low, high) = match consumer.fetch_watermarks(topic, partition, timeout) {
            Ok(marks) => marks,
            Err(e) => {
                tracing::debug!(error = %e, topic, partition, "no watermarks; partition skipped this time");
                continue;
            }
        };
        let (from, never_committed) = match element.offset() {
            Offset::Offset(committed) => (committed.max(low), false),
            _ => (low, true),
        };
        let key = (topic.to_string(), partition);
        let unowned = match &group_owns {
            // Another member owns it: its records are that member's to store, gap or not.
            Some(group) if group.contains(&key) => continue,
            Some(_) => true,
            // Markers leave a gap only behind committed records: records where the group never
            // committed anything are records nobody stored.
            None => never_committed,
        };
        if high > from {
            seen.waiting.insert(key, Stand { from, high, unowned });
        }
    }
    Ok(seen)
}

/// What the watchdog needs besides the consumer.
pub(crate) struct Watched {
    pub config: ConsumerConfig,
    pub health: Health,
    /// Whether the `database` part is kept up to date (only with the HTTP endpoint on).
    pub database_probed: bool,
    /// Where to ask for a fresh client: the generation of the client to replace.
    pub rejoin: watch::Sender<u64>,
    pub shutdown: CancellationToken,
}

/// Watches the current client (`consumers` holds it; `None` while there is none) until
/// `shutdown` or the sender is gone, and asks for a fresh one when it is stalled.
pub(crate) async fn watch(watched: Watched, mut consumers: watch::Receiver<Option<Current>>) {
    let Watched { config, health, database_probed, rejoin, shutdown } = watched;
    let labels = [("inbox", config.inbox.clone())];
    metrics::counter!("relay_inbox_rejoins_total", &labels).increment(0);
    let mut watchdog = Watchdog::new(config.assignment_timeout, &config.group_id);
    let every = (config.assignment_timeout / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let timeout = config.common.probe_interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        let current = consumers.borrow_and_update().clone();
        if let Some(Current { generation, consumer }) = current {
            let (topics, group) = (config.topics.clone(), config.group_id.clone());
            let seen =
                tokio::task::spawn_blocking(move || observe(&consumer, &group, &topics, timeout)).await;
            let own_trouble =
                !health.is_ok(crate::STORING) || (database_probed && !health.is_ok(relay_health::DATABASE));
            match seen {
                Ok(Ok(seen)) => {
                    metrics::gauge!("relay_inbox_assigned_partitions", &labels).set(seen.assigned as f64);
                    if own_trouble {
                        // The shared inbox database is what stalls; a new member would not help.
                        watchdog.hold();
                    } else {
                        match watchdog.judge(&seen, tokio::time::Instant::now()) {
                            Verdict::Ready if !watchdog.stalled_now() => health.ok(ASSIGNMENT),
                            Verdict::Ready => {}
                            Verdict::NotReady(reason) => health.degraded(ASSIGNMENT, reason),
                            Verdict::Rejoin(reason) => {
                                health.degraded(ASSIGNMENT, reason);
                                metrics::counter!("relay_inbox_rejoins_total", &labels).increment(1);
                                rejoin.send_replace(generation);
                            }
                        }
                    }
                }
                // The brokers do not answer: the `kafka` part says so; nothing to judge.
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot look at the consumer's assignment"),
                Err(e) => tracing::debug!(error = %e, "assignment check did not finish"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = consumers.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(every) => {}
        }
    }
}
