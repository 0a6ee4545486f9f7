//! `relay-chaos`'s command line: the run's size, seed and output, and what it prints.
use std::{path::PathBuf, time::Duration};

use crate::{faults::FaultSettings, report::Report, suite, ChaosError};

/// Exit code of a run that found a problem (lost, duplicated or reordered messages, a reconciler
/// that is not clean, or fewer faults than required).
pub const EXIT_FAILED: i32 = 1;

#[derive(Debug, clap::Parser)]
#[command(
    name = "relay-chaos",
    about = "Relay under faults: killed pollers and consumers, broker and PostgreSQL restarts, cut and slow connections"
)]
pub struct Args {
    /// Messages the workload writes.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Message keys the workload spreads them over.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Faults of each kind to inject.
    #[arg(long, default_value_t = 50)]
    pub faults_per_kind: usize,
    /// Seed of the fault order and durations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where logs, the broker's storage and the report go.
    #[arg(long, default_value = ".stack/chaos")]
    pub out: PathBuf,
    /// Print the report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Quiet time between two faults (after the pipeline caught up), in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub pause_ms: u64,
    /// How long to wait for the pipeline to catch up after a fault before the next one, in seconds.
    #[arg(long, default_value_t = 120)]
    pub recovery_timeout_secs: u64,
    /// How long the pipeline may take to drain after the last fault, in seconds.
    #[arg(long, default_value_t = 600)]
    pub drain_timeout_secs: u64,
    /// Directory of outbox-poller, inbox-consumer and reconciler (default: beside this program).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Runs the suite, prints the report and returns the exit code (0 passed, 1 failed).
pub async fn run(args: Args) -> Result<i32, ChaosError> {
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => crate::services::bin_dir()?,
    };
    let settings = suite::Settings {
        messages: args.messages,
        keys: args.keys,
        faults_per_kind: args.faults_per_kind,
        seed: args.seed,
        partitions: args.partitions,
        out_dir: args.out,
        bin_dir,
        per_tx: crate::workload::DEFAULT_PER_TX,
        writers: 4,
        pause: Duration::from_millis(args.pause_ms),
        recovery_timeout: Duration::from_secs(args.recovery_timeout_secs),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        faults: FaultSettings::default(),
    };
    let report: Report = suite::run(settings).await?;
    if args.json {
        eprintln!("{}", report.markdown());
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| ChaosError::Setup(format!("report JSON: {e}")))?;
        println!("{json}");
    } else {
        println!("{}", report.markdown());
    }
    Ok(if report.passed { 0 } else { EXIT_FAILED })
}
