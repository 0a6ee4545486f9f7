//! Database connections over TLS with the server's certificate verified: the services deliver
//! end to end on verified TLS sessions, and refuse a server whose certificate does not check out.
use std::time::Duration;

use crate::{harness::*, health::with_endpoint, verify::inbox_equals_outbox};

/// The local server's certificate (Debian's snakeoil, issued to `localhost`).
const SERVER_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// `db`'s URL over TLS: `host` and `root` as given, verified, with an application name.
fn tls_url(db: &TestDb, host: &str, root: &str, application: &str) -> String {
    let name = db.url.rsplit('/').next().expect("database name");
    format!(
        "postgres://postgres@{host}:5432/{name}?sslmode=verify-full&sslrootcert={root}&application_name={application}"
    )
}

async fn require_server_tls(db: &TestDb) {
    let on: String = db.client().await.query_one("SHOW ssl", &[]).await.expect("show ssl").get(0);
    assert_eq!(on, "on", "this test needs PostgreSQL with ssl = on (Debian's default, {SERVER_CERT})");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_deliver_over_verified_tls_database_sessions() {
    let test = "tls_verified";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    require_server_tls(&origin).await;
    let topic = topic(2).await;
    let application = format!("relay-tls-{}", unique());
    let mut poller_vars = poller_env(&origin, &topic);
    poller_vars.insert("DATABASE_URL".into(), tls_url(&origin, "localhost", SERVER_CERT, &application));
    let mut consumer_vars = consumer_env(&inbox, "ledger", &topic);
    consumer_vars.insert("DATABASE_URL".into(), tls_url(&inbox, "localhost", SERVER_CERT, &application));
    let _poller = spawn(test, "poller", POLLER, &poller_vars);
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_vars);
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 50, 5, 10).await;
    await_inbox(&inbox, "ledger", &topic, 50, Duration::from_secs(60)).await;
    assert_eq!(inbox_equals_outbox(&origin, &inbox, "ledger", &topic).await, 50);

    // Every session the services hold is encrypted.
    let sessions = origin
        .client()
        .await
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .expect("sessions");
    let (all, encrypted): (i64, i64) = (sessions.get(0), sessions.get(1));
    assert!(all >= 3, "poller and consumer sessions found: {all}");
    assert_eq!(encrypted, all, "every service session uses TLS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_certificate_from_an_untrusted_ca_or_for_another_host_is_refused() {
    let test = "tls_refused";
    let origin = TestDb::new().await;
    require_server_tls(&origin).await;
    let topic = topic(1).await;
    let cases = [
        ("untrusted-ca", tls_url(&origin, "localhost", "/etc/ssl/certs/ISRG_Root_X1.pem", "relay-tls-ca")),
        ("wrong-host", tls_url(&origin, "127.0.0.1", SERVER_CERT, "relay-tls-host")),
    ];
    let mut services = Vec::new();
    for (name, url) in cases {
        let mut vars = poller_env(&origin, &topic);
        vars.insert("DATABASE_URL".into(), url);
        let addr = with_endpoint(&mut vars);
        services.push((spawn(test, name, POLLER, &vars), addr));
    }
    for (service, addr) in &mut services {
        eventually(Duration::from_secs(60), "not ready, naming the certificate", || async {
            let (status, body) = http_get(addr, "/readyz").await?;
            (status == 503 && body.to_lowercase().contains("certificate")).then_some(())
        })
        .await;
        assert!(service.child.try_wait().expect("status").is_none(), "it keeps retrying, it does not exit");
    }
    let client = origin.client().await;
    let schema: bool =
        client.query_one("SELECT to_regclass('relay.outbox') IS NULL", &[]).await.unwrap().get(0);
    assert!(schema, "no statement ran over an unverified connection");
}
