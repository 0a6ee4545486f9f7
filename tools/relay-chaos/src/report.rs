//! The chaos run's report: faults injected per kind, per inbox messages lost, duplicated and
//! reordered, the poller's failover times, and whether the run passed. Printed as a table and
//! written as JSON and Markdown.
use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use crate::{
    faults::{FaultKind, Injected},
    io_error,
    proxy::ProxyStats,
    verify::Verification,
    workload::WorkloadStats,
    ChaosError,
};

/// Settings a run was made with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSettings {
    pub messages: u64,
    pub keys: u64,
    pub faults_per_kind: usize,
    pub seed: u64,
    pub partitions: i32,
}

/// A set of durations in milliseconds: the poller's failover times, or recovery times.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    pub samples: usize,
    pub min_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Faults after which nothing was measured: no failover, or no recovery within the timeout.
    pub missed: usize,
}

impl Spread {
    pub fn of(values: impl Iterator<Item = Option<f64>>) -> Self {
        let (mut ms, mut missed) = (Vec::new(), 0);
        for value in values {
            match value {
                Some(v) => ms.push(v),
                None => missed += 1,
            }
        }
        ms.sort_by(f64::total_cmp);
        Self {
            samples: ms.len(),
            min_ms: ms.first().copied(),
            median_ms: (!ms.is_empty()).then(|| ms[ms.len() / 2]),
            max_ms: ms.last().copied(),
            missed,
        }
    }
}

/// A service that exited by itself; the suite started it again, as a supervisor would.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    pub service: String,
    pub status: String,
    pub after_secs: f64,
}

/// Exiting this soon after a start is a start-up failure (the database went away during the
/// schema check, say), which a supervisor answers with a restart. Later, it is a crash.
pub const START_UP_SECS: f64 = 10.0;

/// The whole run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub settings: RunSettings,
    /// Faults injected, by kind name.
    pub faults: BTreeMap<String, u64>,
    /// Poller kills: from the kill until the other poller held the leader lock.
    pub failover: Spread,
    /// By fault kind: from the end of the fault until every message committed by then was in
    /// every inbox.
    pub recovery: BTreeMap<String, Spread>,
    pub verification: Verification,
    pub workload: Option<WorkloadStats>,
    pub proxies: BTreeMap<String, ProxyStats>,
    /// Services that exited without being killed by the suite (restarted, and listed here).
    pub exits: Vec<ExitRecord>,
    pub run_secs: f64,
    /// Every fault, in order.
    pub injected: Vec<Injected>,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
    pub passed: bool,
}

