//! The reconciler's settings read from an injected environment and command line.
use std::{collections::BTreeMap, io};

use relay_config::{Environment, MapEnv};

use super::*;

const OUTBOX: &str = "payments=postgres://relay:secret@origin:5432/payments";
const INBOX: &str = "ledger=postgres://relay:secret@ledger:5432/ledger";

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RECONCILE_OUTBOXES", OUTBOX),
        ("RECONCILE_INBOXES", INBOX),
        ("RECONCILE_SUBSCRIPTIONS", "ledger=payments"),
    ]
}

fn read(env: &dyn Environment, argv: &[&str]) -> Result<Config, Vec<String>> {
    let argv: Vec<&str> = ["reconciler"].iter().chain(argv).copied().collect();
    Config::from_env(env, argv)
        .expect("the command line parses")
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

fn problems(vars: Vec<(&'static str, &'static str)>, argv: &[&str]) -> Vec<String> {
    read(&MapEnv::new(vars), argv).expect_err("refused")
}

/// Variables and the files their `_FILE` forms name.
struct WithFiles(MapEnv, BTreeMap<&'static str, &'static str>);

impl Environment for WithFiles {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name)
    }
    fn names(&self) -> Vec<String> {
        self.0.names()
    }
    fn read_file(&self, path: &str) -> io::Result<String> {
        self.1.get(path).map(|s| s.to_string()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

#[test]
fn variables_fill_every_flag_the_command_line_leaves_out() {
    let mut vars = base();
    vars.extend([("RECONCILE_INTERVAL_SECS", "30"), ("RECONCILE_SERVE", "true")]);
    let config = read(&MapEnv::new(vars), &["--interval-secs", "5"]).unwrap();
    assert!(config.serve);
    assert_eq!(config.interval.as_secs(), 5, "the command line wins over the variable");
    assert_eq!(config.outboxes.keys().collect::<Vec<_>>(), ["payments"]);
    assert_eq!(config.inboxes[0].topics, ["payments"]);
    assert_eq!(config.grace.as_secs(), 60, "the default");
}

#[test]
fn space_or_newline_separated_lists_become_one_entry_each() {
    let env = MapEnv::new([
        ("RECONCILE_OUTBOXES", OUTBOX),
        ("RECONCILE_INBOXES", "ledger=postgres://l/ledger\n  notifications=postgres://n/notifications"),
        ("RECONCILE_SUBSCRIPTIONS", "ledger=payments notifications=payments,orders"),
    ]);
    let config = read(&env, &[]).unwrap();
    let names: Vec<&str> = config.inboxes.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["ledger", "notifications"]);
    assert_eq!(config.inboxes[1].topics, ["payments", "orders"]);
}

#[test]
fn trace_takes_the_database_flags_before_or_after_the_subcommand() {
    let id = "0b6f6f7e-3c1a-4f43-9d55-2f1d64a3a0c2";
    let flags =
        ["--outbox", OUTBOX, "--inbox", INBOX, "--subscription", "ledger=payments", "--format", "json"];
    let empty = MapEnv::default();
    let after: Vec<&str> = ["trace", "--message-id", id].into_iter().chain(flags).collect();
    let before: Vec<&str> = flags.into_iter().chain(["trace", "--message-id", id]).collect();
    for argv in [after, before] {
        let config = read(&empty, &argv).unwrap();
        assert_eq!(config.trace, Some(TraceQuery::Message(id.parse().unwrap())));
        assert_eq!(config.format, Format::Json);
        assert_eq!(config.outboxes.keys().collect::<Vec<_>>(), ["payments"]);
    }
    let config = read(&MapEnv::new(base()), &["trace", "--topic", "payments.v1", "--key", "acct-1"]).unwrap();
    let key = TraceQuery::Key { topic: "payments.v1".into(), key: "acct-1".into(), limit: 20 };
    assert_eq!(config.trace, Some(key));
    for bad in [
        &["trace"][..],
        &["trace", "--topic", "t"],
        &["trace", "--message-id", id, "--topic", "t", "--key", "k"],
    ] {
        let argv: Vec<&str> = ["reconciler"].iter().chain(bad).copied().collect();
        assert!(Config::from_env(&empty, argv).is_err(), "{bad:?}");
    }
    // A flag given after the subcommand still wins over its variable.
    let env = MapEnv::new([("RECONCILE_OUTBOXES", "orders=postgres://o/orders")]);
    let argv = [
        "trace",
        "--message-id",
        id,
        "--outbox",
        OUTBOX,
        "--inbox",
        INBOX,
        "--subscription",
        "ledger=payments",
    ];
    assert_eq!(read(&env, &argv).unwrap().outboxes.keys().collect::<Vec<_>>(), ["payments"]);
}

/// Issue 12 item 11 and issue 14 item 6: every bad variable and flag in one run, through the
/// same reader as the other services; a bad flag is named as the flag.
#[test]
fn every_bad_variable_flag_and_unknown_name_is_reported_in_one_run() {
    let mut vars = base();
    vars.extend([
        ("RECONCILE_SERVE", "sometimes"),
        ("RECONCILE_GRACE_SECS", "soon"),
        ("RECONCILE_FORMAT", "xml"),
        ("RECONCILE_STUCK_SECS", "-5"),
        ("RECONCILE_INTERVL_SECS", "30"),
        ("RECONCILE_MAX_IDS", "0"),
        ("RECONCILE_METRICS_ADDR", "everywhere"),
    ]);
    let problems = problems(vars, &["--bucket-size", "0", "--settle-secs", "later"]);
    assert_eq!(
        problems,
        [
            "RECONCILE_GRACE_SECS: \"soon\" is not a whole number",
            "RECONCILE_STUCK_SECS: \"-5\" is not a whole number",
            "--bucket-size: 0 is outside 1..=100000000",
            "RECONCILE_MAX_IDS: 0 is outside 1..=1000000",
            "RECONCILE_FORMAT: \"xml\" is not table or json",
            "RECONCILE_SERVE: \"sometimes\" is not true or false",
            "--settle-secs: \"later\" is not a whole number",
            "RECONCILE_METRICS_ADDR: \"everywhere\" is not an ip:port address",
            "RECONCILE_INTERVL_SECS: is not a setting this service knows (a typo?)",
        ]
    );
}

/// Issue 13 item 7: a second outbox under the same source name silently replaced the first, and
/// every message of the lost one became a false "extra" finding.
#[test]
fn every_duplicate_name_or_outbox_database_is_refused_together() {
    let vars = vec![
        (
            "RECONCILE_OUTBOXES",
            "payments=postgres://relay:secret@origin:5432/payments payments=postgres://relay:secret@other/payments \
             orders=postgres://reader:other-secret@ORIGIN/payments",
        ),
        (
            "RECONCILE_INBOXES",
            "ledger=postgres://relay:secret@ledger/ledger ledger=postgres://relay:secret@ledger2/ledger \
             audit=postgres://relay:secret@ledger/ledger",
        ),
        ("RECONCILE_SUBSCRIPTIONS", "ledger=payments audit=payments ledger=orders"),
    ];
    let problems = problems(vars, &[]);
    assert_eq!(
        problems,
        [
            "RECONCILE_OUTBOXES: source payments is given twice; each outbox once, under its OUTBOX_SOURCE",
            "RECONCILE_OUTBOXES: sources payments and orders name the same database (payments); an outbox database is one source",
            "RECONCILE_SUBSCRIPTIONS: inbox ledger has two subscriptions; list its topics once (NAME=T1,T2)",
            "RECONCILE_INBOXES: inbox ledger is given twice; each inbox once",
        ],
        "two inbox names in one database are two inboxes, not a duplicate"
    );
    assert!(!problems.iter().any(|p| p.contains("secret")), "{problems:?}");
    // The same through flags, named as flags.
    let argv =
        ["--outbox", OUTBOX, "--outbox", OUTBOX, "--inbox", INBOX, "--subscription", "ledger=payments"];
    let problems = read(&MapEnv::default(), &argv).expect_err("refused");
    assert_eq!(
        problems,
        ["--outbox: source payments is given twice; each outbox once, under its OUTBOX_SOURCE"]
    );
}

/// Issue 14 item 3: the database lists from files, as secrets are read everywhere else.
#[test]
fn database_lists_are_read_from_the_files_their_file_variables_name() {
    let env = WithFiles(
        MapEnv::new([
            ("RECONCILE_OUTBOXES_FILE", "/run/secrets/outboxes"),
            ("RECONCILE_INBOXES_FILE", "/run/secrets/inboxes"),
            ("RECONCILE_SUBSCRIPTIONS", "ledger=payments notifications=payments"),
        ]),
        BTreeMap::from([
            (
                "/run/secrets/outboxes",
                "# payments-service\npayments=postgres://relay:secret@origin/payments\n",
            ),
            (
                "/run/secrets/inboxes",
                "ledger=postgres://l/ledger\n\nnotifications=postgres://n/notifications\n",
            ),
        ]),
    );
    let config = read(&env, &[]).unwrap();
    assert_eq!(config.outboxes.keys().collect::<Vec<_>>(), ["payments"]);
    assert_eq!(config.outboxes["payments"].expose(), "postgres://relay:secret@origin/payments");
    assert_eq!(config.inboxes.len(), 2);
    // A flag wins over the file, which is then not read at all.
    let config = read(&env, &["--outbox", "orders=postgres://o/orders"]).unwrap();
    assert_eq!(config.outboxes.keys().collect::<Vec<_>>(), ["orders"]);
}

#[test]
fn a_missing_unreadable_or_malformed_database_file_is_reported_without_its_contents() {
    let env = WithFiles(
        MapEnv::new([
            ("RECONCILE_OUTBOXES_FILE", "/run/secrets/outboxes"),
            ("RECONCILE_INBOXES_FILE", "/run/secrets/missing"),
            ("RECONCILE_SUBSCRIPTIONS", "ledger=payments"),
        ]),
        BTreeMap::from([(
            "/run/secrets/outboxes",
            "postgres://relay:secret@origin/payments\nbroken=mysql://relay:secret@db/x",
        )]),
    );
    let found = read(&env, &[]).expect_err("refused");
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("RECONCILE_OUTBOXES_FILE: entry 1 is not SOURCE=URL"), "{found:?}");
    assert!(found[0].ends_with("(its text is not shown)"), "{found:?}");
    assert!(
        found[1].starts_with("RECONCILE_OUTBOXES_FILE: broken: URL must be a postgres:// URL"),
        "{found:?}"
    );
    assert!(
        found[2].starts_with("RECONCILE_INBOXES_FILE: cannot read \"/run/secrets/missing\""),
        "{found:?}"
    );
    assert_eq!(found[3], "RECONCILE_SUBSCRIPTIONS: subscription for unknown inbox ledger");
    assert!(!found.iter().any(|p| p.contains("secret@")), "{found:?}");
    // Both the variable and its file: one of them is a mistake.
    let mut vars = base();
    vars.push(("RECONCILE_OUTBOXES_FILE", "/run/secrets/outboxes"));
    let both = problems(vars, &[]);
    assert_eq!(both.len(), 1, "{both:?}");
    assert!(both[0].contains("set both RECONCILE_OUTBOXES and RECONCILE_OUTBOXES_FILE"), "{both:?}");
}

