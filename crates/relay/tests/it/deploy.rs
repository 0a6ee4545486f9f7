//! The deployment files, checked without Docker or a cluster: every relay service's environment
//! in docker-compose.yml and deploy/kubernetes/ is accepted by the service's own configuration
//! parser, probes and scrape targets point at the port the service really serves, and the
//! dashboard and alerts query only metrics the services export. Needs neither broker nor database.
use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::Value;

use crate::deploy_files::*;

/// Runs every container through [`check`]: the relay ones that were accepted, by origin, or
/// every failure.
fn accept_all(containers: &[Container]) -> Result<BTreeMap<String, Accepted>, Vec<String>> {
    let mut accepted = BTreeMap::new();
    let mut failures = Vec::new();
    for c in containers {
        match check(c) {
            Ok(Some(a)) => {
                accepted.insert(c.origin.clone(), a);
            }
            Ok(None) => {}
            Err(problems) => failures.push(format!("{}: {problems}", c.origin)),
        }
    }
    if failures.is_empty() {
        Ok(accepted)
    } else {
        Err(failures)
    }
}

fn kubernetes() -> Vec<Container> {
    kubernetes_containers(&kubernetes_documents(&repo_root().join("deploy/kubernetes")))
}

#[test]
fn every_relay_service_in_docker_compose_is_accepted_by_its_own_parser() {
    let accepted = accept_all(&compose_services(&read("docker-compose.yml"))).unwrap_or_else(|f| {
        panic!("docker-compose.yml has configuration the services refuse:\n{}", f.join("\n"))
    });
    let roles: Vec<(&str, &str, Option<u16>)> = accepted
        .iter()
        .map(|(origin, a)| (origin.trim_start_matches("docker-compose.yml: "), a.binary, a.http_port))
        .collect();
    assert_eq!(
        roles,
        [
            ("ledger-inbox-consumer", "inbox-consumer", Some(9464)),
            ("notifications-inbox-consumer", "inbox-consumer", Some(9464)),
            ("payments-outbox-poller", "outbox-poller", Some(9464)),
            ("payments-outbox-poller-standby", "outbox-poller", Some(9464)),
            ("reconciler", "reconciler", Some(9464)),
        ]
    );
}

#[test]
fn prometheus_scrapes_every_relay_service_of_the_compose_demo_on_its_metrics_port() {
    let accepted = accept_all(&compose_services(&read("docker-compose.yml"))).expect("compose is accepted");
    let serving: BTreeSet<String> = accepted
        .iter()
        .map(|(origin, a)| {
            let service = origin.trim_start_matches("docker-compose.yml: ");
            format!("{service}:{}", a.http_port.expect("every relay service serves /metrics"))
        })
        .collect();
    let mut config: Value = serde_yaml_ng::from_str(&read("deploy/prometheus/prometheus.yml")).expect("YAML");
    config.apply_merge().expect("merges");
    let scraped: BTreeSet<String> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().expect("static_configs").clone())
        .flat_map(|group| group["targets"].as_sequence().expect("targets").clone())
        .map(|t| t.as_str().expect("target").to_string())
        .collect();
    assert_eq!(scraped, serving);
}

#[test]
fn every_relay_container_in_the_kubernetes_manifests_is_accepted_by_its_own_parser() {
    let containers = kubernetes();
    let accepted = accept_all(&containers).unwrap_or_else(|f| {
        panic!("deploy/kubernetes has configuration the services refuse:\n{}", f.join("\n"))
    });
    let binaries: BTreeSet<&str> = accepted.values().map(|a| a.binary).collect();
    assert_eq!(binaries, RELAY_BINARIES.into_iter().collect(), "a sidecar of each kind and the reconciler");
    // The consumer's database URL comes from a mounted Secret file, the others' from env.
    let consumer = containers.iter().find(|c| c.binary() == Some("inbox-consumer")).expect("consumer");
    assert!(consumer.env.contains_key("DATABASE_URL_FILE") && !consumer.files.is_empty(), "{consumer:?}");
}

/// The named or numbered container port a probe or annotation refers to.
fn port_number(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => container["ports"]
            .as_sequence()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
}

/// Everything wrong with how one accepted relay container is deployed.
fn deployment_problems(c: &Container, accepted: &Accepted) -> Vec<String> {
    let mut problems = Vec::new();
    let pod = c.pod.as_ref().expect("a Kubernetes container");
    let Some(port) = accepted.http_port else {
        return vec!["serves no /metrics, /healthz and /readyz (set RELAY_HTTP_ADDR or --serve)".into()];
    };
    let probe = |kind: &str| {
        let probe = c.spec.get(kind)?;
        Some((
            probe["httpGet"]["path"].as_str().map(String::from),
            port_number(&c.spec, &probe["httpGet"]["port"]),
        ))
    };
    match probe("livenessProbe") {
        Some((Some(path), Some(p))) if path == "/healthz" && p == port => {}
        other => problems.push(format!("livenessProbe must GET /healthz on port {port}, is {other:?}")),
    }
    // A sidecar's readiness is its pod's: it may depend on the schema only, never on Kafka.
    let readiness = if pod.has_application { "/readyz?parts=schema" } else { "/readyz" };
    match probe("readinessProbe") {
        Some((Some(path), Some(p))) if path == readiness && p == port => {}
        other => problems.push(format!("readinessProbe must GET {readiness} on port {port}, is {other:?}")),
    }
    if pod.annotations.get("prometheus.io/port") != Some(&port.to_string()) {
        problems.push(format!("pod annotation prometheus.io/port must be {port}: {:?}", pod.annotations));
    }
    let non_root = |v: &Value| v["securityContext"]["runAsNonRoot"].as_bool();
    if non_root(&c.spec).or(non_root(&pod.spec)) != Some(true) {
        problems.push("runAsNonRoot is not true".into());
    }
    if c.spec["securityContext"]["readOnlyRootFilesystem"].as_bool() != Some(true) {
        problems.push("readOnlyRootFilesystem is not true".into());
    }
    for bound in ["requests", "limits"] {
        if c.spec["resources"][bound]["memory"].as_str().is_none() {
            problems.push(format!("no memory {bound}"));
        }
    }
    if pod.spec["enableServiceLinks"].as_bool() != Some(false) {
        problems.push("enableServiceLinks is not false: Service variables can collide with settings".into());
    }
    problems
}

