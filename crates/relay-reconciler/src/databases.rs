//! The databases the reconciler compares: outboxes by source name, inboxes by inbox name, each
//! inbox with its subscription.
//!
//! `RECONCILE_OUTBOXES` and `RECONCILE_INBOXES` hold `NAME=URL` entries separated by spaces or
//! newlines; both are secrets (URLs carry passwords), so either can instead be read from the
//! file `RECONCILE_OUTBOXES_FILE` / `RECONCILE_INBOXES_FILE` names, in the same format, where a
//! line starting with `#` is a comment. A name given twice, or one outbox database given under
//! two names, is refused with every other problem: one entry silently replacing another made
//! every message of the lost one a false finding.
use std::collections::{BTreeMap, BTreeSet};

use relay_config::{DatabaseUrl, Reader};
use secrecy::ExposeSecret;
use tokio_postgres::config::Host;

use crate::{args::names, config::Inbox};

/// One list setting: its entries and the variable that problems with them name.
struct List {
    variable: &'static str,
    entries: Vec<(String, String)>,
}

/// Reads the outboxes and the inboxes with their subscriptions; problems go to `reader`.
pub(crate) fn read(reader: &mut Reader<'_>) -> (BTreeMap<String, DatabaseUrl>, Vec<Inbox>) {
    let outboxes = outboxes(reader);
    let inbox_list = secret_list(reader, names::INBOXES, names::INBOXES_FILE, "NAME=URL", "inbox");
    let subscriptions = subscriptions(reader);
    let mut inboxes = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, raw) in inbox_list.entries {
        if !seen.insert(name.clone()) {
            reader.problem(inbox_list.variable, format!("inbox {name} is given twice; each inbox once"));
            continue;
        }
        let topics = subscriptions.get(&name).cloned().unwrap_or_default();
        if topics.is_empty() {
            reader.problem(
                names::SUBSCRIPTIONS,
                format!("inbox {name} has no subscription (NAME=TOPIC[,TOPIC...])"),
            );
        }
        if let Some(url) = url(reader, inbox_list.variable, &name, raw) {
            inboxes.push(Inbox { name, url, topics });
        }
    }
    for name in subscriptions.keys().filter(|name| !seen.contains(*name)) {
        reader.problem(names::SUBSCRIPTIONS, format!("subscription for unknown inbox {name}"));
    }
    (outboxes, inboxes)
}

fn outboxes(reader: &mut Reader<'_>) -> BTreeMap<String, DatabaseUrl> {
    let list = secret_list(reader, names::OUTBOXES, names::OUTBOXES_FILE, "SOURCE=URL", "outbox");
    let mut outboxes = BTreeMap::new();
    let mut databases: BTreeMap<String, String> = BTreeMap::new();
    for (source, raw) in list.entries {
        if outboxes.contains_key(&source) {
            reader.problem(
                list.variable,
                format!("source {source} is given twice; each outbox once, under its OUTBOX_SOURCE"),
            );
            continue;
        }
        let Some(url) = url(reader, list.variable, &source, raw) else { continue };
        let database = identity(&url);
        if let Some(first) = databases.get(&database) {
            reader.problem(
                list.variable,
                format!(
                    "sources {first} and {source} name the same database ({}); an outbox database is one source",
                    url.database_name()
                ),
            );
            continue;
        }
        databases.insert(database, source.clone());
        outboxes.insert(source, url);
    }
    outboxes
}

