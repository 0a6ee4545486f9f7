//! The reconciler's flags read from an injected environment rather than clap's own lookup.
//!
//! clap reads `env = "..."` values straight from the process, which a test (or the check of the
//! deployment files) cannot supply without mutating the process environment. [`Args::from_env`]
//! takes an [`Environment`] instead: the binary passes the process, tests pass a map. It also
//! lists `RECONCILE_*` variables that name no flag, so a typo is reported instead of ignored.
use std::ffi::OsString;

use clap::{parser::ValueSource, Arg, CommandFactory, FromArgMatches};
use relay_config::{Environment, Problem};

use crate::Args;

/// The prefix of every reconciler variable.
pub const ENV_PREFIX: &str = "RECONCILE_";

/// One flag that has a variable.
struct EnvFlag {
    id: String,
    long: String,
    variable: String,
    takes_value: bool,
    /// `hide_env_values`: the value may hold a secret and is never quoted.
    hides_value: bool,
}

impl Args {
    /// Parses `argv` (program name first). Every flag not given there is taken from its variable
    /// in `env`, as clap would from the process. Unknown `RECONCILE_*` variables and variables
    /// whose value their flag refuses are kept in [`Args::unknown_variables`] and
    /// [`Args::env_problems`], and [`crate::Config::from_args`] reports them all together.
    /// Errors: a bad command line (clap's error, as for any command).
    pub fn from_env<I, T>(env: &dyn Environment, argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let flags: Vec<EnvFlag> = Args::command()
            .get_arguments()
            .filter_map(|arg| {
                Some(EnvFlag {
                    id: arg.get_id().to_string(),
                    long: arg.get_long()?.to_string(),
                    variable: arg.get_env()?.to_string_lossy().into_owned(),
                    takes_value: arg.get_action().takes_values(),
                    hides_value: arg.is_hide_env_values_set(),
                })
            })
            .collect();
        let command = Args::command().mut_args(without_process_env);
        let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let given = command.clone().try_get_matches_from(&argv)?;
        let mut env_problems = Vec::new();
        // Variables go right after the program name: before a subcommand (`trace`), whose own
        // flags would not accept them.
        let mut at = 1.min(argv.len());
        for flag in &flags {
            if given.value_source(&flag.id) == Some(ValueSource::CommandLine) {
                continue;
            }
            let Some(value) = env.get(&flag.variable).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            match flag.argument(&command, value.trim()) {
                Ok(Some(argument)) => {
                    argv.insert(at, argument);
                    at += 1;
                }
                Ok(None) => {}
                Err(message) => env_problems.push(Problem { variable: flag.variable.clone(), message }),
            }
        }
        let mut matches = command.try_get_matches_from(&argv)?;
        let mut args = Args::from_arg_matches_mut(&mut matches)?;
        let mut unknown: Vec<String> = env
            .names()
            .into_iter()
            .filter(|n| n.starts_with(ENV_PREFIX) && !flags.iter().any(|f| &f.variable == n))
            .collect();
        unknown.sort();
        args.unknown_variables = unknown;
        args.env_problems = env_problems;
        Ok(args)
    }
}

impl EnvFlag {
    /// The command-line argument that `value` (from the flag's variable) stands for: `None` for
    /// a boolean that is off. A value the flag refuses is a problem, checked on its own so that
    /// every bad variable is reported in one run; a hidden value (a URL with a password) is never
    /// quoted.
    fn argument(&self, command: &clap::Command, value: &str) -> Result<Option<OsString>, String> {
        if !self.takes_value {
            return match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(format!("--{}", self.long).into())),
                "false" | "0" | "no" | "off" => Ok(None),
                other => Err(format!("{other:?} is not true or false")),
            };
        }
        let argument = format!("--{}={}", self.long, value);
        match command.clone().try_get_matches_from(["reconciler", argument.as_str()]) {
            Ok(_) => Ok(Some(argument.into())),
            Err(_) if self.hides_value => Err(format!("the value is not valid for --{}", self.long)),
            Err(e) => {
                let reason = e.render().to_string();
                let reason = reason.lines().next().unwrap_or_default().trim_start_matches("error: ");
                Err(format!("{value:?} is not valid for --{}: {reason}", self.long))
            }
        }
    }
}

