//! The reconciler's flags read from an injected environment rather than clap's own lookup.
//!
//! clap reads `env = "..."` values straight from the process, which a test (or the check of the
//! deployment files) cannot supply without mutating the process environment. [`Args::from_env`]
//! takes an [`Environment`] instead: the binary passes the process, tests pass a map. It also
//! lists `RECONCILE_*` variables that name no flag, so a typo is reported instead of ignored.
use std::ffi::OsString;

use clap::{error::ErrorKind, parser::ValueSource, Arg, CommandFactory, FromArgMatches};
use relay_config::Environment;

use crate::Args;

/// The prefix of every reconciler variable.
pub const ENV_PREFIX: &str = "RECONCILE_";

/// One flag that has a variable.
struct EnvFlag {
    id: String,
    long: String,
    variable: String,
    takes_value: bool,
}

impl Args {
    /// Parses `argv` (program name first). Every flag not given there is taken from its variable
    /// in `env`, as clap would from the process. Unknown `RECONCILE_*` variables are kept in
    /// [`Args::unknown_variables`] and reported by [`crate::Config::from_args`].
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
                })
            })
            .collect();
        let command = Args::command().mut_args(without_process_env);
        let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let given = command.clone().try_get_matches_from(&argv)?;
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
            if flag.takes_value {
                argv.insert(at, format!("--{}={}", flag.long, value.trim()).into());
                at += 1;
            } else {
                match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => {
                        argv.insert(at, format!("--{}", flag.long).into());
                        at += 1;
                    }
                    "false" | "0" | "no" | "off" => {}
                    other => {
                        let message = format!("{}: {other:?} is not true or false", flag.variable);
                        return Err(command.clone().error(ErrorKind::InvalidValue, message));
                    }
                }
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
        Ok(args)
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

    #[test]
    fn a_flag_variable_that_is_not_a_boolean_is_refused() {
        let mut vars = base();
        vars.push(("RECONCILE_SERVE", "sometimes"));
        let err = Args::from_env(&MapEnv::new(vars), ["reconciler"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert!(err.to_string().contains("RECONCILE_SERVE: \"sometimes\" is not true or false"), "{err}");
    }

    #[test]
    fn a_variable_that_is_not_a_number_is_refused_naming_its_flag() {
        let mut vars = base();
        vars.push(("RECONCILE_GRACE_SECS", "soon"));
        let err = Args::from_env(&MapEnv::new(vars), ["reconciler"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(text.contains("'soon'") && text.contains("--grace-secs"), "{text}");
        assert!(!text.contains("secret"), "a database password leaked: {text}");
    }
}
