//! The fault injector: one fault at a time, of six kinds, in a seeded shuffled order.
//!
//! - `poller-kill`: SIGKILL the poller that holds the lease (found through `relay.outbox_leader`
//!   and `pg_stat_activity`: each poller names itself in its `application_name`), time how long
//!   until the other poller holds it (the failover time), then start the killed one again;
//! - `consumer-kill`: SIGKILL one inbox-consumer (round robin) and start it again;
//! - `broker-restart`: Tansu stopped by SIGKILL or SIGTERM and started on its durable storage;
//! - `postgres-restart`: the private PostgreSQL restarted, fast or immediate shutdown;
//! - `connection-cut`: every connection through the PostgreSQL or the Kafka proxy closed, and
//!   new ones refused for a moment (the two proxies alternately);
//! - `connection-slow`: 200 ms added to every chunk through one proxy for 1-2 s (alternately).
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

use crate::{broker::Broker, postgres::PgCluster, proxy::ProxyControl, services::Services, ChaosError};

/// How long a poller kill waits for a leader before giving up on measuring the failover.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    PollerKill,
    ConsumerKill,
    BrokerRestart,
    PostgresRestart,
    ConnectionCut,
    ConnectionSlow,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::PollerKill,
        FaultKind::ConsumerKill,
        FaultKind::BrokerRestart,
        FaultKind::PostgresRestart,
        FaultKind::ConnectionCut,
        FaultKind::ConnectionSlow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::PollerKill => "poller-kill",
            FaultKind::ConsumerKill => "consumer-kill",
            FaultKind::BrokerRestart => "broker-restart",
            FaultKind::PostgresRestart => "postgres-restart",
            FaultKind::ConnectionCut => "connection-cut",
            FaultKind::ConnectionSlow => "connection-slow",
        }
    }
}

/// `per_kind` faults of every kind, shuffled by `seed`.
pub fn schedule(per_kind: usize, seed: u64) -> Vec<FaultKind> {
    let mut faults: Vec<FaultKind> =
        FaultKind::ALL.iter().flat_map(|kind| std::iter::repeat_n(*kind, per_kind)).collect();
    faults.shuffle(&mut StdRng::seed_from_u64(seed));
    faults
}

/// One injected fault.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Injected {
    pub kind: FaultKind,
    /// What was hit: a service, a proxy, the broker or the database, and how.
    pub target: String,
    /// Milliseconds from the start of the run.
    pub at_ms: u64,
    /// How long the fault lasted (until the thing hit was back).
    pub took_ms: u64,
    /// Poller kills: from the kill until the other poller held the leader lock.
    pub failover_ms: Option<f64>,
    /// From the end of the fault until every message committed by then was in every inbox
    /// (see [`crate::progress`]); `None` if that did not happen within the recovery timeout.
    pub recovery_ms: Option<f64>,
}

/// What the faults hit.
#[derive(Debug)]
pub struct Targets {
    pub postgres: PgCluster,
    pub broker: Broker,
    pub pg_proxy: ProxyControl,
    pub kafka_proxy: ProxyControl,
    pub services: Services,
    /// Poller service names; each is also the poller's `application_name`.
    pub pollers: Vec<String>,
    pub consumers: Vec<String>,
    /// The origin database, directly (not through the proxy), to find the leader.
    pub admin_url: String,
}

/// Fault parameters.
#[derive(Debug, Clone)]
pub struct FaultSettings {
    /// Between a killed consumer and its restart.
    pub restart_delay: Duration,
    /// Connection cuts last a random time in this range (ms).
    pub cut_ms: (u64, u64),
    pub slow_latency: Duration,
    /// Slow periods last a random time in this range (ms).
    pub slow_ms: (u64, u64),
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            // Past the consumers' session timeout (6 s), so the group has dropped the killed
            // member before it comes back. Tansu, restarted sooner, hands the dead member's
            // partitions to it in the next assignment and may never take them back.
            restart_delay: Duration::from_millis(7_000),
            cut_ms: (500, 1500),
            slow_latency: Duration::from_millis(200),
            slow_ms: (1000, 2000),
        }
    }
}

/// Injects faults one at a time.
#[derive(Debug)]
pub struct Injector {
    settings: FaultSettings,
    rng: StdRng,
    started: Instant,
    /// Per kind, how many were injected: alternation (proxies, consumers) follows it.
    counts: std::collections::BTreeMap<FaultKind, u64>,
}

impl Injector {
    pub fn new(settings: FaultSettings, seed: u64) -> Self {
        Self {
            settings,
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            started: Instant::now(),
            counts: Default::default(),
        }
    }

