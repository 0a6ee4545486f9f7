//! Poison, one test per kind. Receiving side: a record the consumer cannot store becomes a dead
//! letter with its reason, and the partition keeps flowing. Origin side: a row the producer or
//! broker refuses for good is parked with its reason, and every other row keeps flowing.
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::Row;

use crate::{
    harness::*,
    verify::{inbox_equals_outbox, inbox_holds_outbox_except},
};

/// Produces a record straight to partition 0 of `topic`, bypassing the outbox.
pub(crate) async fn produce_raw(topic: &str, key: &[u8], value: &[u8]) {
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("raw producer");
    producer
        .send(FutureRecord::to(topic).key(key).payload(value).partition(0), Duration::from_secs(30))
        .await
        .expect("produce raw record");
}

/// Dead letters of inbox `ledger`, in partition order: topic, raw key, raw value, error.
async fn dead_letters(inbox: &TestDb) -> Vec<Row> {
    inbox
        .client()
        .await
        .query(
            "SELECT kafka_topic, raw_key, raw_value, error FROM relay.dead_letter WHERE inbox = 'ledger'
             ORDER BY kafka_partition, kafka_offset",
            &[],
        )
        .await
        .expect("dead letters")
}

/// The message id inside a dead letter's raw value.
pub(crate) fn message_id_of(raw_value: &[u8]) -> uuid::Uuid {
    relay_envelope::decode(Some(raw_value)).expect("a valid envelope").message_id
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_bytes_become_a_dead_letter_and_later_messages_still_arrive() {
    let relay = Pipeline::start("garbage", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 10, 2, 10).await;
    relay.await_ledger(10).await;

    let garbage = b"\xde\xad\xbe\xef not protobuf \x00\xff".to_vec();
    produce_raw(&topic, b"k-garbage", &garbage).await;
    enqueue_many(origin, &topic, 40, 2, 10).await;

    relay.await_ledger(50).await;
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 50);
    let dead = dead_letters(inbox).await;
    assert_eq!(dead.len(), 1, "exactly the poison record is dead-lettered");
    assert_eq!(dead[0].get::<_, String>(0), topic);
    assert_eq!(dead[0].get::<_, Vec<u8>>(1), b"k-garbage");
    assert_eq!(dead[0].get::<_, Vec<u8>>(2), garbage);
    let error: String = dead[0].get(3);
    assert!(error.contains("not a protobuf envelope"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_envelope_of_an_unknown_version_becomes_a_dead_letter_and_later_messages_still_arrive() {
    let relay = Pipeline::start("future_version", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 10, 2, 10).await;
    relay.await_ledger(10).await;

    let future = relay_envelope::Envelope {
        version: 99,
        message_id: uuid::Uuid::new_v4().to_string(),
        source: "elsewhere".into(),
        topic: topic.clone(),
        payload: b"from a newer relay".to_vec(),
        ..Default::default()
    };
    let future_bytes = relay_envelope::encode(&future);
    produce_raw(&topic, b"k-future", &future_bytes).await;
    enqueue_many(origin, &topic, 40, 2, 10).await;

    relay.await_ledger(50).await;
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 50);
    let dead = dead_letters(inbox).await;
    assert_eq!(dead.len(), 1, "exactly the future envelope is dead-lettered");
    assert_eq!(dead[0].get::<_, Vec<u8>>(1), b"k-future");
    assert_eq!(dead[0].get::<_, Vec<u8>>(2), future_bytes);
    let error: String = dead[0].get(3);
    assert!(error.contains("unsupported envelope version 99"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_over_the_inbox_limit_becomes_a_dead_letter_and_later_messages_still_arrive() {
    // The poller's limit is the default 1 MiB, so the message is published; the inbox takes 400 B.
    let relay = Pipeline::start_with("oversized", 1, &[], &[("INBOX_MAX_PAYLOAD_BYTES", "400")]).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 10, 2, 5).await;
    let big = enqueue_one(origin, &topic, "key-0", &[0x5a; 1000]).await;
    enqueue_many(origin, &topic, 10, 2, 5).await;

    relay.await_ledger(20).await;
    assert_eq!(inbox_holds_outbox_except(origin, inbox, "ledger", &topic, true, &[big]).await, 20);
    let dead = dead_letters(inbox).await;
    assert_eq!(dead.len(), 1, "exactly the oversized message is dead-lettered");
    assert_eq!(dead[0].get::<_, Vec<u8>>(1), b"key-0");
    assert_eq!(message_id_of(&dead[0].get::<_, Vec<u8>>(2)), big);
    assert_eq!(dead[0].get::<_, String>(3), "payload of 1000 bytes exceeds the limit of 400 bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_the_database_refuses_becomes_a_dead_letter_and_later_messages_still_arrive() {
    let relay = Pipeline::start("db_refusal", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    // A constraint other than the dedup key, as a receiving service might add to its inbox.
    inbox
        .client()
        .await
        .batch_execute(
            "ALTER TABLE relay.inbox ADD CONSTRAINT it_no_forbidden_key CHECK (key <> 'forbidden')",
        )
        .await
        .expect("add constraint");
    enqueue_many(origin, &topic, 10, 2, 5).await;
    let forbidden = enqueue_one(origin, &topic, "forbidden", b"refused by the inbox").await;
    enqueue_many(origin, &topic, 10, 2, 5).await;

    relay.await_ledger(20).await;
    assert_eq!(inbox_holds_outbox_except(origin, inbox, "ledger", &topic, true, &[forbidden]).await, 20);
    let dead = dead_letters(inbox).await;
    assert_eq!(dead.len(), 1, "exactly the refused message is dead-lettered");
    assert_eq!(dead[0].get::<_, Vec<u8>>(1), b"forbidden");
    assert_eq!(message_id_of(&dead[0].get::<_, Vec<u8>>(2)), forbidden);
    let error: String = dead[0].get(3);
    assert!(error.starts_with("database refused the message"), "{error}");
    assert!(error.contains("it_no_forbidden_key"), "{error}");
}

/// Waits until the outbox row `id` is parked; returns its reason.
async fn await_parked(origin: &TestDb, id: uuid::Uuid) -> String {
    let client = origin.client().await;
    eventually(Duration::from_secs(60), &format!("outbox row {id} parked"), || {
        let client = &client;
        async move {
            let row = client
                .query_one("SELECT park_reason FROM relay.outbox WHERE message_id = $1", &[&id])
                .await
                .expect("outbox row");
            row.get::<_, Option<String>>(0)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_payload_limit_is_parked_its_key_waits_and_every_other_row_arrives() {
    let poller = [("OUTBOX_MAX_PAYLOAD_BYTES", "2000")];
    let relay = Pipeline::start_with("too_large", 2, &poller, &[]).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 20, 4, 5).await;
    let big = enqueue_one(origin, &topic, "key-big", &[0xab; 5000]).await;
    let after = enqueue_one(origin, &topic, "key-big", b"the same key, after the parked row").await;
    enqueue_many(origin, &topic, 20, 4, 5).await;

    let reason = await_parked(origin, big).await;
    assert_eq!(reason, "payload of 5000 bytes exceeds the limit of 2000 bytes");
    await_inbox(inbox, "ledger", &topic, 40, Duration::from_secs(120)).await;
    let inbox = inbox.client().await;
    let stored = |id: uuid::Uuid| {
        let inbox = &inbox;
        async move { count(inbox, "SELECT count(*) FROM relay.inbox WHERE message_id = $1", &[&id]).await }
    };
    assert_eq!(stored(big).await, 0);
    assert_eq!(stored(after).await, 0, "a later row of the parked row's key waits for the operator");
    let pending = "SELECT count(*) FROM relay.outbox WHERE message_id = $1 AND published_at IS NULL AND parked_at IS NULL";
    assert_eq!(count(&origin.client().await, pending, &[&after]).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_parked_holds_key_off_the_later_rows_of_a_parked_key_flow_past_it() {
    let poller = [("OUTBOX_MAX_PAYLOAD_BYTES", "2000"), ("OUTBOX_PARKED_HOLDS_KEY", "false")];
    let relay = Pipeline::start_with("parked_does_not_hold", 1, &poller, &[]).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    let big = enqueue_one(origin, &topic, "key-big", &[0xab; 5000]).await;
    enqueue_one(origin, &topic, "key-big", b"the same key, after the parked row").await;
    enqueue_many(origin, &topic, 10, 2, 5).await;

    assert_eq!(await_parked(origin, big).await, "payload of 5000 bytes exceeds the limit of 2000 bytes");
    relay.await_ledger(11).await;
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_for_a_topic_that_does_not_exist_is_parked_and_every_other_row_arrives() {
    // The poller publishes every topic of its outbox (OUTBOX_TOPICS empty). Tansu does not
    // create topics on a producer's request, and the producer is told not to ask either, so the
    // topic stays missing on Apache Kafka with auto.create.topics.enable too. librdkafka fails
    // the record once the topic has stayed unknown for topic.metadata.propagation.max.ms
    // (30 s by default; only the row's key waits that long): 2 s here.
    let poller = [
        ("OUTBOX_TOPICS", ""),
        ("KAFKA_PROPERTY_ALLOW_AUTO_CREATE_TOPICS", "false"),
        ("KAFKA_PROPERTY_TOPIC_METADATA_PROPAGATION_MAX_MS", "2000"),
    ];
    let relay = Pipeline::start_with("unknown_topic", 2, &poller, &[]).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    let nowhere = format!("it-never-created-{}", unique());
    enqueue_many(origin, &topic, 20, 4, 5).await;
    let lost = enqueue_one(origin, &nowhere, "key-0", b"for a topic nobody created").await;
    enqueue_many(origin, &topic, 20, 4, 5).await;

    let reason = await_parked(origin, lost).await;
    assert!(reason.contains("UnknownTopic"), "{reason}");
    relay.await_ledger(40).await;
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 40);
}
