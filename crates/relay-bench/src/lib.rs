//! `make bench`: Relay's throughput, latency and memory, side by side with the machine's ceiling,
//! and the receiving side's processing beside a bare SKIP LOCKED loop.
//!
//! Runs the real release binaries against the same PostgreSQL and broker as the ceilings, and
//! writes `results.md` and `results.json` to `--out-dir`.
#![forbid(unsafe_code)]

mod ceiling;
mod ceilings;
mod long_outbox;
mod memory;
mod peers;
mod processing;
mod scenarios;
mod stack;

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use clap::Parser;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "relay-bench",
    about = "Relay benchmarks: drain, steady latency, memory, processing, ceilings"
)]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: String,
    /// PostgreSQL server, without a database name.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// Directory holding outbox-poller and inbox-consumer.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    #[arg(long, default_value = ".stack/bench")]
    out_dir: PathBuf,
    #[arg(long, default_value_t = 200_000)]
    drain_messages: i64,
    #[arg(long, default_value_t = 1_000_000)]
    memory_messages: i64,
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 5_000, 10_000])]
    steady_rates: Vec<u64>,
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
    #[arg(long, default_value_t = 200_000)]
    ceiling_messages: usize,
    /// Messages per processing run (one run per worker count, relay and bare loop each).
    #[arg(long, default_value_t = 10_000)]
    processing_messages: i64,
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 8])]
    processing_workers: Vec<usize>,
    /// Scales the memory-by-payload-size backlogs (20,000 × 1 KiB, 2,000 × 100 KiB, 300 × 1 MiB).
    #[arg(long, default_value_t = 1.0)]
    memory_scale: f64,
    /// Published rows kept in the long-lived outbox scenario (`make bench-long`: 10,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    long_rows: i64,
    /// Messages passing through the poller while a snapshot is held open.
    #[arg(long, default_value_t = 40_000)]
    long_passing: i64,
    /// Messages for each peer (installed by scripts/bench.sh; see `peers`).
    #[arg(long, default_value_t = 5_000)]
    peer_messages: i64,
    /// Run only these of the scenarios: drain (with its SQL-alone ceiling and the peers), sizes
    /// (memory by payload size), long (the long-lived outbox); all of them when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Results {
    ceilings: ceilings::Ceilings,
    drain: scenarios::Drain,
    memory: scenarios::Drain,
    steady: Vec<scenarios::Steady>,
    processing: processing::Processing,
    /// The drain's database work by SQL alone, in the same run.
    sql_alone: Option<ceiling::SqlAlone>,
    memory_by_size: Vec<memory::BySize>,
    long_outbox: Option<long_outbox::LongOutbox>,
    peers: Vec<peers::Peer>,
}

