//! Stalls the product must see and heal by itself: a consumer restarted within a second of
//! being killed (what a Kubernetes restart does) must not leave its inbox stalled, whatever the
//! broker's group coordinator makes of the quick rejoin.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    harness::*,
    health::{await_readiness, with_endpoint},
    verify::inbox_equals_outbox,
};

/// Kills a consumer and starts it again within a second, `restarts` times, while messages flow
/// and `steady` other members of its group keep running; then every message must be stored,
/// once and in per-key order, within a minute of the last restart. Returns how long that took.
/// (Static membership, `INBOX_GROUP_INSTANCE_ID`, is not run here: Tansu 0.6 never completes a
/// static member's first join; see README, Stalls.)
async fn restart_quickly_while_flowing(test: &str, steady: usize, restarts: usize) -> Duration {
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(3).await;
    let _poller = spawn(test, "poller", POLLER, &poller_env(&origin, &topic));
    let env: BTreeMap<String, String> = consumer_env(&inbox, "ledger", &topic);
    let mut steady_addrs = Vec::new();
    let _steady: Vec<Service> = (0..steady)
        .map(|_| {
            let mut env = env.clone();
            steady_addrs.push(with_endpoint(&mut env));
            spawn(test, "steady", CONSUMER, &env)
        })
        .collect();
    let mut restarted_env = env.clone();
    let addr = with_endpoint(&mut restarted_env);
    let env = restarted_env;
    let mut consumer = spawn(test, "consumer", CONSUMER, &env);
    await_table(&origin, "relay.outbox").await;
    await_table(&inbox, "relay.inbox").await;

    // 4,000 messages over about 15 s, so the first restarts land while messages flow.
    let writer = trickle(&origin, &topic, 200);
    let db = inbox.client().await;
    eventually(Duration::from_secs(60), "the first messages stored", || async {
        (count(&db, "SELECT count(*) FROM relay.inbox", &[]).await > 0).then_some(())
    })
    .await;
    for i in 0..restarts {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        consumer.kill().await;
        // Within a second, as a container restart: 300 to 900 ms.
        tokio::time::sleep(Duration::from_millis(300 + (i as u64 * 67) % 600)).await;
        consumer = spawn(test, "consumer", CONSUMER, &env);
    }
    let last_restart = Instant::now();
    // On a loaded machine the writer may end after the last restart: the minute starts then.
    writer.await.expect("writer");
    let written = last_restart.elapsed();
    let total = 4_000;
    await_inbox(&inbox, "ledger", &topic, total, Duration::from_secs(60)).await;
    let took = last_restart.elapsed();
    println!("writer done {} ms after the last restart", written.as_millis());
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, total as usize);
    // Everything stored, and every member says so: none is left reporting a stall.
    let mut rejoins = 0.0;
    for addr in steady_addrs.iter().chain([&addr]) {
        await_readiness(addr, 200, "every member ready once everything is stored").await;
        let text = scrape(addr).await.expect("metrics");
        rejoins += sample(&text, "relay_inbox_rejoins_total", &[]).expect("rejoins exported");
    }
    println!("fresh clients made by the watchdogs still running: {rejoins}");
    drop(consumer);
    took
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_killed_and_restarted_within_a_second_ten_times_stores_everything_within_a_minute() {
    let took = restart_quickly_while_flowing("liveness_quick_restarts", 0, 10).await;
    println!("every message stored {} ms after the last restart", took.as_millis());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_members_killed_and_restarted_within_a_second_ten_times_stores_everything_within_a_minute()
{
    let took = restart_quickly_while_flowing("liveness_quick_restarts_beside_a_member", 1, 10).await;
    println!(
        "with a steady member beside it: every message stored {} ms after the last restart",
        took.as_millis()
    );
}
