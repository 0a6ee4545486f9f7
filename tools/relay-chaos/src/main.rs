//! relay-chaos: the chaos suite (faults injected while Relay carries a workload). See `relay_chaos`.
#![forbid(unsafe_code)]
use clap::Parser;

/// Exit code when the run could not complete (setup failed, or it was interrupted).
const EXIT_COULD_NOT_RUN: i32 = 2;

#[tokio::main]
async fn main() {
    let args = relay_chaos::cli::Args::parse();
    let _telemetry = relay_telemetry::init(&relay_config::LogFormat::Text.into(), "relay-chaos");
    // On SIGTERM or Ctrl-C the run is dropped: its services, broker and private PostgreSQL stop.
    let code = tokio::select! {
        result = relay_chaos::cli::run(args) => match result {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = %e, "the chaos run could not complete");
                EXIT_COULD_NOT_RUN
            }
        },
        _ = interrupted() => {
            tracing::error!("interrupted; stopping the services, the broker and PostgreSQL");
            EXIT_COULD_NOT_RUN
        }
    };
    std::process::exit(code)
}

/// Resolves on the first SIGTERM or SIGINT (only SIGINT where SIGTERM cannot be listened for).
async fn interrupted() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
