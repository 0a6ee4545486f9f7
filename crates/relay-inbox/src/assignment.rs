//! The assignment watchdog: a consumer that owns no partitions while its topics hold records
//! nobody stores is stalled, however healthy its database and brokers look.
//!
//! A consumer restarted quickly can rejoin a group whose rebalance never finishes for it (the
//! old member's session is still open, or the broker's group state is stuck): it then consumes
//! nothing, for good. A topic created after the consumer subscribed is likewise not consumed
//! until librdkafka next refreshes its metadata (minutes). Every few seconds this module looks
//! at the partitions of the subscribed topics this member does not own, with the group's
//! committed offsets and the high watermarks. A partition is waiting when records lie beyond
//! its committed offset and either no member of the group owns it (read from the group's
//! member list, [`crate::membership`]) or its high watermark grew while the committed offset
//! stayed put, or the group never committed an offset for it. A constant gap behind a
//! committed offset is no stall: the owner stores the last data offset + 1, so a
//! transaction's commit or abort marker (or an open transaction) at the tail of a partition
//! leaves a gap of one or more offsets that no consumer can ever close. Without a usable member
//! list such a gap cannot be told from a dead member still holding partitions, so it is acted
//! on with a wait that doubles after each fresh client that changed nothing (up to 16 times
//! the timeout): a few rejoins an hour, never a storm. When the
//! waiting offsets have not moved for `INBOX_ASSIGNMENT_TIMEOUT_MS`, the stall is logged, the
//! `assignment` readiness part is degraded, and the consumer asks for a fresh client, which
//! joins the group as a new member. No fresh client is asked for while this consumer's own
//! `storing` or `database` part is degraded: all replicas share the inbox database, so the
//! owner is as stuck as this member, and a new member would not help. The part is ok again
//! once the stalled partitions are owned (here or by a known member) or their offsets move. A subscribed topic that does
//! not exist degrades the part too, naming the topic; a fatal client error (for example
//! `FENCED_INSTANCE_ID`: another live process uses the same `group.instance.id`) degrades it
//! at once and is cured the same way after the timeout. Looks the coordinator does not answer
//! are skipped, as are partitions whose watermarks cannot be read.
//!
//! Gauge `relay_inbox_assigned_partitions{inbox}`: partitions this member owns. Counter
//! `relay_inbox_rejoins_total{inbox}`: fresh clients made because of a stall.
use std::{collections::BTreeMap, time::Duration};

pub(crate) use crate::watchdog::{watch, Watched};

/// The readiness part this module owns.
pub(crate) const ASSIGNMENT: &str = "assignment";

/// Where a partition with records nobody stored stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stand {
    /// The offset storing resumes from (the group's committed offset, else the low watermark).
    pub from: i64,
    /// The high watermark.
    pub high: i64,
    /// Whether no member stores the partition for sure: the group's member list says that no
    /// member owns it, or (the list not known) the group never committed an offset for it.
    /// `false`: not known; partitions another member owns are not waiting at all.
    pub unowned: bool,
}

/// `(topic, partition)` to where it stands.
pub(crate) type Waiting = BTreeMap<(String, i32), Stand>;

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
    /// The group coordinator's error when it did not give the committed offsets.
    pub coordinator: Option<String>,
}

/// What the watchdog concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ready,
    NotReady(String),
    /// Stalled for the timeout: make a fresh client.
    Rejoin(String),
}

/// One waiting partition's history: where it stood when its offset last moved, and since when
/// it has been stalled.
#[derive(Debug, Clone)]
struct Track {
    base: Stand,
    since: tokio::time::Instant,
}

/// The watchdog's memory between looks.
#[derive(Debug)]
pub(crate) struct Watchdog {
    timeout: Duration,
    group: String,
    /// Since when the client's fatal error has lasted.
    fatal_since: Option<tokio::time::Instant>,
    /// Since when the coordinator has refused this member, which owns nothing, the offsets.
    refused_since: Option<tokio::time::Instant>,
    /// Per waiting partition.
    tracks: BTreeMap<(String, i32), Track>,
    /// The stall reported (and the offsets its partitions stood at), until it is over.
    reported: Option<BTreeMap<(String, i32), i64>>,
    /// Fresh clients in a row made for nothing but a constant gap (the wait doubles with each).
    gap_rejoins: u32,
}

impl Watchdog {
    pub(crate) fn new(timeout: Duration, group: &str) -> Self {
        Self {
            timeout,
            group: group.to_string(),
            fatal_since: None,
            refused_since: None,
            tracks: BTreeMap::new(),
            reported: None,
            gap_rejoins: 0,
        }
    }

