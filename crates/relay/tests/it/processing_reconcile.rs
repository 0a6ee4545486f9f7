//! The reconciler's "unprocessed" finding against real services: messages an inbox's
//! receiving service has not processed in time and the ones it parked, in the one-shot report
//! (JSON and table) and in service mode's metrics and log, until an operator resolves them.
use std::collections::BTreeSet;

use serde_json::Value;
use uuid::Uuid;

use crate::{
    admin::{admin, admin_raw},
    harness::*,
    health::await_metric,
    processing_ops::{done, fail},
    reconcile::{ids, reconcile},
};

const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");

#[tokio::test(flavor = "multi_thread")]
async fn the_reconciler_reports_messages_not_processed_in_time_and_parked_ones_until_resolved() {
    let relay = Pipeline::start("processing_reconcile", 1).await;
    enqueue_many(&relay.origin, &relay.topic, 6, 2, 6).await;
    relay.await_ledger(6).await;
    let (code, report, stdout) = reconcile(&relay, &["--unprocessed-secs", "3600"]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["inboxes"][0]["unprocessed"], Value::Null, "no processing, no finding");

    let mut inbox = relay.inbox.client().await;
    inbox.execute("SELECT relay.enable_processing('ledger', 1, 0, 0)", &[]).await.unwrap();
    let (code, report, stdout) = reconcile(&relay, &["--unprocessed-secs", "3600"]).await;
    assert_eq!(code, 0, "six young unprocessed messages are not late: {stdout}");
    assert_eq!(report["inboxes"][0]["unprocessed"]["late"]["count"], 0);

    // Key 0 (1, 3, 5): 1 parked. Key 1 (2, 4, 6): 2 stored two hours ago, not processed.
    let id = |seq: i64| {
        let inbox = &inbox;
        async move {
            let sql = "SELECT message_id FROM relay.inbox WHERE sequence = $1";
            inbox.query_one(sql, &[&seq]).await.expect("row").get::<_, Uuid>(0)
        }
    };
    let (s1, s2) = (id(1).await, id(2).await);
    assert_eq!(fail(&mut inbox, "ledger", s1, "unknown account").await, "parked");
    inbox
        .execute("UPDATE relay.inbox SET received_at = now() - interval '2 hours' WHERE sequence = 2", &[])
        .await
        .unwrap();
    let (code, report, stdout) = reconcile(&relay, &["--unprocessed-secs", "3600"]).await;
    assert_eq!(code, 1, "{stdout}");
    let found = &report["inboxes"][0]["unprocessed"];
    assert_eq!(ids(&found["late"]), BTreeSet::from([s2.to_string()]), "{found}");
    assert_eq!(found["parked_count"], 1);
    assert_eq!(found["parked"][0]["message_id"], s1.to_string());
    assert_eq!(found["parked"][0]["reason"], "unknown account");
    for (what, ids) in [("missing", 0), ("extra", 0), ("mismatched", 0)] {
        assert_eq!(report["pairs"][0][what]["count"], ids, "delivery itself is complete");
    }
    let (_, table, _) = admin_raw(&relay.inbox, &["processing", "list", "--inbox", "ledger"]).await;
    assert!(table.contains("unknown account"), "{table}");
    let output = reconcile_table(&relay, &["--unprocessed-secs", "3600"]).await;
    assert!(output.contains(&format!("unprocessed in ledger for over 3600s (1):\n  {s2}")), "{output}");
    assert!(
        output.contains(&format!("parked by the receiving service of ledger (1):\n  {s1}  unknown account")),
        "{output}"
    );

    // Processed and skipped: clean again; with a threshold of 0 the four others are late.
    done(&mut inbox, "ledger", s2).await;
    let (code, _) = admin(
        &relay.inbox,
        &["processing", "skip", "--execute", "--inbox", "ledger", "--all", "--reason", "test"],
    )
    .await;
    assert_eq!(code, 0);
    let (code, report, stdout) = reconcile(&relay, &["--unprocessed-secs", "3600"]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["clean"], true);
    let (code, report, _) = reconcile(&relay, &["--unprocessed-secs", "0"]).await;
    assert_eq!(code, 1);
    assert_eq!(report["inboxes"][0]["unprocessed"]["late"]["count"], 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_mode_counts_and_logs_unprocessed_and_parked_messages() {
    let relay = Pipeline::start("processing_reconcile_serve", 1).await;
    enqueue_many(&relay.origin, &relay.topic, 4, 2, 4).await;
    relay.await_ledger(4).await;
    let mut inbox = relay.inbox.client().await;
    inbox.execute("SELECT relay.enable_processing('ledger', 1, 0, 0)", &[]).await.unwrap();
    let sql = "SELECT message_id FROM relay.inbox WHERE sequence = $1";
    let s1: Uuid = inbox.query_one(sql, &[&1i64]).await.unwrap().get(0);
    assert_eq!(fail(&mut inbox, "ledger", s1, "unknown account").await, "parked");
    inbox
        .execute(
            "UPDATE relay.inbox SET received_at = now() - interval '2 hours' WHERE sequence IN (2, 4)",
            &[],
        )
        .await
        .unwrap();
    let addr = free_addr();
    let env = [
        ("RECONCILE_OUTBOXES", format!("it-origin={}", relay.origin.url)),
        ("RECONCILE_INBOXES", format!("ledger={}", relay.inbox.url)),
        ("RECONCILE_SUBSCRIPTIONS", format!("ledger={}", relay.topic)),
        ("RECONCILE_SERVE", "true".into()),
        ("RECONCILE_INTERVAL_SECS", "1".into()),
        ("RECONCILE_GRACE_SECS", "0".into()),
        ("RECONCILE_UNPROCESSED_SECS", "3600".into()),
        ("RECONCILE_METRICS_ADDR", addr.clone()),
    ];
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let watcher = spawn("processing_reconcile_serve", "reconciler", RECONCILER, &env);
    let ledger = ["inbox=\"ledger\""];
    await_metric(&addr, "relay_reconcile_unprocessed", &ledger, 2.0).await;
    await_metric(&addr, "relay_reconcile_unprocessed_parked", &ledger, 1.0).await;
    await_metric(&addr, "relay_reconcile_clean", &[], 0.0).await;
    let log = watcher.log_text();
    assert!(
        log.lines().any(|l| l.contains("unprocessed_parked")
            && l.contains(&s1.to_string())
            && l.contains("unknown account")),
        "no log line names {s1}:\n{log}"
    );
    let (code, _) = admin(
        &relay.inbox,
        &["processing", "skip", "--execute", "--inbox", "ledger", "--all", "--reason", "test"],
    )
    .await;
    assert_eq!(code, 0);
    await_metric(&addr, "relay_reconcile_unprocessed_parked", &ledger, 0.0).await;
    await_metric(&addr, "relay_reconcile_unprocessed", &ledger, 2.0).await;
}

/// The reconciler's table output for `relay`.
async fn reconcile_table(relay: &Pipeline, extra_args: &[&str]) -> String {
    let output = tokio::process::Command::new(RECONCILER)
        .env_clear()
        .args(["--outbox", &format!("it-origin={}", relay.origin.url)])
        .args(["--inbox", &format!("ledger={}", relay.inbox.url)])
        .args(["--subscription", &format!("ledger={}", relay.topic)])
        .args(["--grace-secs", "0", "--stuck-secs", "0"])
        .args(extra_args)
        .output()
        .await
        .expect("run reconciler");
    String::from_utf8_lossy(&output.stdout).to_string()
}
