//! What ships and what it needs: the product package (`crates/relay`) builds only the services
//! and `relay-admin` and depends on no tool under `tools/`; the image builds that package alone
//! and strips it; the declared `rust-version` is at least what every locked dependency needs.
//! Reads `cargo metadata` (no network: the dependencies are already fetched) and the files.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::deploy_files::{read, repo_root};

/// `cargo metadata` for this machine's platform, so no other platform's crates are fetched.
fn metadata() -> Value {
    let cargo = env!("CARGO");
    let version = std::process::Command::new(cargo).arg("-vV").output().expect("cargo -vV");
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let host = version.lines().find_map(|l| l.strip_prefix("host: ")).expect("cargo -vV names the host");
    let output = std::process::Command::new(cargo)
        .current_dir(repo_root())
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", host])
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn str_of<'v>(value: &'v Value, field: &str) -> &'v str {
    value[field].as_str().unwrap_or_else(|| panic!("{field} in {value}"))
}

/// Workspace packages by name, with the directory they live in relative to the root.
fn workspace_packages(meta: &Value) -> BTreeMap<String, (String, Value)> {
    let root = str_of(meta, "workspace_root").to_string();
    let members: BTreeSet<&str> =
        meta["workspace_members"].as_array().expect("members").iter().filter_map(Value::as_str).collect();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| members.contains(str_of(p, "id")))
        .map(|p| {
            let manifest = str_of(p, "manifest_path");
            let dir =
                manifest.trim_start_matches(&root).trim_start_matches('/').trim_end_matches("/Cargo.toml");
            (str_of(p, "name").to_string(), (dir.to_string(), p.clone()))
        })
        .collect()
}

/// Every package `id` needs to build (normal and build dependencies, not dev), transitively.
fn build_closure(meta: &Value, id: &str) -> BTreeSet<String> {
    let nodes: BTreeMap<&str, &Value> =
        meta["resolve"]["nodes"].as_array().expect("resolve").iter().map(|n| (str_of(n, "id"), n)).collect();
    let mut seen = BTreeSet::new();
    let mut pending = vec![id.to_string()];
    while let Some(next) = pending.pop() {
        if !seen.insert(next.clone()) {
            continue;
        }
        for dep in nodes[next.as_str()]["deps"].as_array().expect("deps") {
            let for_building = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"));
            if for_building {
                pending.push(str_of(dep, "pkg").to_string());
            }
        }
    }
    seen
}

#[test]
fn the_product_package_builds_only_the_services_and_depends_on_no_tool() {
    let meta = metadata();
    let packages = workspace_packages(&meta);
    let tools: BTreeSet<&str> =
        packages.iter().filter(|(_, (dir, _))| dir.starts_with("tools/")).map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        tools,
        BTreeSet::from(["relay-bench", "relay-chaos", "relay-demo"]),
        "tools/ holds the tooling"
    );
    for (name, (dir, _)) in &packages {
        assert!(dir.starts_with("crates/") || dir.starts_with("tools/"), "{name} lives in {dir}");
    }

    let (_, relay) = &packages["relay"];
    let closure = build_closure(&meta, str_of(relay, "id"));
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (str_of(p, "id"), str_of(p, "name")))
        .collect();
    let needed: BTreeSet<&str> = closure.iter().map(|id| names[id.as_str()]).collect();
    let tools_needed: Vec<&&str> = tools.iter().filter(|t| needed.contains(**t)).collect();
    assert!(tools_needed.is_empty(), "building the relay package compiles tools: {tools_needed:?}");
    assert!(needed.contains("relay-poller") && needed.contains("relay-inbox"), "{needed:?}");

    let bins: BTreeSet<&str> = relay["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .map(|t| str_of(t, "name"))
        .collect();
    assert_eq!(
        bins,
        BTreeSet::from([
            "inbox-consumer",
            "outbox-poller",
            "reconciler",
            "relay-admin",
            "relay-example-worker"
        ])
    );
}

/// `1.92` or `1.92.0` as (1, 92, 0).
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap_or_else(|_| panic!("version {text}")));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn rust_version_covers_every_locked_dependency() {
    let meta = metadata();
    let resolved: BTreeSet<&str> =
        meta["resolve"]["nodes"].as_array().expect("resolve").iter().map(|n| str_of(n, "id")).collect();
    let packages = workspace_packages(&meta);
    let declared: BTreeSet<&str> = packages
        .values()
        .map(|(_, p)| p["rust_version"].as_str().expect("every member declares rust-version"))
        .collect();
    assert_eq!(declared.len(), 1, "one rust-version for the workspace: {declared:?}");
    let ours = version(declared.iter().next().expect("one"));

    let mut needs: Vec<((u64, u64, u64), String)> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| resolved.contains(str_of(p, "id")))
        .filter_map(|p| {
            Some((
                version(p["rust_version"].as_str()?),
                format!("{} {}", str_of(p, "name"), str_of(p, "version")),
            ))
        })
        .collect();
    needs.sort();
    let (highest, which) = needs.last().expect("dependencies declare rust-version").clone();
    assert!(ours >= highest, "rust-version {ours:?} is older than {which} needs ({highest:?})");
    // A dependency that needs more than the declared version is caught above; the README's
    // prerequisite names the same version.
    let readme = read("README.md");
    let stated = format!("Rust {}.{} or newer", ours.0, ours.1);
    assert!(readme.contains(&stated), "README's prerequisites should say {stated:?}");
}

#[test]
fn the_image_builds_the_product_package_alone_and_strips_its_binaries() {
    let dockerfile = read("deploy/Dockerfile");
    let builds: Vec<&str> = dockerfile.split("RUN ").filter(|step| step.contains("cargo build")).collect();
    assert_eq!(builds.len(), 2, "one build for the product image, one for the demo tools");
    let product = builds[0];
    for expected in ["-p relay ", "--profile dist", "--locked"] {
        assert!(product.contains(expected), "the product build lacks {expected:?}: {product}");
    }
    let shipped: BTreeSet<&str> = product
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1])
        .collect();
    assert_eq!(shipped, BTreeSet::from(["inbox-consumer", "outbox-poller", "reconciler", "relay-admin"]));
    assert!(builds[1].contains("-p relay-demo"), "{}", builds[1]);

    // The stages: the product image is the default (last) target and copies only the product
    // build's output; the demo image adds relay-demo on top.
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .map(|l| l.rsplit(' ').next().expect("stage name"))
        .collect();
    assert_eq!(stages, ["build", "build-demo", "runtime", "demo", "relay"]);
    let runtime = &dockerfile
        [dockerfile.find("AS runtime").expect("runtime")..dockerfile.find("AS demo").expect("demo")];
    let copies: Vec<&str> = runtime.lines().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(copies, ["COPY --from=build /out/ /usr/local/bin/"]);

    // The dist profile: release, debug information stripped at link time.
    let manifest = read("Cargo.toml");
    let dist = manifest.split("[profile.dist]").nth(1).expect("a [profile.dist] in Cargo.toml");
    let dist = dist.split("\n[").next().unwrap_or(dist);
    assert!(dist.contains("inherits = \"release\""), "{dist}");
    assert!(dist.contains("strip = \"debuginfo\""), "{dist}");
}
