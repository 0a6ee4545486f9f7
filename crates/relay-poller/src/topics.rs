//! Topic leases: exactly one publisher per topic, also when pollers of one outbox are configured
//! with overlapping but different `OUTBOX_TOPICS` (`{a,b}` and `{b,c}`).
//!
//! Leadership (`lease`) is elected per topic selection; on its own it let both selections'
//! leaders publish `b`. So a leader also claims each of its topics in
//! `relay.outbox_topic_lease` (outbox migration V7, `relay.outbox_claim_topics`): a topic has at
//! most one row there, and a leader publishes only the topics it claimed. A topic another
//! selection's leader validly holds is refused: this poller does not publish it, logs one
//! warning naming the other lease, sets `relay_outbox_topics_refused`, and its `/readyz` part
//! `topics` is degraded until the conflict ends. The leader tries again at every renewal and
//! takes a refused topic over once its holder no longer validly leads (that holder's term ends
//! with it, so V5's fence refuses its marks from then on).
use relay_health::Health;

/// The readiness part for "this poller publishes every topic it is configured for".
pub(crate) const TOPICS: &str = "topics";

/// The outcome of one claim: the topics this leader publishes now and those it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Claim {
    /// Claimed topics; `*` stands for every topic (a poller without `OUTBOX_TOPICS`).
    pub led: Vec<String>,
    /// Refused topics, each with the lease (another topic selection) that leads it.
    pub refused: Vec<(String, String)>,
}

impl Claim {
    /// The claim from `relay.outbox_claim_topics` rows (topic, led_by).
    pub(crate) fn from_rows(rows: &[tokio_postgres::Row]) -> Self {
        let mut claim = Self::default();
        for row in rows {
            let topic: String = row.get(0);
            match row.get::<_, Option<String>>(1) {
                None => claim.led.push(topic),
                Some(other) => claim.refused.push((topic, other)),
            }
        }
        claim.led.sort();
        claim.refused.sort();
        claim
    }

    /// The topics to scan, as `OUTBOX_TOPICS` reads (empty: every topic); `None` when this
    /// leader may publish nothing now.
    pub(crate) fn scan_topics(&self) -> Option<Vec<String>> {
        if self.led.is_empty() {
            None
        } else if self.led.iter().any(|t| t == "*") {
            Some(Vec::new())
        } else {
            Some(self.led.clone())
        }
    }

    /// Whether `self` leads a topic that `before` did not.
    pub(crate) fn gained_on(&self, before: &[String]) -> bool {
        self.led.iter().any(|t| !before.contains(t))
    }

    /// Reports that no claim succeeded this term yet (it waited too long for another poller's
    /// claim): the `topics` readiness part is degraded, since nothing is published until one
    /// does.
    pub(crate) fn report_unclaimed(health: &Health, lease: &str) {
        health.degraded(
            TOPICS,
            format!(
                "this poller ({lease}) leads but could not claim its topics yet (another \
                 poller's claim held the topic leases longer than the lock timeout); publishing \
                 nothing until a claim succeeds"
            ),
        );
    }

    /// Reports the claim: the gauge, the `topics` readiness part, and a warning per refused topic
    /// when `log` (a claim that differs from the last one reported).
    pub(crate) fn report(&self, health: &Health, lease: &str, log: bool) {
        metrics::gauge!(crate::measures::TOPICS_REFUSED).set(self.refused.len() as f64);
        if self.refused.is_empty() {
            health.ok(TOPICS);
            return;
        }
        let refused: Vec<String> =
            self.refused.iter().map(|(topic, other)| format!("{topic} (led by {other})")).collect();
        health.degraded(
            TOPICS,
            format!(
                "this poller ({lease}) does not publish {}: another poller with a different \
                 OUTBOX_TOPICS leads them; give the pollers of one outbox equal or disjoint \
                 OUTBOX_TOPICS",
                refused.join(", ")
            ),
        );
        if log {
            for (topic, other) in &self.refused {
                tracing::warn!(
                    topic = %topic,
                    led_by = %other,
                    lease = %lease,
                    "topic is led by another poller whose OUTBOX_TOPICS overlap this poller's; not publishing it here"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(led: &[&str], refused: &[(&str, &str)]) -> Claim {
        Claim {
            led: led.iter().map(|t| t.to_string()).collect(),
            refused: refused.iter().map(|(t, o)| (t.to_string(), o.to_string())).collect(),
        }
    }

    #[test]
    fn scans_the_claimed_topics_every_topic_for_a_wildcard_and_nothing_without_a_claim() {
        assert_eq!(claim(&["a", "c"], &[("b", "x")]).scan_topics(), Some(vec!["a".into(), "c".into()]));
        assert_eq!(claim(&["*"], &[]).scan_topics(), Some(vec![]));
        assert_eq!(claim(&[], &[("b", "x")]).scan_topics(), None);
    }

    #[test]
    fn a_claim_gains_when_it_leads_a_topic_it_did_not() {
        let before = vec!["a".to_string()];
        assert!(claim(&["a", "b"], &[]).gained_on(&before));
        assert!(!claim(&["a"], &[("b", "x")]).gained_on(&before));
        assert!(claim(&["a"], &[]).gained_on(&[]));
    }

    #[test]
    fn refused_topics_degrade_readiness_naming_the_other_lease() {
        let health = Health::new(&[TOPICS]);
        claim(&["c"], &[("b", "outbox-poller:a,b")]).report(&health, "outbox-poller:b,c", false);
        let text = health.describe();
        assert!(!health.is_ready());
        assert!(text.contains("b (led by outbox-poller:a,b)"), "{text}");
        claim(&["b", "c"], &[]).report(&health, "outbox-poller:b,c", false);
        assert!(health.is_ready(), "ready again once every topic is led here");
    }

    #[test]
    fn a_leader_whose_claim_timed_out_is_not_ready_until_a_claim_succeeds() {
        let health = Health::new(&[TOPICS]);
        Claim::report_unclaimed(&health, "outbox-poller:a");
        let text = health.describe();
        assert!(!health.is_ready());
        assert!(text.contains("could not claim its topics"), "{text}");
        claim(&["a"], &[]).report(&health, "outbox-poller:a", false);
        assert!(health.is_ready(), "ready once a claim succeeded");
    }
}
