//! One leader's work: scan pending rows, send them in id order, mark what the broker acknowledged.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};
use relay_envelope::{Envelope, TraceContext};
use relay_kafka::ErrorClass;
use tokio_postgres::{Client, Row};
use tokio_util::sync::CancellationToken;

use crate::PollerConfig;

/// Publishes batches until shutdown. Returns a database error if the leader's session breaks.
pub(crate) async fn publish_until_shutdown(
    client: &Client,
    producer: &FutureProducer,
    config: &PollerConfig,
    shutdown: &CancellationToken,
) -> Result<(), relay_db::DbError> {
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
}

impl Outcome {
    fn park(&mut self, id: i64, reason: String) {
        tracing::error!(outbox_id = id, reason = %reason, "parking outbox row: the broker will not accept it");
        self.parked_ids.push(id);
        self.park_reasons.push(reason);
    }
}

/// Sends every row, in id order, then waits for each delivery report.
async fn send_batch(
    producer: &FutureProducer,
    config: &PollerConfig,
    rows: &[Row],
    shutdown: &CancellationToken,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut in_flight: Vec<(i64, DeliveryFuture)> = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get("id");
        let (topic, key, envelope) = envelope_of(row, &config.source);
        let value = relay_envelope::encode(&envelope);
        let limit = config.max_payload.for_topic(topic);
        if envelope.payload.len() > limit {
            outcome.park(
                id,
                format!("payload of {} bytes exceeds the limit of {limit} bytes", envelope.payload.len()),
            );
            continue;
        }
        let headers = headers_of(&envelope);
        loop {
            let record = FutureRecord::to(topic).key(key).payload(&value).headers(headers.clone());
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push((id, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) if relay_kafka::classify(&error) == ErrorClass::Permanent => {
                    outcome.park(id, error.to_string());
                    break;
                }
                Err((error, _)) => {
                    // Not sent: stop here so later rows of this key cannot overtake it.
                    tracing::warn!(outbox_id = id, error = %error, "could not hand record to the producer");
                    return await_deliveries(in_flight, outcome, config, shutdown).await;
                }
            }
        }
    }
    await_deliveries(in_flight, outcome, config, shutdown).await
}

async fn await_deliveries(
    in_flight: Vec<(i64, DeliveryFuture)>,
    mut outcome: Outcome,
    config: &PollerConfig,
    shutdown: &CancellationToken,
) -> Outcome {
    // After shutdown is requested, acknowledgements get `shutdown_grace` to arrive.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::pin!(deadline);
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
            Ok(Ok(delivery)) => {
                outcome.published_ids.push(id);
                outcome.partitions.push(delivery.partition);
                outcome.offsets.push(delivery.offset);
            }
            Ok(Err((error, _))) if relay_kafka::classify(&error) == ErrorClass::Permanent => {
                outcome.park(id, error.to_string());
            }
            Ok(Err((error, _))) => {
                tracing::warn!(outbox_id = id, error = %error, "delivery failed; the row stays pending");
                outcome.unacknowledged += 1;
            }
            Err(_canceled) => outcome.unacknowledged += 1,
        }
    }
    outcome
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
