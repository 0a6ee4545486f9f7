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
    /// With the bound this pass read and the writers listed right after it: returns the id
    /// below which no transaction can still add a row.
    pub(crate) fn advance(&mut self, bound: i64, writers: BTreeSet<String>) -> i64 {
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
        assert_eq!(h.advance(100, set(&[])), 100);
        // Writer 3/7 may hold an id below 500.
        assert_eq!(h.advance(500, set(&["3/7"])), 100);
        // 3/7 still runs, 4/9 started: neither 500 nor 800 is final.
        assert_eq!(h.advance(800, set(&["3/7", "4/9"])), 100);
        // 3/7 ended: 500 is final; 800 waits for 4/9, and 900 for 5/2 too.
        assert_eq!(h.advance(900, set(&["4/9", "5/2"])), 500);
        // All ended.
        assert_eq!(h.advance(950, set(&[])), 950);
    }

    #[test]
    fn a_long_transaction_holds_every_later_bound_back() {
        let mut h = Horizon::default();
        for pass in 0..1000 {
            let writers = set(&["1/1", &format!("2/{pass}")]);
            assert_eq!(h.advance(1000 + pass, writers), 0, "writer 1/1 is still open");
        }
        assert!(h.waiting.len() <= MAX_WAITING);
        assert_eq!(h.advance(5000, set(&["9/9"])), 1999, "1/1 ended: all but the newest are final");
    }
}
