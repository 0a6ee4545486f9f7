//! The relay's own numbers: drain (throughput per stage, memory) and steady (latency).
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::stack::{backlog, wait_for_count, Service, Stack};

/// An origin database with its poller and two inbox databases with their consumers, on a fresh
/// topic, with both consumer groups joined (a warm-up message reached both inboxes).
struct Fanout {
    origin_db: String,
    inboxes: [String; 2],
    origin: tokio_postgres::Client,
    clients: Vec<tokio_postgres::Client>,
    topic: String,
    consumers: [Service; 2],
    poller: Service,
}

impl Fanout {
    async fn start(stack: &Stack, name: &str) -> anyhow::Result<Self> {
        let origin_db = format!("relay_bench_{name}_origin");
        let inboxes = [format!("relay_bench_{name}_a"), format!("relay_bench_{name}_b")];
        let origin = stack.database(&origin_db, relay_db::Schema::Outbox).await?;
        let mut clients = Vec::new();
        for db in &inboxes {
            clients.push(stack.database(db, relay_db::Schema::Inbox).await?);
        }
        let topic = stack.topic(name, 6).await?;
        let consumers =
            [stack.consumer(&inboxes[0], "a", &topic)?, stack.consumer(&inboxes[1], "b", &topic)?];
        let poller = stack.poller(&origin_db, &topic)?;
        origin.execute("SELECT relay.enqueue($1, 'warm-up', 'x'::bytea)", &[&topic]).await?;
        for client in &clients {
            wait_for_count(client, "SELECT count(*) FROM relay.inbox", 1, Duration::from_secs(120)).await?;
        }
        Ok(Self { origin_db, inboxes, origin, clients, topic, consumers, poller })
    }
}

/// A backlog drained into two inboxes.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub messages: i64,
    /// Poller start to the last row stored in the slower inbox.
    pub end_to_end_per_sec: f64,
    /// Outbox to broker: rows acknowledged per second.
    pub publish_per_sec: f64,
    /// Broker to inbox, per inbox: first to last row stored.
    pub consume_per_sec: Vec<f64>,
    pub poller_peak_rss_mib: f64,
    pub consumer_peak_rss_mib: Vec<f64>,
}

fn secs(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(f64::NAN, |d| d.as_secs_f64()).max(1e-6)
}

/// Fills the outbox with `n` messages while no poller runs, then measures the drain.
pub async fn drain(stack: &Stack, name: &str, n: i64) -> anyhow::Result<Drain> {
    let Fanout { origin_db, inboxes, origin, clients, topic, consumers, poller } =
        Fanout::start(stack, name).await?;
    poller.stop().await?;
    backlog(&origin, &topic, n).await?;

    let started = SystemTime::now();
    let poller = stack.poller(&origin_db, &topic)?;
    let timeout = Duration::from_secs(600);
    for client in &clients {
        wait_for_count(client, "SELECT count(*) FROM relay.inbox", n + 1, timeout).await?;
    }
    wait_for_count(
        &origin,
        "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL",
        n + 1,
        timeout,
    )
    .await?;
    let last_published: SystemTime =
        origin.query_one("SELECT max(published_at) FROM relay.outbox", &[]).await?.get(0);
    let mut consume_per_sec = Vec::new();
    let mut last_stored = started;
    for client in &clients {
        let row = client
            .query_one("SELECT min(received_at), max(received_at) FROM relay.inbox WHERE sequence > 1", &[])
            .await?;
        let (first, last): (SystemTime, SystemTime) = (row.get(0), row.get(1));
        consume_per_sec.push(n as f64 / secs(first, last));
        last_stored = last_stored.max(last);
    }
    let result = Drain {
        messages: n,
        end_to_end_per_sec: n as f64 / secs(started, last_stored),
        publish_per_sec: n as f64 / secs(started, last_published),
        consume_per_sec,
        poller_peak_rss_mib: poller.peak_rss_mib().unwrap_or(f64::NAN),
        consumer_peak_rss_mib: consumers.iter().map(|c| c.peak_rss_mib().unwrap_or(f64::NAN)).collect(),
    };
    poller.stop().await?;
    for consumer in consumers {
        consumer.stop().await?;
    }
    drop(clients);
    stack.drop_databases(&[&origin_db, &inboxes[0], &inboxes[1]]).await?;
    Ok(result)
}

