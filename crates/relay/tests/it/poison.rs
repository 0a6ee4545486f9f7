//! Records that cannot be stored become dead letters, and the partition keeps flowing.
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{harness::*, verify::inbox_equals_outbox};

async fn produce_raw(topic: &str, key: &[u8], value: &[u8]) {
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("raw producer");
    producer
        .send(FutureRecord::to(topic).key(key).payload(value).partition(0), Duration::from_secs(30))
        .await
        .expect("produce raw record");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_bytes_become_a_dead_letter_and_later_messages_still_arrive() {
    let relay = Pipeline::start("garbage", 1).await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 10, 2, 10).await;
    relay.await_ledger(10).await;

    // Garbage, then an envelope from the future, both between good messages on one partition.
    let garbage = b"\xde\xad\xbe\xef not protobuf \x00\xff".to_vec();
    produce_raw(&topic, b"k-garbage", &garbage).await;
    let mut future = relay_envelope::Envelope {
        version: 99,
        message_id: uuid::Uuid::new_v4().to_string(),
        source: "elsewhere".into(),
        topic: topic.clone(),
        ..Default::default()
    };
    future.payload = b"from a newer relay".to_vec();
    let future_bytes = relay_envelope::encode(&future);
    produce_raw(&topic, b"k-future", &future_bytes).await;
    enqueue_many(origin, &topic, 40, 2, 10).await;

    relay.await_ledger(50).await;
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 50);
    let db = inbox.client().await;
    let dead = db
        .query(
            "SELECT kafka_topic, raw_key, raw_value, error FROM relay.dead_letter WHERE inbox = 'ledger'
             ORDER BY kafka_offset",
            &[],
        )
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 2, "exactly the two poison records are dead-lettered");
    assert_eq!(dead[0].get::<_, String>(0), topic);
    assert_eq!(dead[0].get::<_, Vec<u8>>(1), b"k-garbage");
    assert_eq!(dead[0].get::<_, Vec<u8>>(2), garbage);
    assert!(
        dead[0].get::<_, String>(3).contains("not a protobuf envelope"),
        "{}",
        dead[0].get::<_, String>(3)
    );
    assert_eq!(dead[1].get::<_, Vec<u8>>(2), future_bytes);
    assert!(dead[1].get::<_, String>(3).contains("unsupported envelope version 99"));
}
