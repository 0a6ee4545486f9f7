//! The relay's own numbers: drain (throughput per stage, memory); steady latency is in `steady`.
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::stack::{backlog, wait_for_count, Service, Stack};

/// The partitions of a fan-out's topic (and of the steady scenario's broker floor).
pub(crate) const PARTITIONS: i32 = 6;

/// An origin database with its poller and two inbox databases with their consumers, on a fresh
/// topic, with both consumer groups joined (a warm-up message reached both inboxes).
pub(crate) struct Fanout {
    pub origin_db: String,
    pub inboxes: [String; 2],
    pub origin: tokio_postgres::Client,
    pub clients: Vec<tokio_postgres::Client>,
    pub topic: String,
    pub consumers: [Service; 2],
    pub poller: Service,
}

impl Fanout {
    pub(crate) async fn start(stack: &Stack, name: &str) -> anyhow::Result<Self> {
        let origin_db = format!("relay_bench_{name}_origin");
        let inboxes = [format!("relay_bench_{name}_a"), format!("relay_bench_{name}_b")];
        let origin = stack.database(&origin_db, relay_db::Schema::Outbox).await?;
        let mut clients = Vec::new();
        for db in &inboxes {
            clients.push(stack.database(db, relay_db::Schema::Inbox).await?);
        }
        let topic = stack.topic(name, PARTITIONS).await?;
        let consumers =
            [stack.consumer(&inboxes[0], "a", &topic)?, stack.consumer(&inboxes[1], "b", &topic)?];
        let poller = stack.poller(&origin_db, &topic)?;
        origin.execute("SELECT relay.enqueue($1, 'warm-up', 'x'::bytea)", &[&topic]).await?;
        for client in &clients {
            wait_for_count(client, "SELECT count(*) FROM relay.inbox", 1, Duration::from_secs(120)).await?;
        }
        Ok(Self { origin_db, inboxes, origin, clients, topic, consumers, poller })
    }

    /// Stops the services and drops the databases.
    pub(crate) async fn stop(self, stack: &Stack) -> anyhow::Result<()> {
        self.poller.stop().await?;
        for consumer in self.consumers {
            consumer.stop().await?;
        }
        drop(self.clients);
        drop(self.origin);
        stack.drop_databases(&[&self.origin_db, &self.inboxes[0], &self.inboxes[1]]).await
    }
}

/// A backlog drained into two inboxes.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub messages: i64,
    /// The backlog's commit to the last row stored in the slower inbox.
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

/// Commits a backlog of `n` messages while the poller and both consumers run, then measures the
/// drain from that commit.
pub async fn drain(stack: &Stack, name: &str, n: i64) -> anyhow::Result<Drain> {
    let Fanout { origin_db, inboxes, origin, clients, topic, consumers, poller } =
        Fanout::start(stack, name).await?;
    // The services are running, as in production, and the backlog appears in one transaction:
    // the clock starts at its commit, as SQL alone's starts at its first scan (neither counts a
    // process start, a connection or a consumer group join).
    let started = backlog(&origin, &topic, n).await?;
    let timeout = Duration::from_secs(600);
    for (client, inbox) in clients.iter().zip(["a", "b"]) {
        // The backlog's ids follow the warm-up's (1): the last one, n + 1, is found through the
        // index (inbox, source, sequence) at almost no cost, and only then are the rows counted.
        let last = format!(
            "SELECT coalesce(max(sequence), 0) FROM relay.inbox WHERE inbox = '{inbox}' AND source = 'bench'"
        );
        wait_for_count(client, &last, n + 1, timeout).await?;
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