/// A URL given without its `NAME=` and with an option (`?sslmode=require`) has an `=`: the text
/// before it, password included, was taken for a name and shown. Every form, variable, file and
/// flag, outbox and inbox, is reported by position only.
#[test]
fn a_url_without_its_name_is_reported_without_its_password_in_every_form() {
    let urls = [
        "postgres://app:Pw0rd1@db/x?sslmode=require",
        "postgresql://app:Pw0rd2@db:5432/x?sslmode=require&application_name=relay",
        "app:Pw0rd3@db/x?sslmode=require",
        "postgres://app:Pw0rd4@db/x?sslmode=",
    ];
    let passwords = ["Pw0rd1", "Pw0rd2", "Pw0rd3", "Pw0rd4"];
    let all: &'static str = Box::leak(urls.join("\n").into_boxed_str());
    let mut found = Vec::new();
    // As variables.
    found.extend(problems(
        vec![
            ("RECONCILE_OUTBOXES", all),
            ("RECONCILE_INBOXES", all),
            ("RECONCILE_SUBSCRIPTIONS", "ledger=payments"),
        ],
        &[],
    ));
    // As files.
    let env = WithFiles(
        MapEnv::new([
            ("RECONCILE_OUTBOXES_FILE", "/run/secrets/outboxes"),
            ("RECONCILE_INBOXES_FILE", "/run/secrets/inboxes"),
            ("RECONCILE_SUBSCRIPTIONS", "ledger=payments"),
        ]),
        BTreeMap::from([("/run/secrets/outboxes", all), ("/run/secrets/inboxes", all)]),
    );
    found.extend(read(&env, &[]).expect_err("refused"));
    // As flags.
    found.extend(problems(
        vec![("RECONCILE_SUBSCRIPTIONS", "ledger=payments")],
        &["--outbox", urls[0], "--inbox", urls[1]],
    ));
    for variable in
        ["RECONCILE_OUTBOXES", "RECONCILE_INBOXES", "RECONCILE_OUTBOXES_FILE", "RECONCILE_INBOXES_FILE"]
    {
        for n in 1..=urls.len() {
            let prefix = format!("{variable}: entry {n} is not ");
            assert!(found.iter().any(|p| p.starts_with(&prefix)), "no {prefix:?} in {found:#?}");
        }
    }
    for text in passwords.iter().chain(&["app:", "db/x", "sslmode"]) {
        assert!(!found.iter().any(|p| p.contains(text)), "{text} shown in {found:#?}");
    }
}

