//! Leadership: a lease row in `relay.outbox_leader` that only `relay_outbox_poller` may change,
//! instead of an advisory lock any database role could take and hold (migration V5 explains the
//! rules). A [`LeaseSession`] is one poller's own database session for it: it watches the lease
//! as a standby, takes it over when it is free, expired or its holder's session is gone, and
//! renews it while leading. [`Presence`] is what every poller, leader or standby, knows about
//! whether some poller leads, for `/readyz` and the metrics.
use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use relay_health::Health;
use tokio_postgres::{error::SqlState, Client, Statement};

use crate::{topics::Claim, PollerConfig, PollerError, LEADER_LOCK_CLASS};

/// The readiness part for "some poller leads this outbox".
pub(crate) const LEADER: &str = "leader";

/// How often the leader checks that its lease session is still open.
const SESSION_CHECK: Duration = Duration::from_millis(200);

/// One poller's lease session.
pub(crate) struct LeaseSession {
    client: Client,
    name: String,
    lease: Duration,
    renew_every: Duration,
    holder: String,
    /// The configured topics (empty: every topic), claimed as topic leases once leading.
    topics: Vec<String>,
    state: Statement,
    take: Statement,
    renew: Statement,
}

impl LeaseSession {
    /// Connects, bounds how long any lease statement may wait (a lock held on the lease row must
    /// not hang the poller), and creates the lease row if it is missing.
    pub(crate) async fn open(config: &PollerConfig) -> Result<Self, PollerError> {
        let client = relay_db::connect(&config.database_url).await?;
        let renew_every = config.leader_renew_interval();
        let wait = renew_every.max(Duration::from_millis(500)).as_millis();
        let statement = (config.leader_lease / 2).max(Duration::from_secs(1)).as_millis();
        client
            .batch_execute(&format!("SET lock_timeout = '{wait}ms'; SET statement_timeout = '{statement}ms'"))
            .await?;
        let name = config.leader_lock_object();
        client.execute(include_str!("lease_init.sql"), &[&name]).await?;
        Ok(Self {
            state: client.prepare(include_str!("lease_state.sql")).await?,
            take: client.prepare(include_str!("lease_take.sql")).await?,
            renew: client.prepare(include_str!("lease_renew.sql")).await?,
            client,
            name,
            lease: config.leader_lease,
            renew_every,
            holder: format!("outbox-poller {} pid {}", config.source, std::process::id()),
            topics: config.topics.clone(),
        })
    }

    /// The lease row's name: `outbox-poller:<topics>`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether some poller (this one included) validly leads now.
    pub(crate) async fn leader_valid(&self) -> Result<bool, PollerError> {
        let row = self.client.query_opt(&self.state, &[&self.name, &self.lease.as_secs_f64()]).await?;
        Ok(row.is_some_and(|r| r.get::<_, bool>("valid")))
    }

    /// Takes the lease as a new term when nobody validly holds it; `None` otherwise, also when
    /// the row is locked by someone else for longer than the session's lock timeout. Only a
    /// leader keeps its marker lock: a poller that did not get the lease releases it at once.
    pub(crate) async fn try_take(&self) -> Result<Option<i64>, PollerError> {
        let marker = self.take_marker().await?;
        let taken = self
            .client
            .query_opt(&self.take, &[&self.name, &self.lease.as_secs_f64(), &self.holder, &marker])
            .await;
        let term = match taken {
            Ok(row) => row.map(|r| r.get::<_, i64>(0)),
            Err(e) if waited_too_long(&e) => {
                tracing::warn!(lease = %self.name, error = %e, "the lease row is locked by another session; cannot take it now");
                None
            }
            Err(e) => return Err(e.into()),
        };
        if term.is_none() {
            self.client.execute("SELECT pg_advisory_unlock($1, $2)", &[&LEADER_LOCK_CLASS, &marker]).await?;
        }
        Ok(term)
    }

