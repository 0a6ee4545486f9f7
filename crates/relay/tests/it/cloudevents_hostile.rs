//! Hostile CloudEvents records against the inbox-consumer: signed records with a tampered
//! header, records missing or misstating required attributes, both formats at once, duplicated
//! attributes, non-UTF-8 values and stray attributes on an envelope record each become a dead
//! letter with its reason, in order, while the valid records between them are stored.
use std::time::Duration;

use relay_envelope::{cloudevents, Signed, SigningKey};

use crate::{harness::*, hostile::Hostile};

/// A record's headers as `(name, value)`, `None` for a null value.
type RecordHeaders = Vec<(Vec<u8>, Option<Vec<u8>>)>;

const KEY: &str = "cl0udevents-k3y-0123456789abcdefghijk";

/// A record's headers as the poller writes them for `envelope`, changed by `change`, then signed
/// with key `k1` (so a malformed record fails its decoding, not its signature).
fn signed_headers(
    envelope: &relay_envelope::Envelope,
    change: impl FnOnce(&mut RecordHeaders),
) -> RecordHeaders {
    let mut headers: RecordHeaders = cloudevents::headers_of(envelope)
        .expect("encodable")
        .into_iter()
        .map(|(n, v)| (n.into_bytes(), Some(v.into_bytes())))
        .collect();
    change(&mut headers);
    headers.push((b"relay-key-id".to_vec(), Some(b"k1".to_vec())));
    let signer = SigningKey::new("k1", &KEY.to_string().into()).expect("key");
    let all: Vec<(&[u8], Option<&[u8]>)> =
        headers.iter().map(|(n, v)| (n.as_slice(), v.as_deref())).collect();
    let signature = signer.sign_input(Signed::CloudEvent { value: &envelope.payload, headers: &all });
    headers.push((b"relay-signature".to_vec(), Some(signature.into_bytes())));
    headers
}

fn message(topic: &str, n: u64) -> relay_envelope::Envelope {
    relay_envelope::Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: uuid::Uuid::new_v4().to_string(),
        source: "it-producer".into(),
        topic: topic.into(),
        key: format!("key-{n}"),
        r#type: "it.payment".into(),
        payload: format!("payment {n}").into_bytes(),
        created_at_unix_micros: 1_700_000_000_000_000 + n as i64,
        sequence: n,
        ..Default::default()
    }
}

fn set(name: &'static [u8], value: Option<&'static [u8]>) -> impl FnOnce(&mut RecordHeaders) {
    move |headers| {
        headers.retain(|(n, _)| n != name);
        headers.push((name.to_vec(), value.map(<[u8]>::to_vec)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_and_malformed_cloudevents_become_dead_letters_and_the_rest_flows() {
    let db = TestDb::new().await;
    let topic = topic(1).await;
    let mut env = consumer_env(&db, "ledger", &topic);
    env.insert("INBOX_VERIFY_KEYS".into(), format!("k1={KEY}"));
    let _consumer = spawn("cloudevents_hostile", "consumer", CONSUMER, &env);
    await_table(&db, "relay.inbox").await;
    let hostile = Hostile::new();
    let mut valid = Vec::new();
    type Change = Box<dyn FnOnce(&mut RecordHeaders)>;
    let bad: Vec<(Change, &str)> = vec![
        (
            Box::new(|h| h.retain(|(n, _)| n != b"ce_id")),
            "CloudEvents record: required attribute ce_id is missing or empty",
        ),
        (
            Box::new(set(b"ce_specversion", Some(b"0.3"))),
            "CloudEvents record: ce_specversion \"0.3\" is not 1.0",
        ),
        (
            Box::new(set(b"ce_time", Some(b"tomorrow"))),
            "CloudEvents record: ce_time \"tomorrow\" is not an RFC 3339 time",
        ),
        (
            Box::new(set(b"relay-envelope-version", Some(b"1"))),
            "CloudEvents record: it has both ce_specversion and the envelope header relay-envelope-version",
        ),
        (
            Box::new(|h| h.push((b"ce_type".to_vec(), Some(b"other".to_vec())))),
            "CloudEvents record: header \"ce_type\" appears more than once",
        ),
        (
            Box::new(set(b"ce_source", Some(b"\xff\xfe"))),
            "CloudEvents record: header \"ce_source\" has a value that is not UTF-8",
        ),
        (
            Box::new(set(b"x-user", Some(b"\xc0\xaf"))),
            "CloudEvents record: header \"x-user\" has a value that is not UTF-8",
        ),
        (
            Box::new(set(b"ce_relaysequence", None)),
            "CloudEvents record: header \"ce_relaysequence\" has a null value",
        ),
    ];
    let mut expected = Vec::new();
    for (n, (change, reason)) in bad.into_iter().enumerate() {
        let good = message(&topic, 2 * n as u64);
        let headers = signed_headers(&good, |_| {});
        send(&hostile, &topic, &good, &headers);
        valid.push(good.message_id.clone());
        let broken = message(&topic, 2 * n as u64 + 1);
        send(&hostile, &topic, &broken, &signed_headers(&broken, change));
        expected.push((broken.message_id, reason.to_string()));
    }
    // Signed, then a header changed: the signature no longer matches.
    let tampered = message(&topic, 100);
    let mut headers = signed_headers(&tampered, |_| {});
    headers.iter_mut().filter(|(n, _)| n == b"ce_type").for_each(|(_, v)| *v = Some(b"it.refund".to_vec()));
    send(&hostile, &topic, &tampered, &headers);
    expected.push((
        tampered.message_id,
        "signature does not match the record value and headers (key id \"k1\")".into(),
    ));
    // An envelope record carrying a stray attribute.
    let stray = relay_envelope::encode(&message(&topic, 101));
    hostile.send(&topic, Some(b"key-101"), Some(&stray), &[(b"ce_id", Some(b"x"))]);
    let last = message(&topic, 102);
    send(&hostile, &topic, &last, &signed_headers(&last, |_| {}));
    valid.push(last.message_id.clone());
    hostile.flush();

    await_inbox(&db, "ledger", &topic, valid.len() as i64, Duration::from_secs(90)).await;
    let client = db.client().await;
    let stored: Vec<String> = client
        .query("SELECT message_id::text FROM relay.inbox ORDER BY seq", &[])
        .await
        .expect("inbox")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, valid, "the valid records, in order");
    let dead = eventually(Duration::from_secs(30), "every bad record dead-lettered", || async {
        let rows = db
            .client()
            .await
            .query("SELECT error FROM relay.dead_letter ORDER BY kafka_offset", &[])
            .await
            .ok()?;
        (rows.len() == expected.len() + 1)
            .then(|| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
    })
    .await;
    let mut reasons: Vec<String> = expected.into_iter().map(|(_, reason)| reason).collect();
    reasons.push("header \"ce_id\" is a CloudEvents attribute, but the record has no ce_specversion".into());
    assert_eq!(dead, reasons, "each bad record with its reason, in offset order");
}

fn send(
    hostile: &Hostile,
    topic: &str,
    message: &relay_envelope::Envelope,
    headers: &[(Vec<u8>, Option<Vec<u8>>)],
) {
    let headers: Vec<(&[u8], Option<&[u8]>)> =
        headers.iter().map(|(n, v)| (n.as_slice(), v.as_deref())).collect();
    hostile.send(topic, Some(message.key.as_bytes()), Some(&message.payload), &headers);
}
