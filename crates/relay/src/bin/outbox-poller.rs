//! outbox-poller: publishes an origin database's outbox to Kafka. See `relay_poller`.
#![forbid(unsafe_code)]
use relay_config::ProcessEnv;

fn main() -> anyhow::Result<()> {
    let config = relay_poller::PollerConfig::from_env(&ProcessEnv)
        .unwrap_or_else(|e| relay::exit_on_config_error("outbox-poller", e));
    relay::run_service(async {
        let _telemetry = relay::init_logging(config.common.log_format, "outbox-poller");
        relay_poller::run(config, relay::shutdown_on_signal()).await
    })??;
    Ok(())
}