/// Probes and the scrape annotation on the port the parsed configuration serves; non-root,
/// read-only root, memory bounds, no Service-link variables; sidecars ready on their schema only.
#[test]
fn kubernetes_probes_and_scrape_annotations_use_the_port_each_service_serves() {
    let containers = kubernetes();
    let accepted = accept_all(&containers).expect("the manifests are accepted");
    let problems: Vec<String> = containers
        .iter()
        .filter_map(|c| Some((c, accepted.get(&c.origin)?)))
        .flat_map(|(c, a)| deployment_problems(c, a).into_iter().map(move |p| format!("{}: {p}", c.origin)))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_misspelt_variable_in_a_deployment_file_is_caught() {
    let compose = read("docker-compose.yml")
        .replace("OUTBOX_TOPICS:", "OUTBOX_TOPIC:")
        .replace("RECONCILE_INTERVAL_SECS:", "RECONCILE_INTERVAL:");
    let failures = accept_all(&compose_services(&compose)).expect_err("the typos are refused");
    assert_eq!(failures.len(), 3, "{failures:#?}");
    for (failure, service) in
        failures.iter().zip(["payments-outbox-poller", "payments-outbox-poller-standby"])
    {
        assert!(failure.starts_with(&format!("docker-compose.yml: {service}: ")), "{failure}");
        assert!(failure.contains("OUTBOX_TOPIC: is not a setting this service knows"), "{failure}");
    }
    assert!(failures[2].starts_with("docker-compose.yml: reconciler: "), "{}", failures[2]);
    assert!(
        failures[2].contains("RECONCILE_INTERVAL: is not a setting this service knows"),
        "{}",
        failures[2]
    );

    // The same through a manifest: the consumer loses its required INBOX_NAME to the typo.
    let dir = repo_root().join("deploy/kubernetes");
    let docs: Vec<(String, Value)> = kubernetes_documents(&dir)
        .into_iter()
        .filter(|(file, _)| !file.ends_with("ledger-service.yaml"))
        .chain(parse_documents(
            "ledger-service.yaml",
            &read("deploy/kubernetes/ledger-service.yaml").replace("name: INBOX_NAME,", "name: INBOX_NAMES,"),
        ))
        .collect();
    let failures = accept_all(&kubernetes_containers(&docs)).expect_err("the typo is refused");
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].starts_with("ledger-service.yaml: Deployment ledger-service/inbox-consumer: "),
        "{}",
        failures[0]
    );
    for expected in
        ["INBOX_NAME: is required but not set", "INBOX_NAMES: is not a setting this service knows"]
    {
        assert!(failures[0].contains(expected), "missing {expected:?} in {}", failures[0]);
    }
}

/// Every `relay_*` name in a PromQL expression; a histogram's series (`_bucket`, `_sum`,
/// `_count` of a `_seconds` histogram) count as the histogram's name.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("relay_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|base| base.ends_with("_seconds")));
        names.push(histogram.unwrap_or(name).to_string());
        rest = &tail[end..];
    }
    names
}

/// Every string literal `"relay_..."` in the services' sources, i.e. the metrics they export.
fn exported_metrics() -> BTreeSet<String> {
    let mut sources = String::new();
    let mut pending = vec![repo_root().join("crates")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("list crates") {
            let path = entry.expect("entry").path();
            if path.is_dir() && !path.ends_with("tests") {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).expect("read source"));
            }
        }
    }
    sources.split('"').filter(|s| s.starts_with("relay_")).map(String::from).collect()
}

#[test]
fn the_dashboard_and_alerts_query_only_metrics_the_services_export() {
    let exported = exported_metrics();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/relay.json")).expect("JSON");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect();
    let alerts: Value = serde_yaml_ng::from_str(&read("deploy/prometheus/alerts.yml")).expect("YAML");
    let rules = alerts["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone());
    exprs.extend(rules.map(|r| r["expr"].as_str().expect("expr").to_string()));
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "queried but exported by no service: {unknown:?}");
    for expected in [
        "relay_outbox_backlog",
        "relay_outbox_leader",
        "relay_inbox_consumer_lag",
        "relay_ready",
        "relay_reconcile_findings",
    ] {
        assert!(used.contains(expected), "the dashboard does not show {expected}");
    }
}
