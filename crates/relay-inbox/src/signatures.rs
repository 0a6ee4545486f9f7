//! Whether and how the consumer checks record signatures (`INBOX_VERIFY_KEYS`).
//!
//! With keys set, every record must carry a valid signature by one of them, unless
//! `INBOX_REQUIRE_SIGNATURE=false` lets unsigned records through (signed ones are still checked):
//! that is for the rollout, while the sources are not signing yet. A record that fails goes to
//! dead letter with a reason that names the key id, never a key. `relay-admin dead-letters
//! redrive` reads the same variables, so a re-drive checks signatures exactly as the consumer does.
use relay_config::Reader;
use relay_envelope::{DecodeError, Signed, VerifyKeys};

use crate::names::{INBOX_REQUIRE_SIGNATURE, INBOX_VERIFY_KEYS};

/// The signature check: off (no keys), or the accepted keys and whether unsigned records pass.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    keys: Option<VerifyKeys>,
    require: bool,
}

impl Verification {
    /// No signature check at all.
    pub fn off() -> Self {
        Self::default()
    }

    /// Reads `INBOX_VERIFY_KEYS` (or `INBOX_VERIFY_KEYS_FILE`) and `INBOX_REQUIRE_SIGNATURE`;
    /// problems are recorded in `r` without quoting any key.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let keys = r.secret(INBOX_VERIFY_KEYS).and_then(|list| match VerifyKeys::parse(&list) {
            Ok(keys) => Some(keys),
            Err(problems) => {
                for problem in problems {
                    r.problem(INBOX_VERIFY_KEYS, problem);
                }
                None
            }
        });
        let keys_named = keys.is_some() || r.optional(&format!("{INBOX_VERIFY_KEYS}_FILE")).is_some();
        let require = r.flag(INBOX_REQUIRE_SIGNATURE, keys_named);
        if require && !keys_named {
            r.problem(INBOX_REQUIRE_SIGNATURE, format!("is true but {INBOX_VERIFY_KEYS} is not set"));
        }
        Self { keys, require }
    }

    /// True when records are checked.
    pub fn is_on(&self) -> bool {
        self.keys.is_some()
    }

    /// True when unsigned records are refused.
    pub fn requires_signature(&self) -> bool {
        self.require
    }

    /// The accepted key ids, for the start-up log line.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.as_ref().map(VerifyKeys::ids).unwrap_or_default()
    }

    /// Checks one envelope record's signature headers against its raw value.
    #[cfg(test)]
    pub(crate) fn check(
        &self,
        key_id: Option<&[u8]>,
        signature: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), DecodeError> {
        self.check_input(key_id, signature, Signed::Value(value.unwrap_or_default()))
    }

    /// Checks one record's signature headers against what its format signs.
    pub(crate) fn check_input(
        &self,
        key_id: Option<&[u8]>,
        signature: Option<&[u8]>,
        signed: Signed<'_>,
    ) -> Result<(), DecodeError> {
        let Some(keys) = &self.keys else { return Ok(()) };
        if key_id.is_none() && signature.is_none() && !self.require {
            return Ok(());
        }
        keys.verify_input(key_id, signature, signed)
    }
}

#[cfg(test)]
mod tests {
    use relay_config::MapEnv;

    use super::*;

    const KEY: &str = "k3y-0123456789abcdefghijklmnopqrstuv";

    fn read(vars: &[(&str, &str)]) -> (Verification, Result<(), relay_config::ConfigError>) {
        let env = MapEnv::new(vars.iter().copied());
        let mut r = Reader::new(&env);
        let verification = Verification::read(&mut r);
        (verification, r.finish())
    }

    #[test]
    fn keys_turn_the_check_on_and_require_signatures_unless_told_otherwise() {
        let (off, ok) = read(&[]);
        ok.expect("valid");
        assert!(!off.is_on() && !off.requires_signature());
        assert_eq!(off.check(None, None, Some(b"v")), Ok(()));
        let list = format!("old={KEY},new={KEY}x");
        let (on, ok) = read(&[("INBOX_VERIFY_KEYS", &list)]);
        ok.expect("valid");
        assert!(on.is_on() && on.requires_signature());
        assert_eq!(on.key_ids(), vec!["new", "old"]);
        assert_eq!(on.check(None, None, Some(b"v")), Err(DecodeError::Unsigned));
        let (lenient, ok) = read(&[("INBOX_VERIFY_KEYS", &list), ("INBOX_REQUIRE_SIGNATURE", "false")]);
        ok.expect("valid");
        assert_eq!(lenient.check(None, None, Some(b"v")), Ok(()), "unsigned passes during rollout");
        let forged = lenient.check(Some(b"old"), Some(&[b'0'; 64]), Some(b"v"));
        assert!(matches!(forged, Err(DecodeError::BadSignature(_))), "signed records are still checked");
        assert!(!format!("{on:?}").contains("k3y"), "{on:?}");
    }

    #[test]
    fn bad_lists_and_a_requirement_without_keys_are_reported_without_keys() {
        let (_, result) = read(&[("INBOX_REQUIRE_SIGNATURE", "true")]);
        let text = result.expect_err("no keys").to_string();
        assert!(text.contains("INBOX_REQUIRE_SIGNATURE: is true but INBOX_VERIFY_KEYS is not set"), "{text}");
        let list = format!("k1=k3y-short,{KEY},k2={KEY}");
        let (_, result) = read(&[("INBOX_VERIFY_KEYS", &list)]);
        let err = result.expect_err("bad list");
        let text = err.to_string();
        assert_eq!(err.0.len(), 2, "{text}");
        assert!(text.contains("INBOX_VERIFY_KEYS: the key for id \"k1\" is shorter than 32 bytes"), "{text}");
        assert!(text.contains("INBOX_VERIFY_KEYS: entry 2 is not keyid=secret"), "{text}");
        assert!(!text.contains("k3y"), "{text}");
    }
}
