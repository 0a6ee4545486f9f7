//! Signing and verification against known keys, wrong keys, unknown ids and tampered values.
use secrecy::SecretString;

use super::*;
use crate::DecodeError;

const OLD: &str = "0ld-k3y-0123456789abcdefghijklmnopqrs";
const NEW: &str = "n3w-k3y-0123456789abcdefghijklmnopqrs";

fn key(id: &str, secret: &str) -> SigningKey {
    SigningKey::new(id, &SecretString::from(secret)).expect("valid key")
}

fn keys(list: &str) -> VerifyKeys {
    VerifyKeys::parse(&SecretString::from(list)).expect("valid list")
}

fn verify(keys: &VerifyKeys, id: &str, signature: &str, value: &[u8]) -> Result<(), DecodeError> {
    keys.verify(Some(id.as_bytes()), Some(signature.as_bytes()), value)
}

#[test]
fn a_signature_verifies_with_the_same_key_and_matches_rfc_4231() {
    // RFC 4231 test case 2 uses a 4-byte key; this checks the primitive, not the length rule.
    let mut mac = HmacSha256::new_from_slice(b"Jefe").expect("any length");
    mac.update(b"what do ya want for nothing?");
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let signer = key("k1", OLD);
    let signature = signer.sign(b"value");
    assert_eq!(signature.len(), 64);
    assert_eq!(verify(&keys(&format!("k1={OLD}")), "k1", &signature, b"value"), Ok(()));
}

#[test]
fn a_wrong_key_a_tampered_value_and_a_tampered_signature_do_not_verify() {
    let signature = key("k1", OLD).sign(b"value");
    let wrong = keys(&format!("k1={NEW}"));
    assert_eq!(verify(&wrong, "k1", &signature, b"value"), Err(DecodeError::BadSignature("\"k1\"".into())));
    let right = keys(&format!("k1={OLD}"));
    assert!(matches!(verify(&right, "k1", &signature, b"valuE"), Err(DecodeError::BadSignature(_))));
    let mut flipped = signature.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).expect("hex");
    assert!(matches!(verify(&right, "k1", &flipped, b"value"), Err(DecodeError::BadSignature(_))));
    let plus = format!("+{}", &signature[1..]);
    for garbage in ["zz", "abc", "", &signature[..62], &plus, &format!("{signature}00")] {
        assert!(
            matches!(verify(&right, "k1", garbage, b"value"), Err(DecodeError::MalformedSignature(_))),
            "{garbage:?}"
        );
    }
}

#[test]
fn unknown_key_ids_and_unsigned_records_are_refused() {
    let accepted = keys(&format!("k1={OLD}"));
    let signature = key("k2", NEW).sign(b"value");
    let err = verify(&accepted, "k2", &signature, b"value").expect_err("unknown id");
    assert_eq!(err, DecodeError::UnknownKeyId("\"k2\"".into()));
    assert_eq!(err.signature_failure(), Some("unknown_key"));
    assert!(crate::is_signature_failure_reason(&err.to_string()), "{err}");
    assert_eq!(accepted.verify(None, Some(b"00"), b"value"), Err(DecodeError::Unsigned));
    assert_eq!(accepted.verify(Some(b"k1"), None, b"value"), Err(DecodeError::Unsigned));
    // A hostile key id is escaped and cut, so it cannot break a log line or a text column.
    let hostile = format!("a\0b\n{}", "x".repeat(200));
    let Err(DecodeError::UnknownKeyId(shown)) = accepted.verify(Some(hostile.as_bytes()), Some(b"00"), b"v")
    else {
        panic!("unknown id expected")
    };
    assert!(shown.starts_with("\"a\\0b\\n") && shown.ends_with('…') && !shown.contains('\0'), "{shown}");
}

#[test]
fn during_a_rotation_both_keys_verify() {
    let both = keys(&format!("old={OLD}, new={NEW}"));
    assert_eq!(both.ids(), vec!["new", "old"]);
    for signer in [key("old", OLD), key("new", NEW)] {
        assert_eq!(verify(&both, signer.id(), &signer.sign(b"v"), b"v"), Ok(()));
    }
    // A key is bound to its id: the old key's signature under the new id fails.
    let old_sig = key("old", OLD).sign(b"v");
    assert!(matches!(verify(&both, "new", &old_sig, b"v"), Err(DecodeError::BadSignature(_))));
}

#[test]
fn keys_never_appear_in_debug_output_or_problems() {
    let signer = key("k1", OLD);
    let accepted = keys(&format!("k1={OLD},k2={NEW}"));
    for text in [format!("{signer:?}"), format!("{accepted:?}")] {
        assert!(!text.contains("k3y"), "{text}");
        assert!(text.contains("k1") && text.contains("[redacted]"), "{text}");
    }
    let short = "sh0rt-k3y-value";
    let err = SigningKey::new("k1", &SecretString::from(short)).expect_err("too short");
    assert_eq!(err, "the key for id \"k1\" is shorter than 32 bytes");
    let list = format!("k1={short}, {NEW}, bad id={OLD}, k2={OLD}, k2={NEW}");
    let problems = VerifyKeys::parse(&SecretString::from(list.as_str())).expect_err("bad list");
    assert_eq!(
        problems,
        vec![
            "the key for id \"k1\" is shorter than 32 bytes".to_string(),
            "entry 2 is not keyid=secret".into(),
            "entry 3: key id may only contain letters, digits, '.', '_' and '-'".into(),
            "key id \"k2\" is listed twice".into(),
        ]
    );
    for problem in &problems {
        assert!(!problem.contains("k3y"), "{problem}");
    }
    assert_eq!(VerifyKeys::parse(&SecretString::from(" , ")).expect_err("empty"), vec!["lists no key"]);
    assert!(SigningKey::new("", &SecretString::from(OLD)).is_err());
    assert!(SigningKey::new(&"k".repeat(65), &SecretString::from(OLD)).is_err());
}
