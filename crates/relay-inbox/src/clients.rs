//! The consumer's Kafka clients: how one is made, and how a replaced one is closed without
//! blocking the async workers, one at a time.
//!
//! The assignment watchdog may replace the client ([`crate::assignment`]); each client carries
//! a generation number, so that a request to replace an older client is ignored. With static
//! membership (`INBOX_GROUP_INSTANCE_ID`) the old client is closed before the fresh one joins:
//! two live clients with one `group.instance.id` fence each other.
use std::{
    sync::{mpsc, Arc},
    time::Duration,
};

use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::{ConsumerConfig, InboxError};

/// The client in use and its generation (1 for the first, one more per fresh client).
#[derive(Clone)]
pub(crate) struct Current {
    pub generation: u64,
    pub consumer: Arc<StreamConsumer>,
}

/// The consumer's settings, with fetch sizes that fit a record whose payload is at the largest
/// limit, and a prefetch queue and fetch responses bounded by bytes
/// (`relay_config::consumer_memory_defaults`).
pub(crate) fn consumer_client_config(config: &ConsumerConfig) -> rdkafka::ClientConfig {
    let mut client = relay_kafka::consumer_config(
        &config.common.kafka_brokers,
        &config.group_id,
        &format!("relay-inbox-consumer-{}", config.inbox),
        &config.common.kafka_properties,
    );
    let sizes = relay_config::record_size_defaults(
        &config.max_payload,
        &config.common.kafka_properties,
        relay_config::KafkaRole::Consumer,
    );
    for (property, value) in sizes {
        client.set(property, value);
    }
    for (property, value) in
        relay_config::consumer_memory_defaults(&config.max_payload, &config.common.kafka_properties)
    {
        client.set(property, value);
    }
    if let Some(id) = &config.group_instance_id {
        client.set("group.instance.id", id);
    }
    client
}

/// A consumer client subscribed to the configured topics.
pub(crate) fn subscribed(config: &ConsumerConfig) -> Result<Arc<StreamConsumer>, InboxError> {
    let consumer: StreamConsumer = consumer_client_config(config).create().map_err(InboxError::Consumer)?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(InboxError::Consumer)?;
    Ok(Arc::new(consumer))
}

/// How long a closing client waits for the watchers to let go of it before it is dropped anyway
/// (they hold it for one look, a few broker requests of at most 5 s each).
const RELEASE_WAIT: Duration = Duration::from_secs(30);

type Closing = (Arc<StreamConsumer>, Option<tokio::sync::oneshot::Sender<()>>);

/// Closes replaced clients on one thread of its own, one at a time: leaving the group may take
/// as long as the brokers make it, and a stalled consumer must not pile up threads. Offsets a
/// replaced client stored but did not commit are lost, so their records are delivered again
/// and dropped as duplicates.
pub(crate) struct Closer(mpsc::Sender<Closing>);

impl Closer {
    pub(crate) fn start() -> Self {
        let (tx, rx) = mpsc::channel::<Closing>();
        std::thread::spawn(move || {
            for (consumer, done) in rx {
                let deadline = std::time::Instant::now() + RELEASE_WAIT;
                // Drop the last reference here, so that "closed" means closed.
                while Arc::strong_count(&consumer) > 1 && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(consumer);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        });
        Self(tx)
    }

    /// Closes `consumer` in the background.
    pub(crate) fn close(&self, consumer: Arc<StreamConsumer>) {
        let _ = self.0.send((consumer, None));
    }

    /// Closes `consumer` and waits until it is closed, at most `within`.
    pub(crate) async fn close_now(&self, consumer: Arc<StreamConsumer>, within: Duration) {
        let (done, closed) = tokio::sync::oneshot::channel();
        if self.0.send((consumer, Some(done))).is_ok() && tokio::time::timeout(within, closed).await.is_err()
        {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "the replaced client did not close in time; the fresh one may fence it"
            );
        }
    }
}
