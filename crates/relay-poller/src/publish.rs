//! One leader's work: scan pending rows, send them in id order, mark what the broker acknowledged.
use std::time::Duration;

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::OwnedHeaders,
    producer::Producer,
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};
use relay_kafka::ErrorClass;
use tokio_postgres::{Client, Row};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    envelope::{envelope_of, headers_of},
    PollerConfig, PollerError,
};

/// Publishes batches until shutdown. Returns an error when the leader's session breaks, the
/// producer turns fatal, or a batch makes no progress (so the caller backs off).
///
/// Pipelined, without giving up order: while batch N's acknowledgements arrive, batch N+1 is
/// fetched (every pending row except N's) and encoded; N+1 is sent only once N settled with
/// every row acknowledged or parked, and N is marked while N+1 is in flight. If N left rows
/// unacknowledged, N+1 is dropped unsent and the next scan starts over from the lowest pending
/// id, so no later row of a key overtakes an earlier one.
pub(crate) async fn publish_until_shutdown(
    client: &Client,
    producer: &FutureProducer,
    config: &PollerConfig,
    health: &relay_health::Health,
    shutdown: &CancellationToken,
) -> Result<(), PollerError> {
    let fetch = client.prepare(include_str!("fetch_pending.sql")).await?;
    let marks = Marks {
        published: client.prepare(include_str!("mark_published.sql")).await?,
        parked: client.prepare(include_str!("mark_parked.sql")).await?,
    };
    let leader = Leader { client, producer, config, health, shutdown, marks };
    let mut wakeups = listen(config).await;
    let mut in_flight: Option<Dispatched> = None;
    while !shutdown.is_cancelled() {
        let (highest, ids) = in_flight.as_ref().map_or((0, Vec::new()), Dispatched::ids);
        let scan = tracing::info_span!("outbox.scan", in_flight = ids.len(), rows = tracing::field::Empty);
        let rows = client
            .query(&fetch, &[&config.topics, &config.batch_size, &highest, &ids])
            .instrument(scan.clone())
            .await?;
        scan.record("rows", rows.len());
        drop(scan);
        let previous = match in_flight.take() {
            Some(batch) => Some(leader.settle(batch).await?),
            None => None,
        };
        if rows.is_empty() {
            if let Some(outcome) = previous {
                leader.mark(outcome).await?;
                continue;
            }
            if wakeups.is_none() {
                wakeups = listen(config).await;
            }
            wait_for_work(&mut wakeups, config, shutdown).await;
            continue;
        }
        if previous.as_ref().is_some_and(|o| o.unacknowledged > 0) || shutdown.is_cancelled() {
            // Rows of the batch before are to be sent again: send nothing after them.
            leader.mark(previous.unwrap_or_default()).await?;
            continue;
        }
        let (prepared, parked) = prepare(config, &rows);
        let next = dispatch(producer, prepared, parked, shutdown).await;
        if let Some(outcome) = previous {
            leader.mark(outcome).await?;
        }
        in_flight = Some(next);
    }
    if let Some(batch) = in_flight.take() {
        let outcome = leader.settle(batch).await?;
        leader.mark(outcome).await?;
    }
    Ok(())
}

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
}

impl Leader<'_> {
    /// Waits for a dispatched batch's acknowledgements; fails if the producer turned fatal.
    async fn settle(&self, batch: Dispatched) -> Result<Outcome, PollerError> {
        let outcome = settle(self.producer, self.config, self.shutdown, batch).await;
        if let Some(fatal) = self.producer.client().fatal_error() {
            self.mark(outcome).await?;
            return Err(PollerError::ProducerFatal(format!("{:?}: {}", fatal.0, fatal.1)));
        }
        Ok(outcome)
    }

    /// Records a settled batch: published rows with their position, parked rows with the reason.
    async fn mark(&self, outcome: Outcome) -> Result<(), PollerError> {
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
        if !outcome.published_ids.is_empty() || !outcome.parked_ids.is_empty() {
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
    match relay_db::listen(&config.database_url, "relay_outbox").await {
        Ok((client, notifications)) => Some(Wakeups { _client: client, notifications }),
        Err(e) => {
            tracing::warn!(error = %e, "LISTEN unavailable; polling every interval");
            None
        }
    }
}

async fn wait_for_work(wakeups: &mut Option<Wakeups>, config: &PollerConfig, shutdown: &CancellationToken) {
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
    }
}

