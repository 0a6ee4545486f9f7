//! A reachability check for the brokers, for readiness: a small client of its own asks for
//! cluster metadata, which only succeeds when a broker answers within the timeout.
use std::{sync::Arc, time::Duration};

use rdkafka::consumer::{BaseConsumer, Consumer};
use relay_config::KafkaProperties;

use crate::KafkaSetupError;

/// Asks the brokers for metadata on demand.
#[derive(Clone)]
pub struct Probe {
    client: Arc<BaseConsumer>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Probe {
    /// A metadata-only client with the operator's properties (security settings included).
    pub fn new(
        brokers: &str,
        client_id: &str,
        properties: &KafkaProperties,
    ) -> Result<Self, KafkaSetupError> {
        let mut config = crate::base(brokers, properties);
        config.set("client.id", client_id);
        let client: BaseConsumer = config.create().map_err(KafkaSetupError::Client)?;
        Ok(Self { client: Arc::new(client) })
    }

    /// Ok with the number of brokers in the cluster, or why no broker answered.
    pub async fn check(&self, timeout: Duration) -> Result<usize, String> {
        let client = Arc::clone(&self.client);
        let fetched = tokio::task::spawn_blocking(move || {
            client.fetch_metadata(None, timeout).map(|m| m.brokers().len())
        })
        .await;
        match fetched {
            Ok(Ok(brokers)) => Ok(brokers),
            Ok(Err(e)) => Err(format!("no broker answered: {e}")),
            Err(e) => Err(format!("broker check did not finish: {e}")),
        }
    }
}