    /// Forgets the stall clocks (the stall, if reported, is not over).
    pub(crate) fn hold(&mut self) {
        self.fatal_since = None;
        self.tracks.clear();
    }

    /// The reported stall is over once each of its partitions is owned here or by a known
    /// member, or stored up to its end, or its offset moved.
    fn recover_if_over(&mut self, waiting: &Waiting) {
        let over = self.reported.as_ref().is_some_and(|stuck| {
            stuck.iter().all(|(key, from)| waiting.get(key).is_none_or(|s| s.from != *from))
        });
        if over {
            self.reported = None;
            self.gap_rejoins = 0;
            tracing::info!(group = %self.group, "partitions assigned or stored again; the stall is over");
        }
    }

    /// Judges one observation made at `now`.
    pub(crate) fn judge(&mut self, seen: &Observation, now: tokio::time::Instant) -> Verdict {
        if let Some(fatal) = &seen.fatal {
            self.tracks.clear();
            let since = *self.fatal_since.get_or_insert(now);
            let hint = if fatal.contains("Fenced") {
                " (another live process uses the same group.instance.id, INBOX_GROUP_INSTANCE_ID)"
            } else {
                ""
            };
            let reason = format!("the consumer client failed: {fatal}{hint}");
            if now.duration_since(since) < self.timeout {
                return Verdict::NotReady(reason);
            }
            self.fatal_since = Some(now);
            return self.rejoin(BTreeMap::new(), reason);
        }
        self.fatal_since = None;
        if !seen.missing.is_empty() {
            // Nothing to rejoin for; once the topic exists, the stall check below takes over.
            self.hold();
            return Verdict::NotReady(format!(
                "subscribed topics {:?} do not exist; nothing of theirs can be stored",
                seen.missing
            ));
        }
        match (&seen.coordinator, seen.assigned) {
            (None, _) => self.refused_since = None,
            (Some(_), assigned) if assigned > 0 => {
                // Passing coordinator trouble of a member that consumes: skip this look.
                self.refused_since = None;
                return Verdict::Ready;
            }
            (Some(error), _) => {
                // A member stuck outside its group is refused the offsets for good; passing
                // trouble ends well within the timeout.
                let since = *self.refused_since.get_or_insert(now);
                let wait = self.timeout * (1 << self.gap_rejoins.min(4));
                if now.duration_since(since) < wait {
                    return Verdict::Ready;
                }
                self.refused_since = None;
                self.gap_rejoins += 1;
                let reason = format!(
                    "the coordinator of group {} has refused this member, which owns no partition, the \
                     committed offsets for {} s: {error}",
                    self.group,
                    now.duration_since(since).as_secs()
                );
                return self.rejoin(BTreeMap::new(), reason);
            }
        }
        self.recover_if_over(&seen.waiting);
        self.tracks.retain(|key, _| seen.waiting.contains_key(key));
        let mut stalled = BTreeMap::new();
        let mut oldest = now;
        let mut unowned = false;
        let mut gap_only = true;
        for (key, stand) in &seen.waiting {
            let track = self.tracks.entry(key.clone()).or_insert(Track { base: *stand, since: now });
            if track.base.from != stand.from {
                // Another member stored some: this partition's clock starts again.
                *track = Track { base: *stand, since: now };
            }
            // Not known to be unowned and nothing new arrived: a gap no consumer can close (a
            // transaction marker) cannot be told from a member list gone stale (a dead member
            // still holding partitions), so fresh clients are tried with a wait that doubles
            // after each one that changed nothing.
            let strong = stand.unowned || stand.high > track.base.high;
            let wait = if strong { self.timeout } else { self.timeout * (1 << self.gap_rejoins.min(4)) };
            if now.duration_since(track.since) >= wait {
                stalled.insert(key.clone(), stand.from);
                unowned |= stand.unowned;
                gap_only &= !strong;
                oldest = oldest.min(track.since);
            }
        }
        if stalled.is_empty() {
            return Verdict::Ready;
        }
        let reason = format!(
            "{} partitions of group {} hold records not stored{}, for {} s ({} partitions assigned here)",
            stalled.len(),
            self.group,
            if unowned {
                " that no member owns or ever stored"
            } else if gap_only {
                " behind committed offsets that do not move"
            } else {
                " while new records arrive"
            },
            now.duration_since(oldest).as_secs(),
            seen.assigned,
        );
        // The fresh client gets a whole timeout of its own.
        self.tracks.clear();
        self.gap_rejoins = if gap_only { self.gap_rejoins + 1 } else { 0 };
        self.rejoin(stalled, reason)
    }

    fn rejoin(&mut self, stuck: BTreeMap<(String, i32), i64>, reason: String) -> Verdict {
        if self.reported.replace(stuck).is_none() {
            tracing::error!(group = %self.group, "consumer stalled: {reason}; joining again with a fresh client");
        }
        Verdict::Rejoin(reason)
    }

