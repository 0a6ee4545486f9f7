//! One chaos run: the topology, the workload paced by the faults, the end check, the report.
//!
//! Topology: a private PostgreSQL with the databases `chaos_origin`, `chaos_ledger` and
//! `chaos_notify`; Tansu on durable storage; one topic of several partitions; two pollers (HA)
//! and two consumers per inbox. Every service reaches PostgreSQL and the broker through a
//! fault-injecting proxy; the workload, the checks and the reconciler connect directly.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    broker::{Broker, Storage},
    faults::{self, FaultSettings, Injector, Targets},
    io_error,
    postgres::PgCluster,
    progress::ProgressProbe,
    proxy::Proxy,
    report::{Report, RunSettings},
    services::{ServiceSpec, Services},
    verify::{self, Check, InboxTarget},
    workload::Workload,
    ChaosError,
};

const ORIGIN_DB: &str = "chaos_origin";
const SOURCE: &str = "chaos";
const TOPIC: &str = "chaos-payments";
/// (inbox name, database, consumer service names).
const INBOXES: [(&str, &str, [&str; 2]); 2] = [
    ("ledger", "chaos_ledger", ["ledger-a", "ledger-b"]),
    ("notify", "chaos_notify", ["notify-a", "notify-b"]),
];
const POLLERS: [&str; 2] = ["poller-a", "poller-b"];
/// How long the workload may lag behind the faults before the injector goes on without it.
const PACE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a run does.
#[derive(Debug, Clone)]
pub struct Settings {
    pub messages: u64,
    pub keys: u64,
    pub faults_per_kind: usize,
    pub seed: u64,
    pub partitions: i32,
    pub out_dir: PathBuf,
    /// Where outbox-poller, inbox-consumer and reconciler are.
    pub bin_dir: PathBuf,
    pub per_tx: u64,
    pub writers: usize,
    /// Quiet time between two faults, after the pipeline caught up.
    pub pause: Duration,
    /// How long to wait for the pipeline to move after a fault before going on regardless.
    pub recovery_timeout: Duration,
    /// How long the pipeline may take to drain after the last fault.
    pub drain_timeout: Duration,
    pub faults: FaultSettings,
}

