//! The poller's probe: every `RELAY_PROBE_INTERVAL_MS` it checks the database and the brokers
//! for `/readyz` and refreshes the backlog gauges (pending rows, age of the oldest, parked rows).
//! It runs beside the publishing loop on connections of its own, so a stuck publish cannot hide
//! an outage from readiness, and an outage is reported even while a standby is idle.

use metrics::gauge;
use relay_health::{Health, DATABASE, KAFKA};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::{
    publishing::{Publishing, Source},
    PollerConfig,
};

pub(crate) async fn watch(
    config: PollerConfig,
    health: Health,
    publishing: Publishing,
    shutdown: CancellationToken,
) {
    let client_id = format!("relay-outbox-poller-{}-probe", config.source);
    let probe =
        relay_kafka::Probe::new(&config.common, &client_id).map_err(|e| health.degraded(KAFKA, e)).ok();
    let mut db: Option<Client> = None;
    loop {
        if health.record(DATABASE, backlog(&mut db, &config).await).is_none() {
            db = None;
        }
        if let Some(probe) = &probe {
            match health.record(KAFKA, probe.check().await) {
                Some(_) => publishing.ok(Source::Broker),
                None => publishing.degraded(Source::Broker, "no broker answers: see the kafka part"),
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
