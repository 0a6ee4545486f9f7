//! outbox-poller: tails one origin database's `relay.outbox` and publishes each row to Kafka.
//!
//! Guarantees, and where they come from:
//! - never skips a committed row: every scan reads all rows not yet marked (`fetch_pending.sql`),
//!   so a late-committing lower id is found by the next scan;
//! - per-key commit order: `relay.enqueue` serialises same-key writers, so id order is commit
//!   order per key; rows are sent in id order to an idempotent producer with no delivery deadline;
//! - progress only after acknowledgement: a row is marked published from its Ok delivery report;
//! - one publisher per outbox: a lease row only the poller role may change elects a leader, the
//!   others stand by and take over when its session ends or its lease expires (`lease`);
//! - one publisher per topic: a leader publishes only the topics it claimed, so pollers whose
//!   `OUTBOX_TOPICS` overlap without being equal never both publish a topic (`topics`).
#![forbid(unsafe_code)]

mod config;
mod delivery;
mod envelope;
mod fetch;
mod format;
mod lease;
mod measures;
mod publish;
mod publishing;
mod retention;
mod straggling;
mod topics;
mod wake;
mod watch;

use std::time::Duration;

pub use config::{names, PollerConfig};

/// The poller's statements, for `make bench`'s ceiling (the drain's database work done by SQL
/// alone, statement for statement); not a stable API.
#[doc(hidden)]
pub mod statements {
    pub const FETCH_PENDING: &str = include_str!("fetch_pending.sql");
    pub const FETCH_ROWS: &str = include_str!("fetch_rows.sql");
    pub const MARK_PUBLISHED: &str = include_str!("mark_published.sql");
}
pub use format::{Format, TopicFormats};
use publishing::{Publishing, Source};
use rdkafka::{producer::FutureProducer, producer::Producer as _, ClientConfig};
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
    #[error(
        "the producer got no delivery report for {waited:?} with {outstanding} records outstanding \
         (last error: {last_error}); starting a fresh producer"
    )]
    ProducerStalled { waited: Duration, outstanding: usize, last_error: String },
    #[error("a batch made no progress: {0}")]
    Stalled(String),
    #[error("the lease session ended; leadership is lost")]
    LeadershipLost,
    #[error("another poller took over lease {lease} after term {term}; standing down")]
    Superseded { lease: String, term: i64 },
    #[error("lease {lease} (term {term}) was not renewed for {waited:?}; standing down before another poller takes over")]
    LeaseNotRenewed { lease: String, term: i64, waited: Duration },
    #[error("a topic this poller was refused is free now; publishing it too")]
    TopicsFreed,
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

/// The producer every term makes afresh.
type Producer = FutureProducer;

/// The readiness part for publishing, fed by the publishing loop and the broker probe (see
/// [`publishing`]): degraded while the loop backs off, records get no reports, or no broker answers.
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
        topics::TOPICS,
    ]);
    // Only a leader claims topics; a standby has nothing to be refused.
    health.ok(topics::TOPICS);
    metrics::gauge!(measures::TOPICS_REFUSED).set(0.0);
    let outbox = [("outbox", config.source.as_str())];
    let publishing = Publishing::new(health.clone());
    let served =
        relay_health::serve_labelled(config.common.http_addr, health.clone(), shutdown.clone(), &outbox);
    if served.await?.is_some() {
        tokio::spawn(watch::watch(config.clone(), health.clone(), publishing.clone(), shutdown.clone()));
    } else {
        // Nothing probes the brokers without the endpoint; nothing reads readiness either.
        publishing.ok(Source::Broker);
    }
    metrics::describe_gauge!(
        straggling::GAUGE,
        "Records handed to Kafka whose delivery report has not come within OUTBOX_DELIVERY_WAIT_MS; \
         their keys wait, and once there are OUTBOX_BATCH_SIZE of them their topics wait too"
    );
    // Counters at 0, and the leader gauge 0 until this replica leads: a standby reports it too.
    measures::describe(&config);
    let presence = lease::Presence::new(&config);
    presence.spawn_reporter(health.clone(), SESSION_CHECK);
    let schema = relay_db::Schema::Outbox;
    let ready = relay_db::prepare_schema_patiently(
        &config.database_url,
        schema,
        config.common.migrate,
        &shutdown,
        |e| publishing.degraded(Source::Loop, e),
    )
    .await?;
    if !ready {
        return Ok(());
    }
    health.ok(relay_health::SCHEMA);
    let mut backoff = relay_db::backoff();
    while !shutdown.is_cancelled() {
        let led = lead(&config, &health, &publishing, &presence, &shutdown).await;
        metrics::gauge!(measures::LEADER).set(0.0);
        match led {
            Ok(()) => backoff = relay_db::backoff(),
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                publishing.degraded(Source::Loop, &e);
                metrics::counter!(measures::INTERRUPTIONS).increment(1);
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

/// The producer's settings, with `message.max.bytes` large enough for every payload limit and a
/// queue bounded by bytes (`relay_config::producer_memory_defaults`).
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
    let memory =
        relay_config::producer_memory_defaults(properties, config.batch_max_bytes, config.max_record);
    for (property, value) in memory {
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
    publishing: &Publishing,
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
        publishing.ok(Source::Loop);
        tracing::debug!(lease = lease.name(), "another poller is the leader; standing by");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.leader_retry) => {}
        }
    };
    presence.observed(true);
    metrics::gauge!(measures::LEADER).set(1.0);
    metrics::counter!(measures::LEADER_TERMS).increment(1);
    let led = lead_topics(config, health, publishing, presence, shutdown, &lease, term).await;
    // A standby is refused nothing.
    topics::Claim::default().report(health, lease.name(), false);
    if !lease.is_closed() {
        lease.release(term).await;
    }
    led
}

