//! The reconciler's inputs: command-line flags, each with a matching environment variable.
//! Every problem is reported in one run; database URLs are secrets and never printed.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use relay_config::{ConfigError, DatabaseUrl, Problem};
use relay_db::Actor;
use uuid::Uuid;

/// Output format of one-shot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `reconciler` command line. List variables separate entries with spaces or newlines.
#[derive(Debug, clap::Parser)]
#[command(
    name = "reconciler",
    about = "Compare every outbox with every inbox; report and re-drive what is missing",
    after_help = "Exit codes: 0 clean; 1 discrepancies found (trace: the message was found nowhere); 2 could not run."
)]
pub struct Args {
    /// An outbox as SOURCE=DATABASE_URL, SOURCE being its OUTBOX_SOURCE. Repeatable.
    #[arg(
        long = "outbox",
        env = "RECONCILE_OUTBOXES",
        value_delimiter = ' ',
        hide_env_values = true,
        global = true
    )]
    pub outboxes: Vec<String>,
    /// An inbox as NAME=DATABASE_URL, NAME being its INBOX_NAME. Repeatable.
    #[arg(
        long = "inbox",
        env = "RECONCILE_INBOXES",
        value_delimiter = ' ',
        hide_env_values = true,
        global = true
    )]
    pub inboxes: Vec<String>,
    /// The topics an inbox subscribes to, as NAME=TOPIC[,TOPIC...]. One per inbox.
    #[arg(long = "subscription", env = "RECONCILE_SUBSCRIPTIONS", value_delimiter = ' ', global = true)]
    pub subscriptions: Vec<String>,
    /// Messages younger than this are still in flight and not reported missing.
    #[arg(long, env = "RECONCILE_GRACE_SECS", default_value_t = 60)]
    pub grace_secs: u64,
    /// Outbox rows unpublished for longer than this are reported stuck.
    #[arg(long, env = "RECONCILE_STUCK_SECS", default_value_t = 300)]
    pub stuck_secs: u64,
    /// In inboxes with processing enabled, messages stored longer ago than this and not
    /// processed yet are reported unprocessed (parked ones always are).
    #[arg(long, env = "RECONCILE_UNPROCESSED_SECS", default_value_t = 300)]
    pub unprocessed_secs: u64,
    /// Outbox ids per bucket; only buckets whose count or hash differ are compared row by row.
    #[arg(long, env = "RECONCILE_BUCKET_SIZE", default_value_t = 10_000)]
    pub bucket_size: i64,
    /// The most message ids listed per finding (counts are always complete).
    #[arg(long, env = "RECONCILE_MAX_IDS", default_value_t = 1_000)]
    pub max_ids: i64,
    #[arg(long, env = "RECONCILE_FORMAT", value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Run as a service: reconcile every interval, log findings, serve metrics.
    #[arg(long, env = "RECONCILE_SERVE")]
    pub serve: bool,
    #[arg(long, env = "RECONCILE_INTERVAL_SECS", default_value_t = 60)]
    pub interval_secs: u64,
    /// In service mode, buckets whose rows are all older than this are verified once, not every cycle.
    #[arg(long, env = "RECONCILE_SETTLE_SECS", default_value_t = 3_600)]
    pub settle_secs: u64,
    /// Where service mode serves Prometheus metrics.
    #[arg(long, env = "RECONCILE_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: String,
    /// Re-publish missing messages from their outbox. A dry run unless --execute is given.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: really re-publish (needs --operator and --reason, for the audit trail).
    #[arg(long, requires = "repair")]
    pub execute: bool,
    /// With --repair --execute: who acts, recorded in each outbox's relay.operator_audit.
    #[arg(long, env = "RELAY_OPERATOR")]
    pub operator: Option<String>,
    /// With --repair --execute: why, recorded in each outbox's relay.operator_audit.
    #[arg(long)]
    pub reason: Option<String>,
    /// `RECONCILE_*` variables that name no flag (typos); filled by [`Args::from_env`].
    #[arg(skip)]
    pub unknown_variables: Vec<String>,
    /// `RECONCILE_*` variables whose value their flag refuses; filled by [`Args::from_env`].
    #[arg(skip)]
    pub env_problems: Vec<Problem>,
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

/// What `reconciler trace` looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceQuery {
    Message(Uuid),
    Key { topic: String, key: String, limit: i64 },
}

/// One inbox to check.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub name: String,
    pub url: DatabaseUrl,
    pub topics: Vec<String>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Outboxes by source name.
    pub outboxes: BTreeMap<String, DatabaseUrl>,
    pub inboxes: Vec<Inbox>,
    pub grace: Duration,
    pub stuck: Duration,
    pub settle: Duration,
    pub bucket_size: i64,
    pub max_ids: i64,
    pub format: Format,
    pub serve: bool,
    pub interval: Duration,
    pub metrics_addr: SocketAddr,
    pub repair: bool,
    pub execute: bool,
    /// With `execute`: who re-drives and why, for the outboxes' audit trail.
    pub actor: Option<Actor>,
    /// In inboxes with processing enabled: not processed after this long is a finding.
    pub unprocessed: Duration,
    /// `reconciler trace`: follow this message or key instead of reconciling.
    pub trace: Option<TraceQuery>,
}

