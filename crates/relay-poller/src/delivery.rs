//! Handing records to the producer and collecting their delivery reports, one record at a time,
//! so that a record the broker is slow to take or refuses holds back its own key and nothing
//! else.
//!
//! A batch waits for its reports for at most `OUTBOX_DELIVERY_WAIT_MS`. A record still unreported
//! then (a topic whose metadata never comes, a partition without a leader) becomes a
//! [`Straggler`]: the producer keeps trying it, its row stays pending and out of later scans, and
//! the later rows of its key are held back until its report arrives. Every other key flows.
use std::collections::HashSet;

use futures::FutureExt;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::OwnedHeaders,
    producer::{future_producer::OwnedDeliveryResult, DeliveryFuture, FutureProducer, FutureRecord},
};
use relay_kafka::ErrorClass;
use tokio_util::sync::CancellationToken;

/// A message key as ordering sees it: `(topic, key)`.
pub(crate) type KeyOf = (String, String);

/// What happened to the rows of a batch (or to stragglers): what to mark, and which keys must
/// wait because one of their rows was not acknowledged or was parked.
#[derive(Default)]
pub(crate) struct Outcome {
    pub published_ids: Vec<i64>,
    pub partitions: Vec<i32>,
    pub offsets: Vec<i64>,
    /// When each published row's delivery report was taken: `published_at` is stamped from it,
    /// not from the time of the mark.
    pub acked_at: Vec<tokio::time::Instant>,
    pub parked_ids: Vec<i64>,
    pub park_reasons: Vec<String>,
    pub unacknowledged: usize,
    pub last_error: Option<String>,
    /// Keys with a row that stays pending: their later rows must not go out before it.
    pub unacknowledged_keys: HashSet<KeyOf>,
    /// Keys with a row parked in this outcome.
    pub parked_keys: HashSet<KeyOf>,
}

impl Outcome {
    pub(crate) fn park(&mut self, id: i64, key: Option<KeyOf>, reason: String) {
        // Evidence: each parked row is written with its id, never summarised (relay-telemetry).
        tracing::error!(evidence = true, outbox_id = id, reason = %reason, "parking outbox row: it cannot be sent as it is");
        self.parked_ids.push(id);
        self.park_reasons.push(reason);
        self.parked_keys.extend(key);
    }

    fn published(&mut self, id: i64, partition: i32, offset: i64) {
        self.published_ids.push(id);
        self.partitions.push(partition);
        self.offsets.push(offset);
        self.acked_at.push(tokio::time::Instant::now());
    }

    fn not_acknowledged(&mut self, row: &Prepared, error: String) {
        tracing::warn!(outbox_id = row.id, error = %error, "not acknowledged; the row stays pending");
        self.unacknowledged += 1;
        self.last_error = Some(error);
        self.unacknowledged_keys.insert(row.key_of());
    }

    /// Adds another outcome's rows and keys to this one.
    pub(crate) fn absorb(&mut self, other: Outcome) {
        self.published_ids.extend(other.published_ids);
        self.partitions.extend(other.partitions);
        self.offsets.extend(other.offsets);
        self.acked_at.extend(other.acked_at);
        self.parked_ids.extend(other.parked_ids);
        self.park_reasons.extend(other.park_reasons);
        self.unacknowledged += other.unacknowledged;
        self.last_error = other.last_error.or(self.last_error.take());
        self.unacknowledged_keys.extend(other.unacknowledged_keys);
        self.parked_keys.extend(other.parked_keys);
    }

    /// The keys whose later rows must wait: unacknowledged ones, and parked ones when a parked
    /// row holds back its key.
    pub(crate) fn holding(&self, parked_holds_key: bool) -> impl Iterator<Item = &KeyOf> {
        let parked = self.parked_keys.iter().filter(move |_| parked_holds_key);
        self.unacknowledged_keys.iter().chain(parked)
    }
}

/// One row ready to send.
pub(crate) struct Prepared {
    /// `relay.publish`, open from encoding until the acknowledgement, for traced messages only.
    pub _span: Option<tracing::Span>,
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: OwnedHeaders,
    /// The row's `created_at`, for the commit-to-publish latency.
    pub created_at_unix_micros: i64,
    /// The row's `topic` label value (`measures::topic_label`).
    pub topic_label: metrics::SharedString,
}

impl Prepared {
    fn record(&self) -> FutureRecord<'_, str, Vec<u8>> {
        FutureRecord::to(&self.topic)
            .key(self.key.as_str())
            .payload(&self.value)
            .headers(self.headers.clone())
    }

    pub(crate) fn key_of(&self) -> KeyOf {
        (self.topic.clone(), self.key.clone())
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
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err((error, _)) => return Sent::Refused(error),
        }
    }
}

/// A batch handed to the producer, reports still to come.
pub(crate) struct Dispatched {
    in_flight: Vec<(Prepared, DeliveryFuture)>,
    pub outcome: Outcome,
}

