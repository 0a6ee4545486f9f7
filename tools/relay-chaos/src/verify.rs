//! The end check: after the faults, every outbox message is in every inbox exactly once, byte-
//! equal and in per-key order, and the real reconciler agrees.
//!
//! It first waits (bounded, loudly) until the outbox is fully published and each inbox holds as
//! many messages as the outbox, then compares row by row. The outbox and the inboxes live in
//! different databases, so the comparison happens here, in memory.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{io_error, ChaosError};

/// One inbox to check.
#[derive(Debug, Clone)]
pub struct InboxTarget {
    pub name: String,
    /// Its database, directly.
    pub url: String,
}

/// What to check and where.
#[derive(Debug, Clone)]
pub struct Check {
    /// The origin database, directly.
    pub origin_url: String,
    /// The poller's `OUTBOX_SOURCE`.
    pub source: String,
    pub topic: String,
    pub inboxes: Vec<InboxTarget>,
    /// For the topic's record count.
    pub brokers: String,
    pub reconciler: PathBuf,
    /// How long the pipeline may take to drain before the check gives up.
    pub timeout: Duration,
    pub out_dir: PathBuf,
}

/// The findings for one inbox.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct InboxResult {
    pub name: String,
    /// Distinct messages stored.
    pub messages: u64,
    /// Outbox messages absent from the inbox.
    pub lost: u64,
    /// Rows beyond one per message id, plus messages stored under two ids with the same
    /// (source, sequence).
    pub duplicated: u64,
    /// Messages stored after a message of the same key that was committed later.
    pub reordered: u64,
    /// Stored with another key, sequence or payload than was sent.
    pub mismatched: u64,
    /// Stored but never sent.
    pub extra: u64,
}

/// Everything the end check found.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Verification {
    pub outbox_messages: u64,
    pub unpublished: u64,
    pub parked: u64,
    /// Whether everything drained before the timeout.
    pub drained: bool,
    pub drain_secs: f64,
    pub inboxes: Vec<InboxResult>,
    /// Records in the topic (sum of the partitions' high minus low watermarks).
    pub topic_records: Option<u64>,
    /// Records beyond one per message: re-sent after a fault, absorbed by the inboxes.
    pub published_more_than_once: Option<u64>,
    pub reconciler_exit: Option<i32>,
}

impl Verification {
    pub fn reconciler_clean(&self) -> bool {
        self.reconciler_exit == Some(0)
    }
}

/// Waits for the pipeline to drain, then checks every inbox, the topic and the reconciler.
pub async fn verify(check: &Check) -> Result<Verification, ChaosError> {
    let started = Instant::now();
    let drained = await_drained(check).await?;
    let origin = crate::connect(&check.origin_url).await?;
    let progress = origin.query_one(include_str!("sql/outbox_progress.sql"), &[&check.topic]).await?;
    let mut result = Verification {
        outbox_messages: progress.get::<_, i64>(0) as u64,
        unpublished: progress.get::<_, i64>(1) as u64,
        parked: progress.get::<_, i64>(2) as u64,
        drained,
        drain_secs: started.elapsed().as_secs_f64(),
        ..Verification::default()
    };
    let sent: HashMap<uuid::Uuid, (i64, String, Vec<u8>)> = origin
        .query(include_str!("sql/outbox_read.sql"), &[&check.topic])
        .await?
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    for inbox in &check.inboxes {
        result.inboxes.push(check_inbox(inbox, &check.topic, &sent).await?);
    }
    match topic_records(&check.brokers, &check.topic).await {
        Ok(records) => {
            result.topic_records = Some(records);
            result.published_more_than_once = Some(records.saturating_sub(sent.len() as u64));
        }
        Err(e) => tracing::warn!(error = %e, "could not count the topic's records"),
    }
    result.reconciler_exit = Some(reconcile(check).await?);
    Ok(result)
}

