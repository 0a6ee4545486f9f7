//! inbox-consumer: consumes topics in its own group and stores each message once in its inbox.
//!
//! Order of operations per batch, which is what makes it lossless and duplicate-free:
//! 1. collect up to `INBOX_BATCH_SIZE` records and `INBOX_BATCH_MAX_BYTES` (waiting at most
//!    `INBOX_BATCH_WAIT_MS`; at least one record, however large);
//! 2. copy each record with its headers as raw bytes (`relay_kafka::raw`: rdkafka's header API
//!    panics on a header name that is not UTF-8), judge its headers, check its signature (when
//!    `INBOX_VERIFY_KEYS` is set) and decode it; what fails or cannot be stored becomes a dead
//!    letter with its reason;
//! 3. insert messages (`ON CONFLICT DO NOTHING` on `(inbox, message_id)`) and dead letters in one
//!    transaction, retrying transient database errors with backoff; a message whose id is
//!    stored already with other content is a conflict, and a dead letter too;
//! 4. only after COMMIT, store the next offsets; librdkafka commits them. A crash before step 4
//!    redelivers the batch, which step 3 then stores as duplicates of nothing.
#![forbid(unsafe_code)]

mod assignment;
mod clients;
mod config;
mod content;
mod headers;
mod measures;
mod membership;
mod records;
mod redrive;
mod retention;
mod signatures;
mod store;
mod watch;
mod watchdog;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

#[cfg(test)]
use clients::consumer_client_config;
use clients::{subscribed, Closer, Current};

pub use config::{names, ConsumerConfig};