#[derive(Default)]
struct Outcome {
    published_ids: Vec<i64>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    parked_ids: Vec<i64>,
    park_reasons: Vec<String>,
    unacknowledged: usize,
    last_error: Option<String>,
}

impl Outcome {
    fn park(&mut self, id: i64, reason: String) {
        tracing::error!(outbox_id = id, reason = %reason, "parking outbox row: the broker will not accept it");
        self.parked_ids.push(id);
        self.park_reasons.push(reason);
    }

    fn published(&mut self, id: i64, partition: i32, offset: i64) {
        self.published_ids.push(id);
        self.partitions.push(partition);
        self.offsets.push(offset);
    }

    fn not_acknowledged(&mut self, id: i64, error: String) {
        tracing::warn!(outbox_id = id, error = %error, "not acknowledged; the row stays pending");
        self.unacknowledged += 1;
        self.last_error = Some(error);
    }
}

/// One row ready to send.
struct Prepared {
    /// `relay.publish`, open from encoding until the acknowledgement, for traced messages only.
    _span: Option<tracing::Span>,
    id: i64,
    topic: String,
    key: String,
    value: Vec<u8>,
    headers: OwnedHeaders,
}

impl Prepared {
    fn record(&self) -> FutureRecord<'_, str, Vec<u8>> {
        FutureRecord::to(&self.topic)
            .key(self.key.as_str())
            .payload(&self.value)
            .headers(self.headers.clone())
    }
}

enum Sent {
    InFlight(DeliveryFuture),
    Refused(KafkaError),
    /// Shutdown while the producer queue was full.
    Abandoned,
}

