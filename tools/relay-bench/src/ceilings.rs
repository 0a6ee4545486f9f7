//! What this machine can do without Relay: raw produce and consume with rdkafka against the same
//! broker, and raw batched inserts into an inbox-shaped table.
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use serde::Serialize;

use crate::stack::Stack;

#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    pub messages: usize,
    /// Idempotent, acks=all producer (the poller's settings), records of the envelope's size.
    pub produce_per_sec: f64,
    /// Consumer with the inbox-consumer's settings, first to last record.
    pub consume_per_sec: f64,
    /// `INSERT ... SELECT FROM unnest(...)` batches of 2,000 into `relay.inbox`, one connection.
    pub insert_per_sec: f64,
}

pub async fn measure(stack: &Stack, n: usize) -> anyhow::Result<Ceilings> {
    let topic = stack.topic("ceiling", 6).await?;
    let props = Default::default();
    let producer: FutureProducer =
        relay_kafka::producer_config(&stack.brokers, "bench-ceiling", &props).create()?;
    let value = vec![7u8; 300];
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("key-{}", i % 1000);
        loop {
            match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&value)) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for delivery in deliveries {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    let produce_per_sec = n as f64 / started.elapsed().as_secs_f64();

    let consumer: StreamConsumer =
        relay_kafka::consumer_config(&stack.brokers, &format!("ceiling-{topic}"), "bench-ceiling", &props)
            .set("session.timeout.ms", "6000")
            .create()?;
    consumer.subscribe(&[&topic])?;
    let mut stream = consumer.stream();
    let mut first = None;
    for _ in 0..n {
        stream.next().await.ok_or_else(|| anyhow::anyhow!("consumer stream ended"))??;
        first.get_or_insert_with(Instant::now);
    }
    let consume_per_sec = n as f64 / first.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());

    let db = stack.database("relay_bench_ceiling", relay_db::Schema::Inbox).await?;
    let insert = db
        .prepare(
            "INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload, headers,
                                      sequence, created_at, kafka_topic, kafka_partition, kafka_offset)
             SELECT 'ceiling', m.id, 'bench', 't', m.key, '', '', m.payload, '{}', m.seq, now(), 't', 0, m.seq
             FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::bigint[]) AS m(id, key, payload, seq)
             ON CONFLICT (inbox, message_id) DO NOTHING",
        )
        .await?;
    let started = Instant::now();
    let payload = vec![7u8; 128];
    for chunk in (0..n as i64).collect::<Vec<_>>().chunks(2_000) {
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|_| uuid::Uuid::new_v4()).collect();
        let keys: Vec<String> = chunk.iter().map(|i| format!("key-{}", i % 1000)).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|_| payload.as_slice()).collect();
        db.execute(&insert, &[&ids, &keys, &payloads, &chunk]).await?;
    }
    let insert_per_sec = n as f64 / started.elapsed().as_secs_f64();
    drop(db);
    stack.drop_databases(&["relay_bench_ceiling"]).await?;
    Ok(Ceilings { messages: n, produce_per_sec, consume_per_sec, insert_per_sec })
}