/// Runs every benchmark and prints the Markdown report.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out_dir)?;
    let stack = stack::Stack {
        brokers: args.brokers.clone(),
        pg: args.pg.clone(),
        bin_dir: args.bin_dir.clone(),
        out_dir: args.out_dir.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if !args.only.is_empty() {
        let markdown = runtime.block_on(only(&stack, &args))?;
        std::fs::write(args.out_dir.join("results-only.md"), &markdown)?;
        print!("{markdown}");
        return Ok(());
    }
    let results = runtime.block_on(async {
        eprintln!("ceilings ({} records)", args.ceiling_messages);
        let ceilings = ceilings::measure(&stack, args.ceiling_messages).await?;
        // Steady first, on a quiet database server; the big drains leave vacuum work behind.
        let mut steady = Vec::new();
        for rate in &args.steady_rates {
            eprintln!("steady {rate} msg/s for {} s", args.steady_secs);
            steady.push(scenarios::steady(&stack, *rate, Duration::from_secs(args.steady_secs)).await?);
        }
        eprintln!("processing ({} messages per run)", args.processing_messages);
        let processing =
            processing::measure(&stack, args.processing_messages, &args.processing_workers).await?;
        eprintln!("drain ({} messages, two inboxes)", args.drain_messages);
        let drain = scenarios::drain(&stack, "drain", args.drain_messages).await?;
        eprintln!("drain's database work by SQL alone ({} messages)", args.drain_messages);
        let sql_alone =
            Some(ceiling::measure(&stack, args.drain_messages, outbox_batch(), INBOX_BATCH).await?);
        eprintln!("peers ({} messages each)", args.peer_messages);
        let peers = peers::measure(&stack, args.peer_messages).await?;
        eprintln!("memory (draining {} messages)", args.memory_messages);
        let memory = scenarios::drain(&stack, "memory", args.memory_messages).await?;
        eprintln!("memory by payload size");
        let memory_by_size = memory::measure(&stack, args.memory_scale).await?;
        eprintln!("long-lived outbox ({} published rows)", args.long_rows);
        let long_outbox = Some(long_outbox::measure(&stack, args.long_rows, args.long_passing).await?);
        anyhow::Ok(Results {
            ceilings,
            drain,
            memory,
            steady,
            processing,
            sql_alone,
            memory_by_size,
            long_outbox,
            peers,
        })
    })?;
    let markdown = render(&results);
    std::fs::write(args.out_dir.join("results.md"), &markdown)?;
    std::fs::write(args.out_dir.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    print!("{markdown}");
    Ok(())
}

/// The poller's batch in the drain (the bench's `OUTBOX_BATCH_SIZE`).
fn outbox_batch() -> i64 {
    std::env::var("BENCH_OUTBOX_BATCH_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000)
}

/// The consumers' batch in the drain (the bench's `INBOX_BATCH_SIZE`).
const INBOX_BATCH: usize = 2_000;

/// `--only`: the chosen scenarios among drain (with its SQL-alone ceiling), sizes and long.
async fn only(stack: &stack::Stack, args: &Args) -> anyhow::Result<String> {
    let mut out = String::new();
    let chosen = |name: &str| args.only.iter().any(|o| o == name);
    if chosen("drain") {
        eprintln!("drain ({} messages, two inboxes)", args.drain_messages);
        let drain = scenarios::drain(stack, "drain", args.drain_messages).await?;
        eprintln!("drain's database work by SQL alone");
        let sql = ceiling::measure(stack, args.drain_messages, outbox_batch(), INBOX_BATCH).await?;
        ceiling::render(&mut out, &drain, &sql);
        eprintln!("peers ({} messages each)", args.peer_messages);
        let peers = peers::measure(stack, args.peer_messages).await?;
        peers::render(&mut out, drain.publish_per_sec, drain.messages, &peers);
    }
    if chosen("sizes") {
        eprintln!("memory by payload size");
        memory::render(&mut out, &memory::measure(stack, args.memory_scale).await?);
    }
    if chosen("long") {
        eprintln!("long-lived outbox ({} published rows)", args.long_rows);
        long_outbox::render(&mut out, &long_outbox::measure(stack, args.long_rows, args.long_passing).await?);
    }
    Ok(out)
}

fn render(r: &Results) -> String {
    let c = &r.ceilings;
    let d = &r.drain;
    let slowest_consumer = d.consume_per_sec.iter().copied().fold(f64::INFINITY, f64::min);
    let consume_ceiling = c.consume_per_sec.min(c.insert_per_sec);
    let pipeline_ceiling = c.produce_per_sec.min(consume_ceiling);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Drain: {} messages of 128 B over 1,000 keys, fanned out to two inboxes\n",
        d.messages
    );
    let _ = writeln!(out, "| stage | relay (msg/s) | ceiling (msg/s) | relay / ceiling |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let row = |out: &mut String, stage: &str, relay: f64, ceiling: f64| {
        let _ = writeln!(out, "| {stage} | {relay:.0} | {ceiling:.0} | {:.0}% |", 100.0 * relay / ceiling);
    };
    row(&mut out, "outbox → broker (poller vs raw produce)", d.publish_per_sec, c.produce_per_sec);
    row(
        &mut out,
        "broker → inbox, slower inbox (consumer vs min(raw consume, raw insert))",
        slowest_consumer,
        consume_ceiling,
    );
    row(&mut out, "end to end, both inboxes complete", d.end_to_end_per_sec, pipeline_ceiling);
    let _ = writeln!(
        out,
        "\nCeilings: raw produce {:.0}/s, raw consume {:.0}/s, raw batched insert {:.0}/s ({} records).\n",
        c.produce_per_sec, c.consume_per_sec, c.insert_per_sec, c.messages
    );
    let _ = writeln!(out, "### Steady offered rate: latency from enqueue (ms)\n");
    let _ = writeln!(
        out,
        "| offered (msg/s) | achieved (msg/s) | publish p50 | p99 | p99.9 | inbox p50 | p99 | p99.9 |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &r.steady {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.offered_per_sec,
            s.achieved_per_sec,
            s.publish_ms[0],
            s.publish_ms[1],
            s.publish_ms[2],
            s.inbox_ms[0],
            s.inbox_ms[1],
            s.inbox_ms[2]
        );
    }
    let m = &r.memory;
    let _ = writeln!(out, "\n### Memory: peak RSS while draining {} messages\n", m.messages);
    let _ = writeln!(out, "| service | peak RSS (MiB) |\n|---|---:|");
    let _ = writeln!(out, "| outbox-poller | {:.1} |", m.poller_peak_rss_mib);
    for (i, rss) in m.consumer_peak_rss_mib.iter().enumerate() {
        let _ = writeln!(out, "| inbox-consumer {} | {rss:.1} |", ["a", "b"][i.min(1)]);
    }
    let _ = writeln!(out, "\n(1M drain: {:.0} msg/s end to end.)", m.end_to_end_per_sec);
    if let Some(sql) = &r.sql_alone {
        ceiling::render(&mut out, &r.drain, sql);
    }
    peers::render(&mut out, r.drain.publish_per_sec, r.drain.messages, &r.peers);
    memory::render(&mut out, &r.memory_by_size);
    if let Some(long) = &r.long_outbox {
        long_outbox::render(&mut out, long);
    }
    let p = &r.processing;
    let _ = writeln!(
        out,
        "\n### Processing: {} inbox messages over {} keys, empty handler, one message per transaction\n",
        p.messages, p.keys
    );
    let _ = writeln!(
        out,
        "| workers | relay-processing (msg/s) | bare SKIP LOCKED loop (msg/s) | relay / bare |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|");
    for run in &p.runs {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0}% |",
            run.workers,
            run.relay_per_sec,
            run.bare_per_sec,
            100.0 * run.relay_per_sec / run.bare_per_sec
        );
    }
    out
}
