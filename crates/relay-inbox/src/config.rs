//! The consumer's settings, read from the environment with every problem reported at once.
use std::time::Duration;

use relay_config::{
    Common, ConfigError, DatabaseUrl, Environment, KafkaRole, PayloadLimits, Reader, Retention,
};

use crate::Verification;

/// librdkafka's `session.timeout.ms` when `KAFKA_PROPERTY_SESSION_TIMEOUT_MS` is not set.
const LIBRDKAFKA_SESSION_TIMEOUT_MS: u64 = 45_000;
/// How much longer than the session a static member waits before it replaces its client.
const STATIC_MARGIN: Duration = Duration::from_secs(10);

/// Variable names the consumer reads (besides the shared ones in `relay_config::names`).
pub mod names {
    pub const INBOX_NAME: &str = "INBOX_NAME";
    pub const INBOX_TOPICS: &str = "INBOX_TOPICS";
    pub const INBOX_GROUP_ID: &str = "INBOX_GROUP_ID";
    pub const INBOX_BATCH_SIZE: &str = "INBOX_BATCH_SIZE";
    pub const INBOX_BATCH_MAX_BYTES: &str = "INBOX_BATCH_MAX_BYTES";
    pub const INBOX_BATCH_WAIT_MS: &str = "INBOX_BATCH_WAIT_MS";
    pub const INBOX_MAX_PAYLOAD_BYTES: &str = "INBOX_MAX_PAYLOAD_BYTES";
    pub const INBOX_POOL_SIZE: &str = "INBOX_POOL_SIZE";
    pub const INBOX_RETENTION_HOURS: &str = "INBOX_RETENTION_HOURS";
    pub const INBOX_RETENTION_BATCH: &str = "INBOX_RETENTION_BATCH";
    pub const INBOX_RETENTION_INTERVAL_MS: &str = "INBOX_RETENTION_INTERVAL_MS";
    /// Secret: `keyid=secret,...`; or `INBOX_VERIFY_KEYS_FILE`.
    pub const INBOX_VERIFY_KEYS: &str = "INBOX_VERIFY_KEYS";
    pub const INBOX_VERIFY_KEYS_FILE: &str = "INBOX_VERIFY_KEYS_FILE";
    pub const INBOX_REQUIRE_SIGNATURE: &str = "INBOX_REQUIRE_SIGNATURE";
    pub const INBOX_GROUP_INSTANCE_ID: &str = "INBOX_GROUP_INSTANCE_ID";
    pub const INBOX_ASSIGNMENT_TIMEOUT_MS: &str = "INBOX_ASSIGNMENT_TIMEOUT_MS";
    pub const INBOX_SHUTDOWN_GRACE_MS: &str = "INBOX_SHUTDOWN_GRACE_MS";
    /// Per-topic limits: `INBOX_TOPIC_<TOPIC>_MAX_PAYLOAD_BYTES` (see `relay_config::PayloadLimits`).
    pub const PREFIX: &str = "INBOX_";
    pub const ALL: &[&str] = &[
        INBOX_NAME,
        INBOX_TOPICS,
        INBOX_GROUP_ID,
        INBOX_BATCH_SIZE,
        INBOX_BATCH_MAX_BYTES,
        INBOX_BATCH_WAIT_MS,
        INBOX_MAX_PAYLOAD_BYTES,
        INBOX_POOL_SIZE,
        INBOX_RETENTION_HOURS,
        INBOX_RETENTION_BATCH,
        INBOX_RETENTION_INTERVAL_MS,
        INBOX_VERIFY_KEYS,
        INBOX_VERIFY_KEYS_FILE,
        INBOX_REQUIRE_SIGNATURE,
        INBOX_GROUP_INSTANCE_ID,
        INBOX_ASSIGNMENT_TIMEOUT_MS,
        INBOX_SHUTDOWN_GRACE_MS,
    ];
}

