//! A reachability check for the brokers, for readiness: a small client of its own asks for
//! cluster metadata, which only succeeds when a broker answers within the timeout. When none
//! does, the reason includes librdkafka's last error (a refused TLS certificate, a failed SASL
//! authentication), so `/readyz` says why rather than only "timed out".
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rdkafka::{
    client::ClientContext,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::{KafkaError, RDKafkaErrorCode},
};
use relay_config::Common;

use crate::KafkaSetupError;

/// Remembers the last error librdkafka reported for the probe's connections.
#[derive(Debug, Default)]
struct ProbeContext {
    last_error: Mutex<Option<String>>,
}

impl ProbeContext {
    fn remember(&self, reason: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(reason.to_string());
        }
    }
}

impl ClientContext for ProbeContext {
    /// librdkafka says why a connection failed in a `FAIL` log line (a refused certificate, a
    /// failed authentication). The service's own clients log the same failures, so the probe's
    /// copies are kept for `/readyz` and logged at debug level only.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(target: "librdkafka", ?level, fac, "probe: {log_message}");
        if fac == "FAIL" {
            self.remember(log_message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "broker probe");
        // "All brokers are down" follows the error that says why; keep that one.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        self.remember(reason);
    }
}

impl ConsumerContext for ProbeContext {}

/// How long a drain of the probe's event queue waits for more events.
const DRAIN: Duration = Duration::from_millis(10);

/// At most this many error events are served per check, so a check always ends.
const DRAIN_EVENTS: usize = 1000;

/// Asks the brokers for metadata on demand.
#[derive(Clone)]
pub struct Probe {
    client: Arc<BaseConsumer<ProbeContext>>,
    timeout: Duration,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Probe {
    /// A metadata-only client for a service's brokers, with its properties (security settings
    /// included). A check may take as long as the probe interval, between 100 ms and 5 s.
    pub fn new(common: &Common, client_id: &str) -> Result<Self, KafkaSetupError> {
        let mut config = crate::base(&common.kafka_brokers, &common.kafka_properties);
        config.set("client.id", client_id);
        let client: BaseConsumer<ProbeContext> =
            config.create_with_context(ProbeContext::default()).map_err(KafkaSetupError::Client)?;
        let timeout = common.probe_interval.clamp(Duration::from_millis(100), Duration::from_secs(5));
        Ok(Self { client: Arc::new(client), timeout })
    }

    /// How long one check, or another broker request made beside it, may wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Ok with the number of brokers in the cluster, or why no broker answered.
    pub async fn check(&self) -> Result<usize, String> {
        let (client, timeout) = (Arc::clone(&self.client), self.timeout);
        let fetched = tokio::task::spawn_blocking(move || {
            let fetched = client.fetch_metadata(None, timeout).map(|m| m.brokers().len());
            // Serve the client's queued events (logs and errors reach the context this way
            // only), so they are recorded and never pile up while the probe runs for weeks.
            for _ in 0..DRAIN_EVENTS {
                if client.poll(DRAIN).is_none() {
                    break;
                }
            }
            fetched
        })
        .await;
        match fetched {
            Ok(Ok(brokers)) => {
                if let Ok(mut last) = self.client.context().last_error.lock() {
                    *last = None;
                }
                Ok(brokers)
            }
            Ok(Err(e)) => {
                let last = self.client.context().last_error.lock().ok().and_then(|l| l.clone());
                match last {
                    Some(reason) => Err(format!("no broker answered: {e}; last client error: {reason}")),
                    None => Err(format!("no broker answered: {e}")),
                }
            }
            Err(e) => Err(format!("broker check did not finish: {e}")),
        }
    }
}
