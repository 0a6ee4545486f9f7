//! The reconciler tells the truth (issue 13 item 7, issue 14 items 3 and 6): duplicate
//! identities are refused, ages come from the databases' clocks whatever the reconciler host's
//! says, database lists can come from files, and the progress bar counts real messages.
//!
//! The origin and inbox rows are written as the poller and the consumer write them (no broker),
//! so each scenario controls exactly which message is where and how old it is.
use std::{collections::BTreeSet, path::PathBuf, process::Output};

use serde_json::Value;
use uuid::Uuid;

use crate::{harness::*, reconcile::ids};

pub(crate) const RECONCILER: &str = env!("CARGO_BIN_EXE_reconciler");
pub(crate) const TOPIC: &str = "payments.v1";

/// An origin and an inbox database with their schemas, and no service running.
pub(crate) struct Fixture {
    pub origin: TestDb,
    pub inbox: TestDb,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
        for (db, schema) in [(&origin, relay_db::Schema::Outbox), (&inbox, relay_db::Schema::Inbox)] {
            let url = relay_config::DatabaseUrl::parse(db.url.clone().into()).expect("url");
            relay_db::prepare_schema(&url, schema, true).await.expect("schema");
        }
        Self { origin, inbox }
    }

    /// Enqueues `n` messages and dates them `age_secs` back on the origin's clock.
    pub(crate) async fn enqueue(&self, n: usize, age_secs: f64) -> Vec<Uuid> {
        let ids = enqueue_many(&self.origin, TOPIC, n, 7, 50).await;
        let sql = "UPDATE relay.outbox SET created_at = now() - make_interval(secs => $2) WHERE message_id = ANY($1)";
        self.origin.client().await.execute(sql, &[&ids, &age_secs]).await.expect("date rows");
        ids
    }

    /// Marks `ids` published, as the poller does once the broker acknowledged them: a second
    /// after they were created, or now if that is earlier.
    pub(crate) async fn publish(&self, ids: &[Uuid]) {
        let sql = "UPDATE relay.outbox
                   SET published_at = least(created_at + interval '1 second', now()),
                       kafka_partition = 0, kafka_offset = id
                   WHERE message_id = ANY($1)";
        self.origin.client().await.execute(sql, &[&ids]).await.expect("publish");
    }

    /// Stores `ids` in inbox `ledger` as the consumer does, from source `source`.
    pub(crate) async fn store(&self, source: &str, ids: &[Uuid]) {
        let origin = self.origin.client().await;
        let rows = origin
            .query(
                "SELECT message_id, topic, key, msg_type, content_type, payload, headers::text,
                        traceparent, tracestate, id, created_at
                 FROM relay.outbox WHERE message_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .expect("read outbox");
        let inbox = self.inbox.client().await;
        let insert = "INSERT INTO relay.inbox (inbox, source, message_id, topic, key, msg_type, content_type,
                          payload, headers, traceparent, tracestate, sequence, created_at, kafka_topic,
                          kafka_partition, kafka_offset)
                      VALUES ('ledger', $1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11, $12, $3, 0, $11)";
        for r in &rows {
            let headers: String = r.get(6);
            let (id, created): (i64, std::time::SystemTime) = (r.get(9), r.get(10));
            let values: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
                &source,
                &r.get::<_, Uuid>(0),
                &r.get::<_, String>(1),
                &r.get::<_, String>(2),
                &r.get::<_, String>(3),
                &r.get::<_, String>(4),
                &r.get::<_, Vec<u8>>(5),
                &headers,
                &r.get::<_, Option<String>>(7),
                &r.get::<_, Option<String>>(8),
                &id,
                &created,
            ];
            inbox.execute(insert, &values).await.expect("store");
        }
    }

    /// Published and stored from `it-origin`: delivered.
    pub(crate) async fn deliver(&self, ids: &[Uuid]) {
        self.publish(ids).await;
        self.store("it-origin", ids).await;
    }

    /// The variables naming this fixture's databases, source `it-origin`, inbox `ledger`.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("RECONCILE_OUTBOXES".into(), format!("it-origin={}", self.origin.url)),
            ("RECONCILE_INBOXES".into(), format!("ledger={}", self.inbox.url)),
            ("RECONCILE_SUBSCRIPTIONS".into(), format!("ledger={TOPIC}")),
        ]
    }
}

/// Runs `reconciler args` with exactly `env` (plus PATH), behind `wrapper` (`faketime ...`).
pub(crate) async fn run(wrapper: &[&str], env: &[(String, String)], args: &[&str]) -> Output {
    let argv: Vec<&str> = wrapper.iter().copied().chain([RECONCILER]).chain(args.iter().copied()).collect();
    command(&argv, env).await
}

