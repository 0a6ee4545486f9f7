//! PostgreSQL plumbing shared by the Relay services.
//!
//! Connection pools and single connections built from a [`DatabaseUrl`], and the two versioned
//! schemas (origin side: `relay.outbox`; receiving side: `relay.inbox`). Migrations run under an
//! advisory lock, so two instances starting at once are safe, and can be turned off for DBAs who
//! apply `migrations/` themselves, in which case start-up checks the schema is there.
#![forbid(unsafe_code)]

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use relay_config::DatabaseUrl;
use tokio_postgres::{AsyncMessage, Client, NoTls};

pub mod audit;
mod describe;
mod pooling;
mod tls;

pub use audit::Actor;
pub use describe::describe;
pub use pooling::refuse_transaction_pooling;

mod migrations {
    pub mod outbox {
        refinery::embed_migrations!("migrations/outbox");
    }
    pub mod inbox {
        refinery::embed_migrations!("migrations/inbox");
    }
}

/// Lock key (class, object) serialising every Relay migration in one database: the outbox and
/// inbox schemas share `relay`, so they must not be created at the same moment either.
/// Its class differs from relay.enqueue's per-key locks (1380273217) and the poller's leader
/// lock (1380273218), so no key can ever collide with it.
pub const MIGRATION_LOCK: (i32, i32) = (1_380_273_219, 1);

/// How long a migration statement may wait for a table lock. `ALTER TABLE` needs an exclusive
/// lock, and while it waits behind an open application transaction every later statement on that
/// table (each `relay.enqueue`) queues behind it. So it gives up after this long, the migration
/// rolls back, and [`prepare_schema_patiently`] tries again 10 to 20 s later: the application is
/// held up for at most this long per attempt instead of until the other transaction ends.
pub const MIGRATION_LOCK_TIMEOUT: &str = "1s";

/// The pause after a migration gave up on a lock, before the next attempt: 10 to 20 s (jittered,
/// so replicas do not take turns back to back).
const MIGRATION_RETRY: Duration = Duration::from_secs(10);

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL database {database}: {}", describe(.source))]
    Connect { database: String, source: tokio_postgres::Error },
    #[error("cannot set up TLS for the database connection: {0}")]
    Tls(String),
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    #[error("no connection from the pool: {0}")]
    Checkout(#[from] deadpool_postgres::PoolError),
    #[error("database query failed: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("schema migration failed: {}", migration_failure(.0))]
    Migration(#[from] refinery::Error),
    #[error(
        "a schema migration waited {MIGRATION_LOCK_TIMEOUT} for a table lock held by another \
         transaction and gave up so as not to block the application; it is retried"
    )]
    MigrationLockTimeout,
    #[error(
        "{table} does not exist and RELAY_MIGRATE=false: apply crates/relay-db/migrations/{schema}/ first"
    )]
    SchemaMissing { table: &'static str, schema: &'static str },
    #[error(
        "database {database} is reached through a transaction- or statement-mode connection pooler \
         ({evidence}): Relay keeps state in its database sessions (the leader's lease session, \
         LISTEN, prepared statements, session settings) and needs one server session per \
         connection. Connect to PostgreSQL directly or through a session-mode pooler (PgBouncer \
         pool_mode=session)"
    )]
    TransactionPooling { database: String, evidence: String },
}

/// A failed migration with the server's SQLSTATE and message, which refinery's text leaves out.
fn migration_failure(error: &refinery::Error) -> String {
    match describe::describe_within(error) {
        Some(server) => format!("{error}: {server}"),
        None => error.to_string(),
    }
}

impl DbError {
    /// Whether the error may go away by itself (the server is down, restarting or unreachable),
    /// as opposed to a missing schema or a statement the server will always refuse.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect { .. } | DbError::Checkout(_) | DbError::MigrationLockTimeout => true,
            DbError::Query(e) => match e.code() {
                // No SQLSTATE: the connection itself failed.
                None => true,
                // Connection exceptions, insufficient resources, operator intervention (restart).
                Some(code) => matches!(&code.code()[..2], "08" | "53" | "57"),
            },
            DbError::Pool(_)
            | DbError::Tls(_)
            | DbError::Migration(_)
            | DbError::SchemaMissing { .. }
            | DbError::TransactionPooling { .. } => false,
        }
    }
}

