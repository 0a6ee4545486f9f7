//! The HTTP/1 server under the three endpoints, with limits a hostile or broken client cannot
//! outlast.
//!
//! `axum::serve` sets no timeouts: a client that connects and sends nothing, or half a request
//! line, or keeps an idle keep-alive connection, holds its connection (and a file descriptor)
//! forever, and enough of them starve the probes. Here every connection has:
//! - [`HEADER_READ_TIMEOUT`] to send a complete request head, counted from when the server
//!   starts waiting for it: on a new connection, and again after every response on a keep-alive
//!   one (so it is also the idle timeout);
//! - [`CONNECTION_LIFETIME`] in all, whatever it does (a client that never reads its response);
//! - a place among at most [`MAX_CONNECTIONS`]; further clients wait in the listen queue;
//! - request heads of at most [`MAX_HEAD_BYTES`].
use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Time a client has to send a complete request head, and the longest an idle keep-alive
/// connection stays open: 5 s.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any connection stays open: 30 s.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The largest request head accepted, in bytes (hyper's smallest buffer).
pub const MAX_HEAD_BYTES: usize = 8192;

/// Serves `app` on `listener` until `shutdown`; then lets open connections finish for a second.
pub(crate) async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            connection(stream, app, shutdown).await;
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), connections.wait()).await;
}

async fn connection(stream: tokio::net::TcpStream, app: Router, shutdown: CancellationToken) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            tracing::debug!("HTTP connection open too long; closed");
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}
