//! outbox-poller: tails one origin database's `relay.outbox` and publishes each row to Kafka.
//!
//! Guarantees, and where they come from:
//! - never skips a committed row: every scan reads all rows not yet marked (`fetch_pending.sql`),
//!   so a late-committing lower id is found by the next scan;
//! - per-key commit order: `relay.enqueue` serialises same-key writers, so id order is commit
//!   order per key; rows are sent in id order to an idempotent producer with no delivery deadline;
//! - progress only after acknowledgement: a row is marked published from its Ok delivery report;
//! - one publisher per outbox: a session advisory lock elects a leader, the others stand by.
#![forbid(unsafe_code)]

mod config;
mod envelope;
mod publish;
mod retention;

use std::time::Duration;

use backon::BackoffBuilder;
pub use config::{names, PollerConfig};
use rdkafka::{producer::FutureProducer, producer::Producer, ClientConfig};
use tokio_util::sync::CancellationToken;

/// Errors of the poller. Only a failed schema check stops it; the others end one leadership
/// term, and [`run`] backs off and starts a new one with a new producer.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    #[error(transparent)]
    Db(#[from] relay_db::DbError),
    #[error("Kafka producer failed: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error("Kafka producer is in a fatal state: {0}")]
    ProducerFatal(String),
    #[error("a batch made no progress: {0}")]
    Stalled(String),
}

impl From<tokio_postgres::Error> for PollerError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// The leader lock's class: apart from `relay.enqueue`'s per-key locks (1380273217) and the
/// migration lock (1380273219), so no message key can collide with leadership.
const LEADER_LOCK_CLASS: i32 = 1_380_273_218;

/// Runs the poller until `shutdown` is cancelled, then flushes and returns.
pub async fn run(config: PollerConfig, shutdown: CancellationToken) -> Result<(), PollerError> {
    relay_db::prepare_schema(&config.database_url, relay_db::Schema::Outbox, config.common.migrate).await?;
    let mut backoff = new_backoff();
    while !shutdown.is_cancelled() {
        match lead(&config, &shutdown).await {
            Ok(Leadership::Ended) => backoff = new_backoff(),
            Ok(Leadership::Standby) => {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(config.leader_retry) => {}
                }
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "outbox poller interrupted; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    tracing::info!("outbox poller stopped");
    Ok(())
}

fn producer_client_config(config: &PollerConfig) -> ClientConfig {
    relay_kafka::producer_config(
        &config.common.kafka_brokers,
        &format!("relay-outbox-poller-{}", config.source),
        &config.common.kafka_properties,
    )
}

/// Capped exponential backoff with jitter, without a limit on attempts.
fn new_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

enum Leadership {
    /// Another instance holds the lock.
    Standby,
    /// This instance led until shutdown.
    Ended,
}

/// Takes the leader lock on a dedicated session and publishes while holding it, with a producer
/// of its own. Losing the session ends leadership (the server releases the lock), and so does a
/// fatal producer error; either way [`run`] starts over.
async fn lead(config: &PollerConfig, shutdown: &CancellationToken) -> Result<Leadership, PollerError> {
    let client = relay_db::connect(&config.database_url).await?;
    let object = config.leader_lock_object();
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&LEADER_LOCK_CLASS, &object])
        .await?;
    if !row.get::<_, bool>(0) {
        tracing::debug!(lock = %object, "another poller is the leader; standing by");
        return Ok(Leadership::Standby);
    }
    // Plan each fetch with its own values, so the in-flight id list is hashed, not scanned.
    client.batch_execute("SET plan_cache_mode = force_custom_plan").await?;
    let _retention = retention::spawn(config, shutdown);
    let producer: FutureProducer = producer_client_config(config).create().map_err(PollerError::Producer)?;
    tracing::info!(database = config.database_url.database_name(), topics = ?config.topics, "leading: publishing the outbox");
    let result = publish::publish_until_shutdown(&client, &producer, config, shutdown).await;
    // Dropping a producer purges what it still holds: wait for acknowledgements first. Rows
    // whose acknowledgement never came stay unpublished and are sent again.
    let grace = config.shutdown_grace;
    let flushed = tokio::task::spawn_blocking(move || producer.flush(grace)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!("records still in flight when leadership ended; their rows stay unpublished");
    }
    result.map(|()| Leadership::Ended)
}
