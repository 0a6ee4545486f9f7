//! The consumer's probe: every `RELAY_PROBE_INTERVAL_MS` it checks the database and the brokers
//! for `/readyz` and publishes the lag of each assigned partition (high watermark minus the
//! consumer's position), on connections of its own so a stuck write cannot hide an outage.
use std::{sync::Arc, time::Duration};

use metrics::gauge;
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    Offset,
};
use relay_health::Health;
use tokio_util::sync::CancellationToken;

use crate::ConsumerConfig;

pub(crate) const DATABASE: &str = "database";
pub(crate) const KAFKA: &str = "kafka";

pub(crate) async fn watch(
    config: ConsumerConfig,
    pool: deadpool_postgres::Pool,
    consumer: Arc<StreamConsumer>,
    health: Health,
    shutdown: CancellationToken,
) {
    let probe = match relay_kafka::Probe::new(
        &config.common.kafka_brokers,
        &format!("relay-inbox-consumer-{}-probe", config.inbox),
        &config.common.kafka_properties,
    ) {
        Ok(probe) => Some(probe),
        Err(e) => {
            health.degraded(KAFKA, &e);
            None
        }
    };
    let timeout = config.common.probe_interval.clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match database_answers(&pool).await {
            Ok(()) => health.ok(DATABASE),
            Err(e) => health.degraded(DATABASE, e),
        }
        if let Some(probe) = &probe {
            match probe.check(timeout).await {
                Ok(_) => {
                    health.ok(KAFKA);
                    publish_lag(&consumer, &config.inbox, timeout).await;
                }
                Err(why) => health.degraded(KAFKA, why),
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
                // Nothing consumed yet in this assignment: everything up to the high mark waits.
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
