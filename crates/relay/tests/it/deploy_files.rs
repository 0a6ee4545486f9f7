//! What each relay container in the deployment files would run with: its command line, its
//! environment and the secret files mounted into it, read from docker-compose.yml (anchors and
//! `<<` merges resolved) and from the Kubernetes manifests (ConfigMaps and Secrets resolved).
//! [`check`] then hands them to the service's own configuration parser.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use relay_config::Environment;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// The binaries whose configuration is checked; anything else (an application container,
/// Kafka, PostgreSQL, relay-demo) is not a relay service.
pub const RELAY_BINARIES: [&str; 3] = ["outbox-poller", "inbox-consumer", "reconciler"];

/// One container as its process would start.
#[derive(Debug, Clone)]
pub struct Container {
    /// Where it is declared, for messages: `docker-compose.yml: reconciler`.
    pub origin: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Mounted files by path (Kubernetes secret and ConfigMap volumes).
    pub files: BTreeMap<String, String>,
    /// The container's own YAML (Kubernetes) or the service's (Compose).
    pub spec: Value,
    /// The pod around a Kubernetes container: its spec and annotations.
    pub pod: Option<Pod>,
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub spec: Value,
    pub annotations: BTreeMap<String, String>,
    /// Some container of the pod runs no relay binary: the relay ones are its sidecars.
    pub has_application: bool,
}

impl Container {
    /// The relay binary this container runs, if any.
    pub fn binary(&self) -> Option<&'static str> {
        relay_binary(&self.argv)
    }
}

fn relay_binary(argv: &[String]) -> Option<&'static str> {
    let program = argv.first()?.rsplit('/').next()?;
    RELAY_BINARIES.into_iter().find(|b| *b == program)
}

/// Which parser accepted a container, and the port its /metrics, /healthz and /readyz are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub binary: &'static str,
    pub http_port: Option<u16>,
}

/// The container's variables and files, as the service reads them.
struct DeployEnv<'c>(&'c Container);

impl Environment for DeployEnv<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.env.get(name).cloned()
    }
    fn names(&self) -> Vec<String> {
        self.0.env.keys().cloned().collect()
    }
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        self.0.files.get(path).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no volume of this container mounts it")
        })
    }
}

/// Runs the container's configuration through its service's parser: `Ok(None)` for a
/// container that runs no relay service, `Err` with every problem the parser reported.
pub fn check(container: &Container) -> Result<Option<Accepted>, String> {
    let env = DeployEnv(container);
    let accepted = match container.binary() {
        None => return Ok(None),
        Some(binary @ "outbox-poller") => relay_poller::PollerConfig::from_env(&env)
            .map(|c| Accepted { binary, http_port: c.common.http_addr.map(|a| a.port()) })
            .map_err(|e| e.to_string())?,
        Some(binary @ "inbox-consumer") => relay_inbox::ConsumerConfig::from_env(&env)
            .map(|c| Accepted { binary, http_port: c.common.http_addr.map(|a| a.port()) })
            .map_err(|e| e.to_string())?,
        Some(binary) => {
            let config = relay_reconciler::Config::from_env(&env, &container.argv)
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Accepted { binary, http_port: config.serve.then(|| config.metrics_addr.port()) }
        }
    };
    Ok(Some(accepted))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A scalar as the string a process would see (`"30"` for `30`, `"true"` for `true`).
fn scalar(value: &Value, what: &str) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("{what}: expected a scalar, found {other:?}"),
    };
    assert!(!text.contains("${") && !text.contains("$("), "{what}: substitution is not supported: {text}");
    text
}

fn strings(value: Option<&Value>, what: &str) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().map(|v| scalar(v, what)).collect(),
        Some(Value::String(line)) => line.split_whitespace().map(String::from).collect(),
        Some(other) => panic!("{what}: expected a list, found {other:?}"),
    }
}

fn string_map(value: Option<&Value>, what: &str) -> BTreeMap<String, String> {
    match value {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Mapping(map)) => {
            map.iter().map(|(k, v)| (scalar(k, what), scalar(v, &format!("{what}.{k:?}")))).collect()
        }
        // Compose also allows a list of NAME=VALUE.
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                let line = scalar(item, what);
                let (k, v) =
                    line.split_once('=').unwrap_or_else(|| panic!("{what}: {line:?} is not NAME=VALUE"));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(other) => panic!("{what}: expected a mapping, found {other:?}"),
    }
}

