//! The SQL contract itself, transaction by transaction: what `relay.claim` may hand out while
//! other transactions hold keys, what makes a key wait, how `relay.failed` backs off and parks,
//! what `relay.done` refuses, and what the role `relay_inbox_processor` may do.
use std::{collections::BTreeSet, time::SystemTime};

use tokio_postgres::{error::SqlState, Client, Transaction};

use super::{inbox_db, insert_messages, message_id};
use crate::{
    harness::*,
    roles::{as_user, refused, Users},
};

/// (key, sequence) of the messages a claim returned.
async fn claim(tx: &Transaction<'_>, inbox: &str, limit: i32) -> Vec<(String, i64)> {
    tx.query("SELECT key, sequence FROM relay.claim($1, $2)", &[&inbox, &limit])
        .await
        .expect("claim")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn done(tx: &Transaction<'_>, inbox: &str, key: &str, sequence: i64) {
    let id: uuid::Uuid = tx
        .query_one(
            "SELECT message_id FROM relay.inbox WHERE inbox = $1 AND key = $2 AND sequence = $3",
            &[&inbox, &key, &sequence],
        )
        .await
        .expect("id")
        .get(0);
    tx.execute("SELECT relay.done($1, $2)", &[&inbox, &id]).await.expect("done");
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|k| k.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_hands_out_one_head_per_key_and_nothing_of_a_key_another_transaction_holds() {
    let db = inbox_db().await;
    let setup = db.client().await;
    // Two sources with the same key names: (source, topic, key) is the ordering scope.
    insert_messages(&setup, "ledger", "origin-a", &keys(&["k1", "k2", "k3"]), 3, 1).await;
    insert_messages(&setup, "ledger", "origin-b", &keys(&["k1", "k2"]), 2, 100).await;
    setup.execute("SELECT relay.enable_processing('ledger')", &[]).await.unwrap();

    let mut first = db.client().await;
    let mut second = db.client().await;
    let tx1 = first.transaction().await.unwrap();
    let held = claim(&tx1, "ledger", 1).await;
    assert_eq!(held.len(), 1);
    let (held_key, held_sequence) = held[0].clone();

    let tx2 = second.transaction().await.unwrap();
    let rows = tx2.query("SELECT source, key, sequence FROM relay.claim('ledger', 100)", &[]).await.unwrap();
    let claimed: Vec<(String, String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    // Every other scope's oldest message, once; nothing of the scope the first transaction holds.
    let expected: BTreeSet<(String, String, i64)> = [
        ("origin-a", "k1", 1),
        ("origin-a", "k2", 2),
        ("origin-a", "k3", 3),
        ("origin-b", "k1", 100),
        ("origin-b", "k2", 101),
    ]
    .into_iter()
    .map(|(s, k, q)| (s.to_string(), k.to_string(), q))
    .filter(|(s, k, q)| !(s == "origin-a" && *k == held_key && *q == held_sequence))
    .collect();
    assert_eq!(claimed.len(), 4, "{claimed:?}");
    assert_eq!(claimed.iter().cloned().collect::<BTreeSet<_>>(), expected);

    // A third transaction finds every head held.
    let mut third = db.client().await;
    let tx3 = third.transaction().await.unwrap();
    assert_eq!(claim(&tx3, "ledger", 100).await, vec![], "every key is held");
    tx3.rollback().await.unwrap();

    // Once the first commits its mark, the held key's next message is the one handed out.
    done(&tx1, "ledger", &held_key, held_sequence).await;
    tx1.commit().await.unwrap();
    let tx3 = third.transaction().await.unwrap();
    assert_eq!(claim(&tx3, "ledger", 100).await, vec![(held_key.clone(), held_sequence + 3)]);
    tx3.rollback().await.unwrap();
    tx2.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_or_not_yet_due_oldest_message_makes_its_whole_key_wait() {
    let db = inbox_db().await;
    let mut client = db.client().await;
    insert_messages(&client, "ledger", "origin", &keys(&["parked", "later", "flowing"]), 3, 1).await;
    client.execute("SELECT relay.enable_processing('ledger')", &[]).await.unwrap();
    client
        .batch_execute(
            "UPDATE relay.inbox SET parked_at = now(), park_reason = 'x', attempts = 10 WHERE key = 'parked' AND sequence = 1;
             UPDATE relay.inbox SET next_attempt_at = now() + interval '1 hour', attempts = 1 WHERE key = 'later' AND sequence = 2",
        )
        .await
        .unwrap();
    for round in 0..3 {
        let tx = client.transaction().await.unwrap();
        let claimed = claim(&tx, "ledger", 10).await;
        assert_eq!(claimed, vec![("flowing".to_string(), 3 + 3 * round)], "round {round}");
        let (key, sequence) = &claimed[0];
        done(&tx, "ledger", key, *sequence).await;
        tx.commit().await.unwrap();
    }
    // The retry falls due: the key resumes with its oldest message.
    client
        .batch_execute("UPDATE relay.inbox SET next_attempt_at = now() - interval '1 ms' WHERE key = 'later'")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    assert_eq!(claim(&tx, "ledger", 10).await, vec![("later".to_string(), 2)]);
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_go_round_robin_so_a_long_backlog_does_not_starve_other_keys() {
    let db = inbox_db().await;
    let mut client = db.client().await;
    // "a-busy" sorts first and has 50 messages; the others have 2 each.
    insert_messages(&client, "ledger", "origin", &keys(&["a-busy"]), 50, 1).await;
    insert_messages(&client, "ledger", "origin", &keys(&["b", "c", "d"]), 2, 1000).await;
    client.execute("SELECT relay.enable_processing('ledger')", &[]).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..8 {
        let tx = client.transaction().await.unwrap();
        let claimed = claim(&tx, "ledger", 1).await;
        let (key, sequence) = claimed[0].clone();
        done(&tx, "ledger", &key, sequence).await;
        tx.commit().await.unwrap();
        order.push(key);
    }
    assert_eq!(order, ["a-busy", "b", "c", "d", "a-busy", "b", "c", "d"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_backs_off_exponentially_up_to_the_cap_and_parks_at_max_attempts() {
    let db = inbox_db().await;
    let mut client = db.client().await;
    insert_messages(&client, "ledger", "origin", &keys(&["k"]), 2, 1).await;
    client.execute("SELECT relay.enable_processing('ledger', 5, 100, 300)", &[]).await.unwrap();
    let id = message_id(&client, "ledger", "k", 1).await;
    // Expected wait after attempts 1..4 (ms): 100 * 2^(n-1) capped at 300; the 5th parks.
    for (attempt, wait_ms) in [(1, 100.0), (2, 200.0), (3, 300.0), (4, 300.0)] {
        client
            .execute("UPDATE relay.inbox SET next_attempt_at = NULL WHERE message_id = $1", &[&id])
            .await
            .unwrap();
        let tx = client.transaction().await.unwrap();
        assert_eq!(claim(&tx, "ledger", 1).await, vec![("k".to_string(), 1)]);
        // The wait is bracketed by the clock before and after the call.
        let before: SystemTime = tx.query_one("SELECT clock_timestamp()", &[]).await.unwrap().get(0);
        let state: String = tx
            .query_one("SELECT relay.failed('ledger', $1, 'insufficient funds')", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(state, "retry");
        let row = tx
            .query_one(
                "SELECT next_attempt_at, clock_timestamp() FROM relay.inbox WHERE message_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let (next, after): (SystemTime, SystemTime) = (row.get(0), row.get(1));
        let millis =
            |from: SystemTime| next.duration_since(from).expect("in the future").as_secs_f64() * 1000.0;
        assert!(
            millis(after) <= wait_ms + 0.01 && wait_ms <= millis(before) + 0.01,
            "attempt {attempt}: next attempt {} to {} ms after the call, expected {wait_ms}",
            millis(after),
            millis(before)
        );
        tx.commit().await.unwrap();
        // Not due yet: neither it nor its key's later message is handed out.
        let tx = client.transaction().await.unwrap();
        assert_eq!(claim(&tx, "ledger", 10).await, vec![], "attempt {attempt}");
        tx.rollback().await.unwrap();
    }
    client
        .execute("UPDATE relay.inbox SET next_attempt_at = NULL WHERE message_id = $1", &[&id])
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    claim(&tx, "ledger", 1).await;
    let state: String =
        tx.query_one("SELECT relay.failed('ledger', $1, 'account closed')", &[&id]).await.unwrap().get(0);
    assert_eq!(state, "parked");
    tx.commit().await.unwrap();
    let row = client
        .query_one(
            "SELECT attempts, last_error, park_reason, parked_at IS NOT NULL, processed_at IS NULL FROM relay.inbox WHERE message_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
    assert_eq!(row.get::<_, String>(1), "account closed");
    assert_eq!(row.get::<_, String>(2), "account closed");
    assert!(row.get::<_, bool>(3) && row.get::<_, bool>(4));
    let tx = client.transaction().await.unwrap();
    assert_eq!(claim(&tx, "ledger", 10).await, vec![], "the parked message's key waits");
    tx.rollback().await.unwrap();
}

/// The SQLSTATE `sql` fails with.
async fn refusal(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> SqlState {
    let err = client.execute(sql, params).await.expect_err(sql);
    err.code().cloned().unwrap_or_else(|| panic!("{sql}: {err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn done_and_failed_refuse_unknown_processed_and_parked_messages_and_claim_refuses_other_inboxes() {
    let db = inbox_db().await;
    let client = db.client().await;
    insert_messages(&client, "ledger", "origin", &keys(&["k"]), 3, 1).await;
    insert_messages(&client, "audit", "origin", &keys(&["k"]), 1, 1).await;
    client.execute("SELECT relay.enable_processing('ledger')", &[]).await.unwrap();
    let (first, second) =
        (message_id(&client, "ledger", "k", 1).await, message_id(&client, "ledger", "k", 2).await);
    client.execute("SELECT relay.done('ledger', $1)", &[&first]).await.unwrap();
    client
        .execute("UPDATE relay.inbox SET parked_at = now() WHERE message_id = $1", &[&second])
        .await
        .unwrap();
    let unknown = uuid::Uuid::new_v4();
    for function in ["SELECT relay.done('ledger', $1)", "SELECT relay.failed('ledger', $1, 'e')"] {
        assert_eq!(refusal(&client, function, &[&unknown]).await, SqlState::NO_DATA_FOUND, "{function}");
        for id in [first, second] {
            assert_eq!(
                refusal(&client, function, &[&id]).await,
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "{function}"
            );
        }
    }
    // `audit` has no relay.processing row: it is not acted on, and nothing claims from it.
    let audit = message_id(&client, "audit", "k", 1).await;
    assert_eq!(
        refusal(&client, "SELECT * FROM relay.claim('audit')", &[]).await,
        SqlState::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        refusal(&client, "SELECT relay.done('audit', $1)", &[&audit]).await,
        SqlState::INVALID_PARAMETER_VALUE
    );
    for bad in [
        "SELECT relay.enable_processing('ledger', 0)",
        "SELECT relay.enable_processing('ledger', 3, -1)",
        "SELECT relay.enable_processing('ledger', 3, 1000, 999)",
        "SELECT * FROM relay.claim('ledger', 0)",
    ] {
        assert_eq!(refusal(&client, bad, &[]).await, SqlState::INVALID_PARAMETER_VALUE, "{bad}");
    }
    let settings = client
        .query_one("SELECT max_attempts, backoff_initial_ms, backoff_max_ms FROM relay.processing WHERE inbox = 'ledger'", &[])
        .await
        .unwrap();
    assert_eq!(
        (settings.get::<_, i32>(0), settings.get::<_, i32>(1), settings.get::<_, i32>(2)),
        (10, 1000, 300_000)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_role_claims_and_marks_but_cannot_write_the_inbox_or_read_dead_letters() {
    let db = inbox_db().await;
    let setup = db.client().await;
    insert_messages(&setup, "ledger", "origin", &keys(&["k1", "k2"]), 2, 1).await;
    let (_users, names) = Users::create(&[
        ("processor", Some("relay_inbox_processor")),
        ("consumer", Some("relay_inbox_consumer")),
    ])
    .await;
    let mut worker = connect(&as_user(&db.url, &names[0])).await;
    worker.execute("SELECT relay.enable_processing('ledger', 3, 10, 20)", &[]).await.expect("enable");
    let tx = worker.transaction().await.unwrap();
    let ids: Vec<uuid::Uuid> = tx
        .query("SELECT message_id FROM relay.claim('ledger', 2)", &[])
        .await
        .expect("claim")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 2);
    tx.execute("SELECT relay.done('ledger', $1)", &[&ids[0]]).await.expect("done");
    let state: String =
        tx.query_one("SELECT relay.failed('ledger', $1, 'e')", &[&ids[1]]).await.expect("failed").get(0);
    assert_eq!(state, "retry");
    tx.commit().await.unwrap();
    assert_eq!(
        count(
            &worker,
            "SELECT count(*) FROM relay.inbox WHERE processed_at IS NOT NULL OR attempts = 1",
            &[]
        )
        .await,
        2
    );

    for sql in [
        "INSERT INTO relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type, payload, headers, sequence,
                                  created_at, kafka_topic, kafka_partition, kafka_offset)
         VALUES ('ledger', gen_random_uuid(), 's', 't', 'k', '', '', '', '{}', 9, now(), 't', 0, 9)",
        "DELETE FROM relay.inbox",
        "UPDATE relay.inbox SET processed_at = now()",
        "SELECT count(*) FROM relay.dead_letter",
        "UPDATE relay.processing SET max_attempts = 1000",
    ] {
        refused(&worker, "the processor", sql).await;
    }
    // The functions are not for everyone: the consumer's role may not call them.
    let consumer = connect(&as_user(&db.url, &names[1])).await;
    refused(&consumer, "the consumer", "SELECT * FROM relay.claim('ledger')").await;
    refused(&consumer, "the consumer", "SELECT relay.enable_processing('other')").await;
}
