//! Records out of their context: a record is stored only on the topic its envelope names, and a
//! message id is stored with one content only. A copy of a genuine record onto another topic is
//! a dead letter, signed or not; a second record with a stored id but other content is a
//! counted conflict; a true redelivery stays a silent duplicate.
use std::{collections::HashMap, time::Duration};

use crate::{harness::*, hostile::Hostile};

const KEY: &str = "r3play-k3y-0123456789abcdefghijklmnop";

fn envelope(id: uuid::Uuid, topic: &str, key: &str, payload: &[u8]) -> relay_envelope::Envelope {
    relay_envelope::Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: id.to_string(),
        source: "replay-it".into(),
        topic: topic.into(),
        key: key.into(),
        payload: payload.to_vec(),
        sequence: 1,
        created_at_unix_micros: 1_700_000_000_000_000,
        ..Default::default()
    }
}

/// The value of `envelope` and its signature headers, as the poller signs them with key `k1`.
fn signed(envelope: &relay_envelope::Envelope) -> (Vec<u8>, String) {
    let value = relay_envelope::encode(envelope);
    let signer = relay_envelope::SigningKey::new("k1", &KEY.to_string().into()).expect("key");
    let signature = signer.sign(&value);
    (value, signature)
}

/// The record key and reason of every dead letter of `inbox`, in offset order.
async fn dead_letters(client: &tokio_postgres::Client, inbox: &str) -> Vec<(Vec<u8>, String)> {
    let sql =
        "SELECT raw_key, error FROM relay.dead_letter WHERE inbox = $1 ORDER BY kafka_topic, kafka_offset";
    client.query(sql, &[&inbox]).await.expect("dead letters").iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn await_counts(client: &tokio_postgres::Client, inbox: &str, stored: i64, dead: i64) {
    let what = format!("{stored} messages and {dead} dead letters in inbox {inbox}");
    eventually(Duration::from_secs(90), &what, || async move {
        let sql = "SELECT (SELECT count(*) FROM relay.inbox WHERE inbox = $1),
                          (SELECT count(*) FROM relay.dead_letter WHERE inbox = $1)";
        let row = client.query_one(sql, &[&inbox]).await.ok()?;
        (row.get::<_, i64>(0) == stored && row.get::<_, i64>(1) == dead).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_copied_onto_another_topic_is_a_dead_letter_signed_or_not() {
    let db = TestDb::new().await;
    let (payments, internal) = (topic(1).await, topic(1).await);
    // `ledger` checks signatures and reads both topics; `audit` checks none and reads payments.
    let mut ledger_env = consumer_env(&db, "ledger", &format!("{payments},{internal}"));
    ledger_env.insert("INBOX_VERIFY_KEYS".into(), format!("k1={KEY}"));
    let audit_env = consumer_env(&db, "audit", &payments);
    let _ledger = spawn("replay_topics", "ledger", CONSUMER, &ledger_env);
    let _audit = spawn("replay_topics", "audit", CONSUMER, &audit_env);
    await_table(&db, "relay.inbox").await;

    let hostile = Hostile::new();
    let send_signed = |topic: &str, key: &[u8], envelope: &relay_envelope::Envelope| {
        let (value, signature) = signed(envelope);
        let headers =
            [(&b"relay-key-id"[..], Some(&b"k1"[..])), (b"relay-signature", Some(signature.as_bytes()))];
        hostile.send(topic, Some(key), Some(&value), &headers);
    };
    let good = envelope(uuid::Uuid::new_v4(), &payments, "acct-1", b"pay 10");
    send_signed(&payments, b"good", &good);
    // A genuine internal message, where it belongs, and copied onto payments, signature and all.
    let internal_message = envelope(uuid::Uuid::new_v4(), &internal, "acct-1", b"move 1000");
    send_signed(&internal, b"internal", &internal_message);
    send_signed(&payments, b"signed-copy", &internal_message);
    // The same unsigned, and an envelope whose topic differs from payments only in case.
    let unsigned = envelope(uuid::Uuid::new_v4(), &internal, "acct-1", b"move 2000");
    hostile.send(&payments, Some(b"unsigned-copy"), Some(&relay_envelope::encode(&unsigned)), &[]);
    let shouting = envelope(uuid::Uuid::new_v4(), &payments.to_uppercase(), "acct-1", b"pay 20");
    send_signed(&payments, b"case", &shouting);
    // A signed internal record whose envelope topic was rewritten to payments: the signature
    // covers the whole value, so the rewrite breaks it.
    let (internal_value, internal_signature) = signed(&internal_message);
    let mut rewritten = internal_message.clone();
    rewritten.topic = payments.clone();
    let rewritten_value = relay_envelope::encode(&rewritten);
    assert_ne!(internal_value, rewritten_value);
    let headers =
        [(&b"relay-key-id"[..], Some(&b"k1"[..])), (b"relay-signature", Some(internal_signature.as_bytes()))];
    hostile.send(&payments, Some(b"rewritten"), Some(&rewritten_value), &headers);
    let last = envelope(uuid::Uuid::new_v4(), &payments, "acct-1", b"pay 30");
    send_signed(&payments, b"last", &last);
    hostile.flush();

    let client = db.client().await;
    await_counts(&client, "ledger", 3, 4).await;
    await_counts(&client, "audit", 3, 3).await;
    let stored = |inbox: &'static str| {
        let client = &client;
        async move {
            let sql = "SELECT message_id, topic, kafka_topic FROM relay.inbox WHERE inbox = $1 ORDER BY seq";
            let rows = client.query(sql, &[&inbox]).await.expect("stored");
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect::<Vec<(uuid::Uuid, String, String)>>()
        }
    };
    let ledger = stored("ledger").await;
    let good_id = uuid::Uuid::parse_str(&good.message_id).expect("id");
    let internal_id = uuid::Uuid::parse_str(&internal_message.message_id).expect("id");
    let last_id = uuid::Uuid::parse_str(&last.message_id).expect("id");
    assert_eq!(ledger.len(), 3);
    for (id, topic, arrived) in &ledger {
        assert_eq!(topic, arrived, "stored only where it belongs");
        assert!([good_id, internal_id, last_id].contains(id));
    }
    // audit got the rewritten record: without signatures, whoever may write to the topic decides.
    let audit: Vec<uuid::Uuid> = stored("audit").await.into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(audit, vec![good_id, internal_id, last_id]);

    let mismatch = |envelope_topic: &str| {
        format!("envelope topic {envelope_topic:?} is not the topic the record arrived on ({payments:?})")
    };
    let ledger_dead = dead_letters(&client, "ledger").await;
    let keys: Vec<&[u8]> = ledger_dead.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"signed-copy"[..], b"unsigned-copy", b"case", b"rewritten"]);
    assert_eq!(ledger_dead[0].1, mismatch(&internal));
    assert!(ledger_dead[1].1.starts_with("signature missing"), "{}", ledger_dead[1].1);
    assert_eq!(ledger_dead[2].1, mismatch(&payments.to_uppercase()));
    assert_eq!(ledger_dead[3].1, "signature does not match the record value (key id \"k1\")");
    let audit_dead = dead_letters(&client, "audit").await;
    assert_eq!(
        audit_dead,
        vec![
            (b"signed-copy".to_vec(), mismatch(&internal)),
            (b"unsigned-copy".to_vec(), mismatch(&internal)),
            (b"case".to_vec(), mismatch(&payments.to_uppercase())),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_with_other_content_is_a_counted_conflict_and_a_redelivery_stays_silent() {
    let db = TestDb::new().await;
    let topic = topic(1).await;
    let mut env = consumer_env(&db, "ledger", &topic);
    let addr = free_addr();
    env.insert("RELAY_HTTP_ADDR".into(), addr.clone());
    let _consumer = spawn("replay_conflicts", "consumer", CONSUMER, &env);
    await_table(&db, "relay.inbox").await;

    let id = uuid::Uuid::new_v4();
    let mut original = envelope(id, &topic, "acct-7", b"pay 100");
    original.headers = HashMap::from([("tenant".into(), "acme".into()), ("region".into(), "eu".into())]);
    let bytes = relay_envelope::encode(&original);
    let hostile = Hostile::new();
    hostile.send(&topic, Some(b"original"), Some(&bytes), &[]);
    hostile.flush();
    let client = db.client().await;
    await_counts(&client, "ledger", 1, 0).await;

    // A byte-equal redelivery, and the same content encoded again (headers are a map: their
    // order on the wire may differ): both silent duplicates.
    hostile.send(&topic, Some(b"redelivered"), Some(&bytes), &[]);
    let mut reordered = original.clone();
    reordered.headers = HashMap::from([("region".into(), "eu".into()), ("tenant".into(), "acme".into())]);
    hostile.send(&topic, Some(b"re-encoded"), Some(&relay_envelope::encode(&reordered)), &[]);
    // The same id with another payload, key or headers: conflicts.
    let mut payload = original.clone();
    payload.payload = b"pay 100000".to_vec();
    let mut key = original.clone();
    key.key = "acct-8".into();
    let mut headers = original.clone();
    headers.headers.insert("tenant".into(), "evil".into());
    for (record_key, changed) in [(&b"payload"[..], &payload), (b"key", &key), (b"headers", &headers)] {
        hostile.send(&topic, Some(record_key), Some(&relay_envelope::encode(changed)), &[]);
    }
    hostile.flush();
    await_counts(&client, "ledger", 1, 3).await;

    let row = client
        .query_one("SELECT payload, key FROM relay.inbox WHERE message_id = $1", &[&id])
        .await
        .expect("row");
    assert_eq!(
        (row.get::<_, Vec<u8>>(0), row.get::<_, String>(1)),
        (b"pay 100".to_vec(), "acct-7".to_string())
    );
    let dead = dead_letters(&client, "ledger").await;
    let keys: Vec<&[u8]> = dead.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"payload"[..], b"key", b"headers"]);
    let prefix = format!("conflicting duplicate: message {id} is stored with content sha256 ");
    let mut stored_digests = Vec::new();
    let mut arriving_digests = Vec::new();
    for (_, reason) in &dead {
        let rest = reason.strip_prefix(&prefix).unwrap_or_else(|| panic!("{reason}"));
        let (stored, arriving) = rest.split_once("; this record's content is sha256 ").expect(reason);
        assert_eq!((stored.len(), arriving.len()), (64, 64), "{reason}");
        stored_digests.push(stored.to_string());
        arriving_digests.push(arriving.to_string());
    }
    assert!(stored_digests.windows(2).all(|w| w[0] == w[1]), "one stored content: {stored_digests:?}");
    arriving_digests.dedup();
    assert_eq!(arriving_digests.len(), 3, "three different contents: {arriving_digests:?}");
    assert!(!arriving_digests.contains(&stored_digests[0]));

    let text = eventually(Duration::from_secs(30), "the conflict counter", || {
        let addr = addr.clone();
        async move {
            let text = scrape(&addr).await?;
            (sample(&text, "relay_inbox_conflicts_total", &["inbox=\"ledger\""])? == 3.0).then_some(text)
        }
    })
    .await;
    assert_eq!(sample(&text, "relay_inbox_duplicates_total", &["inbox=\"ledger\""]), Some(2.0), "{text}");
    assert_eq!(sample(&text, "relay_inbox_dead_letters_total", &["inbox=\"ledger\""]), Some(3.0), "{text}");
    assert_eq!(sample(&text, "relay_inbox_inserted_total", &["inbox=\"ledger\""]), Some(1.0), "{text}");

    // A re-drive compares again: the conflicts stay conflicts.
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
            "ledger",
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
    assert_eq!(failing.len(), 3, "{report}");
    for (failure, (_, reason)) in failing.iter().zip(&dead) {
        assert_eq!(failure["reason"].as_str(), Some(reason.as_str()), "{report}");
    }
}
