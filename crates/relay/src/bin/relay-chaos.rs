//! relay-chaos: the chaos suite (faults injected while Relay carries a workload). See `relay_chaos`.
use clap::Parser;

#[tokio::main]
async fn main() {
    let args = relay_chaos::cli::Args::parse();
    relay::init_logging(relay_config::LogFormat::Text);
    let code = match relay_chaos::cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "the chaos run could not complete");
            2
        }
    };
    std::process::exit(code)
}