/// Hands one record to the producer, waiting while its queue is full.
async fn send(producer: &FutureProducer, row: &Prepared, shutdown: &CancellationToken) -> Sent {
    loop {
        match producer.send_result(row.record()) {
            Ok(delivery) => return Sent::InFlight(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                if shutdown.is_cancelled() {
                    return Sent::Abandoned;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((error, _)) => return Sent::Refused(error),
        }
    }
}

/// A batch handed to the producer, acknowledgements still to come.
struct Dispatched {
    prepared: Vec<Prepared>,
    in_flight: Vec<(i64, DeliveryFuture)>,
    outcome: Outcome,
}

impl Dispatched {
    /// The highest id and all ids of this batch, which the next fetch leaves out.
    fn ids(&self) -> (i64, Vec<i64>) {
        let ids: Vec<i64> =
            self.prepared.iter().map(|p| p.id).chain(self.outcome.parked_ids.iter().copied()).collect();
        (ids.iter().copied().max().unwrap_or(0), ids)
    }
}

/// Encodes (and, with a key, signs) rows into records; rows over their topic's payload limit are
/// parked instead.
fn prepare(config: &PollerConfig, rows: &[Row]) -> (Vec<Prepared>, Outcome) {
    let mut parked = Outcome::default();
    let mut prepared = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get("id");
        let (topic, key, envelope) = envelope_of(row, &config.source);
        let limit = config.max_payload.for_topic(topic);
        if envelope.payload.len() > limit {
            parked.park(
                id,
                format!("payload of {} bytes exceeds the limit of {limit} bytes", envelope.payload.len()),
            );
            continue;
        }
        let value = relay_envelope::encode(&envelope);
        let span = envelope.trace.as_ref().filter(|t| !t.traceparent.is_empty()).map(|trace| {
            let span = tracing::info_span!(
                "relay.publish",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.destination.name = %topic,
                messaging.message.id = %envelope.message_id,
                outbox.id = id,
            );
            relay_telemetry::follow_remote_parent(&span, &trace.traceparent, &trace.tracestate);
            span
        });
        let headers = headers_of(&envelope, config.signing.as_ref(), &value);
        prepared.push(Prepared {
            _span: span,
            id,
            topic: topic.to_string(),
            key: key.to_string(),
            value,
            headers,
        });
    }
    (prepared, parked)
}

/// Sends every row, in id order, without waiting for acknowledgements. A row the producer will
/// not take (other than for good) stops the batch: the rest stay pending, behind it.
async fn dispatch(
    producer: &FutureProducer,
    mut prepared: Vec<Prepared>,
    mut outcome: Outcome,
    shutdown: &CancellationToken,
) -> Dispatched {
    let mut in_flight = Vec::with_capacity(prepared.len());
    let mut sent = 0;
    for row in &prepared {
        match send(producer, row, shutdown).await {
            Sent::InFlight(delivery) => in_flight.push((row.id, delivery)),
            Sent::Refused(error) if relay_kafka::classify(&error) == ErrorClass::Permanent => {
                outcome.park(row.id, error.to_string())
            }
            Sent::Refused(error) => {
                outcome.not_acknowledged(row.id, error.to_string());
                break;
            }
            Sent::Abandoned => {
                outcome.unacknowledged += 1;
                break;
            }
        }
        sent += 1;
    }
    prepared.truncate(sent + 1);
    Dispatched { prepared, in_flight, outcome }
}

/// Waits for a batch's delivery reports. A permanent failure shared by several rows (a broker
/// refusing a whole request) is retried row by row, so only rows refused on their own are parked.
async fn settle(
    producer: &FutureProducer,
    config: &PollerConfig,
    shutdown: &CancellationToken,
    batch: Dispatched,
) -> Outcome {
    let Dispatched { prepared, in_flight, mut outcome } = batch;
    let refused = await_deliveries(in_flight, &mut outcome, config, shutdown).await;
    if refused.len() == 1 {
        let (id, error) = refused.into_iter().next().unwrap_or_default();
        outcome.park(id, error);
        return outcome;
    }
    for (id, error) in refused {
        let Some(row) = prepared.iter().find(|p| p.id == id) else { continue };
        let alone = match send(producer, row, shutdown).await {
            Sent::InFlight(delivery) => vec![(id, delivery)],
            Sent::Refused(e) if relay_kafka::classify(&e) == ErrorClass::Permanent => {
                outcome.park(id, e.to_string());
                continue;
            }
            Sent::Refused(e) => {
                outcome.not_acknowledged(id, e.to_string());
                continue;
            }
            Sent::Abandoned => {
                outcome.unacknowledged += 1;
                break;
            }
        };
        for (id, _) in await_deliveries(alone, &mut outcome, config, shutdown).await {
            outcome.park(id, error.clone());
        }
    }
    outcome
}

/// Records each delivery report in `outcome`; returns the permanently refused rows.
async fn await_deliveries(
    in_flight: Vec<(i64, DeliveryFuture)>,
    outcome: &mut Outcome,
    config: &PollerConfig,
    shutdown: &CancellationToken,
) -> Vec<(i64, String)> {
    // After shutdown is requested, acknowledgements get `shutdown_grace` to arrive.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::pin!(deadline);
    let mut refused = Vec::new();
    let total = in_flight.len();
    for (done, (id, delivery)) in in_flight.into_iter().enumerate() {
        let report = tokio::select! {
            report = delivery => report,
            _ = &mut deadline => {
                outcome.unacknowledged += total - done;
                break;
            }
        };
        match report {
            Ok(Ok(delivery)) => outcome.published(id, delivery.partition, delivery.offset),
            Ok(Err((error, _))) if relay_kafka::classify(&error) == ErrorClass::Permanent => {
                refused.push((id, error.to_string()))
            }
            Ok(Err((error, _))) => outcome.not_acknowledged(id, error.to_string()),
            Err(_canceled) => outcome.not_acknowledged(id, "delivery report lost".into()),
        }
    }
    refused
}
