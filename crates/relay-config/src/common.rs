//! Settings every Relay service shares: the database, the brokers, logging, migrations.
use std::{net::SocketAddr, str::FromStr, time::Duration};

use crate::{DatabaseUrl, KafkaProperties, KafkaRole, KafkaSecurity, LogSettings, Reader};

/// Variable names shared by every service; one place so the README table and the code agree.
pub mod names {
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const KAFKA_BROKERS: &str = "KAFKA_BROKERS";
    pub const KAFKA_PROPERTY_PREFIX: &str = "KAFKA_PROPERTY_";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    pub const LOG_REPEAT_SUMMARY_SECS: &str = "LOG_REPEAT_SUMMARY_SECS";
    pub const RELAY_MIGRATE: &str = "RELAY_MIGRATE";
    pub const RELAY_HTTP_ADDR: &str = "RELAY_HTTP_ADDR";
    pub const RELAY_PROBE_INTERVAL_MS: &str = "RELAY_PROBE_INTERVAL_MS";
    pub const DATABASE_URL_FILE: &str = "DATABASE_URL_FILE";

    /// The shared variables as `--help` lists them (with `KAFKA_SECURITY_PROTOCOL`,
    /// `KAFKA_SASL_*` and `KAFKA_SSL_*`: `crate::security_names`).
    pub const SHARED_HELP: &[&str] = &[
        DATABASE_URL,
        DATABASE_URL_FILE,
        KAFKA_BROKERS,
        "KAFKA_PROPERTY_<librdkafka property, dots as underscores>",
        LOG_FORMAT,
        LOG_REPEAT_SUMMARY_SECS,
        crate::NO_COLOR,
        RELAY_MIGRATE,
        RELAY_HTTP_ADDR,
        RELAY_PROBE_INTERVAL_MS,
    ];

    /// Every `RELAY_*` variable a service reads; any other `RELAY_*` name is reported as a typo.
    pub const RELAY_ALL: &[&str] = &[RELAY_MIGRATE, RELAY_HTTP_ADDR, RELAY_PROBE_INTERVAL_MS];
}

/// The shared prefixes checked for typos by every service that reads [`Common`]: a name under
/// one of them that no service setting uses is reported (`RELAY_MIGRATION`, `RELAY_HTTP_ADR`,
/// `KAFKA_BROKER`, `DATABASE_ULR`). `KAFKA_SASL_*`, `KAFKA_SSL_*` and `KAFKA_SECURITY_*` are
/// checked by [`crate::KafkaSecurity`], `KAFKA_PROPERTY_*` are librdkafka properties.
fn reject_unknown_shared(reader: &mut Reader<'_>) {
    use names::*;
    reject_unknown_database_and_relay(reader);
    reader.reject_unknown("KAFKA_", &[KAFKA_BROKERS], |n| {
        ["KAFKA_PROPERTY_", "KAFKA_SASL_", "KAFKA_SSL_", "KAFKA_SECURITY_"].iter().any(|p| n.starts_with(p))
    });
}

/// Reports, as problems in `reader`, every set `RELAY_*` name not in [`names::RELAY_ALL`] and
/// every `DATABASE_*` name other than `DATABASE_URL` and `DATABASE_URL_FILE` (`RELAY_MIGRATION`,
/// `DATABASE_ULR`). For components that read the database settings but not the brokers' (the
/// embedded inbox worker); services reading [`Common`] get this check and the `KAFKA_*` one.
pub fn reject_unknown_database_and_relay(reader: &mut Reader<'_>) {
    use names::*;
    reader.reject_unknown("RELAY_", RELAY_ALL, |_| false);
    reader.reject_unknown("DATABASE_", &[DATABASE_URL, DATABASE_URL_FILE], |_| false);
}

/// `DATABASE_URL`, or the file `DATABASE_URL_FILE` names (read by [`Reader::secret`]). `None`
/// with a problem recorded in `reader` when neither is set or the URL does not parse.
pub fn read_database_url(reader: &mut Reader<'_>) -> Option<DatabaseUrl> {
    let Some(url) = reader.secret(names::DATABASE_URL) else {
        if reader.optional(names::DATABASE_URL_FILE).is_none() {
            reader.problem(names::DATABASE_URL, "is required but not set");
        }
        return None;
    };
    match DatabaseUrl::parse(url) {
        Ok(url) => Some(url),
        Err(why) => {
            reader.problem(names::DATABASE_URL, why);
            None
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(()),
        }
    }
}

/// Settings shared by the poller and the consumer.
#[derive(Debug, Clone)]
pub struct Common {
    pub database_url: Option<DatabaseUrl>,
    pub kafka_brokers: String,
    /// Pass-through properties followed by the security ones: everything a client needs.
    pub kafka_properties: KafkaProperties,
    pub kafka_security: KafkaSecurity,
    /// `LOG_FORMAT`, `LOG_REPEAT_SUMMARY_SECS`, `NO_COLOR`.
    pub log: LogSettings,
    pub migrate: bool,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; none when unset.
    pub http_addr: Option<SocketAddr>,
    /// How often the database and the brokers are checked for `/readyz` and the gauges.
    pub probe_interval: Duration,
}

impl Common {
    /// Reads the shared settings; problems are recorded in `reader`.
    pub fn read(reader: &mut Reader<'_>, role: KafkaRole) -> Self {
        let database_url = read_database_url(reader);
        let brokers = reader.list(names::KAFKA_BROKERS);
        if brokers.is_empty() {
            reader.problem(names::KAFKA_BROKERS, "is required: a comma-separated list of host:port");
        }
        for broker in &brokers {
            let port_ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok {
                reader.problem(names::KAFKA_BROKERS, format!("{broker:?} is not host:port"));
            }
        }
        let kafka_security = KafkaSecurity::read(reader);
        let kafka_properties = KafkaProperties::read(reader, role).with_security(&kafka_security);
        let log = LogSettings::read(reader);
        let migrate = reader.flag(names::RELAY_MIGRATE, true);
        let http_addr = reader.optional(names::RELAY_HTTP_ADDR).and_then(|raw| match raw.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                reader.problem(names::RELAY_HTTP_ADDR, format!("{raw:?} is not an ip:port address"));
                None
            }
        });
        let probe_interval = reader.millis(names::RELAY_PROBE_INTERVAL_MS, 5000, 100, 600_000);
        reject_unknown_shared(reader);
        Self {
            database_url,
            kafka_brokers: brokers.join(","),
            kafka_properties,
            kafka_security,
            log,
            migrate,
            http_addr,
            probe_interval,
        }
    }
}
