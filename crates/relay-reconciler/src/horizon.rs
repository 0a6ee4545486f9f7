//! Service mode's verified ranges may only grow below ids that no running transaction can still
//! fill.
//!
//! Outbox ids are drawn when a row is inserted, but the row becomes visible when its transaction
//! commits, possibly long after rows with higher ids. A range that looked settled can thus gain
//! a row later; skipping it for good would never check that row, while a one-shot run would.
//! So a pass's settled bound ([`Horizon::settled`]) only becomes usable once every transaction
//! that could still insert below it has ended: the bound waits with the outbox's next
//! transaction id (`pg_snapshot_xmax`) taken at the start of the following pass, and is released
//! when the oldest running transaction (`pg_snapshot_xmin`) is at or past it. Taking that xmax a
//! pass later (at least one interval) also covers a writer that had drawn its id, but not yet
//! its transaction id, when the bound was read. The outbox's identity sequence must not cache
//! ids per session (PostgreSQL's default, `CACHE 1`), as relay.enqueue's ordering needs too.
use std::collections::VecDeque;

/// The most bounds kept waiting; older ones are dropped, which only delays skipping.
const MAX_WAITING: usize = 256;

/// One outbox's settled bounds, from waiting to usable.
#[derive(Debug, Default)]
pub(crate) struct Horizon {
    /// (xmax when the bound started waiting, the bound), oldest first.
    waiting: VecDeque<(u64, i64)>,
    /// The bound read in the previous pass, which starts waiting at the next pass's start.
    previous: Option<i64>,
    /// The highest bound released: every row below it is committed or rolled back for good.
    released: i64,
}

impl Horizon {
    /// At the start of a pass, with the outbox's current snapshot bounds: returns the id below
    /// which no transaction can still add a row.
    pub(crate) fn start_pass(&mut self, xmin: u64, xmax: u64) -> i64 {
        if let Some(bound) = self.previous.take() {
            self.waiting.push_back((xmax, bound));
        }
        while let Some(&(after, bound)) = self.waiting.front() {
            if after > xmin {
                break;
            }
            self.released = self.released.max(bound);
            self.waiting.pop_front();
        }
        while self.waiting.len() > MAX_WAITING {
            self.waiting.pop_front();
        }
        self.released
    }

    /// The settled bound this pass read (`settled_below.sql`).
    pub(crate) fn settled(&mut self, bound: i64) {
        self.previous = Some(bound);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_is_released_only_after_every_transaction_running_a_pass_later_ended() {
        let mut h = Horizon::default();
        assert_eq!(h.start_pass(100, 105), 0, "nothing read yet");
        h.settled(500);
        // Pass 2: transaction 104 is still running; the bound waits for xmax 110.
        assert_eq!(h.start_pass(104, 110), 0);
        h.settled(800);
        // Pass 3: 104 ended but 108 (begun before pass 2) still runs.
        assert_eq!(h.start_pass(108, 120), 0);
        h.settled(900);
        // Pass 4: everything begun before pass 2 ended: 500 is usable, 800 waits for 120.
        assert_eq!(h.start_pass(112, 125), 500);
        h.settled(950);
        // Pass 5: an idle database (xmin = xmax) releases everything read before this pass.
        assert_eq!(h.start_pass(130, 130), 950);
    }

    #[test]
    fn a_long_transaction_holds_every_later_bound_back() {
        let mut h = Horizon::default();
        h.start_pass(50, 60);
        for pass in 0..1000u64 {
            h.settled(1000 + pass as i64);
            assert_eq!(h.start_pass(55, 60 + pass), 0, "transaction 55 is still open");
        }
        assert!(h.waiting.len() <= MAX_WAITING);
        assert!(h.start_pass(2000, 2000) > 1000);
    }
}
