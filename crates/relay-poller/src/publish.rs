//! One leader's work: scan pending rows, send them in id order, mark what the broker acknowledged.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::Producer,
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};
use relay_envelope::{Envelope, TraceContext};
use relay_kafka::ErrorClass;
use tokio_postgres::{Client, Row};
use tokio_util::sync::CancellationToken;

use crate::{PollerConfig, PollerError};

/// Publishes batches until shutdown. Returns an error when the leader's session breaks, the
/// producer turns fatal, or a batch makes no progress (so the caller backs off).
pub(crate) async fn publish_until_shutdown(
    client: &Client,
    producer: &FutureProducer,
    config: &PollerConfig,
    shutdown: &CancellationToken,
) -> Result<(), PollerError> {
    let fetch = client.prepare(include_str!("fetch_pending.sql")).await?;
    let mark_published = client.prepare(include_str!("mark_published.sql")).await?;
    let mark_parked = client.prepare(include_str!("mark_parked.sql")).await?;
    let mut wakeups = listen(config).await;
    while !shutdown.is_cancelled() {
        let rows = client.query(&fetch, &[&config.topics, &config.batch_size]).await?;
        if rows.is_empty() {
            wait_for_work(&mut wakeups, config, shutdown).await;
            continue;
        }
        let outcome = send_batch(producer, config, &rows, shutdown).await;
        if !outcome.published_ids.is_empty() {
            client
                .execute(&mark_published, &[&outcome.published_ids, &outcome.partitions, &outcome.offsets])
                .await?;
        }
        if !outcome.parked_ids.is_empty() {
            client.execute(&mark_parked, &[&outcome.parked_ids, &outcome.park_reasons]).await?;
        }
        tracing::debug!(
            published = outcome.published_ids.len(),
            parked = outcome.parked_ids.len(),
            "batch done"
        );
        if let Some(fatal) = producer.client().fatal_error() {
            return Err(PollerError::ProducerFatal(format!("{:?}: {}", fatal.0, fatal.1)));
        }
        if outcome.published_ids.is_empty() && outcome.parked_ids.is_empty() && !shutdown.is_cancelled() {
            let why = outcome.last_error.unwrap_or_else(|| "no record was acknowledged".into());
            return Err(PollerError::Stalled(why));
        }
        if outcome.unacknowledged > 0 {
            tracing::warn!(rows = outcome.unacknowledged, "rows not acknowledged; they will be sent again");
        }
    }
    Ok(())
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
struct Prepared<'r> {
    id: i64,
    topic: &'r str,
    key: &'r str,
    value: Vec<u8>,
    headers: OwnedHeaders,
}

impl Prepared<'_> {
    fn record(&self) -> FutureRecord<'_, str, Vec<u8>> {
        FutureRecord::to(self.topic).key(self.key).payload(&self.value).headers(self.headers.clone())
    }
}

enum Sent {
    InFlight(DeliveryFuture),
    Refused(KafkaError),
    /// Shutdown while the producer queue was full.
    Abandoned,
}

/// Hands one record to the producer, waiting while its queue is full.
async fn send(producer: &FutureProducer, row: &Prepared<'_>, shutdown: &CancellationToken) -> Sent {
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

/// Sends every row in id order, then waits for each delivery report. A permanent failure shared
/// by several rows (a broker refusing a whole request) is retried row by row, so only the rows
/// the broker refuses on their own are parked.
async fn send_batch(
    producer: &FutureProducer,
    config: &PollerConfig,
    rows: &[Row],
    shutdown: &CancellationToken,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut prepared = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get("id");
        let (topic, key, envelope) = envelope_of(row, &config.source);
        let limit = config.max_payload.for_topic(topic);
        if envelope.payload.len() > limit {
            outcome.park(
                id,
                format!("payload of {} bytes exceeds the limit of {limit} bytes", envelope.payload.len()),
            );
            continue;
        }
        let headers = headers_of(&envelope);
        prepared.push(Prepared { id, topic, key, value: relay_envelope::encode(&envelope), headers });
    }
    let mut in_flight = Vec::with_capacity(prepared.len());
    for row in &prepared {
        match send(producer, row, shutdown).await {
            Sent::InFlight(delivery) => in_flight.push((row.id, delivery)),
            Sent::Refused(error) if relay_kafka::classify(&error) == ErrorClass::Permanent => {
                outcome.park(row.id, error.to_string())
            }
            Sent::Refused(error) => {
                // Not sent: stop here so later rows of this key cannot overtake it.
                outcome.not_acknowledged(row.id, error.to_string());
                break;
            }
            Sent::Abandoned => break,
        }
    }
    let refused = await_deliveries(in_flight, &mut outcome, config, shutdown).await;
    if refused.len() == 1 {
        let (id, error) = refused.into_iter().next().unwrap_or_default();
        outcome.park(id, error);
    } else {
        for (id, error) in refused {
            let Some(row) = prepared.iter().find(|p| p.id == id) else { continue };
            let alone = match send(producer, row, shutdown).await {
                Sent::InFlight(delivery) => vec![(id, delivery)],
                Sent::Refused(e) => {
                    outcome.park(id, e.to_string());
                    continue;
                }
                Sent::Abandoned => break,
            };
            for (id, _) in await_deliveries(alone, &mut outcome, config, shutdown).await {
                outcome.park(id, error.clone());
            }
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

/// Builds the envelope for one outbox row; returns it with the row's topic and key.
fn envelope_of<'r>(row: &'r Row, source: &str) -> (&'r str, &'r str, Envelope) {
    let topic: &str = row.get("topic");
    let key: &str = row.get("key");
    let message_id: uuid::Uuid = row.get("message_id");
    let headers: serde_json::Value = row.get("headers");
    let headers = match headers {
        serde_json::Value::Object(map) => {
            map.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect()
        }
        _ => Default::default(),
    };
    let created_at: SystemTime = row.get("created_at");
    let created_at_unix_micros = match created_at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_micros() as i64,
        Err(before) => -(before.duration().as_micros() as i64),
    };
    let traceparent: Option<String> = row.get("traceparent");
    let tracestate: Option<String> = row.get("tracestate");
    let trace = (traceparent.is_some() || tracestate.is_some()).then(|| TraceContext {
        traceparent: traceparent.unwrap_or_default(),
        tracestate: tracestate.unwrap_or_default(),
    });
    let envelope = Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: message_id.to_string(),
        source: source.to_string(),
        topic: topic.to_string(),
        key: key.to_string(),
        r#type: row.get("msg_type"),
        content_type: row.get("content_type"),
        payload: row.get("payload"),
        headers,
        created_at_unix_micros,
        trace,
        sequence: row.get::<_, i64>("id") as u64,
    };
    (topic, key, envelope)
}

/// The id and trace context again as Kafka headers, for consumers that do not decode envelopes.
fn headers_of(envelope: &Envelope) -> OwnedHeaders {
    let version = relay_envelope::ENVELOPE_VERSION.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: relay_envelope::HEADER_MESSAGE_ID, value: Some(envelope.message_id.as_str()) })
        .insert(Header { key: relay_envelope::HEADER_ENVELOPE_VERSION, value: Some(version.as_str()) });
    if let Some(trace) = &envelope.trace {
        if !trace.traceparent.is_empty() {
            headers = headers.insert(Header {
                key: relay_envelope::HEADER_TRACEPARENT,
                value: Some(trace.traceparent.as_str()),
            });
        }
        if !trace.tracestate.is_empty() {
            headers = headers.insert(Header {
                key: relay_envelope::HEADER_TRACESTATE,
                value: Some(trace.tracestate.as_str()),
            });
        }
    }
    headers
}
