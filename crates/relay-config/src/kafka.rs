//! Pass-through of further librdkafka settings, with the ones Relay's guarantees rest on locked.
//!
//! `KAFKA_PROPERTY_LINGER_MS=5` becomes `linger.ms=5`: the part after the prefix is lower-cased
//! and `_` becomes `.`. Properties that would break delivery guarantees (idempotence, acks, offset
//! storage, group id) are refused with a problem rather than silently applied.
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::{names::KAFKA_PROPERTY_PREFIX, Reader};

/// Which client the properties are for; decides which properties are locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaRole {
    Producer,
    Consumer,
}

const LOCKED_ALWAYS: &[&str] = &["bootstrap.servers", "metadata.broker.list"];
const LOCKED_PRODUCER: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "partitioner",
    "transactional.id",
];
const LOCKED_CONSUMER: &[&str] = &[
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "isolation.level",
    "enable.partition.eof",
];

/// Extra librdkafka properties. Values are kept secret: some are passwords.
#[derive(Clone, Default)]
pub struct KafkaProperties(Vec<(String, SecretString)>);

impl KafkaProperties {
    /// Reads every `KAFKA_PROPERTY_*` variable.
    pub fn read(reader: &mut Reader<'_>, role: KafkaRole) -> Self {
        let locked: &[&str] = match role {
            KafkaRole::Producer => LOCKED_PRODUCER,
            KafkaRole::Consumer => LOCKED_CONSUMER,
        };
        let mut names: Vec<String> =
            reader.env().names().into_iter().filter(|n| n.starts_with(KAFKA_PROPERTY_PREFIX)).collect();
        names.sort();
        let mut properties = Vec::new();
        for name in names {
            let property = name[KAFKA_PROPERTY_PREFIX.len()..].to_ascii_lowercase().replace('_', ".");
            if property.is_empty() {
                reader.problem(&name, "names no property");
                continue;
            }
            if LOCKED_ALWAYS.contains(&property.as_str()) || locked.contains(&property.as_str()) {
                reader.problem(&name, format!("{property} is set by Relay to keep its delivery guarantees"));
                continue;
            }
            if let Some(value) = reader.env().get(&name) {
                properties.push((property, SecretString::from(value)));
            }
        }
        Self(properties)
    }

    /// `(property, value)` pairs to apply to a librdkafka client config.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.expose_secret()))
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| format!("{k}=[redacted]"))).finish()
    }
}
