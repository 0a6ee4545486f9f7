//! Health, readiness and metrics over HTTP, shared by the Relay services.
//!
//! A service names the parts it depends on (for example `database`, `kafka`, `publishing`) and
//! marks each one ok or degraded as it learns; `/readyz` answers 200 only while every part is ok,
//! and 503 with the reasons otherwise, so an orchestrator stops routing to, or alerts on, a
//! degraded sidecar while the service keeps retrying by itself. `/healthz` answers 200 while the
//! process serves requests at all. `/metrics` renders the Prometheus registry that the `metrics`
//! macros across the crates write to.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Errors of the HTTP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen on {addr} for /metrics, /healthz and /readyz: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

/// The readiness of each part a service depends on; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Health {
    parts: Arc<Mutex<BTreeMap<&'static str, Status>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Ok,
    Degraded(String),
}

impl Health {
    /// Every part starts not ready ("starting") until the service marks it ok.
    pub fn new(parts: &[&'static str]) -> Self {
        let parts = parts.iter().map(|p| (*p, Status::Degraded("starting".into()))).collect();
        Self { parts: Arc::new(Mutex::new(parts)) }
    }

    pub fn ok(&self, part: &'static str) {
        self.set(part, Status::Ok);
    }

    /// Marks `part` degraded; the reason is shown by `/readyz` (never put secrets in it).
    pub fn degraded(&self, part: &'static str, reason: impl std::fmt::Display) {
        self.set(part, Status::Degraded(reason.to_string()));
    }

    fn set(&self, part: &'static str, status: Status) {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = parts.insert(part, status.clone());
        if previous.as_ref() != Some(&status) {
            match &status {
                Status::Ok => tracing::info!(part, "ready"),
                Status::Degraded(reason) => tracing::warn!(part, reason = %reason, "not ready"),
            }
        }
        let ready = parts.values().all(|s| *s == Status::Ok);
        metrics::gauge!("relay_ready").set(if ready { 1.0 } else { 0.0 });
    }

    /// Whether every part is ok.
    pub fn is_ready(&self) -> bool {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner).values().all(|s| *s == Status::Ok)
    }

    /// One line per part: `name: ok` or `name: degraded: reason`.
    pub fn describe(&self) -> String {
        let parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        parts
            .iter()
            .map(|(name, status)| match status {
                Status::Ok => format!("{name}: ok\n"),
                Status::Degraded(reason) => format!("{name}: degraded: {reason}\n"),
            })
            .collect()
    }
}

/// Installs the Prometheus recorder and, when `addr` is set, serves the three endpoints on it
/// until `shutdown`. Without an address nothing is served and metrics are not recorded.
pub async fn serve(
    addr: Option<SocketAddr>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<Option<SocketAddr>, HealthError> {
    let Some(addr) = addr else { return Ok(None) };
    let recorder =
        PrometheusBuilder::new().install_recorder().map_err(|e| HealthError::Recorder(e.to_string()))?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| HealthError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| HealthError::Bind { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Endpoints { health, recorder });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    });
    Ok(Some(bound))
}

#[derive(Clone)]
struct Endpoints {
    health: Health,
    recorder: PrometheusHandle,
}

async fn readyz(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    let status = if endpoints.health.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, endpoints.health.describe())
}

async fn render(State(endpoints): State<Endpoints>) -> String {
    endpoints.recorder.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is_ok() {
        let health = Health::new(&["database", "kafka"]);
        assert!(!health.is_ready(), "parts start as not ready");
        health.ok("database");
        assert!(!health.is_ready());
        health.ok("kafka");
        assert!(health.is_ready());
        health.degraded("kafka", "all brokers down");
        assert!(!health.is_ready());
        assert_eq!(health.describe(), "database: ok\nkafka: degraded: all brokers down\n");
    }
}
