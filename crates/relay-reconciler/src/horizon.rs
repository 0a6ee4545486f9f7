//! Service mode's verified ranges may only grow below ids that no running transaction can still
//! fill.
//!
//! Outbox ids are drawn when a row is inserted, but the row becomes visible when its transaction
//! commits, possibly long after rows with higher ids. A range that looked settled can thus gain
//! a row later; skipping it for good would never check that row, while a one-shot run would.
//! So a pass's settled bound ([`Horizon::advance`]) is kept waiting with the transactions that
//! were writing to the outbox when it was read (`outbox_writers.sql`): an INSERT holds the
//! table's RowExclusiveLock from before it draws its id until its transaction ends, so once every
//! one of them has ended, every row below the bound is committed or rolled back for good.
//!
//! The bound is read twice, before and after the writers, and the lower one kept: a transaction
//! that was still invisible at the first read and committed before the writers were listed is
//! not among them, but its row is visible to the second read.
//!
//! The argument needs what a primary with an uncached id sequence gives, so [`may_skip`] turns
//! skipping off elsewhere: a hot standby's `pg_locks` shows none of the primary's writers, and a
//! sequence cache above 1 lets an idle session hold ids below the bound that no lock shows.
use std::collections::{BTreeSet, VecDeque};

/// The most bounds kept waiting; older ones are dropped, which only delays skipping.
const MAX_WAITING: usize = 256;

/// One outbox's settled bounds, from waiting to released.
#[derive(Debug, Default)]
pub(crate) struct Horizon {
    /// (the writers when the bound was read, the bound), oldest first.
    waiting: VecDeque<(BTreeSet<String>, i64)>,
    /// The highest bound released: every row below it is committed or rolled back for good.
    released: i64,
}

impl Horizon {
    /// With the bound this pass read before listing the writers, the writers, and the bound read
    /// again after them: returns the id below which no transaction can still add a row.
    pub(crate) fn advance(&mut self, before: i64, writers: BTreeSet<String>, after: i64) -> i64 {
        let bound = before.min(after);
        self.waiting.push_back((writers.clone(), bound));
        let mut still = VecDeque::new();
        for (waiting_for, bound) in self.waiting.drain(..) {
            if waiting_for.is_disjoint(&writers) {
                self.released = self.released.max(bound);
            } else {
                still.push_back((waiting_for, bound));
            }
        }
        while still.len() > MAX_WAITING {
            still.pop_front();
        }
        self.waiting = still;
        self.released
    }
}

/// Why service mode may not skip any range of one outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSkip {
    /// The database is a hot standby (`pg_is_in_recovery()`): its `pg_locks` lacks the
    /// primary's writers.
    Standby,
    /// `relay.outbox`'s id sequence caches this many values per session.
    SequenceCache(i64),
}

impl std::fmt::Display for NoSkip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standby => f.write_str(
                "the outbox database is a hot standby, whose lock view does not show the primary's writers",
            ),
            Self::SequenceCache(n) => write!(
                f,
                "relay.outbox's id sequence caches {n} values per session, so an idle session can hold ids no lock shows"
            ),
        }
    }
}

/// Whether the lock argument holds for an outbox database: `in_recovery` from
/// `pg_is_in_recovery()`, `cache` the id sequence's cache size (`None`: not found, taken as 1).
pub(crate) fn may_skip(in_recovery: bool, cache: Option<i64>) -> Result<(), NoSkip> {
    if in_recovery {
        return Err(NoSkip::Standby);
    }
    match cache {
        Some(n) if n > 1 => Err(NoSkip::SequenceCache(n)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_bound_is_released_once_every_writer_of_its_time_has_ended() {
        let mut h = Horizon::default();
        // Nobody writes: the bound is final at once.
        assert_eq!(h.advance(100, set(&[]), 100), 100);
        // Writer 3/7 may hold an id below 500.
        assert_eq!(h.advance(500, set(&["3/7"]), 500), 100);
        // 3/7 still runs, 4/9 started: neither 500 nor 800 is final.
        assert_eq!(h.advance(800, set(&["3/7", "4/9"]), 800), 100);
        // 3/7 ended: 500 is final; 800 waits for 4/9, and 900 for 5/2 too.
        assert_eq!(h.advance(900, set(&["4/9", "5/2"]), 900), 500);
        // All ended.
        assert_eq!(h.advance(950, set(&[]), 950), 950);
    }

    #[test]
    fn a_long_transaction_holds_every_later_bound_back() {
        let mut h = Horizon::default();
        for pass in 0..1000 {
            let writers = set(&["1/1", &format!("2/{pass}")]);
            assert_eq!(h.advance(1000 + pass, writers, 1000 + pass), 0, "writer 1/1 is still open");
        }
        assert!(h.waiting.len() <= MAX_WAITING);
        assert_eq!(h.advance(5000, set(&["9/9"]), 5000), 1999, "1/1 ended: all but the newest are final");
    }

    #[test]
    fn a_writer_that_committed_between_the_bound_and_the_lock_list_holds_the_bound() {
        let mut h = Horizon::default();
        // Read first: 500. A transaction holding id 120, invisible then, commits before the
        // writers are listed (none); read again, its row is visible and bounds the pass at 120.
        assert_eq!(h.advance(500, set(&[]), 120), 120);
        // The same with writers still open: nothing above the previous release.
        assert_eq!(h.advance(900, set(&["2/5"]), 300), 120);
        assert_eq!(h.advance(950, set(&[]), 950), 950);
    }

    #[test]
    fn skipping_needs_a_primary_and_an_uncached_id_sequence() {
        assert_eq!(may_skip(false, Some(1)), Ok(()));
        assert_eq!(may_skip(false, None), Ok(()));
        assert_eq!(may_skip(true, Some(1)), Err(NoSkip::Standby));
        assert_eq!(may_skip(true, Some(20)), Err(NoSkip::Standby));
        assert_eq!(may_skip(false, Some(20)), Err(NoSkip::SequenceCache(20)));
        assert_eq!(may_skip(false, Some(2)), Err(NoSkip::SequenceCache(2)));
    }
}
