//! relay-admin: operator commands for parked outbox rows and dead letters. See `relay_admin`.
#![forbid(unsafe_code)]
use clap::Parser;

#[tokio::main]
async fn main() {
    let args = relay_admin::Args::parse();
    let logging = relay_config::LogSettings::from_env(&relay_config::ProcessEnv)
        .unwrap_or_else(|e| relay::exit_on_config_error("relay-admin", e));
    let _telemetry = relay::init_logging(logging, "relay-admin");
    let code = match relay_admin::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("relay-admin: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code)
}
