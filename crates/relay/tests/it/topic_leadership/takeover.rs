//! The takeover rule of `relay.outbox_claim_topics` (outbox migration V7), at the SQL level with
//! the poller's own lease statements: a claim takes a topic only from a lease whose term it ended
//! (so the old term's marks are refused from then on, by V5's fence, and its renewal finds no
//! row), and it judges a lease by its holder's lease time, not by the claimer's. Checked for each
//! way a holder stops leading: its lease expired, it released the lease, its session lost its
//! marker lock.
use tokio_postgres::Client;
use uuid::Uuid;

use super::{claim, topic_leases};
use crate::{harness::*, processing_ops::migrate};

const TAKE: &str = include_str!("../../../../relay-poller/src/lease_take.sql");
const INIT: &str = include_str!("../../../../relay-poller/src/lease_init.sql");
const RENEW: &str = include_str!("../../../../relay-poller/src/lease_renew.sql");
const RELEASE: &str = include_str!("../../../../relay-poller/src/lease_release.sql");

/// A lease session as the poller opens one: marker lock `marker`, then lease `lease` taken as a
/// new term with lease time `lease_secs`.
async fn take(url: &str, lease: &str, marker: i32, lease_secs: f64) -> (Client, i64) {
    let client = connect(url).await;
    client.execute("SELECT pg_advisory_lock(1380273218, $1)", &[&marker]).await.expect("marker");
    client.execute(INIT, &[&lease]).await.expect("lease row");
    let holder = format!("test:{lease}");
    let row = client.query_opt(TAKE, &[&lease, &lease_secs, &holder, &marker]).await.expect("take");
    (client, row.expect("the lease is free").get(0))
}

/// (term, holder_pid) of lease `lease`.
async fn lease_row(owner: &Client, lease: &str) -> (i64, Option<i32>) {
    let row = owner
        .query_one("SELECT term, holder_pid FROM relay.outbox_leader WHERE name = $1", &[&lease])
        .await
        .expect("lease row");
    (row.get(0), row.get(1))
}

/// Whether a session declaring term `term` of `lease` may mark a fresh row of `topic` published.
async fn marks(origin: &TestDb, session: &Client, lease: &str, term: i64, topic: &str) -> bool {
    let row: Uuid = enqueue_one(origin, topic, "k", b"x").await;
    session
        .execute(
            "SELECT set_config('relay.leader_lease', $1, false), set_config('relay.leader_term', $2, false)",
            &[&lease, &term.to_string()],
        )
        .await
        .expect("declare the term");
    session
        .execute(
            "UPDATE relay.outbox SET published_at = now(), kafka_partition = 0, kafka_offset = 0
             WHERE message_id = $1",
            &[&row],
        )
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_takes_a_topic_only_from_a_lease_whose_term_it_ended_judged_by_the_holders_lease_time() {
    let origin = TestDb::new().await;
    migrate(&origin, relay_db::Schema::Outbox).await;
    let (_users, names) = crate::roles::Users::create(&[("tkpoller", Some("relay_outbox_poller"))]).await;
    let url = crate::roles::as_user(&origin.url, &names[0]);
    let owner = origin.client().await;
    for (case, how) in ["expired", "released", "marker lock lost"].into_iter().enumerate() {
        let topic = format!("t{case}");
        let (x, y) = (format!("outbox-poller:{topic},u{case}"), format!("outbox-poller:{topic},v{case}"));
        // x leads with a 60 s lease; y's claims judge with 2 s (the test helper `claim`).
        let (x_session, x_term) = take(&url, &x, 100 + case as i32, 60.0).await;
        let (y_session, y_term) = take(&url, &y, 200 + case as i32, 2.0).await;
        assert_eq!(claim(&x_session, &x, &[&topic]).await.get(&topic), Some(&None), "{how}");

        // Silent for 10 s: expired by y's lease time, not by x's own. x keeps the topic and its term.
        owner
            .execute(
                "UPDATE relay.outbox_leader SET renewed_at = now() - interval '10 seconds' WHERE name = $1",
                &[&x],
            )
            .await
            .expect("age x");
        assert_eq!(claim(&y_session, &y, &[&topic]).await.get(&topic), Some(&Some(x.clone())), "{how}");
        assert_eq!(lease_row(&owner, &x).await.0, x_term, "{how}: x's term goes on");
        assert!(marks(&origin, &x_session, &x, x_term, &topic).await, "{how}: x still marks");

        match how {
            "expired" => {
                owner
                    .execute("UPDATE relay.outbox_leader SET renewed_at = now() - interval '61 seconds' WHERE name = $1", &[&x])
                    .await
                    .expect("expire x");
            }
            "released" => {
                assert_eq!(x_session.execute(RELEASE, &[&x, &x_term]).await.expect("release"), 1);
            }
            _ => {
                x_session
                    .execute("SELECT pg_advisory_unlock(1380273218, $1)", &[&(100 + case as i32)])
                    .await
                    .expect("drop the marker lock");
            }
        }
        // y takes the topic, and only with x's term ended in the same call.
        assert_eq!(claim(&y_session, &y, &[&topic]).await.get(&topic), Some(&None), "{how}");
        assert_eq!(topic_leases(&owner).await.get(&topic), Some(&y), "{how}");
        let (x_now, x_holder) = lease_row(&owner, &x).await;
        assert!(x_now > x_term && x_holder.is_none(), "{how}: x's term ended ({x_now}, {x_holder:?})");
        // x, back, can neither renew nor mark; y marks.
        assert_eq!(x_session.execute(RENEW, &[&x, &x_term]).await.expect("renew"), 0, "{how}");
        assert!(!marks(&origin, &x_session, &x, x_term, &topic).await, "{how}: x's old term is fenced");
        assert!(marks(&origin, &y_session, &y, y_term, &topic).await, "{how}: y marks");
    }
}
