//! What the fuzz targets share: the byte layout of a `consumer_record` input, so the seed
//! generator (`crates/relay-envelope/examples/fuzz_seeds.rs`) and the target agree on it.
#![forbid(unsafe_code)]

/// Bytes before the key: flags, limit, key length, partition, offset.
pub const HEADER_LEN: usize = 16;
/// Flag bit: the record has a key.
pub const HAS_KEY: u8 = 1;
/// Flag bit: the record has a value.
pub const HAS_VALUE: u8 = 2;
/// Flag bit: a block of Kafka headers follows the key.
pub const HAS_HEADERS: u8 = 4;
/// Flag bit: signatures are checked, and the record carries a valid signature of its value
/// (its `relay-key-id` and `relay-signature` headers come after the fuzzed ones).
pub const SIGNED: u8 = 8;
/// Flag bit: librdkafka could not parse the record's header bytes.
pub const UNREADABLE: u8 = 16;
/// In a header block, a value length meaning "null value".
pub const NULL_VALUE: u8 = 0xff;

/// A Kafka record's raw parts and the payload limit, as read from a fuzz input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawParts<'a> {
    pub partition: i32,
    pub offset: i64,
    pub limit: usize,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// `(name, value)`, names of any bytes, `None` for a null value.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    pub signed: bool,
    pub unreadable: bool,
}

impl<'a> RawParts<'a> {
    /// Layout: `flags:u8 limit:u16le key_len:u8 partition:i32le offset:i64le key [headers] value`.
    /// With [`HAS_HEADERS`], the header block is `count:u8` and per header `name_len:u8
    /// value_len:u8 name value` ([`NULL_VALUE`] for a null value). Short inputs are padded with
    /// zeros and anything longer than what is left is cut, so every input means something.
    pub fn parse(data: &'a [u8]) -> Self {
        let mut header = [0u8; HEADER_LEN];
        let n = data.len().min(HEADER_LEN);
        header[..n].copy_from_slice(&data[..n]);
        let mut rest = &data[n..];
        let flags = header[0];
        let limit = usize::from(u16::from_le_bytes([header[1], header[2]]));
        let partition = i32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let offset = i64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let key = take(&mut rest, usize::from(header[3]));
        let mut headers = Vec::new();
        if flags & HAS_HEADERS != 0 {
            let count = take(&mut rest, 1).first().copied().unwrap_or(0);
            for _ in 0..count {
                let lengths = take(&mut rest, 2);
                let name_len = lengths.first().copied().unwrap_or(0);
                let value_len = lengths.get(1).copied().unwrap_or(0);
                let name = take(&mut rest, usize::from(name_len));
                let value = (value_len != NULL_VALUE).then(|| take(&mut rest, usize::from(value_len)));
                headers.push((name, value));
            }
        }
        Self {
            partition,
            offset,
            limit,
            key: (flags & HAS_KEY != 0).then_some(key),
            value: (flags & HAS_VALUE != 0).then_some(rest),
            headers,
            signed: flags & SIGNED != 0,
            unreadable: flags & UNREADABLE != 0,
        }
    }
}

/// The first `n` bytes of `rest` (fewer if it is shorter), advancing `rest` past them.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (taken, left) = rest.split_at(n.min(rest.len()));
    *rest = left;
    taken
}