/// [`prepare_schema`], retried with capped, jittered backoff while the database is unreachable,
/// so a service started before its database waits instead of exiting. `on_retry` sees each
/// transient failure (for readiness). Returns `Ok(false)` when `shutdown` came first.
pub async fn prepare_schema_patiently(
    url: &DatabaseUrl,
    schema: Schema,
    migrate: bool,
    shutdown: &tokio_util::sync::CancellationToken,
    mut on_retry: impl FnMut(&DbError),
) -> Result<bool, DbError> {
    let mut backoff = backoff();
    loop {
        match prepare_schema(url, schema, migrate).await {
            Ok(()) => return Ok(true),
            Err(e) if e.is_transient() => {
                let delay = match e {
                    // Each attempt holds up the application for up to the lock timeout; space
                    // them out so that it runs freely most of the time.
                    DbError::MigrationLockTimeout => {
                        MIGRATION_RETRY.mul_f64(1.0 + rand::random_range(0.0..1.0))
                    }
                    _ => backoff.next().unwrap_or(Duration::from_secs(10)),
                };
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "schema not prepared; retrying");
                on_retry(&e);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The retry policy for transient failures everywhere in Relay: exponential from 100 ms, capped
/// at 10 s, with jitter so replicas do not retry in step, and no limit on attempts.
pub fn backoff() -> impl Iterator<Item = Duration> + Send {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Which of Relay's schemas a service needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `relay.outbox` and `relay.enqueue`, in an origin service's database.
    Outbox,
    /// `relay.inbox` and `relay.dead_letter`, in a receiving service's database.
    Inbox,
}

impl Schema {
    fn table(self) -> &'static str {
        match self {
            Schema::Outbox => "relay.outbox",
            Schema::Inbox => "relay.inbox",
        }
    }
    /// `outbox` or `inbox`: the directory under `crates/relay-db/migrations/`.
    pub fn dir(self) -> &'static str {
        match self {
            Schema::Outbox => "outbox",
            Schema::Inbox => "inbox",
        }
    }
    /// The table refinery keeps this schema's migration history in.
    pub fn history_table(self) -> &'static str {
        match self {
            Schema::Outbox => "relay_outbox_schema_history",
            Schema::Inbox => "relay_inbox_schema_history",
        }
    }
}

/// A pool of connections; `size` bounds concurrent use.
pub fn pool(url: &DatabaseUrl, size: usize) -> Result<Pool, DbError> {
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match tls::connector(url)? {
        None => Manager::from_config(with_timeouts(url), NoTls, recycling),
        Some(tls) => Manager::from_config(with_timeouts(url), tls, recycling),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Connection settings with timeouts, so a silent database host cannot hang a service: connecting
/// gives up after 10 s and a connection whose peer stops answering is dropped after 30 s.
fn with_timeouts(url: &DatabaseUrl) -> tokio_postgres::Config {
    let mut config = url.config().clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .tcp_user_timeout(Duration::from_secs(30));
    config
}

/// Opens one connection, plain or TLS as the URL says, and hands its connection half to `drive`
/// (which must poll it for the client to work).
async fn open(url: &DatabaseUrl, drive: impl Driver) -> Result<Client, DbError> {
    let config = with_timeouts(url);
    let failed = |source| DbError::Connect { database: url.database_name().into(), source };
    match tls::connector(url)? {
        None => {
            let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
            drive.drive(connection);
            Ok(client)
        }
        Some(tls) => {
            let (client, connection) = config.connect(tls).await.map_err(failed)?;
            drive.drive(connection);
            Ok(client)
        }
    }
}

/// What to do with a connection's half that talks to the server, whatever its stream type.
trait Driver {
    fn drive<T>(self, connection: tokio_postgres::Connection<tokio_postgres::Socket, T>)
    where
        T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static;
}

/// Polls the connection in the background until it closes.
struct Background;

impl Driver for Background {
    fn drive<T>(self, connection: tokio_postgres::Connection<tokio_postgres::Socket, T>)
    where
        T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "database connection closed");
            }
        });
    }
}

/// Polls the connection in the background and forwards each notification (with the second
/// field set, each whose payload it is) as a wake-up.
struct Notifications(tokio::sync::mpsc::Sender<()>, Option<String>);

impl Driver for Notifications {
    fn drive<T>(self, mut connection: tokio_postgres::Connection<tokio_postgres::Socket, T>)
    where
        T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
    {
        use futures::StreamExt;
        let Self(tx, payload) = self;
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n))
                        if payload.as_deref().is_some_and(|p| p != n.payload()) => {}
                    Ok(AsyncMessage::Notification(_)) => {
                        // A full channel already holds a wake-up; one is enough.
                        if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %describe(&e), "LISTEN connection lost");
                        return;
                    }
                }
            }
        });
    }
}

