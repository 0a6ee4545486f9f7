//! outbox-poller: tails one origin database's `relay.outbox` and publishes each row to Kafka.
//!
//! Guarantees, and where they come from:
//! - never skips a committed row: every scan reads all rows not yet marked (`fetch_pending.sql`),
//!   so a late-committing lower id is found by the next scan;
//! - per-key commit order: `relay.enqueue` serialises same-key writers, so id order is commit
//!   order per key; rows are sent in id order to an idempotent producer with no delivery deadline;
//! - progress only after acknowledgement: a row is marked published from its Ok delivery report;
//! - one publisher per outbox: a lease row only the poller role may change elects a leader, the
//!   others stand by and take over when its session ends or its lease expires (`lease`).
#![forbid(unsafe_code)]

mod config;
mod delivery;
mod envelope;
mod fetch;
mod format;
mod lease;
mod publish;
mod retention;
mod straggling;
mod watch;

use std::time::Duration;

pub use config::{names, PollerConfig};
pub use format::{Format, TopicFormats};
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
    #[error("the lease session ended; leadership is lost")]
    LeadershipLost,
    #[error("another poller took over lease {lease} after term {term}; standing down")]
    Superseded { lease: String, term: i64 },
    #[error("lease {lease} (term {term}) was not renewed for {waited:?}; standing down before another poller takes over")]
    LeaseNotRenewed { lease: String, term: i64, waited: Duration },
    #[error(transparent)]
    Health(#[from] relay_health::HealthError),
}

impl From<tokio_postgres::Error> for PollerError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// The class of the leader's marker lock (see `lease`): apart from `relay.enqueue`'s locks
/// (1380273217, 1380273221), the migration lock (1380273219) and the inbox retention lock
/// (1380273220). Any role may take advisory locks, so the marker only tells whether the leader's
/// session lives; leadership itself is the lease row.
const LEADER_LOCK_CLASS: i32 = 1_380_273_218;

/// The readiness part the publishing loop owns: degraded while it backs off after a failure.
const PUBLISHING: &str = "publishing";

/// Runs the poller until `shutdown` is cancelled, then flushes and returns. Outages of the
/// database or the brokers are waited out with backoff (and reported by `/readyz`); only a
/// schema that cannot be prepared, or an endpoint that cannot be served, stops it.
pub async fn run(config: PollerConfig, shutdown: CancellationToken) -> Result<(), PollerError> {
    let health = Health::new(&[
        relay_health::DATABASE,
        relay_health::KAFKA,
        PUBLISHING,
        relay_health::SCHEMA,
        lease::LEADER,
    ]);
    if relay_health::serve(config.common.http_addr, health.clone(), shutdown.clone()).await?.is_some() {
        tokio::spawn(watch::watch(config.clone(), health.clone(), shutdown.clone()));
    }
    metrics::describe_gauge!(
        straggling::GAUGE,
        "Records handed to Kafka whose delivery report has not come within OUTBOX_DELIVERY_WAIT_MS; \
         their keys wait, and once there are OUTBOX_BATCH_SIZE of them their topics wait too"
    );
    // 0 until this replica leads: a standby reports it too.
    metrics::gauge!("relay_outbox_leader").set(0.0);
    let presence = lease::Presence::new(&config);
    presence.spawn_reporter(health.clone(), SESSION_CHECK);
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
        let led = lead(&config, &health, &presence, &shutdown).await;
        metrics::gauge!("relay_outbox_leader").set(0.0);
        match led {
            Ok(()) => backoff = relay_db::backoff(),
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

/// Stands by on a lease session of its own until this poller can take the lease, then
/// publishes with a producer and a publishing session of its own until shutdown or until the
/// term ends: the lease session closed, another poller took over, a renewal failed for too long,
/// or publishing failed (database, fatal producer). Any error ends the term; [`run`] starts over.
///
/// Leadership is watched while publishing, not only when the next statement fails: a leader
/// waiting for acknowledgements from an unreachable broker would otherwise keep waiting (and
/// keep its replica from standing by) long after another poller took the lease. Abandoning the
/// publishing loop then is safe: the publishing session declares its term, so once superseded it
/// can mark nothing (migration V5's fence), and every unmarked row is sent again by the next
/// leader (the inboxes store a message once).
async fn lead(
    config: &PollerConfig,
    health: &Health,
    presence: &lease::Presence,
    shutdown: &CancellationToken,
) -> Result<(), PollerError> {
    let lease = lease::LeaseSession::open(config).await?;
    let term = loop {
        let valid = lease.leader_valid().await?;
        if !valid {
            if let Some(term) = lease.try_take().await? {
                break term;
            }
        }
        presence.observed(valid);
        health.ok(PUBLISHING);
        tracing::debug!(lease = lease.name(), "another poller is the leader; standing by");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.leader_retry) => {}
        }
    };
    presence.observed(true);
    let led = lead_term(config, health, presence, shutdown, &lease, term).await;
    if !lease.is_closed() {
        lease.release(term).await;
    }
    led
}