/// Runs `argv` with exactly `env` (plus PATH).
async fn command(argv: &[&str], env: &[(String, String)]) -> Output {
    let program = argv[0];
    tokio::process::Command::new(program)
        .args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        // A run a test gives up on (a timeout) does not outlive it.
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// The exit code, the JSON report and stderr of a one-shot JSON run.
pub(crate) fn json(output: &Output) -> (i32, Value, String) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().expect("exit code"), report, stderr)
}

fn texts(ids: &[Uuid]) -> BTreeSet<String> {
    ids.iter().map(Uuid::to_string).collect()
}

/// Issue 13 item 7: `payments=A payments=B` used to keep B only, and every message of A became
/// one of 150 false "extra" findings. Every duplicate identity is refused, all in one run.
#[tokio::test(flavor = "multi_thread")]
async fn duplicate_sources_inboxes_and_outbox_databases_are_refused_all_at_once() {
    let f = Fixture::new().await;
    let orders = TestDb::new().await;
    let url = relay_config::DatabaseUrl::parse(orders.url.clone().into()).expect("url");
    relay_db::prepare_schema(&url, relay_db::Schema::Outbox, true).await.expect("schema");
    let ids = f.enqueue(150, 600.0).await;
    f.deliver(&ids).await;
    let orders_fixture = Fixture { origin: orders, inbox: TestDb::from_url(&f.inbox.url) };
    let order_ids = orders_fixture.enqueue(40, 600.0).await;
    orders_fixture.publish(&order_ids).await;
    orders_fixture.store("orders", &order_ids).await;
    let (a, b) = (&f.origin.url, &orders_fixture.origin.url);

    let mut env = f.env();
    env[0].1 = format!("it-origin={a} it-origin={b}");
    env.push(("RECONCILE_GRACE_SECS".into(), "0".into()));
    let (code, _, stderr) = json(&run(&[], &env, &["--format", "json"]).await);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("RECONCILE_OUTBOXES: source it-origin is given twice"), "{stderr}");

    // Every kind of duplicate in one configuration, with a bad flag besides: all listed.
    let secret = "postgres://relay:Sup3rS3cret@";
    let env = [
        (
            "RECONCILE_OUTBOXES",
            format!("it-origin={a} orders={b} refunds={}", a.replace("postgres@", "reader:other@")),
        ),
        ("RECONCILE_INBOXES", format!("ledger={secret}l/ledger ledger={secret}l2/ledger")),
        ("RECONCILE_SUBSCRIPTIONS", format!("ledger={TOPIC} ledger=orders")),
    ];
    let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.into(), v)).collect();
    let (code, _, stderr) = json(&run(&[], &env, &["--max-ids", "0"]).await);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "4 problems",
        "RECONCILE_OUTBOXES: sources it-origin and refunds name the same database",
        "RECONCILE_SUBSCRIPTIONS: inbox ledger has two subscriptions",
        "RECONCILE_INBOXES: inbox ledger is given twice",
        "--max-ids: 0 is outside 1..=",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("Sup3rS3cret"), "a password leaked: {stderr}");

    // Each outbox under its own name: every message of both is accounted for, nothing extra.
    let mut env = f.env();
    env[0].1 = format!("it-origin={a} orders={b}");
    env.push(("RECONCILE_GRACE_SECS".into(), "0".into()));
    let (code, report, stderr) = json(&run(&[], &env, &["--format", "json"]).await);
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(report["stats"]["messages_compared"], 190, "{report:#}");
    assert_eq!(report["inboxes"][0]["extra_unknown_source_or_topic"]["count"], 0);
}

