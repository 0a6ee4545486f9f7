//! CloudEvents binary content mode end to end: a topic published as CloudEvents is read by a
//! plain Kafka consumer with no Relay code, and stored by the inbox-consumer as exactly the row
//! the envelope format gives, signed; the reconciler finds both inboxes clean; a message whose
//! header takes a format name is parked. Hostile records: `cloudevents_hostile`.
use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer},
    message::{Headers, Message},
    TopicPartitionList,
};

use crate::{harness::*, verify::inbox_equals_outbox};

const KEY: &str = "cl0udevents-k3y-0123456789abcdefghijk";
const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");

/// `OUTBOX_TOPIC_<TOPIC>_FORMAT` for `topic`.
fn format_variable(topic: &str) -> String {
    format!("OUTBOX_TOPIC_{}_FORMAT", relay_config::topic_env_name(topic))
}

/// The offset after the last record the poller published to each partition of `topic`, from
/// the broker's acknowledgements it recorded.
async fn next_offsets(origin: &TestDb, topic: &str, partitions: i32) -> Vec<i64> {
    let client = origin.client().await;
    let mut next = Vec::new();
    for partition in 0..partitions {
        let row = client
            .query_one(
                "SELECT coalesce(max(kafka_offset) + 1, 0) FROM relay.outbox WHERE topic = $1 AND kafka_partition = $2",
                &[&topic, &partition],
            )
            .await
            .expect("published offsets");
        next.push(row.get(0));
    }
    next
}

/// Commits `offsets` for consumer group `group`, so a consumer of that group starts there.
fn commit_start(group: &str, topic: &str, offsets: &[i64]) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets.iter().enumerate() {
        list.add_partition_offset(topic, partition as i32, rdkafka::Offset::Offset(*offset)).expect("offset");
    }
    consumer.assign(&list).expect("assign");
    consumer.commit(&list, CommitMode::Sync).expect("commit the start offsets");
}

/// The offsets consumer group `group` committed on `topic` (-1 where none).
fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(30)).expect("committed offsets");
    (0..partitions)
        .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(offset)) => offset,
            _ => -1,
        })
        .collect()
}

