//! Writes the seed corpora of the fuzz targets in `fuzz/`: a few valid envelopes, and the same
//! envelopes as `consumer_record` inputs (layout in `fuzz/src/lib.rs`), also with Kafka headers.
//!
//! `cargo run -p relay-envelope --example fuzz_seeds -- fuzz/corpus`
#![forbid(unsafe_code)]
use std::{collections::HashMap, path::PathBuf};

use relay_envelope::{encode, Envelope, TraceContext, ENVELOPE_VERSION};

fn envelopes() -> Vec<Envelope> {
    let minimal = Envelope {
        version: ENVELOPE_VERSION,
        message_id: "0b6f5c1e-8a0e-4c3e-9d37-5b0b0d3a1f10".into(),
        source: "payments".into(),
        topic: "payments.v1".into(),
        ..Default::default()
    };
    let full = Envelope {
        message_id: "018f3a5e-7c2b-7d40-9a51-3c1e2f4b6a70".into(),
        key: "account-42".into(),
        r#type: "payment.created".into(),
        content_type: "application/json".into(),
        payload: br#"{"amount_cents":1000}"#.to_vec(),
        headers: HashMap::from([("tenant".into(), "acme".into()), ("region".into(), "eu".into())]),
        created_at_unix_micros: 1_700_000_000_000_000,
        trace: Some(TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: "vendor=1".into(),
        }),
        sequence: 42,
        ..minimal.clone()
    };
    let binary = Envelope {
        message_id: "{6f1d0c7e-2b55-4b8e-8f0a-9d2c4e6b1a33}".into(),
        payload: (0..=255).collect(),
        created_at_unix_micros: -1,
        sequence: u64::from(u32::MAX),
        ..minimal.clone()
    };
    vec![minimal, full, binary]
}

/// `flags` (key and value present), limit 1024, key length, partition 3, offset 1000, key.
fn record_input(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut input = vec![3];
    input.extend_from_slice(&1024u16.to_le_bytes());
    input.push(key.len() as u8);
    input.extend_from_slice(&3i32.to_le_bytes());
    input.extend_from_slice(&1000i64.to_le_bytes());
    input.extend_from_slice(key);
    input.extend_from_slice(value);
    input
}

/// As [`record_input`], with a header block (flag 4), signed by the target's key (flag 8) when
/// `signed`: `headers` are `(name, value)`, names of any bytes.
fn record_input_with_headers(key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])], signed: bool) -> Vec<u8> {
    let mut input = record_input(key, b"");
    input[0] |= 4 | if signed { 8 } else { 0 };
    input.push(headers.len() as u8);
    for (name, value) in headers {
        input.extend_from_slice(&[name.len() as u8, value.len() as u8]);
        input.extend_from_slice(name);
        input.extend_from_slice(value);
    }
    input.extend_from_slice(value);
    input
}

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let (decode_dir, record_dir) = (root.join("envelope_decode"), root.join("consumer_record"));
    std::fs::create_dir_all(&decode_dir)?;
    std::fs::create_dir_all(&record_dir)?;
    for (i, envelope) in envelopes().iter().enumerate() {
        let bytes = encode(envelope);
        std::fs::write(decode_dir.join(format!("seed-{i}")), &bytes)?;
        std::fs::write(record_dir.join(format!("seed-{i}")), record_input(envelope.key.as_bytes(), &bytes))?;
        let tenant: &[(&[u8], &[u8])] = &[(b"tenant", b"acme")];
        let input = record_input_with_headers(envelope.key.as_bytes(), &bytes, tenant, true);
        std::fs::write(record_dir.join(format!("seed-{i}-signed")), input)?;
        let foreign: &[(&[u8], &[u8])] = &[(b"\xff\xfe", b"v"), (b"relay-key-id", b"k1")];
        let input = record_input_with_headers(envelope.key.as_bytes(), &bytes, foreign, false);
        std::fs::write(record_dir.join(format!("seed-{i}-foreign")), input)?;
    }
    println!("wrote {} seeds per target under {}", envelopes().len(), root.display());
    Ok(())
}
