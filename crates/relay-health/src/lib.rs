//! Health, readiness and metrics over HTTP, shared by the Relay services.
//!
//! A service names the parts it depends on (for example `database`, `kafka`, `publishing`) and
//! marks each one ok or degraded as it learns; `/readyz` answers 200 only while every part is ok,
//! and 503 with the reasons otherwise, so an orchestrator stops routing to, or alerts on, a
//! degraded sidecar while the service keeps retrying by itself. `/readyz?parts=a,b` considers
//! only the named parts: a sidecar's pod-level readiness probe asks only whether the schema the
//! application writes to is in place, so a Kafka outage never takes the application beside it out
//! of its Service. `/healthz` answers 200 while the process serves requests at all. `/metrics` renders the Prometheus registry that the `metrics`
//! macros across the crates write to. Every connection is held to the timeouts and limits in
//! [`server`], so a client that sends nothing, or too little, cannot keep one open.
#![forbid(unsafe_code)]

mod server;
mod topics;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    routing::get,
    Router,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// The part for the service's database, checked on a connection of the probe's own.
pub const DATABASE: &str = "database";

/// The part for the Kafka brokers, checked by `relay_kafka::Probe`.
pub const KAFKA: &str = "kafka";

/// The part that turns ok once the service's tables and functions exist (migrated, or checked
/// when migrations are off); it never degrades afterwards. A sidecar's pod-level readiness probe
/// asks for this part alone (`/readyz?parts=schema`).
pub const SCHEMA: &str = "schema";

pub use server::{CONNECTION_LIFETIME, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES};
pub use topics::{TopicLabels, OTHER_TOPIC};

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

    /// Marks `part` ok or degraded (with the error as the reason) by a check's result, and
    /// returns the result's value when it was ok.
    pub fn record<T, E: std::fmt::Display>(&self, part: &'static str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => {
                self.ok(part);
                Some(value)
            }
            Err(e) => {
                self.degraded(part, e);
                None
            }
        }
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

    /// Whether `part` is ok (`false` for a part this service does not have).
    pub fn is_ok(&self, part: &str) -> bool {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner).get(part) == Some(&Status::Ok)
    }

    /// Whether every part is ok.
    pub fn is_ready(&self) -> bool {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner).values().all(|s| *s == Status::Ok)
    }

    /// One line per part: `name: ok` or `name: degraded: reason`.
    pub fn describe(&self) -> String {
        self.report(None).map(|(_, text)| text).unwrap_or_default()
    }

    /// Whether the parts named in `only` (every part when `None`) are ok, with their lines; `Err`
    /// names a part this service does not have.
    fn report(&self, only: Option<&[&str]>) -> Result<(bool, String), String> {
        let parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(unknown) = only.into_iter().flatten().find(|name| !parts.contains_key(*name)) {
            let known: Vec<&str> = parts.keys().copied().collect();
            return Err(format!("no part {unknown:?}; parts: {}\n", known.join(", ")));
        }
        let selected = parts.iter().filter(|(name, _)| only.is_none_or(|only| only.contains(name)));
        let mut ready = true;
        let mut text = String::new();
        for (name, status) in selected {
            match status {
                Status::Ok => text.push_str(&format!("{name}: ok\n")),
                Status::Degraded(reason) => {
                    ready = false;
                    text.push_str(&format!("{name}: degraded: {reason}\n"));
                }
            }
        }
        Ok((ready, text))
    }
}

/// The bucket bounds, in seconds, of every histogram whose name ends in `_seconds`: from 1 ms
/// (a commit published within the same poll) to 10 minutes (a backlog after an outage).
pub const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

/// Installs the Prometheus recorder and, when `addr` is set, serves the three endpoints on it
/// until `shutdown`, each connection held to [`HEADER_READ_TIMEOUT`] and [`CONNECTION_LIFETIME`].
/// Without an address nothing is served and metrics are not recorded.
pub async fn serve(
    addr: Option<SocketAddr>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<Option<SocketAddr>, HealthError> {
    serve_labelled(addr, health, shutdown, &[]).await
}

/// [`serve`], with `labels` added to every metric of the process (the poller's `outbox`, so
/// that alerts group by outbox whatever labels the scraper adds). Histograms named `*_seconds`
/// get [`LATENCY_BUCKETS_SECONDS`].
pub async fn serve_labelled(
    addr: Option<SocketAddr>,
    health: Health,
    shutdown: CancellationToken,
    labels: &[(&str, &str)],
) -> Result<Option<SocketAddr>, HealthError> {
    let Some(addr) = addr else { return Ok(None) };
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
        .map_err(|e| HealthError::Recorder(e.to_string()))?;
    for (name, value) in labels {
        builder = builder.add_global_label(*name, *value);
    }
    let recorder = builder.install_recorder().map_err(|e| HealthError::Recorder(e.to_string()))?;
    metrics::describe_gauge!(
        "relay_ready",
        "1 while every part this service depends on is ok (see /readyz for the parts), else 0"
    );
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| HealthError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| HealthError::Bind { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Endpoints { health, recorder });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(server::serve(listener, app, shutdown));
    Ok(Some(bound))
}

#[derive(Clone)]
struct Endpoints {
    health: Health,
    recorder: PrometheusHandle,
}

/// `/readyz`, or `/readyz?parts=a,b` for only those parts. A part the service lacks is 404, and
/// a query that names no part is 400: a probe configured that way must fail, never pass blindly.
async fn readyz(State(endpoints): State<Endpoints>, RawQuery(query): RawQuery) -> (StatusCode, String) {
    let wanted: Option<Vec<&str>> = match query.as_deref() {
        None | Some("") => None,
        Some(query) => {
            let names: Vec<&str> = query
                .split('&')
                .filter_map(|pair| pair.strip_prefix("parts="))
                .flat_map(|list| list.split(&[',', '+'][..]))
                .filter(|name| !name.is_empty())
                .collect();
            if names.is_empty() {
                return (StatusCode::BAD_REQUEST, "name the parts: /readyz?parts=schema,kafka\n".into());
            }
            Some(names)
        }
    };
    match endpoints.health.report(wanted.as_deref()) {
        Ok((true, text)) => (StatusCode::OK, text),
        Ok((false, text)) => (StatusCode::SERVICE_UNAVAILABLE, text),
        Err(text) => (StatusCode::NOT_FOUND, text),
    }
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

    #[test]
    fn reports_on_the_named_parts_only() {
        let health = Health::new(&["database", "kafka", "schema"]);
        health.ok("schema");
        health.ok("database");
        health.degraded("kafka", "all brokers down");
        assert_eq!(health.report(Some(&["schema"])), Ok((true, "schema: ok\n".into())));
        assert_eq!(health.report(Some(&["database", "schema"])).map(|r| r.0), Ok(true));
        assert_eq!(health.report(Some(&["kafka", "schema"])).map(|r| r.0), Ok(false));
        assert!(health.report(Some(&["shema"])).is_err_and(|e| e.contains("no part \"shema\"")));
        assert_eq!(health.report(None).map(|r| r.0), Ok(false));
    }
}
