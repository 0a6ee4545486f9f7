//! The reconciler against real databases: it names exactly the injected discrepancies.
use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;

use crate::{
    harness::*,
    verify::{inbox_equals_outbox, inbox_holds_outbox},
};

const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");

/// Runs the reconciler once with JSON output; returns the exit code, the report and stdout.
pub(crate) async fn reconcile(relay: &Pipeline, extra_args: &[&str]) -> (i32, Value, String) {
    // Outboxes and subscriptions through the environment, inboxes as flags: both paths in use.
    let output = tokio::process::Command::new(RECONCILER)
        .env_clear()
        .env("RECONCILE_OUTBOXES", format!("it-origin={}", relay.origin.url))
        .env("RECONCILE_SUBSCRIPTIONS", format!("ledger={}", relay.topic))
        .args(["--inbox", &format!("ledger={}", relay.inbox.url)])
        .args(["--grace-secs", "0", "--stuck-secs", "0", "--bucket-size", "50", "--format", "json"])
        .args(extra_args)
        .output()
        .await
        .expect("run reconciler");
    report_of(output)
}

/// The exit code, the JSON report and the whole stdout of a one-shot reconciler run; fails the
/// test when the reconciler could not run at all (exit code 2).
pub(crate) fn report_of(output: std::process::Output) -> (i32, Value, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let json_end = stdout.rfind("\n}").map_or(stdout.len(), |i| i + 2);
    let report = serde_json::from_str(&stdout[..json_end]).unwrap_or(Value::Null);
    let code = output.status.code().expect("exit code");
    assert!(code != 2, "reconciler could not run: {}", String::from_utf8_lossy(&output.stderr));
    (code, report, stdout)
}

pub(crate) fn ids(value: &Value) -> BTreeSet<String> {
    value["ids"].as_array().expect("ids").iter().map(|v| v.as_str().expect("id").to_string()).collect()
}

async fn delivered(messages: usize) -> Pipeline {
    let relay = Pipeline::start("reconcile", 2).await;
    enqueue_many(&relay.origin, &relay.topic, messages, 13, 50).await;
    relay.await_ledger(messages as i64).await;
    assert_eq!(inbox_equals_outbox(&relay.origin, &relay.inbox, "ledger", &relay.topic).await, messages);
    relay
}

