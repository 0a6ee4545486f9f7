//! CloudEvents binary content mode: the second wire format, one that any Kafka client reads
//! without Relay code (analytics, Kafka Streams, Java services).
//!
//! Spec sources: the CloudEvents v1.0.2 core specification (required attributes `id`, `source`
//! (a URI-reference), `specversion` (`"1.0"`) and `type`; optional `datacontenttype` and `time`
//! (RFC 3339); extension attribute names of lowercase `a-z` and `0-9`) and its Kafka protocol
//! binding, binary content mode (section 3.2): the record value is the event data as it is, the
//! `content-type` header carries `datacontenttype`, and every other attribute is a header named
//! `ce_<attribute>` whose value is the attribute as UTF-8 text. The `partitionkey` extension maps
//! to the record key (section 3.1).
//!
//! The message is the same [`Envelope`] either way; only its encoding differs. [`headers_of`]
//! encodes one (the payload is the record value), [`decode`] reads one back into an envelope, so
//! the inbox stores exactly the row it stores for the envelope format. Relay's fields outside the
//! core attributes travel as extensions: `ce_partitionkey` (the key, equal to the record key),
//! `ce_relaytopic`, `ce_relaysequence` and, for a message enqueued without a type,
//! `ce_relayuntyped` (`type` is required by the spec, so such a message is sent as
//! [`UNTYPED_TYPE`] with that flag and stored with an empty type again).
//!
//! Signatures cover the value and every header but the signature itself ([`feed_signed`]).
use std::collections::BTreeMap;

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    DecodeError, Decoded, Envelope, TraceContext, ENVELOPE_VERSION, HEADER_ENVELOPE_VERSION, HEADER_KEY_ID,
    HEADER_MESSAGE_ID, HEADER_SIGNATURE, HEADER_TRACEPARENT, HEADER_TRACESTATE,
};

/// The CloudEvents version written and the only one accepted.
pub const SPEC_VERSION: &str = "1.0";
/// The header whose presence makes a record a CloudEvent.
pub const HEADER_SPECVERSION: &str = "ce_specversion";
pub const HEADER_ID: &str = "ce_id";
pub const HEADER_SOURCE: &str = "ce_source";
pub const HEADER_TYPE: &str = "ce_type";
pub const HEADER_TIME: &str = "ce_time";
/// `datacontenttype` (binding section 3.2.1); sent only when the message has a content type.
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// The `partitionkey` extension: the message key, equal to the record key.
pub const HEADER_PARTITIONKEY: &str = "ce_partitionkey";
/// Extension: the outbox topic the message was written for (a copy on another topic is refused).
pub const HEADER_RELAYTOPIC: &str = "ce_relaytopic";
/// Extension: the outbox position (`relay.outbox.id`), decimal, for ordering and reconciliation.
pub const HEADER_RELAYSEQUENCE: &str = "ce_relaysequence";
/// Extension: `true` when the message was enqueued without a type.
pub const HEADER_RELAYUNTYPED: &str = "ce_relayuntyped";
/// `ce_type` of a message enqueued without a type.
pub const UNTYPED_TYPE: &str = "relay.untyped";

/// What a signature over a CloudEvents record starts with, so that it can never be taken for an
/// envelope signature (which covers the value alone) or the other way round.
const SIGNING_DOMAIN: &[u8] = b"relay-cloudevents-signature-v1\0";

/// Whether an application header name is taken by the format on a CloudEvents topic: any
/// `ce_` name, `content-type`, the trace context and Relay's own headers, in any letter case.
/// The poller parks a message with such a header, naming it.
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("ce_")
        || [HEADER_CONTENT_TYPE, HEADER_TRACEPARENT, HEADER_TRACESTATE].contains(&lower.as_str())
        || [HEADER_SIGNATURE, HEADER_KEY_ID, HEADER_MESSAGE_ID, HEADER_ENVELOPE_VERSION]
            .contains(&lower.as_str())
}

/// Whether a record's headers say it is a CloudEvent: it has a [`HEADER_SPECVERSION`] header.
pub fn is_cloudevent(headers: &[(&[u8], Option<&[u8]>)]) -> bool {
    headers.iter().any(|(name, _)| *name == HEADER_SPECVERSION.as_bytes())
}

/// The first header of a record that is not a CloudEvent but has a CloudEvents attribute name
/// (`ce_...`, any case): such a record is refused rather than read as an envelope.
pub fn stray_attribute<'a>(headers: &[(&'a [u8], Option<&[u8]>)]) -> Option<&'a [u8]> {
    headers
        .iter()
        .map(|(name, _)| *name)
        .find(|name| name.len() >= 3 && name[..3].eq_ignore_ascii_case(b"ce_"))
}