    /// Injects one fault of `kind` and returns once what it hit is back.
    pub async fn inject(&mut self, targets: &mut Targets, kind: FaultKind) -> Result<Injected, ChaosError> {
        let n = *self.counts.entry(kind).and_modify(|c| *c += 1).or_insert(1) - 1;
        let at = Instant::now();
        let mut failover_ms = None;
        let target = match kind {
            FaultKind::PollerKill => {
                let (killed, failover) = kill_leader(targets).await?;
                failover_ms = failover.map(|d| d.as_secs_f64() * 1000.0);
                killed
            }
            FaultKind::ConsumerKill => {
                let name = targets.consumers[n as usize % targets.consumers.len()].clone();
                targets.services.kill(&name).await?;
                tokio::time::sleep(self.settings.restart_delay).await;
                targets.services.start(&name)?;
                name
            }
            FaultKind::BrokerRestart => {
                let signal = targets.broker.restart().await?;
                format!("broker ({signal:?})").to_lowercase()
            }
            FaultKind::PostgresRestart => {
                let mode = targets.postgres.restart().await?;
                format!("postgres ({mode:?})").to_lowercase()
            }
            FaultKind::ConnectionCut => {
                let proxy = if n.is_multiple_of(2) { &targets.pg_proxy } else { &targets.kafka_proxy };
                let ms = self.rng.random_range(self.settings.cut_ms.0..=self.settings.cut_ms.1);
                proxy.cut(Duration::from_millis(ms));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("{} proxy, {ms} ms", proxy.name())
            }
            FaultKind::ConnectionSlow => {
                let proxy = if n.is_multiple_of(2) { &targets.pg_proxy } else { &targets.kafka_proxy };
                let ms = self.rng.random_range(self.settings.slow_ms.0..=self.settings.slow_ms.1);
                proxy.slow(self.settings.slow_latency, Duration::from_millis(ms));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("{} proxy, +{} ms for {ms} ms", proxy.name(), self.settings.slow_latency.as_millis())
            }
        };
        let injected = Injected {
            kind,
            target,
            at_ms: at.duration_since(self.started).as_millis() as u64,
            took_ms: at.elapsed().as_millis() as u64,
            failover_ms,
            recovery_ms: None,
        };
        tracing::info!(
            fault = kind.name(),
            target = %injected.target,
            took_ms = injected.took_ms,
            failover_ms = ?injected.failover_ms,
            "fault injected"
        );
        Ok(injected)
    }
}

/// SIGKILLs the leading poller, waits for the other one to lead, restarts the killed one.
/// Returns the killed poller and the failover time (`None` if no failover came in time).
async fn kill_leader(targets: &mut Targets) -> Result<(String, Option<Duration>), ChaosError> {
    let mut admin = LeaderProbe { url: targets.admin_url.clone(), client: None };
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    let leader = loop {
        if let Some(leader) = admin.leader().await.filter(|l| targets.pollers.contains(l)) {
            break leader;
        }
        if Instant::now() > deadline {
            return Err(ChaosError::Timeout {
                what: "a poller to hold the leader lock".into(),
                secs: FAILOVER_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    targets.services.kill(&leader).await?;
    let killed_at = Instant::now();
    let deadline = killed_at + FAILOVER_TIMEOUT;
    let failover = loop {
        if admin.leader().await.is_some_and(|l| l != leader && targets.pollers.contains(&l)) {
            break Some(killed_at.elapsed());
        }
        if Instant::now() > deadline {
            tracing::error!(killed = %leader, "no other poller took the leader lock within 60 s");
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    targets.services.start(&leader)?;
    Ok((leader, failover))
}

/// Asks PostgreSQL which session holds the leader lock; reconnects as needed.
struct LeaderProbe {
    url: String,
    client: Option<tokio_postgres::Client>,
}

impl LeaderProbe {
    async fn leader(&mut self) -> Option<String> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = crate::connect(&self.url).await.ok();
        }
        let client = self.client.as_ref()?;
        match client.query_opt(include_str!("sql/leader.sql"), &[]).await {
            Ok(row) => row.map(|r| r.get(0)),
            Err(_) => {
                self.client = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_holds_each_kind_per_kind_times_in_a_seeded_order() {
        let a = schedule(5, 7);
        assert_eq!(a.len(), 30);
        for kind in FaultKind::ALL {
            assert_eq!(a.iter().filter(|k| **k == kind).count(), 5, "{kind:?}");
        }
        assert_eq!(a, schedule(5, 7), "the same seed gives the same order");
        assert_ne!(a, schedule(5, 8), "another seed gives another order");
    }
}
