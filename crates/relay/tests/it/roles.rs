//! Least-privilege database roles (migrations V4__roles): the services run with
//! RELAY_MIGRATE=false as LOGIN users that are members of nothing but their group role, deliver
//! end to end with retention, and the database refuses (SQLSTATE 42501) whatever their roles
//! must not do.
use std::{collections::BTreeMap, time::Duration};

use tokio_postgres::{error::SqlState, Client};

use crate::{admin::admin, harness::*, verify::inbox_equals_outbox};

const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");
/// Every test login's password: distinctive, so finding it in any output is a leak.
pub(crate) const PASSWORD: &str = "relay-it-Pw7Marker";

/// LOGIN users made for one test. Roles belong to the whole cluster and tests run in parallel,
/// so each name is unique; they are dropped when the test ends, however it ends.
pub struct Users {
    names: Vec<String>,
}

impl Users {
    /// Creates one LOGIN user per `(label, group role)`; returns their names in that order.
    pub async fn create(roles: &[(&str, Option<&str>)]) -> (Self, Vec<String>) {
        let admin = connect(&format!("{}/postgres", pg_base())).await;
        let suffix = unique();
        let mut users = Users { names: Vec::new() };
        for (label, role) in roles {
            let name = format!("relay_it_{label}_{suffix}");
            let member_of = role.map(|role| format!(" IN ROLE {role}")).unwrap_or_default();
            admin
                .batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'{member_of}"))
                .await
                .expect("create login user");
            users.names.push(name);
        }
        let names = users.names.clone();
        (users, names)
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        // Drop runs inside the test's runtime, so the clean-up gets a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let admin = connect(&format!("{}/postgres", pg_base())).await;
                for name in names {
                    admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
                        .await
                        .expect("drop login user");
                }
            });
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop the test's login users");
        }
    }
}

/// `url` with `user` (and the test password) in place of its user.
pub fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{PASSWORD}@{host}")
}

/// Asserts that `sql` is refused for lack of privilege.
pub async fn refused(client: &Client, who: &str, sql: &str) {
    let err = client.batch_execute(sql).await.expect_err(&format!("{who} may not: {sql}"));
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{who}: {sql}: {err}");
}

