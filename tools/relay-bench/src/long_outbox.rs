//! A long-lived outbox: published rows are kept (retention is off by default), so the outbox
//! grows without end. The poller's scan and mark must cost the same on an outbox of millions of
//! published rows as on an empty one, and a long-running snapshot (a report, a backup, a
//! forgotten `BEGIN`) must not leave them slow once it ends.
//!
//! Measured with `EXPLAIN (ANALYZE, BUFFERS)` of the poller's own statements: on an empty outbox,
//! after loading published rows, and with a snapshot held open while messages pass through the
//! real poller, then after it closes and after the vacuum autovacuum would run.
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use crate::stack::{connect, wait_for_count, Stack};

/// One statement's cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cost {
    pub ms: f64,
    /// Shared buffers hit or read by the statement's plan.
    pub buffers: i64,
}

/// The poller's statements at one state of the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub state: String,
    pub published_rows: i64,
    /// The scan with 1,000 pending rows.
    pub scan: Option<Cost>,
    /// Marking those 1,000 rows published.
    pub mark: Option<Cost>,
    /// The scan with nothing pending.
    pub empty_scan: Cost,
}

#[derive(Debug, Clone, Serialize)]
pub struct LongOutbox {
    pub published_rows: i64,
    pub snapshot_messages: i64,
    pub points: Vec<Point>,
}

const DB: &str = "relay_bench_long";
const PENDING: i64 = 1_000;

/// Loads `rows` published rows, then lets `passing` messages through the poller under a held
/// snapshot; measures at each step.
pub async fn measure(stack: &Stack, rows: i64, passing: i64) -> anyhow::Result<LongOutbox> {
    let origin = stack.database(DB, relay_db::Schema::Outbox).await?;
    let topic = stack.topic("long", 6).await?;
    prepare(&origin, &topic).await?;
    let mut points = vec![point(&origin, &topic, "empty outbox", 0).await?];

    eprintln!("  long outbox: loading {rows} published rows");
    let mut loaded = 0;
    while loaded < rows {
        let n = (rows - loaded).min(1_000_000);
        origin
            .execute(
                "INSERT INTO relay.outbox (topic, key, payload, published_at, kafka_partition, kafka_offset)
                 SELECT $1, 'key-' || (i % 1000), decode(repeat(md5(i::text), 8), 'hex'), now(), 0, i
                 FROM generate_series($2::bigint, $3::bigint) AS i",
                &[&topic, &(loaded + 1), &(loaded + n)],
            )
            .await?;
        loaded += n;
    }
    // What autovacuum does after a bulk insert (insert threshold), done now rather than waited for.
    origin.batch_execute("VACUUM (ANALYZE) relay.outbox").await?;
    points.push(point(&origin, &topic, "published rows loaded", rows).await?);

    eprintln!("  long outbox: {passing} messages through the poller with a snapshot held open");
    let holder = connect(&stack.url(DB)).await?;
    holder.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1").await?;
    origin
        .execute(
            "INSERT INTO relay.outbox (topic, key, payload)
             SELECT $1, 'key-' || (i % 1000), decode(repeat(md5(i::text), 8), 'hex')
             FROM generate_series(1, $2::bigint) AS i",
            &[&topic, &passing],
        )
        .await?;
    let poller = stack.poller(DB, &topic)?;
    let published = "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL";
    // The marker rows of `prepare` and each point's marked batch are published too.
    let expected: i64 = origin.query_one("SELECT count(*) FROM relay.outbox", &[]).await?.get(0);
    wait_for_count(&origin, published, expected, Duration::from_secs(600)).await?;
    poller.stop().await?;
    let total = rows + passing;
    points.push(empty(&origin, &topic, "snapshot still open", total).await?);
    holder.batch_execute("COMMIT").await?;
    points.push(empty(&origin, &topic, "snapshot closed, first scan", total).await?);
    points.push(empty(&origin, &topic, "snapshot closed, next scan", total).await?);
    origin.batch_execute("VACUUM relay.outbox").await?;
    points.push(empty(&origin, &topic, "after VACUUM with the table's settings", total).await?);
    origin.batch_execute("VACUUM (INDEX_CLEANUP ON) relay.outbox").await?;
    points.push(empty(&origin, &topic, "after VACUUM (INDEX_CLEANUP ON)", total).await?);
    drop((origin, holder));
    stack.drop_databases(&[DB]).await?;
    Ok(LongOutbox { published_rows: rows, snapshot_messages: passing, points })
}