/// The consumer's statements, for `make bench`'s ceiling (the drain's database work done by SQL
/// alone, statement for statement); not a stable API.
#[doc(hidden)]
pub mod statements {
    pub const INSERT_INBOX: &str = include_str!("insert_inbox.sql");
    pub const NOTIFY_INBOX: &str = include_str!("notify_inbox.sql");
}
pub use headers::KeptHeaders;
use rdkafka::{
    consumer::{CommitMode, Consumer, StreamConsumer},
    Offset, TopicPartitionList,
};
/// The record check, exposed for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub use records::{classify, DeadLetter, InboxRow, Position, RawRecord, Record};
pub use redrive::{redrive_dead_letters, RedriveReport, Selection};
use relay_health::Health;
pub use relay_kafka::raw::RawHeader;
use relay_kafka::raw::RawMessage;
pub use signatures::Verification;
use store::Written;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Errors that stop the consumer. Transient trouble is retried inside [`run`] instead.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(transparent)]
    Db(#[from] relay_db::DbError),
    #[error("cannot set up the Kafka consumer: {0}")]
    Consumer(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Health(#[from] relay_health::HealthError),
}

/// How long a static member waits for its replaced client to close before the fresh one joins.
const RELEASE_WITHIN: Duration = Duration::from_secs(30);

/// The readiness part the write loop owns: degraded while a batch waits to be stored.
pub(crate) const STORING: &str = "storing";

/// Runs the consumer until `shutdown` is cancelled; the batch in hand is finished first.
/// Outages of the database or the brokers are waited out with backoff (and reported by
/// `/readyz`); only a schema that cannot be prepared or a client that cannot be built stops it.
pub async fn run(config: ConsumerConfig, shutdown: CancellationToken) -> Result<(), InboxError> {
    let health = Health::new(&[
        assignment::ASSIGNMENT,
        relay_health::DATABASE,
        relay_health::KAFKA,
        STORING,
        relay_health::SCHEMA,
    ]);
    let served = relay_health::serve(config.common.http_addr, health.clone(), shutdown.clone()).await?;
    let topic_labels = relay_health::TopicLabels::new(&config.topics);
    measures::describe(&config, &topic_labels);
    let schema = relay_db::Schema::Inbox;
    let ready = relay_db::prepare_schema_patiently(
        &config.database_url,
        schema,
        config.common.migrate,
        &shutdown,
        |e| health.degraded(STORING, e),
    )
    .await?;
    if !ready {
        return Ok(());
    }
    health.ok(relay_health::SCHEMA);
    let _retention = retention::spawn(&config, &shutdown);
    let pool = relay_db::pool(&config.database_url, config.pool_size)?;
    let mut consumer = subscribed(&config)?;
    let mut generation = 1;
    let (current, consumers) =
        tokio::sync::watch::channel(Some(Current { generation, consumer: Arc::clone(&consumer) }));
    let (rejoin, mut rejoins) = tokio::sync::watch::channel(0u64);
    let closer = Closer::start();
    // The watchdog heals stalls whether or not anyone reads readiness.
    let watched = assignment::Watched {
        config: config.clone(),
        health: health.clone(),
        database_probed: served.is_some(),
        rejoin,
        shutdown: shutdown.clone(),
    };
    tokio::spawn(assignment::watch(watched, consumers.clone()));
    if served.is_some() {
        let watched = (pool.clone(), consumers, health.clone(), shutdown.clone());
        tokio::spawn(watch::watch(config.clone(), watched.0, watched.1, watched.2, watched.3));
    }
    health.ok(STORING);
    tracing::info!(inbox = %config.inbox, group = %config.group_id, topics = ?config.topics, "consuming");
    if config.verification.is_on() {
        tracing::info!(
            key_ids = ?config.verification.key_ids(),
            unsigned_refused = config.verification.requires_signature(),
            "checking record signatures"
        );
    }

    let mut totals = Written::default();
    loop {
        let batch = tokio::select! {
            batch = collect_batch(&consumer, &config, &shutdown) => batch,
            Ok(()) = rejoins.changed() => {
                if *rejoins.borrow_and_update() != generation {
                    // Asked about a client replaced already.
                    continue;
                }
                // Records gathered so far have no stored offsets: the fresh client reads them again.
                generation += 1;
                consumer = if config.group_instance_id.is_some() {
                    // One `group.instance.id`, one live client: the old one leaves first.
                    current.send_replace(None);
                    closer.close_now(consumer, RELEASE_WITHIN).await;
                    subscribed(&config)?
                } else {
                    let fresh = subscribed(&config)?;
                    closer.close(std::mem::replace(&mut consumer, Arc::clone(&fresh)));
                    fresh
                };
                current.send_replace(Some(Current { generation, consumer: Arc::clone(&consumer) }));
                tracing::info!(group = %config.group_id, generation, "joined the group again with a fresh client");
                continue;
            }
        };
        if batch.is_empty() {
            if shutdown.is_cancelled() {
                break;
            }
            continue;
        }
        let records: Vec<(RawMessage, Record)> = batch
            .into_iter()
            .map(|m| {
                let limit = config.max_payload.for_topic(&m.topic);
                let record = records::classify(&RawRecord::from(&m), limit, &config.verification);
                (m, record)
            })
            .collect();
        let consume = tracing::info_span!("inbox.consume", inbox = %config.inbox, records = records.len());
        let delivered: Vec<tracing::Span> =
            records.iter().filter_map(|(_, record)| delivery_span(&config.inbox, record)).collect();
        let insert = tracing::info_span!(parent: &consume, "inbox.insert", inbox = %config.inbox);
        let written =
            write_with_retry(&pool, &config.inbox, &records, &health, &shutdown).instrument(insert).await;
        let Some(written) = written else {
            // Shut down before the batch was durable: its offsets stay unstored, so it is redelivered.
            break;
        };
        totals.inserted += written.inserted;
        totals.duplicates += written.duplicates;
        totals.dead_lettered += written.dead_lettered;
        totals.conflicts += written.conflicts;
        measures::stored(&config.inbox, &topic_labels, &written, records.iter().map(|(_, record)| record));
        count_signature_failures(&config.inbox, &records);
        tracing::debug!(?written, "batch stored");
        store_offsets(&consumer, &records);
        drop((delivered, consume));
    }
    // The watchers let go of the client, so that it is closed here, within the grace.
    current.send_replace(None);
    close_within(consumer, config.shutdown_grace).await;
    tracing::info!(
        inserted = totals.inserted,
        duplicates = totals.duplicates,
        dead_lettered = totals.dead_lettered,
        conflicts = totals.conflicts,
        "inbox consumer stopped"
    );
    Ok(())
}

/// Commits the stored offsets and leaves the group, giving up after `grace` (brokers away): the
/// group then resumes from the last commit, and the inbox drops what it stored already.
async fn close_within(consumer: Arc<StreamConsumer>, grace: Duration) {
    let (done, closed) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(e) => tracing::debug!(
                error = %e,
                "final offset commit had nothing to do or failed; the group resumes from the last commit"
            ),
        }
        drop(consumer);
        let _ = done.send(());
    });
    if tokio::time::timeout(grace, closed).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "could not commit offsets and leave the group within the grace; stopping anyway"
        );
    }
}