/// A record as a plain Kafka client sees it.
struct Plain {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Reads `n` records of `topic` from `from` (one offset per partition) with nothing but rdkafka.
fn read_plainly(topic: &str, from: &[i64], n: usize) -> Vec<Plain> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("plain-{}", unique()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("plain consumer");
    let mut list = TopicPartitionList::new();
    for (partition, offset) in from.iter().enumerate() {
        list.add_partition_offset(topic, partition as i32, rdkafka::Offset::Offset(*offset)).expect("offset");
    }
    consumer.assign(&list).expect("assign");
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while records.len() < n {
        assert!(std::time::Instant::now() < deadline, "read {} of {n} records", records.len());
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.expect("consume");
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8(h.value.unwrap_or_default().to_vec()).expect("text"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Plain {
            key: message.key().unwrap_or_default().to_vec(),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    records
}

/// Every content column of inbox `name`, by message id, as text.
async fn inbox_rows(db: &TestDb, name: &str) -> BTreeMap<uuid::Uuid, String> {
    let rows = db
        .client()
        .await
        .query(
            "SELECT message_id, format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', source, topic, key, msg_type,
                    content_type, encode(payload, 'hex'), headers, traceparent, tracestate, sequence,
                    extract(epoch FROM created_at))
             FROM relay.inbox WHERE inbox = $1",
            &[&name],
        )
        .await
        .expect("inbox rows");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloudevents_topic_is_read_plainly_and_stored_as_the_envelope_row() {
    let test = "cloudevents_plain";
    let (origin, env_db, ce_db) = (TestDb::new().await, TestDb::new().await, TestDb::new().await);
    let topic = topic(2).await;
    let signing = [("OUTBOX_SIGNING_KEY_ID", "k1"), ("OUTBOX_SIGNING_KEY", KEY)];
    let mut poller_vars = poller_env(&origin, &topic);
    poller_vars.extend(signing.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut env_vars = consumer_env(&env_db, "ledger", &topic);
    env_vars.insert("INBOX_VERIFY_KEYS".into(), format!("k1={KEY}"));
    let mut poller = spawn(test, "poller-envelope", POLLER, &poller_vars);
    let _env_consumer = spawn(test, "consumer-envelope", CONSUMER, &env_vars);
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 40, 7, 10).await;
    let untyped = origin
        .client()
        .await
        .query_one(
            "SELECT relay.enqueue($1, 'key-u', '\\x00ff'::bytea, '{\"x-tenant\":\"acme\"}', '', '',
                    '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'vendor=1')",
            &[&topic],
        )
        .await
        .expect("enqueue an untyped, traced message")
        .get::<_, uuid::Uuid>(0);
    await_inbox(&env_db, "ledger", &topic, 41, Duration::from_secs(90)).await;
    poller.terminate(Duration::from_secs(30)).await;

    // The same rows again, now as CloudEvents: a re-publication, as after a restored backup.
    let start = next_offsets(&origin, &topic, 2).await;
    let ce_group = format!("ledger-ce-{}", unique());
    commit_start(&ce_group, &topic, &start);
    origin
        .client()
        .await
        .execute("UPDATE relay.outbox SET published_at = NULL WHERE topic = $1", &[&topic])
        .await
        .expect("publish again");
    poller_vars.insert(format_variable(&topic), "cloudevents".into());
    let _poller = spawn(test, "poller-cloudevents", POLLER, &poller_vars);
    let mut ce_vars = consumer_env(&ce_db, "mirror", &topic);
    ce_vars.insert("INBOX_GROUP_ID".into(), ce_group);
    ce_vars.insert("INBOX_VERIFY_KEYS".into(), format!("k1={KEY}"));
    let _ce_consumer = spawn(test, "consumer-cloudevents", CONSUMER, &ce_vars);
    await_inbox(&ce_db, "mirror", &topic, 41, Duration::from_secs(90)).await;

    // A plain consumer reads the payload as the value and the attributes and headers as headers.
    let records = read_plainly(&topic, &start, 41);
    let outbox = origin.client().await;
    for record in &records {
        let id: uuid::Uuid = record.headers["ce_id"].parse().expect("ce_id is a UUID");
        let row = outbox
            .query_one(
                "SELECT payload, key, coalesce(msg_type, ''), headers, id, created_at FROM relay.outbox WHERE message_id = $1",
                &[&id],
            )
            .await
            .expect("the outbox row");
        assert_eq!(record.value, row.get::<_, Vec<u8>>(0), "value is the payload");
        assert_eq!(record.key, row.get::<_, String>(1).into_bytes(), "record key is the message key");
        assert_eq!(record.headers["ce_partitionkey"], row.get::<_, String>(1));
        assert_eq!(record.headers["ce_specversion"], "1.0");
        assert_eq!(record.headers["ce_source"], "it-origin");
        assert_eq!(record.headers["ce_relaytopic"], topic);
        assert_eq!(record.headers["ce_relaysequence"], row.get::<_, i64>(4).to_string());
        assert!(record.headers["ce_time"].ends_with('Z'), "{}", record.headers["ce_time"]);
        assert_eq!(record.headers["relay-key-id"], "k1");
        assert_eq!(record.headers["relay-signature"].len(), 64);
        let user: serde_json::Value = row.get(3);
        for (name, value) in user.as_object().expect("headers") {
            assert_eq!(record.headers[name], value.as_str().expect("text"), "user header {name}");
        }
        if id == untyped {
            assert_eq!(record.headers["ce_type"], "relay.untyped");
            assert_eq!(record.headers["ce_relayuntyped"], "true");
            assert_eq!(
                record.headers["traceparent"],
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            );
            assert_eq!(record.headers["tracestate"], "vendor=1");
            assert_eq!(record.headers["x-tenant"], "acme");
        } else {
            assert_eq!(record.headers["ce_type"], row.get::<_, String>(2));
        }
    }
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r.headers["ce_id"].as_str()).collect();
    assert_eq!(ids.len(), 41, "each message once");

    // The same message is the same row in either format, column by column.
    let (from_envelopes, from_cloudevents) =
        (inbox_rows(&env_db, "ledger").await, inbox_rows(&ce_db, "mirror").await);
    assert_eq!(from_envelopes.len(), 41);
    assert_eq!(from_cloudevents, from_envelopes);
    assert_eq!(inbox_equals_outbox(&origin, &ce_db, "mirror", &topic).await, 41);
    // The envelope inbox met every message again as a CloudEvent: duplicates, not conflicts.
    let end = next_offsets(&origin, &topic, 2).await;
    assert_eq!(end.iter().sum::<i64>(), 82, "each message once per format");
    let env_group = env_vars["INBOX_GROUP_ID"].clone();
    eventually(Duration::from_secs(60), "the envelope inbox committed past the CloudEvents", || async {
        (committed(&env_group, &topic, 2) == end).then_some(())
    })
    .await;
    for db in [&env_db, &ce_db] {
        let dead = count(&db.client().await, "SELECT count(*) FROM relay.dead_letter", &[]).await;
        assert_eq!(dead, 0, "no dead letter and no conflicting duplicate");
    }

    // The reconciler compares the outbox with both inboxes and finds them clean.
    let output = tokio::process::Command::new(RECONCILER)
        .env_clear()
        .env("RECONCILE_OUTBOXES", format!("it-origin={}", origin.url))
        .env("RECONCILE_SUBSCRIPTIONS", format!("ledger={topic} mirror={topic}"))
        .args(["--inbox", &format!("ledger={}", env_db.url), "--inbox", &format!("mirror={}", ce_db.url)])
        .args(["--grace-secs", "0", "--stuck-secs", "0", "--format", "json"])
        .output()
        .await
        .expect("run reconciler");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_whose_header_takes_a_cloudevents_name_is_parked_and_its_neighbours_flow() {
    let relay =
        Pipeline::start_with("cloudevents_reserved", 1, &[("OUTBOX_FORMAT", "cloudevents")], &[]).await;
    let client = relay.origin.client().await;
    let mut parked = Vec::new();
    for (n, name) in ["ce_id", "Content-Type", "traceparent", "relay-signature"].into_iter().enumerate() {
        enqueue_one(&relay.origin, &relay.topic, &format!("fine-{n}"), b"fine").await;
        let headers = serde_json::json!({ name: "x" });
        let id: uuid::Uuid = client
            .query_one(
                "SELECT relay.enqueue($1, $2, 'x'::bytea, $3)",
                &[&relay.topic, &format!("reserved-{n}"), &headers],
            )
            .await
            .expect("enqueue")
            .get(0);
        parked.push((id, name));
    }
    relay.await_ledger(4).await;
    for (id, name) in parked {
        let reason = eventually(Duration::from_secs(30), "parked", || async {
            let row = client
                .query_one("SELECT park_reason FROM relay.outbox WHERE message_id = $1", &[&id])
                .await
                .ok()?;
            row.get::<_, Option<String>>(0)
        })
        .await;
        assert!(
            reason.starts_with(&format!("header {name:?} is reserved on a CloudEvents topic")),
            "{reason}"
        );
    }
    assert_eq!(count(&relay.inbox.client().await, "SELECT count(*) FROM relay.inbox", &[]).await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciler_trace_finds_a_dead_lettered_cloudevent_by_its_id() {
    let relay = Pipeline::start_with(
        "cloudevents_trace",
        1,
        &[("OUTBOX_FORMAT", "cloudevents")],
        &[("INBOX_MAX_PAYLOAD_BYTES", "400")],
    )
    .await;
    enqueue_one(&relay.origin, &relay.topic, "acct-7", b"pay 10").await;
    let big = enqueue_one(&relay.origin, &relay.topic, "acct-7", &[7; 1000]).await;
    relay.await_ledger(1).await;
    eventually(Duration::from_secs(60), "the big message dead-lettered", || async {
        (count(&relay.inbox.client().await, "SELECT count(*) FROM relay.dead_letter", &[]).await == 1)
            .then_some(())
    })
    .await;
    let inboxes = [("ledger", &relay.inbox)];
    let args = ["--message-id", &big.to_string(), "--format", "json"];
    let (code, out) = crate::trace::trace(&relay.origin, &inboxes, &relay.topic, &args).await;
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let ledger = &report["messages"][0]["inboxes"][0];
    assert_eq!(ledger["state"], "dead_lettered", "{out}");
    assert_eq!(ledger["dead_letters"][0]["error"], "payload of 1000 bytes exceeds the limit of 400 bytes");
    let (code, out) = crate::trace::trace(
        &relay.origin,
        &inboxes,
        &relay.topic,
        &["--topic", &relay.topic, "--key", "acct-7", "--format", "json"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["messages"].as_array().map(Vec::len), Some(2), "both messages of the key: {out}");
}
