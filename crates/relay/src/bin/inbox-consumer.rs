//! inbox-consumer: stores each message once in a receiving service's inbox. See `relay_inbox`.
#![forbid(unsafe_code)]
use relay_config::ProcessEnv;

fn main() -> anyhow::Result<()> {
    relay::handle_command_line(
        "inbox-consumer",
        "Store each Kafka message once in a receiving service's inbox (relay.inbox), dead-lettering records that cannot be stored.",
        &[
            relay_inbox::names::ALL,
            relay_config::names::SHARED_HELP,
            &["INBOX_TOPIC_<TOPIC>_MAX_PAYLOAD_BYTES"],
            &[relay_config::security_names::KAFKA_SECURITY_PROTOCOL],
            relay_config::security_names::SASL_ALL,
            relay_config::security_names::SSL_ALL,
        ],
    );
    let config = relay_inbox::ConsumerConfig::from_env(&ProcessEnv)
        .unwrap_or_else(|e| relay::exit_on_config_error("inbox-consumer", e));
    relay::run_service(async {
        let _telemetry = relay::init_logging(config.common.log, "inbox-consumer");
        relay_inbox::run(config, relay::shutdown_on_signal()).await
    })??;
    Ok(())
}
