//! inbox-consumer: stores each message once in a receiving service's inbox. See `relay_inbox`.
#![forbid(unsafe_code)]
use relay_config::ProcessEnv;

fn main() -> anyhow::Result<()> {
    let config = relay_inbox::ConsumerConfig::from_env(&ProcessEnv)
        .unwrap_or_else(|e| relay::exit_on_config_error("inbox-consumer", e));
    relay::run_service(async {
        let _telemetry = relay::init_logging(config.common.log_format, "inbox-consumer");
        relay_inbox::run(config, relay::shutdown_on_signal()).await
    })??;
    Ok(())
}