/// Everything inbox-consumer needs to run.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub database_url: DatabaseUrl,
    pub common: Common,
    /// The logical inbox; part of the dedup key, so inboxes sharing a database stay apart.
    pub inbox: String,
    pub topics: Vec<String>,
    pub group_id: String,
    /// Static group membership (`group.instance.id`): a restarted member with the same id takes
    /// its partitions back without a rebalance. Two live processes with one id fence each other.
    pub group_instance_id: Option<String>,
    /// How long the consumer may own no partition while its topics hold records nobody stores,
    /// before it reports the stall and joins again with a fresh client. With static membership
    /// it is raised to at least `session.timeout.ms` (librdkafka's default 45 s) + 10 s.
    pub assignment_timeout: Duration,
    /// How long shutdown may take to commit offsets and leave the group.
    pub shutdown_grace: Duration,
    pub batch_size: usize,
    /// The most bytes (record values and keys) one batch holds (`INBOX_BATCH_MAX_BYTES`); a batch
    /// always takes at least one record, so a record at the largest payload limit is stored.
    pub batch_max_bytes: usize,
    /// How long a batch waits to fill once its first record arrived.
    pub batch_wait: Duration,
    /// Larger payloads are dead-lettered.
    pub max_payload: PayloadLimits,
    pub pool_size: usize,
    /// Deletion of old dedup entries (inbox rows); `None` keeps them forever.
    pub retention: Option<Retention>,
    /// The signature check on every record (off without `INBOX_VERIFY_KEYS`).
    pub verification: Verification,
}

impl ConsumerConfig {
    /// Reads the configuration; the error lists every problem.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        use names::*;
        let mut r = Reader::new(env);
        let common = Common::read(&mut r, KafkaRole::Consumer);
        relay_kafka::check_properties(&mut r, &common.kafka_properties);
        let inbox = r.required(INBOX_NAME).unwrap_or_default();
        if inbox.chars().any(char::is_control) {
            r.problem(INBOX_NAME, "must not contain control characters");
        }
        let topics = r.topics(INBOX_TOPICS);
        if topics.is_empty() {
            r.problem(INBOX_TOPICS, "is required: a comma-separated list of topics");
        }
        let group_id = r.optional(INBOX_GROUP_ID).unwrap_or_else(|| inbox.clone());
        let group_instance_id = r.optional(INBOX_GROUP_INSTANCE_ID);
        if let Some(id) = &group_instance_id {
            if id.is_empty() || id.len() > 249 || id.chars().any(char::is_control) {
                r.problem(INBOX_GROUP_INSTANCE_ID, "must be 1 to 249 bytes without control characters");
            }
            if common.kafka_properties.iter().any(|(key, _)| key == "group.instance.id") {
                r.problem(INBOX_GROUP_INSTANCE_ID, "is set twice: drop KAFKA_PROPERTY_GROUP_INSTANCE_ID");
            }
        }
        let mut assignment_timeout = r.millis(INBOX_ASSIGNMENT_TIMEOUT_MS, 30_000, 1_000, 3_600_000);
        if group_instance_id.is_some() {
            // A static member's old session outlives a fresh client for up to session.timeout.ms;
            // replacing the client sooner only makes the group wait for the old one again.
            let session = common
                .kafka_properties
                .iter()
                .find(|(key, _)| *key == "session.timeout.ms")
                .and_then(|(_, value)| value.parse::<u64>().ok())
                .unwrap_or(LIBRDKAFKA_SESSION_TIMEOUT_MS);
            assignment_timeout = assignment_timeout.max(Duration::from_millis(session) + STATIC_MARGIN);
        }
        let shutdown_grace = r.millis(INBOX_SHUTDOWN_GRACE_MS, 10_000, 0, 600_000);
        let batch_size = r.number(INBOX_BATCH_SIZE, 500, 1, 50_000) as usize;
        let batch_max_bytes = relay_config::read_batch_max_bytes(&mut r, PREFIX);
        let batch_wait = r.millis(INBOX_BATCH_WAIT_MS, 1, 0, 60_000);
        let pool_size = r.number(INBOX_POOL_SIZE, 2, 1, 64) as usize;
        let max_payload = PayloadLimits::read(&mut r, PREFIX);
        relay_config::check_record_sizes(
            &mut r,
            &max_payload,
            &common.kafka_properties,
            relay_config::KafkaRole::Consumer,
        );
        let retention = Retention::read(&mut r, PREFIX);
        let verification = Verification::read(&mut r);
        r.reject_unknown(PREFIX, ALL, |n| PayloadLimits::is_override(PREFIX, n));
        let database_url = r.finish_with_database(common.database_url.clone())?;
        Ok(Self {
            database_url,
            common,
            inbox,
            topics,
            group_id,
            group_instance_id,
            assignment_timeout,
            shutdown_grace,
            batch_size,
            batch_max_bytes,
            batch_wait,
            max_payload,
            pool_size,
            retention,
            verification,
        })
    }
}

