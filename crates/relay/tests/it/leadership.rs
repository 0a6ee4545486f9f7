//! Poller leadership is a lease only the poller role may change (migration V5): no application
//! or other role can take or block it by any SQL it may run, a leader frozen with its session
//! open is replaced once its lease expires, and a lease nobody can hold is reported (`/readyz`,
//! metrics) within the failover time.
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::{
    failover::leader_of,
    harness::*,
    health::{await_metric, with_endpoint},
    roles::{as_user, refused, Users},
};

/// Pollers with an endpoint each, a short lease and a fast retry; returns them and their addresses.
fn pollers(test: &str, origin: &TestDb, topic: &str, n: usize, lease_ms: u64) -> (Vec<Service>, Vec<String>) {
    let mut services = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..n {
        let mut env = poller_env(origin, topic);
        env.insert("OUTBOX_LEADER_RETRY_MS".into(), "250".into());
        env.insert("OUTBOX_LEADER_LEASE_MS".into(), lease_ms.to_string());
        addrs.push(with_endpoint(&mut env));
        services.push(spawn(test, &format!("poller-{i}"), POLLER, &env));
    }
    (services, addrs)
}

async fn migrated(origin: &TestDb) {
    let url = relay_config::DatabaseUrl::parse(origin.url.clone().into()).expect("url");
    relay_db::prepare_schema(&url, relay_db::Schema::Outbox, true).await.expect("schema");
}

async fn await_published(db: &Client, n: i64) {
    let sql = "SELECT count(*) FROM relay.outbox WHERE published_at IS NOT NULL";
    eventually(Duration::from_secs(60), &format!("{n} rows published"), || async {
        (count(db, sql, &[]).await == n).then_some(())
    })
    .await;
}

