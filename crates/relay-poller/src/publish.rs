//! One leader's work: scan pending rows, send them in id order, mark what the broker acknowledged.
use std::collections::HashSet;

use rdkafka::producer::{FutureProducer, Producer};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    delivery::{dispatch, retry_alone, settle, Dispatched, KeyOf, Outcome, Prepared, Retry, Stragglers},
    envelope::{cloudevent_headers, envelope_of, headers_of, record_size},
    fetch::{Fetched, Fetcher, Scan},
    straggling, PollerConfig, PollerError,
};

/// Publishes batches until shutdown. Returns an error when the leader's session breaks, the
/// producer turns fatal, or a batch makes no progress (so the caller backs off).
///
/// Pipelined, without giving up order: while batch N's reports arrive, batch N+1 is fetched
/// (every pending row except N's and the stragglers') and encoded; N+1 is sent once N settled,
/// and N is marked while N+1 is in flight. N settles when every report came or its wait
/// (`OUTBOX_DELIVERY_WAIT_MS`) ran out; a row still unreported then is a straggler. N+1's rows
/// of a key that has a straggler, an unacknowledged row or (by default) a parked row are not
/// sent; they stay pending, and later scans leave such keys out until the straggler's report
/// arrives or an operator resolves the parked row. So a key's later row never overtakes an
/// earlier one, and a row the broker is slow to take or refuses holds back its key alone. Once
/// stragglers fill a batch, their topics are left out of scans too (so they stop piling up
/// behind a broken topic or partition) and the other topics flow; at [`STRAGGLER_CEILING`]
/// batches the loop waits for a report. `straggling` reports them (gauge, readiness, one warning).
pub(crate) async fn publish_until_shutdown(
    client: &Client,
    producer: &FutureProducer,
    config: &PollerConfig,
    health: &relay_health::Health,
    shutdown: &CancellationToken,
) -> Result<(), PollerError> {
    let fetcher = Fetcher::prepare(client, config.max_payload.largest()).await?;
    let marks = Marks {
        published: client.prepare(include_str!("mark_published.sql")).await?,
        parked: client.prepare(include_str!("mark_parked.sql")).await?,
    };
    let watch = straggling::Watch::new(config.batch_size as usize);
    let leader = Leader { client, producer, config, health, shutdown, marks, watch };
    let mut wakeups = listen(config).await;
    let mut in_flight: Option<Dispatched> = None;
    let mut stragglers = Stragglers::default();
    while !shutdown.is_cancelled() {
        // Late reports are marked before the scan, so their rows are not read again as pending.
        let mut late = Outcome::default();
        stragglers.harvest(&mut late);
        leader.retry_refused(&mut stragglers, &mut late).await;
        leader.mark(late).await?;
        leader.watch.observe(&stragglers, health);
        let mut previous = Outcome::default();
        if stragglers.len() >= STRAGGLER_CEILING * config.batch_size as usize {
            // So many records await their reports even with their topics held back (many topics
            // refused at once) that their memory must stop growing: wait for one.
            if let Some(batch) = in_flight.take() {
                previous.absorb(leader.settle(batch, &mut stragglers).await?);
            }
            leader.mark(previous).await?;
            let mut reported = Outcome::default();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                () = stragglers.next_report(&mut reported) => {}
            }
            leader.mark(reported).await?;
            continue;
        }
        // As many records await their reports as a batch holds: their topics wait too, so no
        // more records pile up behind a broken topic or partition, and the other topics flow.
        let held_topics = if leader.watch.at_cap(&stragglers) { stragglers.topics() } else { Vec::new() };
        let exclude: Vec<i64> = in_flight.iter().flat_map(Dispatched::ids).chain(stragglers.ids()).collect();
        let waiting: Vec<KeyOf> = stragglers.keys().into_iter().collect();
        let scan =
            tracing::info_span!("outbox.scan", in_flight = exclude.len(), rows = tracing::field::Empty);
        let fetch = Scan {
            topics: &config.topics,
            batch_size: config.batch_size,
            exclude: &exclude,
            held: &waiting,
            held_topics: &held_topics,
            parked_holds_key: config.parked_holds_key,
        };
        let rows = fetcher.fetch(client, &fetch).instrument(scan.clone()).await?;
        scan.record("rows", rows.len());
        drop(scan);
        let had_batch = in_flight.is_some();
        if let Some(batch) = in_flight.take() {
            previous.absorb(leader.settle(batch, &mut stragglers).await?);
        }
        if rows.is_empty() {
            leader.mark(previous).await?;
            if had_batch {
                continue;
            }
            if wakeups.is_none() {
                wakeups = listen(config).await;
            }
            let mut reported = Outcome::default();
            wait_for_work(&mut wakeups, config, shutdown, &mut stragglers, &mut reported).await;
            leader.mark(reported).await?;
            continue;
        }
        if shutdown.is_cancelled() {
            leader.mark(previous).await?;
            continue;
        }
        let mut held: HashSet<KeyOf> = stragglers.keys();
        held.extend(previous.holding(config.parked_holds_key).cloned());
        let (prepared, parked, unkeyed) = prepare(config, rows, &mut held);
        if unkeyed {
            // A row parked without a readable key: park it now and scan again, so the rows of
            // its key (whatever it is) are held back by the scan itself.
            leader.mark(previous).await?;
            leader.mark(parked).await?;
            continue;
        }
        let next = dispatch(producer, prepared, parked, held, config.parked_holds_key, shutdown).await;
        leader.mark(previous).await?;
        in_flight = Some(next);
    }
    let mut last = Outcome::default();
    if let Some(batch) = in_flight.take() {
        last = leader.settle(batch, &mut stragglers).await?;
    }
    stragglers.drain(config.shutdown_grace, &mut last).await;
    leader.mark(last).await
}

