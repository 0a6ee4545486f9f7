//! Nothing a writer or a configuration can hold fools or stalls the reconciler: a forged inbox
//! sequence near `i64::MAX` and ids far apart are reported and the run ends, a database URL given
//! without its name never shows its password, and service mode skips nothing where its lock
//! argument does not hold (an id sequence with a cache above 1).
use std::{collections::BTreeMap, time::Duration};

use uuid::Uuid;

use crate::{
    harness::*,
    reconcile::ids,
    reconcile_truth::{json, run, Fixture, RECONCILER},
};

/// Copies one stored inbox row as a new message with `sequence`, as a forged record would be
/// stored by the consumer (which takes any sequence up to `i64::MAX`).
async fn forge(f: &Fixture, sequence: i64) -> Uuid {
    let sql = "INSERT INTO relay.inbox (inbox, source, message_id, topic, key, msg_type, content_type,
                   payload, headers, traceparent, tracestate, sequence, created_at, kafka_topic,
                   kafka_partition, kafka_offset)
               SELECT inbox, source, gen_random_uuid(), topic, key, msg_type, content_type, payload,
                      headers, traceparent, tracestate, $1, created_at, kafka_topic, kafka_partition, $1
               FROM relay.inbox ORDER BY sequence LIMIT 1
               RETURNING message_id";
    f.inbox.client().await.query_one(sql, &[&sequence]).await.expect("forge").get(0)
}

/// One forged record used to make the comparison walk the id space up to its sequence in fixed
/// steps: about 10^16 queries, and an overflow near `i64::MAX`. Ids that start high or jump do
/// the same on the outbox side. The run now ends, reports the strays extra and nothing missing.
#[tokio::test(flavor = "multi_thread")]
async fn forged_sequences_near_the_top_and_id_gaps_are_reported_and_the_run_ends() {
    let f = Fixture::new().await;
    let low = f.enqueue(30, 600.0).await;
    f.deliver(&low).await;
    // A gap of 5 * 10^12 ids, then more messages far up.
    let origin = f.origin.client().await;
    origin
        .batch_execute("ALTER TABLE relay.outbox ALTER COLUMN id RESTART WITH 5000000000000")
        .await
        .expect("gap");
    let high = f.enqueue(30, 600.0).await;
    f.deliver(&high).await;
    let forged = [
        forge(&f, 4_000_000_000_000_000_000).await,
        forge(&f, i64::MAX - 3).await,
        forge(&f, i64::MAX).await,
    ];
    let mut env = f.env();
    env.push(("RECONCILE_GRACE_SECS".into(), "0".into()));
    for bucket_size in ["10", "1000"] {
        let args = ["--format", "json", "--bucket-size", bucket_size];
        let output = tokio::time::timeout(Duration::from_secs(120), run(&[], &env, &args))
            .await
            .unwrap_or_else(|_| panic!("bucket size {bucket_size}: the run did not end in 120 s"));
        let (code, report, stderr) = json(&output);
        assert_eq!(code, 1, "bucket size {bucket_size}: {stderr}");
        let pair = &report["pairs"][0];
        assert_eq!(ids(&pair["extra"]), forged.iter().map(Uuid::to_string).collect(), "{pair}");
        assert!(ids(&pair["missing"]).is_empty(), "{pair}");
        assert!(ids(&pair["mismatched"]).is_empty(), "{pair}");
        assert!(pair["buckets_compared"].as_u64().expect("buckets") >= 4, "{pair}");
    }
}