/// Latency at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct Steady {
    pub offered_per_sec: u64,
    pub achieved_per_sec: f64,
    pub messages: usize,
    /// Enqueue to broker acknowledgement, milliseconds: p50, p99, p99.9.
    pub publish_ms: [f64; 3],
    /// Enqueue to stored in an inbox (both inboxes pooled), milliseconds: p50, p99, p99.9.
    pub inbox_ms: [f64; 3],
}

fn percentiles(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        v.get(((p * (v.len().saturating_sub(1)) as f64).round()) as usize).copied().unwrap_or(f64::NAN)
    };
    [at(0.50), at(0.99), at(0.999)]
}

/// Offers `rate` messages per second for `duration` (one transaction per 10 ms tick and writer)
/// with the poller and two consumers running, then reads the latencies from the databases.
pub async fn steady(stack: &Stack, rate: u64, duration: Duration) -> anyhow::Result<Steady> {
    let name = format!("steady{rate}");
    let Fanout { origin_db, inboxes, origin, clients, topic, consumers, poller } =
        Fanout::start(stack, &name).await?;

    const WRITERS: u64 = 4;
    const TICK: Duration = Duration::from_millis(10);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (url, topic) = (stack.url(&origin_db), topic.clone());
        writers.push(tokio::spawn(async move {
            let client = crate::stack::connect(&url).await?;
            let statement = client
                .prepare(
                    "SELECT relay.enqueue($1, 'key-' || (g % 1000), decode(repeat(md5(g::text), 8), 'hex'))
                     FROM generate_series($2::bigint, $3::bigint) AS g",
                )
                .await?;
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let per_tick = rate as f64 * TICK.as_secs_f64() / WRITERS as f64;
            let (mut owed, mut next) = (0.0, (w as i64) << 40);
            while started.elapsed() < duration {
                ticker.tick().await;
                owed += per_tick;
                let k = owed.floor() as i64;
                if k > 0 {
                    owed -= k as f64;
                    client.execute(&statement, &[&topic, &next, &(next + k - 1)]).await?;
                    next += k;
                }
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent: i64 = origin.query_one("SELECT count(*) - 1 FROM relay.outbox", &[]).await?.get(0);
    for client in &clients {
        wait_for_count(client, "SELECT count(*) FROM relay.inbox", sent + 1, Duration::from_secs(300))
            .await?;
    }
    let rows = origin
        .query("SELECT message_id, created_at, published_at FROM relay.outbox WHERE id > 1", &[])
        .await?;
    let created: std::collections::HashMap<uuid::Uuid, SystemTime> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let publish = rows.iter().map(|r| secs(r.get(1), r.get(2)) * 1000.0).collect();
    let mut inbox_ms = Vec::new();
    for client in &clients {
        for row in
            client.query("SELECT message_id, received_at FROM relay.inbox WHERE sequence > 1", &[]).await?
        {
            if let Some(c) = created.get(&row.get::<_, uuid::Uuid>(0)) {
                inbox_ms.push(secs(*c, row.get(1)) * 1000.0);
            }
        }
    }
    poller.stop().await?;
    for consumer in consumers {
        consumer.stop().await?;
    }
    drop(clients);
    stack.drop_databases(&[&origin_db, &inboxes[0], &inboxes[1]]).await?;
    Ok(Steady {
        offered_per_sec: rate,
        achieved_per_sec: sent as f64 / elapsed,
        messages: rows.len(),
        publish_ms: percentiles(publish),
        inbox_ms: percentiles(inbox_ms),
    })
}
