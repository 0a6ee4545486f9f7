//! relay-admin: what an operator does about messages Relay could not deliver by itself.
//!
//! - `parked`: outbox rows the broker refused for good (too large, unknown topic, not
//!   authorised). List them, retry them once the cause is fixed, or discard them with a reason.
//! - `dead-letters`: records an inbox-consumer could not store (undecodable, unknown envelope
//!   version, oversized, refused by the database). List them, re-drive them through the
//!   consumer's own checks, or discard them with a reason.
//! - `processing`: inbox messages whose receiving service failed on them (`relay.failed`) or
//!   parked them, which holds up the later messages of their key. List them, retry them once
//!   the cause is fixed, or skip them with a reason so the key moves on.
//! - `audit list`: the operator audit trail. Every command that changes rows is a dry run unless
//!   `--execute` is given with `--operator` (or `RELAY_OPERATOR`) and `--reason`, and writes one
//!   `relay.operator_audit` row per changed row in the same transaction as the change.
//! - `schema sql`: the install-or-upgrade script for teams that install Relay's schema with their
//!   own migration tool (see [`schema_sql`]).
//!
//! Nothing is deleted: discarded rows, resolved dead letters and skipped messages stay, with when
//! and why.
//! Exit codes: [`EXIT_OK`], [`EXIT_INCOMPLETE`] (a named id was not acted on, or a re-drive still
//! fails), [`EXIT_COULD_NOT_RUN`] (bad arguments or configuration, database unreachable).
#![forbid(unsafe_code)]

mod act;
mod audit;
mod cli;
mod dead_letters;
mod output;
mod parked;
mod processing;
pub mod schema_sql;

pub use cli::{
    Act, Args, Audit, Command, DeadLetters, Format, MessageSelection, Parked, Processing, SchemaCommand,
    SchemaName, Secret, Selection,
};
use relay_config::{ConfigError, DatabaseUrl, Problem, ProcessEnv, Reader};
use serde::Serialize;

pub const EXIT_OK: i32 = 0;
pub const EXIT_INCOMPLETE: i32 = 1;
pub const EXIT_COULD_NOT_RUN: i32 = 2;

/// Why a command could not run. Nothing was changed when one of these is returned, except by
/// dead letters already re-driven (each in its own transaction) before a database failure.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] relay_db::DbError),
    #[error("re-drive failed: {0}")]
    Redrive(#[from] relay_inbox::InboxError),
    #[error(transparent)]
    Script(#[from] schema_sql::ScriptError),
    #[error(
        "relay.{table} has no column {column}: run this version's {service} once (it upgrades the \
         schema) or apply crates/relay-db/migrations/{schema}/{migration}"
    )]
    SchemaOutdated {
        table: &'static str,
        column: &'static str,
        service: &'static str,
        schema: &'static str,
        migration: &'static str,
    },
    #[error(
        "inbox {0} does not process messages through relay.claim (no relay.processing row): its \
         workers enable it with relay.enable_processing"
    )]
    ProcessingOff(String),
    #[error(
        "this database has no relay.operator_audit: run this version's outbox-poller or \
         inbox-consumer once (it upgrades the schema) or apply outbox migration {OUTBOX_AUDIT} or \
         inbox migration {INBOX_AUDIT}"
    )]
    NoAuditTrail,
}

pub(crate) fn db(error: tokio_postgres::Error) -> AdminError {
    AdminError::Db(error.into())
}

/// What a retry or discard changed (or, in a dry run, would change), for JSON output.
#[derive(Debug, Serialize)]
pub(crate) struct Changed {
    #[serde(rename = "action")]
    pub verb: &'static str,
    /// True when nothing was changed (no `--execute`).
    pub dry_run: bool,
    pub count: usize,
    pub ids: Vec<i64>,
    /// Ids named with --id that were not acted on.
    pub unmatched: Vec<i64>,
    /// Each changed row's changed columns, before and after (as in its audit row).
    pub changes: Vec<act::Change>,
}

impl Changed {
    pub fn exit_code(unmatched: &[i64]) -> i32 {
        if unmatched.is_empty() {
            EXIT_OK
        } else {
            EXIT_INCOMPLETE
        }
    }
}

