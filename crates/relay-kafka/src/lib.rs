//! Kafka clients configured the one way Relay's guarantees need, plus error classification.
//!
//! The producer is idempotent with acks from all in-sync replicas and no delivery timeout, so a
//! record is retried until the broker takes it and records of one partition cannot overtake each
//! other. The consumer never stores an offset by itself: the caller stores offsets only after its
//! database transaction committed. [`classify`] lists which errors are worth retrying and which
//! are permanent, so a permanent one is parked instead of retried forever. [`raw`] reads
//! consumed records with their header names as raw bytes (rdkafka's own header API panics on a
//! name that is not UTF-8); it is the one module in Relay allowed `unsafe` code.
#![deny(unsafe_code)]

mod probe;
pub mod raw;

use std::time::Duration;

pub use probe::Probe;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::{ClientConfig, RDKafkaLogLevel},
    error::{KafkaError, RDKafkaErrorCode},
};
use relay_config::KafkaProperties;

/// Errors of the Kafka layer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot create the Kafka client: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot create topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
}

/// Whether an error may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Broker or network trouble: retry with backoff, do not give up on the message.
    Retryable,
    /// The broker will never accept this record as it is: park it with the reason.
    Permanent,
}

/// Permanent produce errors: retrying the same record cannot succeed.
const PERMANENT: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
    RDKafkaErrorCode::InvalidMessage,
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::InvalidTopic,
    RDKafkaErrorCode::UnknownTopic,
    RDKafkaErrorCode::UnknownTopicOrPartition,
    RDKafkaErrorCode::TopicAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
    RDKafkaErrorCode::InvalidRequiredAcks,
    RDKafkaErrorCode::UnknownPartition,
    RDKafkaErrorCode::PolicyViolation,
];

/// Sorts a Kafka error into [`ErrorClass`]. Anything not known to be permanent is retried.
pub fn classify(error: &KafkaError) -> ErrorClass {
    match error.rdkafka_error_code() {
        Some(code) if PERMANENT.contains(&code) => ErrorClass::Permanent,
        _ => ErrorClass::Retryable,
    }
}

/// Applies the brokers and the operator's pass-through properties over `config`'s defaults.
fn apply(config: &mut ClientConfig, brokers: &str, properties: &KafkaProperties) {
    config.set("bootstrap.servers", brokers).set_log_level(RDKafkaLogLevel::Warning);
    for (key, value) in properties.iter() {
        config.set(key, value);
    }
}

fn base(brokers: &str, properties: &KafkaProperties) -> ClientConfig {
    let mut config = ClientConfig::new();
    apply(&mut config, brokers, properties);
    config
}

/// Producer settings: idempotent, acks=all, ordered per partition, retried without a deadline.
/// `properties` (validated by relay-config, which refuses to change these) may tune batching.
pub fn producer_config(brokers: &str, client_id: &str, properties: &KafkaProperties) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("client.id", client_id)
        // The poller hands over a whole batch at once and sends the next only after this one's
        // reports: lingering only delays them. A batch of thousands is still handed over in
        // well under a millisecond, so large batches still fill produce requests.
        .set("linger.ms", "1")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000");
    apply(&mut config, brokers, properties);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        // 0 = no deadline: a record is never given up on while the broker is away, so a later
        // record of the same key can never be acknowledged ahead of an earlier failed one.
        .set("message.timeout.ms", "0")
        // Same key, same partition, with the partitioner Java clients use.
        .set("partitioner", "murmur2_random");
    config
}

/// Consumer settings for group `group_id`: offsets are stored only by the caller.
pub fn consumer_config(
    brokers: &str,
    group_id: &str,
    client_id: &str,
    properties: &KafkaProperties,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("client.id", client_id)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("auto.commit.interval.ms", "1000")
        // A broker may hold a fetch this long waiting for data; 500 ms (librdkafka's default)
        // would put a half-second floor under commit-to-inbox latency.
        .set("fetch.wait.max.ms", "100");
    apply(&mut config, brokers, properties);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed");
    config
}

