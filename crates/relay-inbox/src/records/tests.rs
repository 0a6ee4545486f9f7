//! The record check on hand-made records: each rule with the reason it gives.
use super::*;

fn envelope(payload: &[u8]) -> relay_envelope::Envelope {
    relay_envelope::Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: "0b6f5c1e-8a0e-4c3e-9d37-5b0b0d3a1f10".into(),
        source: "payments".into(),
        topic: "payments.v1".into(),
        key: "acct-1".into(),
        payload: payload.to_vec(),
        sequence: 7,
        ..Default::default()
    }
}

fn raw(value: &[u8]) -> RawRecord<'_> {
    RawRecord {
        topic: "payments.v1",
        partition: 2,
        offset: 40,
        key: Some(b"acct-1"),
        value: Some(value),
        headers: Ok(&[]),
    }
}

fn dead_reason(record: Record) -> String {
    match record {
        Record::Dead(dead) => dead.error,
        Record::Store(row) => panic!("stored {}", row.message_id),
    }
}

#[test]
fn stores_a_payload_at_the_limit_and_dead_letters_one_byte_over() {
    let bytes = relay_envelope::encode(&envelope(&[7; 100]));
    match classify(&raw(&bytes), 100, &Verification::off()) {
        Record::Store(row) => {
            assert_eq!(row.payload, vec![7; 100]);
            assert_eq!(row.sequence, 7);
            assert_eq!(row.position, Position { topic: "payments.v1".into(), partition: 2, offset: 40 });
        }
        Record::Dead(dead) => panic!("dead-lettered: {}", dead.error),
    }
    let reason = dead_reason(classify(&raw(&bytes), 99, &Verification::off()));
    assert_eq!(reason, "payload of 100 bytes exceeds the limit of 99 bytes");
}

#[test]
fn dead_letters_garbage_and_future_versions_keeping_the_raw_bytes() {
    let garbage = b"\xde\xad\xbe\xef";
    match classify(&raw(garbage), 1000, &Verification::off()) {
        Record::Dead(dead) => {
            assert!(dead.error.contains("not a protobuf envelope"), "{}", dead.error);
            assert_eq!(dead.raw_value.as_deref(), Some(&garbage[..]));
            assert_eq!(dead.raw_key.as_deref(), Some(&b"acct-1"[..]));
            assert_eq!(dead.position.offset, 40);
        }
        Record::Store(_) => panic!("garbage stored"),
    }
    let mut future = envelope(b"x");
    future.version = 9;
    let reason = dead_reason(classify(&raw(&relay_envelope::encode(&future)), 1000, &Verification::off()));
    assert!(reason.contains("unsupported envelope version 9"), "{reason}");
}

#[test]
fn checks_the_signature_before_decoding_and_keeps_the_headers_of_a_failure() {
    use relay_config::{MapEnv, Reader};
    let secret = "k3y-0123456789abcdefghijklmnopqrstuv";
    let env = MapEnv::new([("INBOX_VERIFY_KEYS", format!("k1={secret}"))]);
    let mut reader = Reader::new(&env);
    let verification = Verification::read(&mut reader);
    reader.finish().expect("valid");
    let signer = relay_envelope::SigningKey::new("k1", &secret.to_string().into()).expect("key");
    let bytes = relay_envelope::encode(&envelope(b"x"));
    let signature = signer.sign(&bytes);
    let signature_headers = [
        RawHeader { name: b"relay-key-id".to_vec(), value: Some(b"k1".to_vec()) },
        RawHeader { name: b"relay-signature".to_vec(), value: Some(signature.clone().into_bytes()) },
    ];
    let signed = RawRecord { headers: Ok(&signature_headers), ..raw(&bytes) };
    assert!(matches!(classify(&signed, 1000, &verification), Record::Store(_)));
    let garbage = b"\xde\xad";
    let forged = RawRecord { value: Some(garbage), ..signed };
    match classify(&forged, 1000, &verification) {
        Record::Dead(dead) => {
            assert_eq!(dead.error, "signature does not match the record value (key id \"k1\")");
            assert_eq!(dead.signature_failure, Some("mismatch"));
            assert_eq!(dead.raw_key_id.as_deref(), Some(&b"k1"[..]));
            assert_eq!(dead.raw_signature.as_deref(), Some(signature.as_bytes()));
        }
        Record::Store(_) => panic!("forged record stored"),
    }
    let reason = dead_reason(classify(&raw(&bytes), 1000, &verification));
    assert!(reason.starts_with("signature missing"), "{reason}");
    let Record::Dead(dead) = classify(&raw(garbage), 1000, &Verification::off()) else { panic!() };
    assert_eq!(dead.signature_failure, None, "not a signature failure when the check is off");
}

