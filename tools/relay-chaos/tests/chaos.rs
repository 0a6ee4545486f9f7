//! The chaos suite, short: the real `relay-chaos` run with a few thousand messages and two faults
//! of every kind, asserting from its JSON report that nothing was lost, doubled or reordered.
//!
//! relay-chaos starts the Relay services from the directory it runs from, so the product binaries
//! must have been built into the same target directory: `cargo test --workspace` (`make test`)
//! builds them; a run of this crate alone needs `cargo build -p relay --bins` first.
use std::time::Duration;

use serde_json::Value;

const RELAY_CHAOS: &str = env!("CARGO_BIN_EXE_relay-chaos");
const MESSAGES: u64 = 3_000;
const PER_KIND: u64 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_kind_twice_loses_doubles_and_reorders_nothing() {
    let bin_dir = std::path::Path::new(RELAY_CHAOS).parent().expect("the target directory");
    for service in ["outbox-poller", "inbox-consumer", "reconciler"] {
        let path = bin_dir.join(service);
        assert!(path.exists(), "{} is missing: run `cargo build -p relay --bins` first", path.display());
    }
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-logs").join("chaos");
    let _ = std::fs::remove_dir_all(&out);
    let run = tokio::process::Command::new(RELAY_CHAOS)
        .args(["--messages", &MESSAGES.to_string(), "--keys", "200"])
        .args(["--faults-per-kind", &PER_KIND.to_string(), "--seed", "42", "--pause-ms", "500"])
        .args(["--drain-timeout-secs", "240", "--json", "--out"])
        .arg(&out)
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("relay-chaos finished within 10 minutes")
        .expect("run relay-chaos");
    let stderr = String::from_utf8_lossy(&output.stderr);
    std::fs::write(out.join("relay-chaos.log"), stderr.as_bytes()).expect("write the run's log");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); log in {}", out.display()));
    assert_eq!(output.status.code(), Some(0), "relay-chaos failed: {:?}", report["failures"]);

    for (kind, n) in report["faults"].as_object().expect("faults") {
        assert!(n.as_u64().expect("count") >= PER_KIND, "{kind}: {n} injected");
    }
    assert_eq!(report["faults"].as_object().expect("faults").len(), 6, "six kinds of fault");
    let v = &report["verification"];
    assert_eq!(v["outbox_messages"], MESSAGES);
    let inboxes = v["inboxes"].as_array().expect("inboxes");
    assert_eq!(inboxes.len(), 2);
    for inbox in inboxes {
        assert_eq!(inbox["messages"], MESSAGES, "{inbox}");
        for finding in ["lost", "duplicated", "reordered", "mismatched", "extra"] {
            assert_eq!(inbox[finding], 0, "{finding} in {inbox}");
        }
    }
    assert_eq!(v["reconciler_exit"], 0);
    assert_eq!(report["failover"]["samples"], PER_KIND, "a failover time for each poller kill");
    assert_eq!(report["passed"], true);
}