/// One connection outside any pool, for work that owns its session (locks, migrations).
pub async fn connect(url: &DatabaseUrl) -> Result<Client, DbError> {
    open(url, Background).await
}

/// [`connect`], after refusing a transaction-mode pooler ([`refuse_transaction_pooling`]): for
/// tools that connect once per run rather than preparing a schema at start-up.
pub async fn connect_checked(url: &DatabaseUrl) -> Result<Client, DbError> {
    refuse_transaction_pooling(url).await?;
    connect(url).await
}

/// A connection that `LISTEN`s on `channel`; each notification is sent on the returned channel,
/// or with `only` set, each whose payload is exactly `only` (one inbox's name on `relay_inbox`,
/// which every inbox of a database shares). The receiver sees the channel close when the
/// connection is lost.
pub async fn listen(
    url: &DatabaseUrl,
    channel: &str,
    only: Option<&str>,
) -> Result<(Client, tokio::sync::mpsc::Receiver<()>), DbError> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let client = open(url, Notifications(tx, only.map(str::to_owned))).await?;
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok((client, rx))
}

fn runner(schema: Schema) -> refinery::Runner {
    match schema {
        Schema::Outbox => migrations::outbox::migrations::runner(),
        Schema::Inbox => migrations::inbox::migrations::runner(),
    }
}

/// The newest migration version of `schema` this build carries.
pub fn latest_version(schema: Schema) -> i32 {
    runner(schema).get_migrations().iter().map(|m| m.version()).max().unwrap_or(0)
}

/// Every migration of `schema` this build carries, oldest first, exactly as refinery applies them
/// (version, name, checksum, SQL): for scripts that must leave the history refinery would.
pub fn migrations(schema: Schema) -> Vec<refinery::Migration> {
    let mut all = runner(schema).get_migrations().clone();
    all.sort();
    all
}

/// Creates or upgrades `schema` when `migrate` is true; otherwise checks that it exists. First
/// refuses a transaction-mode pooler ([`refuse_transaction_pooling`]), so every service that
/// prepares its schema at start-up refuses one.
pub async fn prepare_schema(url: &DatabaseUrl, schema: Schema, migrate: bool) -> Result<(), DbError> {
    refuse_transaction_pooling(url).await?;
    let mut client = connect(url).await?;
    if !migrate {
        let row = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&schema.table()]).await?;
        return if row.get::<_, bool>(0) {
            Ok(())
        } else {
            Err(DbError::SchemaMissing { table: schema.table(), schema: schema.dir() })
        };
    }
    // Up to date already (every restart after the first): no lock needed. Any role may take
    // advisory locks, so a session holding the migration lock must not keep a service from
    // starting when there is nothing to migrate.
    if applied_version(&client, schema).await? >= latest_version(schema) {
        return Ok(());
    }
    let (class, object) = MIGRATION_LOCK;
    client.execute("SELECT pg_advisory_lock($1, $2)", &[&class, &object]).await?;
    let mut runner = runner(schema);
    runner.set_migration_table_name(schema.history_table());
    // After taking the advisory lock, which may wait as long as another instance migrates.
    client.batch_execute(&format!("SET lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'")).await?;
    let report = runner.run_async(&mut client).await;
    // Unlock even after a failure; the lock also ends with the session.
    client.execute("SELECT pg_advisory_unlock($1, $2)", &[&class, &object]).await?;
    let report = report.map_err(|e| {
        if waited_for_lock(&e) {
            DbError::MigrationLockTimeout
        } else {
            DbError::Migration(e)
        }
    })?;
    for migration in report.applied_migrations() {
        tracing::info!(schema = schema.dir(), migration = %migration, "applied schema migration");
    }
    Ok(())
}

/// The newest migration of `schema` applied to the database; 0 before the first.
async fn applied_version(client: &Client, schema: Schema) -> Result<i32, DbError> {
    let history = schema.history_table();
    let exists = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&history]).await?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client.query_one(&format!("SELECT coalesce(max(version), 0) FROM {history}"), &[]).await?;
    Ok(row.get(0))
}

/// Whether a migration failed because a statement ran into `lock_timeout` (SQLSTATE 55P03).
fn waited_for_lock(error: &refinery::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            return pg.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
        }
        cause = e.source();
    }
    false
}
