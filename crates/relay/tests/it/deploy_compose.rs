//! docker-compose.yml and the Grafana dashboard as a user meets them, checked without Docker:
//! the Kafka listener the host reaches (`KAFKA_BROKERS=localhost:9094 make test`), a working
//! readiness health check on every relay service, and a dashboard that imports into any Grafana.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpListener,
};

use serde_yaml_ng::Value;

use crate::deploy_files::*;

fn compose() -> BTreeMap<String, Container> {
    compose_services(&read("docker-compose.yml"))
        .into_iter()
        .map(|c| (c.origin.trim_start_matches("docker-compose.yml: ").to_string(), c))
        .collect()
}

/// `NAME://HOST:PORT,...` as (name, host, port).
fn listeners(list: &str) -> Vec<(String, String, u16)> {
    list.split(',')
        .map(|l| {
            let (name, address) = l.split_once("://").unwrap_or_else(|| panic!("listener {l}"));
            let (host, port) = address.rsplit_once(':').unwrap_or_else(|| panic!("listener {l}"));
            (name.to_string(), host.to_string(), port.parse().unwrap_or_else(|_| panic!("port in {l}")))
        })
        .collect()
}

#[test]
fn compose_kafka_has_a_listener_the_host_reaches_and_one_for_the_containers() {
    let services = compose();
    let kafka = &services["kafka"];
    let env = |name: &str| kafka.env.get(name).cloned().unwrap_or_else(|| panic!("kafka has no {name}"));
    let bound = listeners(&env("KAFKA_LISTENERS"));
    let advertised = listeners(&env("KAFKA_ADVERTISED_LISTENERS"));
    let protocols: BTreeMap<String, String> = env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
        .split(',')
        .map(|p| p.split_once(':').map(|(l, s)| (l.to_string(), s.to_string())).expect("LISTENER:PROTOCOL"))
        .collect();
    let published: Vec<String> = kafka.spec["ports"]
        .as_sequence()
        .expect("kafka publishes a port for the host")
        .iter()
        .map(|p| p.as_str().expect("a port mapping").to_string())
        .collect();

    // The host's listener: advertised as localhost:P, bound on P, published as P on the host.
    let (name, _, port) = advertised
        .iter()
        .find(|(_, host, _)| host == "localhost" || host == "127.0.0.1")
        .expect("a listener advertised to the host");
    assert!(bound.iter().any(|(n, _, p)| n == name && p == port), "{name} is not bound on {port}");
    assert_eq!(protocols.get(name).map(String::as_str), Some("PLAINTEXT"), "{name}: no TLS in the demo");
    assert!(
        published.iter().any(|m| m.ends_with(&format!(":{port}:{port}")) || *m == format!("{port}:{port}")),
        "port {port} is not published: {published:?}"
    );
    let readme = read("README.md");
    let documented = format!("KAFKA_BROKERS=localhost:{port} make test");
    assert!(readme.contains(&documented), "README does not say {documented:?}");

    // The containers' listener: every relay service's KAFKA_BROKERS is advertised on it, and the
    // brokers talk among themselves on it, not on the host's.
    let internal: Vec<String> = advertised
        .iter()
        .filter(|(n, _, _)| n != name)
        .map(|(_, host, port)| format!("{host}:{port}"))
        .collect();
    for c in services.values().filter(|c| c.env.contains_key("KAFKA_BROKERS")) {
        assert!(internal.contains(&c.env["KAFKA_BROKERS"]), "{}: {:?} vs {internal:?}", c.origin, c.env);
    }
    assert_ne!(
        kafka.env.get("KAFKA_INTER_BROKER_LISTENER_NAME"),
        Some(name),
        "inter-broker on the host's listener"
    );
}

/// Answers every connection on `listener` with `status_line`, until the test ends.
fn serve(listener: TcpListener, status_line: &'static str) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0_u8; 1024];
            let n = stream.read(&mut request).unwrap_or(0);
            let path = String::from_utf8_lossy(&request[..n]).split(' ').nth(1).unwrap_or("").to_string();
            let line = if path == "/readyz" { status_line } else { "HTTP/1.1 404 Not Found" };
            let _ = stream.write_all(format!("{line}\r\ncontent-length: 0\r\n\r\n").as_bytes());
        }
    });
}

/// Runs a health check's `CMD` with its port replaced by `port`; true when it reports healthy.
fn run_check(test: &[String], port: u16, health_port: u16) -> bool {
    assert_eq!(test.first().map(String::as_str), Some("CMD"), "{test:?}");
    let argv: Vec<String> =
        test[1..].iter().map(|a| a.replace(&health_port.to_string(), &port.to_string())).collect();
    let status =
        std::process::Command::new(&argv[0]).args(&argv[1..]).status().expect("run the health check");
    status.success()
}

