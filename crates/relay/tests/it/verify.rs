//! The end-to-end check every delivery test ends with: the inbox equals the outbox.
use std::collections::HashMap;

use crate::harness::TestDb;

/// Asserts that inbox `name` holds every outbox row of `topic` exactly once, byte-equal (payload,
/// key, type, headers, sequence), nothing else, and in per-key commit order. Returns the count.
pub async fn inbox_equals_outbox(origin: &TestDb, inbox_db: &TestDb, name: &str, topic: &str) -> usize {
    inbox_holds_outbox(origin, inbox_db, name, topic, true).await
}

/// As [`inbox_equals_outbox`]; `per_key_order` false for re-driven messages, which arrive late
/// by design.
pub async fn inbox_holds_outbox(
    origin: &TestDb,
    inbox_db: &TestDb,
    name: &str,
    topic: &str,
    per_key_order: bool,
) -> usize {
    inbox_holds_outbox_except(origin, inbox_db, name, topic, per_key_order, &[]).await
}

/// As [`inbox_holds_outbox`], for every published row except `except` (published, then
/// dead-lettered by the consumer). Parked rows are never published, so never expected.
pub async fn inbox_holds_outbox_except(
    origin: &TestDb,
    inbox_db: &TestDb,
    name: &str,
    topic: &str,
    per_key_order: bool,
    except: &[uuid::Uuid],
) -> usize {
    let origin = origin.client().await;
    let inbox = inbox_db.client().await;
    // A consumer may store a message before the poller's mark for it commits.
    let pending =
        "SELECT count(*) FROM relay.outbox WHERE topic = $1 AND published_at IS NULL AND parked_at IS NULL";
    crate::harness::eventually(
        std::time::Duration::from_secs(10),
        "every outbox row marked published",
        || {
            let origin = &origin;
            async move { (crate::harness::count(origin, pending, &[&topic]).await == 0).then_some(()) }
        },
    )
    .await;
    let sent = origin
        .query(
            "SELECT message_id, id, key, msg_type, payload, headers FROM relay.outbox
             WHERE topic = $1 AND published_at IS NOT NULL",
            &[&topic],
        )
        .await
        .expect("read outbox");

    let sent: HashMap<uuid::Uuid, tokio_postgres::Row> =
        sent.into_iter().map(|r| (r.get(0), r)).filter(|(id, _)| !except.contains(id)).collect();
    let received = inbox
        .query(
            "SELECT message_id, sequence, key, msg_type, payload, headers, source, topic FROM relay.inbox
             WHERE inbox = $1 ORDER BY seq",
            &[&name],
        )
        .await
        .expect("read inbox");
    assert_eq!(
        received.len(),
        sent.len(),
        "inbox {name} holds {} rows for {} sent",
        received.len(),
        sent.len()
    );
    let mut last_per_key: HashMap<String, i64> = HashMap::new();
    for row in &received {
        let id: uuid::Uuid = row.get(0);
        let original =
            sent.get(&id).unwrap_or_else(|| panic!("inbox {name} holds {id}, which was never sent"));
        let sequence: i64 = row.get(1);
        let key: String = row.get(2);
        assert_eq!(sequence, original.get::<_, i64>(1), "sequence of {id}");
        assert_eq!(key, original.get::<_, String>(2), "key of {id}");
        assert_eq!(row.get::<_, String>(3), original.get::<_, String>(3), "type of {id}");
        assert_eq!(row.get::<_, Vec<u8>>(4), original.get::<_, Vec<u8>>(4), "payload of {id}");
        assert_eq!(
            row.get::<_, serde_json::Value>(5),
            original.get::<_, serde_json::Value>(5),
            "headers of {id}"
        );
        assert_eq!(row.get::<_, String>(6), "it-origin");
        assert_eq!(row.get::<_, String>(7), topic);
        if let Some(previous) = last_per_key.insert(key.clone(), sequence).filter(|_| per_key_order) {
            assert!(previous < sequence, "key {key}: sequence {sequence} stored after {previous}");
        }
    }
    received.len()
}
