//! Start-up shared by the Relay binaries: logging and the shutdown signal.
//!
//! Each `main` stays a few lines: read the configuration (every problem at once, exit 2), set up
//! logging, turn SIGTERM/SIGINT into a cancelled token, and hand that token to the service's
//! `run`, which drains within its grace period.
#![forbid(unsafe_code)]

use relay_config::{ConfigError, LogFormat};
use tokio_util::sync::CancellationToken;

/// Exit code for configuration errors.
pub const EXIT_CONFIG: i32 = 2;

/// Prints every configuration problem to stderr and exits with [`EXIT_CONFIG`].
pub fn exit_on_config_error(service: &str, error: ConfigError) -> ! {
    eprintln!("{service}: {error}");
    std::process::exit(EXIT_CONFIG)
}

/// Logs to stderr as text or JSON (`RUST_LOG` filters, default `info`), and exports spans over
/// OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the guard until the service returned.
pub fn init_logging(format: LogFormat, service: &'static str) -> relay_telemetry::Telemetry {
    relay_telemetry::init(format, service)
}

/// Runs a service's `main` future on a multi-threaded runtime, then leaves without waiting for
/// blocking work still under way: a broker probe may be waiting out its timeout (up to 5 s)
/// with the brokers away, and the service's `run` already bounded its shutdown by its grace.
pub fn run_service<T>(main: impl std::future::Future<Output = T>) -> std::io::Result<T> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(main);
    runtime.shutdown_background();
    Ok(result)
}

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
