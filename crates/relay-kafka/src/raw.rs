//! Kafka records read (and, for tests and tools, written) with their header names as raw bytes.
//!
//! Why this module exists: rdkafka's safe header API hands out header names as `&str` and
//! panics (`CStr::to_str().unwrap()` in `BorrowedHeaders::try_get`) on a name that is not UTF-8.
//! Kafka's record format calls header names strings, but no broker checks them, so anyone who
//! may write to a topic could make a consumer that reads headers that way panic on the record,
//! never store its offset, and die on it again after every restart. So the consumer never lets
//! rdkafka look at headers: [`read_message`] copies a consumed record, headers included as
//! `(name bytes, value bytes)`, through librdkafka's C API, and the caller judges the names.
//!
//! This is the only module in Relay with `unsafe` code. Every block says why it is sound. The
//! C functions used are librdkafka's documented header API (`rd_kafka_message_headers`,
//! `rd_kafka_header_cnt`, `rd_kafka_header_get_all`, `rd_kafka_headers_new`,
//! `rd_kafka_header_add`, `rd_kafka_headers_destroy`) and `rd_kafka_produceva`.
//!
//! librdkafka hands out a header's name as a C string, so a name with a NUL byte in it reads as
//! its part before the NUL. Nothing can make it read as anything longer.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::{
    ffi::{c_void, CStr, CString},
    ptr::{self, NonNull},
};

use rdkafka::{
    bindings as rd,
    error::{KafkaError, RDKafkaErrorCode},
    message::{BorrowedMessage, Message},
    producer::{BaseProducer, Producer, ProducerContext},
    types::RDKafkaRespErr,
};

/// One Kafka record header as it arrived: its name's bytes (up to a NUL, see the module
/// docs) and its value, `None` for a null value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    pub name: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A consumed record copied out of librdkafka, nothing interpreted: where it sits, its key and
/// value (`None` when null), and its headers in record order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The headers, or librdkafka's reason why the record's header bytes cannot be parsed (a
    /// malformed header block, or more than librdkafka's limit of 100,000 headers).
    pub headers: Result<Vec<RawHeader>, String>,
}

/// Copies a consumed record, its headers as raw bytes. Never panics on anything a producer can
/// put in a record. The topic name is the subscribed topic's, which the consumer chose.
pub fn read_message(message: &BorrowedMessage<'_>) -> RawMessage {
    RawMessage {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: read_headers(message),
    }
}

fn read_headers(message: &BorrowedMessage<'_>) -> Result<Vec<RawHeader>, String> {
    let mut list: *mut rd::rd_kafka_headers_t = ptr::null_mut();
    // SAFETY: `message.ptr()` is the live `rd_kafka_message_t` this `BorrowedMessage` wraps, valid
    // for the borrow. `rd_kafka_message_headers` parses the record's header bytes once, keeps the
    // list in the message (as rdkafka's own `headers()` does) and writes its address to `list`.
    let err = unsafe { rd::rd_kafka_message_headers(message.ptr(), &mut list) };
    match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR if !list.is_null() => {
            // SAFETY: `list` belongs to the message, which outlives this call and is not
            // changed meanwhile: we hold a shared borrow of it and nothing else writes to it.
            Ok(unsafe { copy_headers(list) })
        }
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR | RDKafkaRespErr::RD_KAFKA_RESP_ERR__NOENT => {
            Ok(Vec::new())
        }
        other => Err(format!("the record's headers cannot be parsed: {}", RDKafkaErrorCode::from(other))),
    }
}

/// Copies every header of `list`, in order.
///
/// # Safety
/// `list` must point to a live librdkafka header list that nothing changes during the call.
unsafe fn copy_headers(list: *const rd::rd_kafka_headers_t) -> Vec<RawHeader> {
    // SAFETY: the caller guarantees `list` is a live header list.
    let count = unsafe { rd::rd_kafka_header_cnt(list) };
    let mut headers = Vec::with_capacity(count);
    for idx in 0..count {
        let (mut name, mut value, mut size) = (ptr::null(), ptr::null(), 0usize);
        // SAFETY: `list` is live (caller) and `idx < count`; librdkafka writes the three
        // out-parameters, pointing into the header it keeps in `list`.
        let err = unsafe { rd::rd_kafka_header_get_all(list, idx, &mut name, &mut value, &mut size) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break; // Only for idx >= count, which the loop never reaches.
        }
        // SAFETY: librdkafka stores every header name NUL-terminated (`rd_kafka_header_add`
        // appends the NUL), and the name lives as long as `list`. The bytes are copied at once.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = (!value.is_null()).then(|| {
            // SAFETY: a non-null value points to `size` bytes kept in `list` (plus a NUL that
            // is not part of it); they are copied at once.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        });
        headers.push(RawHeader { name, value });
    }
    headers
}

/// A valid address for a zero-length name or value: C's `memcpy` wants one even for no bytes.
const EMPTY: &[u8; 1] = b"\0";

fn bytes_ptr(bytes: &[u8]) -> *const u8 {
    if bytes.is_empty() {
        EMPTY.as_ptr()
    } else {
        bytes.as_ptr()
    }
}

/// A header list built inside librdkafka from raw names and values, any bytes at all. For
/// [`send_raw`] and for the fuzz target, which reads it back through the same code that reads a
/// consumed record's headers.
#[derive(Debug)]
pub struct NativeHeaders {
    list: NonNull<rd::rd_kafka_headers_t>,
}

