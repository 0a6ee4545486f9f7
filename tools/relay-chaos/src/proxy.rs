//! A fault-injecting TCP proxy, so the suite can cut or slow the network between Relay's services
//! and PostgreSQL or the broker without touching either.
//!
//! Every connection to the listener is forwarded to the target. [`ProxyControl::cut`] closes every
//! open connection at once (both sides, so the server sees its client vanish and releases its
//! session locks) and, for a while, accepts and closes new ones. [`ProxyControl::slow`] delays
//! every forwarded chunk by a latency in both directions without limiting throughput: chunks
//! queue with their delivery time and keep their order.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// Chunks in flight per direction; a full queue stops reading, as a full link would.
const QUEUE_CHUNKS: usize = 64;

/// A running proxy. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    control: ProxyControl,
    stop: CancellationToken,
}

/// A cloneable handle that injects faults into a [`Proxy`].
#[derive(Debug, Clone)]
pub struct ProxyControl {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    state: Mutex<State>,
    connections: AtomicU64,
    refused: AtomicU64,
    cuts: AtomicU64,
    slows: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Cancelled by the next cut; every connection accepted before it watches this token.
    epoch: CancellationToken,
    cut_until: Option<Instant>,
    slow_until: Option<Instant>,
    latency: Duration,
}

/// Counters of one proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyStats {
    /// Connections forwarded.
    pub connections: u64,
    /// Connections accepted and closed at once during a cut.
    pub refused: u64,
    pub cuts: u64,
    pub slows: u64,
}

impl Proxy {
    /// Listens on 127.0.0.1:`port` (0 picks a free port) and forwards to `target`.
    pub async fn start(name: &str, port: u16, target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            state: Mutex::new(State {
                epoch: CancellationToken::new(),
                cut_until: None,
                slow_until: None,
                latency: Duration::ZERO,
            }),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            slows: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, target, shared.clone(), stop.clone()));
        Ok(Self { addr, control: ProxyControl { shared }, stop })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control(&self) -> ProxyControl {
        self.control.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.control.shared.lock().epoch.cancel();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written: recover it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ProxyControl {
    /// The proxy's name, for reports.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Closes every open connection now, and closes new ones until `duration` has passed.
    pub fn cut(&self, duration: Duration) {
        let mut state = self.shared.lock();
        let old = std::mem::replace(&mut state.epoch, CancellationToken::new());
        old.cancel();
        let until = Instant::now() + duration;
        state.cut_until = Some(state.cut_until.map_or(until, |u| u.max(until)));
        self.shared.cuts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(proxy = %self.shared.name, ms = duration.as_millis() as u64, "cut every connection");
    }

    /// Delays every chunk forwarded in either direction by `latency`, for `duration`.
    pub fn slow(&self, latency: Duration, duration: Duration) {
        let mut state = self.shared.lock();
        state.latency = latency;
        state.slow_until = Some(Instant::now() + duration);
        self.shared.slows.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            proxy = %self.shared.name,
            latency_ms = latency.as_millis() as u64,
            ms = duration.as_millis() as u64,
            "slowing every connection"
        );
    }

    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            connections: s.connections.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            cuts: s.cuts.load(Ordering::Relaxed),
            slows: s.slows.load(Ordering::Relaxed),
        }
    }

    /// The delay for a chunk read now.
    fn latency_now(&self) -> Duration {
        let state = self.shared.lock();
        match state.slow_until {
            Some(until) if Instant::now() < until => state.latency,
            _ => Duration::ZERO,
        }
    }

    /// The epoch a new connection belongs to, or `None` while a cut lasts.
    fn admit(&self) -> Option<CancellationToken> {
        let state = self.shared.lock();
        match state.cut_until {
            Some(until) if Instant::now() < until => None,
            _ => Some(state.epoch.clone()),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let control = ProxyControl { shared };
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(proxy = %control.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(epoch) = control.admit() else {
            control.shared.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        };
        control.shared.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(forward(client, target, control.clone(), epoch));
    }
}

/// Forwards one connection until either side closes it or a cut cancels `epoch`.
async fn forward(client: TcpStream, target: SocketAddr, control: ProxyControl, epoch: CancellationToken) {
    let server = tokio::select! {
        _ = epoch.cancelled() => return,
        server = TcpStream::connect(target) => match server {
            Ok(server) => server,
            // The target is down (a restart): the client sees its connection close.
            Err(_) => return,
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Both directions end together: when one side closes or a cut comes, every half is dropped.
    tokio::select! {
        _ = epoch.cancelled() => {}
        _ = pipe(client_read, server_write, control.clone()) => {}
        _ = pipe(server_read, client_write, control) => {}
    }
}

/// Copies `from` to `to`, each chunk held back by the latency in force when it was read.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, control: ProxyControl) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = Instant::now() + control.latency_now();
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The reader saw end of stream and everything queued is written: pass the close on.
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(data).await?;
        let mut back = vec![0u8; data.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn forwards_then_cuts_open_connections_and_refuses_new_ones_while_the_cut_lasts() {
        let proxy = Proxy::start("echo", 0, echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"hello").await.unwrap(), b"hello");

        proxy.control().cut(Duration::from_millis(300));
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "an open connection is closed by the cut");
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut during, b"x").await.is_err(), "a new connection is closed during the cut");

        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut after, b"again").await.unwrap(), b"again");
        let stats = proxy.control().stats();
        assert_eq!((stats.connections, stats.refused, stats.cuts), (2, 1, 1));
    }

    #[tokio::test]
    async fn slow_delays_each_direction_and_keeps_the_bytes_in_order() {
        let proxy = Proxy::start("echo", 0, echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let fast = std::time::Instant::now();
        round_trip(&mut stream, b"warm").await.unwrap();
        let fast = fast.elapsed();

        proxy.control().slow(Duration::from_millis(150), Duration::from_secs(10));
        let started = std::time::Instant::now();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&mut stream, &data).await.unwrap(), data);
        // Each direction adds 150 ms: the echo cannot come back in less than 300 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?} (unslowed {fast:?})",
            started.elapsed()
        );
        assert_eq!(proxy.control().stats().slows, 1);
    }
}
