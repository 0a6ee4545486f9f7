//! The chaos suite: Relay carrying a real workload while its processes are killed, its broker
//! and database restart and its connections are cut or slowed, then a check that every message
//! reached every inbox exactly once and in per-key order.
//!
//! The pieces are usable one by one (the fault tests in `crates/relay/tests/it/faults.rs` do):
//! a fault-injecting TCP [`proxy`], a private restartable PostgreSQL ([`postgres`]), a restartable
//! Tansu broker on durable storage ([`broker`]), the real service binaries ([`services`]), an
//! application writing to the outbox ([`workload`]), the fault injector ([`faults`]), the wait
//! for recovery after each fault ([`progress`]), the end check ([`verify`]) and the report
//! ([`report`]). [`suite`] wires them into one run. [`tls`] puts TLS in front of the broker for
//! the Kafka security tests.
#![forbid(unsafe_code)]

pub mod broker;
pub mod cli;
pub mod faults;
pub mod postgres;
pub mod progress;
pub mod proxy;
pub mod report;
pub mod services;
pub mod suite;
pub mod tls;
pub mod verify;
pub mod workload;

use std::time::{Duration, Instant};

/// Errors of the chaos suite's machinery (not findings: those are in the [`report`]).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    Command { command: String, status: String, output: String },
    #[error("database: {}", relay_db::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    KafkaSetup(#[from] relay_kafka::KafkaSetupError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("{0}")]
    Setup(String),
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.into();
    move |source| ChaosError::Io { what, source }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16, ChaosError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_error("find a free port"))?;
    Ok(listener.local_addr().map_err(io_error("find a free port"))?.port())
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub async fn await_port(port: u16, timeout: Duration, what: &str) -> Result<(), ChaosError> {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(ChaosError::Timeout { what: what.to_string(), secs: timeout.as_secs() });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One connection to `url` (no TLS: everything here is on loopback).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ChaosError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}
