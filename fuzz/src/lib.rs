//! What the fuzz targets share: the byte layout of a `consumer_record` input, so the seed
//! generator (`crates/relay-envelope/examples/fuzz_seeds.rs`) and the target agree on it.
#![forbid(unsafe_code)]

/// Bytes before the key: flags, limit, key length, partition, offset.
pub const HEADER_LEN: usize = 16;
/// Flag bit: the record has a key.
pub const HAS_KEY: u8 = 1;
/// Flag bit: the record has a value.
pub const HAS_VALUE: u8 = 2;

/// A Kafka record's raw parts and the payload limit, as read from a fuzz input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawParts<'a> {
    pub partition: i32,
    pub offset: i64,
    pub limit: usize,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

impl<'a> RawParts<'a> {
    /// Layout: `flags:u8 limit:u16le key_len:u8 partition:i32le offset:i64le key value...`.
    /// Short inputs are padded with zeros, a key longer than what is left is cut, so every
    /// input means something.
    pub fn parse(data: &'a [u8]) -> Self {
        let mut header = [0u8; HEADER_LEN];
        let n = data.len().min(HEADER_LEN);
        header[..n].copy_from_slice(&data[..n]);
        let rest = &data[n..];
        let flags = header[0];
        let limit = usize::from(u16::from_le_bytes([header[1], header[2]]));
        let key_len = usize::from(header[3]).min(rest.len());
        let partition = i32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let offset = i64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let (key, value) = rest.split_at(key_len);
        Self {
            partition,
            offset,
            limit,
            key: (flags & HAS_KEY != 0).then_some(key),
            value: (flags & HAS_VALUE != 0).then_some(value),
        }
    }
}
