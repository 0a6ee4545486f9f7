//! The rules for a record's Kafka headers, judged on their raw bytes before anything else.
//!
//! Anyone who may write to a topic chooses a record's headers, and the consumer must neither
//! panic on them nor be fooled by them. Rules, in order:
//! - headers librdkafka cannot parse: dead letter, with its reason;
//! - a header name that is not UTF-8 (Kafka's record format defines names as strings): dead
//!   letter, naming the header's position and its name in hex;
//! - `relay-key-id` or `relay-signature` more than once: dead letter, since it is ambiguous which
//!   one a check would use (the poller writes each at most once);
//! - a signature header with a null value counts as present and empty, so it fails the check
//!   rather than passing as unsigned.
//!
//! Any other header, of any size or number, is ignored. A dead letter keeps every header as it
//! arrived ([`KeptHeaders`], column `raw_headers`), so a re-drive judges the same record.
use relay_envelope::{HEADER_KEY_ID, HEADER_SIGNATURE};
use relay_kafka::raw::RawHeader;
use serde_json::{json, Value};

/// The signature headers of a record whose headers passed the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SignatureHeaders<'a> {
    pub key_id: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
}

/// Applies the rules; `Err` is the dead-letter reason.
pub(crate) fn check<'a>(headers: Result<&'a [RawHeader], &str>) -> Result<SignatureHeaders<'a>, String> {
    let headers = headers.map_err(str::to_string)?;
    if let Some((n, header)) = headers.iter().enumerate().find(|(_, h)| std::str::from_utf8(&h.name).is_err())
    {
        return Err(format!(
            "header {} has a name that is not UTF-8 (hex {})",
            n + 1,
            shown_hex(&header.name)
        ));
    }
    let mut found = SignatureHeaders::default();
    for (name, slot) in [(HEADER_KEY_ID, &mut found.key_id), (HEADER_SIGNATURE, &mut found.signature)] {
        let mut named = headers.iter().filter(|h| h.name == name.as_bytes());
        *slot = named.next().map(|h| h.value.as_deref().unwrap_or_default());
        let more = named.count();
        if more > 0 {
            return Err(format!("header {name} appears {} times; a record may carry it once", more + 1));
        }
    }
    Ok(found)
}

/// The first value of header `name`, for the dead letter's `raw_key_id`/`raw_signature`
/// columns; `Some(empty)` for a null value.
pub(crate) fn first<'a>(headers: Result<&'a [RawHeader], &str>, name: &str) -> Option<&'a [u8]> {
    let headers = headers.ok()?;
    headers.iter().find(|h| h.name == name.as_bytes()).map(|h| h.value.as_deref().unwrap_or_default())
}

/// A record's headers as a dead letter keeps them (`relay.dead_letter.raw_headers`, jsonb):
/// `[{"name": hex, "value": hex or null}, ...]` in record order, or `{"unreadable": reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptHeaders {
    Headers(Vec<RawHeader>),
    Unreadable(String),
}

impl KeptHeaders {
    pub(crate) fn of(headers: Result<&[RawHeader], &str>) -> Self {
        match headers {
            Ok(headers) => Self::Headers(headers.to_vec()),
            Err(reason) => Self::Unreadable(reason.to_string()),
        }
    }

    /// The headers as a [`crate::RawRecord`] takes them.
    pub fn as_record(&self) -> Result<&[RawHeader], &str> {
        match self {
            Self::Headers(headers) => Ok(headers),
            Self::Unreadable(reason) => Err(reason),
        }
    }