/// The ids named with `--id` that are not in `acted` (sorted); none for `--all`.
pub(crate) fn unmatched(selection: &Selection, acted: &[i64]) -> Vec<i64> {
    if selection.all {
        return Vec::new();
    }
    let mut missed: Vec<i64> =
        selection.ids.iter().copied().filter(|id| acted.binary_search(id).is_err()).collect();
    missed.sort_unstable();
    missed.dedup();
    missed
}

/// The database from `--database-url` / `DATABASE_URL`, else from `DATABASE_URL_FILE`.
fn database_url(arg: Option<Secret>) -> Result<DatabaseUrl, ConfigError> {
    const VARIABLE: &str = "--database-url / DATABASE_URL";
    let secret = match arg {
        Some(Secret(secret)) => secret,
        None => {
            let mut reader = Reader::new(&ProcessEnv);
            let secret = reader.secret(relay_config::names::DATABASE_URL);
            reader.finish()?;
            secret.ok_or_else(|| {
                ConfigError(vec![Problem {
                    variable: VARIABLE.into(),
                    message: "is required (or DATABASE_URL_FILE)".into(),
                }])
            })?
        }
    };
    DatabaseUrl::parse(secret)
        .map_err(|message| ConfigError(vec![Problem { variable: VARIABLE.into(), message }]))
}

/// The migrations that added the audit trail and the history columns, on each side.
const OUTBOX_AUDIT: &str = "V7__operator_audit_and_topic_leases.sql";
const INBOX_AUDIT: &str = "V9__operator_audit.sql";

/// Fails with a clear message when the schema predates `column`, added by `migration`.
async fn check_schema(
    client: &tokio_postgres::Client,
    table: &'static str,
    column: &'static str,
    migration: &'static str,
) -> Result<(), AdminError> {
    let row =
        client.query_one(include_str!("sql/column_exists.sql"), &[&table, &column]).await.map_err(db)?;
    if row.get::<_, bool>(0) {
        return Ok(());
    }
    let (service, schema) =
        if table == "outbox" { ("outbox-poller", "outbox") } else { ("inbox-consumer", "inbox") };
    Err(AdminError::SchemaOutdated { table, column, service, schema, migration })
}

/// Runs one command, printing its result to stdout; returns the exit code.
pub async fn run(args: Args) -> Result<i32, AdminError> {
    match args.command {
        Command::Schema(SchemaCommand::Sql { schema }) => {
            let schema = match schema {
                SchemaName::Outbox => relay_db::Schema::Outbox,
                SchemaName::Inbox => relay_db::Schema::Inbox,
            };
            print!("{}", schema_sql::script(schema)?);
            Ok(EXIT_OK)
        }
        Command::Parked(command) => {
            let (_, mut client) = connect(args.database_url).await?;
            check_schema(&client, "outbox", "discarded_at", "V3__operator.sql").await?;
            check_schema(&client, "outbox", "previous_parked_at", OUTBOX_AUDIT).await?;
            parked::run(&mut client, command, args.format).await
        }
        Command::DeadLetters(command) => {
            let (url, mut client) = connect(args.database_url).await?;
            check_schema(&client, "dead_letter", "resolved_at", "V3__operator.sql").await?;
            check_schema(&client, "inbox", "previous_parked_at", INBOX_AUDIT).await?;
            dead_letters::run(&mut client, &url, command, args.format).await
        }
        Command::Processing(command) => {
            let (_, mut client) = connect(args.database_url).await?;
            check_schema(&client, "inbox", "skip_reason", "V8__processing_operator.sql").await?;
            check_schema(&client, "inbox", "previous_parked_at", INBOX_AUDIT).await?;
            processing::run(&mut client, command, args.format).await
        }
        Command::Audit(command) => {
            let (_, client) = connect(args.database_url).await?;
            let row = client
                .query_one(include_str!("sql/column_exists.sql"), &[&"operator_audit", &"target"])
                .await
                .map_err(db)?;
            if !row.get::<_, bool>(0) {
                return Err(AdminError::NoAuditTrail);
            }
            audit::run(&client, command, args.format).await
        }
    }
}

/// The database named by `--database-url` (or the environment) and a connection to it.
async fn connect(arg: Option<Secret>) -> Result<(DatabaseUrl, tokio_postgres::Client), AdminError> {
    let url = database_url(arg)?;
    let client = relay_db::connect_checked(&url).await?;
    Ok((url, client))
}

impl AdminError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        EXIT_COULD_NOT_RUN
    }
}