impl NativeHeaders {
    /// Builds the list; each entry is `(name, value)`, `None` for a null value.
    pub fn new(headers: &[(&[u8], Option<&[u8]>)]) -> Self {
        // SAFETY: allocates a new, empty list; librdkafka aborts rather than return NULL.
        let raw = unsafe { rd::rd_kafka_headers_new(headers.len()) };
        let list = NonNull::new(raw).expect("rd_kafka_headers_new returned NULL");
        for (name, value) in headers {
            let (value_ptr, value_len) = match value {
                Some(value) => (bytes_ptr(value).cast::<c_void>(), value.len() as isize),
                None => (ptr::null(), 0),
            };
            // SAFETY: `list` is the live list made above. `name` and `value` point to
            // `name.len()` and `value_len` readable bytes (or to EMPTY for none), which
            // librdkafka copies; a slice is never longer than isize::MAX.
            unsafe {
                rd::rd_kafka_header_add(
                    list.as_ptr(),
                    bytes_ptr(name).cast(),
                    name.len() as isize,
                    value_ptr,
                    value_len,
                )
            };
        }
        Self { list }
    }

    /// The headers as a consumer reads them ([`RawMessage::headers`]).
    pub fn read(&self) -> Vec<RawHeader> {
        // SAFETY: `self.list` is live until drop, and `&self` keeps it from changing.
        unsafe { copy_headers(self.list.as_ptr()) }
    }
}

impl Drop for NativeHeaders {
    fn drop(&mut self) {
        // SAFETY: the list is ours (never handed over: `send_raw` forgets a list it gave away).
        unsafe { rd::rd_kafka_headers_destroy(self.list.as_ptr()) };
    }
}

/// One record for [`send_raw`], written exactly as given.
#[derive(Debug, Clone, Copy)]
pub struct RawRecordOut<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// `None` writes a null key.
    pub key: Option<&'a [u8]>,
    /// `None` writes a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// `(name, value)` with names of any bytes; `None` writes a null header value.
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
}

/// Enqueues `record` on `producer` with its header names as raw bytes, which rdkafka's safe API
/// cannot do (it takes names as `&str`): for tests and tools that play a hostile producer. The
/// outcome arrives in the producer context's delivery report; `flush` the producer to wait.
/// Errors: librdkafka refused to enqueue (unknown partition, queue full, a topic name with NUL).
pub fn send_raw<C>(producer: &BaseProducer<C>, record: &RawRecordOut<'_>) -> Result<(), KafkaError>
where
    C: ProducerContext<DeliveryOpaque = ()>,
{
    let topic = CString::new(record.topic)
        .map_err(|_| KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic))?;
    let headers = NativeHeaders::new(record.headers);
    let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
    let mem = |bytes: &[u8]| rd::rd_kafka_vu_s__bindgen_ty_1 {
        mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
            ptr: bytes_ptr(bytes).cast_mut().cast(),
            size: bytes.len(),
        },
    };
    let mut vus = vec![
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_TOPIC,
            rd::rd_kafka_vu_s__bindgen_ty_1 { cstr: topic.as_ptr() },
        ),
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_PARTITION,
            rd::rd_kafka_vu_s__bindgen_ty_1 { i32_: record.partition },
        ),
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS,
            rd::rd_kafka_vu_s__bindgen_ty_1 { i: rd::RD_KAFKA_MSG_F_COPY },
        ),
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADERS,
            rd::rd_kafka_vu_s__bindgen_ty_1 { headers: headers.list.as_ptr() },
        ),
    ];
    if let Some(key) = record.key {
        vus.push(vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY, mem(key)));
    }
    if let Some(value) = record.value {
        vus.push(vu(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE, mem(value)));
    }
    // SAFETY: the producer's handle is live while `producer` is borrowed. Every pointer in
    // `vus` is valid for the call: the topic CString, the key and value (copied, as
    // RD_KAFKA_MSG_F_COPY asks) and the header list. No opaque is set, which is what the
    // context's `DeliveryOpaque = ()` expects in its delivery report.
    let error = unsafe { rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), vus.len()) };
    if error.is_null() {
        // librdkafka owns the header list now and frees it with the message.
        std::mem::forget(headers);
        return Ok(());
    }
    // SAFETY: a non-null result is an error object we own; read its code, then free it.
    let code = unsafe {
        let code = rd::rd_kafka_error_code(error);
        rd::rd_kafka_error_destroy(error);
        code
    };
    Err(KafkaError::MessageProduction(code.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_and_values_of_any_bytes_read_back_as_written() {
        let huge = vec![0xa5; 300_000];
        let written: Vec<(&[u8], Option<&[u8]>)> = vec![
            (b"\xff\xfe", Some(b"v")),
            (b"\x80", None),
            (b"\xc0\xaf", Some(b"")),
            (b"", Some(b"\x00\xff")),
            (b"relay-signature", Some(&huge)),
        ];
        let read = NativeHeaders::new(&written).read();
        let expected: Vec<RawHeader> = written
            .iter()
            .map(|(name, value)| RawHeader { name: name.to_vec(), value: value.map(<[u8]>::to_vec) })
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn a_name_with_a_nul_reads_as_its_part_before_the_nul() {
        let read = NativeHeaders::new(&[(b"relay-key-id\0\xff", Some(b"k1"))]).read();
        assert_eq!(read, vec![RawHeader { name: b"relay-key-id".to_vec(), value: Some(b"k1".to_vec()) }]);
    }

    #[test]
    fn many_headers_keep_their_order() {
        let names: Vec<Vec<u8>> =
            (0..5000u32).map(|i| [format!("h{i}").as_bytes(), b"\xff"].concat()).collect();
        let written: Vec<(&[u8], Option<&[u8]>)> = names.iter().map(|n| (n.as_slice(), None)).collect();
        let read: Vec<Vec<u8>> = NativeHeaders::new(&written).read().into_iter().map(|h| h.name).collect();
        assert_eq!(read, names);
    }
}
