//! `PollerConfig::from_env` and `ConsumerConfig::from_env` on an environment built from the fuzz
//! input (names biased toward the ones the services read): never panics, and a DATABASE_URL's
//! password (a marker) never shows in an error, nor in a configuration's `Debug` output.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay_config::{names as common, Environment, MapEnv};
use relay_inbox::{names as inbox, ConsumerConfig};
use relay_poller::{names as outbox, PollerConfig};

/// The password every generated DATABASE_URL carries.
const MARKER: &str = "Pw0rdMarker7q";
/// Where DATABASE_URL_FILE points when the URL is given as a file.
const URL_FILE: &str = "/run/secrets/database-url";

#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    TopicLimit { inbox: bool, topic: String },
    KafkaProperty(String),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Form {
    Postgres,
    Postgresql,
    KeyValue,
    Raw,
}

#[derive(Debug, Arbitrary)]
struct Url {
    form: Form,
    user: String,
    host: String,
    tail: String,
    in_file: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    url: Option<Url>,
    vars: Vec<(Name, String)>,
}

fn known() -> Vec<&'static str> {
    let mut names = vec![
        common::DATABASE_URL,
        "DATABASE_URL_FILE",
        common::KAFKA_BROKERS,
        common::LOG_FORMAT,
        common::RELAY_MIGRATE,
        common::RELAY_HTTP_ADDR,
        common::RELAY_PROBE_INTERVAL_MS,
        "KAFKA_PROPERTY_LINGER_MS",
        "KAFKA_PROPERTY_SASL_PASSWORD",
        "KAFKA_PROPERTY_GROUP_ID",
        "KAFKA_PROPERTY_ACKS",
    ];
    names.push(relay_config::security_names::KAFKA_SECURITY_PROTOCOL);
    names.extend_from_slice(relay_config::security_names::SASL_ALL);
    names.extend_from_slice(relay_config::security_names::SSL_ALL);
    names.extend_from_slice(outbox::ALL);
    names.extend_from_slice(inbox::ALL);
    names
}

/// A MapEnv whose files are in memory too, so a fuzzed `*_FILE` never reads the real disk.
struct FuzzEnv {
    vars: MapEnv,
    files: BTreeMap<String, String>,
}

impl Environment for FuzzEnv {
    fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name)
    }
    fn names(&self) -> Vec<String> {
        self.vars.names()
    }
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
}

fn url_text(url: &Url) -> String {
    let Url { user, host, tail, .. } = url;
    match url.form {
        Form::Postgres => format!("postgres://{user}:{MARKER}@{host}{tail}"),
        Form::Postgresql => format!("postgresql://{user}:{MARKER}@{host}{tail}"),
        Form::KeyValue => format!("host={host} user={user} password={MARKER} {tail}"),
        Form::Raw => format!("{user}{MARKER}{host}{tail}"),
    }
}

fuzz_target!(|input: Input| {
    let known = known();
    let mut vars = BTreeMap::new();
    for (name, value) in &input.vars {
        let name = match name {
            Name::Known(i) => known[usize::from(*i) % known.len()].to_string(),
            Name::TopicLimit { inbox: true, topic } => format!("INBOX_TOPIC_{topic}_MAX_PAYLOAD_BYTES"),
            Name::TopicLimit { inbox: false, topic } => format!("OUTBOX_TOPIC_{topic}_MAX_PAYLOAD_BYTES"),
            Name::KafkaProperty(property) => format!("{}{property}", common::KAFKA_PROPERTY_PREFIX),
            Name::Raw(name) => name.clone(),
        };
        vars.insert(name, value.clone());
    }
    // The marker may be quoted when the fuzzer put it anywhere but the URL's password.
    let elsewhere = vars.iter().any(|(k, v)| k.contains(MARKER) || v.contains(MARKER));
    let mut files = BTreeMap::new();
    let mut url = None;
    if let Some(spec) = &input.url {
        let text = url_text(spec);
        if spec.in_file {
            vars.insert("DATABASE_URL_FILE".into(), URL_FILE.into());
            files.insert(URL_FILE.to_string(), text.clone());
        } else {
            vars.insert(common::DATABASE_URL.into(), text.clone());
        }
        url = Some(text);
    }
    let env = FuzzEnv { vars: MapEnv(vars), files };
    let check = !elsewhere && url.as_deref().is_some_and(|u| u.matches(MARKER).count() == 1);

    let poller = PollerConfig::from_env(&env);
    let consumer = ConsumerConfig::from_env(&env);
    if !check {
        return;
    }
    match poller {
        Err(e) => assert_no_marker(&format!("{e}\n{e:?}")),
        Ok(config) if config.database_url.config().get_password() == Some(MARKER.as_bytes()) => {
            assert_no_marker(&format!("{config:?}"))
        }
        Ok(_) => {}
    }
    match consumer {
        Err(e) => assert_no_marker(&format!("{e}\n{e:?}")),
        Ok(config) if config.database_url.config().get_password() == Some(MARKER.as_bytes()) => {
            assert_no_marker(&format!("{config:?}"))
        }
        Ok(_) => {}
    }
});

fn assert_no_marker(text: &str) {
    assert!(!text.contains(MARKER), "the DATABASE_URL password leaked:\n{text}");
}
