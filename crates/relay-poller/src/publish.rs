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
    publishing::{Publishing, Source},
    straggling,
    wake::{listen, wait_for_work, Idle},
    PollerConfig, PollerError,
};

/// Publishes batches until shutdown, then waits for outstanding reports until the returned
/// instant, `OUTBOX_SHUTDOWN_GRACE_MS` after the loop stopped (the caller's flush gets the rest of
/// it). Returns an error when the leader's session breaks, the producer turns fatal, a batch makes
/// no progress, or records await their reports with none arriving for `OUTBOX_PRODUCER_STALL_MS`
/// (so the caller backs off and starts over with a fresh producer).
///
/// Pipelined while there is a backlog, without giving up order: while batch N's reports arrive,
/// batch N+1 is fetched (every pending row except N's and the stragglers') and encoded; N+1 is
/// sent once N settled, and N is marked while N+1 is in flight. When N was not a full batch, N
/// settles and is marked first and the scan follows, so it also takes the rows committed while N
/// was in flight (lower latency at a steady rate). Each row's `published_at` is the time its
/// report was taken, not the time of the mark. N settles when every report came or its wait
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
    publishing: &Publishing,
    shutdown: &CancellationToken,
) -> Result<tokio::time::Instant, PollerError> {
    let fetcher = Fetcher::prepare(client, config.max_payload.largest()).await?;
    let marks = Marks {
        published: client.prepare(include_str!("mark_published.sql")).await?,
        parked: client.prepare(include_str!("mark_parked.sql")).await?,
    };
    let watch = straggling::Watch::new(config.batch_size as usize, config.batch_max_bytes);
    let progress = straggling::Progress::default();
    let leader = Leader { client, producer, config, publishing, shutdown, marks, watch, progress };
    let mut wakeups = listen(config).await;
    let mut in_flight: Option<Dispatched> = None;
    let mut stragglers = Stragglers::default();
    // Whether the last scan filled a batch (a backlog): then the next scan runs while the batch
    // in flight awaits its reports. Otherwise the reports come first, so the next scan also finds
    // the rows committed meanwhile instead of leaving them for one more round.
    let mut backlog = false;
    let mut idle = Idle::new(config.poll_interval);
    while !shutdown.is_cancelled() {
        // Keys whose batch, settled before this scan, left a row pending or parked.
        let mut holding: HashSet<KeyOf> = HashSet::new();
        if !backlog {
            if let Some(batch) = in_flight.take() {
                let settled = leader.settle(batch, &mut stragglers).await?;
                holding.extend(settled.holding(config.parked_holds_key).cloned());
                leader.mark(settled).await?;
            }
        }
        // Late reports are marked before the scan, so their rows are not read again as pending.
        let mut late = Outcome::default();
        stragglers.harvest(&mut late);
        leader.retry_refused(&mut stragglers, &mut late).await;
        leader.mark(late).await?;
        leader.watch.observe(&stragglers, publishing);
        leader.progress.check(&stragglers, config, publishing, shutdown)?;
        let mut previous = Outcome::default();
        if stragglers.len() >= STRAGGLER_CEILING * config.batch_size as usize
            || stragglers.bytes() >= STRAGGLER_CEILING * config.batch_max_bytes.max(config.max_record)
        {
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
                // Wake up now and then, so a producer that reports nothing is noticed.
                () = tokio::time::sleep(config.poll_interval) => {}
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
            batch_max_bytes: config.batch_max_bytes,
            exclude: &exclude,
            held: &waiting,
            held_topics: &held_topics,
            parked_holds_key: config.parked_holds_key,
        };
        let fetching = fetcher.fetch(client, &fetch).instrument(scan.clone());
        // The batch in flight (with a backlog) settles while the scan runs: its reports are
        // taken as they arrive, so their time stamps the rows' published_at.
        let (rows, settled) = match in_flight.take() {
            Some(batch) => {
                let (rows, settled) = tokio::join!(fetching, leader.settle(batch, &mut stragglers));
                (rows, Some(settled))
            }
            None => (fetching.await, None),
        };
        let had_batch = settled.is_some();
        if let Some(settled) = settled {
            previous.absorb(settled?);
        }
        let rows = rows?;
        scan.record("rows", rows.len());
        drop(scan);
        backlog = rows.len() as i64 >= config.batch_size;
        if rows.is_empty() {
            leader.mark(previous).await?;
            if had_batch {
                continue;
            }
            if stragglers.len() == 0 {
                // Nothing pending and nothing outstanding: rows can go out as soon as they come.
                leader.progress.set(tokio::time::Instant::now());
                if !leader.watch.degraded() {
                    publishing.ok(Source::Loop);
                }
            }
            if wakeups.is_none() {
                wakeups = listen(config).await;
            }
            let mut reported = Outcome::default();
            let wait = idle.next();
            wait_for_work(&mut wakeups, wait, shutdown, &mut stragglers, &mut reported).await;
            leader.mark(reported).await?;
            continue;
        }
        idle.reset();
        if shutdown.is_cancelled() {
            leader.mark(previous).await?;
            continue;
        }
        let mut held: HashSet<KeyOf> = stragglers.keys();
        held.extend(previous.holding(config.parked_holds_key).cloned());
        held.extend(holding);
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
    let stop_by = tokio::time::Instant::now() + config.shutdown_grace;
    let mut last = Outcome::default();
    if let Some(batch) = in_flight.take() {
        last = leader.settle(batch, &mut stragglers).await?;
    }
    stragglers.drain(stop_by.saturating_duration_since(tokio::time::Instant::now()), &mut last).await;
    leader.mark(last).await?;
    Ok(stop_by)
}

/// Batches' worth of stragglers (rows or bytes) at which the loop stops sending until a report
/// comes: each topic that turns bad adds at most about a batch before it is held back, so only
/// several topics failing at once reach it, and memory stays bounded. The producer's queue is
/// sized for it (`relay_config::producer_queue_kbytes`).
const STRAGGLER_CEILING: usize = relay_config::STRAGGLER_BATCHES;

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
    publishing: &'a Publishing,
    shutdown: &'a CancellationToken,
    marks: Marks,
    watch: straggling::Watch,
    progress: straggling::Progress,
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
            let now = tokio::time::Instant::now();
            let acked_us_ago: Vec<i64> = outcome
                .acked_at
                .iter()
                .map(|at| i64::try_from(now.saturating_duration_since(*at).as_micros()).unwrap_or(i64::MAX))
                .collect();
            self.client
                .execute(
                    &self.marks.published,
                    &[&outcome.published_ids, &outcome.partitions, &outcome.offsets, &acked_us_ago],
                )
                .await?;
        }
        if !outcome.parked_ids.is_empty() {
            self.client.execute(&self.marks.parked, &[&outcome.parked_ids, &outcome.park_reasons]).await?;
        }
        metrics::counter!(crate::measures::PUBLISHED).increment(outcome.published_ids.len() as u64);
        metrics::counter!(crate::measures::PARKED).increment(outcome.parked_ids.len() as u64);
        metrics::counter!(crate::measures::PUBLISH_ERRORS).increment(outcome.unacknowledged as u64);
        if !outcome.published_ids.is_empty() || !outcome.parked_ids.is_empty() {
            self.progress.set(tokio::time::Instant::now());
            if !self.watch.degraded() {
                self.publishing.ok(Source::Loop);
            }
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
    Ok(Prepared {
        _span: span,
        id,
        topic_label: crate::measures::topic_label(config, &envelope.topic),
        topic: envelope.topic,
        key: envelope.key,
        value,
        headers,
        created_at_unix_micros: envelope.created_at_unix_micros,
    })
}
