//! The `relay-admin` command line (clap derive). The database URL is taken as a secret and only
//! parsed afterwards, so no error message can quote it.
use std::fmt;

use secrecy::SecretString;
use uuid::Uuid;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A command-line value that is never printed (`--database-url`).
#[derive(Clone)]
pub struct Secret(pub(crate) SecretString);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

fn secret(raw: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret(SecretString::from(raw)))
}

fn named(raw: &str) -> Result<String, String> {
    relay_db::audit::non_blank(Some(raw)).ok_or_else(|| "an operator name must not be blank".into())
}

fn reason(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        Err("a reason is required: say why, for the audit trail".into())
    } else {
        Ok(trimmed.to_string())
    }
}

/// `relay-admin` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "relay-admin",
    version,
    about = "Operator commands for parked outbox rows, dead letters and inbox processing",
    after_help = "Commands that change rows are dry runs unless --execute is given, with --operator \
                  (or RELAY_OPERATOR) and --reason; each change writes a row to relay.operator_audit.\n\
                  Exit codes: 0 done; 1 a named id did not match or a re-drive still fails; 2 could not run."
)]
pub struct Args {
    /// PostgreSQL URL of the origin database (parked) or the receiving one (dead-letters);
    /// secret. Without it, DATABASE_URL or the file named by DATABASE_URL_FILE.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret, global = true)]
    pub database_url: Option<Secret>,
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Outbox rows the broker refused for good (relay.outbox.parked_at).
    #[command(subcommand)]
    Parked(Parked),
    /// Records an inbox-consumer could not store (relay.dead_letter).
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Inbox messages a receiving service failed on or parked (relay.claim / relay.failed).
    #[command(subcommand)]
    Processing(Processing),
    /// The operator audit trail (relay.operator_audit) of the database.
    #[command(subcommand)]
    Audit(Audit),
    /// Relay's schema for teams that install it with their own migration tool.
    #[command(subcommand)]
    Schema(SchemaCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum Audit {
    /// Lists audit rows, newest first: when, database role, operator, command, target, reason,
    /// and the changed columns before and after.
    List {
        /// Only rows about this target (an outbox id, a dead-letter id or a message id).
        #[arg(long)]
        target: Option<String>,
        /// Only rows of this command, for example "parked retry".
        #[arg(long)]
        command: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        limit: i64,
    },
}

/// Which of Relay's schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaName {
    /// relay.outbox and relay.enqueue (origin side).
    Outbox,
    /// relay.inbox and relay.dead_letter (receiving side).
    Inbox,
}

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Prints an idempotent install-or-upgrade script that leaves the migration history exactly as
    /// the services write it (needs no database).
    Sql {
        #[arg(long, value_enum)]
        schema: SchemaName,
    },
}

/// Whether a command that changes rows acts, and on whose behalf (the audit trail).
#[derive(Debug, Clone, clap::Args)]
pub struct Act {
    /// Make the change. Without it the command is a dry run: it shows what would change, before
    /// and after, and changes nothing.
    #[arg(long)]
    pub execute: bool,
    /// Who acts, recorded in relay.operator_audit beside the database role; required with
    /// --execute.
    #[arg(long, env = "RELAY_OPERATOR", value_parser = named)]
    pub operator: Option<String>,
    /// Why, recorded in relay.operator_audit; required with --execute.
    #[arg(long, value_parser = reason)]
    pub reason: Option<String>,
}

/// Which rows a command acts on: the listed ids, or every one that qualifies.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// Row ids (repeat the flag or list several after it).
    #[arg(long = "id", value_name = "ID", num_args = 1..)]
    pub ids: Vec<i64>,
    /// Every row that qualifies.
    #[arg(long)]
    pub all: bool,
}