    /// The marker lock: a session advisory lock on a random object of the leader class, whose
    /// holder the lease row records. It lives exactly as long as this session (a pooler's reset
    /// releases it too), which is how other pollers tell a dead holder from a live one.
    async fn take_marker(&self) -> Result<i32, PollerError> {
        loop {
            let marker = rand_object();
            let row = self
                .client
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LEADER_LOCK_CLASS, &marker])
                .await?;
            if row.get::<_, bool>(0) {
                return Ok(marker);
            }
        }
    }

    /// Claims this leader's topics (`topics`): the topics it may publish now and those another
    /// topic selection's leader holds. `None` when the claim had to wait too long for another
    /// poller's claim (it is tried again at the next renewal).
    pub(crate) async fn claim(&self) -> Result<Option<Claim>, PollerError> {
        let claimed = self
            .client
            .query(include_str!("claim_topics.sql"), &[&self.name, &self.lease.as_secs_f64(), &self.topics])
            .await;
        match claimed {
            Ok(rows) => Ok(Some(Claim::from_rows(&rows))),
            Err(e) if waited_too_long(&e) => {
                tracing::warn!(lease = %self.name, error = %e, "topic leases are locked by another poller's claim; claiming again later");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Renews term `term` while it lasts. Resolves with the reason leadership ended: the session
    /// closed, another poller took the lease over, or no renewal succeeded for half the lease
    /// time (after which another poller may soon take over; stepping down first keeps two from
    /// publishing at once). With `led` (the topics claimed, when some were refused), it claims
    /// again after each renewal and resolves with [`PollerError::TopicsFreed`] once it leads a
    /// topic more.
    pub(crate) async fn keep(&self, term: i64, presence: &Presence, led: Option<&[String]>) -> PollerError {
        let mut renewed = Instant::now();
        let mut next_renewal = Instant::now() + self.renew_every;
        loop {
            tokio::time::sleep(SESSION_CHECK.min(self.renew_every)).await;
            if self.client.is_closed() {
                return PollerError::LeadershipLost;
            }
            if Instant::now() < next_renewal {
                continue;
            }
            next_renewal = Instant::now() + self.renew_every;
            let attempt = Instant::now();
            match self.client.execute(&self.renew, &[&self.name, &term]).await {
                Ok(1) => {
                    renewed = attempt;
                    presence.observed(true);
                    if let Some(led) = led {
                        match self.claim().await {
                            Ok(Some(claim)) if claim.gained_on(led) => return PollerError::TopicsFreed,
                            Ok(_) => {}
                            Err(e) => return e,
                        }
                    }
                }
                Ok(_) => return PollerError::Superseded { lease: self.name.clone(), term },
                Err(e) if self.client.is_closed() => {
                    tracing::debug!(error = %e, "lease session closed");
                    return PollerError::LeadershipLost;
                }
                Err(e) => tracing::warn!(lease = %self.name, term, error = %e, "lease renewal failed"),
            }
            if renewed.elapsed() >= self.lease / 2 {
                presence.observed(false);
                return PollerError::LeaseNotRenewed {
                    lease: self.name.clone(),
                    term,
                    waited: renewed.elapsed(),
                };
            }
        }
    }

    /// Gives the lease up (best effort: it also expires by itself).
    pub(crate) async fn release(&self, term: i64) {
        if let Err(e) = self.client.execute(include_str!("lease_release.sql"), &[&self.name, &term]).await {
            tracing::debug!(error = %e, "could not release the lease; it expires by itself");
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// A lock or statement timeout: someone holds the lease row locked.
fn waited_too_long(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED)
}

/// A random positive lock object (lock objects show as unsigned `objid` in `pg_locks`).
fn rand_object() -> i32 {
    (uuid::Uuid::new_v4().as_u128() % (i32::MAX as u128)) as i32 + 1
}

/// What this poller last saw of leadership, leader or standby. Absence is measured from the last
/// observation of a valid leader; it is reported once it lasts longer than the failover time.
#[derive(Clone)]
pub(crate) struct Presence {
    state: Arc<Mutex<Seen>>,
    failover: Duration,
    lease: String,
}

struct Seen {
    last_valid: Instant,
    last_observation: Instant,
    valid_now: bool,
}

impl Presence {
    pub(crate) fn new(config: &PollerConfig) -> Self {
        let now = Instant::now();
        let seen = Seen { last_valid: now, last_observation: now, valid_now: false };
        Self {
            state: Arc::new(Mutex::new(seen)),
            failover: config.failover_time(),
            lease: config.leader_lock_object(),
        }
    }

    /// Records one observation: whether a valid leader (maybe this poller) exists now.
    pub(crate) fn observed(&self, valid: bool) {
        let mut seen = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        seen.last_observation = now;
        seen.valid_now = valid;
        if valid {
            seen.last_valid = now;
        }
    }

    /// How long no valid leader has been seen; zero while the latest recent observation saw one.
    pub(crate) fn absent_for(&self) -> Duration {
        let seen = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.valid_now && seen.last_observation.elapsed() <= self.failover {
            Duration::ZERO
        } else {
            seen.last_valid.elapsed()
        }
    }

    /// Sets `relay_outbox_leader_present`, `relay_outbox_leader_absent_seconds` and the `leader`
    /// readiness part (not ready once no leader was seen for longer than the failover time).
    pub(crate) fn report(&self, health: &Health) {
        let absent = self.absent_for();
        metrics::gauge!("relay_outbox_leader_present").set(if absent.is_zero() { 1.0 } else { 0.0 });
        metrics::gauge!("relay_outbox_leader_absent_seconds").set(absent.as_secs_f64());
        if absent > self.failover {
            health.degraded(
                LEADER,
                format!(
                    "no poller has validly held the lease {} for {:.1} s (failover time {:.1} s)",
                    self.lease,
                    absent.as_secs_f64(),
                    self.failover.as_secs_f64()
                ),
            );
        } else {
            health.ok(LEADER);
        }
    }

    /// Reports every `every` until the process ends.
    pub(crate) fn spawn_reporter(&self, health: Health, every: Duration) {
        let presence = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                presence.report(&health);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use relay_config::MapEnv;

    use super::*;

    fn presence() -> Presence {
        let env = MapEnv::new([
            ("DATABASE_URL", "postgres://postgres@localhost/origin"),
            ("KAFKA_BROKERS", "localhost:9092"),
            ("OUTBOX_SOURCE", "payments"),
        ]);
        Presence::new(&PollerConfig::from_env(&env).expect("valid"))
    }

    #[test]
    fn absence_is_zero_while_a_leader_is_seen_and_counts_from_the_last_sighting() {
        let presence = presence();
        presence.observed(true);
        assert_eq!(presence.absent_for(), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        presence.observed(false);
        let absent = presence.absent_for();
        assert!(absent >= Duration::from_millis(20), "{absent:?}");
        presence.observed(false);
        assert!(presence.absent_for() >= absent, "absence keeps counting from the last sighting");
        presence.observed(true);
        assert_eq!(presence.absent_for(), Duration::ZERO);
    }

    #[test]
    fn lock_objects_are_positive() {
        assert!((0..1000).map(|_| rand_object()).all(|o| o > 0));
    }
}
