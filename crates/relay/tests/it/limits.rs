//! The documented limits, end to end with default settings: a payload of exactly 1 MiB with
//! every other field at its limit (4 KiB key, 64 KiB of headers, long type and trace state) goes
//! from the outbox into the inbox; one byte more is parked with its reason, and the key's next
//! message waits until an operator decides; a payload of many mebibytes is parked from its size
//! without the poller ever reading it. Settings that contradict the limits stop a service
//! at start-up with every problem listed.
use std::{collections::BTreeMap, time::Duration};

use crate::{admin::admin, harness::*, verify::inbox_equals_outbox};

const LIMIT: usize = 1 << 20;

/// Enqueues a message of `size` payload bytes with the key, headers, type and trace context at
/// their documented limits; returns its id.
async fn enqueue_at_limits(origin: &TestDb, topic: &str, key: &str, size: usize) -> uuid::Uuid {
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let msg_type = "t".repeat(relay_config::TYPE_MAX_BYTES);
    let content_type = "c".repeat(relay_config::TYPE_MAX_BYTES);
    let tracestate = format!("vendor={}", "s".repeat(relay_config::TRACESTATE_MAX_BYTES - 7));
    let mut message = relay_outbox::Message::new(topic, key, &payload);
    // 256 headers of 4-byte names and 252-byte values: 65,536 bytes.
    message.headers = (0..relay_config::HEADERS_MAX_COUNT)
        .map(|i| (format!("h{i:03}"), format!("{i:0>252}")))
        .collect::<BTreeMap<_, _>>();
    message.msg_type = &msg_type;
    message.content_type = &content_type;
    message.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    message.tracestate = Some(&tracestate);
    let mut client = origin.client().await;
    let tx = client.transaction().await.expect("begin");
    let id = relay_outbox::enqueue(&tx, &message).await.expect("enqueue at the limits");
    tx.commit().await.expect("commit");
    id
}

fn long_key(n: usize) -> String {
    format!("{n:0>width$}", width = relay_config::KEY_MAX_BYTES)
}

#[tokio::test(flavor = "multi_thread")]
async fn payloads_at_the_documented_limit_go_end_to_end_with_default_settings() {
    let relay = Pipeline::start("documented_limits", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    // 999,780 and 1,000,000 bytes were parked as MessageSizeTooLarge before.
    for (n, size) in [LIMIT, LIMIT - 1, 1_000_000, 999_780].into_iter().enumerate() {
        enqueue_at_limits(origin, &topic, &long_key(n), size).await;
    }
    enqueue_many(origin, &topic, 10, 3, 5).await;
    relay.await_ledger(14).await;
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 14);
    let client = inbox.client().await;
    let sql = "SELECT count(*) FROM relay.inbox WHERE length(payload) = $1 AND length(tracestate) = $2";
    let tracestate = relay_config::TRACESTATE_MAX_BYTES as i32;
    assert_eq!(count(&client, sql, &[&(LIMIT as i32), &tracestate]).await, 1);
    assert_eq!(
        count(
            &relay.origin.client().await,
            "SELECT count(*) FROM relay.outbox WHERE parked_at IS NOT NULL",
            &[]
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_one_byte_over_the_limit_is_parked_and_its_key_waits_for_the_operator() {
    let relay = Pipeline::start("limit_plus_one", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    let over = enqueue_at_limits(origin, &topic, "over", LIMIT + 1).await;
    let next = enqueue_one(origin, &topic, "over", b"the key's next message").await;
    let other = enqueue_one(origin, &topic, "free", b"another key, enqueued after both").await;
    await_inbox(inbox, "ledger", &topic, 1, Duration::from_secs(60)).await;

    let origin_client = origin.client().await;
    let row = origin_client
        .query_one("SELECT id, park_reason FROM relay.outbox WHERE message_id = $1", &[&over])
        .await
        .expect("parked row");
    let reason: Option<String> = row.get(1);
    assert_eq!(reason.as_deref(), Some("payload of 1048577 bytes exceeds the limit of 1048576 bytes"));
    let inbox_client = inbox.client().await;
    let stored = |id: uuid::Uuid| {
        let inbox = &inbox_client;
        async move { count(inbox, "SELECT count(*) FROM relay.inbox WHERE message_id = $1", &[&id]).await }
    };
    // "free" was enqueued after "over"'s next message and went out: the poller passed that row
    // and held it back.
    assert_eq!((stored(other).await, stored(next).await), (1, 0));
    let pending = "SELECT count(*) FROM relay.outbox WHERE message_id = $1 AND published_at IS NULL AND parked_at IS NULL";
    assert_eq!(count(&origin_client, pending, &[&next]).await, 1);

    // A retry with the limit unchanged parks it again; the next message still waits.
    let id = row.get::<_, i64>(0).to_string();
    let (code, _) = admin(origin, &["parked", "retry", "--execute", "--id", &id, "--reason", "test"]).await;
    assert_eq!(code, 0);
    eventually(Duration::from_secs(30), "parked again", || {
        let client = &origin_client;
        async move {
            let sql = "SELECT count(*) FROM relay.outbox WHERE message_id = $1 AND parked_at IS NOT NULL";
            (count(client, sql, &[&over]).await == 1).then_some(())
        }
    })
    .await;
    let (code, _) =
        admin(origin, &["parked", "discard", "--execute", "--id", &id, "--reason", "superseded"]).await;
    assert_eq!(code, 0);
    await_inbox(inbox, "ledger", &topic, 2, Duration::from_secs(60)).await;
    assert_eq!(stored(next).await, 1);
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 2);
}

/// The peak resident memory of a running process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM in kB");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn payloads_of_many_mebibytes_are_parked_from_their_size_without_being_read() {
    // A writer with only relay.enqueue rights can store a payload of up to 1 GB; the poller
    // must park it from its size alone, never holding it in memory, and every other key flows.
    let relay = Pipeline::start("huge_payloads_unread", 2).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 20, 5, 5).await;
    let client = origin.client().await;
    // Built in the server, so the test does not send them either: 64 MiB and 96 MiB.
    let sizes: [i32; 2] = [64 << 20, 96 << 20];
    let mut huge = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        let sql = "SELECT relay.enqueue($1, $2, convert_to(repeat('x', $3), 'UTF8'))";
        let row = client.query_one(sql, &[&topic, &format!("huge-{n}"), size]).await.expect("enqueue");
        huge.push(row.get::<_, uuid::Uuid>(0));
    }
    let after = enqueue_one(origin, &topic, "huge-0", b"the key's next message").await;
    enqueue_many(origin, &topic, 20, 5, 5).await;
    relay.await_ledger(40).await;

    let reasons = eventually(Duration::from_secs(60), "both huge rows parked", || {
        let (client, huge) = (&client, &huge);
        async move {
            let mut reasons = Vec::new();
            for id in huge {
                let sql = "SELECT park_reason FROM relay.outbox WHERE message_id = $1";
                reasons.push(client.query_one(sql, &[id]).await.ok()?.get::<_, Option<String>>(0)?);
            }
            Some(reasons)
        }
    })
    .await;
    for (reason, size) in reasons.iter().zip(sizes) {
        assert_eq!(reason, &format!("payload of {size} bytes exceeds the limit of {LIMIT} bytes"));
    }
    let pid = relay.poller.child.id().expect("poller running");
    let peak = peak_rss(pid);
    assert!(peak < sizes[0] as u64, "the poller's peak memory of {peak} bytes shows it read a huge payload");
    let pending = "SELECT count(*) FROM relay.outbox WHERE message_id = $1 AND published_at IS NULL AND parked_at IS NULL";
    assert_eq!(count(&client, pending, &[&after]).await, 1, "the key's next message waits behind it");
    let sql = "SELECT count(*) FROM relay.inbox WHERE key LIKE 'huge-%'";
    assert_eq!(count(&inbox.client().await, sql, &[]).await, 0);
    let published = "SELECT count(*) FROM relay.outbox WHERE topic = $1 AND published_at IS NOT NULL";
    assert_eq!(count(&client, published, &[&topic]).await, 40);
}

