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
mod delivery;
mod envelope;
mod fetch;
mod publish;
mod retention;
mod watch;

use std::time::Duration;

pub use config::{names, PollerConfig};
use rdkafka::{producer::FutureProducer, producer::Producer, ClientConfig};
use relay_health::Health;
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
    #[error("the leader lock's database session ended; leadership is lost")]
    LeadershipLost,
    #[error(transparent)]
    Health(#[from] relay_health::HealthError),
}

impl From<tokio_postgres::Error> for PollerError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// The leader lock's class: apart from `relay.enqueue`'s per-key locks (1380273217) and the
/// migration lock (1380273219), so no message key can collide with leadership.
const LEADER_LOCK_CLASS: i32 = 1_380_273_218;

/// The readiness part the publishing loop owns: degraded while it backs off after a failure.
const PUBLISHING: &str = "publishing";

/// Runs the poller until `shutdown` is cancelled, then flushes and returns. Outages of the
/// database or the brokers are waited out with backoff (and reported by `/readyz`); only a
/// schema that cannot be prepared, or an endpoint that cannot be served, stops it.
pub async fn run(config: PollerConfig, shutdown: CancellationToken) -> Result<(), PollerError> {
    let health =
        Health::new(&[relay_health::DATABASE, relay_health::KAFKA, PUBLISHING, relay_health::SCHEMA]);
    if relay_health::serve(config.common.http_addr, health.clone(), shutdown.clone()).await?.is_some() {
        tokio::spawn(watch::watch(config.clone(), health.clone(), shutdown.clone()));
    }
    let schema = relay_db::Schema::Outbox;
    let ready = relay_db::prepare_schema_patiently(
        &config.database_url,
        schema,
        config.common.migrate,
        &shutdown,
        |e| health.degraded(PUBLISHING, e),
    )
    .await?;
    if !ready {
        return Ok(());
    }
    health.ok(relay_health::SCHEMA);
    let mut backoff = relay_db::backoff();
    while !shutdown.is_cancelled() {
        let led = lead(&config, &health, &shutdown).await;
        metrics::gauge!("relay_outbox_leader").set(0.0);
        match led {
            Ok(Leadership::Ended) => backoff = relay_db::backoff(),
            Ok(Leadership::Standby) => {
                health.ok(PUBLISHING);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(config.leader_retry) => {}
                }
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                health.degraded(PUBLISHING, &e);
                metrics::counter!("relay_outbox_interruptions_total").increment(1);
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

/// The producer's settings, with `message.max.bytes` large enough for every payload limit.
fn producer_client_config(config: &PollerConfig) -> ClientConfig {
    let properties = &config.common.kafka_properties;
    let mut client = relay_kafka::producer_config(
        &config.common.kafka_brokers,
        &format!("relay-outbox-poller-{}", config.source),
        properties,
    );
    for (property, value) in
        relay_config::record_size_defaults(&config.max_payload, properties, relay_config::KafkaRole::Producer)
    {
        client.set(property, value);
    }
    client
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
///
/// The session is watched while publishing, not only when the next statement fails: a leader
/// waiting for acknowledgements from an unreachable broker would otherwise keep waiting (and
/// keep its replica from standing by) long after another poller took the lock. Abandoning the
/// publishing loop then is safe: nothing can be marked on a dead session, and every unmarked
/// row is sent again by the next leader (the inboxes store a message once).
async fn lead(
    config: &PollerConfig,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<Leadership, PollerError> {
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
    metrics::gauge!("relay_outbox_leader").set(1.0);
    metrics::counter!("relay_outbox_leader_terms_total").increment(1);
    health.ok(PUBLISHING);
    let result = tokio::select! {
        result = publish::publish_until_shutdown(&client, &producer, config, health, shutdown) => result,
        () = session_lost(&client) => {
            tracing::warn!("the leader lock's session ended while publishing; standing down");
            // Dropping a producer purges and joins librdkafka's threads: not on an async worker.
            let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
            return Err(PollerError::LeadershipLost);
        }
    };
    // Dropping a producer purges what it still holds: wait for acknowledgements first. Rows
    // whose acknowledgement never came stay unpublished and are sent again.
    let grace = config.shutdown_grace;
    let flushed = tokio::task::spawn_blocking(move || producer.flush(grace)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!("records still in flight when leadership ended; their rows stay unpublished");
    }
    result.map(|()| Leadership::Ended)
}

/// Resolves once the session holding the leader lock has ended (the server then released the
/// lock). Keepalives and the TCP user timeout set by `relay_db::connect` bound how long a
/// silently dropped connection takes to be noticed.
async fn session_lost(client: &tokio_postgres::Client) {
    let mut tick = tokio::time::interval(SESSION_CHECK);
    loop {
        tick.tick().await;
        if client.is_closed() {
            return;
        }
    }
}

/// How often the leader checks its lock session while publishing.
const SESSION_CHECK: Duration = Duration::from_millis(200);