#[test]
fn list_names_are_what_outbox_sources_and_inbox_names_can_be_here() {
    for good in ["payments", "payments-eu.v2", "ledger_1", "Zahlungen"] {
        assert!(crate::databases::is_name(good), "{good}");
    }
    let long = "x".repeat(relay_config::SOURCE_MAX_BYTES + 1);
    for bad in
        ["", "postgres://a:b@h/d?sslmode", "a:b@h/d?x", "h/d", "a@b", "x?y", "tab\there", long.as_str()]
    {
        assert!(!crate::databases::is_name(bad), "{bad:?}");
    }
}

#[test]
fn nothing_to_compare_is_reported_for_each_side() {
    let problems = problems(vec![], &[]);
    assert_eq!(
        problems,
        [
            "RECONCILE_OUTBOXES: no outbox given: set RECONCILE_OUTBOXES, RECONCILE_OUTBOXES_FILE or --outbox",
            "RECONCILE_INBOXES: no inbox given: set RECONCILE_INBOXES, RECONCILE_INBOXES_FILE or --inbox",
        ]
    );
}

#[test]
fn no_color_is_read_as_the_convention_says() {
    for (value, expected) in [("1", true), ("", false)] {
        let mut vars = base();
        vars.push(("NO_COLOR", value));
        assert_eq!(read(&MapEnv::new(vars), &[]).unwrap().no_color, expected, "NO_COLOR={value:?}");
    }
    assert!(!read(&MapEnv::new(base()), &[]).unwrap().no_color);
}

#[test]
fn executing_a_repair_needs_who_and_why_and_reports_both_missing_at_once() {
    let missing = problems(base(), &["--repair", "--execute"]).join("\n");
    assert!(missing.contains("--operator / RELAY_OPERATOR") && missing.contains("--reason"), "{missing}");
    let dry = read(&MapEnv::new(base()), &["--repair"]).expect("a dry run needs neither");
    assert_eq!(dry.actor, None);
    let mut vars = base();
    vars.push(("RELAY_OPERATOR", " ana "));
    let config =
        read(&MapEnv::new(vars), &["--repair", "--execute", "--reason", "restored"]).expect("accepted");
    let actor = config.actor.expect("an actor");
    assert_eq!((actor.operator.as_str(), actor.reason.as_str()), ("ana", "restored"));
    let flag = read(&MapEnv::new(base()), &["--repair", "--execute", "--operator", "bo", "--reason", "x"])
        .expect("accepted");
    assert_eq!(flag.actor.expect("an actor").operator, "bo");
}
