//! The alert rules (deploy/prometheus/alerts.yml) as Prometheus reads them: `promtool check
//! rules`, and `promtool test rules` with the labels of each deployment, the Compose demo's
//! (job per service) and a Kubernetes scrape's (namespace, pod, container, a shared job), so an
//! alert that stays silent where it runs fails here. Every alert must be seen firing in both.
//! promtool comes from Debian's `prometheus` package (`scripts/lib.sh ensure_promtool`, run by
//! `make test`); `PROMTOOL` names another binary.
use std::{collections::BTreeSet, io::Write, process::Stdio};

use serde_yaml_ng::Value;

use crate::deploy_files::{read, repo_root};

const LABEL_SETS: [&str; 2] =
    ["deploy/prometheus/tests/compose.test.yml", "deploy/prometheus/tests/kubernetes.test.yml"];

/// Runs promtool with `args` (and `stdin`) in the repository root; its success and its output.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let binary = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = std::process::Command::new(&binary)
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {binary} ({e}): the suite installs it (scripts/test.sh, ensure_promtool)")
        });
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let (ok, out) = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"], None);
    assert!(ok, "{out}");
    let rules = alert_names().len();
    assert!(out.contains(&format!("SUCCESS: {rules} rules found")), "{out}");
}

#[test]
fn alerts_fire_and_stay_silent_as_tested_with_the_compose_demos_labels() {
    let (ok, out) = promtool(&["test", "rules", LABEL_SETS[0]], None);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[test]
fn alerts_fire_and_stay_silent_as_tested_with_kubernetes_scrape_labels() {
    let (ok, out) = promtool(&["test", "rules", LABEL_SETS[1]], None);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_is_tested_firing_with_both_label_sets() {
    let alerts = alert_names();
    for file in LABEL_SETS {
        let tests: Value = serde_yaml_ng::from_str(&read(file)).expect("YAML");
        let firing: BTreeSet<String> = tests["tests"]
            .as_sequence()
            .expect("tests")
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_sequence().cloned().unwrap_or_default())
            .filter(|case| case["exp_alerts"].as_sequence().is_some_and(|alerts| !alerts.is_empty()))
            .map(|case| case["alertname"].as_str().expect("alertname").to_string())
            .collect();
        let untested: Vec<&String> = alerts.difference(&firing).collect();
        assert!(untested.is_empty(), "{file} never sees these alerts fire: {untested:?}");
    }
}

/// The names of the alerts in deploy/prometheus/alerts.yml.
fn alert_names() -> BTreeSet<String> {
    let alerts: Value = serde_yaml_ng::from_str(&read("deploy/prometheus/alerts.yml")).expect("YAML");
    alerts["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .map(|r| r["alert"].as_str().expect("alert").to_string())
        .collect()
}