#[test]
fn bad_headers_dead_letter_a_valid_envelope_keeping_every_header_whatever_the_signature_setting() {
    let bytes = relay_envelope::encode(&envelope(b"x"));
    let bad_name = vec![
        RawHeader { name: b"\xff\xfe".to_vec(), value: None },
        RawHeader { name: vec![], value: Some(vec![]) },
    ];
    let doubled = vec![
        RawHeader { name: b"relay-signature".to_vec(), value: Some(b"a".to_vec()) },
        RawHeader { name: b"relay-signature".to_vec(), value: Some(b"b".to_vec()) },
    ];
    for (headers, reason) in [
        (&bad_name, "header 1 has a name that is not UTF-8 (hex fffe)"),
        (&doubled, "header relay-signature appears 2 times; a record may carry it once"),
    ] {
        let record = RawRecord { headers: Ok(headers), ..raw(&bytes) };
        let Record::Dead(dead) = classify(&record, 1000, &Verification::off()) else { panic!("stored") };
        assert_eq!(dead.error, reason);
        assert_eq!(dead.raw_headers, KeptHeaders::Headers(headers.clone()));
        assert_eq!(dead.raw_value.as_deref(), Some(&bytes[..]));
    }
    let unreadable = RawRecord { headers: Err("the record's headers cannot be parsed: bad"), ..raw(&bytes) };
    let Record::Dead(dead) = classify(&unreadable, 1000, &Verification::off()) else { panic!("stored") };
    assert_eq!(dead.error, "the record's headers cannot be parsed: bad");
    assert_eq!(
        dead.raw_headers,
        KeptHeaders::Unreadable("the record's headers cannot be parsed: bad".into())
    );
}

#[test]
fn an_envelope_for_another_topic_is_refused_even_when_only_its_case_differs() {
    let long = "x".repeat(200);
    for (topic, shown) in [
        ("payments.internal", "\"payments.internal\"".to_string()),
        ("PAYMENTS.V1", "\"PAYMENTS.V1\"".to_string()),
        ("payments.v1 ", "\"payments.v1 \"".to_string()),
        (long.as_str(), format!("{:?}… (200 bytes)", "x".repeat(64))),
    ] {
        let mut other = envelope(b"x");
        other.topic = topic.into();
        let reason = dead_reason(classify(&raw(&relay_envelope::encode(&other)), 1000, &Verification::off()));
        assert_eq!(
            reason,
            format!("envelope topic {shown} is not the topic the record arrived on (\"payments.v1\")")
        );
    }
}

/// `i64::MIN` microseconds used to be classified as storable, and the PostgreSQL driver
/// would have written it as a date in the year 294,000 (the `consumer_record` fuzz target
/// checks that every stored row fits PostgreSQL's range).
#[test]
fn dead_letters_a_creation_time_before_postgresql_can_store_and_keeps_its_earliest() {
    let mut ancient = envelope(b"x");
    ancient.created_at_unix_micros = i64::MIN;
    let reason = dead_reason(classify(&raw(&relay_envelope::encode(&ancient)), 1000, &Verification::off()));
    assert_eq!(
        reason,
        format!("created_at_unix_micros {} is before PostgreSQL's earliest timestamp (4714 BC)", i64::MIN)
    );
    ancient.created_at_unix_micros = PG_MIN_UNIX_MICROS - 1;
    assert!(matches!(
        classify(&raw(&relay_envelope::encode(&ancient)), 1000, &Verification::off()),
        Record::Dead(_)
    ));
    ancient.created_at_unix_micros = PG_MIN_UNIX_MICROS;
    match classify(&raw(&relay_envelope::encode(&ancient)), 1000, &Verification::off()) {
        Record::Store(row) => {
            let before_1970 = UNIX_EPOCH.duration_since(row.created_at).expect("before 1970");
            assert_eq!(before_1970, Duration::from_micros(PG_MIN_UNIX_MICROS.unsigned_abs()));
        }
        Record::Dead(dead) => panic!("dead-lettered: {}", dead.error),
    }
}

/// The signature covers the whole value, so the envelope's topic and source cannot be changed
/// without breaking it, and a validly signed copy on another topic is refused by the topic check.
#[test]
fn a_signed_record_is_accepted_only_on_its_own_topic_with_its_own_source() {
    use relay_config::{MapEnv, Reader};
    let secret = "k3y-0123456789abcdefghijklmnopqrstuv";
    let env = MapEnv::new([("INBOX_VERIFY_KEYS", format!("k1={secret}"))]);
    let mut reader = Reader::new(&env);
    let verification = Verification::read(&mut reader);
    reader.finish().expect("valid");
    let signer = relay_envelope::SigningKey::new("k1", &secret.to_string().into()).expect("key");
    let original = relay_envelope::encode(&envelope(b"x"));
    let signature = signer.sign(&original);
    let headers = [
        RawHeader { name: b"relay-key-id".to_vec(), value: Some(b"k1".to_vec()) },
        RawHeader { name: b"relay-signature".to_vec(), value: Some(signature.into_bytes()) },
    ];
    let mut retopic = envelope(b"x");
    retopic.topic = "payments.internal".into();
    let mut resource = envelope(b"x");
    resource.source = "treasury".into();
    for rewritten in [retopic, resource] {
        let value = relay_envelope::encode(&rewritten);
        let record = RawRecord { headers: Ok(&headers), ..raw(&value) };
        let reason = dead_reason(classify(&record, 1000, &verification));
        assert_eq!(reason, "signature does not match the record value (key id \"k1\")");
    }
    let copy = RawRecord { topic: "payments.internal", headers: Ok(&headers), ..raw(&original) };
    let reason = dead_reason(classify(&copy, 1000, &verification));
    assert_eq!(
        reason,
        "envelope topic \"payments.v1\" is not the topic the record arrived on (\"payments.internal\")"
    );
    let home = RawRecord { headers: Ok(&headers), ..raw(&original) };
    assert!(matches!(classify(&home, 1000, &verification), Record::Store(_)));
}
