//! `relay_envelope::decode` on arbitrary bytes: never panics, and whatever it accepts survives a
//! round trip (encode, decode again: the same envelope). The bytes themselves need not repeat:
//! headers are a map, encoded in its iteration order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = relay_envelope::decode(Some(data)) else {
        return;
    };
    let bytes = relay_envelope::encode(&decoded.envelope);
    let again = relay_envelope::decode(Some(&bytes)).expect("a re-encoded envelope must decode");
    assert_eq!(again, decoded, "round trip changed the envelope");
});
