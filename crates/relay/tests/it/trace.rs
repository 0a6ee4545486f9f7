//! `reconciler trace` ("where is my message?") against real services: one message published,
//! stored in two inboxes, processed in one and parked in the other; one stored in one inbox and
//! dead-lettered in the other; a key's messages newest first; an id that exists nowhere.
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::{
    harness::*,
    processing_ops::{done, fail},
};

const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");

/// Runs `reconciler trace` with the outbox and both inboxes; returns the exit code and stdout.
pub(crate) async fn trace(
    origin: &TestDb,
    inboxes: &[(&str, &TestDb)],
    topic: &str,
    args: &[&str],
) -> (i32, String) {
    let inbox_list: Vec<String> = inboxes.iter().map(|(name, db)| format!("{name}={}", db.url)).collect();
    let subscriptions: Vec<String> = inboxes.iter().map(|(name, _)| format!("{name}={topic}")).collect();
    let output = tokio::process::Command::new(RECONCILER)
        .env_clear()
        .env("RECONCILE_OUTBOXES", format!("it-origin={}", origin.url))
        .env("RECONCILE_INBOXES", inbox_list.join(" "))
        .env("RECONCILE_SUBSCRIPTIONS", subscriptions.join(" "))
        .arg("trace")
        .args(args)
        .output()
        .await
        .expect("run reconciler trace");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let code = output.status.code().expect("exit code");
    assert!(code != 2, "trace could not run: {}", String::from_utf8_lossy(&output.stderr));
    (code, stdout)
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn inbox<'a>(message: &'a Value, name: &str) -> &'a Value {
    let inboxes = message["inboxes"].as_array().expect("inboxes");
    inboxes.iter().find(|i| i["inbox"] == name).unwrap_or_else(|| panic!("no inbox {name}: {message}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn shows_a_messages_whole_path_through_the_outbox_and_two_inboxes() {
    let relay = Pipeline::start("trace", 1).await;
    let (origin, ledger, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    let audit = TestDb::new().await;
    let mut env = consumer_env(&audit, "audit", &topic);
    env.insert("INBOX_MAX_PAYLOAD_BYTES".into(), "400".into());
    let _audit_consumer = spawn("trace", "audit", CONSUMER, &env);
    let paid = enqueue_one(origin, &topic, "acct-7", b"pay 10").await;
    let big = enqueue_one(origin, &topic, "acct-7", &[7; 1000]).await;
    relay.await_ledger(2).await;
    await_inbox(&audit, "audit", &topic, 1, Duration::from_secs(120)).await;
    let audit_client = audit.client().await;
    eventually(Duration::from_secs(60), "the big message dead-lettered in audit", || {
        let client = &audit_client;
        async move { (count(client, "SELECT count(*) FROM relay.dead_letter", &[]).await == 1).then_some(()) }
    })
    .await;

    // ledger processes it after one failure; audit parks it at its first failure.
    let mut ledger_client = ledger.client().await;
    ledger_client.execute("SELECT relay.enable_processing('ledger', 3, 0, 0)", &[]).await.unwrap();
    assert_eq!(fail(&mut ledger_client, "ledger", paid, "database busy").await, "retry");
    done(&mut ledger_client, "ledger", paid).await;
    let mut audit_client = audit.client().await;
    audit_client.execute("SELECT relay.enable_processing('audit', 1, 0, 0)", &[]).await.unwrap();
    assert_eq!(fail(&mut audit_client, "audit", paid, "no such account").await, "parked");

    let both = [("ledger", ledger), ("audit", &audit)];
    let (code, out) =
        trace(origin, &both, &topic, &["--message-id", &paid.to_string(), "--format", "json"]).await;
    assert_eq!(code, 0, "{out}");
    let report = json(&out);
    assert_eq!(report["found"], true);
    let message = &report["messages"][0];
    assert_eq!((message["topic"].as_str(), message["key"].as_str()), (Some(topic.as_str()), Some("acct-7")));
    let outbox = &message["outboxes"][0];
    assert_eq!((outbox["source"].as_str(), outbox["state"].as_str()), (Some("it-origin"), Some("published")));
    let row = origin
        .client()
        .await
        .query_one("SELECT kafka_partition, kafka_offset FROM relay.outbox WHERE message_id = $1", &[&paid])
        .await
        .unwrap();
    assert_eq!(outbox["kafka_partition"].as_i64(), Some(i64::from(row.get::<_, i32>(0))));
    assert_eq!(outbox["kafka_offset"].as_i64(), Some(row.get::<_, i64>(1)));
    let in_ledger = inbox(message, "ledger");
    assert_eq!(in_ledger["state"], "stored");
    assert_eq!(in_ledger["stored"]["kafka_offset"].as_i64(), Some(row.get::<_, i64>(1)));
    assert_eq!(in_ledger["processing"]["state"], "processed");
    assert_eq!(in_ledger["processing"]["attempts"], 1);
    assert_eq!(in_ledger["processing"]["last_error"], "database busy");
    let in_audit = inbox(message, "audit");
    assert_eq!(in_audit["state"], "stored");
    assert_eq!(in_audit["processing"]["state"], "parked");
    assert_eq!(in_audit["processing"]["park_reason"], "no such account");

    let (code, table) = trace(origin, &both, &topic, &["--message-id", &paid.to_string()]).await;
    assert_eq!(code, 0, "{table}");
    let line = |prefix: &str| {
        table.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or_default().to_string()
    };
    assert!(
        line("outbox it-origin:")
            .contains(&format!("published {}", outbox["published_at"].as_str().unwrap())),
        "{table}"
    );
    assert!(
        line("inbox ledger:").contains("processed")
            && line("inbox ledger:").contains("after 1 failed attempt"),
        "{table}"
    );
    assert!(
        line("inbox audit:").contains("PARKED") && line("inbox audit:").contains("no such account"),
        "{table}"
    );

    // Too big for audit: stored in ledger (waiting its turn), dead-lettered in audit.
    let (code, out) =
        trace(origin, &both, &topic, &["--message-id", &big.to_string(), "--format", "json"]).await;
    assert_eq!(code, 0, "{out}");
    let message = &json(&out)["messages"][0];
    assert_eq!(inbox(message, "ledger")["processing"]["state"], "waiting");
    let in_audit = inbox(message, "audit");
    assert_eq!(in_audit["state"], "dead_lettered");
    assert_eq!(in_audit["dead_letters"][0]["error"], "payload of 1000 bytes exceeds the limit of 400 bytes");

    // The key: both messages, newest first.
    let (code, out) =
        trace(origin, &both, &topic, &["--topic", &topic, "--key", "acct-7", "--format", "json"]).await;
    assert_eq!(code, 0, "{out}");
    let report = json(&out);
    let ids: Vec<&str> = report["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [big.to_string(), paid.to_string()]);

    // An id that exists nowhere: exit 1, said plainly.
    let nowhere = Uuid::new_v4();
    let (code, out) =
        trace(origin, &both, &topic, &["--message-id", &nowhere.to_string(), "--format", "json"]).await;
    assert_eq!(code, 1, "{out}");
    let report = json(&out);
    assert_eq!(
        (report["found"].clone(), report["messages"].as_array().map(Vec::len)),
        (false.into(), Some(0))
    );
    let (code, table) = trace(origin, &both, &topic, &["--message-id", &nowhere.to_string()]).await;
    assert_eq!(code, 1);
    assert_eq!(
        table.trim(),
        format!("NOT FOUND: no message {nowhere} in outboxes it-origin or inboxes ledger, audit (dead letters included)")
    );
}
