//! Payload size limits with per-topic overrides, shared by the poller and the consumer, and the
//! bounds on everything else a record carries. Together they say how large a record can get, so
//! the Kafka clients' size settings can be checked against them at start-up: a documented limit
//! that the client would refuse is a configuration error, not a parked row.
use std::collections::HashMap;

use crate::{topic_env_name, KafkaProperties, KafkaRole, Reader};

/// Longest message key, in bytes (it travels twice: as the record key and in the envelope).
pub const KEY_MAX_BYTES: usize = 4096;
/// Most application headers one message may carry.
pub const HEADERS_MAX_COUNT: usize = 256;
/// Longest total of the application headers' names and values, in bytes.
pub const HEADERS_MAX_BYTES: usize = 64 * 1024;
/// Longest `traceparent` and `tracestate`, in bytes (W3C: 55 and 512 in practice).
pub const TRACEPARENT_MAX_BYTES: usize = 512;
pub const TRACESTATE_MAX_BYTES: usize = 8192;
/// Longest `msg_type` and `content_type`, in bytes.
pub const TYPE_MAX_BYTES: usize = 256;
/// Room in a record for everything but the payload, with every field above at its limit: the key
/// twice, headers, trace context twice (envelope and Kafka headers), message id, source, topic,
/// types, signature, protobuf and Kafka framing. About 96 KiB is used; the rest is margin.
pub const RECORD_OVERHEAD_BYTES: usize = 128 * 1024;
/// Longest `OUTBOX_SOURCE`, in bytes (counted in [`RECORD_OVERHEAD_BYTES`]).
pub const SOURCE_MAX_BYTES: usize = 256;

/// `{prefix}MAX_PAYLOAD_BYTES`, overridden per topic by `{prefix}TOPIC_<TOPIC>_MAX_PAYLOAD_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadLimits {
    prefix: String,
    default: usize,
    per_topic: HashMap<String, usize>,
}

const SUFFIX: &str = "_MAX_PAYLOAD_BYTES";
const DEFAULT_BYTES: u64 = 1 << 20;
const MAX_BYTES: u64 = 100 << 20;

impl PayloadLimits {
    /// Reads the limits for a service whose variables start with `prefix` (`OUTBOX_`, `INBOX_`).
    pub fn read(reader: &mut Reader<'_>, prefix: &str) -> Self {
        let default =
            reader.number(&format!("{prefix}MAX_PAYLOAD_BYTES"), DEFAULT_BYTES, 1, MAX_BYTES) as usize;
        let topic_prefix = format!("{prefix}TOPIC_");
        let mut names: Vec<String> =
            reader.env().names().into_iter().filter(|n| Self::is_override(prefix, n)).collect();
        names.sort();
        let mut per_topic = HashMap::new();
        for name in names {
            let topic = &name[topic_prefix.len()..name.len() - SUFFIX.len()];
            if topic.is_empty() {
                reader.problem(&name, "names no topic");
                continue;
            }
            let limit = reader.number(&name, default as u64, 1, MAX_BYTES) as usize;
            per_topic.insert(topic.to_string(), limit);
        }
        Self { prefix: prefix.to_string(), default, per_topic }
    }

    /// Whether `name` is a per-topic override variable for `prefix`.
    pub fn is_override(prefix: &str, name: &str) -> bool {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("TOPIC_"))
            .is_some_and(|rest| rest.ends_with(SUFFIX))
    }

    /// The limit for `topic`.
    pub fn for_topic(&self, topic: &str) -> usize {
        self.per_topic.get(&topic_env_name(topic)).copied().unwrap_or(self.default)
    }
}

impl PayloadLimits {
    /// Every limit with the variable that sets it (the default's even when unset), largest first.
    pub fn entries(&self) -> Vec<(String, usize)> {
        let mut entries: Vec<(String, usize)> = self
            .per_topic
            .iter()
            .map(|(topic, limit)| (format!("{}TOPIC_{topic}{SUFFIX}", self.prefix), *limit))
            .collect();
        entries.push((format!("{}MAX_PAYLOAD_BYTES", self.prefix), self.default));
        entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        entries
    }

    /// The largest limit of any topic, in bytes.
    pub fn largest(&self) -> usize {
        self.per_topic.values().copied().fold(self.default, usize::max)
    }
}

/// A librdkafka size setting a record of every allowed size must fit through.
struct SizeSetting {
    property: &'static str,
    /// librdkafka's default.
    library_default: usize,
}