fn with(mut env: BTreeMap<String, String>, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn services_deliver_with_least_privilege_roles_and_are_refused_everything_else() {
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(1).await;
    // Migrated by a privileged user. The receiving database has an outbox too (a service that
    // both sends and receives), so the consumer's role is shown unable to touch it.
    for (db, schema) in [
        (&origin, relay_db::Schema::Outbox),
        (&inbox, relay_db::Schema::Inbox),
        (&inbox, relay_db::Schema::Outbox),
    ] {
        let url = relay_config::DatabaseUrl::parse(db.url.clone().into()).expect("url");
        relay_db::prepare_schema(&url, schema, true).await.expect("migrate as postgres");
    }
    let (_users, names) = Users::create(&[
        ("app", Some("relay_outbox_writer")),
        ("poller", Some("relay_outbox_poller")),
        ("consumer", Some("relay_inbox_consumer")),
        ("reconciler", Some("relay_reconciler")),
        ("operator", Some("relay_operator")),
    ])
    .await;
    let login = |db: &TestDb, i: usize| TestDb::from_url(&as_user(&db.url, &names[i]));
    let (app, poller_db, consumer_db) = (login(&origin, 0), login(&origin, 1), login(&inbox, 2));
    let (reconciler_origin, reconciler_inbox, operator_origin) =
        (login(&origin, 3), login(&inbox, 3), login(&origin, 4));

    // The application enqueues through relay.enqueue alone: 1-50 are delivered, 51 is too large
    // for the poller's limit and is parked by it.
    let ids = enqueue_many(&app, &topic, 50, 7, 10).await;
    assert_eq!(ids.len(), 50);
    let app_client = app.client().await;
    app_client
        .execute("SELECT relay.enqueue($1, 'big', $2)", &[&topic, &vec![1u8; 2000]])
        .await
        .expect("enqueue 51");
    refused(&app_client, "the writer", "SELECT count(*) FROM relay.outbox").await;
    refused(
        &app_client,
        "the writer",
        "INSERT INTO relay.outbox (topic, key, payload) VALUES ('t', 'k', 'x')",
    )
    .await;
    refused(&app_client, "the writer", "UPDATE relay.outbox SET payload = 'x'").await;

    let retention = [
        ("RELAY_MIGRATE", "false"),
        ("OUTBOX_RETENTION_HOURS", "1"),
        ("OUTBOX_RETENTION_INTERVAL_MS", "200"),
    ];
    let mut poller = spawn(
        "roles",
        "poller",
        POLLER,
        &with(
            poller_env(&poller_db, &topic),
            &[retention[0], retention[1], retention[2], ("OUTBOX_MAX_PAYLOAD_BYTES", "1000")],
        ),
    );
    let mut consumer = spawn(
        "roles",
        "consumer",
        CONSUMER,
        &with(
            consumer_env(&consumer_db, "ledger", &topic),
            &[
                ("RELAY_MIGRATE", "false"),
                ("INBOX_RETENTION_HOURS", "1"),
                ("INBOX_RETENTION_INTERVAL_MS", "200"),
            ],
        ),
    );
    await_inbox(&inbox, "ledger", &topic, 50, Duration::from_secs(120)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 50);
    let postgres_origin = origin.client().await;
    let postgres_inbox = inbox.client().await;
    eventually(Duration::from_secs(30), "51 parked by the poller", || async {
        let sql = "SELECT count(*) FROM relay.outbox WHERE id = 51 AND parked_at IS NOT NULL";
        (count(&postgres_origin, sql, &[]).await == 1).then_some(())
    })
    .await;

    // The reconciler, with its read-only role, finds both sides equal (51 is parked, not missing;
    // an operator discards it below).
    let run_reconciler = || async {
        let output = tokio::process::Command::new(RECONCILER)
            .env_clear()
            .args(["--outbox", &format!("it-origin={}", reconciler_origin.url)])
            .args(["--inbox", &format!("ledger={}", reconciler_inbox.url)])
            .args(["--subscription", &format!("ledger={topic}")])
            .args(["--grace-secs", "0", "--stuck-secs", "3600", "--format", "json"])
            .output()
            .await
            .expect("run reconciler");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        (output.status.code().expect("exit code"), stdout, stderr)
    };
    let (code, stdout, stderr) = run_reconciler().await;
    assert_eq!(code, 1, "only the parked row: {stdout}{stderr}");
    assert!(stdout.contains("\"parked_count\": 1"), "{stdout}");

    // The operator discards the parked row; then the reconciler is clean.
    let (code, discarded) =
        admin(&operator_origin, &["parked", "discard", "--execute", "--id", "51", "--reason", "too large"])
            .await;
    assert_eq!((code, discarded["count"].clone()), (0, 1.into()), "{discarded}");
    let (code, stdout, stderr) = run_reconciler().await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("\"clean\": true"), "{stdout}");

    // What each role must not do.
    let poller_client = poller_db.client().await;
    refused(
        &poller_client,
        "the poller",
        "INSERT INTO relay.outbox (topic, key, payload) VALUES ('t', 'k', 'x')",
    )
    .await;
    refused(&poller_client, "the poller", "UPDATE relay.outbox SET payload = 'x' WHERE id = 1").await;
    refused(&poller_client, "the poller", "UPDATE relay.outbox SET topic = 'elsewhere' WHERE id = 1").await;
    refused(&poller_client, "the poller", "SELECT relay.enqueue('t', 'k', 'x'::bytea)").await;
    let consumer_client = consumer_db.client().await;
    refused(&consumer_client, "the consumer", "UPDATE relay.inbox SET payload = 'x'").await;
    refused(&consumer_client, "the consumer", "SELECT count(*) FROM relay.outbox").await;
    refused(&consumer_client, "the consumer", "SELECT raw_value FROM relay.dead_letter").await;
    refused(&consumer_client, "the consumer", "UPDATE relay.dead_letter SET error = 'x'").await;
    let reconciler_client = reconciler_origin.client().await;
    refused(&reconciler_client, "the reconciler", "UPDATE relay.outbox SET published_at = NULL").await;
    refused(&reconciler_client, "the reconciler", "DELETE FROM relay.outbox").await;
    let reconciler_client = reconciler_inbox.client().await;
    refused(&reconciler_client, "the reconciler", "DELETE FROM relay.inbox").await;
    let operator_client = operator_origin.client().await;
    refused(&operator_client, "the operator", "UPDATE relay.outbox SET payload = 'x'").await;
    refused(&operator_client, "the operator", "DELETE FROM relay.outbox").await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 50, "nothing was changed");

    // Retention with the same roles: once old, 1-50 leave both sides with exact markers; the
    // discarded row 51 is too recently discarded to go.
    postgres_origin
        .batch_execute("UPDATE relay.outbox SET published_at = now() - interval '2 hours' WHERE published_at IS NOT NULL")
        .await
        .unwrap();
    postgres_inbox
        .batch_execute("UPDATE relay.inbox SET received_at = now() - interval '2 hours'")
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "both sides purged", || async {
        let outbox = count(&postgres_origin, "SELECT count(*) FROM relay.outbox", &[]).await;
        let inbox = count(&postgres_inbox, "SELECT count(*) FROM relay.inbox", &[]).await;
        (outbox == 1 && inbox == 0).then_some(())
    })
    .await;
    assert_eq!(count(&postgres_origin, "SELECT below_id FROM relay.outbox_purged", &[]).await, 51);
    let marker =
        "SELECT below_sequence FROM relay.inbox_purged WHERE inbox = 'ledger' AND source = 'it-origin'";
    eventually(Duration::from_secs(30), "the inbox marker", || async {
        (count(&postgres_inbox, marker, &[]).await == 51).then_some(())
    })
    .await;
    let (code, stdout, stderr) = run_reconciler().await;
    assert_eq!(code, 0, "clean across the purged ranges: {stdout}{stderr}");

    poller.terminate(Duration::from_secs(30)).await;
    consumer.terminate(Duration::from_secs(30)).await;
    for service in [&poller, &consumer] {
        let log = service.log_text();
        assert!(!log.contains("permission denied"), "{}: {log}", service.log.display());
        assert!(!log.contains(PASSWORD), "the database password in {}", service.log.display());
    }
    let reconciler_output = format!("{stdout}{stderr}");
    assert!(!reconciler_output.contains(PASSWORD), "the database password in the reconciler's output");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_owner_without_createrole_migrates_once_the_roles_exist() {
    // The roles exist once any database of the cluster was migrated by a user allowed to make them.
    let first = TestDb::new().await;
    let url = relay_config::DatabaseUrl::parse(first.url.clone().into()).expect("url");
    for schema in [relay_db::Schema::Outbox, relay_db::Schema::Inbox] {
        relay_db::prepare_schema(&url, schema, true).await.expect("migrate as postgres");
    }

    let (_users, names) = Users::create(&[("owner", None), ("app", Some("relay_outbox_writer"))]).await;
    let (owner, app) = (&names[0], &names[1]);
    let admin = connect(&format!("{}/postgres", pg_base())).await;
    let row = admin
        .query_one("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = $1", &[owner])
        .await
        .expect("owner's attributes");
    assert!(!row.get::<_, bool>(0), "the owner may not create roles");
    let database = format!("relay_it_{}", unique());
    admin.batch_execute(&format!("CREATE DATABASE {database} OWNER {owner}")).await.expect("create database");
    let db = TestDb::from_url(&format!("{}/{database}", pg_base()));

    for schema in [relay_db::Schema::Outbox, relay_db::Schema::Inbox] {
        let url = relay_config::DatabaseUrl::parse(as_user(&db.url, owner).into()).expect("url");
        relay_db::prepare_schema(&url, schema, true).await.expect("the owner migrates");
    }
    // relay.enqueue runs with the owner's rights, not a superuser's, and writes the row.
    let app_client = connect(&as_user(&db.url, app)).await;
    let id: uuid::Uuid = app_client
        .query_one("SELECT relay.enqueue('t', 'k', 'x'::bytea)", &[])
        .await
        .expect("enqueue")
        .get(0);
    refused(&app_client, "the writer", "SELECT count(*) FROM relay.outbox").await;
    let postgres = db.client().await;
    let row = postgres
        .query_one(
            "SELECT p.proowner::regrole::text, (SELECT count(*) FROM relay.outbox WHERE message_id = $1)
             FROM pg_proc AS p WHERE p.oid = 'relay.enqueue'::regproc",
            &[&id],
        )
        .await
        .expect("owner and row");
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), (owner.clone(), 1));
    drop((app_client, postgres));
    admin.batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)")).await.expect("drop database");
}
