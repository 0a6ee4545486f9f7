//! The worker's settings, read from the environment with every problem reported at once, so a
//! service that embeds the worker gets the same kind of configuration errors as Relay's own.
use std::time::Duration;

use relay_config::{ConfigError, DatabaseUrl, Environment, Reader};

/// Variable names the worker reads.
pub mod names {
    pub const PROCESSING_INBOX: &str = "PROCESSING_INBOX";
    pub const PROCESSING_WORKERS: &str = "PROCESSING_WORKERS";
    pub const PROCESSING_BATCH: &str = "PROCESSING_BATCH";
    pub const PROCESSING_MAX_ATTEMPTS: &str = "PROCESSING_MAX_ATTEMPTS";
    pub const PROCESSING_BACKOFF_INITIAL_MS: &str = "PROCESSING_BACKOFF_INITIAL_MS";
    pub const PROCESSING_BACKOFF_MAX_MS: &str = "PROCESSING_BACKOFF_MAX_MS";
    pub const PROCESSING_POLL_INTERVAL_MS: &str = "PROCESSING_POLL_INTERVAL_MS";
    pub const PREFIX: &str = "PROCESSING_";
    pub const ALL: &[&str] = &[
        PROCESSING_INBOX,
        PROCESSING_WORKERS,
        PROCESSING_BATCH,
        PROCESSING_MAX_ATTEMPTS,
        PROCESSING_BACKOFF_INITIAL_MS,
        PROCESSING_BACKOFF_MAX_MS,
        PROCESSING_POLL_INTERVAL_MS,
    ];
}

/// Everything [`crate::run`] needs.
#[derive(Debug, Clone)]
pub struct ProcessingConfig {
    /// `DATABASE_URL` (or `DATABASE_URL_FILE`): the receiving service's database, the one that
    /// holds `relay.inbox`. Its user needs the role `relay_inbox_processor` (or more).
    pub database_url: DatabaseUrl,
    /// `PROCESSING_INBOX`: the inbox (`INBOX_NAME` of its inbox-consumer) to act on.
    pub inbox: String,
    /// `PROCESSING_WORKERS` (default 4, 1..=256): concurrent workers, one connection each.
    pub workers: usize,
    /// `PROCESSING_BATCH` (default 1, 1..=1000): messages (of distinct keys) claimed per
    /// transaction. More is faster; a crash or a failing commit repeats the whole batch.
    pub batch: i32,
    /// `PROCESSING_MAX_ATTEMPTS` (default 10, 1..=1000000): failed attempts before a message is
    /// parked and its key waits for an operator.
    pub max_attempts: i32,
    /// `PROCESSING_BACKOFF_INITIAL_MS` (default 1000) and `PROCESSING_BACKOFF_MAX_MS` (default
    /// 300000): the wait after failed attempt n is min(initial * 2^(n-1), max).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// `PROCESSING_POLL_INTERVAL_MS` (default 1000, 10..=60000): how often an idle worker looks
    /// without being notified (retries falling due, a lost notification).
    pub poll_interval: Duration,
    /// `RELAY_MIGRATE` (default true): apply the inbox migrations at start; with false, check them.
    pub migrate: bool,
    /// `LOG_FORMAT`, `LOG_REPEAT_SUMMARY_SECS`, `NO_COLOR`.
    pub log: relay_config::LogSettings,
}

/// Largest backoff setting: what fits the database's integer column.
const MAX_BACKOFF_MS: u64 = i32::MAX as u64;

impl ProcessingConfig {
    /// Reads the worker's settings; the error lists every problem.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        Self::from_env_with(env, |_| ()).map(|(config, ())| config)
    }

    /// Reads the worker's settings and, with the same reader, the embedding service's own
    /// (`extra`), so one error lists the problems of both.
    pub fn from_env_with<T>(
        env: &dyn Environment,
        extra: impl FnOnce(&mut Reader<'_>) -> T,
    ) -> Result<(Self, T), ConfigError> {
        use names::*;
        let mut r = Reader::new(env);
        let database_url = relay_config::read_database_url(&mut r);
        let inbox = r.required(PROCESSING_INBOX).unwrap_or_default();
        if inbox.chars().any(char::is_control) {
            r.problem(PROCESSING_INBOX, "must not contain control characters");
        }
        let workers = r.number(PROCESSING_WORKERS, 4, 1, 256) as usize;
        let batch = r.number(PROCESSING_BATCH, 1, 1, 1000) as i32;
        let max_attempts = r.number(PROCESSING_MAX_ATTEMPTS, 10, 1, 1_000_000) as i32;
        let backoff_initial = r.number(PROCESSING_BACKOFF_INITIAL_MS, 1000, 0, MAX_BACKOFF_MS);
        let backoff_max = r.number(PROCESSING_BACKOFF_MAX_MS, 300_000, 0, MAX_BACKOFF_MS);
        if backoff_max < backoff_initial {
            r.problem(
                PROCESSING_BACKOFF_MAX_MS,
                format!("{backoff_max} is below {PROCESSING_BACKOFF_INITIAL_MS} ({backoff_initial})"),
            );
        }
        let poll_interval = r.millis(PROCESSING_POLL_INTERVAL_MS, 1000, 10, 60_000);
        let migrate = r.flag(relay_config::names::RELAY_MIGRATE, true);
        let log = relay_config::LogSettings::read(&mut r);
        let extra = extra(&mut r);
        r.reject_unknown(PREFIX, ALL, |_| false);
        relay_config::reject_unknown_database_and_relay(&mut r);
        let database_url = r.finish_with_database(database_url)?;
        let config = Self {
            database_url,
            inbox,
            workers,
            batch,
            max_attempts,
            backoff_initial: Duration::from_millis(backoff_initial),
            backoff_max: Duration::from_millis(backoff_max),
            poll_interval,
            migrate,
            log,
        };
        Ok((config, extra))
    }
}