/// `postgres://app:pw@db/x?sslmode=require` given without `NAME=` used to be read as a name
/// ending in `?sslmode` and printed, password included. In a variable or in a file, outbox or
/// inbox, the process now names the entry's position and never its text.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_url_without_its_name_never_shows_its_password() {
    let dir = std::env::temp_dir().join(format!("relay-it-secret-{}", unique()));
    std::fs::create_dir_all(&dir).expect("dir");
    let urls = [
        "postgres://app:Hunter2Pw@db/x?sslmode=require",
        "postgresql://app:Hunter3Pw@db:6432/x?sslmode=require&target_session_attrs=read-write",
        "app:Hunter4Pw@db/x?sslmode=verify-full",
    ];
    let file = dir.join("outboxes");
    std::fs::write(&file, format!("# our outboxes\n{}\n", urls.join("\n"))).expect("write");
    let forms: [Vec<(&str, String)>; 2] = [
        vec![("RECONCILE_OUTBOXES", urls.join(" ")), ("RECONCILE_INBOXES", urls.join("\n"))],
        vec![
            ("RECONCILE_OUTBOXES_FILE", file.display().to_string()),
            ("RECONCILE_INBOXES", format!("ledger={}", urls[1])),
        ],
    ];
    for form in forms {
        let mut env: Vec<(String, String)> = form.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        env.push(("RECONCILE_SUBSCRIPTIONS".into(), "ledger=payments".into()));
        let output = run(&[], &env, &[]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("entry 1 is not"), "{stderr}");
        for secret in ["Hunter2Pw", "Hunter3Pw", "Hunter4Pw", "sslmode"] {
            assert!(!stderr.contains(secret) && !stdout.contains(secret), "{secret} shown:\n{stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// With `CACHE 20` an idle session holds ids below every settled bound without any lock, so a
/// row it commits later lands below the verified ranges. Service mode says so once and skips
/// nothing for that outbox, so it finds that row missing as a one-shot run does.
#[tokio::test(flavor = "multi_thread")]
async fn service_mode_skips_nothing_when_the_outbox_id_sequence_caches_ids() {
    let f = Fixture::new().await;
    let origin = f.origin.client().await;
    origin
        .batch_execute("ALTER TABLE relay.outbox ALTER COLUMN id SET CACHE 20")
        .await
        .expect("cache the id sequence");
    // This session draws ids 1..20 and uses 1; later sessions start at 21.
    let first: Uuid = origin
        .query_one("SELECT relay.enqueue('payments.v1', 'early', 'x'::bytea)", &[])
        .await
        .expect("enqueue")
        .get(0);
    f.deliver(&[first]).await;
    let rest = f.enqueue(100, 0.0).await;
    f.deliver(&rest).await;

    let addr = free_addr();
    let mut env: BTreeMap<String, String> = f.env().into_iter().collect();
    for (k, v) in [
        ("RECONCILE_SERVE", "true"),
        ("RECONCILE_INTERVAL_SECS", "1"),
        ("RECONCILE_GRACE_SECS", "0"),
        ("RECONCILE_SETTLE_SECS", "0"),
        ("RECONCILE_STUCK_SECS", "3600"),
        ("RECONCILE_BUCKET_SIZE", "10"),
        ("RECONCILE_METRICS_ADDR", &addr),
    ] {
        env.insert(k.into(), v.into());
    }
    let service = spawn("reconcile_sequence_cache", "reconciler", RECONCILER, &env);
    eventually(Duration::from_secs(60), "two clean passes", || async {
        let clean = sample(&scrape(&addr).await?, "relay_reconcile_clean", &[])?;
        let passes = service.log_text().lines().filter(|l| l.contains("rows_read")).count();
        (clean == 1.0 && passes >= 2).then_some(())
    })
    .await;
    // The idle session's next id is 2, far below everything verified.
    let late: Uuid = origin
        .query_one("SELECT relay.enqueue('payments.v1', 'late', 'y'::bytea)", &[])
        .await
        .expect("enqueue")
        .get(0);
    let id: i64 = origin
        .query_one("SELECT id FROM relay.outbox WHERE message_id = $1", &[&late])
        .await
        .expect("id")
        .get(0);
    assert!(id < 21, "the cached id {id}");
    f.publish(&[late]).await;
    let labels = ["kind=\"missing\"", "inbox=\"ledger\"", "source=\"it-origin\""];
    eventually(Duration::from_secs(30), "the late message counted missing", || async {
        (sample(&scrape(&addr).await?, "relay_reconcile_findings", &labels)? == 1.0).then_some(())
    })
    .await;
    let log = service.log_text();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("skips no verified range")).collect();
    assert_eq!(warnings.len(), 1, "one warning, naming the cache:\n{log}");
    assert!(warnings[0].contains("caches 20 values"), "{}", warnings[0]);
    assert!(
        log.lines().any(|l| l.contains("reconciliation finding") && l.contains(&late.to_string())),
        "{log}"
    );
}
