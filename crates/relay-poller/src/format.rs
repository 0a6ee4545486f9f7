//! Which wire format each topic is published in: Relay's protobuf envelope (the default) or
//! CloudEvents binary content mode, which consumers without Relay code can read
//! (`relay_envelope::cloudevents`).
//!
//! `OUTBOX_FORMAT` sets the default and `OUTBOX_TOPIC_<TOPIC>_FORMAT` a topic's own, named like
//! the per-topic payload limits (`payments.v1` → `OUTBOX_TOPIC_PAYMENTS_V1_FORMAT`). Bad values
//! are reported with every other problem of the run. With any topic in CloudEvents, the source
//! name must be a URI-reference (RFC 3986), since it becomes `ce_source`.
use std::collections::HashMap;

use relay_config::{topic_env_name, Reader};

/// A topic's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The protobuf `relay.envelope.v1.Envelope` as the record value.
    #[default]
    Envelope,
    /// CloudEvents v1.0 binary content mode: the payload as the value, attributes as headers.
    CloudEvents,
}

impl Format {
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "envelope" => Some(Self::Envelope),
            "cloudevents" => Some(Self::CloudEvents),
            _ => None,
        }
    }
}

/// `OUTBOX_FORMAT`, the default format.
pub const OUTBOX_FORMAT: &str = "OUTBOX_FORMAT";
const SUFFIX: &str = "_FORMAT";
const TOPIC_PREFIX: &str = "OUTBOX_TOPIC_";

/// The default format and the per-topic choices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicFormats {
    default: Format,
    /// By the topic's variable form (`topic_env_name`).
    per_topic: HashMap<String, Format>,
}

impl TopicFormats {
    /// Reads `OUTBOX_FORMAT` and every `OUTBOX_TOPIC_<TOPIC>_FORMAT`; problems go to `r`.
    /// `source` (`OUTBOX_SOURCE`) is checked as a URI-reference when a topic uses CloudEvents.
    pub fn read(r: &mut Reader<'_>, source: &str, source_variable: &str) -> Self {
        let read_one = |r: &mut Reader<'_>, name: &str| {
            let text = r.optional(name)?;
            let format = Format::parse(&text);
            if format.is_none() {
                r.problem(name, format!("{text:?} is not a format: use envelope or cloudevents"));
            }
            format
        };
        let default = read_one(r, OUTBOX_FORMAT).unwrap_or_default();
        let mut names: Vec<String> = r.env().names().into_iter().filter(|n| Self::is_override(n)).collect();
        names.sort();
        let mut per_topic = HashMap::new();
        for name in names {
            let topic = &name[TOPIC_PREFIX.len()..name.len() - SUFFIX.len()];
            if topic.is_empty() {
                r.problem(&name, "names no topic");
                continue;
            }
            if let Some(format) = read_one(r, &name) {
                per_topic.insert(topic.to_string(), format);
            }
        }
        let formats = Self { default, per_topic };
        if formats.any_cloudevents() && !source.is_empty() {
            if let Err(why) = check_uri_reference(source) {
                r.problem(source_variable, format!("becomes ce_source on CloudEvents topics, so {why}"));
            }
        }
        formats
    }

    /// Whether `name` is a per-topic format variable (`OUTBOX_TOPIC_<TOPIC>_FORMAT`).
    pub fn is_override(name: &str) -> bool {
        name.strip_prefix(TOPIC_PREFIX).is_some_and(|rest| rest.ends_with(SUFFIX))
    }

    /// The format `topic` is published in.
    pub fn for_topic(&self, topic: &str) -> Format {
        self.per_topic.get(&topic_env_name(topic)).copied().unwrap_or(self.default)
    }

    fn any_cloudevents(&self) -> bool {
        self.default == Format::CloudEvents || self.per_topic.values().any(|f| *f == Format::CloudEvents)
    }
}

