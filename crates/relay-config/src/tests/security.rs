//! Kafka TLS and SASL settings: checked as a whole, every problem at once, no secret printed.
use super::*;

const BASE: [(&str, &str); 2] = [("DATABASE_URL", "postgres://localhost/x"), ("KAFKA_BROKERS", "k:9093")];

fn with_base<'a>(vars: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    BASE.iter().copied().chain(vars.iter().copied()).collect()
}

fn problems_of(result: Result<(), ConfigError>) -> Vec<String> {
    result.expect_err("problems").0.iter().map(|p| p.to_string()).collect()
}

/// A directory of `test`'s own with a CA certificate, a client certificate and key, a file of
/// garbage and a password file.
fn pem_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-config-tls-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    std::fs::write(dir.join("ca.pem"), cert).expect("write");
    std::fs::write(dir.join("client.pem"), cert).expect("write");
    let key = "-----BEGIN PRIVATE KEY-----\nsecret-key-material\n-----END PRIVATE KEY-----\n";
    std::fs::write(dir.join("client.key"), key).expect("write");
    std::fs::write(dir.join("garbage.pem"), "not a certificate\n").expect("write");
    std::fs::write(dir.join("password"), "file-pa55\n").expect("write");
    dir
}

#[test]
fn sasl_ssl_with_scram_sets_every_property_and_hides_the_password() {
    let dir = pem_dir("scram");
    let ca = dir.join("ca.pem").to_string_lossy().to_string();
    let (common, result) = read(
        &with_base(&[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "relay-poller"),
            ("KAFKA_SASL_PASSWORD", "pa55-w0rd"),
            ("KAFKA_SSL_CA_LOCATION", &ca),
        ]),
        KafkaRole::Producer,
    );
    result.expect("valid");
    let props: Vec<_> = common.kafka_properties.iter().collect();
    assert_eq!(
        props,
        vec![
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "relay-poller"),
            ("sasl.password", "pa55-w0rd"),
            ("ssl.ca.location", ca.as_str()),
            ("enable.ssl.certificate.verification", "true"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ]
    );
    let debug = format!("{common:?}");
    assert!(!debug.contains("pa55-w0rd"), "{debug}");
    assert!(debug.contains("relay-poller") && debug.contains("ScramSha512"), "{debug}");
}

#[test]
fn reads_the_sasl_password_and_key_password_from_files_and_uses_system_roots_without_a_ca() {
    let dir = pem_dir("files");
    let path = |f: &str| dir.join(f).to_string_lossy().to_string();
    let (common, result) = read(
        &with_base(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD_FILE", &path("password")),
            ("KAFKA_SSL_CERTIFICATE_LOCATION", &path("client.pem")),
            ("KAFKA_SSL_KEY_LOCATION", &path("client.key")),
            ("KAFKA_SSL_KEY_PASSWORD_FILE", &path("password")),
        ]),
        KafkaRole::Consumer,
    );
    result.expect("valid");
    let props: std::collections::BTreeMap<_, _> = common.kafka_properties.iter().collect();
    assert_eq!(props["sasl.password"], "file-pa55");
    assert_eq!(props["ssl.key.password"], "file-pa55");
    assert_eq!(props["ssl.ca.location"], "probe");
    assert_eq!(props["ssl.key.location"], path("client.key"));
    assert!(!format!("{common:?}").contains("file-pa55"));
}

#[test]
fn reports_every_security_problem_in_one_run_without_secrets() {
    let dir = pem_dir("problems");
    let path = |f: &str| dir.join(f).to_string_lossy().to_string();
    let (_, result) = read(
        &with_base(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "GSSAPI"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("KAFKA_SSL_CA_LOCATION", &path("garbage.pem")),
            ("KAFKA_SSL_KEY_LOCATION", &path("missing.key")),
            ("KAFKA_SSL_CERTIFCATE_LOCATION", "typo"),
        ]),
        KafkaRole::Producer,
    );
    let problems = problems_of(result);
    let expected = [
        "KAFKA_SASL_MECHANISM: \"GSSAPI\" is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME: is required with SASL",
        "KAFKA_SSL_CA_LOCATION: ",
        "KAFKA_SSL_KEY_LOCATION: cannot read",
        "KAFKA_SSL_CERTIFICATE_LOCATION: is required with KAFKA_SSL_KEY_LOCATION",
        "KAFKA_SSL_CERTIFCATE_LOCATION: is not a setting this service knows",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, start) in problems.iter().zip(expected) {
        assert!(problem.starts_with(start), "{problem} should start with {start}");
        assert!(!problem.contains("hunter2"), "{problem}");
    }
    assert!(problems[2].contains("holds no PEM CERTIFICATE"), "{}", problems[2]);
}

#[test]
fn refuses_plain_without_tls_and_security_settings_the_protocol_does_not_use() {
    let (_, result) = read(
        &with_base(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
            ("KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
        ]),
        KafkaRole::Producer,
    );
    let problems = problems_of(result);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("PLAIN over sasl_plaintext would send the password in the clear"));
    assert!(
        problems[1].starts_with("KAFKA_SSL_CA_LOCATION: is set but KAFKA_SECURITY_PROTOCOL=sasl_plaintext")
    );

    // An unreadable protocol is the one problem: the rest cannot be judged against it.
    let (_, result) = read(
        &with_base(&[("KAFKA_SECURITY_PROTOCOL", "tls"), ("KAFKA_SASL_USERNAME", "u")]),
        KafkaRole::Consumer,
    );
    let problems = problems_of(result);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("KAFKA_SECURITY_PROTOCOL: \"tls\" is not plaintext, ssl"));

    // Plaintext (the default) with SASL settings names each one, by the variable that was set.
    let password = pem_dir("plaintext").join("password").to_string_lossy().to_string();
    let (_, result) = read(
        &with_base(&[("KAFKA_SASL_USERNAME", "u"), ("KAFKA_SASL_PASSWORD_FILE", &password)]),
        KafkaRole::Consumer,
    );
    let problems = problems_of(result);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("KAFKA_SASL_USERNAME: is set but KAFKA_SECURITY_PROTOCOL=plaintext"));
    assert!(problems[1].starts_with("KAFKA_SASL_PASSWORD_FILE: "), "{}", problems[1]);
}

#[test]
fn scram_over_sasl_plaintext_is_allowed_and_sets_no_tls_properties() {
    let (common, result) = read(
        &with_base(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
        ]),
        KafkaRole::Producer,
    );
    result.expect("valid");
    let keys: Vec<_> = common.kafka_properties.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec!["security.protocol", "sasl.mechanism", "sasl.username", "sasl.password"]);
}
