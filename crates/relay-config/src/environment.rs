//! Where variables come from: the process, or a map in tests (no `set_var` anywhere).
use std::collections::BTreeMap;

/// A source of environment variables.
pub trait Environment {
    /// The value of `name`, if set (empty values count as set).
    fn get(&self, name: &str) -> Option<String>;
    /// Every variable name, used to find per-topic and pass-through settings and typos.
    fn names(&self) -> Vec<String>;
    /// Reads a file named by a `*_FILE` variable.
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn names(&self) -> Vec<String> {
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect()
    }
}

/// A fixed set of variables, for tests and for checking deployment files.
#[derive(Debug, Default, Clone)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl MapEnv {
    pub fn new<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl Environment for MapEnv {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}
