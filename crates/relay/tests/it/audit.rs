//! Operator actions leave evidence (outbox V7, inbox V9): every command that changes rows
//! (relay-admin parked, dead-letters, processing; `reconciler --repair`) is a dry run unless
//! `--execute` is given with an operator and a reason, writes one `relay.operator_audit` row per
//! changed row (who: database role and operator; when; why; before and after) in the change's
//! transaction, and keeps the evidence it replaces queryable. The trail is append-only. The
//! inbox side's commands are in `audit_inbox`.
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    harness::*,
    processing_ops::migrate,
    roles::{as_user, refused, Users},
};

const ADMIN: &str = env!("CARGO_BIN_EXE_relay-admin");
const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");

/// Runs relay-admin with `--format json` on `url` and exactly `env`; returns the exit code, the
/// parsed stdout (null when it is not JSON) and stderr.
pub(crate) async fn admin_as(url: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, Value, String) {
    let output = tokio::process::Command::new(ADMIN)
        .env_clear()
        .env("DATABASE_URL", url)
        .envs(env.iter().copied())
        .args(["--format", "json"])
        .args(args)
        .output()
        .await
        .expect("run relay-admin");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().expect("exit code"), value, stderr)
}

/// The audit rows about `target`, oldest first: (db_role, session_role, operator, command,
/// reason, before, after).
pub(crate) async fn audit_rows(
    client: &Client,
    target: &str,
) -> Vec<(String, String, String, String, String, Value, Value)> {
    client
        .query(
            "SELECT db_role, session_role, operator, command, reason, before::text, after::text
             FROM relay.operator_audit WHERE target = $1 ORDER BY id",
            &[&target],
        )
        .await
        .expect("audit rows")
        .iter()
        .map(|r| {
            let json = |i: usize| serde_json::from_str(r.get::<_, &str>(i)).expect("json");
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), json(5), json(6))
        })
        .collect()
}

pub(crate) async fn audit_count(client: &Client) -> i64 {
    count(client, "SELECT count(*) FROM relay.operator_audit", &[]).await
}

