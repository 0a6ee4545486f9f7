//! relay-admin against real databases: parked rows retried and discarded, dead letters re-driven
//! and discarded, each decision visible to the poller, the consumer's inbox and the reconciler.
use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;

use crate::{
    harness::*,
    poison::produce_raw,
    reconcile::{ids, reconcile},
    verify::{inbox_equals_outbox, inbox_holds_outbox},
};

const ADMIN: &str = env!("CARGO_BIN_EXE_relay-admin");

/// Runs relay-admin on `db`; returns the exit code, stdout and stderr.
pub(crate) async fn admin_raw(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(ADMIN)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RELAY_OPERATOR", "it-tests")
        .args(args)
        .output()
        .await
        .expect("run relay-admin");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    (output.status.code().expect("exit code"), text(&output.stdout), text(&output.stderr))
}

/// Runs relay-admin with `--format json`; returns the exit code and the parsed output.
pub(crate) async fn admin(db: &TestDb, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = admin_raw(db, &all).await;
    assert!(code != 2, "relay-admin {args:?} could not run: {stderr}");
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (code, value)
}

fn numbers(value: &Value) -> Vec<i64> {
    value.as_array().expect("array").iter().map(|v| v.as_i64().expect("number")).collect()
}

/// Waits until `n` outbox rows are parked (discarded or not).
async fn await_parked_rows(origin: &TestDb, n: i64) {
    let client = origin.client().await;
    eventually(Duration::from_secs(60), &format!("{n} parked rows"), || {
        let client = &client;
        async move {
            let parked =
                count(client, "SELECT count(*) FROM relay.outbox WHERE parked_at IS NOT NULL", &[]).await;
            (parked == n).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_row_is_listed_and_after_raising_the_limit_a_retry_delivers_it() {
    let small = [("OUTBOX_MAX_PAYLOAD_BYTES", "500")];
    let mut relay = Pipeline::start_with("admin_retry", 1, &small, &[]).await;
    let (origin, topic) = (&relay.origin, relay.topic.clone());
    enqueue_many(origin, &topic, 10, 2, 5).await;
    let big = enqueue_one(origin, &topic, "key-0", &[0x42; 800]).await;
    enqueue_many(origin, &topic, 10, 2, 5).await;
    // The five later rows of key-0 wait behind the parked row.
    relay.await_ledger(15).await;
    await_parked_rows(origin, 1).await;

    let (code, listing) = admin(origin, &["parked", "list"]).await;
    assert_eq!(code, 0);
    assert_eq!(listing["total"], 1, "{listing}");
    let row = &listing["rows"][0];
    assert_eq!(row["message_id"], big.to_string());
    assert_eq!(row["topic"], topic);
    assert_eq!(row["key"], "key-0");
    assert_eq!(row["reason"], "payload of 800 bytes exceeds the limit of 500 bytes");
    let id = row["id"].as_i64().expect("id").to_string();
    let (code, table, _) = admin_raw(origin, &["parked", "list", "--topic", &topic]).await;
    assert_eq!(code, 0);
    assert!(table.contains(&big.to_string()) && table.contains("exceeds the limit of 500 bytes"), "{table}");
    assert!(table.contains("1 parked rows"), "{table}");

    // Raise the limit (a new poller with the new setting), then retry the row.
    relay.poller.terminate(Duration::from_secs(30)).await;
    let mut env = poller_env(origin, &topic);
    env.insert("OUTBOX_MAX_PAYLOAD_BYTES".into(), "2000".into());
    let _poller = spawn("admin_retry", "poller-raised", POLLER, &env);
    let (code, retried) =
        admin(origin, &["parked", "retry", "--execute", "--id", &id, "--reason", "test"]).await;
    assert_eq!(code, 0, "{retried}");
    assert_eq!(retried["count"], 1);
    assert_eq!(numbers(&retried["ids"]), vec![id.parse::<i64>().unwrap()]);

    relay.await_ledger(21).await;
    // The retried row arrives before the later rows of its key, which waited for it.
    assert_eq!(inbox_equals_outbox(origin, &relay.inbox, "ledger", &topic).await, 21);
    let (_, listing) = admin(origin, &["parked", "list"]).await;
    assert_eq!(listing["total"], 0);
    // Naming a row that is not parked changes nothing and says so.
    let (code, again) =
        admin(origin, &["parked", "retry", "--execute", "--id", &id, "--reason", "test"]).await;
    assert_eq!(code, 1);
    assert_eq!(again["count"], 0);
    assert_eq!(numbers(&again["unmatched"]), vec![id.parse::<i64>().unwrap()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn discarded_parked_rows_stay_parked_and_the_reconciler_no_longer_reports_them() {
    let small = [("OUTBOX_MAX_PAYLOAD_BYTES", "500")];
    let relay = Pipeline::start_with("admin_discard", 1, &small, &[]).await;
    let (origin, topic) = (&relay.origin, relay.topic.clone());
    enqueue_many(origin, &topic, 10, 2, 5).await;
    let a = enqueue_one(origin, &topic, "key-a", &[1; 600]).await;
    let b = enqueue_one(origin, &topic, "key-b", &[2; 700]).await;
    enqueue_many(origin, &topic, 10, 2, 5).await;
    relay.await_ledger(20).await;
    await_parked_rows(origin, 2).await;

    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(report["outboxes"][0]["parked_count"], 2);
    let (_, listing) = admin(origin, &["parked", "list"]).await;
    let id_of = |message: uuid::Uuid| {
        let rows = listing["rows"].as_array().expect("rows");
        let row = rows.iter().find(|r| r["message_id"] == message.to_string()).expect("listed");
        row["id"].as_i64().expect("id").to_string()
    };
    let (id_a, id_b) = (id_of(a), id_of(b));

    let (code, _, stderr) =
        admin_raw(origin, &["parked", "discard", "--execute", "--id", &id_a, "--reason", " "]).await;
    assert_eq!(code, 2, "a blank reason is refused: {stderr}");
    let (code, discarded) = admin(
        origin,
        &["parked", "discard", "--execute", "--id", &id_a, "--reason", "superseded by a later payment"],
    )
    .await;
    assert_eq!((code, discarded["count"].clone()), (0, 1.into()), "{discarded}");
    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(report["outboxes"][0]["parked_count"], 1);
    assert_eq!(report["outboxes"][0]["parked"][0]["message_id"], b.to_string());

    let (code, discarded) =
        admin(origin, &["parked", "discard", "--execute", "--all", "--reason", "test data"]).await;
    assert_eq!(code, 0);
    assert_eq!(numbers(&discarded["ids"]), vec![id_b.parse::<i64>().unwrap()], "a was discarded already");
    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["outboxes"][0]["parked_count"], 0);
    assert_eq!(ids(&report["outboxes"][0]["stuck"]), BTreeSet::new());

    // Both stay parked, with the decision, for the audit trail; a discarded row cannot be retried.
    let (_, listing) = admin(origin, &["parked", "list"]).await;
    assert_eq!(listing["total"], 0);
    let (_, listing) = admin(origin, &["parked", "list", "--include-discarded"]).await;
    assert_eq!(listing["total"], 2);
    assert_eq!(listing["rows"][0]["discard_reason"], "superseded by a later payment");
    assert_eq!(listing["rows"][1]["discard_reason"], "test data");
    let (code, retried) =
        admin(origin, &["parked", "retry", "--execute", "--id", &id_a, "--reason", "test"]).await;
    assert_eq!((code, retried["count"].clone()), (1, 0.into()));
    assert_eq!(inbox_equals_outbox(origin, &relay.inbox, "ledger", &topic).await, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_redriven_after_raising_the_limit_and_garbage_is_discarded() {
    let small = [("INBOX_MAX_PAYLOAD_BYTES", "400")];
    let relay = Pipeline::start_with("admin_redrive", 1, &[], &small).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 10, 2, 5).await;
    let big = enqueue_one(origin, &topic, "key-0", &[0x77; 1000]).await;
    // Dead-lettered first, so the dead letters' ids follow this order.
    let client = inbox.client().await;
    eventually(Duration::from_secs(60), "the oversized message dead-lettered", || {
        let client = &client;
        async move { (count(client, "SELECT count(*) FROM relay.dead_letter", &[]).await == 1).then_some(()) }
    })
    .await;
    produce_raw(&topic, b"k-garbage", b"\x00\x01 not an envelope").await;
    enqueue_many(origin, &topic, 10, 2, 5).await;
    relay.await_ledger(20).await;

    let (code, listing) = admin(inbox, &["dead-letters", "list", "--inbox", "ledger"]).await;
    assert_eq!(code, 0);
    assert_eq!(listing["total"], 2, "{listing}");
    assert_eq!(listing["rows"][0]["error"], "payload of 1000 bytes exceeds the limit of 400 bytes");
    assert_eq!(listing["rows"][1]["key"], "k-garbage");
    let (oversized, garbage) =
        (listing["rows"][0]["id"].as_i64().unwrap(), listing["rows"][1]["id"].as_i64().unwrap());
    let (_, report, _) = reconcile(&relay, &[]).await;
    assert_eq!(ids(&report["pairs"][0]["missing"]), BTreeSet::from([big.to_string()]));

    // A limit still too small: nothing moves, and the reason names the limit tried.
    let (code, out) = admin(
        inbox,
        &[
            "dead-letters",
            "redrive",
            "--execute",
            "--inbox",
            "ledger",
            "--all",
            "--max-payload-bytes",
            "500",
            "--reason",
            "test",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["still_failing"].as_array().map(Vec::len), Some(2));
    assert_eq!(out["still_failing"][0]["reason"], "payload of 1000 bytes exceeds the limit of 500 bytes");

    let (code, out) = admin(
        inbox,
        &[
            "dead-letters",
            "redrive",
            "--execute",
            "--inbox",
            "ledger",
            "--all",
            "--max-payload-bytes",
            "2000",
            "--reason",
            "test",
        ],
    )
    .await;
    assert_eq!(code, 1, "the garbage still fails: {out}");
    assert_eq!(numbers(&out["redriven"]), vec![oversized]);
    assert_eq!(numbers(&out["already_present"]), Vec::<i64>::new());
    assert_eq!(out["still_failing"][0]["id"], garbage);
    let reason = out["still_failing"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not a protobuf envelope"), "{reason}");
    // The message is in the inbox, byte-equal, after later messages of its key.
    assert_eq!(inbox_holds_outbox(origin, inbox, "ledger", &topic, false).await, 21);
    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["clean"], true);

    let (code, out) = admin(
        inbox,
        &[
            "dead-letters",
            "redrive",
            "--execute",
            "--inbox",
            "ledger",
            "--id",
            &oversized.to_string(),
            "--reason",
            "test",
        ],
    )
    .await;
    assert_eq!(code, 1, "already resolved: {out}");
    assert_eq!(numbers(&out["unmatched"]), vec![oversized]);
    let garbage_id = garbage.to_string();
    let (code, out) = admin(
        inbox,
        &[
            "dead-letters",
            "discard",
            "--execute",
            "--inbox",
            "ledger",
            "--id",
            &garbage_id,
            "--reason",
            "test producer",
        ],
    )
    .await;
    assert_eq!((code, out["count"].clone()), (0, 1.into()), "{out}");

    let (_, listing) = admin(inbox, &["dead-letters", "list", "--inbox", "ledger"]).await;
    assert_eq!(listing["total"], 0);
    let (_, listing) =
        admin(inbox, &["dead-letters", "list", "--inbox", "ledger", "--include-resolved"]).await;
    assert_eq!(listing["total"], 2);
    assert_eq!(listing["rows"][0]["resolution"], "redriven");
    let note = listing["rows"][0]["resolution_note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("stored in the inbox; was: payload of 1000 bytes exceeds the limit of 500"),
        "{note}"
    );
    assert_eq!(listing["rows"][1]["resolution"], "discarded");
    assert_eq!(listing["rows"][1]["resolution_note"], "test producer");
    assert!(listing["rows"][1]["error"].as_str().unwrap_or_default().contains("not a protobuf envelope"));
}

#[tokio::test]
async fn bad_arguments_an_old_schema_and_an_unreachable_database_exit_2_without_printing_the_url() {
    let secret = "s3cr3t-Pa55";
    let run = |url: String, args: &'static [&'static str]| async move {
        let mut command = tokio::process::Command::new(ADMIN);
        command.env_clear().args(args);
        if !url.is_empty() {
            command.args(["--database-url", &url]);
        }
        let output = command.output().await.expect("run relay-admin");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(!stderr.contains(secret) && !stdout.contains(secret), "secret printed: {stderr}{stdout}");
        (output.status.code().expect("exit code"), stderr)
    };
    let (code, stderr) = run(format!("mysql://app:{secret}@db/x"), &["parked", "list"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("must be a postgres:// URL"), "{stderr}");
    let (code, stderr) = run(String::new(), &["parked", "list"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    let (code, stderr) = run(format!("postgres://app:{secret}@127.0.0.1:1/x"), &["parked", "list"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let (code, stderr) = run(
        format!("postgres://app:{secret}@127.0.0.1:1/x"),
        &["parked", "retry", "--execute", "--id", "1", "--all", "--reason", "test"],
    )
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    // A database whose schema predates the operator columns.
    let old = TestDb::new().await;
    old.client()
        .await
        .batch_execute("CREATE SCHEMA relay; CREATE TABLE relay.dead_letter (id bigint)")
        .await
        .unwrap();
    let (code, stdout, stderr) = admin_raw(&old, &["dead-letters", "list", "--inbox", "ledger"]).await;
    assert_eq!(code, 2, "{stdout}");
    assert!(stderr.contains("relay.dead_letter has no column resolved_at"), "{stderr}");
    assert!(stderr.contains("migrations/inbox/V3__operator.sql"), "{stderr}");
}
