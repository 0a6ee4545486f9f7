//! The consumer's probe: every `RELAY_PROBE_INTERVAL_MS` it checks the database and the brokers
//! for `/readyz` and publishes the lag of each assigned partition (high watermark minus the
//! consumer's position), on connections of its own so a stuck write cannot hide an outage. For
//! an inbox whose receiving service processes messages through `relay.claim`, it also publishes
//! that service's backlog (`relay_inbox_unprocessed` and friends, see [`publish_processing`]).
use std::{collections::BTreeSet, sync::Arc, time::Duration};

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
    // The partitions whose lag gauge this member set: a partition that leaves the assignment
    // (rebalance, restart of the consumer) has its gauge set to 0 so that its last value does
    // not linger next to the new owner's and sum up to a lag nobody has.
    let mut published = BTreeSet::new();
    loop {
        if health.record(DATABASE, database_answers(&pool).await).is_some() {
            publish_processing(&pool, &config.inbox).await;
        }
        if let Some(probe) = &probe {
            if health.record(KAFKA, probe.check().await).is_some() {
                // No client while a static member's replaced one closes.
                let consumer = consumers.borrow().as_ref().map(|c| Arc::clone(&c.consumer));
                if let Some(consumer) = consumer {
                    publish_lag(consumer, &config.inbox, probe.timeout(), &mut published).await;
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

/// A partition of a topic, as the lag gauge labels it.
type Partition = (String, i32);

/// Sets `relay_inbox_consumer_lag{inbox,topic,partition}` for every partition this member owns,
/// and to 0 for every partition in `published` (those set on earlier ticks) that it no longer
/// owns; `published` becomes the partitions owned now. When the assignment cannot be read,
/// nothing changes.
async fn publish_lag(
    consumer: Arc<StreamConsumer>,
    inbox: &str,
    timeout: Duration,
    published: &mut BTreeSet<Partition>,
) {
    let measured = tokio::task::spawn_blocking(move || {
        let positions = consumer.position().ok()?;
        let mut owned = BTreeSet::new();
        let mut lags = Vec::new();
        for element in positions.elements() {
            let partition = (element.topic().to_string(), element.partition());
            owned.insert(partition.clone());
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
            lags.push((partition, lag));
        }
        Some((owned, lags))
    })
    .await
    .ok()
    .flatten();
    let Some((owned, lags)) = measured else { return };
    let set = |(topic, partition): &Partition, lag: f64| {
        let labels =
            [("inbox", inbox.to_string()), ("topic", topic.clone()), ("partition", partition.to_string())];
        gauge!("relay_inbox_consumer_lag", &labels).set(lag);
    };
    for revoked in published.difference(&owned) {
        set(revoked, 0.0);
    }
    for (partition, lag) in &lags {
        set(partition, *lag as f64);
    }
    *published = owned;
}