/// The poller's statements, prepared under names for EXPLAIN ... EXECUTE.
async fn prepare(origin: &Client, _topic: &str) -> anyhow::Result<()> {
    use relay_poller::statements::*;
    origin
        .batch_execute(&format!(
            "SET plan_cache_mode = force_custom_plan;
             PREPARE scan AS {FETCH_PENDING};
             PREPARE mark AS {MARK_PUBLISHED};"
        ))
        .await?;
    Ok(())
}

/// Scan with 1,000 pending rows, mark them, scan with none pending.
async fn point(origin: &Client, topic: &str, state: &str, published_rows: i64) -> anyhow::Result<Point> {
    origin
        .execute(
            "INSERT INTO relay.outbox (topic, key, payload)
             SELECT $1, 'key-' || (i % 1000), decode(repeat(md5(i::text), 8), 'hex')
             FROM generate_series(1, $2::bigint) AS i",
            &[&topic, &PENDING],
        )
        .await?;
    let scan = explain(origin, &scan_sql(topic)).await?;
    let ids: Vec<i64> = origin
        .query("SELECT id FROM relay.outbox WHERE published_at IS NULL ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let zeros = vec!["0"; ids.len()].join(",");
    // ids, partitions, offsets, and how long ago each report came (microseconds).
    let mark =
        explain(origin, &format!("EXECUTE mark('{{{list}}}', '{{{zeros}}}', '{{{list}}}', '{{{zeros}}}')"))
            .await?;
    let empty_scan = explain(origin, &scan_sql(topic)).await?;
    Ok(Point { state: state.into(), published_rows, scan: Some(scan), mark: Some(mark), empty_scan })
}

async fn empty(origin: &Client, topic: &str, state: &str, published_rows: i64) -> anyhow::Result<Point> {
    let empty_scan = explain(origin, &scan_sql(topic)).await?;
    Ok(Point { state: state.into(), published_rows, scan: None, mark: None, empty_scan })
}

fn scan_sql(topic: &str) -> String {
    format!("EXECUTE scan('{{{topic}}}', {PENDING}, 0, '{{}}', true, '{{}}', '{{}}', '{{}}')")
}

/// Runs `statement` under `EXPLAIN (ANALYZE, BUFFERS)`; its time and shared buffers.
async fn explain(client: &Client, statement: &str) -> anyhow::Result<Cost> {
    let row = client.query_one(&format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}"), &[]).await?;
    let plan: serde_json::Value = row.get(0);
    let top = &plan[0];
    let node = &top["Plan"];
    let blocks = |k: &str| node[k].as_i64().unwrap_or(0);
    Ok(Cost {
        ms: top["Execution Time"].as_f64().unwrap_or(f64::NAN),
        buffers: blocks("Shared Hit Blocks") + blocks("Shared Read Blocks"),
    })
}

/// The Markdown table.
pub fn render(out: &mut String, r: &LongOutbox) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n### Long-lived outbox: the poller's statements with {} published rows kept, and {} messages passing under an open snapshot\n",
        r.published_rows, r.snapshot_messages
    );
    let _ = writeln!(
        out,
        "| state | published rows | scan of {PENDING} (ms / buffers) | mark of {PENDING} (ms / buffers) | empty scan (ms / buffers) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let cost = |c: Option<Cost>| c.map_or("".to_string(), |c| format!("{:.2} / {}", c.ms, c.buffers));
    for p in &r.points {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            p.state,
            p.published_rows,
            cost(p.scan),
            cost(p.mark),
            cost(Some(p.empty_scan))
        );
    }
}
