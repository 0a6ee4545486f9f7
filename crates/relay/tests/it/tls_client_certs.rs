//! PostgreSQL client certificates (`sslcert`, `sslkey`): against a private server that admits
//! only TLS sessions with a certificate from its CA naming the user (`clientcert=verify-full`),
//! the services deliver end to end; without a certificate, or with one from another CA, they are
//! refused, stay up and say why in `/readyz`.
use std::{path::Path, time::Duration};

use relay_chaos::{postgres::PgCluster, tls::Authority};
use relay_config::DatabaseUrl;

use crate::{harness::*, health::with_endpoint};

/// The URL of `db` on the private server over verified TLS, with `client` (`<stem>.pem` and
/// `<stem>.key` in `dir`) as the client certificate when given.
fn url(pg: &PgCluster, db: &str, dir: &Path, client: Option<&str>, application: &str) -> String {
    let mut url = format!(
        "postgres://postgres@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}&application_name={application}",
        pg.port(),
        dir.join("ca.pem").display()
    );
    if let Some(stem) = client {
        let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        url.push_str(&format!("&sslcert={}&sslkey={}", cert.display(), key.display()));
    }
    url
}

async fn tls_client(url: &str) -> tokio_postgres::Client {
    let url = DatabaseUrl::parse(url.to_string().into()).expect("valid URL");
    relay_db::connect(&url).await.expect("connect with a client certificate")
}

fn with_url(
    mut vars: std::collections::BTreeMap<String, String>,
    url: String,
) -> std::collections::BTreeMap<String, String> {
    vars.insert("DATABASE_URL".into(), url);
    vars
}

#[tokio::test(flavor = "multi_thread")]
async fn services_authenticate_with_client_certificates_and_are_refused_without_one() {
    let test = "tls_client_certs";
    let pg = PgCluster::start().await.expect("a private PostgreSQL");
    for db in ["origin", "inbox"] {
        pg.create_database(db).await.expect("create database");
    }
    let dir = std::env::temp_dir().join(format!("relay-it-pg-certs-{}", unique()));
    std::fs::create_dir_all(&dir).expect("certificate directory");
    let ca = Authority::new("Relay test database CA").expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write CA");
    ca.issue_client("postgres").expect("client cert").write(&dir, "client").expect("write");
    let stranger = Authority::new("Someone else's CA").expect("other CA");
    stranger.issue_client("postgres").expect("stranger cert").write(&dir, "stranger").expect("write");
    let server = ca.issue_server(&["localhost"]).expect("server cert");
    pg.require_client_certificates(&server, &ca).await.expect("client certificates required");

    let topic = topic(1).await;
    let application = format!("relay-cert-{}", unique());
    let origin_url = url(&pg, "origin", &dir, Some("client"), &application);
    let inbox_url = url(&pg, "inbox", &dir, Some("client"), &application);
    let placeholder = TestDb::from_url(&origin_url);
    let _poller =
        spawn(test, "poller", POLLER, &with_url(poller_env(&placeholder, &topic), origin_url.clone()));
    let _consumer = spawn(
        test,
        "consumer",
        CONSUMER,
        &with_url(consumer_env(&placeholder, "ledger", &topic), inbox_url.clone()),
    );

    let origin = tls_client(&origin_url).await;
    eventually(Duration::from_secs(60), "the outbox schema", || async {
        origin
            .query_one("SELECT to_regclass('relay.outbox') IS NOT NULL", &[])
            .await
            .ok()?
            .get::<_, bool>(0)
            .then_some(())
    })
    .await;
    for n in 0..20 {
        origin
            .execute(
                "SELECT relay.enqueue($1, $2, $3)",
                &[&topic, &format!("key-{}", n % 3), &format!("m{n}").into_bytes()],
            )
            .await
            .expect("enqueue");
    }
    let inbox = tls_client(&inbox_url).await;
    let stored = eventually(Duration::from_secs(90), "20 messages in the inbox", || async {
        let row = inbox
            .query_one("SELECT count(*), count(DISTINCT message_id) FROM relay.inbox", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 20).then(|| row.get::<_, i64>(1))
    })
    .await;
    assert_eq!(stored, 20, "each message once");

    // Every service session is TLS and presented the client certificate.
    let sessions = origin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl AND s.client_dn = '/CN=postgres')
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .expect("sessions");
    let (all, certified): (i64, i64) = (sessions.get(0), sessions.get(1));
    assert!(all >= 2, "service sessions found: {all}");
    assert_eq!(certified, all, "every session authenticated by certificate");

    // Without a certificate, or with one the server's CA did not issue: refused, still running.
    let mut refused = Vec::new();
    for (name, client) in [("no-certificate", None), ("foreign-certificate", Some("stranger"))] {
        let mut vars = with_url(poller_env(&placeholder, &topic), url(&pg, "origin", &dir, client, name));
        let addr = with_endpoint(&mut vars);
        refused.push((spawn(test, name, POLLER, &vars), addr));
    }
    for (service, addr) in &mut refused {
        let body = eventually(Duration::from_secs(60), "not ready, with the server's refusal", || async {
            let (status, body) = http_get(addr, "/readyz").await?;
            let lower = body.to_lowercase();
            (status == 503 && (lower.contains("certificate") || lower.contains("unknownca"))).then_some(body)
        })
        .await;
        assert!(service.child.try_wait().expect("status").is_none(), "it retries, it does not exit: {body}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
