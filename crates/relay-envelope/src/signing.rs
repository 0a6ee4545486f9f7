//! Opt-in HMAC-SHA256 signatures over what a Kafka record says ([`Signed`]).
//!
//! For an envelope record the source signs the encoded envelope (the record value) and sends the
//! signature and the id of the key it used as Kafka headers ([`HEADER_SIGNATURE`],
//! [`HEADER_KEY_ID`]). Because the bytes signed are the bytes sent, nothing is canonicalised and
//! the envelope stays version 1. A CloudEvents record carries its attributes in headers, so
//! there the value and a canonical encoding of the headers are signed (see
//! [`crate::cloudevents::feed_signed`]).
//! Consumers hold several keys by id ([`VerifyKeys`]), so a key can be rotated: add the new key
//! to every consumer, switch the source to it, then remove the old one.
//!
//! Key material lives in [`secrecy`] boxes: no `Debug` output, error or log line shows a key.
//! Key problems are returned as plain messages for the configuration readers; none quotes a key.
use std::{collections::BTreeMap, fmt};

use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::DecodeError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Kafka header carrying the signature: lowercase hex of HMAC-SHA256 over the record value.
pub const HEADER_SIGNATURE: &str = "relay-signature";
/// Kafka header carrying the id of the key that made the signature.
pub const HEADER_KEY_ID: &str = "relay-key-id";
/// The shortest key accepted, in bytes (the HMAC-SHA256 output size).
pub const MIN_KEY_BYTES: usize = 32;
/// The longest key id accepted, in characters.
pub const MAX_KEY_ID_CHARS: usize = 64;

/// Checks a key id: 1-64 characters of `[A-Za-z0-9._-]`, so it is safe in headers and logs.
pub fn check_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("key id is empty".into());
    }
    if id.chars().count() > MAX_KEY_ID_CHARS {
        return Err(format!("key id is longer than {MAX_KEY_ID_CHARS} characters"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err("key id may only contain letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

fn key_bytes(id: &str, secret: &str) -> Result<SecretSlice<u8>, String> {
    if secret.len() < MIN_KEY_BYTES {
        return Err(format!("the key for id {id:?} is shorter than {MIN_KEY_BYTES} bytes"));
    }
    Ok(SecretSlice::from(secret.as_bytes().to_vec()))
}

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub enum Signed<'a> {
    /// An envelope record: the exact bytes of its value.
    Value(&'a [u8]),
    /// A CloudEvents record: its value and every header but [`HEADER_SIGNATURE`], as
    /// `(name, value)` in record order (`None` for a null value), canonically encoded.
    CloudEvent { value: &'a [u8], headers: &'a [(&'a [u8], Option<&'a [u8]>)] },
}

fn mac(key: &SecretSlice<u8>, signed: Signed<'_>) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key.expose_secret()).unwrap_or_else(|_| unreachable!());
    match signed {
        Signed::Value(value) => mac.update(value),
        Signed::CloudEvent { value, headers } => {
            crate::cloudevents::feed_signed(value, headers, |bytes| mac.update(bytes))
        }
    }
    mac
}

/// The key a source signs with: its id and its secret bytes (at least [`MIN_KEY_BYTES`]).
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    key: SecretSlice<u8>,
}

impl SigningKey {
    /// A key from its id and secret; the error names the problem without the secret.
    pub fn new(id: &str, secret: &SecretString) -> Result<Self, String> {
        check_key_id(id)?;
        Ok(Self { id: id.to_string(), key: key_bytes(id, secret.expose_secret())? })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The signature of an envelope record's `value`, as sent in [`HEADER_SIGNATURE`].
    pub fn sign(&self, value: &[u8]) -> String {
        self.sign_input(Signed::Value(value))
    }

    /// The signature of what `signed` names, as sent in [`HEADER_SIGNATURE`].
    pub fn sign_input(&self, signed: Signed<'_>) -> String {
        hex::encode(mac(&self.key, signed).finalize().into_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).field("key", &"[redacted]").finish()
    }
}

/// The keys a consumer accepts, by id. Several during a rotation.
#[derive(Clone)]
pub struct VerifyKeys {
    keys: BTreeMap<String, SecretSlice<u8>>,
}

impl VerifyKeys {
    /// Parses `id=secret,id=secret`. Secrets may contain `=` but not `,`. Every problem is
    /// returned; none quotes a secret (an entry without `=` is named by its position only).
    pub fn parse(list: &SecretString) -> Result<Self, Vec<String>> {
        let mut keys = BTreeMap::new();
        let mut problems = Vec::new();
        let entries = list.expose_secret().split(',').map(str::trim).filter(|e| !e.is_empty());
        for (n, entry) in entries.enumerate() {
            let Some((id, secret)) = entry.split_once('=') else {
                problems.push(format!("entry {} is not keyid=secret", n + 1));
                continue;
            };
            let (id, secret) = (id.trim(), secret.trim());
            if let Err(why) = check_key_id(id) {
                problems.push(format!("entry {}: {why}", n + 1));
                continue;
            }
            match key_bytes(id, secret) {
                Err(why) => problems.push(why),
                Ok(_) if keys.contains_key(id) => problems.push(format!("key id {id:?} is listed twice")),
                Ok(key) => {
                    keys.insert(id.to_string(), key);
                }
            }
        }
        if keys.is_empty() && problems.is_empty() {
            problems.push("lists no key".into());
        }
        if problems.is_empty() {
            Ok(Self { keys })
        } else {
            Err(problems)
        }
    }

    /// The ids accepted, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// Checks an envelope record's signature headers against its value, in constant time.
    /// `None` headers mean the record is unsigned.
    pub fn verify(
        &self,
        key_id: Option<&[u8]>,
        signature: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(), DecodeError> {
        self.verify_input(key_id, signature, Signed::Value(value))
    }

    /// Checks a record's signature headers against what `signed` names, in constant time.
    pub fn verify_input(
        &self,
        key_id: Option<&[u8]>,
        signature: Option<&[u8]>,
        signed: Signed<'_>,
    ) -> Result<(), DecodeError> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Err(DecodeError::Unsigned);
        };
        // The shown key id is built only for a refusal: this runs for every signed record.
        let Some(key) = std::str::from_utf8(key_id).ok().and_then(|id| self.keys.get(id)) else {
            return Err(DecodeError::UnknownKeyId(shown_key_id(key_id)));
        };
        let signature = std::str::from_utf8(signature)
            .ok()
            .and_then(from_hex_digest)
            .ok_or_else(|| DecodeError::MalformedSignature(shown_key_id(key_id)))?;
        mac(key, signed).verify_slice(&signature).map_err(|_| match signed {
            Signed::Value(_) => DecodeError::BadSignature(shown_key_id(key_id)),
            Signed::CloudEvent { .. } => DecodeError::BadHeadersSignature(shown_key_id(key_id)),
        })
    }
}

impl fmt::Debug for VerifyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKeys").field("ids", &self.ids()).field("keys", &"[redacted]").finish()
    }
}

/// A key id from a record, fit for a dead-letter reason: escaped and cut to a sane length.
fn shown_key_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let cut: String = text.chars().take(MAX_KEY_ID_CHARS).collect();
    let quoted = format!("{cut:?}");
    if cut.len() < text.len() {
        format!("{quoted}…")
    } else {
        quoted
    }
}

fn from_hex_digest(text: &str) -> Option<Vec<u8>> {
    // Exactly one HMAC-SHA256 output: 32 bytes, 64 hex digits.
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex::decode(text).ok()
}

#[cfg(test)]
mod tests;
