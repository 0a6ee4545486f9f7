//! Round trips, the attribute rules, hostile headers and the canonical signing input.
use secrecy::SecretString;

use super::*;
use crate::{Signed, SigningKey, VerifyKeys};

fn sample() -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        message_id: "0b6f5c1e-8a0e-4c3e-9d37-5b0b0d3a1f10".into(),
        source: "payments".into(),
        topic: "payments.v1".into(),
        key: "acct-1".into(),
        r#type: "payment.created".into(),
        content_type: "application/json".into(),
        payload: b"{\"amount\":1}".to_vec(),
        headers: [("tenant".to_string(), "a".to_string()), ("b".to_string(), "2".to_string())].into(),
        created_at_unix_micros: 1_700_000_000_123_456,
        trace: Some(TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: "v=1".into(),
        }),
        sequence: 42,
    }
}

type Owned = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn owned(envelope: &Envelope) -> Owned {
    headers_of(envelope)
        .expect("encodable")
        .into_iter()
        .map(|(n, v)| (n.into_bytes(), Some(v.into_bytes())))
        .collect()
}

fn borrowed(headers: &Owned) -> Vec<(&[u8], Option<&[u8]>)> {
    headers.iter().map(|(n, v)| (n.as_slice(), v.as_deref())).collect()
}

fn read(envelope: &Envelope, headers: &Owned) -> Result<Decoded, DecodeError> {
    decode(Some(envelope.key.as_bytes()), Some(&envelope.payload), &borrowed(headers))
}

fn reason(result: Result<Decoded, DecodeError>) -> String {
    result.expect_err("refused").to_string()
}

