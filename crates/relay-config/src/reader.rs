//! Typed getters that collect problems instead of stopping at the first one.
use std::{fmt, str::FromStr, time::Duration};

use secrecy::SecretString;

use crate::{ConfigError, Environment};

/// One bad or missing variable. Never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub variable: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Reads variables from an [`Environment`], remembering every problem.
pub struct Reader<'e> {
    env: &'e dyn Environment,
    problems: Vec<Problem>,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader").field("problems", &self.problems).finish_non_exhaustive()
    }
}

impl<'e> Reader<'e> {
    pub fn new(env: &'e dyn Environment) -> Self {
        Self { env, problems: Vec::new() }
    }

    pub fn env(&self) -> &'e dyn Environment {
        self.env
    }

    /// Records a problem with `variable`.
    pub fn problem(&mut self, variable: &str, message: impl Into<String>) {
        self.problems.push(Problem { variable: variable.to_string(), message: message.into() });
    }

    /// A non-empty string, if set.
    pub fn optional(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(v) if v.trim().is_empty() => None,
            other => other.map(|v| v.trim().to_string()),
        }
    }

    /// A required non-empty string.
    pub fn required(&mut self, name: &str) -> Option<String> {
        let value = self.optional(name);
        if value.is_none() {
            self.problem(name, "is required but not set");
        }
        value
    }

    /// A value parsed with `FromStr`, or `default` when unset.
    pub fn parsed<T>(&mut self, name: &str, default: T, expected: &str) -> T
    where
        T: FromStr,
    {
        match self.optional(name) {
            None => default,
            Some(raw) => match raw.parse() {
                Ok(v) => v,
                Err(_) => {
                    self.problem(name, format!("{raw:?} is not {expected}"));
                    default
                }
            },
        }
    }

    /// A whole number within `min..=max`.
    pub fn number(&mut self, name: &str, default: u64, min: u64, max: u64) -> u64 {
        let value = self.parsed(name, default, "a whole number");
        if !(min..=max).contains(&value) {
            self.problem(name, format!("{value} is outside {min}..={max}"));
            return default;
        }
        value
    }

    /// A duration in milliseconds within `min..=max`.
    pub fn millis(&mut self, name: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.number(name, default, min, max))
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => false,
            Some(v) => {
                self.problem(name, format!("{v:?} is not true or false"));
                default
            }
        }
    }

    /// A comma-separated list; empty items are ignored.
    pub fn list(&mut self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    /// A list of Kafka topic names, each validated.
    pub fn topics(&mut self, name: &str) -> Vec<String> {
        let topics = self.list(name);
        for topic in &topics {
            if let Err(why) = validate_topic(topic) {
                self.problem(name, format!("topic {topic:?} {why}"));
            }
        }
        topics
    }

    /// A secret from `name`, or from the file named by `{name}_FILE`. Values are never reported.
    pub fn secret(&mut self, name: &str) -> Option<SecretString> {
        let file_var = format!("{name}_FILE");
        match (self.optional(name), self.optional(&file_var)) {
            (Some(_), Some(_)) => {
                self.problem(name, format!("set both {name} and {file_var}; set only one"));
                None
            }
            (Some(v), None) => Some(SecretString::from(v)),
            (None, Some(path)) => match self.env.read_file(&path) {
                Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_string())),
                Ok(_) => {
                    self.problem(&file_var, format!("file {path:?} is empty"));
                    None
                }
                Err(e) => {
                    self.problem(&file_var, format!("cannot read {path:?}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// Variables starting with `prefix` that are not in `known` and do not match `is_pattern`.
    /// Catches typos such as `OUTBOX_BACTH_SIZE` that would otherwise be silently ignored.
    /// Kubernetes service links (see [`is_service_link`]) are never reported.
    pub fn reject_unknown(&mut self, prefix: &str, known: &[&str], is_pattern: impl Fn(&str) -> bool) {
        let mut unknown: Vec<String> = self
            .env
            .names()
            .into_iter()
            .filter(|n| n.starts_with(prefix) && !known.contains(&n.as_str()) && !is_pattern(n))
            .filter(|n| !is_service_link(n))
            .collect();
        unknown.sort();
        for name in unknown {
            self.problem(&name, "is not a setting this service knows (a typo?)");
        }
    }

    /// Every problem, or the database URL that a service cannot run without.
    /// `url` is `None` only when reading it recorded a problem.
    pub fn finish_with_database(
        self,
        url: Option<crate::DatabaseUrl>,
    ) -> Result<crate::DatabaseUrl, ConfigError> {
        self.finish()?;
        url.ok_or_else(|| {
            ConfigError(vec![Problem {
                variable: crate::names::DATABASE_URL.into(),
                message: "is required but not set".into(),
            }])
        })
    }

    /// Every problem, or `Ok` when there were none.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(self.problems))
        }
    }
}

/// Whether `name` has the shape of a variable Kubernetes adds for every Service in the namespace
/// unless the pod sets `enableServiceLinks: false` (a Service `relay-metrics` gives
/// `RELAY_METRICS_SERVICE_HOST`, `RELAY_METRICS_PORT_9464_TCP_ADDR`, ...): `{SVC}_SERVICE_HOST`,
/// `{SVC}_SERVICE_PORT[_{PORT_NAME}]`, `{SVC}_PORT` and `{SVC}_PORT_{n}_{TCP|UDP|SCTP}[_PROTO|_PORT|_ADDR]`.
/// Source: Kubernetes documentation, "Service > Discovering services > Environment variables".
pub fn is_service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST") || name.ends_with("_SERVICE_PORT") || name.contains("_SERVICE_PORT_") {
        return true;
    }
    if name.ends_with("_PORT") {
        return true;
    }
    let Some((_, tail)) = name.rsplit_once("_PORT_") else { return false };
    let mut parts = tail.split('_');
    let number = parts.next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let protocol = parts.next().is_some_and(|p| matches!(p, "TCP" | "UDP" | "SCTP"));
    let rest: Vec<&str> = parts.collect();
    number && protocol && matches!(rest.as_slice(), [] | ["PROTO"] | ["PORT"] | ["ADDR"])
}

/// Kafka's topic name rules: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn validate_topic(topic: &str) -> Result<(), &'static str> {
    if topic.len() > 249 {
        return Err("is longer than 249 characters");
    }
    if topic == "." || topic == ".." {
        return Err("is not a valid topic name");
    }
    if !topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// The form a topic name takes inside a variable name: upper case, other characters as `_`.
/// `payments.v1` becomes `PAYMENTS_V1`, so its override is `OUTBOX_TOPIC_PAYMENTS_V1_...`.
pub fn topic_env_name(topic: &str) -> String {
    topic.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}