/// One term: publishing while the lease holds.
async fn lead_term(
    config: &PollerConfig,
    health: &Health,
    presence: &lease::Presence,
    shutdown: &CancellationToken,
    lease: &lease::LeaseSession,
    term: i64,
) -> Result<(), PollerError> {
    let client = relay_db::connect(&config.database_url).await?;
    // Plan each fetch with its own values, so the in-flight id list is hashed, not scanned.
    client.batch_execute("SET plan_cache_mode = force_custom_plan").await?;
    // Marks from this session are fenced by this term (migration V5's trigger).
    client
        .execute(
            "SELECT set_config('relay.leader_lease', $1, false), set_config('relay.leader_term', $2, false)",
            &[&lease.name(), &term.to_string()],
        )
        .await?;
    let _retention = retention::spawn(config, shutdown);
    let producer: FutureProducer = producer_client_config(config).create().map_err(PollerError::Producer)?;
    tracing::info!(database = config.database_url.database_name(), topics = ?config.topics, term, "leading: publishing the outbox");
    metrics::gauge!("relay_outbox_leader").set(1.0);
    metrics::counter!("relay_outbox_leader_terms_total").increment(1);
    health.ok(PUBLISHING);
    let lost = tokio::select! {
        result = publish::publish_until_shutdown(&client, &producer, config, health, shutdown) => Ok(result),
        lost = lease.keep(term, presence) => Err(lost),
        () = session_lost(&client) => Err(PollerError::LeadershipLost),
    };
    let result = match lost {
        Ok(result) => result,
        Err(lost) => {
            // Nothing more can be marked in this term, so do not wait for acknowledgements
            // ([`run`] logs why). Dropping a producer purges and joins librdkafka's threads: not
            // on an async worker.
            metrics::gauge!("relay_outbox_leader").set(0.0);
            let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
            return Err(lost);
        }
    };
    // Dropping a producer purges what it still holds: wait for acknowledgements first. Rows
    // whose acknowledgement never came stay unpublished and are sent again.
    let grace = config.shutdown_grace;
    let flushed = tokio::task::spawn_blocking(move || producer.flush(grace)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!("records still in flight when leadership ended; their rows stay unpublished");
    }
    result
}

/// Resolves once the publishing session has ended. Keepalives and the TCP user timeout set by
/// `relay_db::connect` bound how long a silently dropped connection takes to be noticed.
async fn session_lost(client: &tokio_postgres::Client) {
    let mut tick = tokio::time::interval(SESSION_CHECK);
    loop {
        tick.tick().await;
        if client.is_closed() {
            return;
        }
    }
}

/// How often the leader checks its sessions while publishing, and how often leader presence is
/// reported.
const SESSION_CHECK: Duration = Duration::from_millis(200);
