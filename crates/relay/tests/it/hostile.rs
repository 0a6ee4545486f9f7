//! A hostile producer against the consumer: records no Relay poller writes (header names that
//! are not UTF-8, repeated signature headers, headers librdkafka cannot parse, tombstones, null
//! and empty keys and values, huge and many headers) between valid messages. The consumer never
//! exits; each bad record is a dead letter with its reason and every header; the valid ones are
//! stored; offsets move past all of them; a re-drive refuses them again for the same reasons.
//!
//! The records are written with `relay_kafka::raw::send_raw`, which hands librdkafka header
//! names as raw bytes (`rd_kafka_header_add` takes a name and its length). rdkafka's safe API
//! takes names as `&str`, which cannot hold them. It is the same audited module the consumer
//! reads headers with, so the test adds no `unsafe` code of its own.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rdkafka::{
    client::ClientContext,
    producer::{BaseProducer, DeliveryResult, Producer, ProducerContext},
};
use relay_kafka::raw::{send_raw, RawRecordOut};

use crate::harness::*;

/// Collects the errors of the producer's delivery reports.
#[derive(Default, Clone)]
pub(crate) struct Deliveries(Arc<Mutex<Vec<String>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.0.lock().expect("lock").push(error.to_string());
        }
    }
}

/// A producer that writes records exactly as given: any header names, null or empty parts.
pub(crate) struct Hostile {
    producer: BaseProducer<Deliveries>,
    deliveries: Deliveries,
}

impl Hostile {
    pub(crate) fn new() -> Self {
        let deliveries = Deliveries::default();
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("enable.idempotence", "true")
            .set("message.max.bytes", "2000000")
            .create_with_context(deliveries.clone())
            .expect("hostile producer");
        Self { producer, deliveries }
    }

    /// Writes one record to partition 0 of `topic`; [`Hostile::flush`] waits for it.
    pub(crate) fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let record = RawRecordOut { topic, partition: 0, key, value, headers };
        send_raw(&self.producer, &record).expect("enqueue a raw record");
    }

    /// Waits until the broker acknowledged every record; panics on a refusal.
    pub(crate) fn flush(&self) {
        self.producer.flush(Duration::from_secs(60)).expect("flush");
        let errors = self.deliveries.0.lock().expect("lock").clone();
        assert!(errors.is_empty(), "the broker refused records: {errors:?}");
    }
}

const KEY: &str = "h0stile-k3y-0123456789abcdefghijklmnop";

/// A valid envelope for `topic`, and its signature by key `k1`.
fn envelope(topic: &str, n: usize) -> (uuid::Uuid, Vec<u8>, String) {
    let id = uuid::Uuid::new_v4();
    let value = relay_envelope::encode(&relay_envelope::Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: id.to_string(),
        source: "hostile-it".into(),
        topic: topic.into(),
        key: format!("key-{n}"),
        payload: format!("payment {n}").into_bytes(),
        sequence: n as u64,
        ..Default::default()
    });
    let signer = relay_envelope::SigningKey::new("k1", &KEY.to_string().into()).expect("key");
    let signature = signer.sign(&value);
    (id, value, signature)
}