/// The headers of `envelope` in binary content mode, in the order sent: the attributes, then
/// the trace context, then the application headers sorted by name. The record value is
/// `envelope.payload` and the record key `envelope.key`. `Err` says why the message cannot be
/// sent so: an application header with a reserved name ([`is_reserved`]) or a creation time
/// that RFC 3339 cannot write (before year 0 or after 9999).
pub fn headers_of(envelope: &Envelope) -> Result<Vec<(String, String)>, String> {
    if let Some(name) = envelope.headers.keys().filter(|n| is_reserved(n)).min() {
        return Err(format!(
            "header {name:?} is reserved on a CloudEvents topic (ce_*, content-type, traceparent, \
             tracestate and relay-* are the format's own)"
        ));
    }
    let time = rfc3339(envelope.created_at_unix_micros).ok_or_else(|| {
        format!("created_at ({} µs) cannot be written as RFC 3339", envelope.created_at_unix_micros)
    })?;
    let untyped = envelope.r#type.is_empty();
    let ce_type = if untyped { UNTYPED_TYPE } else { envelope.r#type.as_str() };
    let mut headers: Vec<(String, String)> = vec![
        (HEADER_SPECVERSION.into(), SPEC_VERSION.into()),
        (HEADER_ID.into(), envelope.message_id.clone()),
        (HEADER_SOURCE.into(), envelope.source.clone()),
        (HEADER_TYPE.into(), ce_type.into()),
        (HEADER_TIME.into(), time),
    ];
    if !envelope.content_type.is_empty() {
        headers.push((HEADER_CONTENT_TYPE.into(), envelope.content_type.clone()));
    }
    headers.push((HEADER_PARTITIONKEY.into(), envelope.key.clone()));
    headers.push((HEADER_RELAYTOPIC.into(), envelope.topic.clone()));
    headers.push((HEADER_RELAYSEQUENCE.into(), envelope.sequence.to_string()));
    if untyped {
        headers.push((HEADER_RELAYUNTYPED.into(), "true".into()));
    }
    let trace = envelope.trace.clone().unwrap_or_default();
    for (name, value) in [(HEADER_TRACEPARENT, trace.traceparent), (HEADER_TRACESTATE, trace.tracestate)] {
        if !value.is_empty() {
            headers.push((name.into(), value));
        }
    }
    let user: BTreeMap<&String, &String> = envelope.headers.iter().collect();
    headers.extend(user.into_iter().map(|(n, v)| (n.clone(), v.clone())));
    Ok(headers)
}

/// Reads a CloudEvents record back into the envelope it was made from, and checks it as
/// [`crate::decode`] checks an envelope. `Err` is the dead-letter reason: a required attribute
/// missing or invalid, any `ce_` or format header twice or with a null or non-UTF-8 value, a
/// name that differs from a format name only in case, an envelope header beside `ce_specversion`,
/// a record key other than `ce_partitionkey`, or an application header twice or not UTF-8.
/// Unknown `ce_` extensions are ignored, as the spec asks of consumers.
pub fn decode(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) -> Result<Decoded, DecodeError> {
    let fail = |why: String| DecodeError::CloudEvents(why);
    let mut attributes: BTreeMap<String, String> = BTreeMap::new();
    let mut user = std::collections::HashMap::new();
    for (n, (name, raw)) in headers.iter().enumerate() {
        let name = std::str::from_utf8(name)
            .map_err(|_| fail(format!("header {} has a name that is not UTF-8", n + 1)))?;
        if name == HEADER_SIGNATURE || name == HEADER_KEY_ID {
            continue;
        }
        if name == HEADER_MESSAGE_ID || name == HEADER_ENVELOPE_VERSION {
            return Err(fail(format!("it has both {HEADER_SPECVERSION} and the envelope header {name}")));
        }
        let lower = name.to_ascii_lowercase();
        if is_reserved(name) && name != lower {
            return Err(fail(format!("header {} is a format header in the wrong letter case", quoted(name))));
        }
        let Some(raw) = raw else { return Err(fail(format!("header {} has a null value", quoted(name)))) };
        let text = std::str::from_utf8(raw)
            .map_err(|_| fail(format!("header {} has a value that is not UTF-8", quoted(name))))?;
        let format_header = name.starts_with("ce_") || is_reserved(name);
        let slot = if format_header {
            attributes.insert(name.into(), text.into())
        } else {
            user.insert(name.to_string(), text.to_string())
        };
        if slot.is_some() {
            return Err(fail(format!("header {} appears more than once", quoted(name))));
        }
    }
    let required = |name: &str| -> Result<&str, DecodeError> {
        match attributes.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(fail(format!("required attribute {name} is missing or empty"))),
        }
    };
    let version = required(HEADER_SPECVERSION)?;
    if version != SPEC_VERSION {
        return Err(fail(format!("{HEADER_SPECVERSION} {} is not {SPEC_VERSION}", quoted(version))));
    }
    let message_id = required(HEADER_ID)?.to_string();
    let source = required(HEADER_SOURCE)?.to_string();
    let ce_type = required(HEADER_TYPE)?;
    let time = required(HEADER_TIME)?;
    let created_at_unix_micros = parse_rfc3339(time)
        .ok_or_else(|| fail(format!("{HEADER_TIME} {} is not an RFC 3339 time", quoted(time))))?;
    let topic = required(HEADER_RELAYTOPIC)?.to_string();
    let sequence_text = required(HEADER_RELAYSEQUENCE)?;
    let sequence = Some(sequence_text)
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            fail(format!("{HEADER_RELAYSEQUENCE} {} is not a whole number", quoted(sequence_text)))
        })?;
    let untyped = match attributes.get(HEADER_RELAYUNTYPED).map(String::as_str) {
        None => false,
        Some("true") if ce_type == UNTYPED_TYPE => true,
        Some(other) => {
            return Err(fail(format!(
                "{HEADER_RELAYUNTYPED} {} goes only with {HEADER_TYPE} {UNTYPED_TYPE:?}, as \"true\"",
                quoted(other)
            )))
        }
    };
    let r#type = if untyped { String::new() } else { ce_type.to_string() };
    let Some(partition_key) = attributes.get(HEADER_PARTITIONKEY) else {
        return Err(fail(format!("required attribute {HEADER_PARTITIONKEY} is missing")));
    };
    if key.unwrap_or_default() != partition_key.as_bytes() {
        return Err(fail(format!("the record key is not {HEADER_PARTITIONKEY} {}", quoted(partition_key))));
    }
    let text = |name: &str| attributes.get(name).cloned().unwrap_or_default();
    let (traceparent, tracestate) = (text(HEADER_TRACEPARENT), text(HEADER_TRACESTATE));
    let trace = (!traceparent.is_empty() || !tracestate.is_empty())
        .then_some(TraceContext { traceparent, tracestate });
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        message_id,
        source,
        topic,
        key: partition_key.clone(),
        r#type,
        content_type: text(HEADER_CONTENT_TYPE),
        payload: value.unwrap_or_default().to_vec(),
        headers: user,
        created_at_unix_micros,
        trace,
        sequence,
    };
    crate::validate(envelope)
}