fn pairs(raw: &[String], flag: &str, problems: &mut Vec<Problem>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in raw.iter().flat_map(|r| r.split_whitespace()) {
        match entry.split_once('=') {
            Some((name, value)) if !name.is_empty() && !value.is_empty() => {
                out.push((name.to_string(), value.to_string()))
            }
            _ => problems.push(Problem {
                variable: flag.into(),
                // Only the part before '=' is shown: the rest may be a URL with a password.
                message: format!("entry {:?} is not NAME=VALUE", entry.split('=').next().unwrap_or("")),
            }),
        }
    }
    out
}

impl Config {
    /// Validates `args`, reporting every problem at once.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let url = |flag: &str, name: &str, raw: String, problems: &mut Vec<Problem>| {
            DatabaseUrl::parse(raw.into())
                .map_err(|why| {
                    problems.push(Problem { variable: flag.into(), message: format!("{name}: URL {why}") })
                })
                .ok()
        };
        let mut outboxes = BTreeMap::new();
        for (source, raw) in pairs(&args.outboxes, "--outbox / RECONCILE_OUTBOXES", &mut problems) {
            if let Some(u) = url("--outbox / RECONCILE_OUTBOXES", &source, raw, &mut problems) {
                outboxes.insert(source, u);
            }
        }
        if outboxes.is_empty() && problems.is_empty() {
            problems.push(Problem {
                variable: "--outbox / RECONCILE_OUTBOXES".into(),
                message: "no outbox given".into(),
            });
        }
        let subscriptions: BTreeMap<String, Vec<String>> =
            pairs(&args.subscriptions, "--subscription / RECONCILE_SUBSCRIPTIONS", &mut problems)
                .into_iter()
                .map(|(name, topics)| {
                    (name, topics.split(',').filter(|t| !t.is_empty()).map(String::from).collect())
                })
                .collect();
        let inbox_pairs = pairs(&args.inboxes, "--inbox / RECONCILE_INBOXES", &mut problems);
        if inbox_pairs.is_empty() {
            problems.push(Problem {
                variable: "--inbox / RECONCILE_INBOXES".into(),
                message: "no inbox given".into(),
            });
        }
        for name in subscriptions.keys().filter(|n| !inbox_pairs.iter().any(|(i, _)| i == *n)) {
            problems.push(Problem {
                variable: "--subscription / RECONCILE_SUBSCRIPTIONS".into(),
                message: format!("subscription for unknown inbox {name}"),
            });
        }
        let mut inboxes = Vec::new();
        for (name, raw) in inbox_pairs {
            let topics = subscriptions.get(&name).cloned().unwrap_or_default();
            if topics.is_empty() {
                problems.push(Problem {
                    variable: "--subscription / RECONCILE_SUBSCRIPTIONS".into(),
                    message: format!("inbox {name} has no subscription (NAME=TOPIC[,TOPIC...])"),
                });
            }
            if let Some(u) = url("--inbox / RECONCILE_INBOXES", &name, raw, &mut problems) {
                inboxes.push(Inbox { name, url: u, topics });
            }
        }
        if args.bucket_size < 1 {
            problems.push(Problem {
                variable: "--bucket-size / RECONCILE_BUCKET_SIZE".into(),
                message: "must be at least 1".into(),
            });
        }
        if args.max_ids < 1 {
            problems.push(Problem {
                variable: "--max-ids / RECONCILE_MAX_IDS".into(),
                message: "must be at least 1".into(),
            });
        }
        let metrics_addr = args.metrics_addr.parse().unwrap_or_else(|_| {
            problems.push(Problem {
                variable: "--metrics-addr / RECONCILE_METRICS_ADDR".into(),
                message: format!("{:?} is not host:port", args.metrics_addr),
            });
            SocketAddr::from(([0, 0, 0, 0], 9464))
        });
        let operator = relay_db::audit::non_blank(args.operator.as_deref());
        let reason = relay_db::audit::non_blank(args.reason.as_deref());
        if args.execute && operator.is_none() {
            problems.push(Problem {
                variable: format!("--operator / {}", relay_db::audit::OPERATOR_VARIABLE),
                message: "is required with --repair --execute: who acts, for the audit trail".into(),
            });
        }
        if args.execute && reason.is_none() {
            problems.push(Problem {
                variable: "--reason".into(),
                message: "is required with --repair --execute: why, for the audit trail".into(),
            });
        }
        let actor = match (args.execute, operator, reason) {
            (true, Some(operator), Some(reason)) => Some(Actor { operator, reason }),
            _ => None,
        };
        problems.extend(args.env_problems.iter().cloned());
        for variable in &args.unknown_variables {
            problems.push(Problem {
                variable: variable.clone(),
                message: "is not a setting this service knows (a typo?)".into(),
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Self {
            outboxes,
            inboxes,
            grace: Duration::from_secs(args.grace_secs),
            stuck: Duration::from_secs(args.stuck_secs),
            settle: Duration::from_secs(args.settle_secs),
            bucket_size: args.bucket_size,
            max_ids: args.max_ids,
            format: args.format,
            serve: args.serve,
            interval: Duration::from_secs(args.interval_secs.max(1)),
            metrics_addr,
            repair: args.repair,
            execute: args.execute,
            actor,
            unprocessed: Duration::from_secs(args.unprocessed_secs),
            trace: args.command.map(|Command::Trace(t)| match (t.message_id, t.topic, t.key) {
                (Some(id), _, _) => TraceQuery::Message(id),
                (None, topic, key) => TraceQuery::Key {
                    topic: topic.unwrap_or_default(),
                    key: key.unwrap_or_default(),
                    limit: t.limit,
                },
            }),
        })
    }
}