/// What a bad record must become in each inbox: its record key, and the start of its reason
/// in the inbox without keys and in the one that checks signatures.
struct Expected {
    key: Option<Vec<u8>>,
    plain: &'static str,
    signed: &'static str,
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_records_become_dead_letters_and_never_stop_the_consumer_signed_or_not() {
    let db = TestDb::new().await;
    let topic = topic(1).await;
    let plain_addr = free_addr();
    let mut plain_env = consumer_env(&db, "plain", &topic);
    plain_env.insert("RELAY_HTTP_ADDR".into(), plain_addr.clone());
    let mut signed_env = consumer_env(&db, "signed", &topic);
    signed_env.insert("INBOX_VERIFY_KEYS".into(), format!("k1={KEY}"));
    let mut plain = spawn("hostile_records", "plain", CONSUMER, &plain_env);
    let mut signed = spawn("hostile_records", "signed", CONSUMER, &signed_env);
    await_table(&db, "relay.inbox").await;

    let hostile = Hostile::new();
    let mut valid = Vec::new();
    let mut expected = Vec::new();
    let huge = vec![0x5a; 600_000];
    let many: Vec<Vec<u8>> = (0..2000).map(|i| format!("x-many-{i}").into_bytes()).collect();
    let unparseable: Vec<(&[u8], Option<&[u8]>)> = (0..100_001).map(|_| (&b"h"[..], None)).collect();
    for (n, bad_name) in [&b"\xff\xfe"[..], b"\x80", b"\xc0\xaf", b"\xed\xa0\x80"].into_iter().enumerate() {
        // A valid, validly signed message, then one whose only fault is a header name.
        let (id, value, signature) = envelope(&topic, n);
        let signature_headers =
            [(&b"relay-key-id"[..], Some(&b"k1"[..])), (b"relay-signature", Some(signature.as_bytes()))];
        hostile.send(&topic, Some(b"valid"), Some(&value), &signature_headers);
        valid.push(id);
        let (_, value, signature) = envelope(&topic, 100 + n);
        let key = format!("bad-name-{n}").into_bytes();
        let headers = [
            (&b"relay-key-id"[..], Some(&b"k1"[..])),
            (b"relay-signature", Some(signature.as_bytes())),
            (bad_name, Some(b"v")),
        ];
        hostile.send(&topic, Some(&key), Some(&value), &headers);
        let reason = "header 3 has a name that is not UTF-8";
        expected.push(Expected { key: Some(key), plain: reason, signed: reason });
    }
    // Odd but harmless headers: an empty name, a name cut at its NUL, a 600 kB value, 2000
    // headers. Each record is stored by both inboxes.
    for (n, extra) in [
        vec![(&b""[..], Some(&b""[..])), (b"x-nul\0\xff", None)],
        vec![(&b"x-huge"[..], Some(huge.as_slice()))],
        many.iter().map(|name| (name.as_slice(), Some(&b"1"[..]))).collect(),
    ]
    .into_iter()
    .enumerate()
    {
        let (id, value, signature) = envelope(&topic, 10 + n);
        let mut headers =
            vec![(&b"relay-key-id"[..], Some(&b"k1"[..])), (b"relay-signature", Some(signature.as_bytes()))];
        headers.extend(extra);
        hostile.send(&topic, Some(b"odd-but-valid"), Some(&value), &headers);
        valid.push(id);
    }
    // Ambiguous signature headers, also when the second name only reads alike (cut at a NUL).
    let (_, value, signature) = envelope(&topic, 200);
    let sig = Some(signature.as_bytes());
    hostile.send(
        &topic,
        Some(b"twice"),
        Some(&value),
        &[(b"relay-key-id", Some(b"k1")), (b"relay-signature", sig), (b"relay-signature", sig)],
    );
    let reason = "header relay-signature appears 2 times";
    expected.push(Expected { key: Some(b"twice".to_vec()), plain: reason, signed: reason });
    let (_, value, signature) = envelope(&topic, 201);
    let headers = [
        (&b"relay-key-id"[..], Some(&b"k1"[..])),
        (b"relay-key-id\0x", Some(b"k2")),
        (b"relay-signature", Some(signature.as_bytes())),
    ];
    hostile.send(&topic, Some(b"twice-nul"), Some(&value), &headers);
    let reason = "header relay-key-id appears 2 times";
    expected.push(Expected { key: Some(b"twice-nul".to_vec()), plain: reason, signed: reason });
    // More headers than librdkafka parses (100,000), on a valid signed envelope.
    let (_, value, signature) = envelope(&topic, 202);
    let mut headers =
        vec![(&b"relay-key-id"[..], Some(&b"k1"[..])), (b"relay-signature", Some(signature.as_bytes()))];
    headers.extend(unparseable.iter().copied());
    hostile.send(&topic, Some(b"unparseable"), Some(&value), &headers);
    let reason = "the record's headers cannot be parsed";
    expected.push(Expected { key: Some(b"unparseable".to_vec()), plain: reason, signed: reason });
    // Tombstones, a null key, an empty key and value.
    let missing = "signature missing";
    hostile.send(&topic, Some(b"tombstone"), None, &[]);
    expected.push(Expected {
        key: Some(b"tombstone".to_vec()),
        plain: "record has no value",
        signed: missing,
    });
    hostile.send(&topic, None, None, &[(b"\xff", None)]);
    expected.push(Expected {
        key: None,
        plain: "header 1 has a name that is not UTF-8",
        signed: "header 1 has",
    });
    hostile.send(&topic, Some(b""), Some(b""), &[]);
    expected.push(Expected { key: Some(Vec::new()), plain: "record has no value", signed: missing });
    let (id, value, signature) = envelope(&topic, 30);
    hostile.send(
        &topic,
        Some(b"last"),
        Some(&value),
        &[(b"relay-key-id", Some(b"k1")), (b"relay-signature", Some(signature.as_bytes()))],
    );
    valid.push(id);
    hostile.flush();

    let client = db.client().await;
    for inbox in ["plain", "signed"] {
        await_stored_and_dead(&client, inbox, valid.len(), expected.len()).await;
        let stored: Vec<uuid::Uuid> = client
            .query("SELECT message_id FROM relay.inbox WHERE inbox = $1 ORDER BY kafka_offset", &[&inbox])
            .await
            .expect("stored")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(stored, valid, "{inbox}: exactly the valid messages, in order");
        let dead = client
            .query(
                "SELECT raw_key, error, raw_headers FROM relay.dead_letter WHERE inbox = $1 ORDER BY kafka_offset",
                &[&inbox],
            )
            .await
            .expect("dead letters");
        assert_eq!(dead.len(), expected.len(), "{inbox}");
        for (row, want) in dead.iter().zip(&expected) {
            let (key, error): (Option<Vec<u8>>, String) = (row.get(0), row.get(1));
            assert_eq!(key, want.key, "{inbox}: {error}");
            let prefix = if inbox == "plain" { want.plain } else { want.signed };
            assert!(error.starts_with(prefix), "{inbox}: {error:?} should start with {prefix:?}");
            assert!(relay_inbox::KeptHeaders::from_json(&row.get(2)).is_some(), "{inbox}: headers kept");
        }
        // Every header is kept as it arrived, the bad name in hex.
        let kept: serde_json::Value = dead[0].get(2);
        assert_eq!(kept[2], serde_json::json!({ "name": "fffe", "value": "76" }), "{inbox}");
    }
    for (consumer, name) in [(&mut plain, "plain"), (&mut signed, "signed")] {
        assert!(consumer.child.try_wait().expect("status").is_none(), "{name} exited");
        assert!(!consumer.log_text().contains("panicked"), "{name} panicked");
    }

    // A re-drive judges the same records, headers included, and refuses them again.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay-admin"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RELAY_OPERATOR", "it-tests")
        .args([
            "--format",
            "json",
            "dead-letters",
            "redrive",
            "--inbox",
            "plain",
            "--all",
            "--execute",
            "--reason",
            "test",
        ])
        .output()
        .await
        .expect("relay-admin");
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let failing = report["still_failing"].as_array().expect("still failing");
    assert_eq!(failing.len(), expected.len(), "{report}");
    for (failure, want) in failing.iter().zip(&expected) {
        assert!(failure["reason"].as_str().is_some_and(|r| r.starts_with(want.plain)), "{failure}");
    }

    // Restarted, the consumer resumes after the bad records: it reads none of them again.
    assert!(plain.terminate(Duration::from_secs(30)).await.success());
    let plain = spawn("hostile_records", "plain-again", CONSUMER, &plain_env);
    let (id, value, _) = envelope(&topic, 40);
    hostile.send(&topic, Some(b"after-restart"), Some(&value), &[]);
    hostile.flush();
    valid.push(id);
    await_stored_and_dead(&client, "plain", valid.len(), expected.len()).await;
    let text = eventually(Duration::from_secs(30), "the restarted consumer's counters", || {
        let addr = plain_addr.clone();
        async move {
            let text = scrape(&addr).await?;
            sample(&text, "relay_inbox_inserted_total", &["inbox=\"plain\""]).map(|_| text)
        }
    })
    .await;
    assert_eq!(sample(&text, "relay_inbox_inserted_total", &["inbox=\"plain\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "relay_inbox_dead_letters_total", &["inbox=\"plain\""]), Some(0.0), "{text}");
    assert_eq!(sample(&text, "relay_inbox_duplicates_total", &["inbox=\"plain\""]), Some(0.0), "{text}");
    drop(plain);
}

/// Waits until `inbox` holds `stored` messages and `dead` dead letters.
async fn await_stored_and_dead(client: &tokio_postgres::Client, inbox: &str, stored: usize, dead: usize) {
    let what = format!("{stored} messages and {dead} dead letters in inbox {inbox}");
    eventually(Duration::from_secs(90), &what, || async move {
        let sql = "SELECT (SELECT count(*) FROM relay.inbox WHERE inbox = $1),
                          (SELECT count(*) FROM relay.dead_letter WHERE inbox = $1)";
        let row = client.query_one(sql, &[&inbox]).await.ok()?;
        (row.get::<_, i64>(0) == stored as i64 && row.get::<_, i64>(1) == dead as i64).then_some(())
    })
    .await;
}