/// Every service of a Compose file, with merges applied.
pub fn compose_services(text: &str) -> Vec<Container> {
    let mut doc: Value = serde_yaml_ng::from_str(text).expect("docker-compose.yml is YAML");
    doc.apply_merge().expect("docker-compose.yml: << merges apply");
    let services = doc.get("services").and_then(Value::as_mapping).expect("docker-compose.yml has services");
    services
        .iter()
        .map(|(name, service)| {
            let origin = format!("docker-compose.yml: {}", scalar(name, "service name"));
            Container {
                argv: strings(service.get("command"), &format!("{origin} command")),
                env: string_map(service.get("environment"), &format!("{origin} environment")),
                files: BTreeMap::new(),
                spec: service.clone(),
                pod: None,
                origin,
            }
        })
        .collect()
}

/// Every YAML document under `dir` (recursively), with the file it came from.
pub fn kubernetes_documents(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .flat_map(|path| {
            let name = path.strip_prefix(repo_root()).unwrap_or(&path).display().to_string();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {name}: {e}"));
            parse_documents(&name, &text)
        })
        .collect()
}

/// The documents of one multi-document YAML text.
pub fn parse_documents(name: &str, text: &str) -> Vec<(String, Value)> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            let mut value = Value::deserialize(document).unwrap_or_else(|e| panic!("{name}: {e}"));
            value.apply_merge().unwrap_or_else(|e| panic!("{name}: {e}"));
            (name.to_string(), value)
        })
        .filter(|(_, v)| !v.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn name(doc: &Value) -> String {
    doc.get("metadata").and_then(|m| m.get("name")).map(|n| scalar(n, "metadata.name")).unwrap_or_default()
}

/// The ConfigMaps' and Secrets' entries, by name.
struct Sources {
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl Sources {
    fn new(docs: &[(String, Value)]) -> Self {
        let entries = |wanted: &str, field: &str| -> BTreeMap<String, BTreeMap<String, String>> {
            docs.iter()
                .filter(|(_, d)| kind(d) == wanted)
                .map(|(file, d)| {
                    (name(d), string_map(d.get(field), &format!("{file}: {wanted} {}", name(d))))
                })
                .collect()
        };
        // Secrets are read from stringData: the example Secrets hold readable placeholders.
        Self { config_maps: entries("ConfigMap", "data"), secrets: entries("Secret", "stringData") }
    }

    /// The entries of the `secret` or `configMap` named `name`.
    fn get(&self, kind: &str, name: &str, what: &str) -> &BTreeMap<String, String> {
        let source = if kind == "secret" { &self.secrets } else { &self.config_maps };
        source.get(name).unwrap_or_else(|| panic!("{what}: no {kind} {name:?} in deploy/kubernetes"))
    }

    fn key(&self, kind: &str, reference: &Value, what: &str) -> String {
        let key = scalar(&reference["key"], "key");
        let entries = self.get(kind, &scalar(&reference["name"], "name"), what);
        entries.get(&key).cloned().unwrap_or_else(|| panic!("{what}: {kind} has no key {key:?}"))
    }
}

/// The environment a container's process gets from `envFrom` and `env`.
fn container_env(c: &Value, sources: &Sources, origin: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in c.get("envFrom").and_then(Value::as_sequence).into_iter().flatten() {
        let prefix = from.get("prefix").map(|p| scalar(p, "prefix")).unwrap_or_default();
        let (kind, reference) = match (from.get("configMapRef"), from.get("secretRef")) {
            (Some(r), None) => ("configMap", r),
            (None, Some(r)) => ("secret", r),
            _ => panic!("{origin}: envFrom needs one configMapRef or secretRef"),
        };
        for (k, v) in sources.get(kind, &scalar(&reference["name"], "name"), origin) {
            env.insert(format!("{prefix}{k}"), v.clone());
        }
    }
    for var in c.get("env").and_then(Value::as_sequence).into_iter().flatten() {
        let var_name = scalar(&var["name"], "env name");
        let what = format!("{origin} env {var_name}");
        let value = match (var.get("value"), var.get("valueFrom")) {
            (Some(v), None) => scalar(v, &what),
            (None, Some(from)) => match (from.get("secretKeyRef"), from.get("configMapKeyRef")) {
                (Some(r), None) => sources.key("secret", r, &what),
                (None, Some(r)) => sources.key("configMap", r, &what),
                // fieldRef and resourceFieldRef: the pod's name, a limit; any word will do.
                _ => format!("placeholder-{}", var_name.to_ascii_lowercase()),
            },
            (None, None) => String::new(),
            _ => panic!("{what}: both value and valueFrom"),
        };
        env.insert(var_name, value);
    }
    env
}

/// The files a container sees from its secret and ConfigMap volumes, by path.
fn container_files(
    c: &Value,
    volumes: &BTreeMap<String, Value>,
    sources: &Sources,
    origin: &str,
) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for mount in c.get("volumeMounts").and_then(Value::as_sequence).into_iter().flatten() {
        let volume_name = scalar(&mount["name"], "volumeMount name");
        let volume = volumes.get(&volume_name).unwrap_or_else(|| panic!("{origin}: no volume {volume_name}"));
        let dir = scalar(&mount["mountPath"], "mountPath");
        assert!(mount.get("subPath").is_none(), "{origin}: subPath mounts are not supported here");
        let (source, entries) = match (volume.get("secret"), volume.get("configMap")) {
            (Some(s), None) => (s, sources.get("secret", &scalar(&s["secretName"], "secretName"), origin)),
            (None, Some(m)) => (m, sources.get("configMap", &scalar(&m["name"], "name"), origin)),
            _ => continue,
        };
        // `items` mounts only the listed keys, each under its own path.
        let paths: BTreeMap<String, String> = match source.get("items").and_then(Value::as_sequence) {
            None => entries.keys().map(|k| (k.clone(), k.clone())).collect(),
            Some(items) => {
                items.iter().map(|i| (scalar(&i["key"], "key"), scalar(&i["path"], "path"))).collect()
            }
        };
        for (key, path) in paths {
            let value = entries
                .get(&key)
                .unwrap_or_else(|| panic!("{origin}: volume {volume_name} has no key {key}"));
            files.insert(format!("{}/{path}", dir.trim_end_matches('/')), value.clone());
        }
    }
    files
}

/// The containers of every workload in `docs`. A relay container's ConfigMaps and Secrets are
/// resolved from `docs`; other containers (the applications) are listed without environment.
pub fn kubernetes_containers(docs: &[(String, Value)]) -> Vec<Container> {
    let sources = Sources::new(docs);
    let mut out = Vec::new();
    for (file, doc) in docs {
        let template = match kind(doc) {
            "Pod" => doc.clone(),
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => doc["spec"]["template"].clone(),
            _ => continue,
        };
        let spec = template["spec"].clone();
        let containers: Vec<(&Value, String, Vec<String>)> = ["initContainers", "containers"]
            .into_iter()
            .filter_map(|list| spec.get(list).and_then(Value::as_sequence))
            .flatten()
            .map(|c| {
                let origin =
                    format!("{file}: {} {}/{}", kind(doc), name(doc), scalar(&c["name"], "container name"));
                let mut argv = strings(c.get("command"), &format!("{origin} command"));
                argv.extend(strings(c.get("args"), &format!("{origin} args")));
                (c, origin, argv)
            })
            .collect();
        let volumes: BTreeMap<String, Value> = spec
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .map(|v| (scalar(&v["name"], "volume name"), v.clone()))
            .collect();
        let pod = Pod {
            annotations: string_map(
                template.get("metadata").and_then(|m| m.get("annotations")),
                "annotations",
            ),
            has_application: containers.iter().any(|(_, _, argv)| relay_binary(argv).is_none()),
            spec: spec.clone(),
        };
        for (c, origin, argv) in containers {
            let mut container = Container {
                origin,
                argv,
                env: BTreeMap::new(),
                files: BTreeMap::new(),
                spec: c.clone(),
                pod: Some(pod.clone()),
            };
            if container.binary().is_some() {
                container.env = container_env(c, &sources, &container.origin);
                container.files = container_files(c, &volumes, &sources, &container.origin);
            }
            out.push(container);
        }
    }
    out
}
