//! relay-example-worker: an EXAMPLE of embedding `relay_processing` in a Rust service, used by
//! Relay's integration tests and benchmarks; not a service to deploy.
//!
//! Its handler writes one row per message into the table `EXAMPLE_TABLE` (created if missing),
//! in the same transaction as the message's mark, with the key's running count in `position`.
//! Messages whose key is `EXAMPLE_FAIL_KEY` fail, so that retries and parking can be watched.
//! `EXAMPLE_HANDLER_DELAY_MS` makes each effect take that long (the transaction stays open).
//! Everything else is the worker's own configuration: `DATABASE_URL`, `PROCESSING_INBOX`,
//! `PROCESSING_WORKERS`, ... (see `relay_processing::ProcessingConfig`).
use std::time::Duration;

use relay_config::{ProcessEnv, Reader};
use relay_processing::{Handler, HandlerError, Message, ProcessingConfig};
use tokio_postgres::Transaction;

/// The example's own settings.
struct Example {
    table: String,
    fail_key: Option<String>,
    delay: Duration,
}

impl Example {
    fn read(r: &mut Reader<'_>) -> Self {
        let table = r.required("EXAMPLE_TABLE").unwrap_or_default();
        let plain = table.len() <= 48
            && table.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && table.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !table.is_empty() && !plain {
            r.problem("EXAMPLE_TABLE", "must be a plain lower-case table name (a-z, 0-9, _; at most 48)");
        }
        let fail_key = r.optional("EXAMPLE_FAIL_KEY");
        let delay = r.millis("EXAMPLE_HANDLER_DELAY_MS", 0, 0, 60_000);
        r.reject_unknown(
            "EXAMPLE_",
            &["EXAMPLE_TABLE", "EXAMPLE_FAIL_KEY", "EXAMPLE_HANDLER_DELAY_MS"],
            |_| false,
        );
        Self { table, fail_key, delay }
    }
}

/// The business effect: one row in the example's table.
struct Effect {
    insert: String,
    fail_key: Option<String>,
    delay: Duration,
}

impl Handler for Effect {
    async fn handle(&self, message: &Message, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        if self.fail_key.as_deref() == Some(message.key.as_str()) {
            return Err(format!("example failure for key {}", message.key).into());
        }
        tx.execute(
            &self.insert,
            &[&message.message_id, &message.source, &message.topic, &message.key, &message.sequence],
        )
        .await?;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    relay::handle_command_line(
        "relay-example-worker",
        "An EXAMPLE of embedding relay-processing: processes an inbox's messages, writing one row per message into EXAMPLE_TABLE.",
        &[
            &["EXAMPLE_TABLE", "EXAMPLE_FAIL_KEY", "EXAMPLE_HANDLER_DELAY_MS"],
            relay_processing::names::ALL,
            &[
                relay_config::names::DATABASE_URL,
                relay_config::names::DATABASE_URL_FILE,
                relay_config::names::RELAY_MIGRATE,
                relay_config::names::LOG_FORMAT,
                relay_config::names::LOG_REPEAT_SUMMARY_SECS,
                relay_config::NO_COLOR,
            ],
        ],
    );
    let (config, example) = ProcessingConfig::from_env_with(&ProcessEnv, Example::read)
        .unwrap_or_else(|e| relay::exit_on_config_error("relay-example-worker", e));
    let _telemetry = relay::init_logging(config.log, "relay-example-worker");
    let mut client = relay_db::connect(&config.database_url).await?;
    let tx = client.transaction().await?;
    // Several example workers may start at once on a new database. A table made beforehand is
    // used as it is (the worker's user may have no right to create one).
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('relay-example-worker'))", &[]).await?;
    let missing: bool = tx.query_one("SELECT to_regclass($1) IS NULL", &[&example.table]).await?.get(0);
    if missing {
        tx.batch_execute(&include_str!("create.sql").replace("{table}", &example.table)).await?;
    }
    tx.commit().await?;
    drop(client);
    let effect = Effect {
        insert: include_str!("effect.sql").replace("{table}", &example.table),
        fail_key: example.fail_key,
        delay: example.delay,
    };
    relay_processing::run(config, effect, relay::shutdown_on_signal()).await?;
    Ok(())
}
