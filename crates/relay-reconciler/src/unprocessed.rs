//! The "unprocessed" finding: for an inbox whose receiving service processes messages through
//! `relay.claim` (a `relay.processing` row), messages stored longer than
//! `RECONCILE_UNPROCESSED_SECS` ago and not processed yet, and the ones it parked. Delivery is
//! proven by the pair comparison; this proves the receiving service acted on what was delivered.
use std::time::Duration;

use tokio_postgres::Client;

use crate::{
    compare::Meter,
    report::{Ids, ParkedRow, Unprocessed},
};

/// The finding for `inbox`, or `None` when it does not process messages (or its schema predates
/// processing, inbox migration V6).
pub(crate) async fn findings(
    client: &Client,
    inbox: &str,
    after: Duration,
    max_ids: i64,
    meter: &mut Meter,
) -> Result<Option<Unprocessed>, tokio_postgres::Error> {
    let exists: bool =
        client.query_one("SELECT to_regclass('relay.processing') IS NOT NULL", &[]).await?.get(0);
    if !exists
        || !client.query_one(include_str!("sql/processing_enabled.sql"), &[&inbox]).await?.get::<_, bool>(0)
    {
        return Ok(None);
    }
    // The age is measured on the inbox database's clock (received_at is its own).
    let late =
        client.query(include_str!("sql/unprocessed.sql"), &[&inbox, &after.as_secs_f64(), &max_ids]).await?;
    let parked = client.query(include_str!("sql/unprocessed_parked.sql"), &[&inbox, &max_ids]).await?;
    meter.rows += (late.len() + parked.len()) as u64;
    meter.bytes += (late.len() * 24 + parked.len() * 80) as u64;
    Ok(Some(Unprocessed {
        after_secs: after.as_secs(),
        late: Ids::from_rows(&late, 1),
        parked_count: parked.first().map_or(0, |r| r.get::<_, i64>(2) as u64),
        parked: parked
            .iter()
            .map(|r| ParkedRow {
                message_id: r.get(0),
                reason: r.get::<_, Option<String>>(1).unwrap_or_default(),
            })
            .collect(),
    }))
}