#[test]
fn every_relay_service_in_compose_has_a_readiness_health_check_that_tells_200_from_503() {
    let services = compose();
    let mut checked = 0;
    for c in services.values() {
        let Some(accepted) = check(c).unwrap_or_else(|e| panic!("{}: {e}", c.origin)) else { continue };
        let port = accepted.http_port.expect("every relay service in compose serves HTTP");
        let test: Vec<String> = c.spec["healthcheck"]["test"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{} has no healthcheck", c.origin))
            .iter()
            .map(|a| a.as_str().expect("a string").to_string())
            .collect();
        let command = test.join(" ");
        assert!(
            command.contains(&format!("/{port}")) && command.contains("/readyz"),
            "{}: {command}",
            c.origin
        );

        // The check itself, against stand-ins for the service: ready, not ready, not listening.
        let ready = TcpListener::bind("127.0.0.1:0").expect("bind");
        let not_ready = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (ready_port, not_ready_port) =
            (ready.local_addr().expect("addr").port(), not_ready.local_addr().expect("addr").port());
        serve(ready, "HTTP/1.1 200 OK");
        serve(not_ready, "HTTP/1.1 503 Service Unavailable");
        assert!(run_check(&test, ready_port, port), "{}: healthy on 200", c.origin);
        assert!(!run_check(&test, not_ready_port, port), "{}: unhealthy on 503", c.origin);
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        assert!(!run_check(&test, closed, port), "{}: unhealthy when nothing listens", c.origin);
        checked += 1;
    }
    assert_eq!(checked, 5, "two pollers, two consumers and the reconciler");
    // What waits for the relay waits for it to be healthy, not merely started.
    for (service, on) in
        [("reconciler", "payments-outbox-poller"), ("payments-generator", "payments-outbox-poller")]
    {
        let condition = &services[service].spec["depends_on"][on]["condition"];
        assert_eq!(condition.as_str(), Some("service_healthy"), "{service} on {on}");
    }
}

#[test]
fn the_dashboard_takes_its_data_source_as_an_input_and_provisioning_still_resolves_it() {
    let text = read("deploy/grafana/dashboards/relay.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert_eq!(inputs[0]["name"], "DS_PROMETHEUS");
    assert_eq!(inputs[0]["type"], "datasource");
    assert_eq!(inputs[0]["pluginId"], "prometheus");

    // Every panel and query uses the input; no data source uid of any one Grafana is left.
    let mut uses = 0;
    for panel in dashboard["panels"].as_array().expect("panels").iter().filter(|p| p["type"] != "row") {
        for source in std::iter::once(&panel["datasource"])
            .chain(panel["targets"].as_array().into_iter().flatten().map(|t| &t["datasource"]))
        {
            assert_eq!(source["uid"], "${DS_PROMETHEUS}", "panel {}", panel["title"]);
            assert_eq!(source["type"], "prometheus", "panel {}", panel["title"]);
            uses += 1;
        }
    }
    assert!(uses > 20, "{uses} data source references");
    // Anywhere in the document (panels nested in collapsed rows, annotations, variables): every
    // data source reference names the input, never a uid of one Grafana.
    let mut references = Vec::new();
    data_sources(&dashboard, "", &mut references);
    let fixed: Vec<&(String, serde_json::Value)> =
        references.iter().filter(|(_, source)| source["uid"] != "${DS_PROMETHEUS}").collect();
    assert!(fixed.is_empty(), "data sources not taken from the input: {fixed:?}");
    assert!(references.len() >= uses, "{} references found by the walk, {uses} by panel", references.len());
    let uids: Vec<&str> = text.split("\"uid\": \"").skip(1).filter_map(|t| t.split('"').next()).collect();
    assert!(uids.iter().all(|u| *u == "relay" || *u == "${DS_PROMETHEUS}"), "{uids:?}");

    // A provisioned dashboard is not imported, so nothing fills the input: a data source variable
    // of the same name resolves it to the default Prometheus, which provisioning defines.
    let variables = dashboard["templating"]["list"].as_array().expect("templating");
    let variable = variables.iter().find(|v| v["name"] == "DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(variable["type"], "datasource");
    assert_eq!(variable["query"], "prometheus");
    let provisioned: Value =
        serde_yaml_ng::from_str(&read("deploy/grafana/provisioning/datasources/prometheus.yml"))
            .expect("YAML");
    let sources = provisioned["datasources"].as_sequence().expect("datasources");
    let defaults: Vec<&Value> = sources.iter().filter(|d| d["isDefault"].as_bool() == Some(true)).collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0]["type"].as_str(), Some("prometheus"));
}

/// Collects every `datasource` value under `value`, with its JSON path.
fn data_sources(value: &serde_json::Value, path: &str, found: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let child_path = format!("{path}/{key}");
                if key == "datasource" {
                    found.push((child_path.clone(), child.clone()));
                }
                data_sources(child, &child_path, found);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                data_sources(child, &format!("{path}/{i}"), found);
            }
        }
        _ => {}
    }
}
