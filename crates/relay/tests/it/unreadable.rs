//! Rows written past `relay.enqueue` (a writer with INSERT rights, a dropped constraint, a
//! database in another encoding) that the poller cannot read or encode: each is parked alone
//! with its reason and every other row flows. And database errors say what the server said.
use std::time::Duration;

use crate::{harness::*, verify::inbox_equals_outbox};

/// Inserts a row directly; `columns` and `values` are SQL. Returns its message id.
async fn insert_raw(origin: &TestDb, columns: &str, values: &str) -> uuid::Uuid {
    let sql = format!("INSERT INTO relay.outbox ({columns}) VALUES ({values}) RETURNING message_id");
    origin.client().await.query_one(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Waits until the row is parked; returns its reason.
async fn parked_reason(origin: &TestDb, id: uuid::Uuid) -> String {
    let client = origin.client().await;
    eventually(Duration::from_secs(60), &format!("row {id} parked"), || {
        let client = &client;
        async move {
            let sql = "SELECT park_reason FROM relay.outbox WHERE message_id = $1";
            client.query_one(sql, &[&id]).await.expect("row").get::<_, Option<String>>(0)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_written_past_enqueue_are_parked_alone_with_their_reason_and_the_rest_flows() {
    let relay = Pipeline::start_with("unencodable_rows", 2, &[("OUTBOX_TOPICS", "")], &[]).await;
    let (origin, topic) = (&relay.origin, relay.topic.clone());
    origin
        .client()
        .await
        .batch_execute("ALTER TABLE relay.outbox DROP CONSTRAINT outbox_headers_object")
        .await
        .expect("drop the headers check");
    enqueue_many(origin, &topic, 20, 4, 5).await;
    let t = format!("'{topic}'");
    let bad = [
        (
            "topic, key, payload, headers",
            format!("{t}, 'b1', 'x', '{{\"n\": 1}}'"),
            "header \"n\" must be a string, not a number",
        ),
        (
            "topic, key, payload, headers",
            format!("{t}, 'b2', 'x', '[1, 2]'"),
            "headers must be a JSON object of strings, not an array",
        ),
        (
            "topic, key, payload, headers",
            format!("{t}, 'b3', 'x', '\"text\"'"),
            "headers must be a JSON object of strings, not a string",
        ),
        (
            "topic, key, payload, traceparent",
            format!("{t}, 'b4', 'x', repeat('0', 100000)"),
            "traceparent of 100000 bytes exceeds the limit of 512 bytes",
        ),
        (
            "topic, key, payload",
            format!("{t}, repeat('k', 5000), 'x'"),
            "key of 5000 bytes exceeds the limit of 4096 bytes",
        ),
        (
            "topic, key, payload, msg_type",
            format!("{t}, 'b6', 'x', repeat('t', 300)"),
            "msg_type of 300 bytes exceeds the limit of 256 bytes",
        ),
        ("topic, key, payload", "'', 'b7', 'x'".to_string(), "topic \"\" is not a valid Kafka topic name"),
        (
            "topic, key, payload",
            format!("{t}, 'b8', decode(repeat('ab', 1048577), 'hex')"),
            "payload of 1048577 bytes exceeds the limit of 1048576 bytes",
        ),
    ];
    let mut ids = Vec::new();
    for (columns, values, _) in &bad {
        ids.push(insert_raw(origin, columns, values).await);
    }
    // The same key as a parked row, after it: held back until an operator decides.
    let behind = enqueue_one(origin, &topic, "b1", b"behind the parked row of b1").await;
    enqueue_many(origin, &topic, 20, 4, 5).await;

    for (id, (_, _, reason)) in ids.iter().zip(&bad) {
        assert_eq!(parked_reason(origin, *id).await, *reason);
    }
    await_inbox(&relay.inbox, "ledger", &topic, 40, Duration::from_secs(60)).await;
    let client = origin.client().await;
    let pending = "SELECT count(*) FROM relay.outbox WHERE message_id = $1 AND published_at IS NULL";
    assert_eq!(count(&client, pending, &[&behind]).await, 1);
    client
        .execute(
            "UPDATE relay.outbox SET discarded_at = now(), discard_reason = 'test' WHERE message_id = $1",
            &[&ids[0]],
        )
        .await
        .expect("discard");
    client.execute("NOTIFY relay_outbox", &[]).await.expect("wake the poller");
    relay.await_ledger(41).await;
    assert_eq!(inbox_equals_outbox(origin, &relay.inbox, "ledger", &topic).await, 41);
}

/// Starts a poller and a consumer on `origin` (created by the test) and a fresh inbox.
async fn pipeline_on(test: &str, origin: TestDb) -> Pipeline {
    let inbox = TestDb::new().await;
    let topic = topic(2).await;
    let poller = spawn(test, "poller", POLLER, &poller_env(&origin, &topic));
    let consumer = spawn(test, "consumer", CONSUMER, &consumer_env(&inbox, "ledger", &topic));
    await_table(&origin, "relay.outbox").await;
    await_table(&inbox, "relay.inbox").await;
    Pipeline { origin, inbox, topic, poller, consumer }
}

/// A fresh database in `encoding`.
async fn database_in(encoding: &str) -> TestDb {
    let name = format!("relay_it_{}", unique());
    let admin = connect(&format!("{}/postgres", pg_base())).await;
    let sql = format!(
        "CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    );
    admin.batch_execute(&sql).await.expect("create database");
    TestDb::from_url(&format!("{}/{name}", pg_base()))
}

#[tokio::test(flavor = "multi_thread")]
async fn text_that_cannot_become_utf8_is_parked_alone_and_the_rest_flows() {
    // WIN1252 has bytes with no UTF-8 equivalent, and SQL_ASCII stores any byte: the server
    // cannot send such a row to a UTF-8 client (SQLSTATE 22P05, 22021).
    for (encoding, expected) in [
        ("WIN1252", "the row cannot be read: ERROR 22P05: character with byte sequence 0x81 in encoding \"WIN1252\" has no equivalent in encoding \"UTF8\""),
        ("SQL_ASCII", "the row cannot be read: ERROR 22021: invalid byte sequence for encoding \"UTF8\": 0x81"),
    ] {
        let relay = pipeline_on(&format!("unreadable_{encoding}"), database_in(encoding).await).await;
        let (origin, topic) = (&relay.origin, relay.topic.clone());
        enqueue_many(origin, &topic, 20, 4, 5).await;
        let odd = insert_raw(origin, "topic, key, payload", &format!("'{topic}', 'k-' || convert_from('\\x81ff'::bytea, '{encoding}'), 'x'")).await;
        enqueue_many(origin, &topic, 20, 4, 5).await;
        let reason = parked_reason(origin, odd).await;
        assert!(reason.starts_with(expected), "{encoding}: {reason}");
        relay.await_ledger(40).await;
        assert_eq!(inbox_equals_outbox(origin, &relay.inbox, "ledger", &topic).await, 40);
    }
}

#[tokio::test]
async fn database_errors_name_their_sqlstate_the_servers_message_and_detail() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let error = client.query("SELECT * FROM no_such_table", &[]).await.expect_err("no table");
    assert_eq!(
        relay_db::DbError::from(error).to_string(),
        "database query failed: ERROR 42P01: relation \"no_such_table\" does not exist"
    );
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .expect("table");
    let error = client.execute("INSERT INTO t VALUES (1)", &[]).await.expect_err("duplicate");
    assert_eq!(
        relay_db::describe(&error),
        "ERROR 23505: duplicate key value violates unique constraint \"t_pkey\" (detail withheld: it may quote message content)"
    );
    // A CHECK violation's detail would repeat the whole row, payload included.
    client
        .batch_execute("CREATE TEMP TABLE c (payload text CHECK (length(payload) < 5))")
        .await
        .expect("table");
    let error = client.execute("INSERT INTO c VALUES ('acct-4711-secret')", &[]).await.expect_err("check");
    let text = relay_db::describe(&error);
    assert!(text.starts_with("ERROR 23514: new row for relation \"c\" violates check constraint"), "{text}");
    assert!(!text.contains("acct-4711-secret"), "message content in a log line: {text}");
    // Other errors keep their detail and hint.
    let error = client.execute("SELECT * FROM no_such_table_here", &[]).await.expect_err("missing");
    assert_eq!(relay_db::describe(&error), "ERROR 42P01: relation \"no_such_table_here\" does not exist");
    let missing = format!("{}/no_such_database_{}", pg_base(), unique());
    let url = relay_config::DatabaseUrl::parse(missing.into()).expect("url");
    let error = relay_db::connect(&url).await.expect_err("no database");
    assert!(error.to_string().contains("FATAL 3D000: database"), "{error}");
}