    /// Whether a stall was reported and is not over yet.
    pub(crate) fn stalled_now(&self) -> bool {
        self.reported.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partitions of topic `t` as `(partition, from, high, unowned)`.
    fn waiting(stands: &[(i32, i64, i64, bool)]) -> Observation {
        let waiting = stands
            .iter()
            .map(|&(p, from, high, unowned)| (("t".to_string(), p), Stand { from, high, unowned }))
            .collect();
        Observation { waiting, ..Observation::default() }
    }

    /// As [`waiting`], for a member that owns partitions of its own.
    fn owning(stands: &[(i32, i64, i64, bool)]) -> Observation {
        Observation { assigned: 1, ..waiting(stands) }
    }

    fn at(start: tokio::time::Instant, s: u64) -> tokio::time::Instant {
        start + Duration::from_secs(s)
    }

    #[test]
    fn unowned_partitions_with_records_waiting_rejoin_after_the_timeout_and_again_later() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(30), "g");
        let stuck = waiting(&[(0, 5, 9, true)]);
        assert_eq!(dog.judge(&stuck, start), Verdict::Ready);
        assert_eq!(dog.judge(&stuck, at(start, 29)), Verdict::Ready);
        assert!(matches!(dog.judge(&stuck, at(start, 30)), Verdict::Rejoin(r) if r.contains("group g")));
        assert!(dog.stalled_now());
        // The fresh client gets a whole timeout, then is replaced too if it is stuck as well.
        assert_eq!(dog.judge(&stuck, at(start, 40)), Verdict::Ready);
        assert!(dog.stalled_now(), "still stalled: nothing moved");
        assert!(matches!(dog.judge(&stuck, at(start, 90)), Verdict::Rejoin(_)));
        // The stalled partition assigned here: over, while another (just seen) waits.
        let owned = Observation { assigned: 1, ..waiting(&[(1, 3, 4, true)]) };
        assert_eq!(dog.judge(&owned, at(start, 91)), Verdict::Ready);
        assert!(!dog.stalled_now());
    }

    #[test]
    fn in_a_busy_group_a_stalled_partition_is_seen_beside_flowing_ones_and_recovers_when_it_moves() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(30), "g");
        // Partition 0 flows (another member stores it); partition 1 gets records nobody stores.
        for s in 0..30 {
            let seen = waiting(&[(0, 10 * s, 10 * s + 5, false), (1, 7, 8 + s, false)]);
            assert_eq!(dog.judge(&seen, at(start, s as u64)), Verdict::Ready, "at {s} s");
        }
        let seen = waiting(&[(0, 400, 405, false), (1, 7, 50, false)]);
        assert!(
            matches!(dog.judge(&seen, at(start, 31)), Verdict::Rejoin(r) if r.starts_with("1 partitions"))
        );
        assert!(dog.stalled_now());
        // Partition 0 still flows: not the stalled one, so the stall is not over.
        let seen = waiting(&[(0, 500, 505, false), (1, 7, 50, false)]);
        assert_eq!(dog.judge(&seen, at(start, 35)), Verdict::Ready);
        assert!(dog.stalled_now());
        // Partition 1 is stored again: over, and readiness may say so.
        let seen = waiting(&[(0, 600, 605, false), (1, 30, 50, false)]);
        assert_eq!(dog.judge(&seen, at(start, 40)), Verdict::Ready);
        assert!(!dog.stalled_now());
    }

    #[test]
    fn a_constant_gap_such_as_a_transaction_marker_never_makes_a_rejoin_storm() {
        let start = tokio::time::Instant::now();
        // Ownership not known (false): committed offset one, or several (an aborted tail), below.
        for gap in [1, 7] {
            let mut dog = Watchdog::new(Duration::from_secs(30), "g");
            let mut rejoins = 0;
            for s in 0..3600 {
                let seen = owning(&[(0, 100, 100 + gap, false), (1, 50, 51, false)]);
                rejoins += usize::from(matches!(dog.judge(&seen, at(start, s)), Verdict::Rejoin(_)));
            }
            // After 30 s, then 60, 120, 240 and every 480 s: 10 in an hour, not 120.
            assert_eq!(rejoins, 10, "gap {gap}");
        }
    }

    #[test]
    fn a_member_owning_nothing_behind_a_constant_gap_tries_fresh_clients_ever_more_rarely() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(10), "g");
        let gap = waiting(&[(0, 100, 101, false)]);
        let mut rejoins = Vec::new();
        for s in 0..1000 {
            if let Verdict::Rejoin(r) = dog.judge(&gap, at(start, s)) {
                assert!(r.contains("do not move"), "{r}");
                rejoins.push(s);
            }
        }
        // 10 s, then 20, 40, 80, 160 s and every 160 s after that: no storm.
        assert_eq!(rejoins[..6], [10, 31, 72, 153, 314, 475]);
        assert_eq!(rejoins.len(), 9);
        // Owning partitions again resets the wait.
        let owning = Observation { assigned: 1, ..waiting(&[]) };
        assert_eq!(dog.judge(&owning, at(start, 1000)), Verdict::Ready);
        let mut dog_after = Vec::new();
        for s in 1001..1100 {
            if let Verdict::Rejoin(_) = dog.judge(&gap, at(start, s)) {
                dog_after.push(s);
            }
        }
        assert_eq!(dog_after.first(), Some(&1011));
    }

    #[test]
    fn a_member_owning_nothing_refused_its_offsets_for_the_timeout_rejoins_one_that_consumes_does_not() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(10), "g");
        let refused = Observation { coordinator: Some("NotCoordinator".into()), ..Observation::default() };
        assert_eq!(dog.judge(&refused, start), Verdict::Ready);
        assert_eq!(dog.judge(&refused, at(start, 9)), Verdict::Ready);
        assert!(
            matches!(dog.judge(&refused, at(start, 10)), Verdict::Rejoin(r) if r.contains("NotCoordinator"))
        );
        // An answer ends it; a member that consumes only skips such looks.
        assert_eq!(dog.judge(&waiting(&[]), at(start, 11)), Verdict::Ready);
        let consuming = Observation { assigned: 2, ..refused };
        for s in 12..200 {
            assert_eq!(dog.judge(&consuming, at(start, s)), Verdict::Ready);
        }
    }

    #[test]
    fn new_records_nobody_stores_are_a_stall_even_when_ownership_is_not_known() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(30), "g");
        assert_eq!(dog.judge(&owning(&[(0, 100, 101, false)]), start), Verdict::Ready);
        // Records arrive and are not stored.
        assert_eq!(dog.judge(&owning(&[(0, 100, 150, false)]), at(start, 1)), Verdict::Ready);
        assert_eq!(dog.judge(&owning(&[(0, 100, 160, false)]), at(start, 29)), Verdict::Ready);
        let verdict = dog.judge(&owning(&[(0, 100, 160, false)]), at(start, 30));
        assert!(matches!(verdict, Verdict::Rejoin(r) if r.contains("new records arrive")));
        // Storing moves again: the stall is over.
        assert_eq!(dog.judge(&owning(&[(0, 150, 160, false)]), at(start, 40)), Verdict::Ready);
        assert!(!dog.stalled_now());
    }

    #[test]
    fn an_idle_member_whose_group_stores_everything_is_not_stalled() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(30), "g");
        for s in 0..100 {
            // Another member owns the partitions and keeps storing: the offsets move.
            let seen = waiting(&[(0, s, s + 10, false), (1, 2 * s, 2 * s + 10, false)]);
            assert_eq!(dog.judge(&seen, at(start, s as u64)), Verdict::Ready);
        }
        // Nothing waits at all: an idle member in an idle group.
        assert_eq!(dog.judge(&waiting(&[]), at(start, 500)), Verdict::Ready);
    }

    #[test]
    fn held_while_the_database_is_away_the_clock_starts_again_afterwards() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(30), "g");
        let stuck = waiting(&[(0, 5, 9, true)]);
        assert_eq!(dog.judge(&stuck, start), Verdict::Ready);
        dog.hold(); // as the watcher does while `storing` or `database` is degraded
        assert_eq!(dog.judge(&stuck, at(start, 31)), Verdict::Ready);
        assert!(matches!(dog.judge(&stuck, at(start, 61)), Verdict::Rejoin(_)));
    }

    #[test]
    fn a_missing_topic_is_named_and_a_fatal_error_rejoins_after_the_timeout() {
        let start = tokio::time::Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(5), "g");
        let missing = Observation { missing: vec!["payments.v9".into()], ..Observation::default() };
        for s in [0, 10, 100] {
            let verdict = dog.judge(&missing, at(start, s));
            assert!(matches!(verdict, Verdict::NotReady(r) if r.contains("payments.v9")));
        }
        let fenced = Observation { fatal: Some("FencedInstanceId: fenced".into()), ..Observation::default() };
        let verdict = dog.judge(&fenced, at(start, 200));
        assert!(matches!(verdict, Verdict::NotReady(r) if r.contains("same group.instance.id")));
        let verdict = dog.judge(&fenced, at(start, 205));
        assert!(matches!(verdict, Verdict::Rejoin(r) if r.contains("FencedInstanceId")));
    }
}