impl Dispatched {
    /// The ids the next scan leaves out: rows in flight and rows parked but not yet marked.
    pub(crate) fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.in_flight.iter().map(|(row, _)| row.id).chain(self.outcome.parked_ids.iter().copied())
    }
}

/// Sends every row in id order without waiting for reports, except rows of a `held` key, which
/// stay pending for a later scan. A row the producer refuses holds back the rest of its key
/// (a parked one only when `parked_holds_key`).
pub(crate) async fn dispatch(
    producer: &FutureProducer,
    prepared: Vec<Prepared>,
    mut outcome: Outcome,
    mut held: HashSet<KeyOf>,
    parked_holds_key: bool,
    shutdown: &CancellationToken,
) -> Dispatched {
    let mut in_flight = Vec::with_capacity(prepared.len());
    for row in prepared {
        if held.contains(&row.key_of()) {
            continue;
        }
        match send(producer, &row, shutdown).await {
            Sent::InFlight(delivery) => in_flight.push((row, delivery)),
            Sent::Refused(error) if relay_kafka::classify(&error) == ErrorClass::Permanent => {
                outcome.park(row.id, Some(row.key_of()), error.to_string());
                if parked_holds_key {
                    held.insert(row.key_of());
                }
            }
            Sent::Refused(error) => {
                outcome.not_acknowledged(&row, error.to_string());
                held.insert(row.key_of());
            }
            Sent::Abandoned => {
                outcome.unacknowledged += 1;
                break;
            }
        }
    }
    Dispatched { in_flight, outcome }
}

/// A record whose report did not come within the batch's wait; the producer still has it.
pub(crate) struct Straggler {
    row: Prepared,
    delivery: DeliveryFuture,
    /// Sent on its own, so a refusal is its own, not one shared with its produce request.
    alone: bool,
    /// When it became a straggler.
    since: tokio::time::Instant,
}

/// The records awaiting their reports after their batch moved on, and those refused for good
/// while sent with others, to be sent again alone ([`retry_alone`]) before one is parked.
#[derive(Default)]
pub(crate) struct Stragglers(Vec<Straggler>, Vec<(Prepared, String)>);

impl Stragglers {
    pub(crate) fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }

    /// The bytes of the records awaiting their reports (values, as handed to the producer).
    pub(crate) fn bytes(&self) -> usize {
        self.0.iter().map(|s| s.row.value.len()).chain(self.1.iter().map(|(row, _)| row.value.len())).sum()
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.0.iter().map(|s| s.row.id).chain(self.1.iter().map(|(row, _)| row.id))
    }

    /// The keys held back by a straggler.
    pub(crate) fn keys(&self) -> HashSet<KeyOf> {
        self.0.iter().map(|s| s.row.key_of()).chain(self.1.iter().map(|(row, _)| row.key_of())).collect()
    }

    /// The topics of the records awaiting their reports, sorted.
    pub(crate) fn topics(&self) -> Vec<String> {
        let topics: std::collections::BTreeSet<&String> =
            self.0.iter().map(|s| &s.row.topic).chain(self.1.iter().map(|(row, _)| &row.topic)).collect();
        topics.into_iter().cloned().collect()
    }

    /// How long the oldest record has awaited its report since its batch moved on.
    pub(crate) fn oldest(&self) -> Option<std::time::Duration> {
        self.0.iter().map(|s| s.since.elapsed()).max()
    }

    /// The reason of the latest refusal among the stragglers, if one was refused.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.1.last().map(|(_, error)| error.clone())
    }

    /// The refused stragglers, to be sent again alone.
    pub(crate) fn take_refused(&mut self) -> Vec<(Prepared, String)> {
        let mut refused = std::mem::take(&mut self.1);
        refused.sort_by_key(|(row, _)| row.id);
        refused
    }

    /// Records every report that has arrived; the others stay.
    pub(crate) fn harvest(&mut self, outcome: &mut Outcome) {
        let mut waiting = Vec::with_capacity(self.0.len());
        for mut straggler in std::mem::take(&mut self.0) {
            match (&mut straggler.delivery).now_or_never() {
                Some(report) => self.record(&straggler, report, outcome),
                None => waiting.push(straggler),
            }
        }
        self.0 = waiting;
    }

    /// Waits for the next report and records it; with no stragglers, never returns. Cancel safe:
    /// a report is taken only when it is recorded.
    pub(crate) async fn next_report(&mut self, outcome: &mut Outcome) {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let (report, index, _) =
            futures::future::select_all(self.0.iter_mut().map(|s| &mut s.delivery)).await;
        let straggler = self.0.swap_remove(index);
        self.record(&straggler, report, outcome);
    }

    /// Records a straggler's report. A permanent refusal parks it when it was sent alone, and
    /// otherwise waits to be sent again alone.
    fn record<E>(
        &mut self,
        straggler: &Straggler,
        report: Result<OwnedDeliveryResult, E>,
        outcome: &mut Outcome,
    ) {
        let mut refused = Vec::new();
        record(&straggler.row, report, outcome, &mut refused);
        for (row, error) in refused {
            if straggler.alone {
                outcome.park(row.id, Some(row.key_of()), error);
            } else {
                self.1.push((row, error));
            }
        }
    }

    /// Waits up to `grace` for every report (at shutdown); the rows still unreported stay
    /// pending.
    pub(crate) async fn drain(&mut self, grace: std::time::Duration, outcome: &mut Outcome) {
        let _ = tokio::time::timeout(grace, async {
            while !self.0.is_empty() {
                self.next_report(outcome).await;
            }
        })
        .await;
        outcome.unacknowledged += self.len();
    }
}

