//! `make bench`: Relay's throughput, latency and memory, side by side with the machine's ceiling,
//! and the receiving side's processing beside a bare SKIP LOCKED loop.
//!
//! Runs the real release binaries against the same PostgreSQL and broker as the ceilings, and
//! writes `results.md` and `results.json` to `--out-dir`.
#![forbid(unsafe_code)]

mod ceiling;
mod ceilings;
mod floor;
mod long_outbox;
mod memory;
mod peers;
mod processing;
mod scenarios;
mod stack;
mod steady;

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
    /// Which scenarios to run, for example `--scenarios steady` against another broker
    /// (KAFKA_BROKERS); the others are reported as not run.
    #[arg(long, value_delimiter = ',', default_values_t = Scenario::ALL.map(String::from))]
    scenarios: Vec<String>,
}

/// The scenarios `--scenarios` selects from.
struct Scenario;

impl Scenario {
    /// `drain` includes its SQL-alone ceiling; `peers` needs `drain` for the ratio; `sizes` is
    /// memory by payload size; `long` the long-lived outbox.
    const ALL: [&'static str; 8] =
        ["ceilings", "steady", "processing", "drain", "peers", "memory", "sizes", "long"];
}

#[derive(Debug, Serialize)]
struct Results {
    ceilings: Option<ceilings::Ceilings>,
    drain: Option<scenarios::Drain>,
    memory: Option<scenarios::Drain>,
    steady: Vec<steady::Steady>,
    processing: Option<processing::Processing>,
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
    for scenario in &args.scenarios {
        anyhow::ensure!(
            Scenario::ALL.contains(&scenario.as_str()),
            "unknown scenario {scenario}; known: {}",
            Scenario::ALL.join(", ")
        );
    }
    let run = |name: &str| args.scenarios.iter().any(|s| s == name);
    let results = runtime.block_on(async {
        let mut ceilings = None;
        if run("ceilings") {
            eprintln!("ceilings ({} records)", args.ceiling_messages);
            ceilings = Some(ceilings::measure(&stack, args.ceiling_messages).await?);
        }
        // Steady first, on a quiet database server; the big drains leave vacuum work behind.
        let mut steady = Vec::new();
        if run("steady") {
            for rate in &args.steady_rates {
                eprintln!("steady {rate} msg/s for {} s", args.steady_secs);
                steady.push(steady::steady(&stack, *rate, Duration::from_secs(args.steady_secs)).await?);
            }
        }
        let mut processing = None;
        if run("processing") {
            eprintln!("processing ({} messages per run)", args.processing_messages);
            processing =
                Some(processing::measure(&stack, args.processing_messages, &args.processing_workers).await?);
        }
        let (mut drain, mut sql_alone) = (None, None);
        if run("drain") {
            eprintln!("drain ({} messages, two inboxes)", args.drain_messages);
            drain = Some(scenarios::drain(&stack, "drain", args.drain_messages).await?);
            eprintln!("drain's database work by SQL alone ({} messages)", args.drain_messages);
            sql_alone =
                Some(ceiling::measure(&stack, args.drain_messages, outbox_batch(), INBOX_BATCH).await?);
        }
        let mut peers = Vec::new();
        if run("peers") {
            eprintln!("peers ({} messages each)", args.peer_messages);
            peers = peers::measure(&stack, args.peer_messages).await?;
        }
        let mut memory = None;
        if run("memory") {
            eprintln!("memory (draining {} messages)", args.memory_messages);
            memory = Some(scenarios::drain(&stack, "memory", args.memory_messages).await?);
        }
        let mut memory_by_size = Vec::new();
        if run("sizes") {
            eprintln!("memory by payload size");
            memory_by_size = memory::measure(&stack, args.memory_scale).await?;
        }
        let mut long_outbox = None;
        if run("long") {
            eprintln!("long-lived outbox ({} published rows)", args.long_rows);
            long_outbox = Some(long_outbox::measure(&stack, args.long_rows, args.long_passing).await?);
        }
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

fn render(r: &Results) -> String {
    let mut out = String::new();
    if let (Some(c), Some(d)) = (&r.ceilings, &r.drain) {
        render_drain(&mut out, c, d);
    }
    if !r.steady.is_empty() {
        render_steady(&mut out, &r.steady);
    }
    if let Some(m) = &r.memory {
        let _ = writeln!(out, "\n### Memory: peak RSS while draining {} messages\n", m.messages);
        let _ = writeln!(out, "| service | peak RSS (MiB) |\n|---|---:|");
        let _ = writeln!(out, "| outbox-poller | {:.1} |", m.poller_peak_rss_mib);
        for (i, rss) in m.consumer_peak_rss_mib.iter().enumerate() {
            let _ = writeln!(out, "| inbox-consumer {} | {rss:.1} |", ["a", "b"][i.min(1)]);
        }
        let _ = writeln!(out, "\n(1M drain: {:.0} msg/s end to end.)", m.end_to_end_per_sec);
    }
    if let (Some(d), Some(sql)) = (&r.drain, &r.sql_alone) {
        ceiling::render(&mut out, d, sql);
    }
    if let Some(d) = &r.drain {
        peers::render(&mut out, d.publish_per_sec, d.messages, &r.peers);
    }
    if !r.memory_by_size.is_empty() {
        memory::render(&mut out, &r.memory_by_size);
    }
    if let Some(long) = &r.long_outbox {
        long_outbox::render(&mut out, long);
    }
    if let Some(p) = &r.processing {
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
    }
    out
}

fn render_drain(out: &mut String, c: &ceilings::Ceilings, d: &scenarios::Drain) {
    let slowest_consumer = d.consume_per_sec.iter().copied().fold(f64::INFINITY, f64::min);
    let consume_ceiling = c.consume_per_sec.min(c.insert_per_sec);
    let pipeline_ceiling = c.produce_per_sec.min(consume_ceiling);
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
    row(out, "outbox → broker (poller vs raw produce)", d.publish_per_sec, c.produce_per_sec);
    row(
        out,
        "broker → inbox, slower inbox (consumer vs min(raw consume, raw insert))",
        slowest_consumer,
        consume_ceiling,
    );
    row(out, "end to end, both inboxes complete", d.end_to_end_per_sec, pipeline_ceiling);
    let _ = writeln!(
        out,
        "\nCeilings: raw produce {:.0}/s, raw consume {:.0}/s, raw batched insert {:.0}/s ({} records).\n",
        c.produce_per_sec, c.consume_per_sec, c.insert_per_sec, c.messages
    );
}

fn render_steady(out: &mut String, runs: &[steady::Steady]) {
    let _ = writeln!(out, "### Steady offered rate: latency from the writer's commit (ms)\n");
    let _ = writeln!(
        out,
        "| offered (msg/s) | achieved (msg/s) | writers | acknowledged p50 | p99 | p99.9 | inbox p50 | p99 | p99.9 |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in runs {
        let (a, i) = (s.stage(steady::COMMIT_TO_ACKED), s.stage(steady::COMMIT_TO_INBOX));
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.offered_per_sec, s.achieved_per_sec, s.writers, a[0], a[1], a[2], i[0], i[1], i[2]
        );
    }
    let _ = writeln!(
        out,
        "\nThe broker's own latency at the same rate, just before (raw rdkafka with the poller's producer \
         settings, a reader with the bench's fetch wait; from handing a record to the producer, ms), \
         beside Relay's from the writer's commit:\n"
    );
    let _ = writeln!(
        out,
        "| offered (msg/s) | broker achieved | broker acknowledged p50 / p99 / p99.9 | broker delivered p50 / p99 / p99.9 | relay acknowledged p50 / p99 / p99.9 | relay stored p50 / p99 / p99.9 |"
    );
    let _ = writeln!(out, "|---:|---:|---|---|---|---|");
    let three = |v: [f64; 3]| format!("{:.1} / {:.1} / {:.1}", v[0], v[1], v[2]);
    for s in runs {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} |",
            s.offered_per_sec,
            s.floor.achieved_per_sec,
            three(s.floor.acknowledged_ms),
            three(s.floor.delivered_ms),
            three(s.stage(steady::COMMIT_TO_ACKED)),
            three(s.stage(steady::COMMIT_TO_INBOX)),
        );
    }
    for s in runs {
        let _ =
            writeln!(out, "\nPer stage at {} msg/s offered ({} messages):\n", s.offered_per_sec, s.messages);
        let _ = writeln!(out, "| stage | samples | p50 (ms) | p99 | p99.9 |\n|---|---:|---:|---:|---:|");
        for stage in &s.stages {
            let [p50, p99, p999] = stage.ms;
            let _ = writeln!(out, "| {} | {} | {p50:.1} | {p99:.1} | {p999:.1} |", stage.name, stage.samples);
        }
    }
}
