//! The poller's settings, read from the environment with every problem reported at once.
use std::time::Duration;

use relay_config::{
    Common, ConfigError, DatabaseUrl, Environment, KafkaRole, PayloadLimits, Reader, Retention,
};
use relay_envelope::SigningKey;

use crate::format::TopicFormats;

/// Variable names the poller reads (besides the shared ones in `relay_config::names`).
pub mod names {
    pub const OUTBOX_SOURCE: &str = "OUTBOX_SOURCE";
    pub const OUTBOX_TOPICS: &str = "OUTBOX_TOPICS";
    pub const OUTBOX_BATCH_SIZE: &str = "OUTBOX_BATCH_SIZE";
    pub const OUTBOX_BATCH_MAX_BYTES: &str = "OUTBOX_BATCH_MAX_BYTES";
    pub const OUTBOX_POLL_INTERVAL_MS: &str = "OUTBOX_POLL_INTERVAL_MS";
    pub const OUTBOX_LEADER_RETRY_MS: &str = "OUTBOX_LEADER_RETRY_MS";
    pub const OUTBOX_LEADER_LEASE_MS: &str = "OUTBOX_LEADER_LEASE_MS";
    pub const OUTBOX_SHUTDOWN_GRACE_MS: &str = "OUTBOX_SHUTDOWN_GRACE_MS";
    pub const OUTBOX_MAX_PAYLOAD_BYTES: &str = "OUTBOX_MAX_PAYLOAD_BYTES";
    pub const OUTBOX_RETENTION_HOURS: &str = "OUTBOX_RETENTION_HOURS";
    pub const OUTBOX_RETENTION_BATCH: &str = "OUTBOX_RETENTION_BATCH";
    pub const OUTBOX_RETENTION_INTERVAL_MS: &str = "OUTBOX_RETENTION_INTERVAL_MS";
    pub const OUTBOX_SIGNING_KEY_ID: &str = "OUTBOX_SIGNING_KEY_ID";
    /// Secret; or `OUTBOX_SIGNING_KEY_FILE`.
    pub const OUTBOX_SIGNING_KEY: &str = "OUTBOX_SIGNING_KEY";
    pub const OUTBOX_SIGNING_KEY_FILE: &str = "OUTBOX_SIGNING_KEY_FILE";
    pub const OUTBOX_DELIVERY_WAIT_MS: &str = "OUTBOX_DELIVERY_WAIT_MS";
    pub const OUTBOX_PARKED_HOLDS_KEY: &str = "OUTBOX_PARKED_HOLDS_KEY";
    pub const OUTBOX_PRODUCER_STALL_MS: &str = "OUTBOX_PRODUCER_STALL_MS";
    pub use crate::format::OUTBOX_FORMAT;
    /// Per-topic limits: `OUTBOX_TOPIC_<TOPIC>_MAX_PAYLOAD_BYTES` (see `relay_config::PayloadLimits`).
    pub const PREFIX: &str = "OUTBOX_";
    pub const ALL: &[&str] = &[
        OUTBOX_SOURCE,
        OUTBOX_TOPICS,
        OUTBOX_BATCH_SIZE,
        OUTBOX_BATCH_MAX_BYTES,
        OUTBOX_POLL_INTERVAL_MS,
        OUTBOX_LEADER_RETRY_MS,
        OUTBOX_LEADER_LEASE_MS,
        OUTBOX_SHUTDOWN_GRACE_MS,
        OUTBOX_MAX_PAYLOAD_BYTES,
        OUTBOX_RETENTION_HOURS,
        OUTBOX_RETENTION_BATCH,
        OUTBOX_RETENTION_INTERVAL_MS,
        OUTBOX_SIGNING_KEY_ID,
        OUTBOX_SIGNING_KEY,
        OUTBOX_SIGNING_KEY_FILE,
        OUTBOX_DELIVERY_WAIT_MS,
        OUTBOX_PARKED_HOLDS_KEY,
        OUTBOX_PRODUCER_STALL_MS,
        OUTBOX_FORMAT,
    ];
}

