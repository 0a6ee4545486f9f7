//! Configuration from environment variables, shared by every Relay binary.
//!
//! Each binary describes its settings with a [`Reader`]: typed getters record a problem instead
//! of failing, so one run reports every missing or invalid variable, then [`Reader::finish`]
//! returns them all at once. The environment is injected ([`Environment`]), so tests build a
//! map rather than mutating the process environment. Secrets are wrapped in
//! [`secrecy::SecretString`] and their values never appear in errors.
#![forbid(unsafe_code)]

mod common;
mod database;
mod environment;
mod kafka;
mod kafka_security;
mod limits;
mod logging;
mod memory;
mod reader;
mod retention;
mod text;

pub use common::{names, read_database_url, reject_unknown_database_and_relay, Common, LogFormat};
pub use database::{ClientCert, DatabaseTls, DatabaseUrl};
pub use environment::{Environment, MapEnv, ProcessEnv};
pub use kafka::{KafkaProperties, KafkaRole};
pub use kafka_security::{
    names as security_names, KafkaSecurity, SaslCredentials, SaslMechanism, SecurityProtocol, TlsFiles,
};
pub use limits::{
    check_record_sizes, producer_record_limit, record_size_defaults, PayloadLimits, HEADERS_MAX_BYTES,
    HEADERS_MAX_COUNT, KEY_MAX_BYTES, RECORD_OVERHEAD_BYTES, SOURCE_MAX_BYTES, TRACEPARENT_MAX_BYTES,
    TRACESTATE_MAX_BYTES, TYPE_MAX_BYTES,
};
pub use logging::{no_color_unset, LogSettings, NO_COLOR};
pub use memory::{
    check_producer_memory, consumer_memory_defaults, producer_memory_defaults, producer_queue_kbytes,
    read_batch_max_bytes, BATCH_MAX_BYTES_DEFAULT, CONSUMER_FETCH_BYTES_DEFAULT, STRAGGLER_BATCHES,
};
pub use reader::{is_service_link, topic_env_name, Problem, Reader};
pub use retention::Retention;
pub use text::{is_unsafe, json_printable, printable};

/// Every problem found in one pass over the environment.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, render(.0))]
pub struct ConfigError(pub Vec<Problem>);

fn render(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests;