/// One term: claims this leader's topics (`topics`) and publishes those it got. While some are
/// refused it claims again at every renewal and, once one is free, publishes the larger set. A
/// leader refused every topic keeps its lease (so its standbys stay standing by) and publishes
/// nothing until one is free.
async fn lead_topics(
    config: &PollerConfig,
    health: &Health,
    publishing: &Publishing,
    presence: &lease::Presence,
    shutdown: &CancellationToken,
    lease: &lease::LeaseSession,
    term: i64,
) -> Result<(), PollerError> {
    let mut reported: Option<topics::Claim> = None;
    loop {
        let claim = match lease.claim().await? {
            Some(claim) => {
                claim.report(health, lease.name(), reported.as_ref() != Some(&claim));
                reported = Some(claim.clone());
                claim
            }
            // Another poller's claim held the topic leases too long: this leader publishes
            // nothing until a claim succeeds (it claims again at every renewal), so readiness
            // must not say it publishes its topics.
            None => {
                topics::Claim::report_unclaimed(health, lease.name());
                reported = None;
                topics::Claim::default()
            }
        };
        let watch_for_more = (!claim.refused.is_empty()).then_some(claim.led.as_slice());
        let ended = match claim.scan_topics() {
            None => {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    lost = lease.keep(term, presence, Some(&[])) => Err(lost),
                }
            }
            Some(scan) => {
                let mut scoped = config.clone();
                scoped.topics = scan;
                lead_term(&scoped, publishing, presence, shutdown, lease, term, watch_for_more).await
            }
        };
        match ended {
            Err(PollerError::TopicsFreed) => {
                tracing::info!(lease = lease.name(), "a refused topic is free; claiming it")
            }
            other => return other,
        }
    }
}

/// One term's publishing of `config.topics` (the claimed ones) while the lease holds.
async fn lead_term(
    config: &PollerConfig,
    publishing: &Publishing,
    presence: &lease::Presence,
    shutdown: &CancellationToken,
    lease: &lease::LeaseSession,
    term: i64,
    watch_for_more: Option<&[String]>,
) -> Result<(), PollerError> {
    let client = relay_db::connect(&config.database_url).await?;
    // Plan each fetch with its own values, so the in-flight id list is hashed, not scanned.
    // Marks commit without waiting for their WAL flush: a mark lost in a server crash only leaves
    // its row pending, so it is published again and every inbox drops it as a duplicate; nothing
    // is marked before its acknowledgement either way. Small batches at a steady rate mark often,
    // and a flush per mark would hold up the loop (and the next scan) every time.
    client.batch_execute("SET plan_cache_mode = force_custom_plan; SET synchronous_commit = off").await?;
    // Marks from this session are fenced by this term (migration V5's trigger).
    client
        .execute(
            "SELECT set_config('relay.leader_lease', $1, false), set_config('relay.leader_term', $2, false)",
            &[&lease.name(), &term.to_string()],
        )
        .await?;
    let _retention = retention::spawn(config, shutdown);
    let producer: Producer = producer_client_config(config).create().map_err(PollerError::Producer)?;
    tracing::info!(database = config.database_url.database_name(), topics = ?config.topics, term, "leading: publishing the outbox");
    // `publishing` turns ok with the term's first acknowledgement or once nothing is pending:
    // a term that follows a stalled producer must prove that rows move again. Stopped when the
    // term ends, or when a refused topic is free: then the loop stops as at shutdown (the
    // records in flight are acknowledged and marked) and publishes again with it.
    let stop = shutdown.child_token();
    let mut freed = false;
    let lost = {
        let publishing = publish::publish_until_shutdown(&client, &producer, config, publishing, &stop);
        tokio::pin!(publishing);
        tokio::select! {
            result = &mut publishing => Ok(result),
            lost = lease.keep(term, presence, watch_for_more) => match lost {
                PollerError::TopicsFreed => {
                    freed = true;
                    stop.cancel();
                    Ok(publishing.await)
                }
                lost => Err(lost),
            },
            () = session_lost(&client) => Err(PollerError::LeadershipLost),
        }
    };
    let stop_by = match lost {
        Ok(Ok(stop_by)) => stop_by,
        Ok(Err(e)) if matches!(e, PollerError::ProducerStalled { .. }) => {
            // Its records will never be acknowledged: drop it (purging them) without waiting;
            // their rows stay pending and the next term's fresh producer sends them again.
            let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
            return Err(e);
        }
        Ok(Err(e)) => {
            flush_within(producer, config.shutdown_grace).await;
            return Err(e);
        }
        Err(lost) => {
            // Nothing more can be marked in this term, so do not wait for acknowledgements
            // ([`run`] logs why). Dropping a producer purges and joins librdkafka's threads: not
            // on an async worker.
            metrics::gauge!(measures::LEADER).set(0.0);
            let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
            return Err(lost);
        }
    };
    // At shutdown the publishing loop already waited for reports until `stop_by` (the grace
    // after shutdown began); the flush gets what is left of it, so the grace bounds the whole.
    flush_within(producer, stop_by.saturating_duration_since(tokio::time::Instant::now())).await;
    if freed && !shutdown.is_cancelled() {
        return Err(PollerError::TopicsFreed);
    }
    Ok(())
}

/// Dropping a producer purges what it still holds: wait up to `wait` for acknowledgements first
/// (off the async workers: a flush blocks). Rows whose acknowledgement never came stay
/// unpublished and are sent again.
async fn flush_within(producer: Producer, wait: Duration) {
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = producer.flush(wait);
        drop(producer);
        flushed
    })
    .await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!("records still in flight when leadership ended; their rows stay unpublished");
    }
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
