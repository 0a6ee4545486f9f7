//! The reconciler's validated settings, read through relay-config's [`Reader`] like every other
//! Relay service: variable names are constants ([`crate::names`]), values typed, the environment
//! injected, and every problem reported in one run. Flags given on the command line stand for
//! their variables ([`Args`]); database URLs are secrets and never printed.
use std::{collections::BTreeMap, net::SocketAddr, str::FromStr, time::Duration};

use relay_config::{ConfigError, DatabaseUrl, Environment, Reader};
use relay_db::Actor;
use uuid::Uuid;

use crate::{
    args::{flag_of, names, CommandLineOverEnv},
    databases, Args, Command,
};

/// Output format of one-shot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl FromStr for Format {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            _ => Err(()),
        }
    }
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

/// Validated settings. Every duration is measured on the databases' clocks, never this host's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Outboxes by source name; no name and no database appears twice.
    pub outboxes: BTreeMap<String, DatabaseUrl>,
    /// Inboxes in the order given; no name appears twice.
    pub inboxes: Vec<Inbox>,
    pub grace: Duration,
    pub stuck: Duration,
    pub settle: Duration,
    /// Service mode: how often a pass re-reads every range, verified or not.
    pub full_pass: Duration,
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
    /// `NO_COLOR` is set: the progress bar is drawn without colours.
    pub no_color: bool,
}

/// With `--repair --execute`: who acts (`--operator`, else `RELAY_OPERATOR`) and why
/// (`--reason`), both required for the audit trail and reported together when missing.
fn read_actor(reader: &mut Reader<'_>, args: &Args) -> Option<Actor> {
    let from_env = reader.env().get(relay_db::audit::OPERATOR_VARIABLE);
    let operator = relay_db::audit::non_blank(args.operator.as_deref().or(from_env.as_deref()));
    let reason = relay_db::audit::non_blank(args.reason.as_deref());
    if !args.execute {
        return None;
    }
    if operator.is_none() {
        reader.problem(
            &format!("--operator / {}", relay_db::audit::OPERATOR_VARIABLE),
            "is required with --repair --execute: who acts, for the audit trail",
        );
    }
    if reason.is_none() {
        reader.problem("--reason", "is required with --repair --execute: why, for the audit trail");
    }
    Some(Actor { operator: operator?, reason: reason? })
}

/// A week, the longest age setting accepted.
const WEEK_SECS: u64 = 7 * 24 * 3600;

impl Config {
    /// Reads every setting from `args` (flags win) and `env`, reporting every problem at once:
    /// a problem names the flag when the value came from the command line, else the variable.
    pub fn read(args: Args, env: &dyn Environment) -> Result<Self, ConfigError> {
        let overlay = CommandLineOverEnv { given: args.as_variables(), env };
        let mut reader = Reader::new(&overlay);
        let secs = |reader: &mut Reader<'_>, name: &str, default: u64, min: u64, max: u64| {
            Duration::from_secs(reader.number(name, default, min, max))
        };
        let (outboxes, inboxes) = databases::read(&mut reader);
        let grace = secs(&mut reader, names::GRACE_SECS, 60, 0, WEEK_SECS);
        let stuck = secs(&mut reader, names::STUCK_SECS, 300, 0, WEEK_SECS);
        let unprocessed = secs(&mut reader, names::UNPROCESSED_SECS, 300, 0, WEEK_SECS);
        let bucket_size = reader.number(names::BUCKET_SIZE, 10_000, 1, 100_000_000) as i64;
        let max_ids = reader.number(names::MAX_IDS, 1_000, 1, 1_000_000) as i64;
        let format = reader.parsed(names::FORMAT, Format::Table, "table or json");
        let serve = reader.flag(names::SERVE, false);
        let interval = secs(&mut reader, names::INTERVAL_SECS, 60, 1, 24 * 3600);
        let settle = secs(&mut reader, names::SETTLE_SECS, 3_600, 0, 52 * WEEK_SECS);
        let full_pass = secs(&mut reader, names::FULL_PASS_SECS, 24 * 3600, 0, 52 * WEEK_SECS);
        let metrics_addr =
            reader.parsed(names::METRICS_ADDR, SocketAddr::from(([0, 0, 0, 0], 9464)), "an ip:port address");
        let no_color = reader.optional(names::NO_COLOR).is_some();
        let actor = read_actor(&mut reader, &args);
        reader.reject_unknown(names::PREFIX, names::ALL, |_| false);
        if let Err(ConfigError(mut problems)) = reader.finish() {
            for problem in &mut problems {
                if overlay.given.contains_key(problem.variable.as_str()) {
                    problem.variable = flag_of(&problem.variable).unwrap_or_else(|| problem.variable.clone());
                }
            }
            return Err(ConfigError(problems));
        }
        Ok(Self {
            outboxes,
            inboxes,
            grace,
            stuck,
            settle,
            full_pass,
            bucket_size,
            max_ids,
            format,
            serve,
            interval,
            metrics_addr,
            repair: args.repair,
            execute: args.execute,
            actor,
            unprocessed,
            trace: args.command.map(|Command::Trace(t)| match (t.message_id, t.topic, t.key) {
                (Some(id), _, _) => TraceQuery::Message(id),
                (None, topic, key) => TraceQuery::Key {
                    topic: topic.unwrap_or_default(),
                    key: key.unwrap_or_default(),
                    limit: t.limit,
                },
            }),
            no_color,
        })
    }

    /// [`Args::parse_from_argv`] then [`Config::read`]: the outer error is clap's (a command line
    /// it refuses), the inner one every bad setting.
    pub fn from_env<I, T>(env: &dyn Environment, argv: I) -> Result<Result<Self, ConfigError>, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Ok(Self::read(Args::parse_from_argv(argv)?, env))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
