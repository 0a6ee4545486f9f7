//! Memory bounded by bytes, with default settings: a backlog of large payloads (hundreds of rows
//! of 900,000 bytes, which took the poller past 700 MiB when batches were bounded by rows alone)
//! and of middling ones all arrive, content intact, while the poller's and the consumer's peak
//! resident memory (`VmHWM`) stays under the budget a 256 MiB container limit leaves room for.
use std::collections::BTreeMap;

use crate::harness::*;

/// Each service's peak resident memory must stay below this, in bytes.
const BUDGET: u64 = 128 << 20;

/// The peak resident memory of a running process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM in kB");
    kib * 1024
}

/// Enqueues `n` messages of `size` payload bytes over 7 keys, built in the server (so the test
/// does not send them), `per_tx` per transaction. The payloads are a chain of MD5 digests, so they
/// differ from each other and do not compress: a fetch of compressed records is bounded in
/// compressed bytes, so payloads that compress very well expand in the consumer by their
/// compression ratio (README "Memory" says so, and `make bench` measures it).
async fn enqueue_sized(origin: &TestDb, topic: &str, n: i32, size: i32, per_tx: i32) {
    let client = origin.client().await;
    let sql = "SELECT relay.enqueue($1, 'key-' || (g % 7), substring(
                      (SELECT decode(string_agg(md5($4 || ':' || g::text || ':' || j::text), ''), 'hex')
                       FROM generate_series(0, $3 / 16) AS j) FROM 1 FOR $3))
               FROM generate_series($2::int, $2::int + $5::int - 1) AS g";
    let mut first = 0;
    while first < n {
        let count = per_tx.min(n - first);
        let tag = size.to_string();
        client.execute(sql, &[&topic, &first, &size, &tag, &count]).await.expect("enqueue sized");
        first += count;
    }
}

/// `message_id → md5(payload)` of every message of `topic` in `sql`'s table.
async fn digests(db: &TestDb, sql: &str, topic: &str) -> BTreeMap<uuid::Uuid, String> {
    let client = db.client().await;
    client.query(sql, &[&topic]).await.expect("digests").iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_payload_backlogs_arrive_whole_within_the_memory_budget() {
    let relay = Pipeline::start("memory_bounded_by_bytes", 3).await;
    let (origin, topic) = (&relay.origin, relay.topic.clone());
    // 300 × 900,000 bytes (270 MB, three times the old batch's reach), 100 × 100 KiB, 50 × 1 KiB.
    let loads: [(i32, i32, i32); 3] = [(300, 900_000, 20), (100, 100 << 10, 50), (50, 1 << 10, 50)];
    for (n, size, per_tx) in loads {
        enqueue_sized(origin, &topic, n, size, per_tx).await;
    }
    let total: i64 = loads.iter().map(|(n, _, _)| i64::from(*n)).sum();
    await_inbox(&relay.inbox, "ledger", &topic, total, std::time::Duration::from_secs(300)).await;

    let sent =
        digests(origin, "SELECT message_id, md5(payload) FROM relay.outbox WHERE topic = $1", &topic).await;
    let stored =
        digests(&relay.inbox, "SELECT message_id, md5(payload) FROM relay.inbox WHERE topic = $1", &topic)
            .await;
    assert_eq!(sent.len() as i64, total);
    assert!(sent == stored, "every message arrives once with its payload intact");
    let client = relay.inbox.client().await;
    let sql = "SELECT count(*) FROM relay.inbox WHERE topic = $1 AND length(payload) = 900000";
    assert_eq!(count(&client, sql, &[&topic]).await, 300);

    let poller = peak_rss(relay.poller.child.id().expect("poller running"));
    let consumer = peak_rss(relay.consumer.child.id().expect("consumer running"));
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!("peak RSS: poller {:.1} MiB, consumer {:.1} MiB", mib(poller), mib(consumer));
    assert!(poller < BUDGET, "the poller's peak RSS was {:.1} MiB", mib(poller));
    assert!(consumer < BUDGET, "the consumer's peak RSS was {:.1} MiB", mib(consumer));
}
