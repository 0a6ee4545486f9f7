//! reconciler: compares every outbox with every inbox. See `relay_reconciler`.
#![forbid(unsafe_code)]
use relay_config::ProcessEnv;

#[tokio::main]
async fn main() {
    let parsed = relay_reconciler::Config::from_env(&ProcessEnv, std::env::args_os())
        .unwrap_or_else(|usage| usage.exit());
    // Both read before either is reported, so every bad variable is listed in one run.
    let (config, logging) = match (parsed, relay_config::LogSettings::from_env(&ProcessEnv)) {
        (Ok(config), Ok(logging)) => (config, logging),
        (config, logging) => {
            let problems = [config.err(), logging.err()].into_iter().flatten().flat_map(|e| e.0).collect();
            relay::exit_on_config_error("reconciler", relay_config::ConfigError(problems))
        }
    };
    let _telemetry = relay::init_logging(logging, "reconciler");
    let code = match relay_reconciler::run(config, relay::shutdown_on_signal()).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "reconciliation could not run");
            relay_reconciler::EXIT_COULD_NOT_RUN
        }
    };
    std::process::exit(code)
}
