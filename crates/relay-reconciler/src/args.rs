//! The reconciler's command line. Each setting flag stands for one variable ([`names`]): given
//! on the command line, it replaces that variable (and its `_FILE` form). Values stay text here;
//! [`crate::Config::read`] parses flags and variables alike through relay-config's reader, so a
//! bad flag is reported together with every other problem instead of stopping the run alone.
use std::{collections::BTreeMap, ffi::OsString};

use clap::{CommandFactory, FromArgMatches};
use relay_config::Environment;
use uuid::Uuid;

/// The reconciler's variable names, one place for the code, the help and the README.
pub mod names {
    /// The prefix of every reconciler variable; other names under it are reported as typos.
    pub const PREFIX: &str = "RECONCILE_";
    /// `SOURCE=URL` entries separated by spaces or newlines; secret.
    pub const OUTBOXES: &str = "RECONCILE_OUTBOXES";
    /// A file holding what [`OUTBOXES`] would (one `SOURCE=URL` per line); secret.
    pub const OUTBOXES_FILE: &str = "RECONCILE_OUTBOXES_FILE";
    /// `NAME=URL` entries separated by spaces or newlines; secret.
    pub const INBOXES: &str = "RECONCILE_INBOXES";
    /// A file holding what [`INBOXES`] would (one `NAME=URL` per line); secret.
    pub const INBOXES_FILE: &str = "RECONCILE_INBOXES_FILE";
    pub const SUBSCRIPTIONS: &str = "RECONCILE_SUBSCRIPTIONS";
    pub const GRACE_SECS: &str = "RECONCILE_GRACE_SECS";
    pub const STUCK_SECS: &str = "RECONCILE_STUCK_SECS";
    pub const UNPROCESSED_SECS: &str = "RECONCILE_UNPROCESSED_SECS";
    pub const BUCKET_SIZE: &str = "RECONCILE_BUCKET_SIZE";
    pub const MAX_IDS: &str = "RECONCILE_MAX_IDS";
    pub const FORMAT: &str = "RECONCILE_FORMAT";
    pub const SERVE: &str = "RECONCILE_SERVE";
    pub const INTERVAL_SECS: &str = "RECONCILE_INTERVAL_SECS";
    pub const SETTLE_SECS: &str = "RECONCILE_SETTLE_SECS";
    pub const FULL_PASS_SECS: &str = "RECONCILE_FULL_PASS_SECS";
    pub const METRICS_ADDR: &str = "RECONCILE_METRICS_ADDR";
    /// Set and not empty: the progress bar is drawn without colours (<https://no-color.org>).
    pub const NO_COLOR: &str = "NO_COLOR";

    /// Every `RECONCILE_*` variable the reconciler reads.
    pub const ALL: &[&str] = &[
        OUTBOXES,
        OUTBOXES_FILE,
        INBOXES,
        INBOXES_FILE,
        SUBSCRIPTIONS,
        GRACE_SECS,
        STUCK_SECS,
        UNPROCESSED_SECS,
        BUCKET_SIZE,
        MAX_IDS,
        FORMAT,
        SERVE,
        INTERVAL_SECS,
        SETTLE_SECS,
        FULL_PASS_SECS,
        METRICS_ADDR,
    ];
}

/// Each setting flag (its long name) and the variable it stands for.
const FLAGS: &[(&str, &str)] = &[
    ("outbox", names::OUTBOXES),
    ("inbox", names::INBOXES),
    ("subscription", names::SUBSCRIPTIONS),
    ("grace-secs", names::GRACE_SECS),
    ("stuck-secs", names::STUCK_SECS),
    ("unprocessed-secs", names::UNPROCESSED_SECS),
    ("bucket-size", names::BUCKET_SIZE),
    ("max-ids", names::MAX_IDS),
    ("format", names::FORMAT),
    ("serve", names::SERVE),
    ("interval-secs", names::INTERVAL_SECS),
    ("settle-secs", names::SETTLE_SECS),
    ("full-pass-secs", names::FULL_PASS_SECS),
    ("metrics-addr", names::METRICS_ADDR),
];

