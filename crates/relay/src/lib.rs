//! Start-up shared by the Relay binaries: the command line, logging and the shutdown signal.
//!
//! Each `main` stays a few lines: answer `--help` and `--version` before anything else (no
//! environment read, nothing connected or migrated), read the configuration (every problem at once, exit 2), set up
//! logging, turn SIGTERM/SIGINT into a cancelled token, and hand that token to the service's
//! `run`, which drains within its grace period.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use relay_config::{ConfigError, LogSettings};
use tokio_util::sync::CancellationToken;

/// Exit code for configuration errors.
pub const EXIT_CONFIG: i32 = 2;

/// Prints every configuration problem to stderr and exits with [`EXIT_CONFIG`].
pub fn exit_on_config_error(service: &str, error: ConfigError) -> ! {
    eprintln!("{service}: {error}");
    std::process::exit(EXIT_CONFIG)
}

/// Handles the command line of a service configured by its environment alone: `--help` (`-h`)
/// prints `about` and the variables the service reads, `--version` (`-V`) its name and version,
/// both to stdout with exit 0; any other argument is an error (exit [`EXIT_CONFIG`]). Returns
/// when there are no arguments. Call it first in `main`.
pub fn handle_command_line(name: &'static str, about: &'static str, variable_groups: &[&[&str]]) {
    let mut variables = String::from("Configured by environment variables (see README \"Configuration\"):\n");
    for group in variable_groups {
        // One group per paragraph, wrapped at about 100 columns.
        let mut line = String::from(" ");
        for (i, name) in group.iter().enumerate() {
            let separator = if i + 1 < group.len() { "," } else { "" };
            if line.len() + name.len() + 2 > 100 {
                let _ = writeln!(variables, "{line}");
                line = String::from(" ");
            }
            line.push(' ');
            line.push_str(name);
            line.push_str(separator);
        }
        let _ = writeln!(variables, "{line}");
    }
    variables.push_str("  RUST_LOG, OTEL_EXPORTER_OTLP_ENDPOINT and the other standard OTEL_* variables");
    let command =
        clap::Command::new(name).version(env!("CARGO_PKG_VERSION")).about(about).after_help(variables);
    if let Err(e) = command.try_get_matches() {
        e.exit()
    }
}

/// Logs to stderr as text or JSON (`RUST_LOG` filters, default `info`), repeated lines
/// summarised, colour only on a terminal without `NO_COLOR`, and exports spans over OTLP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the guard until the service returned.
pub fn init_logging(settings: impl Into<LogSettings>, service: &'static str) -> relay_telemetry::Telemetry {
    relay_telemetry::init(&settings.into(), service)
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