#[cfg(test)]
mod tests {
    use relay_config::MapEnv;

    use super::*;

    #[test]
    fn group_defaults_to_the_inbox_name() {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://postgres@localhost/ledger"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("INBOX_NAME", "ledger"),
            ("INBOX_TOPICS", "payments.v1"),
            ("INBOX_TOPIC_PAYMENTS_V1_MAX_PAYLOAD_BYTES", "100"),
        ]);
        let config = ConsumerConfig::from_env(&env).expect("valid");
        assert_eq!(config.group_id, "ledger");
        assert_eq!(config.batch_max_bytes, 8 << 20, "8 MiB unless set");
        assert_eq!(config.max_payload.for_topic("payments.v1"), 100);
        assert_eq!(config.max_payload.for_topic("other"), 1 << 20);
    }

    #[test]
    fn fetch_sizes_that_cannot_carry_a_payload_limit_are_all_listed() {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://postgres@localhost/ledger"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("INBOX_NAME", "ledger"),
            ("INBOX_TOPICS", "payments.v1"),
            ("INBOX_TOPIC_PAYMENTS_V1_MAX_PAYLOAD_BYTES", "3000000"),
            ("KAFKA_PROPERTY_MAX_PARTITION_FETCH_BYTES", "1048576"),
            ("KAFKA_PROPERTY_FETCH_MAX_BYTES", "2000000"),
            ("KAFKA_PROPERTY_RECEIVE_MESSAGE_MAX_BYTES", "2000000"),
        ]);
        let err = ConsumerConfig::from_env(&env).expect_err("contradictory");
        let text = err.to_string();
        let problems: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            problems,
            vec![
                // max.partition.fetch.bytes fits neither limit; fetch.max.bytes only the default.
                "INBOX_TOPIC_PAYMENTS_V1_MAX_PAYLOAD_BYTES",
                "INBOX_MAX_PAYLOAD_BYTES",
                "INBOX_TOPIC_PAYMENTS_V1_MAX_PAYLOAD_BYTES",
                "KAFKA_PROPERTY_RECEIVE_MESSAGE_MAX_BYTES",
            ],
            "{text}"
        );
        assert!(text.contains("does not fit KAFKA_PROPERTY_FETCH_MAX_BYTES=2000000"), "{text}");
        assert!(text.contains("must be at least fetch.max.bytes + 512 = 2000512"), "{text}");

        // Unset, the sizes are Relay's: room for the largest limit.
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://postgres@localhost/ledger"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("INBOX_NAME", "ledger"),
            ("INBOX_TOPICS", "payments.v1"),
            ("INBOX_TOPIC_PAYMENTS_V1_MAX_PAYLOAD_BYTES", "3000000"),
        ]);
        let config = ConsumerConfig::from_env(&env).expect("valid");
        let sizes = relay_config::record_size_defaults(
            &config.max_payload,
            &config.common.kafka_properties,
            relay_config::KafkaRole::Consumer,
        );
        let need = (3_000_000 + relay_config::RECORD_OVERHEAD_BYTES).to_string();
        assert_eq!(sizes, vec![("max.partition.fetch.bytes", need)]);
    }

    #[test]
    fn librdkafka_accepts_the_consumer_sized_for_the_largest_limit() {
        for limit in ["1048576", "104857600"] {
            let env = MapEnv::new([
                ("DATABASE_URL", "postgres://postgres@localhost/ledger"),
                ("KAFKA_BROKERS", "localhost:9092"),
                ("INBOX_NAME", "ledger"),
                ("INBOX_TOPICS", "payments.v1"),
                ("INBOX_MAX_PAYLOAD_BYTES", limit),
            ]);
            let config = ConsumerConfig::from_env(&env).expect("valid");
            let consumer: Result<rdkafka::consumer::BaseConsumer, _> =
                crate::consumer_client_config(&config).create();
            assert!(consumer.is_ok(), "{limit}: {:?}", consumer.err());
        }
    }

    #[test]
    fn lists_every_problem_in_one_error() {
        let env = MapEnv::new([
            ("INBOX_BATCH_WAIT_MS", "soon"),
            ("KAFKA_PROPERTY_GROUP_ID", "x"),
            ("INBOX_BATCH_MAX_BYTES", "0"),
        ]);
        let err = ConsumerConfig::from_env(&env).expect_err("invalid");
        let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        for expected in [
            "DATABASE_URL",
            "KAFKA_BROKERS",
            "KAFKA_PROPERTY_GROUP_ID",
            "INBOX_NAME",
            "INBOX_TOPICS",
            "INBOX_BATCH_WAIT_MS",
            "INBOX_BATCH_MAX_BYTES",
        ] {
            assert!(vars.contains(&expected), "{expected} missing from {vars:?}");
        }
    }

    fn valid_with(extra: &[(&'static str, &'static str)]) -> MapEnv {
        let mut vars = vec![
            ("DATABASE_URL", "postgres://postgres@localhost/ledger"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("INBOX_NAME", "ledger"),
            ("INBOX_TOPICS", "payments.v1"),
        ];
        vars.extend_from_slice(extra);
        MapEnv::new(vars)
    }

    #[test]
    fn static_membership_and_the_watchdog_are_configurable_and_checked() {
        let config = ConsumerConfig::from_env(&valid_with(&[])).expect("valid");
        assert_eq!(config.group_instance_id, None);
        assert_eq!(config.assignment_timeout, Duration::from_secs(30));
        assert_eq!(crate::consumer_client_config(&config).get("group.instance.id"), None);
        let config = ConsumerConfig::from_env(&valid_with(&[
            ("INBOX_GROUP_INSTANCE_ID", "ledger-0"),
            ("INBOX_ASSIGNMENT_TIMEOUT_MS", "5000"),
        ]))
        .expect("valid");
        assert_eq!(crate::consumer_client_config(&config).get("group.instance.id"), Some("ledger-0"));
        // Raised above the session (librdkafka's 45 s here) by 10 s.
        assert_eq!(config.assignment_timeout, Duration::from_secs(55));
        let config = ConsumerConfig::from_env(&valid_with(&[
            ("INBOX_GROUP_INSTANCE_ID", "ledger-0"),
            ("INBOX_ASSIGNMENT_TIMEOUT_MS", "90000"),
        ]))
        .expect("valid");
        assert_eq!(config.assignment_timeout, Duration::from_secs(90));
        let err = ConsumerConfig::from_env(&valid_with(&[
            ("INBOX_GROUP_INSTANCE_ID", "a\tb"),
            ("KAFKA_PROPERTY_GROUP_INSTANCE_ID", "x"),
            ("INBOX_ASSIGNMENT_TIMEOUT_MS", "10"),
            ("INBOX_SHUTDOWN_GRACE_MS", "later"),
        ]))
        .expect_err("invalid");
        let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            vec![
                "INBOX_GROUP_INSTANCE_ID",
                "INBOX_GROUP_INSTANCE_ID",
                "INBOX_ASSIGNMENT_TIMEOUT_MS",
                "INBOX_SHUTDOWN_GRACE_MS"
            ],
            "{err}"
        );
    }

    #[test]
    fn retention_is_off_unless_hours_are_set() {
        let config = ConsumerConfig::from_env(&valid_with(&[])).expect("valid");
        assert_eq!(config.retention, None);
        let config = ConsumerConfig::from_env(&valid_with(&[("INBOX_RETENTION_HOURS", "0")])).expect("valid");
        assert_eq!(config.retention, None, "0 keeps forever");
        let config = ConsumerConfig::from_env(&valid_with(&[
            ("INBOX_RETENTION_HOURS", "720"),
            ("INBOX_RETENTION_BATCH", "50"),
        ]))
        .expect("valid");
        let retention = config.retention.expect("on");
        assert_eq!((retention.hours, retention.batch), (720, 50));
        assert_eq!(retention.interval, Duration::from_secs(60));
    }

    #[test]
    fn bad_retention_values_are_all_reported() {
        let err = ConsumerConfig::from_env(&valid_with(&[
            ("INBOX_RETENTION_HOURS", "a week"),
            ("INBOX_RETENTION_BATCH", "0"),
            ("INBOX_RETENTION_INTERVAL_MS", "86400001"),
            ("INBOX_RETENTION_BATCH_SIZE", "10"),
        ]))
        .expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.0.len(), 4, "{text}");
        for expected in [
            "INBOX_RETENTION_HOURS: \"a week\" is not a whole number",
            "INBOX_RETENTION_BATCH: 0 is outside 1..=100000",
            "INBOX_RETENTION_INTERVAL_MS: 86400001 is outside 1..=86400000",
            "INBOX_RETENTION_BATCH_SIZE: is not a setting",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
    }
}
