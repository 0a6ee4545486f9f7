//! The receiving side's operator commands leave evidence (inbox V9): `relay-admin processing
//! retry/skip` and `dead-letters redrive/discard` are dry runs unless `--execute`, keep the
//! parking and the errors they replace, and write one audit row per message or dead letter.
use serde_json::Value;

use crate::{
    audit::{admin_as, audit_count, audit_rows},
    harness::*,
    processing_ops::{fail, migrate, store},
    roles::{as_user, Users},
};

#[tokio::test(flavor = "multi_thread")]
async fn inbox_operator_commands_keep_the_parking_and_errors_and_audit_each_message() {
    let db = TestDb::new().await;
    migrate(&db, relay_db::Schema::Inbox).await;
    let (_users, names) = Users::create(&[("auditinbox", Some("relay_operator"))]).await;
    let operator_url = as_user(&db.url, &names[0]);
    let mut owner = db.client().await;
    owner.execute("SELECT relay.enable_processing('ledger', 2, 0, 0)", &[]).await.expect("processing");
    let a1 = store(&owner, "ledger", "payments", "acct-a", 1).await;
    assert_eq!(fail(&mut owner, "ledger", a1, "ledger locked").await, "retry");
    assert_eq!(fail(&mut owner, "ledger", a1, "account acct-a frozen").await, "parked");
    let who = [("RELAY_OPERATOR", "cy")];

    // processing retry: dry run first, then for real; the parking stays as evidence.
    let retry = ["processing", "retry", "--inbox", "ledger", "--all", "--reason", "account unfrozen"];
    let (code, out, stderr) = admin_as(&operator_url, &who, &retry).await;
    assert_eq!((code, out["dry_run"].clone(), out["count"].clone()), (0, true.into(), 1.into()), "{stderr}");
    assert_eq!(out["changes"][0]["before"]["park_reason"], "account acct-a frozen");
    let parked = "SELECT count(*) FROM relay.inbox WHERE parked_at IS NOT NULL";
    assert_eq!(count(&owner, parked, &[]).await, 1, "a dry run changes nothing");
    let executed: Vec<&str> = retry.iter().copied().chain(["--execute"]).collect();
    let (code, out, stderr) = admin_as(&operator_url, &who, &executed).await;
    assert_eq!((code, out["count"].clone()), (0, 1.into()), "{stderr}");
    let row = owner
        .query_one(
            "SELECT parked_at IS NULL, previous_park_reason, previous_parked_at IS NOT NULL, retried_at IS NOT NULL,
                    attempts, last_error
             FROM relay.inbox WHERE message_id = $1",
            &[&a1],
        )
        .await
        .expect("row");
    assert_eq!(
        (
            row.get(0),
            row.get::<_, String>(1),
            row.get(2),
            row.get(3),
            row.get::<_, i32>(4),
            row.get::<_, String>(5)
        ),
        (true, "account acct-a frozen".to_string(), true, true, 2, "account acct-a frozen".to_string())
    );
    let rows = audit_rows(&owner, &a1.to_string()).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].0.as_str(), rows[0].2.as_str(), rows[0].3.as_str()),
        (names[0].as_str(), "cy", "processing retry")
    );
    assert_eq!(rows[0].5["park_reason"], "account acct-a frozen");
    assert_eq!(
        (rows[0].6["parked_at"].clone(), rows[0].6["previous_park_reason"].clone()),
        (Value::Null, "account acct-a frozen".into())
    );

    // processing skip, after it is parked again.
    assert_eq!(fail(&mut owner, "ledger", a1, "still frozen").await, "parked");
    let skip = [
        "processing",
        "skip",
        "--inbox",
        "ledger",
        "--message-id",
        &a1.to_string(),
        "--reason",
        "refunded by hand",
        "--execute",
    ];
    let (code, _, stderr) = admin_as(&operator_url, &who, &skip).await;
    assert_eq!(code, 0, "{stderr}");
    let rows = audit_rows(&owner, &a1.to_string()).await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].3.as_str(), rows[1].5["processed_at"].clone()), ("processing skip", Value::Null));
    assert_eq!(
        (rows[1].6["skip_reason"].clone(), rows[1].6["park_reason"].clone()),
        ("refunded by hand".into(), "still frozen".into())
    );

    // Dead letters: a re-drive that still fails keeps the old error in its audit row; discard.
    let dead: i64 = owner
        .query_one(
            "INSERT INTO relay.dead_letter (inbox, kafka_topic, kafka_partition, kafka_offset, raw_value, error)
             VALUES ('ledger', 'payments', 0, 7, 'garbage', 'the first error') RETURNING id",
            &[],
        )
        .await
        .expect("dead letter")
        .get(0);
    let dead_s = dead.to_string();
    let redrive =
        ["dead-letters", "redrive", "--inbox", "ledger", "--id", &dead_s, "--reason", "after the fix"];
    let (code, out, stderr) = admin_as(&operator_url, &who, &redrive).await;
    assert_eq!((code, out["dry_run"].clone()), (1, true.into()), "still failing, dry: {stderr}");
    let error = "SELECT error FROM relay.dead_letter WHERE id = $1";
    assert_eq!(owner.query_one(error, &[&dead]).await.expect("error").get::<_, String>(0), "the first error");
    assert!(audit_rows(&owner, &dead_s).await.is_empty());
    let executed: Vec<&str> = redrive.iter().copied().chain(["--execute"]).collect();
    let (code, out, stderr) = admin_as(&operator_url, &who, &executed).await;
    assert_eq!((code, out["dry_run"].clone()), (1, false.into()), "{stderr}");
    let new_error: String = owner.query_one(error, &[&dead]).await.expect("error").get(0);
    assert_ne!(new_error, "the first error");
    let discard =
        ["dead-letters", "discard", "--inbox", "ledger", "--all", "--reason", "test producer", "--execute"];
    let (code, _, stderr) = admin_as(&operator_url, &who, &discard).await;
    assert_eq!(code, 0, "{stderr}");
    let rows = audit_rows(&owner, &dead_s).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].3.as_str(), rows[0].5["error"].clone(), rows[0].6["error"].clone()),
        ("dead-letters redrive", "the first error".into(), new_error.into())
    );
    assert_eq!(
        (rows[1].3.as_str(), rows[1].6["resolution"].clone(), rows[1].6["resolution_note"].clone()),
        ("dead-letters discard", "discarded".into(), "test producer".into())
    );
    assert_eq!(audit_count(&owner).await, 4);
}
