//! Signed envelopes end to end: the poller signs every record, the consumer verifies it. Forged
//! and unsigned records become counted dead letters while the stream goes on; keys rotate
//! without losing a message; no key ever shows in a log or a configuration error.
use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::Value;

use crate::{
    harness::*,
    verify::{inbox_equals_outbox, inbox_holds_outbox},
};

const ADMIN: &str = env!("CARGO_BIN_EXE_relay-admin");
/// Keys made of a marker that appears nowhere else, so a leak is easy to find.
const OLD_KEY: &str = "0LDK3Y-4f1c8e2a9b7d6c5e3f0a1b2c3d4e5f60";
const NEW_KEY: &str = "N3WK3Y-7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";

fn signing_vars(id: &'static str, key: &'static str) -> [(&'static str, &'static str); 2] {
    [("OUTBOX_SIGNING_KEY_ID", id), ("OUTBOX_SIGNING_KEY", key)]
}

/// Asserts that no key appears in any log of `services`.
fn assert_no_key_in_logs(services: &[&Service]) {
    for service in services {
        let text = service.log_text();
        assert!(!text.is_empty(), "{} is empty", service.log.display());
        for key in [OLD_KEY, NEW_KEY, "0LDK3Y", "N3WK3Y"] {
            assert!(!text.contains(key), "a key leaked into {}", service.log.display());
        }
    }
}

