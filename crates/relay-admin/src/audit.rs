//! `relay-admin audit list`: the operator audit trail of one database (`relay.operator_audit`,
//! outbox migration V7, inbox migration V9), newest first. Every command that changed rows wrote
//! one row per changed row: when, which database role, which operator, the command, the target,
//! why, and the changed columns before and after. Text goes through the same escaping as every
//! other listing, so a reason or a stored value cannot drive the terminal.
use serde::Serialize;
use tokio_postgres::Client;

use crate::{
    cli::{Audit, Format},
    db,
    output::{count_line, Shown, Table},
    AdminError, EXIT_OK,
};

#[derive(Debug, Serialize)]
struct AuditRow {
    id: i64,
    at: String,
    db_role: String,
    session_role: String,
    operator: String,
    command: String,
    reason: String,
    target: String,
    before: serde_json::Value,
    after: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct Listing {
    total: i64,
    rows: Vec<AuditRow>,
}

/// Runs one `audit` command; returns the exit code.
pub(crate) async fn run(client: &Client, command: Audit, format: Format) -> Result<i32, AdminError> {
    let Audit::List { target, command, limit } = command;
    let rows =
        client.query(include_str!("sql/audit_list.sql"), &[&target, &command, &limit]).await.map_err(db)?;
    let total = rows.first().map_or(0, |r| r.get::<_, i64>("total"));
    let json = |text: Option<String>| {
        text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null)
    };
    let rows: Vec<AuditRow> = rows
        .iter()
        .map(|r| AuditRow {
            id: r.get("id"),
            at: r.get("at"),
            db_role: r.get("db_role"),
            session_role: r.get("session_role"),
            operator: r.get("operator"),
            command: r.get("command"),
            reason: r.get("reason"),
            target: r.get("target"),
            before: json(r.get("before")),
            after: json(r.get("after")),
        })
        .collect();
    let headers = vec!["ID", "AT", "DB_ROLE", "OPERATOR", "COMMAND", "TARGET", "REASON", "BEFORE", "AFTER"];
    let table_rows = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.at.clone(),
                r.db_role.clone(),
                r.operator.clone(),
                r.command.clone(),
                r.target.clone(),
                r.reason.clone(),
                r.before.to_string(),
                r.after.to_string(),
            ]
        })
        .collect();
    let lines = vec![count_line("audit rows", rows.len(), total)];
    Shown { table: Some(Table { headers, rows: table_rows }), lines, json: Listing { total, rows } }
        .print(format);
    Ok(EXIT_OK)
}