#[test]
fn every_field_round_trips_through_headers_and_value() {
    let envelope = sample();
    let headers = owned(&envelope);
    let names: Vec<&str> = headers.iter().map(|(n, _)| std::str::from_utf8(n).expect("utf-8")).collect();
    assert_eq!(
        names,
        [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "content-type",
            "ce_partitionkey",
            "ce_relaytopic",
            "ce_relaysequence",
            "traceparent",
            "tracestate",
            "b",
            "tenant"
        ]
    );
    assert_eq!(headers[4].1.as_deref(), Some(&b"2023-11-14T22:13:20.123456Z"[..]));
    assert_eq!(read(&envelope, &headers).expect("valid").envelope, envelope);

    // Untyped, without content type or trace, an empty key and a time before 1970.
    let mut bare = sample();
    (bare.r#type, bare.content_type, bare.trace, bare.key) =
        (String::new(), String::new(), None, String::new());
    bare.created_at_unix_micros = -1;
    bare.headers.clear();
    let headers = owned(&bare);
    assert!(headers.contains(&(b"ce_type".to_vec(), Some(b"relay.untyped".to_vec()))));
    assert!(headers.contains(&(b"ce_relayuntyped".to_vec(), Some(b"true".to_vec()))));
    assert!(!headers.iter().any(|(n, _)| n == b"content-type"));
    assert_eq!(read(&bare, &headers).expect("valid").envelope, bare);
    assert_eq!(decode(None, None, &borrowed(&headers)).expect("null key and value").envelope.payload, b"");
}

#[test]
fn reserved_application_header_names_are_refused_at_encoding() {
    for name in [
        "ce_id",
        "CE_Source",
        "ce_anything",
        "content-type",
        "Content-Type",
        "traceparent",
        "relay-signature",
    ] {
        let mut envelope = sample();
        envelope.headers.insert(name.into(), "x".into());
        let why = headers_of(&envelope).expect_err(name);
        assert!(why.contains(&format!("{name:?} is reserved")), "{why}");
    }
    let mut fine = sample();
    fine.headers.insert("content-types".into(), "x".into());
    fine.headers.insert("cex".into(), "x".into());
    assert!(headers_of(&fine).is_ok());
    let mut ancient = sample();
    ancient.created_at_unix_micros = i64::MIN;
    assert!(headers_of(&ancient).expect_err("year").contains("RFC 3339"));
}

#[test]
fn other_producers_times_with_offsets_and_nanoseconds_are_read() {
    assert_eq!(parse_rfc3339("2023-11-14T23:13:20.123456789+01:00"), Some(1_700_000_000_123_456));
    assert_eq!(parse_rfc3339("1969-12-31T23:59:59.9999999Z"), Some(-1));
    // RFC 3339 section 5.6 lets a space stand for the T; the `time` crate takes it.
    assert_eq!(parse_rfc3339("2023-11-14 22:13:20Z"), Some(1_700_000_000_000_000));
    for bad in ["yesterday", "2023-11-14T22:13:20", ""] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

/// `headers` with header `name` replaced by `value` (`None` removes it).
fn with(headers: &Owned, name: &str, value: Option<Option<&[u8]>>) -> Owned {
    let mut out: Owned = headers.iter().filter(|(n, _)| n != name.as_bytes()).cloned().collect();
    if let Some(value) = value {
        out.push((name.as_bytes().to_vec(), value.map(<[u8]>::to_vec)));
    }
    out
}

#[test]
fn missing_or_invalid_required_attributes_are_refused_with_the_reason() {
    let envelope = sample();
    let good = owned(&envelope);
    let cases: Vec<(Owned, &str)> = vec![
        (with(&good, "ce_id", None), "required attribute ce_id is missing or empty"),
        (with(&good, "ce_id", Some(Some(b"42"))), "message_id \"42\" is not a UUID"),
        (with(&good, "ce_source", Some(Some(b""))), "required attribute ce_source is missing or empty"),
        (with(&good, "ce_type", None), "required attribute ce_type is missing or empty"),
        (with(&good, "ce_specversion", Some(Some(b"0.3"))), "ce_specversion \"0.3\" is not 1.0"),
        (with(&good, "ce_time", Some(Some(b"noon"))), "ce_time \"noon\" is not an RFC 3339 time"),
        (with(&good, "ce_time", None), "required attribute ce_time is missing or empty"),
        (with(&good, "ce_relaytopic", None), "required attribute ce_relaytopic is missing or empty"),
        (with(&good, "ce_relaysequence", Some(Some(b"+7"))), "ce_relaysequence \"+7\" is not a whole number"),
        (with(&good, "ce_relaysequence", Some(Some(b"99999999999999999999"))), "is not a whole number"),
        (with(&good, "ce_partitionkey", None), "required attribute ce_partitionkey is missing"),
        (
            with(&good, "ce_partitionkey", Some(Some(b"acct-2"))),
            "the record key is not ce_partitionkey \"acct-2\"",
        ),
        (
            with(&good, "ce_relayuntyped", Some(Some(b"true"))),
            "ce_relayuntyped \"true\" goes only with ce_type",
        ),
        (with(&good, "ce_source", Some(Some(b"a\0b"))), "field source contains a NUL character"),
    ];
    for (headers, expected) in cases {
        let why = reason(read(&envelope, &headers));
        assert!(why.contains(expected), "{why} lacks {expected}");
    }
}

#[test]
fn hostile_header_mixtures_are_refused_never_guessed() {
    let envelope = sample();
    let good = owned(&envelope);
    let mut twice = good.clone();
    twice.push((b"ce_id".to_vec(), Some(b"1e3f0c52-7d7e-4f55-9a52-55a4c2d1e001".to_vec())));
    let mut user_twice = good.clone();
    user_twice.push((b"tenant".to_vec(), Some(b"b".to_vec())));
    let cases: Vec<(Owned, &str)> = vec![
        (twice, "header \"ce_id\" appears more than once"),
        (user_twice, "header \"tenant\" appears more than once"),
        (
            with(&good, "relay-envelope-version", Some(Some(b"1"))),
            "both ce_specversion and the envelope header",
        ),
        (with(&good, "relay-message-id", Some(Some(b"x"))), "both ce_specversion and the envelope header"),
        (with(&good, "ce_type", Some(Some(b"\xff\xfe"))), "header \"ce_type\" has a value that is not UTF-8"),
        (with(&good, "tenant", Some(Some(b"\xc0\xaf"))), "header \"tenant\" has a value that is not UTF-8"),
        (with(&good, "ce_source", Some(None)), "header \"ce_source\" has a null value"),
        (
            with(&good, "CE_ID", Some(Some(b"x"))),
            "header \"CE_ID\" is a format header in the wrong letter case",
        ),
        (with(&good, "Content-Type", Some(Some(b"x"))), "wrong letter case"),
        (with(&good, "\u{ff}", Some(Some(b"x"))), ""),
    ];
    for (headers, expected) in cases {
        let result = read(&envelope, &headers);
        if expected.is_empty() {
            assert!(result.is_ok(), "a UTF-8 application header name is fine");
            continue;
        }
        let why = reason(result);
        assert!(
            why.starts_with("CloudEvents record: ") || why.contains("NUL") || why.contains("UUID"),
            "{why}"
        );
        assert!(why.contains(expected), "{why} lacks {expected}");
    }
    let mut raw = borrowed(&good);
    raw.push((b"\xff", Some(b"x")));
    assert!(reason(decode(Some(b"acct-1"), None, &raw)).contains("header 14 has a name that is not UTF-8"));
    // Unknown extensions are ignored, as the spec asks.
    let extra = with(&good, "ce_subject", Some(Some(b"s")));
    assert_eq!(read(&envelope, &extra).expect("valid").envelope, envelope);
}

#[test]
fn stray_attributes_and_detection_look_at_names_only() {
    let good = owned(&sample());
    assert!(is_cloudevent(&borrowed(&good)));
    let envelope_like = [(&b"relay-message-id"[..], Some(&b"x"[..])), (b"CE_Id", None)];
    assert!(!is_cloudevent(&envelope_like));
    assert_eq!(stray_attribute(&envelope_like), Some(&b"CE_Id"[..]));
    assert_eq!(stray_attribute(&[(&b"cex"[..], None), (b"c", None)]), None);
}

const KEY: &str = "k3y-0123456789abcdefghijklmnopqrstuv";

#[test]
fn signatures_cover_value_and_every_header_in_canonical_order() {
    let signer = SigningKey::new("k1", &SecretString::from(KEY)).expect("key");
    let keys = VerifyKeys::parse(&SecretString::from(format!("k1={KEY}"))).expect("keys");
    let envelope = sample();
    let mut headers = owned(&envelope);
    headers.push((b"relay-key-id".to_vec(), Some(b"k1".to_vec())));
    let signature =
        signer.sign_input(Signed::CloudEvent { value: &envelope.payload, headers: &borrowed(&headers) });
    headers.push((b"relay-signature".to_vec(), Some(signature.clone().into_bytes())));
    let check = |value: &[u8], headers: &Owned| {
        keys.verify_input(
            Some(b"k1"),
            Some(signature.as_bytes()),
            Signed::CloudEvent { value, headers: &borrowed(headers) },
        )
    };
    assert_eq!(check(&envelope.payload, &headers), Ok(()));
    // Headers of different names may move; the signature header itself is not covered.
    let mut moved = headers.clone();
    moved.reverse();
    assert_eq!(check(&envelope.payload, &moved), Ok(()));
    let mismatch = Err(DecodeError::BadHeadersSignature("\"k1\"".into()));
    assert_eq!(check(b"{\"amount\":2}", &headers), mismatch, "value");
    assert_eq!(check(&envelope.payload, &with(&headers, "ce_type", Some(Some(b"x")))), mismatch, "changed");
    assert_eq!(check(&envelope.payload, &with(&headers, "tracestate", None)), mismatch, "removed");
    assert_eq!(check(&envelope.payload, &with(&headers, "extra", Some(None))), mismatch, "added");
    let mut null = headers.clone();
    null.iter_mut().filter(|(n, _)| n == b"tenant").for_each(|(_, v)| *v = None);
    let mut empty = headers.clone();
    empty.iter_mut().filter(|(n, _)| n == b"tenant").for_each(|(_, v)| *v = Some(Vec::new()));
    assert_ne!(check(&envelope.payload, &null), check(&envelope.payload, &headers));
    assert_ne!(check(&envelope.payload, &empty), check(&envelope.payload, &headers));
    // Moving bytes between a header's name and value, or between headers, changes the input.
    let mut shifted = headers.clone();
    shifted.push((b"ab".to_vec(), Some(b"c".to_vec())));
    let mut shifted2 = headers.clone();
    shifted2.push((b"a".to_vec(), Some(b"bc".to_vec())));
    let sign = |h: &Owned| signer.sign_input(Signed::CloudEvent { value: b"", headers: &borrowed(h) });
    assert_ne!(sign(&shifted), sign(&shifted2));
    // Same-named headers keep their order: swapping two values is a change.
    let dup = vec![(b"x".to_vec(), Some(b"1".to_vec())), (b"x".to_vec(), Some(b"2".to_vec()))];
    let swapped = vec![(b"x".to_vec(), Some(b"2".to_vec())), (b"x".to_vec(), Some(b"1".to_vec()))];
    assert_ne!(sign(&dup), sign(&swapped));
    // An envelope signature over the same bytes is a different signature.
    assert_ne!(signer.sign(b""), sign(&Vec::new()));
}