/// RFC 3986 URI-reference, as CloudEvents requires of `source`: the characters a URI may hold
/// (unreserved, reserved and `%` escapes of two hex digits), nothing else. Names like
/// `payments`, `/svc/payments` or `urn:bank:payments` pass.
fn check_uri_reference(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let allowed = b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(b);
        if *b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!(
                    "it must be a URI-reference, and byte {} is a '%' without two hex digits",
                    i + 1
                ));
            }
        } else if !allowed {
            return Err(format!(
                "it must be a URI-reference, and byte {} ({:?}) is not allowed in one",
                i + 1,
                *b as char
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use relay_config::MapEnv;

    use super::*;

    fn read(vars: &[(&str, &str)], source: &str) -> (TopicFormats, Result<(), relay_config::ConfigError>) {
        let env = MapEnv::new(vars.iter().copied());
        let mut r = Reader::new(&env);
        let formats = TopicFormats::read(&mut r, source, "OUTBOX_SOURCE");
        (formats, r.finish())
    }

    #[test]
    fn topics_take_their_own_format_or_the_default() {
        let (formats, ok) = read(&[], "payments");
        ok.expect("valid");
        assert_eq!(formats.for_topic("payments.v1"), Format::Envelope);
        let (formats, ok) = read(&[("OUTBOX_TOPIC_PAYMENTS_V1_FORMAT", "CloudEvents")], "payments");
        ok.expect("valid");
        assert_eq!(formats.for_topic("payments.v1"), Format::CloudEvents);
        assert_eq!(formats.for_topic("refunds"), Format::Envelope);
        let (formats, ok) = read(
            &[("OUTBOX_FORMAT", "cloudevents"), ("OUTBOX_TOPIC_LEGACY_FORMAT", "envelope")],
            "urn:bank:payments",
        );
        ok.expect("valid");
        assert_eq!(formats.for_topic("refunds"), Format::CloudEvents);
        assert_eq!(formats.for_topic("legacy"), Format::Envelope);
    }

    #[test]
    fn bad_formats_and_a_source_that_is_no_uri_reference_are_all_reported() {
        let (_, result) = read(
            &[
                ("OUTBOX_FORMAT", "avro"),
                ("OUTBOX_TOPIC_A_FORMAT", "cloudevents"),
                ("OUTBOX_TOPIC_B_FORMAT", "json"),
                ("OUTBOX_TOPIC__FORMAT", "envelope"),
            ],
            "payments service",
        );
        let err = result.expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.0.len(), 4, "{text}");
        for expected in [
            "OUTBOX_FORMAT: \"avro\" is not a format: use envelope or cloudevents",
            "OUTBOX_TOPIC_B_FORMAT: \"json\" is not a format",
            "OUTBOX_TOPIC__FORMAT: names no topic",
            "OUTBOX_SOURCE: becomes ce_source on CloudEvents topics, so it must be a URI-reference, and byte 9 (' ') is not allowed in one",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
        let (_, result) = read(&[("OUTBOX_FORMAT", "cloudevents")], "pay%zzments");
        assert!(result.expect_err("escape").to_string().contains("'%' without two hex digits"));
        let (_, result) = read(&[], "payments service");
        result.expect("envelope topics take any source name");
        for good in
            ["payments", "/svc/payments", "urn:bank:payments", "https://bank.example/p?x=1#f", "a%20b"]
        {
            assert_eq!(check_uri_reference(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn the_poller_reads_formats_with_its_other_settings_and_reports_them_together() {
        let base = [
            ("DATABASE_URL", "postgres://postgres@localhost/origin"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("OUTBOX_SOURCE", "payments"),
        ];
        let mut vars = base.to_vec();
        vars.push(("OUTBOX_TOPIC_PAYMENTS_V1_FORMAT", "cloudevents"));
        let config =
            crate::PollerConfig::from_env(&MapEnv::new(vars)).expect("a format variable is a setting");
        assert_eq!(config.formats.for_topic("payments.v1"), Format::CloudEvents);
        let mut vars = base.to_vec();
        vars.extend([
            ("OUTBOX_FORMAT", "protobuf"),
            ("OUTBOX_BATCH_SIZE", "0"),
            ("OUTBOX_FORAMT", "envelope"),
        ]);
        let err = crate::PollerConfig::from_env(&MapEnv::new(vars)).expect_err("invalid");
        let variables: Vec<&str> = err.0.iter().map(|p| p.variable.as_str()).collect();
        for expected in ["OUTBOX_FORMAT", "OUTBOX_BATCH_SIZE", "OUTBOX_FORAMT"] {
            assert!(variables.contains(&expected), "{expected} missing from {variables:?}");
        }
    }
}