/// Issue 13 item 7: with its clock 120 s ahead (grace 60 s) the reconciler called in-flight
/// messages missing, and 120 s behind it would miss lost ones. Ages come from the databases.
#[tokio::test(flavor = "multi_thread")]
async fn a_reconciler_clock_ahead_or_behind_the_databases_changes_no_finding() {
    let faketime = which("faketime");
    let f = Fixture::new().await;
    let delivered = f.enqueue(40, 600.0).await;
    f.deliver(&delivered).await;
    let in_flight = f.enqueue(5, 20.0).await; // published, not stored yet: younger than the grace
    f.publish(&in_flight).await;
    let lost = f.enqueue(3, 90.0).await; // published 90 s ago, never stored: missing
    f.publish(&lost).await;
    f.enqueue(2, 30.0).await; // unpublished for 30 s: not stuck yet (threshold 60 s)
    let stuck = f.enqueue(1, 200.0).await; // unpublished for 200 s: stuck
                                           // The receiving service processes messages: stored 30 s ago and unprocessed is not late yet
                                           // (threshold 60 s), stored 200 s ago is; the rest are processed.
    let inbox = f.inbox.client().await;
    let age =
        "UPDATE relay.inbox SET received_at = now() - make_interval(secs => $2) WHERE message_id = ANY($1)";
    inbox.batch_execute("INSERT INTO relay.processing (inbox) VALUES ('ledger')").await.expect("processing");
    inbox.execute(age, &[&&delivered[..2], &30.0f64]).await.expect("age");
    inbox.execute(age, &[&&delivered[2..3], &200.0f64]).await.expect("age");
    let done = "UPDATE relay.inbox SET processed_at = now() WHERE NOT message_id = ANY($1)";
    inbox.execute(done, &[&&delivered[..3]]).await.expect("processed");
    let mut env = f.env();
    env.extend(
        [
            ("RECONCILE_GRACE_SECS", "60"),
            ("RECONCILE_STUCK_SECS", "60"),
            ("RECONCILE_UNPROCESSED_SECS", "60"),
            ("RECONCILE_FORMAT", "json"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
    for offset in ["+120s", "-120s", "+0s"] {
        // The fake clock reaches the binary: its debug log is stamped with it.
        let wrapper = [faketime.as_str(), "-f", offset];
        let mut logged = env.clone();
        logged.push(("RUST_LOG".into(), "tokio_postgres=debug".into()));
        let output = run(&wrapper, &logged, &["--bucket-size", "16"]).await;
        let (code, report, stderr) = json(&output);
        assert_eq!(code, 1, "clock {offset}: {stderr}");
        let pair = &report["pairs"][0];
        assert_eq!(ids(&pair["missing"]), texts(&lost), "clock {offset}: {pair:#}");
        assert_eq!(ids(&report["outboxes"][0]["stuck"]), texts(&stuck), "clock {offset}: {report:#}");
        let late = &report["inboxes"][0]["unprocessed"]["late"];
        assert_eq!(ids(late), texts(&delivered[2..3]), "clock {offset}: {report:#}");
        for finding in ["extra", "mismatched"] {
            assert_eq!(pair[finding]["count"], 0, "clock {offset}: {finding}");
        }
        let skew = log_clock_skew(&f, &stderr).await;
        let expected: f64 = offset.trim_end_matches('s').parse().unwrap();
        assert!((skew - expected).abs() < 15.0, "clock {offset}: the binary's log is {skew:.0} s off");
    }
}

/// How far the first timestamp in `log` is from the origin database's clock, in seconds.
async fn log_clock_skew(f: &Fixture, log: &str) -> f64 {
    let stamp = log
        .lines()
        .find_map(|l| l.split_whitespace().next().filter(|w| w.len() >= 20 && w.as_bytes()[4] == b'-'))
        .unwrap_or_else(|| panic!("no timestamped log line in:\n{log}"));
    let stamp = stamp.trim_start_matches("\u{1b}[2m").trim_end_matches("\u{1b}[0m");
    let sql = "SELECT extract(epoch FROM $1::text::timestamptz - now())::float8";
    f.origin.client().await.query_one(sql, &[&stamp]).await.expect("parse timestamp").get(0)
}

/// The path of `program`, or a failure saying how the suite installs it.
pub(crate) fn which(program: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| {
            panic!("{program} is missing: scripts/test.sh installs the suite's tools (faketime: ensure_faketime)")
        })
}

/// Issue 14 item 3: `RECONCILE_OUTBOXES_FILE` was refused. Both lists come from files; a missing
/// or unreadable file is reported with every other problem, and no file's content is printed.
#[tokio::test(flavor = "multi_thread")]
async fn database_lists_are_read_from_files_and_a_bad_file_is_reported() {
    let f = Fixture::new().await;
    let ids = f.enqueue(30, 600.0).await;
    f.deliver(&ids).await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("reconcile-files-{}", unique()));
    std::fs::create_dir_all(&dir).expect("dir");
    let outboxes = dir.join("outboxes");
    let inboxes = dir.join("inboxes");
    std::fs::write(&outboxes, format!("# payments service\nit-origin={}\n", f.origin.url)).expect("write");
    std::fs::write(&inboxes, format!("\nledger={}\n", f.inbox.url)).expect("write");
    let env = |outboxes: &PathBuf, inboxes: &PathBuf| {
        vec![
            ("RECONCILE_OUTBOXES_FILE".to_string(), outboxes.display().to_string()),
            ("RECONCILE_INBOXES_FILE".to_string(), inboxes.display().to_string()),
            ("RECONCILE_SUBSCRIPTIONS".to_string(), format!("ledger={TOPIC}")),
        ]
    };
    let (code, report, stderr) = json(&run(&[], &env(&outboxes, &inboxes), &["--format", "json"]).await);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["pairs"][0]["source"], "it-origin");
    assert_eq!(report["stats"]["messages_compared"], 30);

    // A file that does not exist and a path that is a directory: both reported, and a bad
    // entry of a readable file by its position only.
    std::fs::write(&outboxes, format!("{}\n", f.origin.url)).expect("write");
    let missing = dir.join("no-such-file");
    let mut bad = env(&missing, &dir);
    bad.push(("RECONCILE_GRACE_SECS".into(), "soon".into()));
    let (code, _, stderr) = json(&run(&[], &bad, &[]).await);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "RECONCILE_OUTBOXES_FILE: cannot read",
        "no-such-file",
        "RECONCILE_INBOXES_FILE: cannot read",
        "RECONCILE_GRACE_SECS: \"soon\" is not a whole number",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    let (code, _, stderr) = json(&run(&[], &env(&outboxes, &inboxes), &[]).await);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("RECONCILE_OUTBOXES_FILE: entry 1 is not SOURCE=URL"), "{stderr}");
    assert!(!stderr.contains(&f.origin.name), "the file's content was printed: {stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 13 item 8: the bar stayed at 0/1 over 1,000,000 messages. It counts the messages to
/// compare up front and advances as they are compared, on a terminal only, without colours
/// under `NO_COLOR`.
#[tokio::test(flavor = "multi_thread")]
async fn the_progress_bar_counts_every_message_compared_on_a_terminal_only() {
    let script = which("script");
    let f = Fixture::new().await;
    let ids = f.enqueue(1234, 600.0).await;
    f.deliver(&ids[..1200]).await;
    f.publish(&ids[1200..]).await;
    let mut env = f.env();
    env.extend(
        [("RECONCILE_GRACE_SECS", "0"), ("TERM", "xterm-256color")]
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    // 16 buckets of 50 ids per query: the 1,234 messages are compared in two steps.
    let line = format!("{RECONCILER} --bucket-size 50");
    for no_color in [false, true] {
        let mut env = env.clone();
        if no_color {
            env.push(("NO_COLOR".into(), "1".into()));
        }
        let output = command(&[&script, "-qefc", &line, "/dev/null"], &env).await;
        let screen = String::from_utf8_lossy(&output.stdout).to_string();
        assert_eq!(output.status.code(), Some(1), "34 are missing:\n{screen}");
        let drawn = positions(&screen);
        assert_eq!(drawn.last(), Some(&(1234, 1234)), "{drawn:?}\n{screen:?}");
        assert!(drawn.iter().all(|&(_, len)| len == 1234), "the total is known before comparing: {drawn:?}");
        assert!(screen.contains("counting the messages to compare"), "{screen:?}");
        assert!(drawn.windows(2).all(|w| w[0].0 <= w[1].0), "{drawn:?}");
        assert!(screen.contains("DISCREPANCIES FOUND (1234 messages compared;"), "{screen}");
        let coloured = ["\u{1b}[32m", "\u{1b}[36m"].iter().any(|c| screen.contains(c));
        assert_eq!(coloured, !no_color, "NO_COLOR={no_color}: {screen:?}");
    }
    // Not a terminal: no bar at all, the same count in the report.
    let (code, report, stderr) = json(&run(&[], &env, &["--bucket-size", "50", "--format", "json"]).await);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["stats"]["messages_compared"], 1234);
    assert_eq!(report["pairs"][0]["missing"]["count"], 34);
    assert!(positions(&stderr).is_empty() && !stderr.contains('\r'), "a bar on a pipe: {stderr:?}");
}

/// Every `POS/LEN messages` the bar drew, in order (`1,234` read as 1234).
fn positions(screen: &str) -> Vec<(u64, u64)> {
    let number = |s: &str| s.replace(',', "").parse::<u64>().ok();
    screen
        .match_indices(" messages (")
        .filter_map(|(at, _)| {
            let token = screen[..at].rsplit(|c: char| c.is_whitespace() || c == ']').next()?;
            let (pos, len) = token.split_once('/')?;
            Some((number(pos)?, number(len)?))
        })
        .collect()
}
