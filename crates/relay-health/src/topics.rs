//! Topic label values bounded to the configured topics, so that a record from a topic nobody
//! configured (a subscription pattern, a misrouted producer) cannot add label values, and with
//! them time series, without limit.
use metrics::SharedString;

/// The label value of every topic not in the configured list.
pub const OTHER_TOPIC: &str = "other";

/// The configured topics, each one's label value shared rather than copied per observation.
#[derive(Debug, Clone)]
pub struct TopicLabels {
    topics: Vec<SharedString>,
}

impl TopicLabels {
    pub fn new(configured: &[String]) -> Self {
        Self { topics: configured.iter().map(|t| SharedString::from(t.clone())).collect() }
    }

    /// `topic` when configured, else [`OTHER_TOPIC`].
    pub fn label(&self, topic: &str) -> SharedString {
        self.topics
            .iter()
            .find(|t| t.as_ref() == topic)
            .cloned()
            .unwrap_or(SharedString::const_str(OTHER_TOPIC))
    }

    /// Every configured topic's label value (to register counters at 0 for each).
    pub fn all(&self) -> impl Iterator<Item = SharedString> + '_ {
        self.topics.iter().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfigured_topics_share_one_label_value() {
        let labels = TopicLabels::new(&["payments".into(), "refunds".into()]);
        assert_eq!(labels.label("payments").as_ref(), "payments");
        assert_eq!(labels.label("refunds").as_ref(), "refunds");
        for stray in ["payments-v2", "", "PAYMENTS", "x".repeat(300).as_str()] {
            assert_eq!(labels.label(stray).as_ref(), OTHER_TOPIC, "{stray:?}");
        }
        assert_eq!(labels.all().count(), 2);
    }
}