#[cfg(test)]
mod tests {
    use relay_config::MapEnv;

    use super::*;

    #[test]
    fn defaults_need_only_the_database_and_the_inbox() {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://app@localhost/ledger"),
            ("PROCESSING_INBOX", "ledger"),
        ]);
        let config = ProcessingConfig::from_env(&env).expect("valid");
        assert_eq!(
            (config.inbox.as_str(), config.workers, config.batch, config.max_attempts),
            ("ledger", 4, 1, 10)
        );
        assert_eq!(config.backoff_initial, Duration::from_secs(1));
        assert_eq!(config.backoff_max, Duration::from_secs(300));
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert!(config.migrate);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_the_embedding_services_own() {
        let env = MapEnv::new([
            ("PROCESSING_WORKERS", "0"),
            ("PROCESSING_BATCH", "many"),
            ("PROCESSING_BACKOFF_INITIAL_MS", "5000"),
            ("PROCESSING_BACKOFF_MAX_MS", "100"),
            ("PROCESSING_MAX_ATEMPTS", "3"),
            ("RELAY_MIGRATE", "perhaps"),
        ]);
        let err = ProcessingConfig::from_env_with(&env, |r| r.required("LEDGER_TABLE")).expect_err("invalid");
        let vars: Vec<&str> = err.0.iter().map(|p| p.variable.as_str()).collect();
        for expected in [
            "DATABASE_URL",
            "PROCESSING_INBOX",
            "PROCESSING_WORKERS",
            "PROCESSING_BATCH",
            "PROCESSING_BACKOFF_MAX_MS",
            "PROCESSING_MAX_ATEMPTS",
            "RELAY_MIGRATE",
            "LEDGER_TABLE",
        ] {
            assert!(vars.contains(&expected), "{expected} missing from {vars:?}");
        }
        assert_eq!(vars.len(), 8, "{err}");
    }

    #[test]
    fn typos_under_the_shared_database_and_relay_prefixes_are_reported() {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://app@localhost/ledger"),
            ("DATABASE_ULR", "postgres://app@localhost/other"),
            ("PROCESSING_INBOX", "ledger"),
            ("RELAY_MIGRATION", "false"),
            ("RELAY_INBOX", "ledger"),
            ("RELAY_MIGRATE", "false"),
        ]);
        let err = ProcessingConfig::from_env(&env).expect_err("typos");
        let mut vars: Vec<&str> = err.0.iter().map(|p| p.variable.as_str()).collect();
        vars.sort_unstable();
        assert_eq!(vars, ["DATABASE_ULR", "RELAY_INBOX", "RELAY_MIGRATION"], "{err}");
    }

    #[test]
    fn the_shared_names_the_worker_does_not_read_are_not_typos() {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://app@localhost/ledger"),
            ("PROCESSING_INBOX", "ledger"),
            ("RELAY_HTTP_ADDR", "127.0.0.1:9100"),
            ("LOG_FORMAT", "json"),
        ]);
        let config = ProcessingConfig::from_env(&env).expect("valid");
        assert_eq!(config.log.format, relay_config::LogFormat::Json);
    }

    #[test]
    fn the_embedding_services_settings_come_back_with_the_config() {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://app@localhost/ledger"),
            ("PROCESSING_INBOX", "ledger"),
            ("PROCESSING_WORKERS", "8"),
            ("PROCESSING_BATCH", "50"),
            ("LEDGER_TABLE", "postings"),
        ]);
        let (config, table) =
            ProcessingConfig::from_env_with(&env, |r| r.required("LEDGER_TABLE")).expect("valid");
        assert_eq!((config.workers, config.batch), (8, 50));
        assert_eq!(table.as_deref(), Some("postings"));
    }
}
