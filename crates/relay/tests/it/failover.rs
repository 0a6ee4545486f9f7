//! High availability and group membership: a standby poller takes over from a killed or cut-off
//! leader within seconds, and consumers joining, leaving or dying lose and double nothing.
use std::time::{Duration, Instant};

use crate::{
    harness::*,
    health::{await_metric, with_endpoint},
    verify::inbox_equals_outbox,
};

/// The backend pid of the leader's lease session (see migration V5).
pub const LEASE_HOLDER: &str = "SELECT holder_pid FROM relay.outbox_leader WHERE holder_pid IS NOT NULL";

/// Which of the pollers at `addrs` reports itself leader, once exactly one does.
pub async fn leader_of(addrs: &[&str]) -> usize {
    eventually(Duration::from_secs(30), "exactly one leader", || async {
        let mut leaders = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            if sample(&scrape(addr).await?, "relay_outbox_leader", &[])? == 1.0 {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

/// Two replicas of one poller, each with its endpoint; standbys retry every 250 ms.
pub fn two_pollers(test: &str, origin: &TestDb, topic: &str) -> (Vec<Service>, Vec<String>) {
    let mut pollers = Vec::new();
    let mut addrs = Vec::new();
    for name in ["poller-a", "poller-b"] {
        let mut env = poller_env(origin, topic);
        env.insert("OUTBOX_LEADER_RETRY_MS".into(), "250".into());
        addrs.push(with_endpoint(&mut env));
        pollers.push(spawn(test, name, POLLER, &env));
    }
    (pollers, addrs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_poller_takes_over_within_seconds_when_the_leader_is_killed() {
    let test = "failover_kill";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_env(&inbox, "ledger", &topic));
    let (mut pollers, addrs) = two_pollers(test, &origin, &topic);
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let leader = leader_of(&addr_refs).await;
    let standby = 1 - leader;
    let writer = trickle(&origin, &topic, 100);
    await_inbox(&inbox, "ledger", &topic, 200, Duration::from_secs(60)).await;

    let db = origin.client().await;
    let killed_at: std::time::SystemTime = db.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let killed = Instant::now();
    pollers[leader].kill().await;
    await_metric(&addrs[standby], "relay_outbox_leader", &[], 1.0).await;
    let took_over = killed.elapsed();
    let first_publish = eventually(Duration::from_secs(30), "a row published after the kill", || async {
        let row = db
            .query_one("SELECT min(published_at) FROM relay.outbox WHERE published_at > $1", &[&killed_at])
            .await
            .ok()?;
        row.get::<_, Option<std::time::SystemTime>>(0)
    })
    .await;
    let publishing_after = first_publish.duration_since(killed_at).unwrap_or_default();
    println!(
        "poller failover: standby led {} ms after SIGKILL of the leader, published {} ms after it \
         (OUTBOX_LEADER_RETRY_MS=250)",
        took_over.as_millis(),
        publishing_after.as_millis()
    );
    assert!(took_over < Duration::from_secs(10), "takeover took {took_over:?}");

    writer.await.expect("writer");
    await_inbox(&inbox, "ledger", &topic, 2000, Duration::from_secs(120)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_database_session_breaks_stops_publishing_and_one_leader_remains() {
    let test = "failover_session";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_env(&inbox, "ledger", &topic));
    let (pollers, addrs) = two_pollers(test, &origin, &topic);
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let first = leader_of(&addr_refs).await;
    let writer = trickle(&origin, &topic, 100);
    await_inbox(&inbox, "ledger", &topic, 200, Duration::from_secs(60)).await;

    // The server ends the leader's lease session (as when its connection breaks).
    let db = origin.client().await;
    let old_pid: i32 = db.query_one(LEASE_HOLDER, &[]).await.expect("a leader holds the lease").get(0);
    db.execute("SELECT pg_terminate_backend($1)", &[&old_pid]).await.expect("terminate leader session");

    // Leadership moves to a new session, in a new term, and exactly one process leads.
    eventually(Duration::from_secs(30), "a new leader session", || async {
        let row = db.query_opt(LEASE_HOLDER, &[]).await.ok()??;
        (row.get::<_, i32>(0) != old_pid).then_some(())
    })
    .await;
    leader_of(&addr_refs).await;
    // The standby may take the lease before the old leader's next renewal (every 250 ms here)
    // finds its session gone; it must notice within a few renewals, not at once.
    let old_log = &pollers[first].log;
    eventually(
        Duration::from_secs(10),
        &format!("the old leader to notice ({})", old_log.display()),
        || async { pollers[first].log_text().contains("outbox poller interrupted").then_some(()) },
    )
    .await;

    writer.await.expect("writer");
    await_inbox(&inbox, "ledger", &topic, 2000, Duration::from_secs(120)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_joining_leaving_and_killed_in_one_group_lose_and_double_nothing() {
    let test = "rebalance";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(6).await;
    let _poller = spawn(test, "poller", POLLER, &poller_env(&origin, &topic));
    let env = consumer_env(&inbox, "ledger", &topic);
    let mut first = spawn(test, "consumer-1", CONSUMER, &env);
    await_table(&origin, "relay.outbox").await;
    let writer = trickle(&origin, &topic, 250);
    await_inbox(&inbox, "ledger", &topic, 300, Duration::from_secs(60)).await;

    let mut second = spawn(test, "consumer-2", CONSUMER, &env);
    await_inbox(&inbox, "ledger", &topic, 1500, Duration::from_secs(60)).await;
    let _third = spawn(test, "consumer-3", CONSUMER, &env);
    await_inbox(&inbox, "ledger", &topic, 2500, Duration::from_secs(60)).await;
    first.kill().await;
    await_inbox(&inbox, "ledger", &topic, 3500, Duration::from_secs(60)).await;
    assert!(second.terminate(Duration::from_secs(30)).await.success());
    let _fourth = spawn(test, "consumer-4", CONSUMER, &env);

    writer.await.expect("writer");
    await_inbox(&inbox, "ledger", &topic, 5000, Duration::from_secs(120)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 5000);
}
