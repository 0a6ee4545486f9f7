//! `--help` and `--version` answer before anything starts: no environment read, no database
//! connection, no migration, no leadership, whatever the environment says; any other argument
//! is refused with exit 2. The services' help lists the variables their configuration reads.
//! `NO_COLOR` (<https://no-color.org>) takes the colour out of logs written to a terminal, and
//! the reconciler reads `LOG_FORMAT` like the services.
use std::{collections::BTreeMap, time::Duration};

use crate::harness::*;

/// Every product binary (the tools relay-bench, relay-chaos and relay-demo are not services).
const BINARIES: [(&str, &str); 5] = [
    ("outbox-poller", env!("CARGO_BIN_EXE_outbox-poller")),
    ("inbox-consumer", env!("CARGO_BIN_EXE_inbox-consumer")),
    ("reconciler", env!("CARGO_BIN_EXE_reconciler")),
    ("relay-admin", env!("CARGO_BIN_EXE_relay-admin")),
    ("relay-example-worker", env!("CARGO_BIN_EXE_relay-example-worker")),
];

/// Runs `binary` with `args` and exactly `env`; exit code, stdout, stderr. Fails the test if it
/// does not exit within 10 s (a service that started instead would not).
async fn run(binary: &str, args: &[&str], env: &BTreeMap<String, String>) -> (i32, String, String) {
    let child = tokio::process::Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), child)
        .await
        .unwrap_or_else(|_| panic!("{binary} {args:?} did not exit within 10 s: it started"))
        .expect("run");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().expect("exit code"), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn every_binary_answers_help_and_version_with_no_environment_at_all() {
    let none = BTreeMap::new();
    for (name, binary) in BINARIES {
        for flag in ["--help", "-h"] {
            let (code, out, err) = run(binary, &[flag], &none).await;
            assert_eq!(code, 0, "{name} {flag}: {err}");
            assert!(out.contains("Usage:") && out.contains(name), "{name} {flag}: {out}");
        }
        for flag in ["--version", "-V"] {
            let (code, out, err) = run(binary, &[flag], &none).await;
            assert_eq!(code, 0, "{name} {flag}: {err}");
            assert_eq!(out.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")), "{name} {flag}");
        }
    }
}

#[tokio::test]
async fn an_unknown_argument_is_refused_with_exit_2_before_anything_starts() {
    let none = BTreeMap::new();
    for (name, binary) in BINARIES {
        for argument in ["--no-such-flag", "--verison", "start"] {
            let (code, _, err) = run(binary, &[argument], &none).await;
            assert_eq!(code, 2, "{name} {argument}: {err}");
            assert!(err.contains(argument), "{name} {argument}: {err}");
        }
    }
}

#[tokio::test]
async fn the_services_help_lists_every_variable_their_configuration_reads() {
    let none = BTreeMap::new();
    let shared = relay_config::names::SHARED_HELP;
    let security = relay_config::security_names::SASL_ALL.iter().chain(relay_config::security_names::SSL_ALL);
    let security: Vec<&str> = security.copied().collect();
    for (binary, own) in [(POLLER, relay_poller::names::ALL), (CONSUMER, relay_inbox::names::ALL)] {
        let (_, help, _) = run(binary, &["--help"], &none).await;
        for variable in own.iter().chain(shared).chain(&security) {
            assert!(help.contains(variable), "{binary} --help does not list {variable}:\n{help}");
        }
    }
    let (_, help, _) = run(env!("CARGO_BIN_EXE_reconciler"), &["--help"], &none).await;
    for variable in ["RECONCILE_OUTBOXES", "RECONCILE_INTERVAL_SECS", "LOG_FORMAT", "NO_COLOR"] {
        assert!(help.contains(variable), "reconciler --help does not list {variable}:\n{help}");
    }
}

#[tokio::test]
async fn help_with_a_full_environment_on_a_real_database_creates_nothing_there() {
    // A complete, valid environment: without --help each of these would migrate this database.
    let db = TestDb::new().await;
    let http = free_addr();
    let common =
        [("DATABASE_URL", db.url.as_str()), ("KAFKA_BROKERS", "127.0.0.1:9"), ("RELAY_HTTP_ADDR", &http)];
    let mut poller: BTreeMap<String, String> =
        common.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    poller.extend(
        [("OUTBOX_SOURCE", "payments"), ("OUTBOX_TOPICS", "payments")].map(|(k, v)| (k.into(), v.into())),
    );
    let mut consumer: BTreeMap<String, String> =
        common.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    consumer
        .extend([("INBOX_NAME", "ledger"), ("INBOX_TOPICS", "payments")].map(|(k, v)| (k.into(), v.into())));
    let worker: BTreeMap<String, String> =
        [("DATABASE_URL", db.url.as_str()), ("PROCESSING_INBOX", "ledger"), ("EXAMPLE_TABLE", "effects")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
    for (binary, env) in
        [(POLLER, &poller), (CONSUMER, &consumer), (env!("CARGO_BIN_EXE_relay-example-worker"), &worker)]
    {
        for flag in ["--help", "--version"] {
            let (code, _, err) = run(binary, &[flag], env).await;
            assert_eq!(code, 0, "{binary} {flag}: {err}");
            assert!(err.is_empty(), "{binary} {flag} logged (it started something): {err}");
        }
    }
    let client = db.client().await;
    let schemas = count(&client, "SELECT count(*) FROM pg_namespace WHERE nspname = 'relay'", &[]).await;
    let tables = count(
        &client,
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        &[],
    )
    .await;
    assert_eq!((schemas, tables), (0, 0), "--help or --version created a schema or a table");
    // Nothing listens on the HTTP address either.
    assert!(http_get(&http, "/healthz").await.is_none(), "--help served /healthz");
}

/// What `binary` writes to a terminal (`script` gives it one) in 2 s, with `env` and `NO_COLOR`
/// set to `no_color`.
async fn on_a_terminal(binary: &str, env: &[(&str, &str)], no_color: &str) -> String {
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let command = format!("timeout -s INT 2 env {} {binary}", vars.join(" "));
    let out = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", no_color)
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("exits").expect("script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn no_color_takes_the_colour_out_of_logs_on_a_terminal() {
    // A consumer whose database is unreachable logs warnings while it waits.
    let env = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere"),
        ("KAFKA_BROKERS", "127.0.0.1:9"),
        ("INBOX_NAME", "ledger"),
        ("INBOX_TOPICS", "payments"),
    ];
    let coloured = on_a_terminal(CONSUMER, &env, "").await;
    assert!(
        coloured.contains("WARN") && coloured.contains('\x1b'),
        "an empty NO_COLOR keeps colour: {coloured:?}"
    );
    for no_color in ["1", "true", "0"] {
        let plain = on_a_terminal(CONSUMER, &env, no_color).await;
        assert!(plain.contains("WARN") && !plain.contains('\x1b'), "NO_COLOR={no_color}: {plain:?}");
    }
}

#[tokio::test]
async fn the_reconciler_logs_json_with_log_format_json_and_lists_a_bad_one_with_its_other_problems() {
    // Two empty databases: the reconciler cannot run (no relay schema) and logs why, as JSON.
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let env: BTreeMap<String, String> = [
        ("RECONCILE_OUTBOXES", format!("it-origin={}", origin.url)),
        ("RECONCILE_INBOXES", format!("ledger={}", inbox.url)),
        ("RECONCILE_SUBSCRIPTIONS", "ledger=payments".into()),
        ("LOG_FORMAT", "json".into()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    let reconciler = env!("CARGO_BIN_EXE_reconciler");
    let (code, _, err) = run(reconciler, &[], &env).await;
    assert_eq!(code, 2, "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR" && l["message"] == "reconciliation could not run"),
        "{err}"
    );

    let mut bad = env.clone();
    bad.insert("LOG_FORMAT".into(), "xml".into());
    bad.insert("LOG_REPEAT_SUMMARY_SECS".into(), "often".into());
    bad.insert("RECONCILE_GRACE_SECS".into(), "soon".into());
    let (code, _, err) = run(reconciler, &[], &bad).await;
    assert_eq!(code, 2, "{err}");
    for variable in ["LOG_FORMAT", "LOG_REPEAT_SUMMARY_SECS", "RECONCILE_GRACE_SECS"] {
        assert!(err.contains(variable), "{variable} not reported in the same run: {err}");
    }
}
