//! CloudEvents records through the same check: the row equals the envelope record's, and the
//! signature, topic and format rules refuse what they should.
use relay_envelope::{cloudevents, Envelope, SigningKey, TraceContext};
use secrecy::SecretString;

use super::*;

const KEY: &str = "k3y-0123456789abcdefghijklmnopqrstuv";

fn message() -> Envelope {
    Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: "0b6f5c1e-8a0e-4c3e-9d37-5b0b0d3a1f10".into(),
        source: "payments".into(),
        topic: "payments.v1".into(),
        key: "acct-1".into(),
        r#type: "payment.created".into(),
        content_type: "application/json".into(),
        payload: b"{\"amount\":1}".to_vec(),
        headers: [("tenant".to_string(), "acme".to_string())].into(),
        created_at_unix_micros: 1_700_000_000_123_456,
        trace: Some(TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: String::new(),
        }),
        sequence: 7,
    }
}

/// The CloudEvents headers the poller sends for `envelope`, signed with `signer` if given.
fn ce_headers(envelope: &Envelope, signer: Option<&SigningKey>) -> Vec<RawHeader> {
    let mut headers: Vec<RawHeader> = cloudevents::headers_of(envelope)
        .expect("encodable")
        .into_iter()
        .map(|(n, v)| RawHeader { name: n.into_bytes(), value: Some(v.into_bytes()) })
        .collect();
    if let Some(signer) = signer {
        headers
            .push(RawHeader { name: b"relay-key-id".to_vec(), value: Some(signer.id().as_bytes().to_vec()) });
        let all: Vec<(&[u8], Option<&[u8]>)> =
            headers.iter().map(|h| (h.name.as_slice(), h.value.as_deref())).collect();
        let signature = signer.sign_input(Signed::CloudEvent { value: &envelope.payload, headers: &all });
        headers.push(RawHeader { name: b"relay-signature".to_vec(), value: Some(signature.into_bytes()) });
    }
    headers
}

fn record<'a>(value: &'a [u8], headers: &'a [RawHeader]) -> RawRecord<'a> {
    RawRecord {
        topic: "payments.v1",
        partition: 0,
        offset: 3,
        key: Some(b"acct-1"),
        value: Some(value),
        headers: Ok(headers),
    }
}

fn stored(record: Record) -> InboxRow {
    match record {
        Record::Store(row) => *row,
        Record::Dead(dead) => panic!("dead-lettered: {}", dead.error),
    }
}

fn dead(record: Record) -> DeadLetter {
    match record {
        Record::Dead(dead) => dead,
        Record::Store(row) => panic!("stored {}", row.message_id),
    }
}

#[test]
fn a_message_is_the_same_row_in_either_format() {
    for mut message in
        [message(), Envelope { r#type: String::new(), content_type: String::new(), trace: None, ..message() }]
    {
        message.headers.insert("b".into(), String::new());
        let bytes = relay_envelope::encode(&message);
        let from_envelope = stored(classify(&record(&bytes, &[]), 1000, &Verification::off()));
        let headers = ce_headers(&message, None);
        let from_cloudevent =
            stored(classify(&record(&message.payload, &headers), 1000, &Verification::off()));
        assert_eq!(format!("{from_cloudevent:?}"), format!("{from_envelope:?}"));
        assert_eq!(crate::content::digest(&from_cloudevent), crate::content::digest(&from_envelope));
    }
}

fn verification() -> Verification {
    let env = relay_config::MapEnv::new([("INBOX_VERIFY_KEYS", format!("k1={KEY}"))]);
    let mut r = relay_config::Reader::new(&env);
    let verification = Verification::read(&mut r);
    r.finish().expect("valid");
    verification
}

#[test]
fn signed_cloudevents_verify_and_any_tampered_header_or_value_is_a_mismatch() {
    let signer = SigningKey::new("k1", &SecretString::from(KEY)).expect("key");
    let message = message();
    let headers = ce_headers(&message, Some(&signer));
    let row = stored(classify(&record(&message.payload, &headers), 1000, &verification()));
    assert_eq!(row.msg_type, "payment.created");
    type Tamper = Box<dyn Fn(&mut Vec<RawHeader>)>;
    let tamper: Vec<(&str, Tamper)> = vec![
        ("ce_type", Box::new(|h| h[3].value = Some(b"payment.reversed".to_vec()))),
        (
            "tenant",
            Box::new(|h| {
                h.iter_mut().filter(|h| h.name == b"tenant").for_each(|h| h.value = Some(b"evil".to_vec()))
            }),
        ),
        ("added", Box::new(|h| h.insert(0, RawHeader { name: b"x-extra".to_vec(), value: None }))),
        ("removed", Box::new(|h| h.retain(|h| h.name != b"traceparent"))),
    ];
    for (what, change) in tamper {
        let mut changed = headers.clone();
        change(&mut changed);
        let dead = dead(classify(&record(&message.payload, &changed), 1000, &verification()));
        assert_eq!(
            dead.error, "signature does not match the record value and headers (key id \"k1\")",
            "{what}"
        );
        assert_eq!(dead.signature_failure, Some("mismatch"), "{what}");
    }
    let dead = dead(classify(&record(b"{\"amount\":9}", &headers), 1000, &verification()));
    assert_eq!(dead.signature_failure, Some("mismatch"));
    let unsigned = ce_headers(&message, None);
    assert_eq!(
        dead_reason(classify(&record(&message.payload, &unsigned), 1000, &verification())),
        DecodeErrorText::UNSIGNED
    );
}

struct DecodeErrorText;
impl DecodeErrorText {
    const UNSIGNED: &'static str =
        "signature missing: the record has no relay-signature and relay-key-id headers";
}

fn dead_reason(record: Record) -> String {
    dead(record).error
}

#[test]
fn stray_attributes_copies_to_other_topics_and_payload_limits_are_refused() {
    let message = message();
    let bytes = relay_envelope::encode(&message);
    let stray = [RawHeader { name: b"ce_id".to_vec(), value: Some(b"x".to_vec()) }];
    assert_eq!(
        dead_reason(classify(&record(&bytes, &stray), 1000, &Verification::off())),
        "header \"ce_id\" is a CloudEvents attribute, but the record has no ce_specversion"
    );
    let headers = ce_headers(&message, None);
    let mut elsewhere = record(&message.payload, &headers);
    elsewhere.topic = "refunds";
    assert_eq!(
        dead_reason(classify(&elsewhere, 1000, &Verification::off())),
        "ce_relaytopic \"payments.v1\" is not the topic the record arrived on (\"refunds\")"
    );
    assert_eq!(
        dead_reason(classify(&record(&message.payload, &headers), 5, &Verification::off())),
        "payload of 12 bytes exceeds the limit of 5 bytes"
    );
    let mut no_id = headers.clone();
    no_id.retain(|h| h.name != b"ce_id");
    let dead = dead(classify(&record(&message.payload, &no_id), 1000, &Verification::off()));
    assert_eq!(dead.error, "CloudEvents record: required attribute ce_id is missing or empty");
    assert_eq!(dead.raw_value.as_deref(), Some(&message.payload[..]), "the raw record is kept");
}