/// Which inbox messages a processing command acts on: the listed ids, or every parked one.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct MessageSelection {
    /// Message ids (repeat the flag or list several after it); parked or failing messages.
    #[arg(long = "message-id", value_name = "ID", num_args = 1..)]
    pub message_ids: Vec<Uuid>,
    /// Every parked message of the inbox (failing ones not yet parked only by id).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Processing {
    /// Lists unprocessed messages that are parked or failed at least once, oldest first, with how
    /// many later messages of their key wait behind them.
    List {
        /// The inbox (its INBOX_NAME).
        #[arg(long)]
        inbox: String,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        limit: i64,
    },
    /// Makes messages due again at once: un-parks them (failed attempts and last error are kept).
    Retry {
        /// The inbox (its INBOX_NAME).
        #[arg(long)]
        inbox: String,
        #[command(flatten)]
        selection: MessageSelection,
        #[command(flatten)]
        act: Act,
    },
    /// Marks messages processed without acting on them, so later messages of their key go on.
    Skip {
        /// The inbox (its INBOX_NAME).
        #[arg(long)]
        inbox: String,
        #[command(flatten)]
        selection: MessageSelection,
        #[command(flatten)]
        act: Act,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum Parked {
    /// Lists parked rows, oldest first; discarded ones only with --include-discarded.
    List {
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        limit: i64,
        #[arg(long)]
        include_discarded: bool,
    },
    /// Un-parks rows so the outbox-poller sends them again (after rows already sent of their key).
    Retry {
        #[command(flatten)]
        selection: Selection,
        /// Only rows of this topic.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        act: Act,
    },
    /// Gives up on rows for good; they stay in the outbox, parked, with the reason.
    Discard {
        #[command(flatten)]
        selection: Selection,
        /// Only rows of this topic.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        act: Act,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeadLetters {
    /// Lists unresolved dead letters of an inbox, oldest first (all with --include-resolved).
    List {
        /// The inbox (its INBOX_NAME).
        #[arg(long)]
        inbox: String,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        limit: i64,
        #[arg(long)]
        include_resolved: bool,
    },
    /// Runs dead letters through the consumer's checks again and stores those that pass.
    Redrive {
        /// The inbox (its INBOX_NAME).
        #[arg(long)]
        inbox: String,
        #[command(flatten)]
        selection: Selection,
        /// The payload limit to check against (one for every topic).
        #[arg(
            long,
            env = "INBOX_MAX_PAYLOAD_BYTES",
            default_value_t = 1 << 20,
            value_parser = clap::value_parser!(u64).range(1..=100 << 20)
        )]
        max_payload_bytes: u64,
        #[command(flatten)]
        act: Act,
    },
    /// Resolves dead letters as discarded; they stay in the table with the reason.
    Discard {
        /// The inbox (its INBOX_NAME).
        #[arg(long)]
        inbox: String,
        #[command(flatten)]
        selection: Selection,
        #[command(flatten)]
        act: Act,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("relay-admin").chain(args.iter().copied()))
    }

    #[test]
    fn takes_ids_repeated_or_listed_and_requires_exactly_one_selection() {
        let args = parse(&["parked", "retry", "--id", "3", "4", "--id", "9"]).expect("valid");
        let Command::Parked(Parked::Retry { selection, .. }) = args.command else { panic!("retry") };
        assert_eq!(selection.ids, vec![3, 4, 9]);
        assert!(!selection.all);
        assert!(parse(&["parked", "retry"]).is_err(), "no selection");
        assert!(parse(&["parked", "retry", "--id", "1", "--all"]).is_err(), "both selections");
    }

    #[test]
    fn reasons_and_operators_must_not_be_blank_and_acting_is_opt_in() {
        assert!(parse(&["dead-letters", "discard", "--inbox", "l", "--all", "--reason", "  "]).is_err());
        assert!(parse(&["parked", "retry", "--all", "--operator", " "]).is_err());
        let args = parse(&["dead-letters", "discard", "--inbox", "l", "--id", "2", "--reason", " test "])
            .expect("valid");
        let Command::DeadLetters(DeadLetters::Discard { act, .. }) = args.command else { panic!() };
        assert_eq!(act.reason.as_deref(), Some("test"));
        assert!(!act.execute, "a dry run unless --execute");
        let args =
            parse(&["parked", "retry", "--all", "--execute", "--operator", "ana", "--reason", "fixed"])
                .expect("valid");
        let Command::Parked(Parked::Retry { act, .. }) = args.command else { panic!() };
        assert!(act.execute);
        assert_eq!(act.operator.as_deref(), Some("ana"));
    }

    #[test]
    fn processing_commands_take_message_ids_or_all_and_skipping_needs_a_reason() {
        let id = "0b6f6f7e-3c1a-4f43-9d55-2f1d64a3a0c2";
        let args = parse(&["processing", "retry", "--inbox", "ledger", "--message-id", id]).expect("valid");
        let Command::Processing(Processing::Retry { selection, .. }) = args.command else { panic!() };
        assert_eq!(selection.message_ids, vec![id.parse::<Uuid>().unwrap()]);
        assert!(parse(&["processing", "retry", "--inbox", "ledger", "--message-id", "42"]).is_err());
        assert!(parse(&["processing", "retry", "--inbox", "ledger"]).is_err(), "no selection");
        assert!(parse(&["processing", "skip", "--inbox", "ledger", "--all", "--reason", "x"]).is_ok());
    }

    #[test]
    fn schema_sql_names_one_schema() {
        let args = parse(&["schema", "sql", "--schema", "inbox"]).expect("valid");
        let Command::Schema(SchemaCommand::Sql { schema }) = args.command else { panic!("schema sql") };
        assert_eq!(schema, SchemaName::Inbox);
        assert!(parse(&["schema", "sql"]).is_err(), "no schema");
        assert!(parse(&["schema", "sql", "--schema", "both"]).is_err(), "unknown schema");
    }

    #[test]
    fn never_shows_the_database_url() {
        let url = "postgres://app:s3cr3t@db/ledger";
        let args = parse(&["--database-url", url, "--format", "json", "parked", "list"]).expect("valid");
        assert!(!format!("{args:?}").contains("s3cr3t"));
        let err = parse(&["--database-url", url, "parked", "list", "--limit", "0"]).expect_err("limit");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