/// `relay.consume` for a message that carries a trace context: a child of the span its
/// application enqueued it in, open until the message is stored.
fn delivery_span(inbox: &str, record: &Record) -> Option<tracing::Span> {
    let Record::Store(row) = record else { return None };
    let traceparent = row.traceparent.as_deref()?;
    let span = tracing::info_span!(
        "relay.consume",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = %row.position.topic,
        messaging.message.id = %row.message_id,
        inbox,
    );
    relay_telemetry::follow_remote_parent(&span, traceparent, row.tracestate.as_deref().unwrap_or(""));
    Some(span)
}

/// Waits for a first record, then gathers more until the batch is full (`batch_size` records or
/// `batch_max_bytes` of values and keys) or `batch_wait` passed.
/// Each record is copied with its headers as raw bytes; rdkafka's header API is never used.
async fn collect_batch(
    consumer: &StreamConsumer,
    config: &ConsumerConfig,
    shutdown: &CancellationToken,
) -> Vec<RawMessage> {
    let mut batch = Vec::new();
    let first = tokio::select! {
        _ = shutdown.cancelled() => return batch,
        message = consumer.recv() => message,
    };
    match first {
        Ok(message) => batch.push(relay_kafka::raw::read_message(&message)),
        Err(e) => {
            tracing::warn!(error = %e, "Kafka consumer error");
            return batch;
        }
    }
    let mut bytes = batch.iter().map(record_bytes).sum::<usize>();
    let deadline = tokio::time::Instant::now() + config.batch_wait;
    while batch.len() < config.batch_size && bytes < config.batch_max_bytes {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => {
                let message = relay_kafka::raw::read_message(&message);
                bytes += record_bytes(&message);
                batch.push(message);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                break;
            }
            Err(_elapsed) => break,
        }
    }
    batch
}

/// What a record adds to a batch's bytes: its value and key.
fn record_bytes(message: &RawMessage) -> usize {
    message.value.as_ref().map_or(0, Vec::len) + message.key.as_ref().map_or(0, Vec::len)
}

/// Writes a batch, retrying transient errors until it is durable or shutdown is requested.
async fn write_with_retry(
    pool: &deadpool_postgres::Pool,
    inbox: &str,
    records: &[(RawMessage, Record)],
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<Written> {
    let mut backoff = relay_db::backoff();
    loop {
        match write_once(pool, inbox, records).await {
            Ok(written) => {
                health.ok(STORING);
                return Some(written);
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                health.degraded(STORING, &e);
                metrics::counter!(measures::WRITE_ERRORS, "inbox" => inbox.to_string()).increment(1);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "inbox write failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn write_once(
    pool: &deadpool_postgres::Pool,
    inbox: &str,
    records: &[(RawMessage, Record)],
) -> Result<Written, relay_db::DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let written = match store::write_all(&tx, inbox, records).await {
        Ok(written) => {
            tx.commit().await?;
            written
        }
        Err(e) if store::is_poison(&e) => {
            tracing::warn!(error = %relay_db::describe(&e), "batch refused by the database; storing row by row");
            tx.rollback().await?;
            let mut tx = client.transaction().await?;
            let written = store::write_each(&mut tx, inbox, records).await?;
            tx.commit().await?;
            written
        }
        Err(e) => return Err(e.into()),
    };
    store::notify_if_inserted(&client, inbox, &written).await;
    Ok(written)
}

/// Counts the batch's signature failures by kind; each one is also a dead letter.
fn count_signature_failures(inbox: &str, records: &[(RawMessage, Record)]) {
    for (_, record) in records {
        if let Record::Dead(records::DeadLetter { signature_failure: Some(reason), .. }) = record {
            metrics::counter!(measures::SIGNATURE_FAILURES, "inbox" => inbox.to_string(), "reason" => *reason)
                .increment(1);
        }
    }
}

/// Stores, per partition, the offset after the highest record of the batch.
fn store_offsets(consumer: &StreamConsumer, records: &[(RawMessage, Record)]) {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for (_, record) in records {
        let p = record.position();
        let entry = next.entry((p.topic.as_str(), p.partition)).or_insert(p.offset + 1);
        *entry = (*entry).max(p.offset + 1);
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, topic, partition, "cannot record offset");
        }
    }
    if let Err(e) = consumer.store_offsets(&list) {
        // Typically a partition revoked by a rebalance: its new owner re-reads from the last
        // commit and the inbox drops what is already stored.
        tracing::info!(error = %e, "offsets not stored; the records will be redelivered and deduplicated");
    }
}