/// `reconciler` command line. Every setting flag has a variable (shown in `--help`); the flag
/// wins when both are given.
#[derive(Debug, clap::Parser)]
#[command(
    name = "reconciler",
    version,
    about = "Compare every outbox with every inbox; report and re-drive what is missing",
    after_help = "Logging: LOG_FORMAT (text or json), LOG_REPEAT_SUMMARY_SECS, NO_COLOR, RUST_LOG.\n\
                  Exit codes: 0 clean; 1 discrepancies found (trace: the message was found nowhere); 2 could not run."
)]
pub struct Args {
    /// An outbox as SOURCE=DATABASE_URL, SOURCE being its OUTBOX_SOURCE. Repeatable. The
    /// variable's entries may instead be read from the file RECONCILE_OUTBOXES_FILE names.
    #[arg(long = "outbox", value_name = "SOURCE=URL", global = true)]
    pub outboxes: Vec<String>,
    /// An inbox as NAME=DATABASE_URL, NAME being its INBOX_NAME. Repeatable. The variable's
    /// entries may instead be read from the file RECONCILE_INBOXES_FILE names.
    #[arg(long = "inbox", value_name = "NAME=URL", global = true)]
    pub inboxes: Vec<String>,
    /// The topics an inbox subscribes to, as NAME=TOPIC[,TOPIC...]. One per inbox.
    #[arg(long = "subscription", value_name = "NAME=TOPICS", global = true)]
    pub subscriptions: Vec<String>,
    /// Messages younger than this (by their database's clock) are in flight, not missing [default: 60].
    #[arg(long, value_name = "SECS")]
    pub grace_secs: Option<String>,
    /// Outbox rows unpublished for longer than this are reported stuck [default: 300].
    #[arg(long, value_name = "SECS")]
    pub stuck_secs: Option<String>,
    /// In inboxes with processing enabled, messages stored longer ago than this and not
    /// processed yet are reported unprocessed (parked ones always are) [default: 300].
    #[arg(long, value_name = "SECS")]
    pub unprocessed_secs: Option<String>,
    /// Outbox ids per bucket; only buckets whose count or hash differ are compared row by row
    /// [default: 10000].
    #[arg(long, value_name = "IDS")]
    pub bucket_size: Option<String>,
    /// The most message ids listed per finding (counts are always complete) [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_ids: Option<String>,
    /// table or json [default: table].
    #[arg(long, global = true)]
    pub format: Option<String>,
    /// Run as a service: reconcile every interval, log findings, serve metrics.
    #[arg(long)]
    pub serve: bool,
    /// Service mode: seconds between runs [default: 60].
    #[arg(long, value_name = "SECS")]
    pub interval_secs: Option<String>,
    /// Service mode: buckets whose rows are all older than this are verified once, not every
    /// cycle [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub settle_secs: Option<String>,
    /// Service mode: this often a pass re-reads every range, verified or not, so a change below
    /// a verified range (an inbox row deleted by hand) is found too; 0: every pass [default: 86400].
    #[arg(long, value_name = "SECS")]
    pub full_pass_secs: Option<String>,
    /// Service mode: where Prometheus metrics are served [default: 0.0.0.0:9464].
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_addr: Option<String>,
    /// Re-publish missing messages from their outbox. A dry run unless --execute is given.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: really re-publish (needs --operator and --reason, for the audit trail).
    #[arg(long, requires = "repair")]
    pub execute: bool,
    /// With --repair --execute: who acts, recorded in each outbox's relay.operator_audit
    /// [variable: RELAY_OPERATOR].
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// With --repair --execute: why, recorded in each outbox's relay.operator_audit.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of a reconciliation.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Where is my message? Follows one message, or the newest messages of one key, through
    /// every configured outbox and inbox: enqueued, published (partition, offset) or parked,
    /// stored, dead-lettered, processed, parked or skipped. Exit 0 found, 1 found nowhere.
    Trace(TraceArgs),
}

