//! Payload size limits with per-topic overrides, shared by the poller and the consumer.
use std::collections::HashMap;

use crate::{topic_env_name, Reader};

/// `{prefix}MAX_PAYLOAD_BYTES`, overridden per topic by `{prefix}TOPIC_<TOPIC>_MAX_PAYLOAD_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadLimits {
    default: usize,
    per_topic: HashMap<String, usize>,
}

const SUFFIX: &str = "_MAX_PAYLOAD_BYTES";
const DEFAULT_BYTES: u64 = 1 << 20;
const MAX_BYTES: u64 = 100 << 20;

impl PayloadLimits {
    /// Reads the limits for a service whose variables start with `prefix` (`OUTBOX_`, `INBOX_`).
    pub fn read(reader: &mut Reader<'_>, prefix: &str) -> Self {
        let default =
            reader.number(&format!("{prefix}MAX_PAYLOAD_BYTES"), DEFAULT_BYTES, 1, MAX_BYTES) as usize;
        let topic_prefix = format!("{prefix}TOPIC_");
        let mut names: Vec<String> =
            reader.env().names().into_iter().filter(|n| Self::is_override(prefix, n)).collect();
        names.sort();
        let mut per_topic = HashMap::new();
        for name in names {
            let topic = &name[topic_prefix.len()..name.len() - SUFFIX.len()];
            if topic.is_empty() {
                reader.problem(&name, "names no topic");
                continue;
            }
            let limit = reader.number(&name, default as u64, 1, MAX_BYTES) as usize;
            per_topic.insert(topic.to_string(), limit);
        }
        Self { default, per_topic }
    }

    /// Whether `name` is a per-topic override variable for `prefix`.
    pub fn is_override(prefix: &str, name: &str) -> bool {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("TOPIC_"))
            .is_some_and(|rest| rest.ends_with(SUFFIX))
    }

    /// The limit for `topic`.
    pub fn for_topic(&self, topic: &str) -> usize {
        self.per_topic.get(&topic_env_name(topic)).copied().unwrap_or(self.default)
    }
}
