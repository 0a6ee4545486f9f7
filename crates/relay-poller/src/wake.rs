//! How the leader learns of new rows. Writers send no notification (migration V6: a NOTIFY
//! serialises the commits of every notifying transaction of the server and rules out two-phase
//! commit), so the leader scans again at once after a scan that found rows, and backs off while
//! the outbox is idle ([`Idle`]). A `NOTIFY relay_outbox` (relay-admin, the reconciler, or a
//! writer that chooses to send one) ends a wait early.
use crate::{
    delivery::{Outcome, Stragglers},
    PollerConfig,
};
use tokio_util::sync::CancellationToken;

/// The wait between scans of an idle outbox: none after a scan that found rows, then 1 ms,
/// doubling with each empty scan up to `OUTBOX_POLL_INTERVAL_MS`. Writers send no notification
/// (migration V6), so this is how new rows are found; an empty scan is one index probe.
pub(crate) struct Idle {
    next: std::time::Duration,
    longest: std::time::Duration,
}

impl Idle {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(1);

    pub(crate) fn new(longest: std::time::Duration) -> Self {
        Self { next: Self::FIRST.min(longest), longest }
    }

    /// The wait before the next scan; the one after is twice as long, up to the bound.
    pub(crate) fn next(&mut self) -> std::time::Duration {
        let wait = self.next;
        self.next = (wait * 2).min(self.longest);
        wait
    }

    /// Rows were found: the next empty scan waits the shortest time again.
    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST.min(self.longest);
    }
}

/// A LISTEN session for wake-up hints: `relay.enqueue` sends none (migration V6), but relay-admin
/// and the reconciler notify after a retry or re-drive, and a writer may notify in its own
/// transaction. Without one the poller still scans on its interval, and tries to LISTEN again the
/// next time it is idle.
pub(crate) struct Wakeups {
    _client: tokio_postgres::Client,
    notifications: tokio::sync::mpsc::Receiver<()>,
}

pub(crate) async fn listen(config: &PollerConfig) -> Option<Wakeups> {
    match relay_db::listen(&config.database_url, "relay_outbox", None).await {
        Ok((client, notifications)) => Some(Wakeups { _client: client, notifications }),
        Err(e) => {
            tracing::warn!(error = %e, "LISTEN unavailable; polling every interval");
            None
        }
    }
}

/// Waits for a notification, `wait`, or a straggler's report (recorded in `reported`).
pub(crate) async fn wait_for_work(
    wakeups: &mut Option<Wakeups>,
    wait: std::time::Duration,
    shutdown: &CancellationToken,
    stragglers: &mut Stragglers,
    reported: &mut Outcome,
) {
    let notified = async {
        match wakeups {
            Some(w) => {
                if w.notifications.recv().await.is_none() {
                    // LISTEN session lost; wait out the wait and LISTEN again when next idle.
                    *wakeups = None;
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = notified => {}
        _ = tokio::time::sleep(wait) => {}
        () = stragglers.next_report(reported) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Idle;

    fn waits(idle: &mut Idle, n: usize) -> Vec<u64> {
        (0..n).map(|_| idle.next().as_millis() as u64).collect()
    }

    #[test]
    fn idle_waits_double_from_one_millisecond_up_to_the_bound_and_start_over_after_rows() {
        let mut idle = Idle::new(Duration::from_millis(10));
        assert_eq!(waits(&mut idle, 6), [1, 2, 4, 8, 10, 10]);
        idle.reset();
        assert_eq!(waits(&mut idle, 3), [1, 2, 4]);
        let mut long = Idle::new(Duration::from_millis(500));
        assert_eq!(waits(&mut long, 11), [1, 2, 4, 8, 16, 32, 64, 128, 256, 500, 500]);
    }

    #[test]
    fn a_bound_of_one_millisecond_polls_every_millisecond() {
        let mut idle = Idle::new(Duration::from_millis(1));
        assert_eq!(waits(&mut idle, 3), [1, 1, 1]);
    }
}
