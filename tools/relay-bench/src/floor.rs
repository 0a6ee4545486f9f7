//! The broker's own latency at a steady rate, measured right before Relay's at the same rate:
//! raw rdkafka with the poller's producer settings sends records of the envelope's size on the
//! same schedule as the steady writers, and a consumer with the bench consumers' fetch wait reads
//! them. Each record is timed from the moment it was handed to the producer to its delivery
//! report (acknowledged) and to its arrival at the consumer (delivered). Where the broker
//! answers each request quickly this is the floor under Relay's latency at that rate; where a
//! record per request overloads it (Tansu at a few thousand records a second), the raw client
//! can be slower than Relay, which sends batches.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use futures::{stream::FuturesUnordered, StreamExt};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::Message,
    producer::{FutureProducer, FutureRecord},
    ClientConfig, Offset, TopicPartitionList,
};
use serde::Serialize;

use crate::stack::Stack;

/// The broker's latency at one offered rate, milliseconds: p50, p99, p99.9.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub records: usize,
    pub achieved_per_sec: f64,
    /// Handed to the producer → delivery report.
    pub acknowledged_ms: [f64; 3],
    /// Handed to the producer → read by the consumer.
    pub delivered_ms: [f64; 3],
}

/// Sends `rate` records per second for `duration` (ticks of `tick`, as the steady writers) to a
/// fresh topic of `partitions` partitions and times each.
pub async fn measure(
    stack: &Stack,
    rate: u64,
    duration: Duration,
    tick: Duration,
    partitions: i32,
) -> anyhow::Result<Floor> {
    let topic = stack.topic(&format!("floor{rate}"), partitions).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(stack, &topic, stop.clone())?;
    let producer: FutureProducer =
        relay_kafka::producer_config(&stack.brokers, "bench-floor", &Default::default()).create()?;
    let value = vec![7u8; 300];
    let mut sent_at: HashMap<u64, SystemTime> = HashMap::new();
    let mut reports = FuturesUnordered::new();
    let mut acknowledged = Vec::new();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        tokio::select! {
            _ = ticker.tick() => {}
            Some((at, report)) = reports.next() => {
                acknowledged.push(crate::steady::ms(at, report??));
                continue;
            }
        }
        let owed = ((rate as f64 * started.elapsed().as_secs_f64()) as u64).saturating_sub(sent);
        for i in sent..sent + owed {
            let key = format!("key-{}", i % 1000);
            let index = i.to_be_bytes();
            let headers = rdkafka::message::OwnedHeaders::new()
                .insert(rdkafka::message::Header { key: "i", value: Some(index.as_slice()) });
            let record = FutureRecord::to(&topic).key(&key).payload(&value).headers(headers);
            let at = SystemTime::now();
            let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
            sent_at.insert(i, at);
            reports.push(async move {
                let report = delivery.await;
                (at, report.map(|r| r.map(|_| SystemTime::now()).map_err(|(e, _)| e)))
            });
        }
        sent += owed;
    }
    let achieved_per_sec = sent as f64 / started.elapsed().as_secs_f64();
    while let Some((at, report)) = reports.next().await {
        acknowledged.push(crate::steady::ms(at, report??));
    }
    // Every record is acknowledged; the reader has them all once its count reaches `sent`.
    let deadline = Instant::now() + Duration::from_secs(120);
    while reader.count.load(Ordering::Relaxed) < sent as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let arrived = reader.task.await??;
    let delivered: Vec<f64> = arrived
        .iter()
        .filter_map(|(i, at)| sent_at.get(i).map(|sent| crate::steady::ms(*sent, *at)))
        .collect();
    anyhow::ensure!(delivered.len() == sent as usize, "the floor's reader got {} of {sent}", delivered.len());
    // Its records would otherwise stay with the broker through Relay's run at the same rate.
    delete_topic(stack, &topic).await?;
    Ok(Floor {
        records: sent as usize,
        achieved_per_sec,
        acknowledged_ms: crate::steady::percentiles(acknowledged),
        delivered_ms: crate::steady::percentiles(delivered),
    })
}

async fn delete_topic(stack: &Stack, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &stack.brokers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&[topic], &options).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("deleting {topic}: {code}"))?;
    }
    Ok(())
}

/// Reads the topic from the beginning (assigned partitions, no consumer group, as the steady
/// tap): each record's index with the time it arrived.
struct Reader {
    count: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<(u64, SystemTime)>>>,
}

fn spawn_reader(stack: &Stack, topic: &str, stop: Arc<AtomicBool>) -> anyhow::Result<Reader> {
    use rdkafka::message::Headers;
    let fetch_wait = std::env::var("BENCH_FETCH_WAIT_MAX_MS").unwrap_or_else(|_| "10".into());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", format!("bench-floor-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", &fetch_wait)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut arrived = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
            let message = message?;
            let at = SystemTime::now();
            let index = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == "i")
                    .and_then(|h| Some(u64::from_be_bytes(h.value?.try_into().ok()?)))
            });
            if let Some(index) = index {
                arrived.push((index, at));
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(arrived)
    });
    Ok(Reader { count, task })
}