async fn exits_listing(binary: &str, vars: &[(&str, &str)], expected: &[&str]) {
    let env: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut service = spawn("contradictory_sizes", "service", binary, &env);
    let status = tokio::time::timeout(Duration::from_secs(30), service.child.wait())
        .await
        .expect("exits promptly")
        .expect("wait");
    let stderr = service.log_text();
    assert_eq!(status.code(), Some(2), "{stderr}");
    for line in expected {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}

#[tokio::test]
async fn size_settings_that_contradict_the_payload_limits_are_refused_at_start_up() {
    let brokers = brokers();
    exits_listing(
        POLLER,
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/unused"),
            ("KAFKA_BROKERS", &brokers),
            ("OUTBOX_SOURCE", "payments"),
            ("KAFKA_PROPERTY_MESSAGE_MAX_BYTES", "1000000"),
            ("OUTBOX_TOPIC_REFUNDS_MAX_PAYLOAD_BYTES", "4000000"),
        ],
        &[
            "2 problems",
            "OUTBOX_MAX_PAYLOAD_BYTES: a payload of 1048576 bytes",
            "OUTBOX_TOPIC_REFUNDS_MAX_PAYLOAD_BYTES: a payload of 4000000 bytes",
            "does not fit KAFKA_PROPERTY_MESSAGE_MAX_BYTES=1000000",
        ],
    )
    .await;
    exits_listing(
        CONSUMER,
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/unused"),
            ("KAFKA_BROKERS", &brokers),
            ("INBOX_NAME", "ledger"),
            ("INBOX_TOPICS", "payments"),
            ("KAFKA_PROPERTY_MAX_PARTITION_FETCH_BYTES", "1048576"),
            ("KAFKA_PROPERTY_FETCH_MAX_BYTES", "1000000"),
        ],
        &[
            "2 problems",
            "does not fit KAFKA_PROPERTY_MAX_PARTITION_FETCH_BYTES=1048576",
            "does not fit KAFKA_PROPERTY_FETCH_MAX_BYTES=1000000",
        ],
    )
    .await;
}
