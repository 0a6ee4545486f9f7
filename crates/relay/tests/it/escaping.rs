//! Writer-chosen text never drives the operator's terminal: a key, reasons and errors holding
//! terminal escape sequences, a bell and a bidirectional override are shown escaped by every
//! relay-admin list, the reconciler's report and `reconciler trace`, in tables and in JSON
//! (which stays valid and keeps the value).
use serde_json::Value;

use crate::{
    admin::admin_raw,
    harness::*,
    processing_ops::{fail, migrate, store},
};

const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");

/// Clears the screen, retitles the terminal, rings the bell, then reverses what follows.
const KEY: &str = "acct-1\x1b[2J\x1b]0;pwn\x07\u{202e}9-tcca";
/// The same, as every table shows it.
const SHOWN: &str = "acct-1\\x1b[2J\\x1b]0;pwn\\x07\\u{202e}9-tcca";

/// No raw control, bidirectional or zero-width character, line breaks aside.
fn assert_clean(what: &str, stdout: &str) {
    let raw: Vec<char> = stdout.chars().filter(|&c| c != '\n' && relay_config::is_unsafe(c)).collect();
    assert!(raw.is_empty(), "{what} printed raw {raw:?}:\n{}", relay_config::printable(stdout));
}

/// Table and JSON output of one command: both clean, the table showing `shown`, the JSON
/// holding `raw` somewhere as a value.
fn check(what: &str, table: &str, json: &str, shown: &str, raw: &str) {
    assert_clean(what, table);
    assert_clean(what, json);
    assert!(table.contains(shown), "{what} table lacks {shown}:\n{}", relay_config::printable(table));
    let end = json.rfind("\n}").map_or(json.len(), |i| i + 2);
    let value: Value = serde_json::from_str(&json[..end]).unwrap_or_else(|e| panic!("{what}: {e}: {json}"));
    assert!(contains(&value, raw), "{what} JSON lost the value: {json}");
}

fn contains(value: &Value, raw: &str) -> bool {
    match value {
        Value::String(s) => s.contains(raw),
        Value::Array(items) => items.iter().any(|v| contains(v, raw)),
        Value::Object(map) => map.values().any(|v| contains(v, raw)),
        _ => false,
    }
}

async fn both(db: &TestDb, args: &[&str]) -> (String, String) {
    let (code, table, stderr) = admin_raw(db, args).await;
    assert_eq!(code, 0, "relay-admin {args:?}: {stderr}");
    let mut with_json = vec!["--format", "json"];
    with_json.extend_from_slice(args);
    let (code, json, stderr) = admin_raw(db, &with_json).await;
    assert_eq!(code, 0, "relay-admin {args:?}: {stderr}");
    (table, json)
}

async fn reconciler(origin: &TestDb, inbox: &TestDb, args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(RECONCILER)
        .env_clear()
        .env("RECONCILE_OUTBOXES", format!("it-origin={}", origin.url))
        .env("RECONCILE_INBOXES", format!("ledger={}", inbox.url))
        .env("RECONCILE_SUBSCRIPTIONS", "ledger=payments")
        .args(args)
        .output()
        .await
        .expect("run reconciler");
    let code = output.status.code().expect("exit code");
    assert!(code != 2, "reconciler {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    (code, String::from_utf8(output.stdout).expect("stdout is UTF-8"))
}

#[tokio::test]
async fn hostile_keys_reasons_and_errors_are_shown_escaped_everywhere() {
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    migrate(&origin, relay_db::Schema::Outbox).await;
    migrate(&inbox, relay_db::Schema::Inbox).await;
    let origin_client = origin.client().await;
    let reason = format!("refused: {KEY}");
    let parked: uuid::Uuid = origin_client
        .query_one("SELECT relay.enqueue('payments', $1, 'x'::bytea)", &[&KEY])
        .await
        .unwrap()
        .get(0);
    origin_client
        .execute(
            "UPDATE relay.outbox SET parked_at = now(), park_reason = $2 WHERE message_id = $1",
            &[&parked, &reason],
        )
        .await
        .unwrap();
    let mut client = inbox.client().await;
    client.execute("SELECT relay.enable_processing('ledger', 1, 0, 0)", &[]).await.unwrap();
    let id = store(&client, "ledger", "payments", KEY, 1).await;
    let error = format!("cannot apply {KEY}\r\u{9b}31m\u{7f}");
    assert_eq!(fail(&mut client, "ledger", id, &error).await, "parked");
    let letter_error = format!("not an envelope: {KEY}");
    client
        .execute(
            "INSERT INTO relay.dead_letter (inbox, kafka_topic, kafka_partition, kafka_offset, raw_key, raw_value, error)
             VALUES ('ledger', 'payments', 0, 9, $1, 'garbage', $2)",
            &[&KEY.as_bytes(), &letter_error],
        )
        .await
        .unwrap();

    let (table, json) = both(&origin, &["parked", "list"]).await;
    check("parked list", &table, &json, &format!("refused: {SHOWN}"), KEY);
    let (table, json) = both(&inbox, &["dead-letters", "list", "--inbox", "ledger"]).await;
    check("dead-letters list", &table, &json, &format!("not an envelope: {SHOWN}"), &letter_error);
    let (table, json) = both(&inbox, &["processing", "list", "--inbox", "ledger"]).await;
    check("processing list", &table, &json, &format!("cannot apply {SHOWN}\\x0d\\u{{9b}}31m\\x7f"), &error);
    assert!(table.contains(SHOWN), "the key column: {table}");

    let args = ["--grace-secs", "0", "--stuck-secs", "0", "--unprocessed-secs", "0"];
    let (code, table) = reconciler(&origin, &inbox, &args).await;
    assert_eq!(code, 1, "{table}");
    let (_, json) = reconciler(&origin, &inbox, &[&args[..], &["--format", "json"]].concat()).await;
    check("reconciler report", &table, &json, &format!("refused: {SHOWN}"), &reason);
    assert!(table.contains(&format!("cannot apply {SHOWN}")), "{table}");
    assert!(contains(&serde_json::from_str(&json).unwrap(), &error), "{json}");

    let trace = ["trace", "--topic", "payments", "--key", KEY];
    let (code, table) = reconciler(&origin, &inbox, &trace).await;
    assert_eq!(code, 0, "{table}");
    let (_, json) = reconciler(&origin, &inbox, &[&trace[..], &["--format", "json"]].concat()).await;
    check("trace", &table, &json, &format!("key {SHOWN}"), &error);
    assert!(table.contains(&format!("refused: {SHOWN}")), "{table}");
    assert!(
        table.contains(&format!("not an envelope: {SHOWN}")),
        "the undecodable dead letter of the key: {table}"
    );
}