    /// The `raw_headers` column's value.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Unreadable(reason) => json!({ "unreadable": reason }),
            Self::Headers(headers) => Value::Array(
                headers
                    .iter()
                    .map(|h| json!({ "name": hex::encode(&h.name), "value": h.value.as_deref().map(hex::encode) }))
                    .collect(),
            ),
        }
    }

    /// Reads the column back; `None` for anything the consumer does not write.
    pub fn from_json(value: &Value) -> Option<Self> {
        if let Some(reason) = value.get("unreadable") {
            return Some(Self::Unreadable(reason.as_str()?.to_string()));
        }
        let headers = value.as_array()?.iter().map(|h| {
            let name = hex::decode(h.get("name")?.as_str()?).ok()?;
            let value = match h.get("value")? {
                Value::Null => None,
                encoded => Some(hex::decode(encoded.as_str()?).ok()?),
            };
            Some(RawHeader { name, value })
        });
        headers.collect::<Option<Vec<_>>>().map(Self::Headers)
    }
}

/// How many bytes of a bad name a reason shows; the whole header is kept beside it.
const SHOWN_BYTES: usize = 32;

fn shown_hex(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_BYTES {
        hex::encode(bytes)
    } else {
        format!("{}… ({} bytes)", hex::encode(&bytes[..SHOWN_BYTES]), bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8], value: Option<&[u8]>) -> RawHeader {
        RawHeader { name: name.to_vec(), value: value.map(<[u8]>::to_vec) }
    }

    #[test]
    fn names_that_are_not_utf8_are_refused_with_their_hex() {
        for (name, hex) in [
            (&b"\xff\xfe"[..], "fffe"),
            (b"\x80", "80"),             // a lone continuation byte
            (b"\xc0\xaf", "c0af"),       // an overlong encoding of '/'
            (b"\xed\xa0\x80", "eda080"), // a UTF-16 surrogate
            (b"ok\xf5", "6f6bf5"),       // a byte that never occurs in UTF-8
        ] {
            let headers = vec![header(b"relay-message-id", Some(b"x")), header(name, Some(b"v"))];
            let reason = check(Ok(&headers)).expect_err("refused");
            assert_eq!(reason, format!("header 2 has a name that is not UTF-8 (hex {hex})"));
        }
        let long = vec![header(&[0xff; 100], None)];
        let reason = check(Ok(&long)).expect_err("refused");
        assert_eq!(
            reason,
            format!("header 1 has a name that is not UTF-8 (hex {}… (100 bytes))", "ff".repeat(32))
        );
    }

    #[test]
    fn a_repeated_signature_header_is_refused_and_single_ones_are_found() {
        let once = vec![
            header(b"", Some(b"")),
            header(b"relay-key-id", Some(b"k1")),
            header(b"relay-signature", None),
            header(b"relay-key-idx", Some(b"k2")),
        ];
        let found = check(Ok(&once)).expect("accepted");
        assert_eq!(found, SignatureHeaders { key_id: Some(b"k1"), signature: Some(b"") });
        let mut twice = once.clone();
        twice.push(header(b"relay-key-id", Some(b"k1")));
        assert_eq!(
            check(Ok(&twice)).expect_err("ambiguous"),
            "header relay-key-id appears 2 times; a record may carry it once"
        );
        assert_eq!(check(Ok(&[])), Ok(SignatureHeaders::default()));
        assert_eq!(
            check(Err("the record's headers cannot be parsed: x")).unwrap_err(),
            "the record's headers cannot be parsed: x"
        );
    }

    #[test]
    fn kept_headers_survive_the_column_exactly() {
        for kept in [
            KeptHeaders::Headers(vec![
                header(b"\xff\xfe", None),
                header(b"", Some(b"")),
                header(b"a", Some(b"\0\x80")),
            ]),
            KeptHeaders::Headers(vec![]),
            KeptHeaders::Unreadable(
                "the record's headers cannot be parsed: Local: Bad message format".into(),
            ),
        ] {
            assert_eq!(KeptHeaders::from_json(&kept.to_json()), Some(kept));
        }
        assert_eq!(KeptHeaders::from_json(&json!([{ "name": "f" }])), None);
        assert_eq!(KeptHeaders::from_json(&json!("x")), None);
    }
}