/// Everything outbox-poller needs to run.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub database_url: DatabaseUrl,
    pub common: Common,
    /// Stamped on every envelope as its source.
    pub source: String,
    /// Outbox topics this poller publishes; empty means all.
    pub topics: Vec<String>,
    pub batch_size: i64,
    /// The most payload bytes one batch reads (`OUTBOX_BATCH_MAX_BYTES`); a batch always takes at
    /// least one row, so a row at the largest payload limit still moves.
    pub batch_max_bytes: usize,
    /// The longest wait between two scans of an idle outbox (`OUTBOX_POLL_INTERVAL_MS`, default
    /// 10 ms). After a scan that found rows the next one follows at once; each empty scan doubles
    /// the wait, from 1 ms up to this bound. A `NOTIFY relay_outbox` ends a wait early.
    pub poll_interval: Duration,
    /// How often a standby checks whether it can become the leader.
    pub leader_retry: Duration,
    /// How long a leader's lease lasts without renewal: the failover time when a leader freezes
    /// or is cut off while its database session stays open.
    pub leader_lease: Duration,
    /// How long shutdown waits for in-flight records to be acknowledged.
    pub shutdown_grace: Duration,
    /// Larger payloads are parked instead of sent.
    pub max_payload: PayloadLimits,
    /// The largest record the producer takes (`message.max.bytes` as set), in bytes: a row whose
    /// encoded record is larger is parked before it is sent.
    pub max_record: usize,
    /// How long a batch waits for its delivery reports before the rows still unreported are set
    /// aside (their keys held back) and the next batch goes out.
    pub delivery_wait: Duration,
    /// Whether a parked row holds back the later rows of its key until an operator retries or
    /// discards it (default true).
    pub parked_holds_key: bool,
    /// How long records may await their delivery reports with none arriving before the term ends
    /// and the next one starts with a fresh producer.
    pub producer_stall: Duration,
    /// Deletion of long-published rows while leading; `None` keeps them forever.
    pub retention: Option<Retention>,
    /// Signs every record when set (`OUTBOX_SIGNING_KEY_ID` and `OUTBOX_SIGNING_KEY`).
    pub signing: Option<SigningKey>,
    /// Each topic's wire format (`OUTBOX_FORMAT`, `OUTBOX_TOPIC_<TOPIC>_FORMAT`).
    pub formats: TopicFormats,
}

impl PollerConfig {
    /// Reads the configuration; the error lists every problem.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        use names::*;
        let mut r = Reader::new(env);
        let common = Common::read(&mut r, KafkaRole::Producer);
        relay_kafka::check_properties(&mut r, &common.kafka_properties);
        let source = r.required(OUTBOX_SOURCE).unwrap_or_default();
        let topics = r.topics(OUTBOX_TOPICS);
        let batch_size = r.number(OUTBOX_BATCH_SIZE, 1000, 1, 50_000) as i64;
        let batch_max_bytes = relay_config::read_batch_max_bytes(&mut r, PREFIX);
        let poll_interval = r.millis(OUTBOX_POLL_INTERVAL_MS, 10, 1, 3_600_000);
        let leader_retry = r.millis(OUTBOX_LEADER_RETRY_MS, 1000, 10, 600_000);
        let leader_lease = r.millis(OUTBOX_LEADER_LEASE_MS, 10_000, 1_000, 600_000);
        let shutdown_grace = r.millis(OUTBOX_SHUTDOWN_GRACE_MS, 10_000, 0, 600_000);
        let max_payload = PayloadLimits::read(&mut r, PREFIX);
        relay_config::check_record_sizes(&mut r, &max_payload, &common.kafka_properties, KafkaRole::Producer);
        let max_record = relay_config::producer_record_limit(&max_payload, &common.kafka_properties);
        relay_config::check_producer_memory(&mut r, &common.kafka_properties, max_record);
        if source.len() > relay_config::SOURCE_MAX_BYTES {
            r.problem(OUTBOX_SOURCE, format!("is longer than {} bytes", relay_config::SOURCE_MAX_BYTES));
        }
        let delivery_wait = r.millis(OUTBOX_DELIVERY_WAIT_MS, 500, 10, 600_000);
        let parked_holds_key = r.flag(OUTBOX_PARKED_HOLDS_KEY, true);
        let producer_stall = r.millis(OUTBOX_PRODUCER_STALL_MS, 30_000, 1_000, 3_600_000);
        let retention = Retention::read(&mut r, PREFIX);
        let signing = read_signing_key(&mut r);
        let formats = TopicFormats::read(&mut r, &source, OUTBOX_SOURCE);
        r.reject_unknown(PREFIX, ALL, |n| {
            PayloadLimits::is_override(PREFIX, n) || TopicFormats::is_override(n)
        });
        let database_url = r.finish_with_database(common.database_url.clone())?;
        Ok(Self {
            database_url,
            common,
            source,
            topics,
            batch_size,
            batch_max_bytes,
            poll_interval,
            leader_retry,
            leader_lease,
            shutdown_grace,
            max_payload,
            max_record,
            delivery_wait,
            parked_holds_key,
            producer_stall,
            retention,
            signing,
            formats,
        })
    }

    /// How often the leader renews its lease: every `OUTBOX_LEADER_RETRY_MS`, and at least four
    /// times per lease.
    pub fn leader_renew_interval(&self) -> Duration {
        self.leader_retry.min(self.leader_lease / 4)
    }

    /// The failover time: the longest a standby waits before it leads in place of a leader that
    /// froze (the lease) plus one retry. A leader that died is replaced within one retry.
    pub fn failover_time(&self) -> Duration {
        self.leader_lease + self.leader_retry
    }

    /// The lease's name (a row of `relay.outbox_leader`): one leader per outbox database and
    /// topic selection.
    pub fn leader_lock_object(&self) -> String {
        let mut topics = self.topics.clone();
        topics.sort();
        format!("outbox-poller:{}", topics.join(","))
    }
}