/// Everything a role without the poller's grants might try against leadership. The advisory
/// locks succeed (any role may take them) and are held: they must not matter.
async fn try_to_take_leadership(client: &Client, who: &str, lease: &str) {
    client
        .query_one("SELECT pg_try_advisory_lock(1380273218, hashtext($1))", &[&lease])
        .await
        .expect("the old leader lock is open to any role");
    client
        .batch_execute(
            "SELECT pg_try_advisory_lock(1380273218, g) FROM generate_series(1, 100) AS g;
             SELECT pg_try_advisory_lock(1380273219, 1);",
        )
        .await
        .expect("leader-class and migration advisory locks");
    for sql in [
        "SELECT * FROM relay.outbox_leader FOR UPDATE",
        "SELECT * FROM relay.outbox_leader FOR KEY SHARE",
        "UPDATE relay.outbox_leader SET term = term + 1, holder_pid = pg_backend_pid(), renewed_at = now()",
        "INSERT INTO relay.outbox_leader (name, holder_pid, renewed_at) VALUES ('outbox-poller:', pg_backend_pid(), now())",
        "DELETE FROM relay.outbox_leader",
        "TRUNCATE relay.outbox_leader",
    ] {
        refused(client, who, sql).await;
    }
    let err = client
        .batch_execute("BEGIN; LOCK TABLE relay.outbox_leader IN ROW SHARE MODE")
        .await
        .expect_err("LOCK TABLE");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{who}: {err}");
    client.batch_execute("ROLLBACK").await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_application_role_can_take_or_block_leadership() {
    let test = "leadership_hostile_roles";
    let origin = TestDb::new().await;
    let topic = topic(1).await;
    migrated(&origin).await;
    let (_users, names) = Users::create(&[
        ("app", Some("relay_outbox_writer")),
        ("app2", Some("relay_outbox_writer")),
        ("nogrants", None),
        ("operator", Some("relay_operator")),
        ("reconciler", Some("relay_reconciler")),
    ])
    .await;
    let lease = format!("outbox-poller:{topic}");
    let mut hostile = Vec::new();
    for name in &names {
        let client = connect(&as_user(&origin.url, name)).await;
        try_to_take_leadership(&client, name, &lease).await;
        hostile.push(client);
    }
    // The writers also keep a transaction open after enqueueing, on sessions of their own, with
    // keys whose lock slots (V5) differ from each other's and from those enqueued below.
    let mut held_keys: Vec<String> = (0..8).map(|i| format!("key-{i}")).collect();
    for prefix in ["held-open-1", "held-open-2"] {
        let taken: Vec<&str> = held_keys.iter().map(String::as_str).collect();
        held_keys.push(crate::ordering::key_apart(&origin, &topic, prefix, &taken).await);
    }
    let held_keys = held_keys.split_off(8);
    let mut open_transactions = Vec::new();
    for (name, key) in names[..2].iter().zip(&held_keys) {
        let writer = connect(&as_user(&origin.url, name)).await;
        writer
            .batch_execute(&format!("BEGIN; SELECT relay.enqueue('{topic}', '{key}', 'x'::bytea)"))
            .await
            .expect("enqueue in an open transaction");
        open_transactions.push(writer);
    }

    // With all of that held, two pollers start: exactly one leads, and it publishes.
    let (_pollers, addrs) = pollers(test, &origin, &topic, 2, 2_000);
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    leader_of(&addr_refs).await;
    let app = TestDb::from_url(&as_user(&origin.url, &names[0]));
    enqueue_many(&app, &topic, 40, 8, 10).await;
    let db = origin.client().await;
    await_published(&db, 40).await;
    let holder =
        "SELECT a.usename FROM relay.outbox_leader AS l JOIN pg_stat_activity AS a ON a.pid = l.holder_pid";
    let user: String = db.query_one(holder, &[]).await.expect("a lease holder").get(0);
    assert_eq!(user, "postgres", "the lease is held by a poller's session");
    for addr in &addrs {
        await_metric(addr, "relay_outbox_leader_present", &[], 1.0).await;
        let (status, body) = http_get(addr, "/readyz").await.expect("readyz");
        assert_eq!(status, 200, "{addr}: {body}");
    }
    // The hostile sessions still hold their locks and could change nothing.
    for (client, name) in hostile.iter().zip(&names) {
        try_to_take_leadership(client, name, &lease).await;
    }
    let leaders =
        count(&db, "SELECT count(*) FROM relay.outbox_leader WHERE holder_pid IS NOT NULL", &[]).await;
    assert_eq!(leaders, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_nobody_can_take_is_reported_not_ready_within_the_failover_time() {
    let test = "leadership_blocked";
    let origin = TestDb::new().await;
    let topic = topic(1).await;
    migrated(&origin).await;
    let (lease, retry) = (Duration::from_millis(2_000), Duration::from_millis(250));
    let (_pollers, addrs) = pollers(test, &origin, &topic, 2, lease.as_millis() as u64);
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    leader_of(&addr_refs).await;
    enqueue_many(&origin, &topic, 20, 4, 10).await;
    let db = origin.client().await;
    await_published(&db, 20).await;

    // A superuser session locks the lease row: no poller can renew or take it.
    let mut blocker = origin.client().await;
    let tx = blocker.transaction().await.expect("begin");
    tx.execute("SELECT * FROM relay.outbox_leader FOR UPDATE", &[]).await.expect("lock the lease row");
    let blocked = Instant::now();
    // Reported by every poller at most one lease (until the last renewal expires) plus the
    // failover time after the block, and a second of reporting and scraping.
    let failover = lease + retry;
    let bound = lease + failover + Duration::from_secs(1);
    for addr in &addrs {
        eventually(
            bound.saturating_sub(blocked.elapsed()) + Duration::from_millis(100),
            "not ready: no leader",
            || async {
                let (status, body) = http_get(addr, "/readyz").await?;
                let text = scrape(addr).await?;
                let absent = sample(&text, "relay_outbox_leader_absent_seconds", &[])?;
                let present = sample(&text, "relay_outbox_leader_present", &[])?;
                (status == 503
                    && body.contains("leader: degraded")
                    && present == 0.0
                    && absent > failover.as_secs_f64())
                .then_some(())
            },
        )
        .await;
    }
    println!(
        "no leader reported by both pollers {} ms after the lease row was locked",
        blocked.elapsed().as_millis()
    );
    for addr in &addrs {
        await_metric(addr, "relay_outbox_leader", &[], 0.0).await;
    }
    enqueue_many(&origin, &topic, 10, 4, 10).await;

    // Unblocked: one poller leads again, both are ready, and what was written meanwhile goes out.
    tx.rollback().await.expect("release the lease row");
    leader_of(&addr_refs).await;
    for addr in &addrs {
        await_metric(addr, "relay_outbox_leader_present", &[], 1.0).await;
        crate::health::await_readiness(addr, 200, "after the lease row is released").await;
    }
    await_published(&db, 30).await;
    let holders =
        count(&db, "SELECT count(*) FROM relay.outbox_leader WHERE holder_pid IS NOT NULL", &[]).await;
    assert_eq!(holders, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_leader_is_replaced_when_its_lease_expires_and_stands_down_when_it_wakes() {
    let test = "leadership_frozen";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    migrated(&origin).await;
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_env(&inbox, "ledger", &topic));
    let lease = Duration::from_millis(2_000);
    let (pollers, addrs) = pollers(test, &origin, &topic, 2, lease.as_millis() as u64);
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let leader = leader_of(&addr_refs).await;
    let writer = trickle(&origin, &topic, 100);
    await_inbox(&inbox, "ledger", &topic, 200, Duration::from_secs(60)).await;

    // SIGSTOP: the leader's sessions stay open and its marker lock stays held; only the lease
    // running out lets the standby lead.
    let db = origin.client().await;
    let frozen_term = term(&db).await;
    let pid = pollers[leader].child.id().expect("running").to_string();
    let frozen = Instant::now();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    await_metric(&addrs[1 - leader], "relay_outbox_leader", &[], 1.0).await;
    println!(
        "standby led {} ms after the leader froze (lease {} ms)",
        frozen.elapsed().as_millis(),
        lease.as_millis()
    );
    assert!(term(&db).await > frozen_term, "a new term");

    // Woken, the old leader finds its term superseded and stands down: one leader remains.
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());
    await_metric(&addrs[leader], "relay_outbox_leader", &[], 0.0).await;
    assert_eq!(leader_of(&addr_refs).await, 1 - leader);
    writer.await.expect("writer");
    await_inbox(&inbox, "ledger", &topic, 2000, Duration::from_secs(120)).await;
    assert_eq!(crate::verify::inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 2000);
    let old_log = pollers[leader].log_text();
    assert!(
        ["took over lease", "was not renewed", "this poller no longer leads"]
            .iter()
            .any(|why| old_log.contains(why)),
        "the old leader did not say why it stood down:\n{old_log}"
    );
}

async fn term(db: &Client) -> i64 {
    db.query_one("SELECT term FROM relay.outbox_leader", &[]).await.expect("term").get(0)
}