impl Report {
    /// Assembles the report and decides whether the run passed.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: RunSettings,
        injected: &[Injected],
        verification: Verification,
        workload: Option<WorkloadStats>,
        proxies: BTreeMap<String, ProxyStats>,
        exits: &[crate::services::Exit],
        run_secs: f64,
    ) -> Self {
        let mut faults: BTreeMap<String, u64> =
            FaultKind::ALL.iter().map(|k| (k.name().to_string(), 0)).collect();
        for fault in injected {
            *faults.entry(fault.kind.name().to_string()).or_default() += 1;
        }
        let mut failures = Vec::new();
        for (kind, n) in &faults {
            if (*n as usize) < settings.faults_per_kind {
                failures.push(format!("{kind}: {n} injected, {} required", settings.faults_per_kind));
            }
        }
        let v = &verification;
        if !v.drained {
            failures.push("the pipeline did not drain before the timeout".into());
        }
        if v.outbox_messages != settings.messages {
            failures.push(format!(
                "the outbox holds {} messages, {} were written",
                v.outbox_messages, settings.messages
            ));
        }
        if v.parked > 0 {
            failures.push(format!("{} outbox rows parked", v.parked));
        }
        for inbox in &v.inboxes {
            for (what, n) in [
                ("lost", inbox.lost),
                ("duplicated", inbox.duplicated),
                ("reordered", inbox.reordered),
                ("mismatched", inbox.mismatched),
                ("extra", inbox.extra),
            ] {
                if n > 0 {
                    failures.push(format!("inbox {}: {n} {what}", inbox.name));
                }
            }
        }
        if !v.reconciler_clean() {
            failures.push(format!("reconciler exit code {:?} (0 = clean)", v.reconciler_exit));
        }
        let exits: Vec<ExitRecord> = exits
            .iter()
            .map(|e| ExitRecord {
                service: e.name.clone(),
                status: e.status.clone(),
                after_secs: e.after.as_secs_f64(),
            })
            .collect();
        for exit in exits.iter().filter(|e| e.after_secs >= START_UP_SECS) {
            failures
                .push(format!("{} crashed after {:.0} s ({})", exit.service, exit.after_secs, exit.status));
        }
        if workload.is_none() {
            failures.push("the workload did not finish".into());
        }
        let passed = failures.is_empty();
        Self {
            settings,
            faults,
            failover: Spread::of(
                injected.iter().filter(|f| f.kind == FaultKind::PollerKill).map(|f| f.failover_ms),
            ),
            recovery: FaultKind::ALL
                .iter()
                .map(|kind| {
                    let of_kind = injected.iter().filter(|f| f.kind == *kind);
                    (kind.name().to_string(), Spread::of(of_kind.map(|f| f.recovery_ms)))
                })
                .collect(),
            verification,
            workload,
            proxies,
            exits,
            run_secs,
            injected: injected.to_vec(),
            failures,
            passed,
        }
    }

    /// The table printed at the end of a run (Markdown, readable as plain text).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "## Chaos run: {} messages over {} keys, {} partitions, {} faults per kind, seed {}\n",
            s.messages, s.keys, s.partitions, s.faults_per_kind, s.seed
        );
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
        let _ = writeln!(
            out,
            "| fault | injected | recovery median (ms) | recovery max (ms) | no recovery in time |\n|---|---:|---:|---:|---:|"
        );
        for (kind, n) in &self.faults {
            let r = self.recovery.get(kind).cloned().unwrap_or_default();
            let _ = writeln!(out, "| {kind} | {n} | {} | {} | {} |", ms(r.median_ms), ms(r.max_ms), r.missed);
        }
        let _ = writeln!(out, "| **total** | **{}** | | | |\n", self.faults.values().sum::<u64>());
        let _ = writeln!(
            out,
            "Recovery: from the end of a fault until every message committed by then is in both inboxes.\n"
        );
        let _ = writeln!(
            out,
            "| inbox | messages | lost | duplicated | reordered | mismatched | extra |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for i in &self.verification.inboxes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                i.name, i.messages, i.lost, i.duplicated, i.reordered, i.mismatched, i.extra
            );
        }
        let v = &self.verification;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "- outbox: {} messages, {} unpublished, {} parked",
            v.outbox_messages, v.unpublished, v.parked
        );
        if let (Some(records), Some(more)) = (v.topic_records, v.published_more_than_once) {
            let _ = writeln!(
                out,
                "- topic: {records} records; {more} published more than once (re-sent after faults, absorbed by the inboxes)"
            );
        }
        let f = &self.failover;
        let _ = writeln!(
            out,
            "- poller failover (kill of the leader → the other holds the lock): min {} ms, median {} ms, max {} ms over {} kills{}",
            ms(f.min_ms),
            ms(f.median_ms),
            ms(f.max_ms),
            f.samples,
            if f.missed > 0 { format!(", {} without failover", f.missed) } else { String::new() }
        );
        let _ = writeln!(
            out,
            "- reconciler: {}",
            if v.reconciler_clean() {
                "clean".to_string()
            } else {
                format!("NOT clean (exit {:?})", v.reconciler_exit)
            }
        );
        if let Some(w) = &self.workload {
            let _ = writeln!(
                out,
                "- workload: {} messages in {} transactions, {} retried attempts, {} uncertain commits found committed",
                w.messages, w.transactions, w.retries, w.uncertain_commits_committed
            );
        }
        if !self.exits.is_empty() {
            let listed: Vec<String> = self
                .exits
                .iter()
                .map(|e| format!("{} after {:.1} s ({})", e.service, e.after_secs, e.status))
                .collect();
            let _ = writeln!(
                out,
                "- services that exited by themselves and were restarted (within {START_UP_SECS:.0} s of a start: a start-up failure, not a crash): {}",
                listed.join("; ")
            );
        }
        let _ = writeln!(
            out,
            "- drain after the last fault: {:.1} s; total run time: {:.1} s",
            v.drain_secs, self.run_secs
        );
        if self.passed {
            let _ = writeln!(out, "\nPASSED");
        } else {
            let _ = writeln!(out, "\nFAILED:");
            for failure in &self.failures {
                let _ = writeln!(out, "- {failure}");
            }
        }
        out
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), ChaosError> {
        let json =
            serde_json::to_string_pretty(self).map_err(|e| ChaosError::Setup(format!("report JSON: {e}")))?;
        std::fs::write(dir.join("report.json"), json).map_err(io_error("write report.json"))?;
        std::fs::write(dir.join("report.md"), self.markdown()).map_err(io_error("write report.md"))?;
        Ok(())
    }
}