/// Polls until nothing is left to publish and every inbox holds as many messages as the outbox.
/// Returns false (after logging the counts) when `check.timeout` runs out first.
async fn await_drained(check: &Check) -> Result<bool, ChaosError> {
    let started = Instant::now();
    let mut last_log = Instant::now();
    let origin = crate::connect(&check.origin_url).await?;
    let mut inboxes = Vec::new();
    for inbox in &check.inboxes {
        inboxes.push((inbox.name.as_str(), crate::connect(&inbox.url).await?));
    }
    loop {
        let progress = origin.query_one(include_str!("sql/outbox_progress.sql"), &[&check.topic]).await?;
        let (total, pending) = (progress.get::<_, i64>(0), progress.get::<_, i64>(1));
        let mut counts = Vec::new();
        let mut complete = pending == 0;
        for (name, client) in &inboxes {
            let n: i64 =
                client.query_one(include_str!("sql/inbox_count.sql"), &[name, &check.topic]).await?.get(0);
            counts.push(format!("{name} {n}"));
            complete &= n >= total;
        }
        if complete {
            return Ok(true);
        }
        let status = format!("outbox {total} ({pending} unpublished), inboxes: {}", counts.join(", "));
        if started.elapsed() > check.timeout {
            tracing::error!(timeout_secs = check.timeout.as_secs(), "NOT DRAINED in time: {status}");
            return Ok(false);
        }
        if last_log.elapsed() > Duration::from_secs(10) {
            tracing::info!("draining: {status}");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn check_inbox(
    inbox: &InboxTarget,
    topic: &str,
    sent: &HashMap<uuid::Uuid, (i64, String, Vec<u8>)>,
) -> Result<InboxResult, ChaosError> {
    let client = crate::connect(&inbox.url).await?;
    let rows = client.query(include_str!("sql/inbox_read.sql"), &[&inbox.name, &topic]).await?;
    let mut result = InboxResult { name: inbox.name.clone(), ..InboxResult::default() };
    let mut ids = HashSet::with_capacity(rows.len());
    let mut positions = HashSet::with_capacity(rows.len());
    let mut newest_per_key: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        let id: uuid::Uuid = row.get(0);
        let (sequence, key, payload, source): (i64, String, Vec<u8>, String) =
            (row.get(1), row.get(2), row.get(3), row.get(4));
        if !ids.insert(id) {
            result.duplicated += 1;
            continue;
        }
        if !positions.insert((source, sequence)) {
            result.duplicated += 1;
        }
        let Some((outbox_id, sent_key, sent_payload)) = sent.get(&id) else {
            result.extra += 1;
            continue;
        };
        if *outbox_id != sequence || *sent_key != key || *sent_payload != payload {
            result.mismatched += 1;
        }
        // Per key, outbox ids are commit order: a stored message must be newer than every
        // message of its key stored before it.
        let newest = newest_per_key.entry(sent_key.clone()).or_insert(i64::MIN);
        if *outbox_id < *newest {
            result.reordered += 1;
        } else {
            *newest = *outbox_id;
        }
    }
    result.messages = ids.len() as u64;
    result.lost = sent.keys().filter(|id| !ids.contains(id)).count() as u64;
    Ok(result)
}

/// Records in `topic`, from the partitions' watermarks.
async fn topic_records(brokers: &str, topic: &str) -> Result<u64, ChaosError> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "relay-chaos-watermarks")
            .create()?;
        let timeout = Duration::from_secs(30);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut records = 0u64;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
                records += (high - low).max(0) as u64;
            }
        }
        Ok(records)
    })
    .await
    .map_err(|e| ChaosError::Setup(format!("watermark task failed: {e}")))?
}

/// Runs the real reconciler once over the outbox and every inbox; its JSON report goes to
/// `reconciler.json` in the output directory. Returns its exit code.
async fn reconcile(check: &Check) -> Result<i32, ChaosError> {
    let mut command = tokio::process::Command::new(&check.reconciler);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--outbox", &format!("{}={}", check.source, check.origin_url)])
        .args(["--grace-secs", "0", "--format", "json"]);
    for inbox in &check.inboxes {
        command.args(["--inbox", &format!("{}={}", inbox.name, inbox.url)]);
        command.args(["--subscription", &format!("{}={}", inbox.name, check.topic)]);
    }
    let output = command.output().await.map_err(io_error(format!("run {}", check.reconciler.display())))?;
    write(&check.out_dir.join("reconciler.json"), &output.stdout)?;
    write(&check.out_dir.join("reconciler.log"), &output.stderr)?;
    let code = output.status.code().unwrap_or(-1);
    if code != 0 {
        tracing::error!(code, "the reconciler is not clean; see reconciler.json");
    }
    Ok(code)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ChaosError> {
    std::fs::write(path, bytes).map_err(io_error(format!("write {}", path.display())))
}