/// Parks the row of message `id` as the poller would; returns the row's id.
async fn park(client: &Client, id: Uuid, reason: &str) -> i64 {
    client
        .query_one(
            "UPDATE relay.outbox SET parked_at = now() - interval '1 minute', park_reason = $2
             WHERE message_id = $1 RETURNING id",
            &[&id, &reason],
        )
        .await
        .expect("park")
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn parked_rows_are_retried_and_discarded_only_with_execute_and_each_change_is_audited() {
    let origin = TestDb::new().await;
    migrate(&origin, relay_db::Schema::Outbox).await;
    let (_users, names) = Users::create(&[("auditop", Some("relay_operator"))]).await;
    let operator_url = as_user(&origin.url, &names[0]);
    let owner = origin.client().await;
    let reason = "payload of 800 bytes exceeds the limit of 500 bytes";
    let (m1, m2, m3) = (
        enqueue_one(&origin, "payments", "acct-1", b"a").await,
        enqueue_one(&origin, "payments", "acct-2", b"b").await,
        enqueue_one(&origin, "refunds", "acct-3", b"c").await,
    );
    let (id1, id2, id3) = (
        park(&owner, m1, reason).await,
        park(&owner, m2, reason).await,
        park(&owner, m3, "unknown topic").await,
    );
    let (id1s, id2s, id3s) = (id1.to_string(), id2.to_string(), id3.to_string());

    // A dry run shows the change, before and after, and changes nothing.
    let (code, out, stderr) = admin_as(&operator_url, &[], &["parked", "retry", "--id", &id1s]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!((out["dry_run"].clone(), out["count"].clone()), (true.into(), 1.into()), "{out}");
    assert_eq!(out["changes"][0]["before"]["park_reason"], reason);
    assert_eq!(out["changes"][0]["after"]["parked_at"], Value::Null);
    assert_eq!(out["changes"][0]["after"]["previous_park_reason"], reason);
    let still_parked = "SELECT count(*) FROM relay.outbox WHERE parked_at IS NOT NULL";
    assert_eq!(count(&owner, still_parked, &[]).await, 3);
    assert_eq!(audit_count(&owner).await, 0);

    // Executing needs who and why; both missing are reported together, and nothing changes.
    for (args, missing) in [
        (vec!["parked", "retry", "--id", &id1s, "--execute"], vec!["--operator", "--reason"]),
        (vec!["parked", "discard", "--all", "--execute", "--operator", "ana"], vec!["--reason"]),
        (vec!["parked", "retry", "--all", "--execute", "--reason", "limit raised"], vec!["--operator"]),
    ] {
        let (code, _, stderr) = admin_as(&operator_url, &[], &args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        for flag in missing {
            assert!(stderr.contains(flag), "{args:?}: {stderr}");
        }
    }
    assert_eq!(count(&owner, still_parked, &[]).await, 3);
    assert_eq!(audit_count(&owner).await, 0);

    // Executed (operator from RELAY_OPERATOR): the row is pending again, the parking kept.
    let (code, out, stderr) = admin_as(
        &operator_url,
        &[("RELAY_OPERATOR", "ana.ops")],
        &["parked", "retry", "--id", &id1s, "--execute", "--reason", "limit raised to 2 KiB"],
    )
    .await;
    assert_eq!((code, out["dry_run"].clone(), out["count"].clone()), (0, false.into(), 1.into()), "{stderr}");
    let row = owner
        .query_one(
            "SELECT parked_at IS NULL, park_reason IS NULL, previous_park_reason, previous_parked_at IS NOT NULL,
                    retried_at IS NOT NULL
             FROM relay.outbox WHERE id = $1",
            &[&id1],
        )
        .await
        .expect("row");
    assert_eq!(
        (row.get(0), row.get(1), row.get::<_, String>(2), row.get(3), row.get(4)),
        (true, true, reason.to_string(), true, true)
    );
    let rows = audit_rows(&owner, &id1s).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (db_role, session_role, operator, command, why, before, after) = &rows[0];
    assert_eq!((db_role, session_role), (&names[0], &names[0]), "the database's word for who");
    assert_eq!(
        (operator.as_str(), command.as_str(), why.as_str()),
        ("ana.ops", "parked retry", "limit raised to 2 KiB")
    );
    assert_eq!(before["park_reason"], reason);
    assert!(before["parked_at"].is_string(), "{before}");
    assert_eq!(
        (after["parked_at"].clone(), after["previous_park_reason"].clone()),
        (Value::Null, reason.into())
    );
    assert_eq!(after["previous_parked_at"], before["parked_at"]);

    // Discard by topic with --all: only the payments row left parked, with its own audit row.
    let (code, out, stderr) = admin_as(
        &operator_url,
        &[],
        &[
            "parked",
            "discard",
            "--all",
            "--topic",
            "payments",
            "--execute",
            "--operator",
            "bo",
            "--reason",
            "test data",
        ],
    )
    .await;
    assert_eq!((code, out["ids"].clone()), (0, serde_json::json!([id2])), "{stderr}");
    let rows = audit_rows(&owner, &id2s).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].2.as_str(), rows[0].3.as_str()), ("bo", "parked discard"));
    assert_eq!(
        (rows[0].5["discarded_at"].clone(), rows[0].6["discard_reason"].clone()),
        (Value::Null, "test data".into())
    );
    assert!(audit_rows(&owner, &id3s).await.is_empty(), "the refunds row was not touched");

    // The trail is append-only, for the operator and for the owner.
    let op = connect(&operator_url).await;
    for sql in [
        "UPDATE relay.operator_audit SET reason = 'x'",
        "DELETE FROM relay.operator_audit",
        "TRUNCATE relay.operator_audit",
    ] {
        refused(&op, "the operator", sql).await;
        let err = owner.batch_execute(sql).await.expect_err(sql);
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
    // Who and when are stamped by the database, whatever the writer says.
    refused(
        &op,
        "the operator",
        "INSERT INTO relay.operator_audit (operator, command, reason, target, db_role) VALUES ('x', 'y', 'z', '1', 'someone')",
    )
    .await;
    assert_eq!(audit_count(&owner).await, 2);

    // `audit list` reads the trail, newest first, escaped.
    let hostile = "fixed \u{1b}[2J\u{202e} by hand";
    let (code, _, stderr) = admin_as(
        &operator_url,
        &[("RELAY_OPERATOR", "ana.ops")],
        &["parked", "retry", "--id", &id3s, "--execute", "--reason", hostile],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, listing, _) = admin_as(&operator_url, &[], &["audit", "list"]).await;
    assert_eq!((code, listing["total"].clone()), (0, 3.into()), "{listing}");
    assert_eq!(listing["rows"][0]["target"], id3s);
    assert_eq!(listing["rows"][2]["command"], "parked retry");
    let (code, listing, _) = admin_as(&operator_url, &[], &["audit", "list", "--target", &id2s]).await;
    assert_eq!(
        (code, listing["total"].clone(), listing["rows"][0]["operator"].clone()),
        (0, 1.into(), "bo".into())
    );
    let output = tokio::process::Command::new(ADMIN)
        .env_clear()
        .env("DATABASE_URL", &operator_url)
        .args(["audit", "list", "--command", "parked retry"])
        .output()
        .await
        .expect("relay-admin");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("fixed \\x1b[2J\\u{202e} by hand"), "{table}");
    assert!(!table.contains('\u{1b}') && !table.contains('\u{202e}'), "{table}");
    assert!(table.contains("2 audit rows"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciler_repair_keeps_the_publication_it_clears_and_audits_each_row() {
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    migrate(&origin, relay_db::Schema::Outbox).await;
    migrate(&inbox, relay_db::Schema::Inbox).await;
    let (_users, names) = Users::create(&[("auditrepair", Some("relay_operator, relay_reconciler"))]).await;
    let owner = origin.client().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = enqueue_one(&origin, "payments", &format!("acct-{i}"), b"x").await;
        owner
            .execute(
                "UPDATE relay.outbox SET published_at = now() - interval '1 hour', kafka_partition = 0,
                                          kafka_offset = $2 WHERE message_id = $1",
                &[&id, &(100 + i as i64)],
            )
            .await
            .expect("published");
        ids.push(id);
    }
    // The inbox never got them: they are missing. The repairing user is an operator (and, for
    // reading the inbox, the owner's URL is used there).
    let run = |extra: &'static [&'static str]| {
        let outbox = format!("it-origin={}", as_user(&origin.url, &names[0]));
        let inbox = format!("ledger={}", inbox.url);
        async move {
            let output = tokio::process::Command::new(RECONCILER)
                .env_clear()
                .args(["--outbox", &outbox, "--inbox", &inbox, "--subscription", "ledger=payments"])
                .args(["--grace-secs", "0", "--stuck-secs", "3600"])
                .args(extra)
                .output()
                .await
                .expect("reconciler");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            (output.status.code().expect("exit code"), text)
        }
    };
    let (code, text) = run(&["--repair"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("repair (dry run): would re-publish 3 message(s)"), "{text}");
    let (code, text) = run(&["--repair", "--execute"]).await;
    assert_eq!(code, 2, "who and why are required: {text}");
    assert!(text.contains("--operator") && text.contains("--reason"), "{text}");
    let pending = "SELECT count(*) FROM relay.outbox WHERE published_at IS NULL";
    assert_eq!(count(&owner, pending, &[]).await, 0);
    assert_eq!(audit_count(&owner).await, 0);

    let (code, text) =
        run(&["--repair", "--execute", "--operator", "dee", "--reason", "ledger restored from backup"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("repair: re-published 3 message(s)"), "{text}");
    assert_eq!(count(&owner, pending, &[]).await, 3);
    for (i, id) in ids.iter().enumerate() {
        let row = owner
            .query_one(
                "SELECT id, previous_published_at IS NOT NULL, previous_kafka_partition, previous_kafka_offset,
                        redriven_at IS NOT NULL
                 FROM relay.outbox WHERE message_id = $1",
                &[id],
            )
            .await
            .expect("row");
        let offset = 100 + i as i64;
        assert_eq!(
            (row.get(1), row.get::<_, i32>(2), row.get::<_, i64>(3), row.get(4)),
            (true, 0, offset, true)
        );
        let rows = audit_rows(&owner, &row.get::<_, i64>(0).to_string()).await;
        assert_eq!(rows.len(), 1);
        let (db_role, _, operator, command, why, before, after) = &rows[0];
        assert_eq!(
            (db_role, operator.as_str(), command.as_str(), why.as_str()),
            (&names[0], "dee", "reconciler repair", "ledger restored from backup")
        );
        assert_eq!(
            (before["kafka_offset"].clone(), before["message_id"].clone()),
            (offset.into(), id.to_string().into())
        );
        assert_eq!(
            (after["published_at"].clone(), after["previous_kafka_offset"].clone()),
            (Value::Null, offset.into())
        );
    }
}
