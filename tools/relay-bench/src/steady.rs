//! Steady offered rate: where the time between a writer's commit and the inbox goes.
//!
//! Writer tasks, each on its own connection, keep up with a schedule (`rate` messages per second
//! in all): every tick a writer enqueues, in one transaction, all the messages its share of the
//! schedule owes by now, so a slow commit is caught up by the next one and the offered rate is
//! reached whenever the machine can take it. Each message's commit time is when its COMMIT
//! returned to the writer. A tap reads the topic directly (assigned partitions, no consumer
//! group) for each record's timestamp, which the poller's producer sets when the record is handed
//! to it. With `published_at` (the acknowledgement: the poller stamps it from the delivery report)
//! and each inbox's `received_at`, every message is timed per stage. All clocks are the same
//! machine's; record timestamps have millisecond resolution.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
    ClientConfig, Offset, TopicPartitionList,
};
use serde::Serialize;

use crate::{scenarios::Fanout, stack::Stack};

/// Latency at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct Steady {
    pub offered_per_sec: u64,
    /// Messages committed per second over the writing period.
    pub achieved_per_sec: f64,
    pub writers: usize,
    pub messages: usize,
    /// Per stage, milliseconds: p50, p99, p99.9.
    pub stages: Vec<Stage>,
    /// The broker's own latency at the same rate, measured just before (see `floor`).
    pub floor: crate::floor::Floor,
}

/// One stage's latency distribution.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub samples: usize,
    /// Milliseconds: p50, p99, p99.9.
    pub ms: [f64; 3],
}

impl Steady {
    /// A stage's percentiles by name (NaN when it was not measured).
    pub fn stage(&self, name: &str) -> [f64; 3] {
        self.stages.iter().find(|s| s.name == name).map_or([f64::NAN; 3], |s| s.ms)
    }
}

pub const COMMIT_TO_DISPATCHED: &str =
    "commit → handed to the producer (wake-up, scan, previous batch, encode)";
pub const DISPATCHED_TO_ACKED: &str = "handed to the producer → acknowledged (linger, broker)";
pub const ACKED_TO_INBOX: &str = "acknowledged → stored in an inbox (consumer fetch wait, insert)";
pub const RECORD_TO_INBOX: &str = "record timestamp → stored in an inbox (broker to inbox)";
pub const COMMIT_TO_ACKED: &str = "commit → acknowledged (published_at)";
pub const COMMIT_TO_INBOX: &str = "commit → stored in an inbox";

pub(crate) fn percentiles(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        v.get(((p * (v.len().saturating_sub(1)) as f64).round()) as usize).copied().unwrap_or(f64::NAN)
    };
    [at(0.50), at(0.99), at(0.999)]
}

