//! The consumer's probe: every `RELAY_PROBE_INTERVAL_MS` it checks the database and the brokers
//! for `/readyz` and publishes the lag of each assigned partition (high watermark minus the
//! consumer's position), on connections of its own so a stuck write cannot hide an outage.
use std::{sync::Arc, time::Duration};

use metrics::gauge;
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    Offset,
};
use relay_health::{Health, DATABASE, KAFKA};
use tokio_util::sync::CancellationToken;

use crate::ConsumerConfig;

pub(crate) async fn watch(
    config: ConsumerConfig,
    pool: deadpool_postgres::Pool,
    consumer: Arc<StreamConsumer>,
    health: Health,
    shutdown: CancellationToken,
) {
    let client_id = format!("relay-inbox-consumer-{}-probe", config.inbox);
    let probe =
        relay_kafka::Probe::new(&config.common, &client_id).map_err(|e| health.degraded(KAFKA, e)).ok();
    loop {
        health.record(DATABASE, database_answers(&pool).await);
        if let Some(probe) = &probe {
            if health.record(KAFKA, probe.check().await).is_some() {
                publish_lag(&consumer, &config.inbox, probe.timeout()).await;
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

/// Sets `relay_inbox_consumer_lag{inbox,topic,partition}` for every partition this member owns.
async fn publish_lag(consumer: &Arc<StreamConsumer>, inbox: &str, timeout: Duration) {
    let consumer = Arc::clone(consumer);
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
