//! Pass-through of further librdkafka settings, with the ones Relay's guarantees rest on locked.
//!
//! `KAFKA_PROPERTY_LINGER_MS=5` becomes `linger.ms=5`: the part after the prefix is lower-cased
//! and `_` becomes `.`. Properties that would break delivery guarantees (idempotence, acks, offset
//! storage, group id) are refused with a problem rather than silently applied, and so are the
//! transport-security ones, which have their own checked variables ([`crate::KafkaSecurity`]).
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::{kafka_security::names as security, names::KAFKA_PROPERTY_PREFIX, KafkaSecurity, Reader};

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

/// Security properties and the variable that sets each instead.
const SECURITY: &[(&str, &str)] = &[
    ("security.protocol", security::KAFKA_SECURITY_PROTOCOL),
    ("sasl.mechanism", security::KAFKA_SASL_MECHANISM),
    ("sasl.mechanisms", security::KAFKA_SASL_MECHANISM),
    ("sasl.username", security::KAFKA_SASL_USERNAME),
    ("sasl.password", security::KAFKA_SASL_PASSWORD),
    ("ssl.ca.location", security::KAFKA_SSL_CA_LOCATION),
    ("ssl.ca.pem", security::KAFKA_SSL_CA_LOCATION),
    ("ssl.certificate.location", security::KAFKA_SSL_CERTIFICATE_LOCATION),
    ("ssl.certificate.pem", security::KAFKA_SSL_CERTIFICATE_LOCATION),
    ("ssl.key.location", security::KAFKA_SSL_KEY_LOCATION),
    ("ssl.key.pem", security::KAFKA_SSL_KEY_LOCATION),
    ("ssl.key.password", security::KAFKA_SSL_KEY_PASSWORD),
];

/// Verification of the broker's certificate and host name is always on.
const LOCKED_VERIFICATION: &[&str] =
    &["enable.ssl.certificate.verification", "ssl.endpoint.identification.algorithm"];

/// One librdkafka property: the variable that set it (for messages), its key and its value.
#[derive(Clone)]
struct Property {
    variable: String,
    key: String,
    value: SecretString,
}

/// Extra librdkafka properties, then the security ones. Values are kept secret: some are
/// passwords.
#[derive(Clone, Default)]
pub struct KafkaProperties(Vec<Property>);

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
            if let Some((_, variable)) = SECURITY.iter().find(|(key, _)| *key == property) {
                reader.problem(&name, format!("{property} is set through {variable}, which is checked"));
                continue;
            }
            if LOCKED_VERIFICATION.contains(&property.as_str()) {
                reader.problem(
                    &name,
                    format!("{property} is locked: the broker's certificate is always verified"),
                );
                continue;
            }
            if let Some(value) = reader.env().get(&name) {
                properties.push(Property { variable: name, key: property, value: SecretString::from(value) });
            }
        }
        Self(properties)
    }

    /// Appends the transport-security properties, after the pass-through ones.
    pub fn with_security(mut self, security: &KafkaSecurity) -> Self {
        for p in security.properties() {
            self.0.push(Property {
                variable: p.variable.to_string(),
                key: p.key.to_string(),
                value: p.value,
            });
        }
        self
    }

    /// `(property, value)` pairs to apply to a librdkafka client config.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|p| (p.key.as_str(), p.value.expose_secret()))
    }

    /// `(variable, property, value)`: as [`Self::iter`], with the variable that set each one.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.0.iter().map(|p| (p.variable.as_str(), p.key.as_str(), p.value.expose_secret()))
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|p| format!("{}=[redacted]", p.key))).finish()
    }
}
