//! Evidence in the logs survives summarising: with `LOG_REPEAT_SUMMARY_SECS` on (a long window),
//! each outbox row parked and each record dead-lettered is still written on a line of its own
//! naming it (the outbox row id; the partition and offset) and its reason, however many come at
//! once, so an operator finds every one in the log, not one line and a count.
use std::time::Duration;

use crate::{harness::*, hostile::Hostile};

/// Items of each kind: enough that summarising would have folded them into one line and a count.
const ITEMS: usize = 12;

/// The log lines containing `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_parked_row_is_logged_with_its_id_and_reason_while_repeats_are_summarised() {
    let (origin, topic) = (TestDb::new().await, topic(1).await);
    let mut env = poller_env(&origin, &topic);
    env.insert("LOG_REPEAT_SUMMARY_SECS".into(), "60".into());
    env.insert("OUTBOX_MAX_PAYLOAD_BYTES".into(), "64".into());
    let mut poller = spawn("log_evidence_parked", "poller", POLLER, &env);
    await_table(&origin, "relay.outbox").await;
    for i in 0..ITEMS {
        enqueue_one(&origin, &topic, &format!("key-{i}"), &[b'x'; 200]).await;
    }
    let client = origin.client().await;
    let parked: Vec<i64> = eventually(Duration::from_secs(60), "every oversized row parked", || async {
        let rows = client
            .query("SELECT id FROM relay.outbox WHERE parked_at IS NOT NULL ORDER BY id", &[])
            .await
            .ok()?;
        (rows.len() == ITEMS).then(|| rows.iter().map(|r| r.get(0)).collect())
    })
    .await;
    poller.terminate(Duration::from_secs(30)).await;
    let log = poller.log_text();
    let lines = lines_with(&log, "parking outbox row");
    assert_eq!(lines.len(), ITEMS, "one line per parked row:\n{log}");
    for id in &parked {
        let line = lines.iter().find(|l| l.contains(&format!("outbox_id={id} "))).unwrap_or_else(|| {
            panic!("no line names parked row {id}:\n{log}");
        });
        assert!(line.contains("exceeds the limit of 64 bytes"), "the reason is on the line: {line}");
    }
    assert!(!log.contains("parking outbox row: it cannot be sent as it is (repeated"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dead_letter_is_logged_with_its_position_and_reason_while_repeats_are_summarised() {
    let (inbox, topic) = (TestDb::new().await, topic(1).await);
    let mut env = consumer_env(&inbox, "ledger", &topic);
    env.insert("LOG_REPEAT_SUMMARY_SECS".into(), "60".into());
    let mut consumer = spawn("log_evidence_dead", "consumer", CONSUMER, &env);
    let producer = Hostile::new();
    for i in 0..ITEMS {
        let value = format!("not an envelope {i}");
        producer.send(&topic, Some(format!("key-{i}").as_bytes()), Some(value.as_bytes()), &[]);
    }
    producer.flush();
    await_table(&inbox, "relay.dead_letter").await;
    let client = inbox.client().await;
    let dead: Vec<(i32, i64)> =
        eventually(Duration::from_secs(120), "every record dead-lettered", || async {
            let rows = client
                .query(
                    "SELECT kafka_partition, kafka_offset FROM relay.dead_letter WHERE inbox = 'ledger'",
                    &[],
                )
                .await
                .ok()?;
            (rows.len() == ITEMS).then(|| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await;
    consumer.terminate(Duration::from_secs(30)).await;
    let log = consumer.log_text();
    let lines = lines_with(&log, "dead-lettering record");
    // A batch write that failed and was retried logs its dead letters again: at least one each.
    assert!(lines.len() >= ITEMS, "one line per dead letter:\n{log}");
    for (partition, offset) in &dead {
        let position = format!("partition={partition} offset={offset} ");
        let line = lines.iter().find(|l| l.contains(&position)).unwrap_or_else(|| {
            panic!("no line names the dead letter at {position}:\n{log}");
        });
        assert!(line.contains("reason="), "the reason is on the line: {line}");
    }
    assert!(!log.contains("dead-lettering record (repeated"), "{log}");
}
