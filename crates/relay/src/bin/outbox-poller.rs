//! outbox-poller: publishes an origin database's outbox to Kafka. See `relay_poller`.
#![forbid(unsafe_code)]
use relay_config::ProcessEnv;

fn main() -> anyhow::Result<()> {
    relay::handle_command_line(
        "outbox-poller",
        "Publish an origin database's committed outbox rows to Kafka, in per-key order, marking each row only after the broker acknowledged it.",
        &[
            relay_poller::names::ALL,
            relay_config::names::SHARED_HELP,
            &["OUTBOX_TOPIC_<TOPIC>_MAX_PAYLOAD_BYTES"],
            &[relay_config::security_names::KAFKA_SECURITY_PROTOCOL],
            relay_config::security_names::SASL_ALL,
            relay_config::security_names::SSL_ALL,
        ],
    );
    let config = relay_poller::PollerConfig::from_env(&ProcessEnv)
        .unwrap_or_else(|e| relay::exit_on_config_error("outbox-poller", e));
    relay::run_service(async {
        let _telemetry = relay::init_logging(config.common.log, "outbox-poller");
        relay_poller::run(config, relay::shutdown_on_signal()).await
    })??;
    Ok(())
}
