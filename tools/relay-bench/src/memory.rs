//! Memory by payload size: peak resident memory (`VmHWM`) of the poller and of two consumers,
//! at the product's default settings, while backlogs of 1 KiB, 100 KiB and 1 MiB payloads drain,
//! each backlog many batches long, against the budget of [`BUDGET_MIB`] per service (half of the
//! shipped Kubernetes memory limit of 256 MiB).
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::stack::{wait_for_count, Service, Stack};

/// Each service's peak RSS budget, MiB.
pub const BUDGET_MIB: f64 = 128.0;

/// One payload size's drain.
#[derive(Debug, Clone, Serialize)]
pub struct BySize {
    pub payload_bytes: i32,
    /// The payloads repeat a 16-byte pattern (compress about 200×) rather than being a chain of
    /// digests (do not compress).
    pub compressible: bool,
    pub messages: i32,
    pub per_sec: f64,
    pub poller_peak_rss_mib: f64,
    pub consumer_peak_rss_mib: Vec<f64>,
}

/// The payload sizes and how many messages of each: enough for several batches at the default
/// bounds (1,000 rows or 8 MiB per poller batch, 500 records or 8 MiB per consumer batch).
/// The last workload repeats its 1 MiB payloads' first 16 bytes, so they compress about 200×: a
/// consumer's fetch is bounded in compressed bytes, so such payloads expand in it.
pub fn workloads(scale: f64) -> Vec<(i32, i32, bool)> {
    let n = |base: f64| ((base * scale).round() as i32).max(1);
    vec![
        (1 << 10, n(20_000.0), false),
        (100 << 10, n(2_000.0), false),
        (1 << 20, n(300.0), false),
        (1 << 20, n(300.0), true),
    ]
}

/// A service at the product's defaults, apart from the bench stack's broker wait settings (and
/// any `KAFKA_PROPERTY_*` the bench itself was given: see `Stack::spawn`).
fn spawn(stack: &Stack, name: &str, binary: &str, mut env: Vec<(&str, String)>) -> anyhow::Result<Service> {
    if binary == "inbox-consumer" {
        env.extend([
            ("KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000".to_string()),
            ("KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS", "500".to_string()),
            ("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "10".to_string()),
        ]);
    }
    stack.spawn(name, binary, &env)
}

/// Drains each workload with a fresh poller and two fresh consumers; returns each service's peak.
pub async fn measure(stack: &Stack, scale: f64) -> anyhow::Result<Vec<BySize>> {
    let mut results = Vec::new();
    for (size, n, compressible) in workloads(scale) {
        eprintln!("  memory: {n} messages of {size} bytes (compressible: {compressible})");
        results.push(one(stack, size, n, compressible).await?);
    }
    Ok(results)
}

async fn one(stack: &Stack, size: i32, n: i32, compressible: bool) -> anyhow::Result<BySize> {
    let dbs = ["relay_bench_mem_origin", "relay_bench_mem_a", "relay_bench_mem_b"];
    let origin = stack.database(dbs[0], relay_db::Schema::Outbox).await?;
    let mut clients = Vec::new();
    for db in &dbs[1..] {
        clients.push(stack.database(db, relay_db::Schema::Inbox).await?);
    }
    let topic = stack.topic("memory", 6).await?;
    // Payloads differ from each other; built in the server, in transactions of about 32 MiB.
    let per_tx = (32 << 20) / size.max(1) + 1;
    let payload = if compressible {
        "substring(decode(repeat(md5(i::text), $4 / 16 + 1), 'hex') FROM 1 FOR $4)"
    } else {
        "substring((SELECT decode(string_agg(md5(i::text || ':' || j::text), ''), 'hex')
                    FROM generate_series(0, $4 / 16) AS j) FROM 1 FOR $4)"
    };
    let sql = format!(
        "INSERT INTO relay.outbox (topic, key, payload)
         SELECT $1, 'key-' || (i % 1000), {payload} FROM generate_series($2::int, $3::int) AS i"
    );
    let mut first = 1;
    while first <= n {
        let last = (first + per_tx - 1).min(n);
        origin.execute(&sql, &[&topic, &first, &last, &size]).await?;
        first = last + 1;
    }
    origin.batch_execute("ANALYZE relay.outbox").await?;
    let mut consumers = Vec::new();
    for (db, inbox) in dbs[1..].iter().zip(["a", "b"]) {
        let env = vec![
            ("DATABASE_URL", stack.url(db)),
            ("INBOX_NAME", inbox.to_string()),
            ("INBOX_TOPICS", topic.clone()),
            ("INBOX_GROUP_ID", format!("{inbox}-{topic}")),
        ];
        consumers.push(spawn(stack, &format!("memory-consumer-{inbox}"), "inbox-consumer", env)?);
    }
    let started = SystemTime::now();
    let env = vec![
        ("DATABASE_URL", stack.url(dbs[0])),
        ("OUTBOX_SOURCE", "bench".to_string()),
        ("OUTBOX_TOPICS", topic.clone()),
    ];
    let poller = spawn(stack, "memory-poller", "outbox-poller", env)?;
    for client in &clients {
        wait_for_count(client, "SELECT count(*) FROM relay.inbox", i64::from(n), Duration::from_secs(900))
            .await?;
    }
    let elapsed = SystemTime::now().duration_since(started)?.as_secs_f64();
    let result = BySize {
        payload_bytes: size,
        compressible,
        messages: n,
        per_sec: f64::from(n) / elapsed,
        poller_peak_rss_mib: poller.peak_rss_mib().unwrap_or(f64::NAN),
        consumer_peak_rss_mib: consumers.iter().map(|c| c.peak_rss_mib().unwrap_or(f64::NAN)).collect(),
    };
    poller.stop().await?;
    for consumer in consumers {
        consumer.stop().await?;
    }
    drop((origin, clients));
    stack.drop_databases(&dbs).await?;
    Ok(result)
}

/// The Markdown table.
pub fn render(out: &mut String, results: &[BySize]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n### Memory by payload size: peak RSS (VmHWM) at default settings, budget {BUDGET_MIB:.0} MiB per service\n"
    );
    let _ = writeln!(
        out,
        "| payload | messages | msg/s (with start-up) | outbox-poller (MiB) | inbox-consumer a (MiB) | inbox-consumer b (MiB) | within budget |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
    for r in results {
        let peaks = std::iter::once(r.poller_peak_rss_mib).chain(r.consumer_peak_rss_mib.iter().copied());
        let within = peaks.clone().all(|p| p <= BUDGET_MIB);
        let c = |i: usize| r.consumer_peak_rss_mib.get(i).copied().unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "| {}{} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            size_name(r.payload_bytes),
            if r.compressible { ", compressing ~200×" } else { "" },
            r.messages,
            r.per_sec,
            r.poller_peak_rss_mib,
            c(0),
            c(1),
            if within { "yes" } else { "NO" }
        );
    }
}

fn size_name(bytes: i32) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}