/// Runs the whole suite and returns its report (also written to `out_dir`).
pub async fn run(settings: Settings) -> Result<Report, ChaosError> {
    let started = Instant::now();
    let out = settings.out_dir.clone();
    std::fs::create_dir_all(&out).map_err(io_error(format!("create {}", out.display())))?;

    let postgres = PgCluster::start().await?;
    for db in std::iter::once(ORIGIN_DB).chain(INBOXES.iter().map(|i| i.1)) {
        postgres.create_database(db).await?;
    }
    let pg_proxy =
        Proxy::start("postgres", 0, postgres.addr()).await.map_err(io_error("start the PostgreSQL proxy"))?;
    let broker_port = crate::free_port()?;
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], broker_port));
    let kafka_proxy =
        Proxy::start("kafka", 0, broker_addr).await.map_err(io_error("start the Kafka proxy"))?;
    let broker =
        Broker::start(broker_port, kafka_proxy.addr(), Storage::Sqlite(out.join("tansu")), &out).await?;
    let brokers = kafka_proxy.addr().to_string();
    relay_kafka::create_topics(&brokers, &Default::default(), &[TOPIC.to_string()], settings.partitions)
        .await?;

    let via_proxy =
        |db: &str, app: &str| format!("postgres://postgres@{}/{db}?application_name={app}", pg_proxy.addr());
    let mut services = Services::new(settings.bin_dir.clone(), out.clone());
    for poller in POLLERS {
        services.add(poller, poller_spec(&via_proxy(ORIGIN_DB, poller), &brokers))?;
    }
    for (inbox, db, consumers) in INBOXES {
        for consumer in consumers {
            services.add(consumer, consumer_spec(&via_proxy(db, consumer), &brokers, inbox))?;
        }
    }
    await_schema(&postgres.url(ORIGIN_DB), "relay.outbox").await?;
    for (_, db, _) in INBOXES {
        await_schema(&postgres.url(db), "relay.inbox").await?;
    }
    tracing::info!(brokers = %brokers, postgres = %pg_proxy.addr(), "stack up; starting the workload and the faults");

    let (allow, allowed) = tokio::sync::watch::channel(0u64);
    let committed = Arc::new(AtomicU64::new(0));
    let workload = Workload {
        url: postgres.url(ORIGIN_DB),
        topic: TOPIC.to_string(),
        messages: settings.messages,
        keys: settings.keys,
        per_tx: settings.per_tx,
        writers: settings.writers,
    };
    let workload = tokio::spawn(workload.run(allowed, committed.clone()));

    let admin_url = postgres.url(ORIGIN_DB);
    let mut targets = Targets {
        postgres,
        broker,
        pg_proxy: pg_proxy.control(),
        kafka_proxy: kafka_proxy.control(),
        services,
        pollers: POLLERS.iter().map(|p| p.to_string()).collect(),
        consumers: INBOXES.iter().flat_map(|i| i.2).map(str::to_string).collect(),
        admin_url,
    };
    let mut probe = ProgressProbe::new(
        targets.postgres.url(ORIGIN_DB),
        INBOXES.iter().map(|(name, db, _)| (name.to_string(), targets.postgres.url(db))).collect(),
    );
    let schedule = faults::schedule(settings.faults_per_kind, settings.seed);
    let mut injector = Injector::new(settings.faults.clone(), settings.seed);
    let mut injected = Vec::with_capacity(schedule.len());
    let mut exits = Vec::new();
    let total = schedule.len().max(1) as u64;
    // Every service past its start-up (schema check, group join, leader election) before the
    // first fault: the first share of the workload delivered to both inboxes.
    let shares = total + 1;
    let _ = allow.send(settings.messages / shares);
    await_committed(&committed, settings.messages / shares).await;
    if probe.await_recovery(settings.recovery_timeout).await.is_none() {
        return Err(ChaosError::Timeout {
            what: "the first messages to reach both inboxes".into(),
            secs: settings.recovery_timeout.as_secs(),
        });
    }
    for (i, kind) in schedule.iter().enumerate() {
        let i = i as u64;
        // The workload is cut into one share more than there are faults. Share 0 went before
        // the first fault; during fault i it writes share i + 1, once share i is in, so
        // messages flow through every fault.
        let _ = allow.send(settings.messages * (i + 2) / shares);
        await_committed(&committed, settings.messages * (i + 1) / shares).await;
        tracing::info!(
            fault = kind.name(),
            n = i + 1,
            of = total,
            committed = committed.load(Ordering::Relaxed),
            "injecting"
        );
        let mut fault = injector.inject(&mut targets, *kind).await?;
        match probe.await_recovery(settings.recovery_timeout).await {
            Some(took) => fault.recovery_ms = Some(took.as_secs_f64() * 1000.0),
            None => tracing::warn!(
                fault = kind.name(),
                timeout_secs = settings.recovery_timeout.as_secs(),
                "the pipeline did not catch up after this fault within the timeout"
            ),
        }
        injected.push(fault);
        for exit in targets.services.exited() {
            tracing::warn!(service = %exit.name, status = %exit.status, after_ms = exit.after.as_millis() as u64,
                "exited without being killed; restarting it");
            exits.push(exit.clone());
            targets.services.start(&exit.name)?;
        }
        tokio::time::sleep(settings.pause).await;
    }
    let _ = allow.send(settings.messages);
    let workload = match workload.await {
        Ok(Ok(stats)) => Some(stats),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the workload failed");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "the workload task failed");
            None
        }
    };
    tracing::info!("faults done; waiting for every inbox to hold every message");

    let check = Check {
        origin_url: targets.postgres.url(ORIGIN_DB),
        source: SOURCE.to_string(),
        topic: TOPIC.to_string(),
        inboxes: INBOXES
            .iter()
            .map(|(name, db, _)| InboxTarget { name: name.to_string(), url: targets.postgres.url(db) })
            .collect(),
        brokers: brokers.clone(),
        reconciler: targets.services.binary("reconciler"),
        timeout: settings.drain_timeout,
        out_dir: out.clone(),
    };
    let verification = verify::verify(&check).await?;
    exits.extend(targets.services.exited());
    targets.services.stop_all().await;
    let proxies = BTreeMap::from([
        ("postgres".to_string(), targets.pg_proxy.stats()),
        ("kafka".to_string(), targets.kafka_proxy.stats()),
    ]);
    drop(targets.broker);
    if let Err(e) = targets.postgres.stop().await {
        tracing::warn!(error = %e, "could not stop the private PostgreSQL");
    }
    let run_settings = RunSettings {
        messages: settings.messages,
        keys: settings.keys,
        faults_per_kind: settings.faults_per_kind,
        seed: settings.seed,
        partitions: settings.partitions,
    };
    let report = Report::new(
        run_settings,
        &injected,
        verification,
        workload,
        proxies,
        &exits,
        started.elapsed().as_secs_f64(),
    );
    report.write(&out)?;
    Ok(report)
}

fn poller_spec(url: &str, brokers: &str) -> ServiceSpec {
    spec(
        "outbox-poller",
        &[
            ("DATABASE_URL", url),
            ("KAFKA_BROKERS", brokers),
            ("OUTBOX_SOURCE", SOURCE),
            ("OUTBOX_TOPICS", TOPIC),
            ("OUTBOX_LEADER_RETRY_MS", "500"),
        ],
    )
}

fn consumer_spec(url: &str, brokers: &str, inbox: &str) -> ServiceSpec {
    spec(
        "inbox-consumer",
        &[
            ("DATABASE_URL", url),
            ("KAFKA_BROKERS", brokers),
            ("INBOX_NAME", inbox),
            ("INBOX_TOPICS", TOPIC),
            ("INBOX_GROUP_ID", inbox),
            ("KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000"),
            ("KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS", "500"),
            // Tansu answers a fetch only when this wait runs out.
            ("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "10"),
        ],
    )
}

fn spec(binary: &str, env: &[(&str, &str)]) -> ServiceSpec {
    ServiceSpec {
        binary: binary.to_string(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// Waits (bounded) until the workload has committed `target` messages.
async fn await_committed(committed: &AtomicU64, target: u64) {
    let started = Instant::now();
    while committed.load(Ordering::Relaxed) < target {
        if started.elapsed() > PACE_TIMEOUT {
            tracing::warn!(
                target,
                committed = committed.load(Ordering::Relaxed),
                "the workload lags; going on"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a service has created `table` in the database at `url`.
async fn await_schema(url: &str, table: &str) -> Result<(), ChaosError> {
    let started = Instant::now();
    loop {
        if let Ok(client) = crate::connect(url).await {
            let row = client.query_one(include_str!("sql/table_exists.sql"), &[&table]).await?;
            if row.get::<_, bool>(0) {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(ChaosError::Timeout { what: format!("{table} to be created"), secs: 120 });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