/// Milliseconds from `from` to `to`, negative when `to` is earlier.
pub(crate) fn ms(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Writer tasks for `rate` msg/s: one per 500 msg/s, at least 4.
fn writers_for(rate: u64) -> usize {
    (rate.div_ceil(500) as usize).max(4)
}

const TICK: Duration = Duration::from_millis(5);

/// Offers `rate` messages per second for `duration` with the poller and two consumers running,
/// then times every message per stage.
pub async fn steady(stack: &Stack, rate: u64, duration: Duration) -> anyhow::Result<Steady> {
    let floor = crate::floor::measure(stack, rate, duration, TICK, crate::scenarios::PARTITIONS).await?;
    let name = format!("steady{rate}");
    let fanout = Fanout::start(stack, &name).await?;
    let writers = writers_for(rate);
    let stop = Arc::new(AtomicBool::new(false));
    let tap = spawn_tap(stack, &fanout.topic, stop.clone())?;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (url, topic) = (stack.url(&fanout.origin_db), fanout.topic.clone());
        let per_writer = rate as f64 / writers as f64;
        tasks.push(tokio::spawn(async move {
            let client = crate::stack::connect(&url).await?;
            let statement = client.prepare(include_str!("steady_enqueue.sql")).await?;
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut sent, mut next) = (0u64, (w as i64) << 40);
            let mut committed: Vec<(uuid::Uuid, SystemTime)> = Vec::new();
            while started.elapsed() < duration {
                ticker.tick().await;
                let owed = ((per_writer * started.elapsed().as_secs_f64()) as u64).saturating_sub(sent);
                if owed == 0 {
                    continue;
                }
                let k = owed as i64;
                let rows = client.query(&statement, &[&topic, &next, &(next + k - 1)]).await?;
                let at = SystemTime::now();
                committed.extend(rows.iter().map(|r| (r.get::<_, uuid::Uuid>(0), at)));
                next += k;
                sent += owed;
            }
            anyhow::Ok(committed)
        }));
    }
    let mut committed = HashMap::new();
    for task in tasks {
        committed.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = committed.len() as i64;
    for client in &fanout.clients {
        crate::stack::wait_for_count(
            client,
            "SELECT count(*) FROM relay.inbox",
            sent + 1,
            Duration::from_secs(300),
        )
        .await?;
    }
    // The tap has every record once both inboxes do, give or take its own fetch wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let handed: HashMap<uuid::Uuid, SystemTime> = tap.await??;

    let rows =
        fanout.origin.query("SELECT message_id, published_at FROM relay.outbox WHERE id > 1", &[]).await?;
    let acked: HashMap<uuid::Uuid, SystemTime> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut series: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut add = |stage: &'static str, value: f64| series.entry(stage).or_default().push(value);
    for (id, commit) in &committed {
        let ack = acked.get(id);
        let hand = handed.get(id);
        if let Some(ack) = ack {
            add(COMMIT_TO_ACKED, ms(*commit, *ack));
        }
        if let Some(hand) = hand {
            add(COMMIT_TO_DISPATCHED, ms(*commit, *hand));
            if let Some(ack) = ack {
                add(DISPATCHED_TO_ACKED, ms(*hand, *ack));
            }
        }
    }
    for client in &fanout.clients {
        for row in
            client.query("SELECT message_id, received_at FROM relay.inbox WHERE sequence > 1", &[]).await?
        {
            let (id, stored): (uuid::Uuid, SystemTime) = (row.get(0), row.get(1));
            if let Some(commit) = committed.get(&id) {
                add(COMMIT_TO_INBOX, ms(*commit, stored));
            }
            if let Some(ack) = acked.get(&id) {
                add(ACKED_TO_INBOX, ms(*ack, stored));
            }
            if let Some(hand) = handed.get(&id) {
                add(RECORD_TO_INBOX, ms(*hand, stored));
            }
        }
    }
    let stages = [
        COMMIT_TO_DISPATCHED,
        DISPATCHED_TO_ACKED,
        ACKED_TO_INBOX,
        RECORD_TO_INBOX,
        COMMIT_TO_ACKED,
        COMMIT_TO_INBOX,
    ]
    .into_iter()
    .map(|name| {
        let values = series.remove(name).unwrap_or_default();
        Stage { name, samples: values.len(), ms: percentiles(values) }
    })
    .collect();
    fanout.stop(stack).await?;
    Ok(Steady {
        offered_per_sec: rate,
        achieved_per_sec: sent as f64 / elapsed,
        writers,
        messages: committed.len(),
        stages,
        floor,
    })
}

/// Reads every record of `topic` from the beginning until `stop`; returns each message id with
/// its record timestamp (when the poller handed it to its producer).
fn spawn_tap(
    stack: &Stack,
    topic: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<HashMap<uuid::Uuid, SystemTime>>>> {
    let fetch_wait = std::env::var("BENCH_FETCH_WAIT_MAX_MS").unwrap_or_else(|_| "10".into());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", format!("bench-tap-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", &fetch_wait)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(tokio::task::spawn_blocking(move || {
        let mut handed = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
            let message = message?;
            let Some(at) = message.timestamp().to_millis() else { continue };
            let id = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == relay_envelope::HEADER_MESSAGE_ID)
                    .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<uuid::Uuid>().ok())
            });
            if let (Some(id), Ok(at)) = (id, u64::try_from(at)) {
                handed.insert(id, SystemTime::UNIX_EPOCH + Duration::from_millis(at));
            }
        }
        Ok(handed)
    }))
}
