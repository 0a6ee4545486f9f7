//! The consumer's probe: every `RELAY_PROBE_INTERVAL_MS` it checks the database and the brokers
//! for `/readyz` and publishes the lag of each assigned partition (high watermark minus the
//! consumer's position), on connections of its own so a stuck write cannot hide an outage. For
//! an inbox whose receiving service processes messages through `relay.claim`, it also publishes
//! that service's backlog (`relay_inbox_unprocessed` and friends, see [`publish_processing`]).
use std::{sync::Arc, time::Duration};

use metrics::gauge;
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    Offset,
};
use relay_health::{Health, DATABASE, KAFKA};
use tokio_util::sync::CancellationToken;

use crate::{clients::Current, ConsumerConfig};

pub(crate) async fn watch(
    config: ConsumerConfig,
    pool: deadpool_postgres::Pool,
    consumers: tokio::sync::watch::Receiver<Option<Current>>,
    health: Health,
    shutdown: CancellationToken,
) {
    let client_id = format!("relay-inbox-consumer-{}-probe", config.inbox);
    let probe =
        relay_kafka::Probe::new(&config.common, &client_id).map_err(|e| health.degraded(KAFKA, e)).ok();
    loop {
        if health.record(DATABASE, database_answers(&pool).await).is_some() {
            publish_processing(&pool, &config.inbox).await;
        }
        if let Some(probe) = &probe {
            if health.record(KAFKA, probe.check().await).is_some() {
                // No client while a static member's replaced one closes.
                let consumer = consumers.borrow().as_ref().map(|c| Arc::clone(&c.consumer));
                if let Some(consumer) = consumer {
                    publish_lag(consumer, &config.inbox, probe.timeout()).await;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.common.probe_interval) => {}
        }
    }
}

async fn database_answers(pool: &deadpool_postgres::Pool) -> Result<(), relay_db::DbError> {
    let client = pool.get().await?;
    client.query_one("SELECT 1", &[]).await?;
    Ok(())
}

/// Sets, for an inbox with processing enabled (a `relay.processing` row), labelled `inbox`:
/// - `relay_inbox_unprocessed`: messages stored and not processed yet (waiting, failing, parked);
/// - `relay_inbox_oldest_unprocessed_age_seconds`: seconds since the oldest of them was stored
///   (0 when there is none);
/// - `relay_inbox_processing_attempts`: failed attempts (`relay.failed`) recorded on them: grows
///   while a handler keeps failing, drops as they are processed or skipped;
/// - `relay_inbox_processing_parked`: those parked, each holding up the later messages of its key.
///
/// Nothing is set for an inbox without processing. A failed query is logged at debug level and
/// retried next probe (the database check above reports outages).
async fn publish_processing(pool: &deadpool_postgres::Pool, inbox: &str) {
    let backlog = async {
        let client = pool.get().await?;
        Ok::<_, relay_db::DbError>(client.query_opt(include_str!("processing_backlog.sql"), &[&inbox]).await?)
    };
    let row = match backlog.await {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the processing backlog; retrying next probe");
            return;
        }
    };
    let labels = [("inbox", inbox.to_string())];
    gauge!("relay_inbox_unprocessed", &labels).set(row.get::<_, i64>("unprocessed") as f64);
    gauge!("relay_inbox_oldest_unprocessed_age_seconds", &labels)
        .set(row.get::<_, f64>("oldest_age_seconds"));
    gauge!("relay_inbox_processing_attempts", &labels).set(row.get::<_, f64>("attempts"));
    gauge!("relay_inbox_processing_parked", &labels).set(row.get::<_, i64>("parked") as f64);
}

/// Sets `relay_inbox_consumer_lag{inbox,topic,partition}` for every partition this member owns.
async fn publish_lag(consumer: Arc<StreamConsumer>, inbox: &str, timeout: Duration) {
    let lags = tokio::task::spawn_blocking(move || {
        let mut lags = Vec::new();
        let Ok(positions) = consumer.position() else { return lags };
        for element in positions.elements() {
            let Ok((_, high)) = consumer.fetch_watermarks(element.topic(), element.partition(), timeout)
            else {
                continue;
            };
            let lag = match element.offset() {
                Offset::Offset(position) => (high - position).max(0),
                // Nothing consumed yet in this assignment: no position to measure from, so the
                // partition's gauge is left as it was until the first record is consumed.
                _ => continue,
            };
            lags.push((element.topic().to_string(), element.partition(), lag));
        }
        lags
    })
    .await
    .unwrap_or_default();
    for (topic, partition, lag) in lags {
        let labels = [("inbox", inbox.to_string()), ("topic", topic), ("partition", partition.to_string())];
        gauge!("relay_inbox_consumer_lag", &labels).set(lag as f64);
    }
}
