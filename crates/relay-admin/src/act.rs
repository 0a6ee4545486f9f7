//! How commands that change rows act: a dry run by default, and with `--execute` the change and
//! its audit rows (`relay.operator_audit`) in one transaction.
//!
//! Each such command's SQL changes the rows and inserts one audit row per changed row in a
//! single statement, and returns each changed row's target with its columns before and after.
//! A dry run runs exactly that statement and rolls it back, so what it shows is what
//! `--execute` would do at that moment (rows chosen, before, after), and nothing changes.
use relay_config::{ConfigError, Problem};
use relay_db::{audit::OPERATOR_VARIABLE, Actor};
use serde::Serialize;
use tokio_postgres::{types::ToSql, Client, Row};

use crate::{cli::Act, db, output::Table, AdminError};

/// One changed row: which, and its changed columns before and after (JSON objects).
#[derive(Debug, Serialize)]
pub(crate) struct Change {
    pub target: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

impl Act {
    /// Who acts and whether for real. With `--execute`, a missing operator and a missing reason
    /// are both reported; a dry run records placeholders (its audit rows are rolled back too).
    pub(crate) fn actor(&self) -> Result<Actor, AdminError> {
        if !self.execute {
            return Ok(Actor::dry_run(self.operator.as_deref(), self.reason.as_deref()));
        }
        let mut problems = Vec::new();
        if self.operator.is_none() {
            problems.push(Problem {
                variable: format!("--operator / {OPERATOR_VARIABLE}"),
                message: "is required with --execute: who acts, for the audit trail".into(),
            });
        }
        if self.reason.is_none() {
            problems.push(Problem {
                variable: "--reason".into(),
                message: "is required with --execute: why, for the audit trail".into(),
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError(problems).into());
        }
        Ok(Actor {
            operator: self.operator.clone().unwrap_or_default(),
            reason: self.reason.clone().unwrap_or_default(),
        })
    }
}

/// Runs one changing statement in a transaction, then wakes `notify`'s channel (`NOTIFY`,
/// delivered at commit) when rows changed, and commits with `--execute` or rolls back otherwise. The
/// statement's rows are returned.
pub(crate) async fn apply(
    client: &mut Client,
    act: &Act,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    notify: Option<(&str, &str)>,
) -> Result<Vec<Row>, AdminError> {
    let tx = client.transaction().await.map_err(db)?;
    let rows = tx.query(sql, params).await.map_err(db)?;
    if let (Some((channel, payload)), false) = (notify, rows.is_empty()) {
        tx.execute("SELECT pg_notify($1, $2)", &[&channel, &payload]).await.map_err(db)?;
    }
    if act.execute {
        tx.commit().await.map_err(db)?;
    } else {
        tx.rollback().await.map_err(db)?;
    }
    Ok(rows)
}

/// The changes of rows whose columns `target`, `before` and `after` (JSON text) are at 0, 1, 2.
pub(crate) fn changes(rows: &[Row]) -> Vec<Change> {
    rows.iter().map(|r| Change { target: r.get(0), before: json(r.get(1)), after: json(r.get(2)) }).collect()
}

fn json(text: Option<String>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null)
}

/// The changes as a table (target, before, after), for the text output.
pub(crate) fn table(changes: &[Change]) -> Table {
    Table {
        headers: vec!["TARGET", "BEFORE", "AFTER"],
        rows: changes
            .iter()
            .map(|c| vec![c.target.clone(), c.before.to_string(), c.after.to_string()])
            .collect(),
    }
}

/// The first output line: what was done, or what a dry run would do.
pub(crate) fn headline(act: &Act, verb: &str, count: usize, what: &str, ids: &str) -> String {
    if act.execute {
        format!("{verb} {count} {what}: {ids} (recorded in relay.operator_audit)")
    } else {
        format!(
            "dry run: {count} {what} would be {verb}: {ids}; nothing changed (add --execute, \
             --operator and --reason to act)"
        )
    }
}
