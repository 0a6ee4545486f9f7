//! Memory bounded by bytes, not only by rows or records. A batch of 1,000 rows is a few hundred
//! kilobytes with small payloads and a gigabyte with 1 MiB ones, so each service bounds what it
//! holds at once by bytes as well: the poller's fetched batch and its producer queue, the
//! consumer's prefetch queue, fetch responses and insert batches. Every bound still lets one
//! record at the largest payload limit through, so the documented limits stay sendable end to
//! end (a batch always takes at least one row or record, however large).
use crate::{KafkaProperties, PayloadLimits, Reader, RECORD_OVERHEAD_BYTES};

/// Default of `OUTBOX_BATCH_MAX_BYTES` and `INBOX_BATCH_MAX_BYTES`: 8 MiB.
pub const BATCH_MAX_BYTES_DEFAULT: u64 = 8 << 20;
/// Smallest and largest accepted batch byte bound: 1 KiB and 1 GiB.
const BATCH_MAX_BYTES_RANGE: (u64, u64) = (1 << 10, 1 << 30);
/// The consumer's prefetch (`queued.max.messages.kbytes`) and fetch response (`fetch.max.bytes`)
/// bound unless a record at the largest payload limit needs more: 8 MiB.
pub const CONSUMER_FETCH_BYTES_DEFAULT: usize = 8 << 20;
/// Batches' worth of records the poller may leave awaiting their delivery reports (stragglers)
/// before it stops sending; its producer queue holds that many batches, one more in flight and
/// one record at the largest limit.
pub const STRAGGLER_BATCHES: usize = 4;

/// Reads `{prefix}BATCH_MAX_BYTES` (`OUTBOX_`, `INBOX_`): the most payload bytes one batch holds,
/// always at least one row or record.
pub fn read_batch_max_bytes(reader: &mut Reader<'_>, prefix: &str) -> usize {
    let (min, max) = BATCH_MAX_BYTES_RANGE;
    reader.number(&format!("{prefix}BATCH_MAX_BYTES"), BATCH_MAX_BYTES_DEFAULT, min, max) as usize
}

/// The producer's queue bound in KiB (`queue.buffering.max.kbytes`) as Relay sets it: room for
/// [`STRAGGLER_BATCHES`] + 1 batches of `batch_max_bytes` and one record of `max_record` bytes.
pub fn producer_queue_kbytes(batch_max_bytes: usize, max_record: usize) -> usize {
    ((STRAGGLER_BATCHES + 1) * batch_max_bytes + max_record).div_ceil(1024)
}

/// The producer's memory settings Relay sets unless the operator did: `(property, value)`.
pub fn producer_memory_defaults(
    properties: &KafkaProperties,
    batch_max_bytes: usize,
    max_record: usize,
) -> Vec<(&'static str, String)> {
    if operator_value(properties, "queue.buffering.max.kbytes").is_some() {
        return Vec::new();
    }
    vec![("queue.buffering.max.kbytes", producer_queue_kbytes(batch_max_bytes, max_record).to_string())]
}

/// Reports a producer queue (`KAFKA_PROPERTY_QUEUE_BUFFERING_MAX_KBYTES`) too small for one
/// record at the largest payload limit: librdkafka would refuse such a record forever as a full
/// queue.
pub fn check_producer_memory(reader: &mut Reader<'_>, properties: &KafkaProperties, max_record: usize) {
    let Some((variable, value)) = operator_value(properties, "queue.buffering.max.kbytes") else { return };
    if value.trim().parse::<usize>().is_ok_and(|kbytes| kbytes.saturating_mul(1024) < max_record) {
        reader.problem(
            &variable,
            format!(
                "a record of up to {max_record} bytes (the largest payload limit plus {RECORD_OVERHEAD_BYTES}) \
                 must fit the producer queue: set at least {} or lower the payload limit",
                max_record.div_ceil(1024)
            ),
        );
    }
}

/// The consumer's memory settings Relay sets unless the operator did: the prefetch queue
/// (`queued.max.messages.kbytes`) and the fetch response (`fetch.max.bytes`) bounded to
/// [`CONSUMER_FETCH_BYTES_DEFAULT`], or to one record at the largest payload limit or the
/// operator's `message.max.bytes` if larger.
pub fn consumer_memory_defaults(
    limits: &PayloadLimits,
    properties: &KafkaProperties,
) -> Vec<(&'static str, String)> {
    // librdkafka refuses a `fetch.max.bytes` below `message.max.bytes`, so an operator's larger
    // `message.max.bytes` raises the bound with it.
    let operator_max_message = operator_value(properties, "message.max.bytes")
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let bytes =
        CONSUMER_FETCH_BYTES_DEFAULT.max(limits.largest() + RECORD_OVERHEAD_BYTES).max(operator_max_message);
    let mut defaults = Vec::new();
    if operator_value(properties, "queued.max.messages.kbytes").is_none() {
        defaults.push(("queued.max.messages.kbytes", bytes.div_ceil(1024).to_string()));
    }
    if operator_value(properties, "fetch.max.bytes").is_none() {
        defaults.push(("fetch.max.bytes", bytes.to_string()));
    }
    defaults
}

