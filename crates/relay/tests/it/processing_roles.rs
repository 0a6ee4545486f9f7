//! Operating inbox processing with the least-privilege roles (inbox V6 and V8): the operator
//! lists, retries and skips parked messages and can do nothing else to the inbox; the consumer
//! reads which inboxes process (its retention and probe need it); the reconciler traces a
//! message into the dead letters.
use std::collections::BTreeSet;

use crate::{
    admin::admin,
    harness::*,
    processing_ops::{claimable, fail, migrate, store},
    roles::{as_user, refused, Users},
    trace::trace,
};

#[tokio::test]
async fn operator_consumer_and_reconciler_roles_can_do_their_processing_work_and_no_more() {
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    migrate(&origin, relay_db::Schema::Outbox).await;
    migrate(&inbox, relay_db::Schema::Inbox).await;
    let (_users, names) = Users::create(&[
        ("operator", Some("relay_operator")),
        ("consumer", Some("relay_inbox_consumer")),
        ("reconciler", Some("relay_reconciler")),
    ])
    .await;
    let login = |db: &TestDb, i: usize| TestDb::from_url(&as_user(&db.url, &names[i]));
    let (operator, consumer) = (login(&inbox, 0), login(&inbox, 1));
    let (reconciler_origin, reconciler_inbox) = (login(&origin, 2), login(&inbox, 2));

    let mut client = inbox.client().await;
    client.execute("SELECT relay.enable_processing('ledger', 1, 0, 0)", &[]).await.unwrap();
    let first = store(&client, "ledger", "payments", "acct-1", 1).await;
    let second = store(&client, "ledger", "payments", "acct-1", 2).await;
    assert_eq!(fail(&mut client, "ledger", first, "rejected").await, "parked");

    let (code, listing) = admin(&operator, &["processing", "list", "--inbox", "ledger"]).await;
    assert_eq!((code, listing["total"].clone()), (0, 1.into()), "{listing}");
    let (code, out) = admin(
        &operator,
        &["processing", "retry", "--execute", "--inbox", "ledger", "--all", "--reason", "test"],
    )
    .await;
    assert_eq!((code, out["count"].clone()), (0, 1.into()), "{out}");
    assert_eq!(fail(&mut client, "ledger", first, "rejected again").await, "parked");
    let skip =
        ["processing", "skip", "--execute", "--inbox", "ledger", "--all", "--reason", "duplicate order"];
    let (code, out) = admin(&operator, &skip).await;
    assert_eq!((code, out["count"].clone()), (0, 1.into()), "{out}");
    assert_eq!(claimable(&mut client, "ledger").await, BTreeSet::from([second]));
    let operator_client = operator.client().await;
    refused(&operator_client, "the operator", "UPDATE relay.inbox SET payload = 'x'").await;
    refused(&operator_client, "the operator", "UPDATE relay.inbox SET attempts = 0").await;
    refused(&operator_client, "the operator", "DELETE FROM relay.inbox").await;
    refused(&operator_client, "the operator", "DELETE FROM relay.processing").await;

    let consumer_client = consumer.client().await;
    let processing = "SELECT count(*) FROM relay.processing WHERE inbox = 'ledger'";
    assert_eq!(count(&consumer_client, processing, &[]).await, 1);
    refused(&consumer_client, "the consumer", "UPDATE relay.inbox SET processed_at = now()").await;
    refused(&consumer_client, "the consumer", "UPDATE relay.processing SET max_attempts = 5").await;

    // A dead letter whose envelope names a message: the reconciler's role finds it.
    let id = uuid::Uuid::new_v4();
    let envelope = relay_envelope::Envelope {
        version: relay_envelope::ENVELOPE_VERSION,
        message_id: id.to_string(),
        source: "it-origin".into(),
        topic: "payments".into(),
        key: "acct-2".into(),
        ..Default::default()
    };
    client
        .execute(
            "INSERT INTO relay.dead_letter (inbox, kafka_topic, kafka_partition, kafka_offset, raw_value, error)
             VALUES ('ledger', 'payments', 0, 7, $1, 'payload of 2000 bytes exceeds the limit of 1000 bytes')",
            &[&relay_envelope::encode(&envelope)],
        )
        .await
        .unwrap();
    let both = [("ledger", &reconciler_inbox)];
    let (code, out) =
        trace(&reconciler_origin, &both, "payments", &["--message-id", &id.to_string(), "--format", "json"])
            .await;
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ledger = &report["messages"][0]["inboxes"][0];
    assert_eq!(ledger["state"], "dead_lettered", "{report}");
    assert_eq!(ledger["dead_letters"][0]["kafka_offset"], 7);
    assert!(!out.contains(crate::roles::PASSWORD));
    // By its key too: known only from the dead letter's envelope.
    let (code, out) =
        trace(&reconciler_origin, &both, "payments", &["--topic", "payments", "--key", "acct-2"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("message {id}  topic payments  key acct-2")), "{out}");
    assert!(out.contains("inbox ledger: NOT STORED: dead-lettered"), "{out}");
}