/// Feeds the bytes a CloudEvents signature covers to `feed`: a domain tag, the value
/// length-prefixed, then the number of headers and each header, sorted by name (bytewise; headers
/// of one name keep their record order), every header but [`HEADER_SIGNATURE`]. A header is its
/// name length-prefixed, then `0` for a null value or `1` and the value length-prefixed. Lengths
/// and the count are 8-byte little-endian, so no two different records feed the same bytes.
pub fn feed_signed(value: &[u8], headers: &[(&[u8], Option<&[u8]>)], mut feed: impl FnMut(&[u8])) {
    let length = |feed: &mut dyn FnMut(&[u8]), n: usize| feed(&(n as u64).to_le_bytes());
    feed(SIGNING_DOMAIN);
    length(&mut feed, value.len());
    feed(value);
    let mut signed: Vec<&(&[u8], Option<&[u8]>)> =
        headers.iter().filter(|(name, _)| *name != HEADER_SIGNATURE.as_bytes()).collect();
    signed.sort_by(|a, b| a.0.cmp(b.0));
    length(&mut feed, signed.len());
    for (name, value) in signed {
        length(&mut feed, name.len());
        feed(name);
        match value {
            None => feed(&[0]),
            Some(value) => {
                feed(&[1]);
                length(&mut feed, value.len());
                feed(value);
            }
        }
    }
}

/// Microseconds since 1970 as RFC 3339 in UTC (`2025-01-02T03:04:05.123456Z`).
fn rfc3339(micros: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()?.format(&Rfc3339).ok()
}

/// An RFC 3339 time (any offset) as microseconds since 1970, finer digits dropped (toward the past).
fn parse_rfc3339(text: &str) -> Option<i64> {
    let nanos = OffsetDateTime::parse(text, &Rfc3339).ok()?.unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1000)).ok()
}

/// How much of a foreign text a reason quotes; the whole record is kept beside it.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(64) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests;
