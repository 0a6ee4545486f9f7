//! Start-up (schema, opt-in) and the workers' loop: each worker owns one connection and runs
//! [`crate::batch::process`] until shutdown, waiting between empty claims for a notification or
//! the poll interval, and reconnecting with backoff when the database goes away.
use std::{sync::Arc, time::Duration};

use relay_config::DatabaseUrl;
use tokio::sync::watch;
use tokio_postgres::{error::SqlState, Client};
use tokio_util::sync::CancellationToken;

use crate::{batch, wake, Handler, ProcessingConfig, ProcessingError};

/// What every worker of one [`run`] shares.
struct Shared<H> {
    handler: H,
    url: DatabaseUrl,
    inbox: String,
    batch: i32,
    poll_interval: Duration,
}

/// Runs `config.workers` workers on `config.inbox` with `handler` until `shutdown` is
/// cancelled; each worker then finishes the message in hand, commits and stops, and `run`
/// returns once all have.
///
/// At start it prepares the inbox schema (migrating when `RELAY_MIGRATE` is true, waiting while
/// the database is unreachable) and opts the inbox in with `relay.enable_processing` and the
/// configured attempts and backoff.
///
/// # Errors
/// [`ProcessingError`] when the schema cannot be prepared, lacks the processing functions, or
/// the inbox cannot be enabled (for instance for lack of privilege). Later failures are retried.
pub async fn run<H: Handler>(
    config: ProcessingConfig,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), ProcessingError> {
    describe_metrics(&config.inbox);
    let url = config.database_url.clone();
    let schema = relay_db::Schema::Inbox;
    let ready = relay_db::prepare_schema_patiently(&url, schema, config.migrate, &shutdown, |_| {}).await?;
    if !ready {
        return Ok(());
    }
    enable(&config).await?;
    let wake = wake::spawn(url.clone(), config.inbox.clone(), shutdown.clone());
    let shared = Arc::new(Shared {
        handler,
        url,
        inbox: config.inbox.clone(),
        batch: config.batch,
        poll_interval: config.poll_interval,
    });
    tracing::info!(inbox = %config.inbox, workers = config.workers, batch = config.batch, "processing");
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..config.workers {
        workers.spawn(work(id, Arc::clone(&shared), wake.clone(), shutdown.clone()));
    }
    let mut totals = batch::Committed::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(done) => {
                totals.done += done.done;
                totals.retried += done.retried;
                totals.parked += done.parked;
            }
            Err(e) => tracing::error!(error = %e, "a worker task ended abnormally"),
        }
    }
    tracing::info!(
        done = totals.done,
        retried = totals.retried,
        parked = totals.parked,
        "processing stopped"
    );
    Ok(())
}

/// `relay.enable_processing` with the configured settings.
async fn enable(config: &ProcessingConfig) -> Result<(), ProcessingError> {
    let client = relay_db::connect(&config.database_url).await?;
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    let result = client
        .execute(
            include_str!("enable.sql"),
            &[
                &config.inbox,
                &config.max_attempts,
                &millis(config.backoff_initial),
                &millis(config.backoff_max),
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {
            Err(ProcessingError::NotMigrated { database: config.database_url.database_name().into() })
        }
        Err(e) => Err(ProcessingError::Enable {
            inbox: config.inbox.clone(),
            reason: e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_string()),
        }),
    }
}

/// One worker until shutdown; returns what it committed.
async fn work<H: Handler>(
    id: usize,
    shared: Arc<Shared<H>>,
    mut wake: watch::Receiver<u64>,
    shutdown: CancellationToken,
) -> batch::Committed {
    let labels = [("inbox", shared.inbox.clone())];
    let mut totals = batch::Committed::default();
    let mut backoff = relay_db::backoff();
    let mut client: Option<(Client, batch::Statements)> = None;
    while !shutdown.is_cancelled() {
        let (connection, statements) = match client.take() {
            Some(open) if !open.0.is_closed() => client.insert(open),
            _ => match open(&shared.url).await {
                Ok(open) => client.insert(open),
                Err(e) => {
                    pause(&mut backoff, &shutdown, id, &e).await;
                    continue;
                }
            },
        };
        // Seen before claiming: a notification from now on wakes this worker after an empty claim.
        wake.borrow_and_update();
        match batch::process(connection, statements, &shared.inbox, shared.batch, &shared.handler, &shutdown)
            .await
        {
            Ok(committed) => {
                backoff = relay_db::backoff();
                metrics::counter!("relay_processing_done_total", &labels).increment(committed.done);
                metrics::counter!("relay_processing_retries_total", &labels).increment(committed.retried);
                metrics::counter!("relay_processing_parked_total", &labels).increment(committed.parked);
                totals.done += committed.done;
                totals.retried += committed.retried;
                totals.parked += committed.parked;
                if committed.handled() == 0 {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        // A closed channel (the listener gone) never fires; the poll still does.
                        _ = async { if wake.changed().await.is_err() { std::future::pending::<()>().await } } => {}
                        _ = tokio::time::sleep(shared.poll_interval) => {}
                    }
                }
            }
            Err(e) => {
                // The transaction did not commit: its messages are claimed again.
                client = None;
                metrics::counter!("relay_processing_errors_total", &labels).increment(1);
                pause(&mut backoff, &shutdown, id, &relay_db::DbError::from(e)).await;
            }
        }
    }
    totals
}

/// A worker's connection with the protocol's statements prepared on it.
async fn open(url: &DatabaseUrl) -> Result<(Client, batch::Statements), relay_db::DbError> {
    let client = relay_db::connect(url).await?;
    let statements = batch::Statements::prepare(&client).await?;
    Ok((client, statements))
}

/// Logs `error` and waits for the next backoff delay or shutdown.
async fn pause(
    backoff: &mut (impl Iterator<Item = Duration> + Send),
    shutdown: &CancellationToken,
    worker: usize,
    error: &relay_db::DbError,
) {
    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
    tracing::warn!(worker, error = %error, retry_in_ms = delay.as_millis() as u64, "processing transaction failed; retrying");
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

/// Describes the worker's counters and registers them at 0 for `inbox`, so that an embedding
/// service that installs a Prometheus recorder exports them with their help text from start-up.
fn describe_metrics(inbox: &str) {
    metrics::describe_counter!(
        "relay_processing_done_total",
        "Messages the handler processed and marked done"
    );
    metrics::describe_counter!(
        "relay_processing_retries_total",
        "Handler failures scheduled for another attempt"
    );
    metrics::describe_counter!(
        "relay_processing_parked_total",
        "Messages parked after PROCESSING_MAX_ATTEMPTS failures"
    );
    metrics::describe_counter!(
        "relay_processing_errors_total",
        "Batches whose transaction failed (database) and were claimed again"
    );
    for name in [
        "relay_processing_done_total",
        "relay_processing_retries_total",
        "relay_processing_parked_total",
        "relay_processing_errors_total",
    ] {
        metrics::counter!(name, "inbox" => inbox.to_string()).absolute(0);
    }
}
