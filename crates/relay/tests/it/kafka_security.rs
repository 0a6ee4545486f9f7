//! Kafka over TLS with SASL, end to end: a broker of the test's own that requires SCRAM
//! credentials, behind a TLS terminator that requires client certificates from the test's CA.
//! The services deliver with both SCRAM mechanisms, and refuse (not ready, nothing sent, no
//! secret logged) a wrong password, an untrusted broker, a wrong host name and a missing client
//! certificate.
//!
//! The broker (Tansu 0.6) serves plain TCP only, so TLS is terminated in front of it by
//! `relay_chaos::tls`; and it offers no SASL mechanism but SCRAM, so PLAIN is covered only up to
//! librdkafka accepting the settings (`relay-kafka`'s unit tests), not against a broker.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use relay_chaos::{
    broker::{Broker, Scram, Storage},
    tls::{Authority, TlsTerminator},
};
use relay_config::{Common, KafkaProperties, KafkaRole, MapEnv, Reader};

use crate::{
    harness::*,
    health::{await_readiness, with_endpoint},
    verify::inbox_equals_outbox,
};

const POLLER_USER: (&str, &str) = ("relay-poller", "poller-Secr3t-512");
const LEDGER_USER: (&str, &str) = ("relay-ledger", "ledger-Secr3t-256");
const AUDIT_USER: (&str, &str) = ("relay-audit", "audit-Secr3t-512");

/// A SCRAM-only broker behind mutual TLS, with the files a client needs.
struct SecureBroker {
    _broker: Broker,
    terminator: TlsTerminator,
    dir: PathBuf,
    /// `localhost:<port>`: the name the broker's certificate is issued to.
    bootstrap: String,
}