/// `reconciler trace` arguments: a message id, or a topic and a key.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// The message id (relay.enqueue's result, the record's relay-message-id header).
    #[arg(long, conflicts_with_all = ["topic", "key"], required_unless_present = "topic")]
    pub message_id: Option<Uuid>,
    /// With --key: every message of this topic and key (newest first, up to --limit).
    #[arg(long, requires = "key")]
    pub topic: Option<String>,
    #[arg(long, requires = "topic")]
    pub key: Option<String>,
    /// With --topic and --key: the most messages shown.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: i64,
}

impl Args {
    /// Parses `argv` (program name first). Errors: a command line clap refuses (an unknown flag,
    /// a missing value), with clap's usage message; setting values are checked later.
    pub fn parse_from_argv<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut matches = Self::command().mut_args(with_variable_in_help).try_get_matches_from(argv)?;
        Self::from_arg_matches_mut(&mut matches)
    }

    /// The setting flags given, as the variables they stand for (repeated flags joined by newlines).
    pub(crate) fn as_variables(&self) -> BTreeMap<&'static str, String> {
        let mut given = BTreeMap::new();
        let lists = [
            (names::OUTBOXES, &self.outboxes),
            (names::INBOXES, &self.inboxes),
            (names::SUBSCRIPTIONS, &self.subscriptions),
        ];
        for (variable, values) in lists {
            if !values.is_empty() {
                given.insert(variable, values.join("\n"));
            }
        }
        let values = [
            (names::GRACE_SECS, &self.grace_secs),
            (names::STUCK_SECS, &self.stuck_secs),
            (names::UNPROCESSED_SECS, &self.unprocessed_secs),
            (names::BUCKET_SIZE, &self.bucket_size),
            (names::MAX_IDS, &self.max_ids),
            (names::FORMAT, &self.format),
            (names::INTERVAL_SECS, &self.interval_secs),
            (names::SETTLE_SECS, &self.settle_secs),
            (names::FULL_PASS_SECS, &self.full_pass_secs),
            (names::METRICS_ADDR, &self.metrics_addr),
        ];
        for (variable, value) in values {
            if let Some(value) = value {
                given.insert(variable, value.clone());
            }
        }
        if self.serve {
            given.insert(names::SERVE, "true".into());
        }
        given
    }
}

/// The flag (`--grace-secs`) that stands for `variable`.
pub(crate) fn flag_of(variable: &str) -> Option<String> {
    FLAGS.iter().find(|(_, v)| *v == variable).map(|(flag, _)| format!("--{flag}"))
}

/// `--help` names each flag's variable, as clap's own `env` attribute would.
fn with_variable_in_help(arg: clap::Arg) -> clap::Arg {
    let Some((_, variable)) = FLAGS.iter().find(|(flag, _)| arg.get_long() == Some(flag)) else {
        return arg;
    };
    let help = arg.get_help().map(|h| format!("{h} ")).unwrap_or_default();
    arg.help(format!("{help}[env: {variable}]"))
}

/// The environment as the reconciler reads it: a flag given on the command line replaces its
/// variable and hides that variable's `_FILE` form, so the command line always wins.
pub(crate) struct CommandLineOverEnv<'e> {
    pub given: BTreeMap<&'static str, String>,
    pub env: &'e dyn Environment,
}

impl CommandLineOverEnv<'_> {
    fn hidden(&self, name: &str) -> bool {
        name.strip_suffix("_FILE").is_some_and(|base| self.given.contains_key(base))
    }
}

impl Environment for CommandLineOverEnv<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if let Some(value) = self.given.get(name) {
            return Some(value.clone());
        }
        if self.hidden(name) {
            return None;
        }
        self.env.get(name)
    }
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.env.names().into_iter().filter(|n| !self.hidden(n)).collect();
        names.extend(self.given.keys().map(|n| n.to_string()));
        names.sort();
        names.dedup();
        names
    }
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        self.env.read_file(path)
    }
}