const PRODUCER_SIZES: &[SizeSetting] =
    &[SizeSetting { property: "message.max.bytes", library_default: 1_000_000 }];
const CONSUMER_SIZES: &[SizeSetting] = &[
    SizeSetting { property: "max.partition.fetch.bytes", library_default: 1_048_576 },
    SizeSetting { property: "fetch.max.bytes", library_default: 52_428_800 },
];
/// librdkafka's `receive.message.max.bytes` default; it must exceed `fetch.max.bytes` by 512.
const RECEIVE_DEFAULT: usize = 100_000_000;

/// The Kafka client sizes Relay sets unless the operator did: `(property, bytes)`, each large
/// enough for the largest payload limit plus [`RECORD_OVERHEAD_BYTES`].
pub fn record_size_defaults(
    limits: &PayloadLimits,
    properties: &KafkaProperties,
    role: KafkaRole,
) -> Vec<(&'static str, String)> {
    let need = limits.largest() + RECORD_OVERHEAD_BYTES;
    let mut defaults = Vec::new();
    for setting in sizes(role) {
        if set_by_operator(properties, setting.property).is_none() && setting.library_default < need {
            defaults.push((setting.property, need.to_string()));
        }
    }
    if role == KafkaRole::Consumer && set_by_operator(properties, "receive.message.max.bytes").is_none() {
        let fetch = effective(properties, &CONSUMER_SIZES[1], need);
        if fetch + 512 > RECEIVE_DEFAULT {
            defaults.push(("receive.message.max.bytes", (fetch + 512).to_string()));
        }
    }
    defaults
}

/// Reports every payload limit that a record could not carry through the client's size settings
/// (set with `KAFKA_PROPERTY_*`), one problem per limit and setting, and a consumer's
/// `receive.message.max.bytes` smaller than its `fetch.max.bytes` allows.
pub fn check_record_sizes(
    reader: &mut Reader<'_>,
    limits: &PayloadLimits,
    properties: &KafkaProperties,
    role: KafkaRole,
) {
    for setting in sizes(role) {
        let Some((variable, value)) = set_by_operator(properties, setting.property) else { continue };
        let Ok(room) = value.trim().parse::<usize>() else { continue };
        for (limit_variable, limit) in limits.entries() {
            if limit + RECORD_OVERHEAD_BYTES > room {
                reader.problem(
                    &limit_variable,
                    format!(
                        "a payload of {limit} bytes plus up to {RECORD_OVERHEAD_BYTES} bytes of key, headers and \
                         envelope does not fit {variable}={room}: lower the limit or raise {} to at least {}",
                        setting.property,
                        limit + RECORD_OVERHEAD_BYTES
                    ),
                );
            }
        }
    }
    if role == KafkaRole::Consumer {
        let need = limits.largest() + RECORD_OVERHEAD_BYTES;
        let fetch = effective(properties, &CONSUMER_SIZES[1], need);
        if let Some((variable, value)) = set_by_operator(properties, "receive.message.max.bytes") {
            if value.trim().parse::<usize>().is_ok_and(|receive| receive < fetch + 512) {
                reader
                    .problem(&variable, format!("must be at least fetch.max.bytes + 512 = {}", fetch + 512));
            }
        }
    }
}

/// The largest record the producer will take (`message.max.bytes` as it will be set), in bytes.
pub fn producer_record_limit(limits: &PayloadLimits, properties: &KafkaProperties) -> usize {
    effective(properties, &PRODUCER_SIZES[0], limits.largest() + RECORD_OVERHEAD_BYTES)
}

fn sizes(role: KafkaRole) -> &'static [SizeSetting] {
    match role {
        KafkaRole::Producer => PRODUCER_SIZES,
        KafkaRole::Consumer => CONSUMER_SIZES,
    }
}

/// The variable and value of `property` when the operator set it.
fn set_by_operator(properties: &KafkaProperties, property: &str) -> Option<(String, String)> {
    properties
        .entries()
        .filter(|(_, key, _)| *key == property)
        .last()
        .map(|(v, _, value)| (v.to_string(), value.to_string()))
}

/// The value `setting` will have: the operator's, else Relay's default, else librdkafka's.
fn effective(properties: &KafkaProperties, setting: &SizeSetting, need: usize) -> usize {
    match set_by_operator(properties, setting.property) {
        Some((_, value)) => value.trim().parse().unwrap_or(setting.library_default),
        None => setting.library_default.max(need),
    }
}