/// Batches' worth of stragglers at which the loop stops sending until a report comes: each
/// topic that turns bad adds at most about a batch before it is held back, so only several
/// topics failing at once reach it, and memory stays bounded.
const STRAGGLER_CEILING: usize = 4;

/// The statements that record a batch's outcome, prepared once per leadership.
struct Marks {
    published: tokio_postgres::Statement,
    parked: tokio_postgres::Statement,
}

/// What completing a batch needs.
struct Leader<'a> {
    client: &'a Client,
    producer: &'a FutureProducer,
    config: &'a PollerConfig,
    health: &'a relay_health::Health,
    shutdown: &'a CancellationToken,
    marks: Marks,
    watch: straggling::Watch,
}

impl Leader<'_> {
    /// Waits for a dispatched batch's reports (the late ones become stragglers); fails if the
    /// producer turned fatal.
    async fn settle(&self, batch: Dispatched, stragglers: &mut Stragglers) -> Result<Outcome, PollerError> {
        let (wait, holds) = (self.config.delivery_wait, self.config.parked_holds_key);
        let outcome = settle(self.producer, batch, wait, holds, stragglers, self.shutdown).await;
        if let Some(fatal) = self.producer.client().fatal_error() {
            self.mark(outcome).await?;
            return Err(PollerError::ProducerFatal(format!("{:?}: {}", fatal.0, fatal.1)));
        }
        Ok(outcome)
    }

    /// Sends the stragglers refused for good again, each alone.
    async fn retry_refused(&self, stragglers: &mut Stragglers, outcome: &mut Outcome) {
        let refused = stragglers.take_refused();
        if refused.is_empty() {
            return;
        }
        let retry = Retry {
            producer: self.producer,
            wait: self.config.delivery_wait,
            parked_holds_key: self.config.parked_holds_key,
            shutdown: self.shutdown,
        };
        retry_alone(&retry, refused, outcome, stragglers).await;
    }

    /// Records a settled batch: published rows with their position, parked rows with the reason.
    async fn mark(&self, outcome: Outcome) -> Result<(), PollerError> {
        if outcome.published_ids.is_empty() && outcome.parked_ids.is_empty() && outcome.unacknowledged == 0 {
            return Ok(());
        }
        if !outcome.published_ids.is_empty() {
            self.client
                .execute(
                    &self.marks.published,
                    &[&outcome.published_ids, &outcome.partitions, &outcome.offsets],
                )
                .await?;
        }
        if !outcome.parked_ids.is_empty() {
            self.client.execute(&self.marks.parked, &[&outcome.parked_ids, &outcome.park_reasons]).await?;
        }
        metrics::counter!("relay_outbox_published_total").increment(outcome.published_ids.len() as u64);
        metrics::counter!("relay_outbox_parked_total").increment(outcome.parked_ids.len() as u64);
        metrics::counter!("relay_outbox_publish_errors_total").increment(outcome.unacknowledged as u64);
        if (!outcome.published_ids.is_empty() || !outcome.parked_ids.is_empty()) && !self.watch.degraded() {
            self.health.ok(crate::PUBLISHING);
        }
        tracing::debug!(
            published = outcome.published_ids.len(),
            parked = outcome.parked_ids.len(),
            "batch done"
        );
        if outcome.unacknowledged > 0 {
            if outcome.published_ids.is_empty()
                && outcome.parked_ids.is_empty()
                && !self.shutdown.is_cancelled()
            {
                let why = outcome.last_error.unwrap_or_else(|| "no record was acknowledged".into());
                return Err(PollerError::Stalled(why));
            }
            tracing::warn!(rows = outcome.unacknowledged, "rows not acknowledged; they will be sent again");
        }
        Ok(())
    }
}

