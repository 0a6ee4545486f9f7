//! The poller's probe: every `RELAY_PROBE_INTERVAL_MS` it checks the database and the brokers
//! for `/readyz` and refreshes the backlog gauges (pending rows, age of the oldest, parked rows).
//! It runs beside the publishing loop on connections of its own, so a stuck publish cannot hide
//! an outage from readiness, and an outage is reported even while a standby is idle.
use std::time::Duration;

use metrics::gauge;
use relay_health::Health;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::PollerConfig;

pub(crate) const DATABASE: &str = "database";
pub(crate) const KAFKA: &str = "kafka";

pub(crate) async fn watch(config: PollerConfig, health: Health, shutdown: CancellationToken) {
    let probe = match relay_kafka::Probe::new(
        &config.common.kafka_brokers,
        &format!("relay-outbox-poller-{}-probe", config.source),
        &config.common.kafka_properties,
    ) {
        Ok(probe) => Some(probe),
        Err(e) => {
            health.degraded(KAFKA, &e);
            None
        }
    };
    let timeout = config.common.probe_interval.clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut db: Option<Client> = None;
    loop {
        match backlog(&mut db, &config).await {
            Ok(()) => health.ok(DATABASE),
            Err(e) => {
                db = None;
                health.degraded(DATABASE, e);
            }
        }
        if let Some(probe) = &probe {
            match probe.check(timeout).await {
                Ok(_) => health.ok(KAFKA),
                Err(why) => health.degraded(KAFKA, why),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.common.probe_interval) => {}
        }
    }
}

/// Reads the backlog on the probe's own session, opening one when needed.
async fn backlog(db: &mut Option<Client>, config: &PollerConfig) -> Result<(), relay_db::DbError> {
    if db.as_ref().is_none_or(Client::is_closed) {
        let client = relay_db::connect(&config.database_url).await?;
        client.batch_execute("SET statement_timeout = '5s'").await?;
        *db = Some(client);
    }
    let Some(client) = db.as_ref() else { return Ok(()) };
    let row = client.query_one(include_str!("backlog.sql"), &[&config.topics]).await?;
    gauge!("relay_outbox_backlog").set(row.get::<_, i64>(0) as f64);
    gauge!("relay_outbox_oldest_pending_age_seconds").set(row.get::<_, f64>(1));
    gauge!("relay_outbox_parked").set(row.get::<_, i64>(2) as f64);
    Ok(())
}
