//! Wake-ups for idle workers: one `LISTEN relay_inbox` connection per process, fanned out to
//! every worker through a counter, so that a notification sent while a worker was busy is not
//! lost (the worker sees the counter moved and looks again). Only notifications naming this
//! worker's inbox count: other inboxes of the same database do not wake it.
use relay_config::DatabaseUrl;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The channel the inbox-consumer notifies (payload: the inbox name) when it stored messages.
pub(crate) const CHANNEL: &str = "relay_inbox";

/// Starts the listener; the receiver's value moves on each notification whose payload is
/// `inbox` and on each reconnection (notifications may have been missed while it was away).
pub(crate) fn spawn(url: DatabaseUrl, inbox: String, shutdown: CancellationToken) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut backoff = relay_db::backoff();
        while !shutdown.is_cancelled() {
            match relay_db::listen(&url, CHANNEL, Some(&inbox)).await {
                Ok((_client, mut notifications)) => {
                    backoff = relay_db::backoff();
                    tx.send_modify(|n| *n += 1);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            received = notifications.recv() => match received {
                                Some(()) => tx.send_modify(|n| *n += 1),
                                None => break,
                            },
                        }
                    }
                    tracing::info!("LISTEN connection closed; reconnecting (idle workers poll meanwhile)");
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or(std::time::Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot LISTEN for new messages; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    });
    rx
}
