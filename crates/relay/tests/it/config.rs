//! Bad configuration: every problem reported by one run, non-zero exit, no secret printed.
use std::collections::BTreeMap;

use crate::harness::*;

async fn run_with(binary: &str, vars: &[(&str, &str)]) -> (i32, String) {
    let env: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut service = spawn("config", "bad-config", binary, &env);
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), service.child.wait())
        .await
        .expect("exits promptly")
        .expect("wait");
    (status.code().expect("exit code"), service.log_text())
}

#[tokio::test]
async fn missing_brokers_and_malformed_database_url_are_reported_in_one_run() {
    let secret = "Sup3rS3cret";
    let bad_url = format!("postgres://app:{secret}@db:not-a-port/origin");
    for (binary, extra) in [(POLLER, ("OUTBOX_SOURCE", "payments")), (CONSUMER, ("INBOX_NAME", "ledger"))] {
        let (code, stderr) =
            run_with(binary, &[("DATABASE_URL", &bad_url), extra, ("INBOX_TOPICS", "t")]).await;
        assert_eq!(code, 2, "{binary}: {stderr}");
        assert!(stderr.contains("DATABASE_URL: is not a valid PostgreSQL connection string"), "{stderr}");
        assert!(stderr.contains("KAFKA_BROKERS: is required"), "{stderr}");
        assert!(!stderr.contains(secret), "the password leaked: {stderr}");
    }
}

#[tokio::test]
async fn every_problem_is_listed_and_typos_are_caught() {
    let (code, stderr) = run_with(
        POLLER,
        &[
            ("DATABASE_URL", "mysql://nope"),
            ("KAFKA_BROKERS", "localhost"),
            ("OUTBOX_BATCH_SIZE", "lots"),
            ("OUTBOX_POL_INTERVAL_MS", "5"),
            ("KAFKA_PROPERTY_ACKS", "1"),
        ],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "DATABASE_URL:",
        "KAFKA_BROKERS: \"localhost\" is not host:port",
        "OUTBOX_SOURCE: is required",
        "OUTBOX_BATCH_SIZE: \"lots\" is not a whole number",
        "OUTBOX_POL_INTERVAL_MS: is not a setting",
        "KAFKA_PROPERTY_ACKS: acks is set by Relay",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("6 problems"), "{stderr}");
}

/// Issue 12 item 11: `RELAY_MIGRATION` and `RELAY_HTTP_ADR` were ignored, so a service ran with
/// migrations on and no health endpoint while its operator believed otherwise.
#[tokio::test]
async fn typos_under_shared_prefixes_stop_every_service_with_every_problem() {
    let shared = [
        ("DATABASE_URL", "postgres://localhost/x"),
        ("KAFKA_BROKERS", "localhost:9092"),
        ("RELAY_MIGRATION", "false"),
        ("RELAY_HTTP_ADR", "127.0.0.1:9000"),
        ("KAFKA_BROKER", "localhost:9093"),
        ("DATABASE_ULR", "postgres://localhost/y"),
    ];
    let poller = [("OUTBOX_SOURCE", "payments"), ("OUTBOX_TOPICS", "payments"), ("OUTBOX_BACTH_SIZE", "10")];
    let consumer = [("INBOX_NAME", "ledger"), ("INBOX_TOPICS", "payments"), ("INBOX_BATCH_SIZ", "10")];
    for (binary, own) in [(POLLER, poller), (CONSUMER, consumer)] {
        let vars: Vec<(&str, &str)> = shared.iter().chain(own.iter()).copied().collect();
        let (code, stderr) = run_with(binary, &vars).await;
        assert_eq!(code, 2, "{binary}: {stderr}");
        for typo in ["RELAY_MIGRATION", "RELAY_HTTP_ADR", "KAFKA_BROKER:", "DATABASE_ULR", own[2].0] {
            assert!(stderr.contains(typo), "{binary}: missing {typo:?} in:\n{stderr}");
        }
        assert!(stderr.contains("5 problems"), "{binary}: {stderr}");
    }
}

#[tokio::test]
async fn the_reconciler_lists_every_bad_variable_in_one_run() {
    let (code, stderr) = run_with(
        env!("CARGO_BIN_EXE_reconciler"),
        &[
            ("RECONCILE_OUTBOXES", "payments=postgres://relay:Sup3rS3cret@origin/payments"),
            ("RECONCILE_INBOXES", "ledger=postgres://relay:Sup3rS3cret@ledger/ledger"),
            ("RECONCILE_SUBSCRIPTIONS", "ledger=payments"),
            ("RECONCILE_SERVE", "sometimes"),
            ("RECONCILE_GRACE_SECS", "soon"),
            ("RECONCILE_FORMAT", "xml"),
            ("RECONCILE_INTERVL_SECS", "30"),
        ],
    )
    .await;
    assert_ne!(code, 0, "{stderr}");
    for expected in [
        "RECONCILE_SERVE: \"sometimes\" is not true or false",
        "RECONCILE_GRACE_SECS: \"soon\" is not a whole number",
        "RECONCILE_FORMAT: \"xml\" is not table or json",
        "RECONCILE_INTERVL_SECS: is not a setting",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("4 problems"), "{stderr}");
    assert!(!stderr.contains("Sup3rS3cret"), "a password leaked: {stderr}");
}
