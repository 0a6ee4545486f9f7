//! outbox-poller: publishes an origin database's outbox to Kafka. See `relay_poller`.
use relay_config::ProcessEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = relay_poller::PollerConfig::from_env(&ProcessEnv)
        .unwrap_or_else(|e| relay::exit_on_config_error("outbox-poller", e));
    relay::init_logging(config.common.log_format);
    relay_poller::run(config, relay::shutdown_on_signal()).await?;
    Ok(())
}
