//! The demo's three steps, as a command: `topics`, `generate`, `report`.
//!
//! `generate` plays an origin service: each transaction records a payment and enqueues its
//! message with `relay.enqueue`, so business row and message commit together. `report` then
//! compares the outbox with each inbox and exits 0 only when every message arrived exactly once,
//! byte-equal and in per-key order.
#![forbid(unsafe_code)]

mod generate;
mod report;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "relay-demo", about = "Local demo tools for Relay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create Kafka topics (existing ones are left as they are).
    Topics {
        #[arg(long, env = "KAFKA_BROKERS")]
        brokers: String,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Write payments and their outbox messages, one transaction each.
    Generate(generate::Args),
    /// Wait until every inbox holds every message, then print a table; exit 1 if not.
    Report(report::Args),
}

/// Runs the command line.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Topics { brokers, partitions, topics } => {
                relay_kafka::create_topics(&brokers, &Default::default(), &topics, partitions).await?;
                println!("topics ready: {}", topics.join(", "));
                Ok(())
            }
            Command::Generate(args) => generate::run(args).await,
            Command::Report(args) => {
                let clean = report::run(args).await?;
                if !clean {
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    })
}

/// Connects with a URL given on the command line (the demo's own databases).
async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let url = relay_config::DatabaseUrl::parse(url.to_string().into())
        .map_err(|why| anyhow::anyhow!("database URL {why}"))?;
    Ok(relay_db::connect(&url).await?)
}