/// The variable and value of `property` when the operator set it.
fn operator_value(properties: &KafkaProperties, property: &str) -> Option<(String, String)> {
    properties
        .entries()
        .filter(|(_, key, _)| *key == property)
        .last()
        .map(|(v, _, value)| (v.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KafkaRole, MapEnv};

    fn read(vars: &[(&'static str, &'static str)], role: KafkaRole) -> (PayloadLimits, KafkaProperties) {
        let env = MapEnv::new(vars.iter().copied());
        let mut reader = Reader::new(&env);
        let properties = KafkaProperties::read(&mut reader, role);
        let limits = PayloadLimits::read(&mut reader, "INBOX_");
        (limits, properties)
    }

    #[test]
    fn consumer_fetches_are_bounded_but_still_carry_the_largest_record() {
        let (limits, properties) = read(&[], KafkaRole::Consumer);
        assert_eq!(
            consumer_memory_defaults(&limits, &properties),
            vec![
                ("queued.max.messages.kbytes", "8192".to_string()),
                ("fetch.max.bytes", "8388608".to_string())
            ]
        );
        let (limits, properties) = read(&[("INBOX_MAX_PAYLOAD_BYTES", "20000000")], KafkaRole::Consumer);
        let need = 20_000_000 + RECORD_OVERHEAD_BYTES;
        assert_eq!(
            consumer_memory_defaults(&limits, &properties),
            vec![
                ("queued.max.messages.kbytes", need.div_ceil(1024).to_string()),
                ("fetch.max.bytes", need.to_string())
            ]
        );
        let (limits, properties) =
            read(&[("KAFKA_PROPERTY_QUEUED_MAX_MESSAGES_KBYTES", "1000")], KafkaRole::Consumer);
        assert_eq!(consumer_memory_defaults(&limits, &properties).len(), 1, "the operator's value stays");
        // librdkafka refuses fetch.max.bytes below message.max.bytes: an operator's larger one wins.
        let (limits, properties) =
            read(&[("KAFKA_PROPERTY_MESSAGE_MAX_BYTES", "10485760")], KafkaRole::Consumer);
        assert!(consumer_memory_defaults(&limits, &properties)
            .contains(&("fetch.max.bytes", "10485760".to_string())));
    }

    #[test]
    fn a_producer_queue_smaller_than_the_largest_record_is_reported_with_the_other_problems() {
        let env = MapEnv::new([
            ("KAFKA_PROPERTY_QUEUE_BUFFERING_MAX_KBYTES", "512"),
            ("OUTBOX_BATCH_MAX_BYTES", "12"),
        ]);
        let mut reader = Reader::new(&env);
        let properties = KafkaProperties::read(&mut reader, KafkaRole::Producer);
        check_producer_memory(&mut reader, &properties, (1 << 20) + RECORD_OVERHEAD_BYTES);
        assert_eq!(read_batch_max_bytes(&mut reader, "OUTBOX_"), BATCH_MAX_BYTES_DEFAULT as usize);
        let problems = reader.finish().expect_err("two problems").0;
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{text:?}");
        assert!(text[0].contains("KAFKA_PROPERTY_QUEUE_BUFFERING_MAX_KBYTES"), "{text:?}");
        assert!(text[0].contains("set at least 1152"), "{text:?}");
        assert!(text[1].contains("OUTBOX_BATCH_MAX_BYTES: 12 is outside 1024..=1073741824"), "{text:?}");
    }

    #[test]
    fn the_producer_queue_holds_the_straggler_batches_and_one_largest_record() {
        let (_, properties) = read(&[], KafkaRole::Producer);
        let record = (1 << 20) + RECORD_OVERHEAD_BYTES;
        let kbytes = (5 * (8 << 20) + record) / 1024;
        assert_eq!(
            producer_memory_defaults(&properties, 8 << 20, record),
            vec![("queue.buffering.max.kbytes", kbytes.to_string())]
        );
    }
}