/// Where a URL points: its hosts, ports and database (what makes two URLs the same database,
/// whatever their users, passwords or options).
fn identity(url: &DatabaseUrl) -> String {
    let config = url.config();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.to_ascii_lowercase(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<u16> =
        if config.get_ports().is_empty() { vec![5432] } else { config.get_ports().to_vec() };
    let database = config.get_dbname().or(config.get_user()).unwrap_or_default();
    format!("{hosts:?}|{ports:?}|{database}")
}

fn url(reader: &mut Reader<'_>, variable: &str, name: &str, raw: String) -> Option<DatabaseUrl> {
    DatabaseUrl::parse(raw.into()).map_err(|why| reader.problem(variable, format!("{name}: URL {why}"))).ok()
}

/// The `NAME=URL` entries of secret list `variable`, or of the file `file_variable` names (read
/// by [`Reader::secret`]). A malformed entry is reported by its position and, when its name is
/// valid ([`is_name`]), that name: never by its text, which may be a bare URL with a password.
fn secret_list(
    reader: &mut Reader<'_>,
    variable: &'static str,
    file_variable: &'static str,
    shape: &str,
    what: &str,
) -> List {
    let from_file = reader.optional(variable).is_none() && reader.optional(file_variable).is_some();
    let blamed = if from_file { file_variable } else { variable };
    let Some(secret) = reader.secret(variable) else {
        if reader.optional(file_variable).is_none() {
            reader.problem(variable, format!("no {what} given: set {variable}, {file_variable} or --{what}"));
        }
        return List { variable: blamed, entries: Vec::new() };
    };
    let mut entries = Vec::new();
    let words = secret
        .expose_secret()
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(String::from)
        .collect::<Vec<_>>();
    for (index, entry) in words.into_iter().enumerate() {
        // A name is checked before it is ever shown: text before the first `=` of a bare URL
        // (`postgres://app:pw@db/x?sslmode=require`) holds its password.
        match entry.split_once('=') {
            Some((name, value)) if is_name(name) && !value.is_empty() => {
                entries.push((name.to_string(), value.to_string()))
            }
            Some((name, _)) if is_name(name) => {
                reader.problem(blamed, format!("entry {} ({name}) is not {shape}", index + 1))
            }
            _ => reader.problem(
                blamed,
                format!(
                    "entry {} is not {shape} with a NAME of at most {} bytes and none of {NOT_IN_NAME:?} \
                     (its text is not shown)",
                    index + 1,
                    relay_config::SOURCE_MAX_BYTES
                ),
            ),
        }
    }
    if entries.is_empty() && words_were_empty(&secret) {
        reader.problem(blamed, format!("no {what} given"));
    }
    List { variable: blamed, entries }
}

/// Characters a list entry's name may not hold: those of a URL's scheme, credentials, path and
/// query, so that a URL given without `NAME=` is never taken for a name and shown.
const NOT_IN_NAME: &str = ":/@?&%#";

/// Whether `name` can be a source or inbox name in a list: non-empty, at most
/// [`relay_config::SOURCE_MAX_BYTES`] bytes, no control character and none of [`NOT_IN_NAME`].
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= relay_config::SOURCE_MAX_BYTES
        && !name.chars().any(|c| c.is_control() || NOT_IN_NAME.contains(c))
}

fn words_were_empty(secret: &secrecy::SecretString) -> bool {
    secret.expose_secret().lines().filter(|l| !l.trim_start().starts_with('#')).all(|l| l.trim().is_empty())
}

/// `RECONCILE_SUBSCRIPTIONS`: `NAME=TOPIC[,TOPIC...]` entries; an inbox given twice is refused.
fn subscriptions(reader: &mut Reader<'_>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let raw = reader.optional(names::SUBSCRIPTIONS).unwrap_or_default();
    for entry in raw.split_whitespace() {
        match entry.split_once('=') {
            Some((name, topics)) if !name.is_empty() && !topics.is_empty() => {
                let topics: Vec<String> =
                    topics.split(',').filter(|t| !t.is_empty()).map(String::from).collect();
                if out.insert(name.to_string(), topics).is_some() {
                    reader.problem(
                        names::SUBSCRIPTIONS,
                        format!("inbox {name} has two subscriptions; list its topics once (NAME=T1,T2)"),
                    );
                }
            }
            _ => {
                reader.problem(names::SUBSCRIPTIONS, format!("entry {entry:?} is not NAME=TOPIC[,TOPIC...]"))
            }
        }
    }
    out
}