impl SecureBroker {
    async fn start(test: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-logs").join(test);
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = Authority::new("Relay test CA").expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write CA");
        ca.issue_client("relay-service").expect("client cert").write(&dir, "client").expect("write");
        let stranger = Authority::new("Someone else's CA").expect("other CA");
        std::fs::write(dir.join("other-ca.pem"), stranger.cert_pem()).expect("write other CA");
        let server = ca.issue_server(&["localhost"]).expect("server cert");

        let (broker_port, tls_port) = (free_port(), free_port());
        let bootstrap = format!("localhost:{tls_port}");
        let mut broker = Broker::start(broker_port, &bootstrap, Storage::Sqlite(dir.join("tansu")), &dir)
            .await
            .expect("start Tansu");
        let users = [
            (POLLER_USER.0, POLLER_USER.1, Scram::Sha512),
            (LEDGER_USER.0, LEDGER_USER.1, Scram::Sha256),
            (AUDIT_USER.0, AUDIT_USER.1, Scram::Sha512),
        ];
        broker.require_scram(&users).await.expect("SCRAM users");
        let terminator =
            TlsTerminator::start(tls_port, broker.addr(), &server, Some(&ca)).await.expect("TLS terminator");
        Self { _broker: broker, terminator, dir, bootstrap }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// `vars` pointed at this broker with `mechanism`, `user` and `password` (through a file).
    fn secure(&self, vars: &mut BTreeMap<String, String>, mechanism: &str, user: &str, password: &str) {
        let password_file = self.file(&format!("{user}-{}.password", unique()));
        std::fs::write(&password_file, password).expect("password file");
        for (k, v) in [
            ("KAFKA_BROKERS", self.bootstrap.clone()),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl".into()),
            ("KAFKA_SASL_MECHANISM", mechanism.into()),
            ("KAFKA_SASL_USERNAME", user.into()),
            ("KAFKA_SASL_PASSWORD_FILE", password_file),
            ("KAFKA_SSL_CA_LOCATION", self.file("ca.pem")),
            ("KAFKA_SSL_CERTIFICATE_LOCATION", self.file("client.pem")),
            ("KAFKA_SSL_KEY_LOCATION", self.file("client.key")),
            // The terminator listens on IPv4 only; `localhost` also resolves to ::1.
            ("KAFKA_PROPERTY_BROKER_ADDRESS_FAMILY", "v4".into()),
        ] {
            vars.insert(k.into(), v);
        }
    }

    /// A topic created through the secured listener with the poller's credentials.
    async fn topic(&self, partitions: i32) -> String {
        let mut vars = BTreeMap::from([("DATABASE_URL".to_string(), "postgres://localhost/x".to_string())]);
        self.secure(&mut vars, "SCRAM-SHA-512", POLLER_USER.0, POLLER_USER.1);
        let properties = properties_of(&vars);
        let name = format!("it-{}", unique());
        relay_kafka::create_topics(&self.bootstrap, &properties, std::slice::from_ref(&name), partitions)
            .await
            .expect("create topic over SASL_SSL");
        name
    }
}

fn free_port() -> u16 {
    relay_chaos::free_port().expect("free port")
}

/// The client properties the services' own parser makes of `vars`.
fn properties_of(vars: &BTreeMap<String, String>) -> KafkaProperties {
    let env = MapEnv(vars.clone());
    let mut reader = Reader::new(&env);
    let common = Common::read(&mut reader, KafkaRole::Producer);
    reader.finish().expect("valid settings");
    common.kafka_properties
}

#[tokio::test(flavor = "multi_thread")]
async fn services_deliver_over_mutual_tls_with_scram_sha_512_and_sha_256() {
    let test = "kafka_sasl_ssl";
    let secure = SecureBroker::start(test).await;
    let topic = secure.topic(3).await;
    let (origin, inbox_db) = (TestDb::new().await, TestDb::new().await);

    let mut poller = poller_env(&origin, &topic);
    secure.secure(&mut poller, "SCRAM-SHA-512", POLLER_USER.0, POLLER_USER.1);
    let mut ledger = consumer_env(&inbox_db, "ledger", &topic);
    secure.secure(&mut ledger, "SCRAM-SHA-256", LEDGER_USER.0, LEDGER_USER.1);
    let mut audit = consumer_env(&inbox_db, "audit", &topic);
    secure.secure(&mut audit, "SCRAM-SHA-512", AUDIT_USER.0, AUDIT_USER.1);
    let endpoints = [with_endpoint(&mut poller), with_endpoint(&mut ledger), with_endpoint(&mut audit)];
    let services = [
        spawn(test, "poller", POLLER, &poller),
        spawn(test, "ledger", CONSUMER, &ledger),
        spawn(test, "audit", CONSUMER, &audit),
    ];

    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, &topic, 60, 6, 10).await;
    for inbox in ["ledger", "audit"] {
        await_inbox(&inbox_db, inbox, &topic, 60, Duration::from_secs(90)).await;
        assert_eq!(inbox_equals_outbox(&origin, &inbox_db, inbox, &topic).await, 60, "{inbox}");
    }
    for addr in &endpoints {
        await_readiness(addr, 200, "a service on SASL_SSL").await;
    }
    assert!(
        secure.terminator.handshakes() >= 4,
        "the topic's admin client and the three services each completed TLS handshakes: {}",
        secure.terminator.handshakes()
    );
    for service in &services {
        let log = service.log_text();
        for (_, password) in [POLLER_USER, LEDGER_USER, AUDIT_USER] {
            assert!(!log.contains(password), "a password in {}", service.log.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_a_wrong_password_an_untrusted_broker_a_wrong_host_and_no_client_certificate() {
    let test = "kafka_sasl_ssl_refused";
    let secure = SecureBroker::start(test).await;
    let topic = secure.topic(1).await;
    let wrong_password = "not-the-Secr3t";
    type Change = fn(&SecureBroker, &mut BTreeMap<String, String>);
    let cases: [(&str, Change, &str); 4] = [
        (
            "wrong-password",
            |_, vars| {
                vars.insert("KAFKA_SASL_PASSWORD_FILE".into(), String::new());
                vars.insert("KAFKA_SASL_PASSWORD".into(), "not-the-Secr3t".into());
            },
            "sasl authentication error",
        ),
        (
            "untrusted-broker",
            |s, vars| {
                vars.insert("KAFKA_SSL_CA_LOCATION".into(), s.file("other-ca.pem"));
            },
            "certificate verify failed",
        ),
        (
            "wrong-host",
            |s, vars| {
                let port = s.bootstrap.rsplit(':').next().expect("port").to_string();
                vars.insert("KAFKA_BROKERS".into(), format!("127.0.0.1:{port}"));
            },
            "certificate verify failed",
        ),
        (
            "no-client-certificate",
            |_, vars| {
                vars.remove("KAFKA_SSL_CERTIFICATE_LOCATION");
                vars.remove("KAFKA_SSL_KEY_LOCATION");
            },
            "alert certificate required",
        ),
    ];
    let mut running = Vec::new();
    for (name, change, reason) in cases {
        let origin = TestDb::new().await;
        let mut vars = poller_env(&origin, &topic);
        secure.secure(&mut vars, "SCRAM-SHA-512", POLLER_USER.0, POLLER_USER.1);
        change(&secure, &mut vars);
        vars.retain(|_, v| !v.is_empty());
        let addr = with_endpoint(&mut vars);
        let service = spawn(test, name, POLLER, &vars);
        await_table(&origin, "relay.outbox").await;
        enqueue_one(&origin, &topic, "k", b"must not leave").await;
        running.push((name, reason, origin, addr, service));
    }
    for (name, reason, origin, addr, service) in &mut running {
        let body = eventually(Duration::from_secs(60), &format!("{name}: not ready, saying why"), || async {
            let (status, body) = http_get(addr, "/readyz").await?;
            (status == 503 && body.to_lowercase().contains(*reason)).then_some(body)
        })
        .await;
        println!("{name}: /readyz says {body}");
        assert!(body.contains("kafka: degraded"), "{name}: {body}");
        assert!(
            service.child.try_wait().expect("status").is_none(),
            "{name}: it keeps retrying, it does not exit"
        );
        let pending = count(
            &origin.client().await,
            "SELECT count(*) FROM relay.outbox WHERE published_at IS NULL",
            &[],
        )
        .await;
        assert_eq!(pending, 1, "{name}: the message waits in the outbox");
        let log = service.log_text();
        assert!(
            !log.contains(wrong_password) && !log.contains(POLLER_USER.1),
            "{name}: a password was logged"
        );
    }

    // A consumer with a wrong password: not ready with the reason, still running, nothing
    // stored, no password logged (at debug level, where librdkafka's own lines go too).
    let inbox_db = TestDb::new().await;
    let mut vars = consumer_env(&inbox_db, "ledger", &topic);
    secure.secure(&mut vars, "SCRAM-SHA-256", LEDGER_USER.0, wrong_password);
    let addr = with_endpoint(&mut vars);
    vars.insert("RUST_LOG".into(), "debug".into());
    let mut consumer = spawn(test, "consumer-wrong-password", CONSUMER, &vars);
    eventually(Duration::from_secs(60), "consumer: not ready, saying why", || async {
        let (status, body) = http_get(&addr, "/readyz").await?;
        (status == 503 && body.to_lowercase().contains("sasl authentication error")).then_some(())
    })
    .await;
    assert!(consumer.child.try_wait().expect("status").is_none(), "the consumer keeps retrying");
    await_table(&inbox_db, "relay.inbox").await;
    assert_eq!(count(&inbox_db.client().await, "SELECT count(*) FROM relay.inbox", &[]).await, 0);
    let log = consumer.log_text();
    assert!(!log.contains(wrong_password) && !log.contains(LEDGER_USER.1), "a password was logged");
}
