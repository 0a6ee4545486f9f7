//! Retention with the real services: old published outbox rows and old inbox dedup entries are
//! deleted in batches, as a contiguous prefix whose purge marker is exact, and nothing that still
//! has to be sent is deleted. The reconciler stays clean across the purged ranges.
use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use crate::{harness::*, verify::inbox_equals_outbox};

const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");

/// An origin with a poller and an inbox `ledger` with a consumer, each with extra variables.
struct Setup {
    origin: TestDb,
    inbox: TestDb,
    topic: String,
    poller: Service,
    consumer: Service,
}

async fn start(test: &str, poller_extra: &[(&str, &str)], consumer_extra: &[(&str, &str)]) -> Setup {
    let with = |mut env: BTreeMap<String, String>, extra: &[(&str, &str)]| {
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    // One partition: the consumer stores records in the order the poller sent them.
    let topic = topic(1).await;
    let poller = spawn(test, "poller", POLLER, &with(poller_env(&origin, &topic), poller_extra));
    let consumer =
        spawn(test, "consumer", CONSUMER, &with(consumer_env(&inbox, "ledger", &topic), consumer_extra));
    await_table(&origin, "relay.outbox").await;
    await_table(&inbox, "relay.inbox").await;
    Setup { origin, inbox, topic, poller, consumer }
}

/// Runs the reconciler once (JSON). Rows pending for less than an hour are not stuck.
async fn reconcile(setup: &Setup) -> (i32, Value) {
    let output = tokio::process::Command::new(RECONCILER)
        .env_clear()
        .args(["--outbox", &format!("it-origin={}", setup.origin.url)])
        .args(["--inbox", &format!("ledger={}", setup.inbox.url)])
        .args(["--subscription", &format!("ledger={}", setup.topic)])
        .args(["--grace-secs", "0", "--stuck-secs", "3600", "--bucket-size", "50", "--format", "json"])
        .output()
        .await
        .expect("run reconciler");
    let (code, report, _) = crate::reconcile::report_of(output);
    (code, report)
}

/// Waits until `service` logged a retention summary line holding every one of `fields`. The
/// line is written when a pass has finished, so the database shows that pass's whole effect.
async fn await_summary(service: &Service, summary: &str, fields: &[&str]) {
    eventually(Duration::from_secs(60), &format!("{summary} with {fields:?}"), || async {
        let log = service.log_text();
        log.lines().any(|l| l.contains(summary) && fields.iter().all(|f| l.contains(f))).then_some(())
    })
    .await;
}

async fn ids(client: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    client.query(sql, &[]).await.expect("ids").iter().map(|r| r.get(0)).collect()
}

async fn outbox_marker(origin: &tokio_postgres::Client) -> i64 {
    count(origin, "SELECT below_id FROM relay.outbox_purged", &[]).await
}

fn no_pair_findings(report: &Value) {
    let pair = &report["pairs"][0];
    for finding in ["missing", "extra", "mismatched"] {
        assert_eq!(pair[finding]["count"], 0, "{finding}: {pair}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_retention_deletes_only_the_old_published_prefix_in_batches_with_an_exact_marker() {
    let setup = start(
        "retention_outbox",
        &[
            ("OUTBOX_RETENTION_HOURS", "1"),
            ("OUTBOX_RETENTION_BATCH", "7"),
            ("OUTBOX_RETENTION_INTERVAL_MS", "200"),
            ("OUTBOX_MAX_PAYLOAD_BYTES", "1000"),
        ],
        &[],
    )
    .await;
    let origin = setup.origin.client().await;
    // Ids 1-40 and 42-60 on the poller's topic; 41 on a topic no poller publishes: it stays pending.
    enqueue_many(&setup.origin, &setup.topic, 40, 13, 10).await;
    origin.execute("SELECT relay.enqueue('nobody-publishes-this', 'k', 'x'::bytea)", &[]).await.unwrap();
    enqueue_many(&setup.origin, &setup.topic, 19, 13, 10).await;
    assert_eq!(ids(&origin, "SELECT id FROM relay.outbox ORDER BY id").await, (1..=60).collect::<Vec<_>>());
    await_inbox(&setup.inbox, "ledger", &setup.topic, 59, Duration::from_secs(120)).await;
    assert_eq!(inbox_equals_outbox(&setup.origin, &setup.inbox, "ledger", &setup.topic).await, 59);
    assert_eq!(count(&origin, "SELECT count(*) FROM relay.outbox_purged", &[]).await, 0, "nothing was old");

    // Every published row but 31 was published two hours ago: 1-30 go (in batches of 7), and
    // 31, published just now, stops the run although 32-40 are old.
    origin
        .execute(
            "UPDATE relay.outbox SET published_at = now() - interval '2 hours'
             WHERE published_at IS NOT NULL AND id <> 31",
            &[],
        )
        .await
        .unwrap();
    await_summary(&setup.poller, "outbox retention pass", &["deleted=30", "batches=5", "below_id=31"]).await;
    assert_eq!(ids(&origin, "SELECT id FROM relay.outbox ORDER BY id").await, (31..=60).collect::<Vec<_>>());
    assert_eq!(outbox_marker(&origin).await, 31);

    // Once 31 is old too, the run goes on to the unpublished row 41 and stops there.
    origin
        .execute("UPDATE relay.outbox SET published_at = now() - interval '2 hours' WHERE id = 31", &[])
        .await
        .unwrap();
    await_summary(&setup.poller, "outbox retention pass", &["deleted=10", "batches=2", "below_id=41"]).await;
    assert_eq!(ids(&origin, "SELECT id FROM relay.outbox ORDER BY id").await, (41..=60).collect::<Vec<_>>());
    assert_eq!(outbox_marker(&origin).await, 41);
    assert_eq!(
        count(&origin, "SELECT count(*) FROM relay.outbox WHERE id = 41 AND published_at IS NULL", &[]).await,
        1,
        "the unpublished row is still there"
    );

    // The reconciler skips the purged range (the inbox still holds sequences 1-40) and is clean.
    let (code, report) = reconcile(&setup).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["clean"], true);
    assert_eq!(report["pairs"][0]["purged_at_origin"]["below"], 41);
    assert_eq!(report["pairs"][0]["purged_at_origin"]["unverifiable_rows"], 40);
    no_pair_findings(&report);

    // A parked row stops retention too. 61 is too large for the broker limit and is parked;
    // 62-66 are published. The test stands in for a poller of 41's topic and marks it published.
    let big = vec![7u8; 2000];
    origin.execute("SELECT relay.enqueue($1, 'k', $2)", &[&setup.topic, &big]).await.unwrap();
    enqueue_many(&setup.origin, &setup.topic, 5, 5, 5).await;
    eventually(Duration::from_secs(60), "61 parked and 62-66 published", || async {
        let parked =
            count(&origin, "SELECT count(*) FROM relay.outbox WHERE id = 61 AND parked_at IS NOT NULL", &[]);
        let published = count(
            &origin,
            "SELECT count(*) FROM relay.outbox WHERE id > 61 AND published_at IS NOT NULL",
            &[],
        );
        (parked.await == 1 && published.await == 5).then_some(())
    })
    .await;
    origin
        .execute(
            "UPDATE relay.outbox SET published_at = now() - interval '2 hours'
             WHERE id = 41 OR published_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    await_summary(&setup.poller, "outbox retention pass", &["deleted=20", "batches=3", "below_id=61"]).await;
    assert_eq!(ids(&origin, "SELECT id FROM relay.outbox ORDER BY id").await, (61..=66).collect::<Vec<_>>());
    assert_eq!(outbox_marker(&origin).await, 61);
    let (code, report) = reconcile(&setup).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["outboxes"][0]["parked_count"], 1, "the only finding is the parked row");
    assert_eq!(report["outboxes"][0]["stuck"]["count"], 0);
    assert_eq!(report["pairs"][0]["purged_at_origin"]["below"], 61);
    no_pair_findings(&report);

    // An operator discards the parked row; once the discard is old, it goes with the rest.
    origin
        .execute(
            "UPDATE relay.outbox SET discarded_at = now() - interval '2 hours', discard_reason = 'test'
             WHERE id = 61",
            &[],
        )
        .await
        .unwrap();
    await_summary(&setup.poller, "outbox retention pass", &["deleted=6", "batches=1", "below_id=67"]).await;
    assert_eq!(count(&origin, "SELECT count(*) FROM relay.outbox", &[]).await, 0);
    assert_eq!(outbox_marker(&origin).await, 67);
}

#[tokio::test(flavor = "multi_thread")]
async fn inbox_retention_deletes_old_dedup_entries_per_source_with_an_exact_marker() {
    let mut setup = start(
        "retention_inbox",
        &[],
        &[
            ("INBOX_RETENTION_HOURS", "1"),
            ("INBOX_RETENTION_BATCH", "7"),
            ("INBOX_RETENTION_INTERVAL_MS", "200"),
        ],
    )
    .await;
    enqueue_many(&setup.origin, &setup.topic, 60, 13, 10).await;
    await_inbox(&setup.inbox, "ledger", &setup.topic, 60, Duration::from_secs(120)).await;
    assert_eq!(inbox_equals_outbox(&setup.origin, &setup.inbox, "ledger", &setup.topic).await, 60);
    let inbox = setup.inbox.client().await;
    let seqs =
        "SELECT sequence FROM relay.inbox WHERE inbox = 'ledger' AND source = 'it-origin' ORDER BY sequence";
    assert_eq!(ids(&inbox, seqs).await, (1..=60).collect::<Vec<_>>());

    // Old rows beside it: two from another source of ledger (found by the source scan and purged
    // under their own marker), one of another inbox and an old dead letter (neither is touched).
    let row = |inbox: &str, source: &str, sequence: i64| {
        format!(
            "INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload,
                                      headers, sequence, created_at, kafka_topic, kafka_partition, kafka_offset,
                                      received_at)
             VALUES ('{inbox}', gen_random_uuid(), '{source}', 'old', 'k', '', '', 'x', '{{}}', {sequence},
                     now() - interval '3 hours', 'old', 0, {sequence}, now() - interval '3 hours');"
        )
    };
    inbox
        .batch_execute(&format!(
            "{}{}{}
             INSERT INTO relay.dead_letter (inbox, kafka_topic, kafka_partition, kafka_offset, error, created_at)
             VALUES ('ledger', 'old', 0, 1, 'old and unresolved', now() - interval '3 hours');",
            row("ledger", "other-origin", 1000),
            row("ledger", "other-origin", 1001),
            row("audit", "it-origin", 1),
        ))
        .await
        .unwrap();
    await_summary(
        &setup.consumer,
        "inbox retention pass",
        &["source=other-origin", "deleted=2", "batches=1", "below_sequence=1002"],
    )
    .await;

    // Sequences 1-45 but 31 were received two hours ago: 1-30 go, 31 (young) stops the run.
    inbox
        .execute(
            "UPDATE relay.inbox SET received_at = now() - interval '2 hours'
             WHERE inbox = 'ledger' AND source = 'it-origin' AND sequence <= 45 AND sequence <> 31",
            &[],
        )
        .await
        .unwrap();
    let it_origin = ["source=it-origin", "deleted=30", "batches=5", "below_sequence=31"];
    await_summary(&setup.consumer, "inbox retention pass", &it_origin).await;
    assert_eq!(ids(&inbox, seqs).await, (31..=60).collect::<Vec<_>>());
    let marker = "SELECT below_sequence FROM relay.inbox_purged WHERE inbox = 'ledger' AND source = $1";
    assert_eq!(count(&inbox, marker, &[&"it-origin"]).await, 31);

    // Once 31 is old, the run goes on to 46, the first row received recently.
    inbox
        .execute(
            "UPDATE relay.inbox SET received_at = now() - interval '2 hours'
             WHERE inbox = 'ledger' AND source = 'it-origin' AND sequence = 31",
            &[],
        )
        .await
        .unwrap();
    let it_origin = ["source=it-origin", "deleted=15", "batches=3", "below_sequence=46"];
    await_summary(&setup.consumer, "inbox retention pass", &it_origin).await;
    assert_eq!(ids(&inbox, seqs).await, (46..=60).collect::<Vec<_>>());
    assert_eq!(count(&inbox, marker, &[&"it-origin"]).await, 46);
    assert_eq!(count(&inbox, marker, &[&"other-origin"]).await, 1002);
    assert_eq!(count(&inbox, "SELECT count(*) FROM relay.inbox WHERE source = 'other-origin'", &[]).await, 0);
    assert_eq!(count(&inbox, "SELECT count(*) FROM relay.inbox WHERE inbox = 'audit'", &[]).await, 1);
    assert_eq!(count(&inbox, "SELECT count(*) FROM relay.dead_letter", &[]).await, 1);

    // The trade-off: 5 and 50 are sent again. 50's entry is still there, so it is dropped as a
    // duplicate; 5's entry was purged, so 5 is stored a second time, as a new row.
    let received_50 = "SELECT received_at FROM relay.inbox WHERE inbox = 'ledger' AND sequence = 50";
    let before: std::time::SystemTime = inbox.query_one(received_50, &[]).await.unwrap().get(0);
    let origin = setup.origin.client().await;
    origin
        .execute(
            "UPDATE relay.outbox SET published_at = NULL, kafka_partition = NULL, kafka_offset = NULL
             WHERE id IN (5, 50)",
            &[],
        )
        .await
        .unwrap();
    // One partition: once 61 is stored, the re-sent 5 and 50 before it were handled.
    enqueue_many(&setup.origin, &setup.topic, 1, 1, 1).await;
    await_inbox(&setup.inbox, "ledger", &setup.topic, 17, Duration::from_secs(60)).await;
    let expected: Vec<i64> = [5].into_iter().chain(46..=61).collect();
    assert_eq!(ids(&inbox, seqs).await, expected);
    let after: std::time::SystemTime = inbox.query_one(received_50, &[]).await.unwrap().get(0);
    assert_eq!(before, after, "50 was deduplicated");
    let status = setup.consumer.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    let log = setup.consumer.log_text();
    assert!(
        log.lines().any(|l| l.contains("inbox consumer stopped")
            && l.contains("inserted=62")
            && l.contains("duplicates=1")),
        "60 + 5 again + 61 inserted, 50 dropped:\n{log}"
    );

    // The reconciler does not check below the inbox's marker (5 lies there) and is clean.
    let (code, report) = reconcile(&setup).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["clean"], true);
    assert_eq!(report["pairs"][0]["purged_at_inbox"]["below"], 46);
    assert_eq!(report["pairs"][0]["purged_at_inbox"]["unverifiable_rows"], 45);
    no_pair_findings(&report);
}
