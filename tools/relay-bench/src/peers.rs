//! Peers side by side: other outbox relays, installed from a package registry by
//! `scripts/bench.sh` (never kept in this repository), on the same PostgreSQL and broker with the
//! drain's workload, so that Relay's lead over them stays measured as Relay changes.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::stack::Stack;

/// One peer's run, as its script reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peer {
    pub peer: String,
    pub version: String,
    pub messages: i64,
    /// Outbox rows relayed to the broker and acknowledged, per second.
    pub per_sec: f64,
}

/// Where the peer runner is: `BENCH_PEER_PYTHON` (an interpreter with the peer installed) and
/// the script beside `scripts/bench.sh`. `None` when the bench script did not install a peer.
pub fn runner() -> Option<(PathBuf, PathBuf)> {
    let python = PathBuf::from(std::env::var_os("BENCH_PEER_PYTHON")?);
    let script = PathBuf::from(std::env::var_os("BENCH_PEER_SCRIPT")?);
    Some((python, script))
}

/// Runs the peer on `n` messages; an error when it fails, with its output.
pub async fn measure(stack: &Stack, n: i64) -> anyhow::Result<Vec<Peer>> {
    let Some((python, script)) = runner() else { return Ok(Vec::new()) };
    let topic = stack.topic("peer", 6).await?;
    let output = tokio::process::Command::new(python)
        .arg(script)
        .args(["--pg", &stack.pg, "--brokers", &stack.brokers, "--topic", &topic])
        .args(["--messages", &n.to_string()])
        .output()
        .await?;
    std::fs::write(stack.out_dir.join("peer-faststream.log"), &output.stderr)?;
    anyhow::ensure!(
        output.status.success(),
        "peer failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let peer: Peer = serde_json::from_str(line.trim().lines().last().unwrap_or(""))?;
    Ok(vec![peer])
}

/// The Markdown table: each peer beside Relay's outbox → broker rate in the same run.
pub fn render(out: &mut String, relay_publish_per_sec: f64, relay_messages: i64, peers: &[Peer]) {
    use std::fmt::Write as _;
    if peers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Peers: outbox → broker, same PostgreSQL, broker and payloads (128 B, 1,000 keys)\n"
    );
    let _ = writeln!(out, "| relay | version | messages | msg/s | Relay / peer |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| Relay outbox-poller | this build | {relay_messages} | {relay_publish_per_sec:.0} | 1 |"
    );
    for p in peers {
        let _ = writeln!(
            out,
            "| {} (documented defaults) | {} | {} | {:.0} | {:.0}× |",
            p.peer,
            p.version,
            p.messages,
            p.per_sec,
            relay_publish_per_sec / p.per_sec
        );
    }
}
