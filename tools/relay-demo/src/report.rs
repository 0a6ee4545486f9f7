//! Compares the outbox with each inbox: arrived, missing, duplicated, mismatched, out of order,
//! and commit-to-inbox latency.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

/// Options for `relay-demo report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, env = "ORIGIN_DATABASE_URL")]
    origin: String,
    #[arg(long, default_value = "payments")]
    topic: String,
    /// An inbox as NAME=DATABASE_URL; repeat for each.
    #[arg(long = "inbox", required = true)]
    inboxes: Vec<String>,
    /// How long to wait for every message to arrive.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

struct Sent {
    key: String,
    sequence: i64,
    digest: String,
    created_at: SystemTime,
}

#[derive(Default)]
struct Tally {
    expected: usize,
    arrived: usize,
    missing: usize,
    extra: usize,
    stored_duplicates: usize,
    mismatched: usize,
    out_of_order: usize,
    latencies_ms: Vec<f64>,
}

impl Tally {
    fn clean(&self) -> bool {
        self.arrived == self.expected
            && self.missing + self.extra + self.stored_duplicates + self.mismatched + self.out_of_order == 0
    }
}

/// Waits for completion or the timeout, prints the table, and says whether all is clean.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    let inboxes: Vec<(String, String)> = args
        .inboxes
        .iter()
        .map(|spec| {
            spec.split_once('=')
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--inbox takes NAME=DATABASE_URL, got {spec:?}"))
        })
        .collect::<Result<_, _>>()?;
    let origin = crate::connect(&args.origin).await?;
    let mut clients = Vec::new();
    for (name, url) in &inboxes {
        clients.push((name.clone(), crate::connect(url).await?));
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let sent = load_sent(&origin, &args.topic).await?;
        let mut tallies = Vec::new();
        for (name, client) in &clients {
            tallies.push((name.clone(), tally(client, name, &args.topic, &sent).await?));
        }
        let all_arrived = tallies.iter().all(|(_, t)| t.missing == 0);
        if all_arrived || Instant::now() >= deadline {
            print_table(&tallies);
            return Ok(tallies.iter().all(|(_, t)| t.clean()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn load_sent(
    origin: &tokio_postgres::Client,
    topic: &str,
) -> anyhow::Result<HashMap<uuid::Uuid, Sent>> {
    let rows = origin
        .query(
            "SELECT message_id, key, id, md5(payload), created_at FROM relay.outbox WHERE topic = $1",
            &[&topic],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (r.get(0), Sent { key: r.get(1), sequence: r.get(2), digest: r.get(3), created_at: r.get(4) })
        })
        .collect())
}

async fn tally(
    inbox: &tokio_postgres::Client,
    name: &str,
    topic: &str,
    sent: &HashMap<uuid::Uuid, Sent>,
) -> anyhow::Result<Tally> {
    let rows = inbox
        .query(
            "SELECT message_id, key, sequence, md5(payload), received_at FROM relay.inbox
             WHERE inbox = $1 AND topic = $2 ORDER BY seq",
            &[&name, &topic],
        )
        .await?;
    let mut t = Tally { expected: sent.len(), ..Tally::default() };
    let mut seen = HashSet::new();
    let mut last_sequence: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        let id: uuid::Uuid = row.get(0);
        if !seen.insert(id) {
            t.stored_duplicates += 1;
            continue;
        }
        let Some(original) = sent.get(&id) else {
            t.extra += 1;
            continue;
        };
        let (key, sequence, digest): (String, i64, String) = (row.get(1), row.get(2), row.get(3));
        if key != original.key || sequence != original.sequence || digest != original.digest {
            t.mismatched += 1;
            continue;
        }
        t.arrived += 1;
        let previous = last_sequence.insert(key, sequence);
        if previous.is_some_and(|p| p > sequence) {
            t.out_of_order += 1;
        }
        let received: SystemTime = row.get(4);
        if let Ok(latency) = received.duration_since(original.created_at) {
            t.latencies_ms.push(latency.as_secs_f64() * 1000.0);
        }
    }
    t.missing = sent.keys().filter(|id| !seen.contains(id)).count();
    Ok(t)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn print_table(tallies: &[(String, Tally)]) {
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>6} {:>10} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "inbox",
        "expected",
        "arrived",
        "missing",
        "extra",
        "duplicates",
        "mismatched",
        "out-of-order",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for (name, t) in tallies {
        let mut l = t.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        println!(
            "{:<12} {:>8} {:>8} {:>8} {:>6} {:>10} {:>10} {:>12} {:>10.1} {:>10.1} {:>10.1}",
            name,
            t.expected,
            t.arrived,
            t.missing,
            t.extra,
            t.stored_duplicates,
            t.mismatched,
            t.out_of_order,
            percentile(&l, 50.0),
            percentile(&l, 99.0),
            l.last().copied().unwrap_or(f64::NAN)
        );
    }
    let verdict = if tallies.iter().all(|(_, t)| t.clean()) {
        "every message arrived exactly once, byte-equal, in per-key order"
    } else {
        "DISCREPANCIES FOUND"
    };
    println!("{verdict}");
}
