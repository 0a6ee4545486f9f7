//! reconciler: compares every outbox with every inbox. See `relay_reconciler`.
#![forbid(unsafe_code)]
use relay_config::ProcessEnv;

#[tokio::main]
async fn main() {
    let config = relay_reconciler::Config::from_env(&ProcessEnv, std::env::args_os())
        .unwrap_or_else(|usage| usage.exit())
        .unwrap_or_else(|e| relay::exit_on_config_error("reconciler", e));
    let _telemetry = relay::init_logging(relay_config::LogFormat::Text, "reconciler");
    let code = match relay_reconciler::run(config, relay::shutdown_on_signal()).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "reconciliation could not run");
            relay_reconciler::EXIT_COULD_NOT_RUN
        }
    };
    std::process::exit(code)
}