/// The signing key: its id and its secret together, or neither.
fn read_signing_key(r: &mut Reader<'_>) -> Option<SigningKey> {
    use names::*;
    let id = r.optional(OUTBOX_SIGNING_KEY_ID);
    let secret = r.secret(OUTBOX_SIGNING_KEY);
    let secret_named = secret.is_some() || r.optional(OUTBOX_SIGNING_KEY_FILE).is_some();
    match (id, secret) {
        (Some(id), Some(secret)) => match SigningKey::new(&id, &secret) {
            Ok(key) => Some(key),
            Err(why) => {
                let variable =
                    if why.starts_with("key id") { OUTBOX_SIGNING_KEY_ID } else { OUTBOX_SIGNING_KEY };
                r.problem(variable, why);
                None
            }
        },
        (Some(_), None) if !secret_named => {
            r.problem(OUTBOX_SIGNING_KEY, format!("is required when {OUTBOX_SIGNING_KEY_ID} is set"));
            None
        }
        (None, _) if secret_named => {
            r.problem(OUTBOX_SIGNING_KEY_ID, format!("is required when {OUTBOX_SIGNING_KEY} is set"));
            None
        }
        // Neither, or a key file that could not be read (already reported).
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use relay_config::MapEnv;

    use super::*;

    #[test]
    fn reads_a_full_configuration_with_topic_overrides() {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://postgres@localhost/origin"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("OUTBOX_SOURCE", "payments"),
            ("OUTBOX_TOPICS", "payments.v1, refunds"),
            ("OUTBOX_BATCH_SIZE", "250"),
            ("OUTBOX_TOPIC_PAYMENTS_V1_MAX_PAYLOAD_BYTES", "4096"),
        ]);
        let config = PollerConfig::from_env(&env).expect("valid");
        assert_eq!(config.topics, vec!["payments.v1", "refunds"]);
        assert_eq!(config.batch_size, 250);
        assert_eq!(config.batch_max_bytes, 8 << 20, "8 MiB unless set");
        assert_eq!(config.max_payload.for_topic("payments.v1"), 4096);
        assert_eq!(config.max_payload.for_topic("refunds"), 1 << 20);
    }

    #[test]
    fn lists_every_problem_in_one_error() {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://h:notaport/db"),
            ("OUTBOX_BATCH_SIZE", "0"),
            ("OUTBOX_BACTH_SIZE", "10"),
            ("OUTBOX_TOPICS", "ok,not ok"),
            ("OUTBOX_BATCH_MAX_BYTES", "1k"),
            ("KAFKA_PROPERTY_QUEUE_BUFFERING_MAX_KBYTES", "100"),
        ]);
        let err = PollerConfig::from_env(&env).expect_err("invalid");
        let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        for expected in [
            "DATABASE_URL",
            "KAFKA_BROKERS",
            "OUTBOX_SOURCE",
            "OUTBOX_TOPICS",
            "OUTBOX_BATCH_SIZE",
            "OUTBOX_BACTH_SIZE",
            "OUTBOX_BATCH_MAX_BYTES",
            "KAFKA_PROPERTY_QUEUE_BUFFERING_MAX_KBYTES",
        ] {
            assert!(vars.contains(&expected), "{expected} missing from {vars:?}");
        }
    }

    fn valid_with(extra: &[(&'static str, &'static str)]) -> MapEnv {
        let mut vars = vec![
            ("DATABASE_URL", "postgres://postgres@localhost/origin"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("OUTBOX_SOURCE", "payments"),
        ];
        vars.extend_from_slice(extra);
        MapEnv::new(vars)
    }

    #[test]
    fn retention_is_off_unless_hours_are_set() {
        let config = PollerConfig::from_env(&valid_with(&[])).expect("valid");
        assert_eq!(config.retention, None);
        let config = PollerConfig::from_env(&valid_with(&[("OUTBOX_RETENTION_HOURS", "0")])).expect("valid");
        assert_eq!(config.retention, None, "0 keeps forever");
        let config =
            PollerConfig::from_env(&valid_with(&[("OUTBOX_RETENTION_HOURS", "168")])).expect("valid");
        let retention = config.retention.expect("on");
        assert_eq!((retention.hours, retention.batch), (168, 1000));
        assert_eq!(retention.interval, Duration::from_secs(60));
        let config = PollerConfig::from_env(&valid_with(&[
            ("OUTBOX_RETENTION_HOURS", "24"),
            ("OUTBOX_RETENTION_BATCH", "100000"),
            ("OUTBOX_RETENTION_INTERVAL_MS", "250"),
        ]))
        .expect("valid");
        let retention = config.retention.expect("on");
        assert_eq!((retention.hours, retention.batch), (24, 100_000));
        assert_eq!(retention.interval, Duration::from_millis(250));
    }

    #[test]
    fn bad_retention_values_are_all_reported() {
        let err = PollerConfig::from_env(&valid_with(&[
            ("OUTBOX_RETENTION_HOURS", "-1"),
            ("OUTBOX_RETENTION_BATCH", "100001"),
            ("OUTBOX_RETENTION_INTERVAL_MS", "0"),
            ("OUTBOX_RETENTION_HOUR", "24"),
        ]))
        .expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.0.len(), 4, "{text}");
        for expected in [
            "OUTBOX_RETENTION_HOURS: \"-1\" is not a whole number",
            "OUTBOX_RETENTION_BATCH: 100001 is outside 1..=100000",
            "OUTBOX_RETENTION_INTERVAL_MS: 0 is outside 1..=86400000",
            "OUTBOX_RETENTION_HOUR: is not a setting",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
        // Batch and interval are checked even while retention is off.
        let err =
            PollerConfig::from_env(&valid_with(&[("OUTBOX_RETENTION_BATCH", "0")])).expect_err("invalid");
        assert_eq!(err.0[0].variable, "OUTBOX_RETENTION_BATCH");
    }

    #[test]
    fn the_lease_bounds_renewal_and_failover() {
        let config = PollerConfig::from_env(&valid_with(&[])).expect("valid");
        assert_eq!(config.leader_lease, Duration::from_secs(10));
        assert_eq!(config.leader_renew_interval(), Duration::from_secs(1));
        assert_eq!(config.failover_time(), Duration::from_secs(11));
        let config = PollerConfig::from_env(&valid_with(&[
            ("OUTBOX_LEADER_LEASE_MS", "2000"),
            ("OUTBOX_LEADER_RETRY_MS", "5000"),
        ]))
        .expect("valid");
        assert_eq!(config.leader_renew_interval(), Duration::from_millis(500), "four renewals per lease");
        assert_eq!(config.failover_time(), Duration::from_millis(7000));
        let err =
            PollerConfig::from_env(&valid_with(&[("OUTBOX_LEADER_LEASE_MS", "999")])).expect_err("short");
        assert_eq!(err.0[0].variable, "OUTBOX_LEADER_LEASE_MS");
    }

    #[test]
    fn the_producer_is_sized_for_every_payload_limit_and_contradictions_are_all_listed() {
        let config = PollerConfig::from_env(&valid_with(&[])).expect("valid");
        assert_eq!(config.max_record, (1 << 20) + relay_config::RECORD_OVERHEAD_BYTES);
        assert!(config.parked_holds_key);
        assert_eq!(config.delivery_wait, Duration::from_millis(500));
        let config = PollerConfig::from_env(&valid_with(&[
            ("OUTBOX_TOPIC_BIG_MAX_PAYLOAD_BYTES", "5000000"),
            ("OUTBOX_PARKED_HOLDS_KEY", "false"),
        ]))
        .expect("valid");
        assert_eq!(config.max_record, 5_000_000 + relay_config::RECORD_OVERHEAD_BYTES);
        assert!(!config.parked_holds_key);

        let long_source = "s".repeat(257);
        let err = PollerConfig::from_env(&MapEnv::new([
            ("DATABASE_URL", "postgres://postgres@localhost/origin"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("KAFKA_PROPERTY_MESSAGE_MAX_BYTES", "1000000"),
            ("OUTBOX_TOPIC_BIG_MAX_PAYLOAD_BYTES", "2000000"),
            ("OUTBOX_TOPIC_SMALL_MAX_PAYLOAD_BYTES", "1000"),
            ("OUTBOX_SOURCE", long_source.as_str()),
        ]))
        .expect_err("contradictory");
        let text = err.to_string();
        let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            vec!["OUTBOX_TOPIC_BIG_MAX_PAYLOAD_BYTES", "OUTBOX_MAX_PAYLOAD_BYTES", "OUTBOX_SOURCE"],
            "{text}"
        );
        assert!(
            text.contains(
                "OUTBOX_MAX_PAYLOAD_BYTES: a payload of 1048576 bytes plus up to 131072 bytes of key, headers \
                 and envelope does not fit KAFKA_PROPERTY_MESSAGE_MAX_BYTES=1000000: lower the limit or raise \
                 message.max.bytes to at least 1179648"
            ),
            "{text}"
        );
        // Room for the largest limit is enough.
        let config = PollerConfig::from_env(&valid_with(&[
            ("KAFKA_PROPERTY_MESSAGE_MAX_BYTES", "200000"),
            ("OUTBOX_MAX_PAYLOAD_BYTES", "68928"),
        ]))
        .expect("fits");
        assert_eq!(config.max_record, 200_000);
    }

    #[test]
    fn librdkafka_accepts_the_producer_sized_for_the_largest_limit() {
        for limit in ["1048576", "104857600"] {
            let config =
                PollerConfig::from_env(&valid_with(&[("OUTBOX_MAX_PAYLOAD_BYTES", limit)])).expect("valid");
            let producer: Result<rdkafka::producer::FutureProducer, _> =
                crate::producer_client_config(&config).create();
            assert!(producer.is_ok(), "{limit}: {:?}", producer.err());
        }
    }

    const KEY: &str = "k3y-0123456789abcdefghijklmnopqrstuv";

    #[test]
    fn signs_only_with_both_an_id_and_a_key() {
        assert!(PollerConfig::from_env(&valid_with(&[])).expect("valid").signing.is_none());
        let config = PollerConfig::from_env(&valid_with(&[
            ("OUTBOX_SIGNING_KEY_ID", "2025-06"),
            ("OUTBOX_SIGNING_KEY", KEY),
        ]))
        .expect("valid");
        let key = config.signing.as_ref().expect("signing");
        assert_eq!(key.id(), "2025-06");
        assert!(!format!("{config:?}").contains("k3y"), "{config:?}");
    }

    #[test]
    fn signing_problems_are_reported_without_the_key() {
        let err =
            PollerConfig::from_env(&valid_with(&[("OUTBOX_SIGNING_KEY_ID", "k1")])).expect_err("no key");
        assert_eq!(
            err.to_string().lines().nth(1),
            Some("  - OUTBOX_SIGNING_KEY: is required when OUTBOX_SIGNING_KEY_ID is set")
        );
        let err = PollerConfig::from_env(&valid_with(&[("OUTBOX_SIGNING_KEY", KEY)])).expect_err("no id");
        assert_eq!(err.0[0].variable, "OUTBOX_SIGNING_KEY_ID");
        assert!(!err.to_string().contains("k3y"), "{err}");
        let short = "k3y-too-short";
        let err = PollerConfig::from_env(&valid_with(&[
            ("OUTBOX_SIGNING_KEY_ID", "k1"),
            ("OUTBOX_SIGNING_KEY", short),
        ]))
        .expect_err("short");
        let text = err.to_string();
        assert!(
            text.contains("OUTBOX_SIGNING_KEY: the key for id \"k1\" is shorter than 32 bytes"),
            "{text}"
        );
        assert!(!text.contains("k3y"), "{text}");
        let err = PollerConfig::from_env(&valid_with(&[
            ("OUTBOX_SIGNING_KEY_ID", "k 1"),
            ("OUTBOX_SIGNING_KEY", KEY),
            ("OUTBOX_SIGNING_KEY_FILE", "/nonexistent"),
        ]))
        .expect_err("both forms");
        let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(vars, vec!["OUTBOX_SIGNING_KEY"], "{err}");
        let err = PollerConfig::from_env(&valid_with(&[
            ("OUTBOX_SIGNING_KEY_ID", "k 1"),
            ("OUTBOX_SIGNING_KEY", KEY),
        ]))
        .expect_err("bad id");
        assert_eq!(err.0[0].variable, "OUTBOX_SIGNING_KEY_ID");
    }
}