/// Checks every pass-through property against librdkafka during the configuration pass, so a
/// misspelt property or a bad value is reported with the others (exit 2) instead of failing at
/// client creation. The message never contains the value: it may be a password.
pub fn check_properties(reader: &mut relay_config::Reader<'_>, properties: &KafkaProperties) {
    for (variable, key, value) in properties.entries() {
        let mut config = ClientConfig::new();
        config.set(key, value);
        if let Err(e) = config.create_native_config() {
            let mut message = e.to_string();
            if !value.is_empty() {
                message = message.replace(value, "[redacted]");
            }
            reader.problem(variable, format!("librdkafka refuses {key}: {message}"));
        }
    }
}

/// Creates `topics` with `partitions` each (replication 1 for local stacks); existing ones are fine.
pub async fn create_topics(
    brokers: &str,
    properties: &KafkaProperties,
    topics: &[String],
    partitions: i32,
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> =
        base(brokers, properties).create().map_err(KafkaSetupError::Client)?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new.iter(), &options)
        .await
        .map_err(|e| KafkaSetupError::CreateTopic { topic: topics.join(","), reason: e.to_string() })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::CreateTopic { topic, reason: code.to_string() });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_size_and_topic_errors_as_permanent_and_transport_as_retryable() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let no_topic = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition);
        let transport = KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure);
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(classify(&too_large), ErrorClass::Permanent);
        assert_eq!(classify(&no_topic), ErrorClass::Permanent);
        assert_eq!(classify(&transport), ErrorClass::Retryable);
        assert_eq!(classify(&full), ErrorClass::Retryable);
    }

    #[test]
    fn reports_unknown_properties_and_bad_values_without_the_value() {
        let env = relay_config::MapEnv::new([
            ("KAFKA_PROPERTY_SASL_JAAS_CONFIG", "password=\"hunter2\";"),
            ("KAFKA_PROPERTY_LINGER_MS", "soon-hunter2"),
            ("KAFKA_PROPERTY_COMPRESSION_TYPE", "lz4"),
        ]);
        let mut reader = relay_config::Reader::new(&env);
        let properties = KafkaProperties::read(&mut reader, relay_config::KafkaRole::Producer);
        check_properties(&mut reader, &properties);
        let problems = reader.finish().expect_err("two bad properties").0;
        let vars: Vec<_> = problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(vars, vec!["KAFKA_PROPERTY_LINGER_MS", "KAFKA_PROPERTY_SASL_JAAS_CONFIG"]);
        for p in &problems {
            assert!(!p.message.contains("hunter2"), "{p}");
        }
    }

    #[test]
    fn this_build_of_librdkafka_speaks_tls_and_every_sasl_mechanism() {
        for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] {
            let env = relay_config::MapEnv::new([
                ("DATABASE_URL", "postgres://localhost/x"),
                ("KAFKA_BROKERS", "localhost:9093"),
                ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("KAFKA_SASL_MECHANISM", mechanism),
                ("KAFKA_SASL_USERNAME", "relay"),
                ("KAFKA_SASL_PASSWORD", "pa55"),
            ]);
            let mut reader = relay_config::Reader::new(&env);
            let common = relay_config::Common::read(&mut reader, relay_config::KafkaRole::Producer);
            check_properties(&mut reader, &common.kafka_properties);
            reader.finish().expect("librdkafka accepts every security property");
            let config = producer_config(&common.kafka_brokers, "c", &common.kafka_properties);
            assert_eq!(config.get("ssl.endpoint.identification.algorithm"), Some("https"));
            let created: Result<rdkafka::producer::BaseProducer, _> = config.create();
            assert!(created.is_ok(), "{mechanism}: {:?}", created.err());
        }
    }

    #[test]
    fn producer_keeps_guarantees_whatever_the_properties() {
        let config = producer_config("b:1", "c", &KafkaProperties::default());
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("message.timeout.ms"), Some("0"));
        let consumer = consumer_config("b:1", "g", "c", &KafkaProperties::default());
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(consumer.get("group.id"), Some("g"));
    }
}
