//! Unit tests of the shared parsers, against injected environments.
use secrecy::ExposeSecret;

use super::*;

mod security;

fn read(vars: &[(&str, &str)], role: KafkaRole) -> (Common, Result<(), ConfigError>) {
    let env = MapEnv::new(vars.iter().copied());
    let mut reader = Reader::new(&env);
    let common = Common::read(&mut reader, role);
    (common, reader.finish())
}

#[test]
fn reports_missing_brokers_and_malformed_url_together() {
    let (_, result) = read(&[("DATABASE_URL", "mysql://nope")], KafkaRole::Producer);
    let err = result.expect_err("two problems");
    let text = err.to_string();
    assert_eq!(err.0.len(), 2, "{text}");
    assert!(text.contains("DATABASE_URL: must be a postgres:// URL"), "{text}");
    assert!(text.contains("KAFKA_BROKERS: is required"), "{text}");
}

#[test]
fn never_prints_the_database_password() {
    let secret = "s3cr3t-Pa55";
    let url = format!("postgres://app:{secret}@db:5432/origin");
    let (common, result) = read(&[("DATABASE_URL", &url), ("KAFKA_BROKERS", "k:9092")], KafkaRole::Producer);
    result.expect("valid");
    let debug = format!("{common:?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("origin"), "{debug}");
    let bad = format!("postgres://app:{secret}@db:notaport/x");
    let (_, result) = read(&[("DATABASE_URL", &bad), ("KAFKA_BROKERS", "k:9092")], KafkaRole::Producer);
    let text = result.expect_err("bad port").to_string();
    assert!(!text.contains(secret), "{text}");
}

#[test]
fn passes_through_kafka_properties_but_locks_guarantees() {
    let (common, result) = read(
        &[
            ("DATABASE_URL", "postgres://localhost/x"),
            ("KAFKA_BROKERS", "a:1,b:2"),
            ("KAFKA_PROPERTY_LINGER_MS", "7"),
            ("KAFKA_PROPERTY_SASL_OAUTHBEARER_CONFIG", "hunter2"),
            ("KAFKA_PROPERTY_ENABLE_IDEMPOTENCE", "false"),
            ("KAFKA_PROPERTY_SASL_PASSWORD", "hunter3"),
            ("KAFKA_PROPERTY_ENABLE_SSL_CERTIFICATE_VERIFICATION", "false"),
        ],
        KafkaRole::Producer,
    );
    let err = result.expect_err("idempotence, the password and verification are locked");
    let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(
        vars,
        vec![
            "KAFKA_PROPERTY_ENABLE_IDEMPOTENCE",
            "KAFKA_PROPERTY_ENABLE_SSL_CERTIFICATE_VERIFICATION",
            "KAFKA_PROPERTY_SASL_PASSWORD"
        ]
    );
    assert!(err.0[2].message.contains("KAFKA_SASL_PASSWORD"), "{}", err.0[2]);
    assert!(!err.to_string().contains("hunter3"), "{err}");
    let props: Vec<_> = common.kafka_properties.iter().collect();
    assert_eq!(
        props,
        vec![("linger.ms", "7"), ("sasl.oauthbearer.config", "hunter2"), ("security.protocol", "plaintext")]
    );
    assert!(!format!("{:?}", common.kafka_properties).contains("hunter2"));
    assert_eq!(common.kafka_brokers, "a:1,b:2");
}

#[test]
fn reads_secrets_from_files_and_rejects_both_forms() {
    let dir = std::env::temp_dir().join(format!("relay-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("url");
    std::fs::write(&path, "postgres://u:p@h/db\n").expect("write");
    let path = path.to_string_lossy().to_string();
    let env = MapEnv::new([("DATABASE_URL_FILE", path.as_str())]);
    let mut reader = Reader::new(&env);
    let secret = reader.secret("DATABASE_URL").expect("read from file");
    assert_eq!(secret.expose_secret(), "postgres://u:p@h/db");
    reader.finish().expect("no problems");
    let env = MapEnv::new([("DATABASE_URL_FILE", path.as_str()), ("DATABASE_URL", "postgres://h/db")]);
    let mut reader = Reader::new(&env);
    assert!(reader.secret("DATABASE_URL").is_none());
    assert_eq!(reader.finish().expect_err("both set").0.len(), 1);
}

#[test]
fn typed_getters_report_each_bad_value() {
    let env = MapEnv::new([
        ("N", "abc"),
        ("R", "100000"),
        ("F", "maybe"),
        ("T", "ok.topic,bad topic"),
        ("X_TYPO", "1"),
    ]);
    let mut reader = Reader::new(&env);
    assert_eq!(reader.number("N", 5, 1, 10), 5);
    assert_eq!(reader.number("R", 5, 1, 10), 5);
    assert!(reader.flag("F", true));
    assert_eq!(reader.topics("T"), vec!["ok.topic", "bad topic"]);
    reader.reject_unknown("X_", &[], |_| false);
    let problems = reader.finish().expect_err("five problems").0;
    let vars: Vec<_> = problems.iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(vars, vec!["N", "R", "F", "T", "X_TYPO"]);
    assert_eq!(topic_env_name("payments.v1-eu"), "PAYMENTS_V1_EU");
}

/// Issue 12 item 11: typos under the shared prefixes were ignored; every one is now reported,
/// in the same run as every bad value.
#[test]
fn typos_under_every_shared_prefix_are_reported_with_the_bad_values() {
    let (_, result) = read(
        &[
            ("DATABASE_URL", "postgres://localhost/x"),
            ("KAFKA_BROKERS", "k:9092"),
            ("RELAY_MIGRATION", "false"),
            ("RELAY_HTTP_ADR", "0.0.0.0:9000"),
            ("RELAY_PROBE_INTERVAL_MS", "often"),
            ("KAFKA_BROKER", "k:9093"),
            ("DATABASE_ULR", "postgres://localhost/y"),
            ("KAFKA_SASL_USERNAM", "app"),
        ],
        KafkaRole::Consumer,
    );
    let err = result.expect_err("typos");
    let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(
        vars,
        [
            "KAFKA_SASL_USERNAM",
            "RELAY_PROBE_INTERVAL_MS",
            "RELAY_HTTP_ADR",
            "RELAY_MIGRATION",
            "DATABASE_ULR",
            "KAFKA_BROKER"
        ],
        "{err}"
    );
    assert!(err.to_string().contains("RELAY_MIGRATION: is not a setting this service knows"), "{err}");
}

#[test]
fn every_known_shared_variable_and_kubernetes_service_links_are_accepted() {
    let (_, result) = read(
        &[
            ("DATABASE_URL_FILE", "/dev/null"),
            ("KAFKA_BROKERS", "k:9092"),
            ("RELAY_MIGRATE", "false"),
            ("RELAY_HTTP_ADDR", "127.0.0.1:9000"),
            ("RELAY_PROBE_INTERVAL_MS", "1000"),
            ("KAFKA_PROPERTY_LINGER_MS", "5"),
            // What Kubernetes adds for Services named relay-metrics and kafka.
            ("RELAY_METRICS_SERVICE_HOST", "10.0.0.7"),
            ("RELAY_METRICS_SERVICE_PORT", "9464"),
            ("RELAY_METRICS_SERVICE_PORT_METRICS", "9464"),
            ("RELAY_METRICS_PORT", "tcp://10.0.0.7:9464"),
            ("RELAY_METRICS_PORT_9464_TCP", "tcp://10.0.0.7:9464"),
            ("RELAY_METRICS_PORT_9464_TCP_PROTO", "tcp"),
            ("RELAY_METRICS_PORT_9464_TCP_PORT", "9464"),
            ("KAFKA_PORT_9092_TCP_ADDR", "10.0.0.8"),
        ],
        KafkaRole::Consumer,
    );
    // Only the empty DATABASE_URL_FILE is a problem: no link is taken for a typo.
    let err = result.expect_err("the URL file is empty");
    let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(vars, ["DATABASE_URL_FILE"], "{err}");
}

#[test]
fn service_link_shapes_are_recognised_and_near_misses_are_not() {
    for link in ["A_SERVICE_HOST", "A_B_SERVICE_PORT_HTTP", "A_PORT", "A_PORT_80_TCP", "A_PORT_53_UDP_ADDR"] {
        assert!(is_service_link(link), "{link}");
    }
    for typo in ["RELAY_HTTP_ADR", "RELAY_PORT_X_TCP", "RELAY_PORT_80_TCP_HOST", "RELAY_PORT_80"] {
        assert!(!is_service_link(typo), "{typo}");
    }
}