/// Records one delivery report; a permanent refusal goes to `refused` (for a retry alone).
fn record<E>(
    row: &Prepared,
    report: Result<OwnedDeliveryResult, E>,
    outcome: &mut Outcome,
    refused: &mut Vec<(Prepared, String)>,
) {
    match report {
        Ok(Ok(delivery)) => {
            crate::measures::published(&row.topic_label, row.created_at_unix_micros);
            outcome.published(row.id, delivery.partition, delivery.offset)
        }
        Ok(Err((error, _))) if relay_kafka::classify(&error) == ErrorClass::Permanent => {
            refused.push((clone_row(row), error.to_string()))
        }
        Ok(Err((error, _))) => outcome.not_acknowledged(row, error.to_string()),
        Err(_canceled) => outcome.not_acknowledged(row, "delivery report lost".into()),
    }
}

/// A copy of a row for sending it again (the span stays with the original).
fn clone_row(row: &Prepared) -> Prepared {
    Prepared {
        _span: None,
        id: row.id,
        topic: row.topic.clone(),
        key: row.key.clone(),
        value: row.value.clone(),
        headers: row.headers.clone(),
        created_at_unix_micros: row.created_at_unix_micros,
        topic_label: row.topic_label.clone(),
    }
}

/// Waits up to `wait` for a batch's reports; records still unreported become stragglers. Rows
/// refused for good are sent again alone ([`retry_alone`]).
pub(crate) async fn settle(
    producer: &FutureProducer,
    batch: Dispatched,
    wait: std::time::Duration,
    parked_holds_key: bool,
    stragglers: &mut Stragglers,
    shutdown: &CancellationToken,
) -> Outcome {
    let Dispatched { in_flight, mut outcome } = batch;
    let mut refused = Vec::new();
    await_reports(in_flight, &mut outcome, &mut refused, wait, stragglers, false).await;
    let retry = Retry { producer, wait, parked_holds_key, shutdown };
    retry_alone(&retry, refused, &mut outcome, stragglers).await;
    outcome
}

/// What sending refused rows again alone needs.
pub(crate) struct Retry<'a> {
    pub producer: &'a FutureProducer,
    pub wait: std::time::Duration,
    pub parked_holds_key: bool,
    pub shutdown: &'a CancellationToken,
}

/// Sends each refused row again on its own, in id order, and parks it only if it is refused
/// again: a broker refuses a whole produce request for one bad record, so the others sent with
/// it (of any batch) must not pay for it. A row after a parked row of its key is not sent when
/// `parked_holds_key` (it stays pending, behind the parked row).
pub(crate) async fn retry_alone(
    retry: &Retry<'_>,
    refused: Vec<(Prepared, String)>,
    outcome: &mut Outcome,
    stragglers: &mut Stragglers,
) {
    for (row, error) in refused {
        if retry.parked_holds_key && outcome.parked_keys.contains(&row.key_of()) {
            continue;
        }
        let alone = match send(retry.producer, &row, retry.shutdown).await {
            Sent::InFlight(delivery) => vec![(row, delivery)],
            Sent::Refused(e) if relay_kafka::classify(&e) == ErrorClass::Permanent => {
                outcome.park(row.id, Some(row.key_of()), e.to_string());
                continue;
            }
            Sent::Refused(e) => {
                outcome.not_acknowledged(&row, e.to_string());
                continue;
            }
            Sent::Abandoned => {
                outcome.unacknowledged += 1;
                break;
            }
        };
        let mut still = Vec::new();
        await_reports(alone, outcome, &mut still, retry.wait, stragglers, true).await;
        for (row, _) in still {
            outcome.park(row.id, Some(row.key_of()), error.clone());
        }
    }
}

/// Records each report that arrives within `wait`; the rest become stragglers.
async fn await_reports(
    in_flight: Vec<(Prepared, DeliveryFuture)>,
    outcome: &mut Outcome,
    refused: &mut Vec<(Prepared, String)>,
    wait: std::time::Duration,
    stragglers: &mut Stragglers,
    alone: bool,
) {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    for (row, mut delivery) in in_flight {
        let report = tokio::select! {
            biased;
            report = &mut delivery => Some(report),
            () = &mut deadline => None,
        };
        match report {
            Some(report) => record(&row, report, outcome, refused),
            None => {
                tracing::debug!(
                    outbox_id = row.id,
                    "no delivery report yet; its key waits, the others go on"
                );
                stragglers.0.push(Straggler { row, delivery, alone, since: tokio::time::Instant::now() });
            }
        }
    }
}
