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
