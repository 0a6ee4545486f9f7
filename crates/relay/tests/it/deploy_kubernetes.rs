//! deploy/kubernetes/ as `kubectl apply` meets it, checked without a cluster: README's apply
//! order creates the namespace before anything in it; every Secret and ConfigMap a workload
//! references exists among the examples with the referenced key; the reconciler has a
//! disruption budget that lets a node drain; the Prometheus Operator variants scrape what the
//! alerts expect, and the PrometheusRule holds exactly deploy/prometheus/alerts.yml's groups.
use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::Value;

use crate::deploy_files::*;

fn all_documents() -> Vec<(String, Value)> {
    kubernetes_documents(&repo_root().join("deploy/kubernetes"))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a string, found {other:?}"),
    }
}

fn kind_and_name(doc: &Value) -> (String, String) {
    (text(&doc["kind"]), text(&doc["metadata"]["name"]))
}

/// The `kubectl apply -f PATH` lines of README's Kubernetes section, in order.
fn readme_apply_paths() -> Vec<String> {
    let readme = read("README.md");
    let section = readme.split("\n## Kubernetes").nth(1).expect("a Kubernetes section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("kubectl apply -f "))
        .map(|rest| rest.split_whitespace().next().expect("a path").to_string())
        .collect()
}

/// What `kubectl apply -f path` reads: a file, or a directory's YAML files (not recursive),
/// in name order.
fn applied_files(path: &str) -> Vec<String> {
    let full = repo_root().join(path);
    if full.is_file() {
        return vec![path.to_string()];
    }
    let mut files: Vec<String> = std::fs::read_dir(&full)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| format!("{}/{}", path.trim_end_matches('/'), p.file_name().expect("name").to_string_lossy()))
        .collect();
    files.sort();
    files
}

#[test]
fn readme_applies_the_namespace_before_anything_in_it_and_every_manifest() {
    let paths = readme_apply_paths();
    assert!(!paths.is_empty(), "README shows no kubectl apply");
    let mut namespaces = BTreeSet::new();
    let mut applied = Vec::new();
    for file in paths.iter().flat_map(|p| applied_files(p)) {
        for (_, doc) in parse_documents(&file, &read(&file)) {
            let (kind, name) = kind_and_name(&doc);
            if kind == "Namespace" {
                namespaces.insert(name.clone());
            } else if let Some(namespace) = doc["metadata"]["namespace"].as_str() {
                assert!(
                    namespaces.contains(namespace),
                    "{file}: {kind} {name} is applied before namespace {namespace}"
                );
            }
        }
        applied.push(file);
    }
    // 00-namespace.yaml is applied first on its own and again with its directory: harmless.
    let unique: BTreeSet<&String> = applied.iter().collect();
    let every: BTreeSet<String> = all_documents().into_iter().map(|(file, _)| file).collect();
    let missing: Vec<&String> = every.iter().filter(|f| !unique.contains(f)).collect();
    assert!(missing.is_empty(), "README's commands never apply {missing:?}");
}

/// Every (kind, name, key) the workloads read from Secrets and ConfigMaps; key None for a
/// whole object (envFrom, a volume without items).
fn references(docs: &[(String, Value)]) -> BTreeSet<(String, String, Option<String>)> {
    let mut refs = BTreeSet::new();
    for (_, doc) in docs {
        let spec = match text(&doc["kind"]).as_str() {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => &doc["spec"]["template"]["spec"],
            "Pod" => &doc["spec"],
            _ => continue,
        };
        let containers =
            ["initContainers", "containers"].into_iter().filter_map(|l| spec[l].as_sequence()).flatten();
        for c in containers {
            for var in c["env"].as_sequence().into_iter().flatten() {
                for (field, kind) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
                    let r = &var["valueFrom"][field];
                    if !r.is_null() {
                        refs.insert((kind.into(), text(&r["name"]), Some(text(&r["key"]))));
                    }
                }
            }
            for from in c["envFrom"].as_sequence().into_iter().flatten() {
                for (field, kind) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
                    if !from[field].is_null() {
                        refs.insert((kind.into(), text(&from[field]["name"]), None));
                    }
                }
            }
        }
        for volume in spec["volumes"].as_sequence().into_iter().flatten() {
            let (kind, source, name) = match (&volume["secret"], &volume["configMap"]) {
                (s, _) if !s.is_null() => ("Secret", s, text(&s["secretName"])),
                (_, m) if !m.is_null() => ("ConfigMap", m, text(&m["name"])),
                _ => continue,
            };
            match source["items"].as_sequence() {
                Some(items) => {
                    refs.extend(items.iter().map(|i| (kind.into(), name.clone(), Some(text(&i["key"])))))
                }
                None => {
                    refs.insert((kind.into(), name, None));
                }
            }
        }
    }
    refs
}

#[test]
fn every_secret_and_config_map_a_workload_reads_is_defined_with_its_keys() {
    let docs = all_documents();
    let mut defined: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (_, doc) in &docs {
        let (kind, name) = kind_and_name(doc);
        if kind == "Secret" || kind == "ConfigMap" {
            let keys = ["data", "stringData"]
                .into_iter()
                .filter_map(|f| doc[f].as_mapping())
                .flat_map(|m| m.keys().map(text))
                .collect();
            defined.insert((kind, name), keys);
        }
    }
    let refs = references(&docs);
    let secrets = refs.iter().filter(|(kind, _, _)| kind == "Secret").count();
    assert!(secrets >= 7, "the application's and the sidecars' Secrets are all read: {refs:?}");
    for (kind, name, key) in &refs {
        let keys =
            defined.get(&(kind.clone(), name.clone())).unwrap_or_else(|| panic!("no example {kind} {name}"));
        if let Some(key) = key {
            assert!(keys.contains(key), "{kind} {name} has no key {key}: {keys:?}");
        }
    }
    // The examples are examples: placeholders only, every Secret under example-secrets/.
    for (file, doc) in &docs {
        if text(&doc["kind"]) == "Secret" {
            assert!(file.contains("/example-secrets/"), "{file}: a Secret outside example-secrets/");
            let values: Vec<String> =
                doc["stringData"].as_mapping().expect("stringData").values().map(text).collect();
            assert!(values.iter().all(|v| v.contains("change-me")), "{file}: {values:?}");
        }
    }
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value.as_mapping().into_iter().flatten().map(|(k, v)| (text(k), text(v))).collect()
}

fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let wanted = self::labels(&selector["matchLabels"]);
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_reconciler_has_a_disruption_budget_that_still_lets_a_node_drain() {
    let docs = all_documents();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| kind_and_name(d) == (kind.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let reconciler = find("Deployment", "relay-reconciler");
    let pod_labels = labels(&reconciler["spec"]["template"]["metadata"]["labels"]);
    let budgets: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| text(&d["kind"]) == "PodDisruptionBudget" && selects(&d["spec"]["selector"], &pod_labels))
        .collect();
    assert_eq!(budgets.len(), 1, "one budget selects the reconciler's pods");
    let budget = budgets[0];
    assert_eq!(budget["apiVersion"].as_str(), Some("policy/v1"));
    assert_eq!(budget["metadata"]["namespace"], reconciler["metadata"]["namespace"]);
    let replicas = reconciler["spec"]["replicas"].as_u64().expect("replicas");
    let evictable = match (budget["spec"]["maxUnavailable"].as_u64(), budget["spec"]["minAvailable"].as_u64())
    {
        (Some(max), None) => max,
        (None, Some(min)) => replicas.saturating_sub(min),
        other => panic!("maxUnavailable or minAvailable, as a number: {other:?}"),
    };
    assert!(evictable >= 1, "the budget would block every drain: {budget:?}");
}

#[test]
fn the_prometheus_rule_holds_exactly_the_alerts_of_alerts_yml() {
    let docs = all_documents();
    let rules: Vec<&Value> =
        docs.iter().map(|(_, d)| d).filter(|d| text(&d["kind"]) == "PrometheusRule").collect();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let alerts: Value = serde_yaml_ng::from_str(&read("deploy/prometheus/alerts.yml")).expect("YAML");
    assert!(alerts["groups"].as_sequence().is_some_and(|g| !g.is_empty()), "alerts.yml has groups");
    assert!(
        rules[0]["spec"]["groups"] == alerts["groups"],
        "prometheusrule.yaml differs from deploy/prometheus/alerts.yml: run `make prometheus-rule`"
    );
}

#[test]
fn the_service_monitor_scrapes_every_relay_container_under_the_job_names_the_alerts_use() {
    let docs = all_documents();
    let monitors: Vec<&Value> =
        docs.iter().map(|(_, d)| d).filter(|d| text(&d["kind"]) == "ServiceMonitor").collect();
    assert_eq!(monitors.len(), 1);
    let monitor = monitors[0];
    let services: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| {
            text(&d["kind"]) == "Service"
                && selects(&monitor["spec"]["selector"], &labels(&d["metadata"]["labels"]))
        })
        .collect();
    assert_eq!(services.len(), 1, "the ServiceMonitor selects the relay-metrics Service");
    assert_eq!(text(&services[0]["metadata"]["name"]), "relay-metrics");
    let endpoint = &monitor["spec"]["endpoints"][0];
    let port_names: Vec<String> =
        services[0]["spec"]["ports"].as_sequence().expect("ports").iter().map(|p| text(&p["name"])).collect();
    assert!(port_names.contains(&text(&endpoint["port"])), "{:?} not in {port_names:?}", endpoint["port"]);
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    let service_selector = labels(&services[0]["spec"]["selector"]);

    // job comes from the container's name; the Compose Prometheus names its jobs after the
    // binaries, and so do the alerts (up{job=~...}): each relay container is named after its binary.
    let relabel = endpoint["relabelings"].as_sequence().expect("relabelings");
    assert!(relabel.iter().any(|r| r["targetLabel"] == "job"
        && r["sourceLabels"]
            .as_sequence()
            .is_some_and(|s| s.len() == 1 && s[0] == "__meta_kubernetes_pod_container_name")));
    let prometheus: Value = serde_yaml_ng::from_str(&read("deploy/prometheus/prometheus.yml")).expect("YAML");
    let jobs: BTreeSet<String> = prometheus["scrape_configs"]
        .as_sequence()
        .expect("jobs")
        .iter()
        .map(|j| text(&j["job_name"]))
        .collect();
    let containers = kubernetes_containers(&docs);
    let relay: Vec<&Container> = containers.iter().filter(|c| c.binary().is_some()).collect();
    assert_eq!(relay.len(), 3);
    for c in relay {
        let name = text(&c.spec["name"]);
        assert_eq!(Some(name.as_str()), c.binary(), "{}: container named after its binary", c.origin);
        assert!(jobs.contains(&name), "{name} is no job of deploy/prometheus/prometheus.yml: {jobs:?}");
    }
    for (_, doc) in &docs {
        if text(&doc["kind"]) == "Deployment" {
            let pod = labels(&doc["spec"]["template"]["metadata"]["labels"]);
            assert!(
                service_selector.iter().all(|(k, v)| pod.get(k) == Some(v)),
                "{:?} not behind relay-metrics",
                doc["metadata"]["name"]
            );
        }
    }
}