/// Drops the value clap captured from the process but keeps the variable's name in the help.
fn without_process_env(arg: Arg) -> Arg {
    let Some(variable) = arg.get_env().map(|v| v.to_string_lossy().into_owned()) else {
        return arg;
    };
    let help = arg.get_help().map(|h| format!("{h} ")).unwrap_or_default();
    arg.env(None::<&'static str>).help(format!("{help}[env: {variable}]"))
}

#[cfg(test)]
mod tests {
    use relay_config::MapEnv;

    use super::*;
    use crate::Config;

    const OUTBOX: &str = "payments=postgres://relay:secret@origin:5432/payments";
    const INBOX: &str = "ledger=postgres://relay:secret@ledger:5432/ledger";

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("RECONCILE_OUTBOXES", OUTBOX),
            ("RECONCILE_INBOXES", INBOX),
            ("RECONCILE_SUBSCRIPTIONS", "ledger=payments"),
        ]
    }

    #[test]
    fn variables_fill_every_flag_the_command_line_leaves_out() {
        let mut vars = base();
        vars.extend([("RECONCILE_INTERVAL_SECS", "30"), ("RECONCILE_SERVE", "true")]);
        let args = Args::from_env(&MapEnv::new(vars), ["reconciler", "--interval-secs", "5"]).unwrap();
        let config = Config::from_args(args).unwrap();
        assert!(config.serve);
        assert_eq!(config.interval.as_secs(), 5, "the command line wins over the variable");
        assert_eq!(config.outboxes.keys().collect::<Vec<_>>(), ["payments"]);
        assert_eq!(config.inboxes[0].topics, ["payments"]);
    }

    #[test]
    fn executing_a_repair_needs_who_and_why_and_reports_both_missing_at_once() {
        let env = MapEnv::new(base());
        let args = Args::from_env(&env, ["reconciler", "--repair", "--execute"]).unwrap();
        let problems = Config::from_args(args).unwrap_err().to_string();
        assert!(
            problems.contains("--operator / RELAY_OPERATOR") && problems.contains("--reason"),
            "{problems}"
        );
        let args = Args::from_env(&env, ["reconciler", "--repair"]).unwrap();
        assert_eq!(Config::from_args(args).unwrap().actor, None, "a dry run needs neither");
        let mut vars = base();
        vars.push(("RELAY_OPERATOR", " ana "));
        let argv = ["reconciler", "--repair", "--execute", "--reason", "restored"];
        let config = Config::from_args(Args::from_env(&MapEnv::new(vars), argv).unwrap()).unwrap();
        let actor = config.actor.expect("an actor");
        assert_eq!((actor.operator.as_str(), actor.reason.as_str()), ("ana", "restored"));
    }

    #[test]
    fn space_separated_lists_become_one_entry_each() {
        let env = MapEnv::new([
            ("RECONCILE_OUTBOXES", OUTBOX),
            ("RECONCILE_INBOXES", "ledger=postgres://l/ledger\n  notifications=postgres://n/notifications"),
            ("RECONCILE_SUBSCRIPTIONS", "ledger=payments notifications=payments"),
        ]);
        let config = Config::from_args(Args::from_env(&env, ["reconciler"]).unwrap()).unwrap();
        let names: Vec<&str> = config.inboxes.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["ledger", "notifications"]);
    }

    #[test]
    fn trace_takes_the_reconcilers_databases_from_the_variables() {
        let mut vars = base();
        vars.push(("RECONCILE_FORMAT", "json"));
        let id = "0b6f6f7e-3c1a-4f43-9d55-2f1d64a3a0c2";
        let argv = ["reconciler", "trace", "--message-id", id];
        let config = Config::from_args(Args::from_env(&MapEnv::new(vars.clone()), argv).unwrap()).unwrap();
        assert_eq!(config.trace, Some(crate::TraceQuery::Message(id.parse().unwrap())));
        assert_eq!(config.format, crate::Format::Json);
        assert_eq!(config.outboxes.keys().collect::<Vec<_>>(), ["payments"]);
        let argv = ["reconciler", "trace", "--topic", "payments.v1", "--key", "acct-1"];
        let config = Config::from_args(Args::from_env(&MapEnv::new(vars.clone()), argv).unwrap()).unwrap();
        let key = crate::TraceQuery::Key { topic: "payments.v1".into(), key: "acct-1".into(), limit: 20 };
        assert_eq!(config.trace, Some(key));
        let env = MapEnv::new(vars);
        assert!(Args::from_env(&env, ["reconciler", "trace"]).is_err(), "nothing to trace");
        assert!(
            Args::from_env(&env, ["reconciler", "trace", "--topic", "t"]).is_err(),
            "a topic needs a key"
        );
        assert!(Args::from_env(
            &env,
            ["reconciler", "trace", "--message-id", id, "--topic", "t", "--key", "k"]
        )
        .is_err());
    }

    /// A new user wrote the database flags after `trace`, as the README's example reads.
    #[test]
    fn trace_takes_the_database_flags_before_or_after_the_subcommand() {
        let id = "0b6f6f7e-3c1a-4f43-9d55-2f1d64a3a0c2";
        let flags = ["--outbox", OUTBOX, "--inbox", INBOX, "--subscription", "ledger=payments"];
        let after: Vec<&str> = ["reconciler", "trace", "--message-id", id].into_iter().chain(flags).collect();
        let before: Vec<&str> =
            ["reconciler"].into_iter().chain(flags).chain(["trace", "--message-id", id]).collect();
        for argv in [after, before] {
            let config =
                Config::from_args(Args::from_env(&MapEnv::new(Vec::<(&str, &str)>::new()), argv).unwrap())
                    .unwrap();
            assert_eq!(config.trace, Some(crate::TraceQuery::Message(id.parse().unwrap())));
            assert_eq!(config.outboxes.keys().collect::<Vec<_>>(), ["payments"]);
            assert_eq!(config.inboxes[0].topics, ["payments"]);
        }
        // A flag given after the subcommand still wins over its variable.
        let env = MapEnv::new([("RECONCILE_OUTBOXES", "orders=postgres://o/orders")]);
        let argv = [
            "reconciler",
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
        let config = Config::from_args(Args::from_env(&env, argv).unwrap()).unwrap();
        assert_eq!(config.outboxes.keys().collect::<Vec<_>>(), ["payments"]);
    }

    #[test]
    fn a_misspelt_variable_is_reported_with_every_other_problem() {
        let mut vars = base();
        vars.extend([("RECONCILE_INTERVL_SECS", "30"), ("RECONCILE_MAX_IDS", "0")]);
        let args = Args::from_env(&MapEnv::new(vars), ["reconciler"]).unwrap();
        let problems = Config::from_args(args).unwrap_err().0;
        let rendered: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "--max-ids / RECONCILE_MAX_IDS: must be at least 1",
                "RECONCILE_INTERVL_SECS: is not a setting this service knows (a typo?)",
            ]
        );
    }

    fn problems(vars: Vec<(&'static str, &'static str)>) -> Vec<String> {
        let args = Args::from_env(&MapEnv::new(vars), ["reconciler"]).expect("the command line is fine");
        Config::from_args(args).unwrap_err().0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_flag_variable_that_is_not_a_boolean_is_refused() {
        let mut vars = base();
        vars.push(("RECONCILE_SERVE", "sometimes"));
        assert_eq!(problems(vars), ["RECONCILE_SERVE: \"sometimes\" is not true or false"]);
    }

    #[test]
    fn a_variable_that_is_not_a_number_is_refused_naming_its_flag() {
        let mut vars = base();
        vars.push(("RECONCILE_GRACE_SECS", "soon"));
        let problems = problems(vars);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = &problems[0];
        assert!(text.starts_with("RECONCILE_GRACE_SECS: \"soon\" is not valid for --grace-secs"), "{text}");
        assert!(!text.contains("secret"), "a database password leaked: {text}");
    }

    /// Issue 12 item 11: the reconciler used to stop at its first bad variable.
    #[test]
    fn every_bad_and_every_unknown_variable_is_reported_in_one_run() {
        let mut vars = base();
        vars.extend([
            ("RECONCILE_SERVE", "sometimes"),
            ("RECONCILE_GRACE_SECS", "soon"),
            ("RECONCILE_FORMAT", "xml"),
            ("RECONCILE_STUCK_SECS", "-5"),
            ("RECONCILE_INTERVL_SECS", "30"),
            ("RECONCILE_MAX_IDS", "0"),
        ]);
        let problems = problems(vars);
        let variables: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            variables,
            [
                "--max-ids / RECONCILE_MAX_IDS",
                "RECONCILE_GRACE_SECS",
                "RECONCILE_STUCK_SECS",
                "RECONCILE_FORMAT",
                "RECONCILE_SERVE",
                "RECONCILE_INTERVL_SECS",
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn a_bad_database_list_variable_never_quotes_its_value() {
        let vars = vec![
            ("RECONCILE_OUTBOXES", "payments=postgres://relay:secret@origin:5432/payments"),
            ("RECONCILE_INBOXES", INBOX),
            ("RECONCILE_SUBSCRIPTIONS", "ledger=payments"),
            ("RECONCILE_BUCKET_SIZE", "many"),
        ];
        let problems = problems(vars);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("secret")), "{problems:?}");
    }
}