/// A LISTEN session for enqueue notifications. Without one the poller still scans every
/// `OUTBOX_POLL_INTERVAL_MS`, and tries to LISTEN again the next time it is idle.
struct Wakeups {
    _client: tokio_postgres::Client,
    notifications: tokio::sync::mpsc::Receiver<()>,
}

async fn listen(config: &PollerConfig) -> Option<Wakeups> {
    match relay_db::listen(&config.database_url, "relay_outbox", None).await {
        Ok((client, notifications)) => Some(Wakeups { _client: client, notifications }),
        Err(e) => {
            tracing::warn!(error = %e, "LISTEN unavailable; polling every interval");
            None
        }
    }
}

/// Waits for a notification, the poll interval, or a straggler's report (recorded in `reported`).
async fn wait_for_work(
    wakeups: &mut Option<Wakeups>,
    config: &PollerConfig,
    shutdown: &CancellationToken,
    stragglers: &mut Stragglers,
    reported: &mut Outcome,
) {
    let notified = async {
        match wakeups {
            Some(w) => {
                if w.notifications.recv().await.is_none() {
                    // LISTEN session lost; wait out the interval and LISTEN again when next idle.
                    *wakeups = None;
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = notified => {}
        _ = tokio::time::sleep(config.poll_interval) => {}
        () = stragglers.next_report(reported) => {}
    }
}

/// Encodes (and, with a key, signs) rows into records, in id order. A row that cannot be sent
/// as it is (unreadable, over a limit, a record larger than the producer takes) is parked, and
/// the later rows of its key in this batch are held back with it (when a parked row holds its
/// key). Returns `true` as well when a parked row's key could not be read.
fn prepare(
    config: &PollerConfig,
    rows: Vec<Fetched>,
    held: &mut HashSet<KeyOf>,
) -> (Vec<Prepared>, Outcome, bool) {
    let mut parked = Outcome::default();
    let mut unkeyed = false;
    let mut prepared = Vec::with_capacity(rows.len());
    for row in rows {
        let row = match row {
            Fetched::Row(row) => row,
            Fetched::Unreadable { id, reason } => {
                parked.park(id, None, reason);
                unkeyed = true;
                continue;
            }
        };
        let id: i64 = row.get("id");
        if let Some((key_of, reason)) = oversized(config, &row) {
            if !held.contains(&key_of) {
                if config.parked_holds_key {
                    held.insert(key_of.clone());
                }
                parked.park(id, Some(key_of), reason);
            }
            continue;
        }
        let envelope = match envelope_of(&row, &config.source) {
            Ok(envelope) => envelope,
            Err(reason) => {
                let key = row.try_get("topic").and_then(|topic| Ok((topic, row.try_get("key")?))).ok();
                unkeyed |= key.is_none();
                if config.parked_holds_key {
                    held.extend(key.clone());
                }
                parked.park(id, key, reason);
                continue;
            }
        };
        let key_of = (envelope.topic.clone(), envelope.key.clone());
        if held.contains(&key_of) {
            continue;
        }
        let limit = config.max_payload.for_topic(&envelope.topic);
        let record = if envelope.payload.len() > limit {
            Err(format!("payload of {} bytes exceeds the limit of {limit} bytes", envelope.payload.len()))
        } else {
            encode(config, id, envelope)
        };
        match record {
            Ok(record) => prepared.push(record),
            Err(reason) => {
                if config.parked_holds_key {
                    held.insert(key_of.clone());
                }
                parked.park(id, Some(key_of), reason);
            }
        }
    }
    (prepared, parked, unkeyed)
}

/// A row whose payload is over its topic's limit, judged from its size alone (fetch_rows.sql
/// does not read a payload over the largest limit): its key and the reason to park it. `None`
/// when it is within the limit or its topic or key cannot be read (`envelope_of` says why).
fn oversized(config: &PollerConfig, row: &tokio_postgres::Row) -> Option<(KeyOf, String)> {
    let length: i64 = row.try_get::<_, Option<i64>>("payload_length").ok()??;
    let topic: String = row.try_get("topic").ok()?;
    let limit = config.max_payload.for_topic(&topic);
    if usize::try_from(length).is_ok_and(|length| length <= limit) {
        return None;
    }
    let key: String = row.try_get("key").ok()?;
    Some(((topic, key), format!("payload of {length} bytes exceeds the limit of {limit} bytes")))
}

/// One row's record in its topic's format; `Err` when it cannot be sent so (a CloudEvents
/// topic refuses reserved header names) or is larger than the producer takes (`message.max.bytes`).
fn encode(
    config: &PollerConfig,
    id: i64,
    mut envelope: relay_envelope::Envelope,
) -> Result<Prepared, String> {
    let payload_len = envelope.payload.len();
    let (value, headers) = match config.formats.for_topic(&envelope.topic) {
        crate::Format::Envelope => {
            let value = relay_envelope::encode(&envelope);
            let headers = headers_of(&envelope, config.signing.as_ref(), &value);
            (value, headers)
        }
        crate::Format::CloudEvents => {
            let headers = cloudevent_headers(&envelope, config.signing.as_ref())?;
            (std::mem::take(&mut envelope.payload), headers)
        }
    };
    let size = record_size(&envelope.key, &value, &headers);
    if size > config.max_record {
        return Err(format!(
            "record of {size} bytes (payload {payload_len} bytes, the rest key, headers and envelope) exceeds \
             the producer's message.max.bytes of {} bytes",
            config.max_record
        ));
    }
    let span = envelope.trace.as_ref().filter(|t| !t.traceparent.is_empty()).map(|trace| {
        let span = tracing::info_span!(
            "relay.publish",
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.destination.name = %envelope.topic,
            messaging.message.id = %envelope.message_id,
            outbox.id = id,
        );
        relay_telemetry::follow_remote_parent(&span, &trace.traceparent, &trace.tracestate);
        span
    });
    Ok(Prepared { _span: span, id, topic: envelope.topic, key: envelope.key, value, headers })
}