#[tokio::test(flavor = "multi_thread")]
async fn names_exactly_the_missing_extra_mismatched_and_stuck_messages() {
    let relay = delivered(500).await;
    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["clean"], true);
    assert_eq!(report["pairs"][0]["buckets_compared"], 11, "ids 1..=500 in buckets of 50");

    let inbox = relay.inbox.client().await;
    let origin = relay.origin.client().await;
    let uuid_texts = |rows: Vec<tokio_postgres::Row>| -> BTreeSet<String> {
        rows.iter().map(|r| r.get::<_, uuid::Uuid>(0).to_string()).collect()
    };
    let deleted = uuid_texts(
        inbox
            .query("DELETE FROM relay.inbox WHERE sequence IN (7, 120, 121) RETURNING message_id", &[])
            .await
            .unwrap(),
    );
    let corrupted = uuid_texts(
        inbox
            .query(
                "UPDATE relay.inbox SET payload = 'tampered' WHERE sequence = 333 RETURNING message_id",
                &[],
            )
            .await
            .unwrap(),
    );
    let forged = uuid::Uuid::new_v4();
    inbox
        .execute(
            "INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload, headers,
                                      sequence, created_at, kafka_topic, kafka_partition, kafka_offset)
             VALUES ('ledger', $1, 'it-origin', $2, 'k', '', '', 'forged', '{}', 250, now() - interval '1 minute', $2, 0, 0)",
            &[&forged, &relay.topic],
        )
        .await
        .unwrap();
    // A row on a topic no poller publishes stays unpublished: stuck.
    let stuck = uuid_texts(
        origin.query("SELECT relay.enqueue('nobody-publishes-this', 'k', 'x'::bytea)", &[]).await.unwrap(),
    );

    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(report["clean"], false);
    let pair = &report["pairs"][0];
    assert_eq!(ids(&pair["missing"]), deleted);
    assert_eq!(ids(&pair["extra"]), BTreeSet::from([forged.to_string()]));
    assert_eq!(ids(&pair["mismatched"]), corrupted);
    assert_eq!(ids(&report["outboxes"][0]["stuck"]), stuck);
    assert_eq!(report["outboxes"][0]["parked_count"], 0);
    assert_eq!(ids(&report["inboxes"][0]["extra_unknown_source_or_topic"]), BTreeSet::new());
    // Sequences 7, 120-121, 250 and 333 live in buckets 0, 2, 5 and 6: only those are read row by row.
    assert_eq!(pair["buckets_differing"], 4, "{pair}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purged_range_is_reported_as_purged_not_as_missing_or_extra() {
    let relay = delivered(300).await;
    let origin = relay.origin.client().await;
    let inbox = relay.inbox.client().await;
    // Retention at the origin removed ids below 100; at the inbox, sequences below 40.
    origin.batch_execute("DELETE FROM relay.outbox WHERE id < 100; INSERT INTO relay.outbox_purged (below_id) VALUES (100)").await.unwrap();
    inbox
        .batch_execute(
            "DELETE FROM relay.inbox WHERE sequence < 40;
             INSERT INTO relay.inbox_purged (inbox, source, below_sequence) VALUES ('ledger', 'it-origin', 40)",
        )
        .await
        .unwrap();
    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 0, "{stdout}");
    let pair = &report["pairs"][0];
    assert_eq!(pair["purged_at_origin"]["below"], 100);
    assert_eq!(pair["purged_at_origin"]["unverifiable_rows"], 60, "inbox sequences 40..=99");
    assert_eq!(pair["purged_at_inbox"]["below"], 40);
    assert_eq!(pair["purged_at_inbox"]["unverifiable_rows"], 0, "the outbox has nothing below 100 left");
    for finding in ["missing", "extra", "mismatched"] {
        assert_eq!(pair[finding]["count"], 0, "{finding}: {pair}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_purged_to_its_newest_row_is_not_lagging() {
    let relay = delivered(100).await;
    let inbox = relay.inbox.client().await;
    // Inbox retention deleted every row of the source, up to and including sequence 100.
    inbox
        .batch_execute(
            "DELETE FROM relay.inbox;
             INSERT INTO relay.inbox_purged (inbox, source, below_sequence) VALUES ('ledger', 'it-origin', 101)",
        )
        .await
        .unwrap();
    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 0, "{stdout}");
    let pair = &report["pairs"][0];
    assert_eq!(pair["lag_messages"], 0, "every published message was received, then purged: {pair}");
    assert_eq!(pair["purged_at_inbox"]["below"], 101);

    // A message published after the purge and not yet received is lag again.
    let origin = relay.origin.client().await;
    origin
        .batch_execute(
            "INSERT INTO relay.outbox (topic, key, payload, published_at, kafka_partition, kafka_offset)
             SELECT topic, 'late', 'x', now(), 0, 1000 FROM relay.outbox LIMIT 1",
        )
        .await
        .unwrap();
    let (_, report, _) = reconcile(&relay, &[]).await;
    assert_eq!(report["pairs"][0]["lag_messages"], 1, "{}", report["pairs"][0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_re_drives_missing_messages_and_the_next_run_is_clean() {
    let relay = delivered(200).await;
    let inbox = relay.inbox.client().await;
    let deleted: BTreeSet<String> = inbox
        .query("DELETE FROM relay.inbox WHERE sequence % 40 = 0 RETURNING message_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, uuid::Uuid>(0).to_string())
        .collect();
    assert_eq!(deleted.len(), 5);

    // A dry run changes nothing.
    let (code, report, stdout) = reconcile(&relay, &["--repair"]).await;
    assert_eq!(code, 1);
    assert_eq!(ids(&report["pairs"][0]["missing"]), deleted);
    assert!(stdout.contains("repair (dry run): would re-publish 5 message(s)"), "{stdout}");
    let origin = relay.origin.client().await;
    assert_eq!(count(&origin, "SELECT count(*) FROM relay.outbox WHERE published_at IS NULL", &[]).await, 0);

    let (code, _, stdout) =
        reconcile(&relay, &["--repair", "--execute", "--operator", "it-tests", "--reason", "test"]).await;
    assert_eq!(code, 1, "this run still saw them missing");
    assert!(stdout.contains("repair: re-published 5 message(s)"), "{stdout}");
    relay.await_ledger(200).await;
    let (code, report, stdout) = reconcile(&relay, &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["clean"], true);
    eventually(Duration::from_secs(30), "re-driven rows marked published again", || async {
        let n = count(&origin, "SELECT count(*) FROM relay.outbox WHERE published_at IS NULL", &[]).await;
        (n == 0).then_some(())
    })
    .await;
    assert_eq!(inbox_holds_outbox(&relay.origin, &relay.inbox, "ledger", &relay.topic, false).await, 200);
}

#[tokio::test]
async fn bad_arguments_are_all_reported_with_exit_code_2() {
    let output = tokio::process::Command::new(RECONCILER)
        .env_clear()
        .args(["--outbox", "no-equals-sign", "--inbox", "ledger=mysql://x", "--bucket-size", "0"])
        .output()
        .await
        .expect("run reconciler");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for expected in [
        "--outbox: entry 1 is not SOURCE=URL",
        "--inbox: ledger: URL must be a postgres:// URL",
        "inbox ledger has no subscription",
        "--bucket-size: 0 is outside 1..=",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in {stderr}");
    }
}

fn serve(relay: &Pipeline, name: &str, settle_secs: &str) -> (Service, String) {
    let addr = free_addr();
    let env = [
        ("RECONCILE_OUTBOXES", format!("it-origin={}", relay.origin.url)),
        ("RECONCILE_INBOXES", format!("ledger={}", relay.inbox.url)),
        ("RECONCILE_SUBSCRIPTIONS", format!("ledger={}", relay.topic)),
        ("RECONCILE_SERVE", "true".into()),
        ("RECONCILE_INTERVAL_SECS", "1".into()),
        ("RECONCILE_GRACE_SECS", "0".into()),
        ("RECONCILE_STUCK_SECS", "3600".into()),
        ("RECONCILE_BUCKET_SIZE", "50".into()),
        ("RECONCILE_SETTLE_SECS", settle_secs.into()),
        ("RECONCILE_METRICS_ADDR", addr.clone()),
    ];
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    (spawn("reconcile_serve", name, RECONCILER, &env), addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn service_mode_logs_and_counts_findings_and_skips_settled_ranges() {
    let relay = delivered(200).await;

    // Nothing settles: every cycle re-reads everything, so a deletion is found.
    let (watcher, addr) = serve(&relay, "unsettled", "3600");
    eventually(Duration::from_secs(30), "a clean cycle", || async {
        let text = scrape(&addr).await?;
        (sample(&text, "relay_reconcile_clean", &[])? == 1.0).then_some(())
    })
    .await;
    // The endpoints its Kubernetes probes use: alive, and ready after a completed cycle.
    assert_eq!(http_get(&addr, "/healthz").await, Some((200, "ok\n".into())));
    assert_eq!(http_get(&addr, "/readyz").await, Some((200, "reconcile: ok\n".into())));
    let inbox = relay.inbox.client().await;
    let deleted: uuid::Uuid = inbox
        .query_one("DELETE FROM relay.inbox WHERE sequence = 77 RETURNING message_id", &[])
        .await
        .unwrap()
        .get(0);
    let missing = ["kind=\"missing\"", "inbox=\"ledger\"", "source=\"it-origin\""];
    eventually(Duration::from_secs(30), "the missing message counted", || async {
        let text = scrape(&addr).await?;
        (sample(&text, "relay_reconcile_findings", &missing)? == 1.0).then_some(())
    })
    .await;
    let text = scrape(&addr).await.expect("metrics");
    assert_eq!(sample(&text, "relay_reconcile_clean", &[]), Some(0.0));
    assert_eq!(
        sample(&text, "relay_reconcile_findings", &["kind=\"extra\"", "source=\"it-origin\""]),
        Some(0.0)
    );
    let log = watcher.log_text();
    assert!(
        log.lines().any(|l| l.contains("reconciliation finding")
            && l.contains("missing")
            && l.contains(&deleted.to_string())),
        "no log line names {deleted}:\n{log}"
    );

    // Everything settles at once: after the first cycle the verified range is not read again.
    let (_settled, addr) = serve(&relay, "settled", "0");
    let first = eventually(Duration::from_secs(30), "a first cycle", || async {
        sample(&scrape(&addr).await?, "relay_reconcile_rows_read", &[])
    })
    .await;
    let later = eventually(Duration::from_secs(30), "a cycle that skips verified buckets", || async {
        let rows = sample(&scrape(&addr).await?, "relay_reconcile_rows_read", &[])?;
        (rows < first).then_some(rows)
    })
    .await;
    assert!(later < first, "rows read {first} then {later}");
}