async fn dead_letter_count(inbox: &TestDb) -> i64 {
    count(&inbox.client().await, "SELECT count(*) FROM relay.dead_letter", &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_records_arrive_and_the_inbox_equals_the_outbox() {
    let verify = format!("k1={OLD_KEY}");
    let relay = Pipeline::start_with(
        "signing_end_to_end",
        3,
        &signing_vars("k1", OLD_KEY),
        &[("INBOX_VERIFY_KEYS", &verify)],
    )
    .await;
    enqueue_many(&relay.origin, &relay.topic, 300, 7, 20).await;
    relay.await_ledger(300).await;
    // Unsigned records are refused (keys set), so every message stored was signed and verified.
    assert_eq!(inbox_equals_outbox(&relay.origin, &relay.inbox, "ledger", &relay.topic).await, 300);
    assert_eq!(dead_letter_count(&relay.inbox).await, 0);
    assert!(relay.consumer.log_text().contains("checking record signatures"));
    assert_no_key_in_logs(&[&relay.poller, &relay.consumer]);
}

/// Produces `value` to partition 0 of `topic` with the given signature headers.
async fn produce_with_headers(topic: &str, key: &[u8], value: &[u8], headers: &[(&str, &str)]) {
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("raw producer");
    let mut owned = OwnedHeaders::new();
    for (name, text) in headers {
        owned = owned.insert(Header { key: name, value: Some(*text) });
    }
    let record = FutureRecord::to(topic).key(key).payload(value).partition(0).headers(owned);
    producer.send(record, Duration::from_secs(30)).await.expect("produce raw record");
}

/// A valid envelope that no outbox wrote.
fn foreign_envelope(topic: &str) -> Vec<u8> {
    relay_envelope::encode(&relay_envelope::Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: uuid::Uuid::new_v4().to_string(),
        source: "intruder".into(),
        topic: topic.into(),
        key: "key-0".into(),
        payload: b"move all the money".to_vec(),
        ..Default::default()
    })
}

/// A dead letter's raw record and reason.
#[derive(Debug)]
struct DeadLetter {
    key: Vec<u8>,
    value: Vec<u8>,
    error: String,
    key_id: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
}

/// Runs relay-admin with `--format json` and exactly `env` (plus the database); returns the exit
/// code and the parsed output.
async fn admin(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> (i32, Value, String) {
    let output = tokio::process::Command::new(ADMIN)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RELAY_OPERATOR", "it-tests")
        .envs(env.iter().copied())
        .args(["--format", "json"])
        .args(args)
        .output()
        .await
        .expect("run relay-admin");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let code = output.status.code().expect("exit code");
    assert!(code != 2, "relay-admin {args:?} could not run: {stderr}");
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (code, value, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_unsigned_records_become_counted_dead_letters_and_later_messages_still_arrive() {
    let verify = format!("k1={OLD_KEY}");
    let metrics_addr = free_addr();
    let relay = Pipeline::start_with(
        "signing_forged",
        1,
        &signing_vars("k1", OLD_KEY),
        &[("INBOX_VERIFY_KEYS", &verify), ("RELAY_HTTP_ADDR", &metrics_addr)],
    )
    .await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 10, 2, 10).await;
    relay.await_ledger(10).await;

    let forged = foreign_envelope(&topic);
    let wrong_key = relay_envelope::SigningKey::new("k1", &NEW_KEY.to_string().into()).expect("key");
    let forged_signature = wrong_key.sign(&forged);
    let sig = relay_envelope::HEADER_SIGNATURE;
    let kid = relay_envelope::HEADER_KEY_ID;
    produce_with_headers(&topic, b"k-forged", &forged, &[(kid, "k1"), (sig, &forged_signature)]).await;
    let unsigned = foreign_envelope(&topic);
    produce_with_headers(&topic, b"k-unsigned", &unsigned, &[]).await;
    let unknown = foreign_envelope(&topic);
    produce_with_headers(&topic, b"k-unknown", &unknown, &[(kid, "k9"), (sig, &forged_signature)]).await;
    enqueue_many(origin, &topic, 40, 2, 10).await;

    relay.await_ledger(50).await;
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 50, "no forged message stored");
    let rows = inbox
        .client()
        .await
        .query(
            "SELECT raw_key, raw_value, error, raw_key_id, raw_signature FROM relay.dead_letter
             WHERE inbox = 'ledger' ORDER BY kafka_offset",
            &[],
        )
        .await
        .expect("dead letters");
    let dead: Vec<DeadLetter> = rows
        .iter()
        .map(|r| DeadLetter {
            key: r.get(0),
            value: r.get(1),
            error: r.get(2),
            key_id: r.get(3),
            signature: r.get(4),
        })
        .collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!((dead[0].key.as_slice(), &dead[0].value), (&b"k-forged"[..], &forged));
    assert_eq!(dead[0].error, "signature does not match the record value (key id \"k1\")");
    assert_eq!(dead[0].key_id.as_deref(), Some(&b"k1"[..]));
    assert_eq!(dead[0].signature.as_deref(), Some(forged_signature.as_bytes()));
    assert_eq!((dead[1].key.as_slice(), &dead[1].value), (&b"k-unsigned"[..], &unsigned));
    assert!(dead[1].error.starts_with("signature missing"), "{}", dead[1].error);
    assert_eq!((&dead[1].key_id, &dead[1].signature), (&None, &None));
    assert_eq!(dead[2].error, "signature key id \"k9\" is not one this consumer accepts");
    assert_eq!(dead[2].value, unknown);

    let text = eventually(Duration::from_secs(30), "signature failure counters", || {
        let addr = metrics_addr.clone();
        async move {
            let text = scrape(&addr).await?;
            sample(&text, "relay_inbox_signature_failures_total", &["reason=\"missing\""]).map(|_| text)
        }
    })
    .await;
    for reason in ["mismatch", "missing", "unknown_key"] {
        let labels = ["inbox=\"ledger\"", &format!("reason=\"{reason}\"")];
        let n = sample(&text, "relay_inbox_signature_failures_total", &labels);
        assert_eq!(n, Some(1.0), "{reason}: {text}");
    }
    assert_eq!(sample(&text, "relay_inbox_dead_letters_total", &["inbox=\"ledger\""]), Some(3.0));

    // Re-drive without keys refuses signature failures; with the consumer's keys it re-checks
    // them, and a forged record still fails. Nothing reaches the inbox either way.
    let (code, report, output) = admin(
        inbox,
        &[],
        &["dead-letters", "redrive", "--execute", "--inbox", "ledger", "--all", "--reason", "test"],
    )
    .await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["still_failing"].as_array().map(Vec::len), Some(3), "{report}");
    assert!(report["still_failing"][0]["reason"].as_str().is_some_and(|r| r.contains("INBOX_VERIFY_KEYS")));
    assert!(!output.contains("0LDK3Y") && !output.contains("N3WK3Y"));
    let admin_env = [("INBOX_VERIFY_KEYS", verify.as_str())];
    let (code, report, output) = admin(
        inbox,
        &admin_env,
        &["dead-letters", "redrive", "--execute", "--inbox", "ledger", "--all", "--reason", "test"],
    )
    .await;
    assert_eq!(code, 1, "{report}");
    let reasons: Vec<&str> = report["still_failing"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        vec![
            "signature does not match the record value (key id \"k1\")",
            "signature missing: the record has no relay-signature and relay-key-id headers",
            "signature key id \"k9\" is not one this consumer accepts",
        ]
    );
    assert!(!output.contains("0LDK3Y"), "the key leaked: {output}");
    assert_eq!(inbox_equals_outbox(origin, inbox, "ledger", &topic).await, 50);
    assert_no_key_in_logs(&[&relay.poller, &relay.consumer]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_dead_letter_is_redriven_with_the_keys_and_its_signature_checked() {
    let verify = format!("k1={OLD_KEY}");
    let relay = Pipeline::start_with(
        "signing_redrive",
        1,
        &signing_vars("k1", OLD_KEY),
        &[("INBOX_VERIFY_KEYS", &verify), ("INBOX_MAX_PAYLOAD_BYTES", "500")],
    )
    .await;
    let (origin, inbox, topic) = (&relay.origin, &relay.inbox, relay.topic.clone());
    enqueue_many(origin, &topic, 5, 1, 5).await;
    enqueue_one(origin, &topic, "key-0", &[7; 800]).await;
    enqueue_many(origin, &topic, 5, 1, 5).await;
    relay.await_ledger(10).await;
    let client = inbox.client().await;
    eventually(Duration::from_secs(30), "the oversized dead letter", || {
        let client = &client;
        async move { (count(client, "SELECT count(*) FROM relay.dead_letter", &[]).await == 1).then_some(()) }
    })
    .await;
    let row =
        client.query_one("SELECT raw_key_id, raw_signature FROM relay.dead_letter", &[]).await.expect("row");
    assert_eq!(row.get::<_, Option<Vec<u8>>>(0).as_deref(), Some(&b"k1"[..]), "headers kept");
    assert_eq!(row.get::<_, Option<Vec<u8>>>(1).map(|s| s.len()), Some(64));

    // A wrong key for k1 is a mismatch: the record stays a dead letter.
    let wrong = format!("k1={NEW_KEY}");
    let args = [
        "dead-letters",
        "redrive",
        "--execute",
        "--inbox",
        "ledger",
        "--all",
        "--max-payload-bytes",
        "1000",
        "--reason",
        "test",
    ];
    let (code, report, _) = admin(inbox, &[("INBOX_VERIFY_KEYS", &wrong)], &args).await;
    assert_eq!(code, 1, "{report}");
    assert!(report["still_failing"][0]["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("signature does not")));
    let (code, report, _) = admin(inbox, &[("INBOX_VERIFY_KEYS", &verify)], &args).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["redriven"].as_array().map(Vec::len), Some(1), "{report}");
    // A re-driven message arrives after newer ones of its key, so per-key order is not checked.
    assert_eq!(inbox_holds_outbox(origin, inbox, "ledger", &topic, false).await, 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_without_losing_a_message() {
    let group = format!("ledger-rotation-{}", unique());
    // 1. Every consumer accepts the old and the new key.
    let both = format!("old={OLD_KEY},new={NEW_KEY}");
    let mut relay = Pipeline::start_with(
        "signing_rotation",
        2,
        &signing_vars("old", OLD_KEY),
        &[("INBOX_VERIFY_KEYS", &both), ("INBOX_GROUP_ID", &group)],
    )
    .await;
    let (origin, topic) = (&relay.origin, relay.topic.clone());
    enqueue_many(origin, &topic, 100, 5, 10).await;
    relay.await_ledger(100).await;

    // 2. The poller switches to the new key; messages enqueued meanwhile wait in the outbox.
    let status = relay.poller.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    enqueue_many(origin, &topic, 100, 5, 10).await;
    let mut vars = poller_env(origin, &topic);
    vars.extend(signing_vars("new", NEW_KEY).iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let new_poller = spawn("signing_rotation", "poller-new-key", POLLER, &vars);
    relay.await_ledger(200).await;

    // 3. The old key is removed from the consumer; it resumes its group where it stopped.
    let status = relay.consumer.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    let mut vars: BTreeMap<String, String> = consumer_env(&relay.inbox, "ledger", &topic);
    vars.insert("INBOX_GROUP_ID".into(), group.clone());
    vars.insert("INBOX_VERIFY_KEYS".into(), format!("new={NEW_KEY}"));
    let new_consumer = spawn("signing_rotation", "consumer-new-key-only", CONSUMER, &vars);
    enqueue_many(origin, &topic, 100, 5, 10).await;
    relay.await_ledger(300).await;

    assert_eq!(inbox_equals_outbox(origin, &relay.inbox, "ledger", &topic).await, 300);
    assert_eq!(dead_letter_count(&relay.inbox).await, 0, "no record refused during the rotation");
    assert_no_key_in_logs(&[&relay.poller, &relay.consumer, &new_poller, &new_consumer]);
}

async fn exit_code_and_log(binary: &str, vars: &[(&str, &str)]) -> (i32, String) {
    let env: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut service = spawn("signing_config", "bad-config", binary, &env);
    let status = tokio::time::timeout(Duration::from_secs(30), service.child.wait())
        .await
        .expect("exits promptly")
        .expect("wait");
    (status.code().expect("exit code"), service.log_text())
}

#[tokio::test]
async fn signing_configuration_problems_are_reported_without_the_keys() {
    let base = [("DATABASE_URL", "postgres://localhost/x"), ("KAFKA_BROKERS", "localhost:9092")];
    let short = "0LDK3Y-short";
    let mut poller = base.to_vec();
    poller.extend([
        ("OUTBOX_SOURCE", "payments"),
        ("OUTBOX_SIGNING_KEY_ID", "k1"),
        ("OUTBOX_SIGNING_KEY", short),
    ]);
    let (code, log) = exit_code_and_log(POLLER, &poller).await;
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("OUTBOX_SIGNING_KEY: the key for id \"k1\" is shorter than 32 bytes"), "{log}");
    assert!(!log.contains("0LDK3Y"), "the key leaked: {log}");

    let mut poller = base.to_vec();
    poller.extend([("OUTBOX_SOURCE", "payments"), ("OUTBOX_SIGNING_KEY", OLD_KEY)]);
    let (code, log) = exit_code_and_log(POLLER, &poller).await;
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("OUTBOX_SIGNING_KEY_ID: is required when OUTBOX_SIGNING_KEY is set"), "{log}");
    assert!(!log.contains("0LDK3Y"), "the key leaked: {log}");

    let list = format!("k1={short},{NEW_KEY},k2={OLD_KEY},k2={NEW_KEY}");
    let mut consumer = base.to_vec();
    consumer.extend([("INBOX_NAME", "ledger"), ("INBOX_TOPICS", "t"), ("INBOX_VERIFY_KEYS", &list)]);
    let (code, log) = exit_code_and_log(CONSUMER, &consumer).await;
    assert_eq!(code, 2, "{log}");
    for expected in [
        "INBOX_VERIFY_KEYS: the key for id \"k1\" is shorter than 32 bytes",
        "INBOX_VERIFY_KEYS: entry 2 is not keyid=secret",
        "INBOX_VERIFY_KEYS: key id \"k2\" is listed twice",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in {log}");
    }
    assert!(!log.contains("0LDK3Y") && !log.contains("N3WK3Y"), "a key leaked: {log}");

    let mut consumer = base.to_vec();
    consumer.extend([("INBOX_NAME", "ledger"), ("INBOX_TOPICS", "t"), ("INBOX_REQUIRE_SIGNATURE", "true")]);
    let (code, log) = exit_code_and_log(CONSUMER, &consumer).await;
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("INBOX_REQUIRE_SIGNATURE: is true but INBOX_VERIFY_KEYS is not set"), "{log}");
}
