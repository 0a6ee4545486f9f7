//! Whether the pipeline has recovered after a fault, and how long that took (the recovery time).
//!
//! Recovered means caught up: every message committed by the time the fault ended is in every
//! inbox. The injector waits for this before the next fault, so each fault hits a pipeline
//! that is carrying messages rather than one still digging out from the last fault. (Faults
//! piled onto a lagging pipeline also make the local broker's SQLite storage slow down, since
//! its fetches cost more the further a consumer lags.)
use std::time::{Duration, Instant};

use crate::ChaosError;

/// Polls the origin and the inboxes directly (not through the proxy).
#[derive(Debug)]
pub struct ProgressProbe {
    origin_url: String,
    /// (inbox name, database URL).
    inboxes: Vec<(String, String)>,
    clients: Vec<Option<tokio_postgres::Client>>,
}

impl ProgressProbe {
    pub fn new(origin_url: String, inboxes: Vec<(String, String)>) -> Self {
        let clients = (0..=inboxes.len()).map(|_| None).collect();
        Self { origin_url, inboxes, clients }
    }

    /// Waits until every inbox holds every message committed when this call began, up to
    /// `timeout`. Returns the time it took, or `None` if it did not catch up in time.
    pub async fn await_recovery(&mut self, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut target = None;
        while started.elapsed() < timeout {
            let probe = async {
                if target.is_none() {
                    target = Some(self.committed().await?);
                }
                let stored = self.stored().await?;
                Ok::<_, ChaosError>(caught_up(target.unwrap_or(i64::MAX), &stored))
            };
            match probe.await {
                Ok(true) => return Some(started.elapsed()),
                Ok(false) => {}
                // The database itself may still be coming back; that is part of the recovery.
                Err(e) => tracing::debug!(error = %e, "progress probe failed; retrying"),
            }
            // Each probe counts the tables; every 200 ms keeps that a small load.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Messages in the outbox.
    async fn committed(&mut self) -> Result<i64, ChaosError> {
        let row = self.client(0).await?.query_one(include_str!("sql/outbox_committed.sql"), &[]).await;
        Ok(self.forget_on_error(0, row)?.get(0))
    }

    /// Messages stored, per inbox.
    async fn stored(&mut self) -> Result<Vec<i64>, ChaosError> {
        let mut stored = Vec::new();
        for i in 0..self.inboxes.len() {
            let name = self.inboxes[i].0.clone();
            let row =
                self.client(i + 1).await?.query_one(include_str!("sql/inbox_stored.sql"), &[&name]).await;
            stored.push(self.forget_on_error(i + 1, row)?.get(0));
        }
        Ok(stored)
    }

    async fn client(&mut self, i: usize) -> Result<&tokio_postgres::Client, ChaosError> {
        if self.clients[i].as_ref().is_none_or(|c| c.is_closed()) {
            let url = if i == 0 { &self.origin_url } else { &self.inboxes[i - 1].1 };
            self.clients[i] = Some(crate::connect(url).await?);
        }
        Ok(self.clients[i].as_ref().expect("connected above"))
    }

    fn forget_on_error<T>(
        &mut self,
        i: usize,
        result: Result<T, tokio_postgres::Error>,
    ) -> Result<T, ChaosError> {
        result.map_err(|e| {
            self.clients[i] = None;
            e.into()
        })
    }
}

fn caught_up(target: i64, stored: &[i64]) -> bool {
    stored.iter().all(|n| *n >= target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_when_every_inbox_holds_the_target() {
        assert!(caught_up(100, &[100, 120]));
        assert!(!caught_up(100, &[100, 99]), "the second inbox lags");
        assert!(caught_up(0, &[0, 0]));
    }
}
