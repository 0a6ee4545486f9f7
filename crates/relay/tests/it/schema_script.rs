//! `relay-admin schema sql`: the install-or-upgrade script other migration tools (Django) run.
//! What it leaves must be what refinery leaves, so the services find nothing to re-create.
use relay_config::DatabaseUrl;
use relay_db::Schema;
use tokio_postgres::Client;

use crate::harness::*;

const SCHEMAS: [Schema; 2] = [Schema::Outbox, Schema::Inbox];

fn url(db: &TestDb) -> DatabaseUrl {
    DatabaseUrl::parse(db.url.clone().into()).expect("valid url")
}

fn script(schema: Schema) -> String {
    relay_admin::schema_sql::script(schema).expect("script")
}

/// Every history row as text: (version, name, applied_on, checksum).
async fn history(client: &Client, schema: Schema) -> Vec<(i32, String, String, String)> {
    let sql = format!(
        "SELECT version, name, applied_on, checksum FROM {} ORDER BY version",
        schema.history_table()
    );
    client
        .query(&sql, &[])
        .await
        .expect("history")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_on_a_fresh_database_leaves_refinery_nothing_to_apply() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for schema in SCHEMAS {
        client.batch_execute(&script(schema)).await.expect("script applies");
        let rows = history(&client, schema).await;
        let expected: Vec<_> = relay_db::migrations(schema)
            .iter()
            .map(|m| (m.version(), m.name().to_string(), m.checksum().to_string()))
            .collect();
        let got: Vec<_> = rows.iter().map(|(v, n, _, c)| (*v, n.clone(), c.clone())).collect();
        assert_eq!(got, expected);
        // refinery verifies every applied row (name and checksum) before applying anything.
        relay_db::prepare_schema(&url(&db), schema, true).await.expect("refinery accepts the history");
        assert_eq!(history(&client, schema).await, rows, "refinery applied nothing again");
        // And the script again is a no-op.
        client.batch_execute(&script(schema)).await.expect("idempotent");
        assert_eq!(history(&client, schema).await, rows);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_upgrades_a_partly_migrated_database_keeping_refinerys_rows() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    for schema in SCHEMAS {
        let migrations = relay_db::migrations(schema);
        let mut runner = refinery::Runner::new(&migrations[..2]);
        runner.set_migration_table_name(schema.history_table());
        runner.run_async(&mut client).await.expect("first two migrations by refinery");
        let before = history(&client, schema).await;
        assert_eq!(before.len(), 2);
        client.batch_execute(&script(schema)).await.expect("script upgrades");
        let after = history(&client, schema).await;
        assert_eq!(after.len(), migrations.len());
        assert_eq!(&after[..2], &before[..], "rows refinery wrote are kept as they were");
        relay_db::prepare_schema(&url(&db), schema, true).await.expect("refinery accepts the upgrade");
        assert_eq!(history(&client, schema).await, after);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_waits_for_a_service_holding_the_migration_lock() {
    let db = TestDb::new().await;
    let holder = db.client().await;
    let (class, object) = relay_db::MIGRATION_LOCK;
    holder.execute("SELECT pg_advisory_lock($1, $2)", &[&class, &object]).await.expect("lock");
    let runner = db.client().await;
    let pid: i32 = runner.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let run = tokio::spawn(async move { runner.batch_execute(&script(Schema::Outbox)).await });
    let sql = "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted";
    eventually(std::time::Duration::from_secs(30), "the script waiting for the lock", || {
        let holder = &holder;
        async move { (count(holder, sql, &[&pid]).await == 1).then_some(()) }
    })
    .await;
    assert_eq!(count(&holder, "SELECT count(*) FROM pg_namespace WHERE nspname = 'relay'", &[]).await, 0);
    holder.execute("SELECT pg_advisory_unlock($1, $2)", &[&class, &object]).await.expect("unlock");
    run.await.expect("task").expect("script applies once the lock is free");
    let applied = count(&holder, "SELECT count(*) FROM relay_outbox_schema_history", &[]).await;
    assert_eq!(applied, relay_db::migrations(Schema::Outbox).len() as i64);
}
