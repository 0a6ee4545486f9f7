//! Each running service's `/metrics` as Prometheus reads it: `promtool check metrics` finds
//! nothing to complain about (every family has its HELP text), the counters are there at 0 from
//! start-up, and the latency histograms (seconds) count every message that flowed, labelled by
//! configured topic. promtool as in `alert_rules`.
use std::time::Duration;

use crate::{alert_rules::promtool, harness::*, health::with_endpoint};

/// `promtool check metrics` on a scrape of `addr`; panics with its complaints.
async fn promtool_accepts(addr: &str, what: &str) -> String {
    let text = scrape(addr).await.unwrap_or_else(|| panic!("{what}: no /metrics"));
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok && out.trim().is_empty(), "{what}: promtool check metrics:\n{out}\n--- scrape:\n{text}");
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().expect("name");
        assert!(text.contains(&format!("# HELP {name} ")), "{what}: {name} has no HELP text");
    }
    text
}

/// Waits until `metric` with `labels` on `addr` reaches `value`.
async fn await_at_least(addr: &str, metric: &str, labels: &[&str], value: f64) -> String {
    eventually(Duration::from_secs(60), &format!("{metric}{labels:?} >= {value}"), || async {
        let text = scrape(addr).await?;
        (sample(&text, metric, labels)? >= value).then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_with_counters_at_zero_from_start_and_latency_histograms_in_seconds() {
    let test = "metrics_scrape";
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(2).await;
    let mut poller_vars = poller_env(&origin, &topic);
    let poller_addr = with_endpoint(&mut poller_vars);
    let mut consumer_vars = consumer_env(&inbox, "ledger", &topic);
    let consumer_addr = with_endpoint(&mut consumer_vars);
    let _poller = spawn(test, "poller", POLLER, &poller_vars);
    let _consumer = spawn(test, "consumer", CONSUMER, &consumer_vars);
    crate::health::await_readiness(&poller_addr, 200, "poller").await;
    crate::health::await_readiness(&consumer_addr, 200, "consumer").await;

    // Before any message: every counter at 0, the histograms' buckets at 0 for the topic.
    let poller = promtool_accepts(&poller_addr, "poller at start").await;
    let outbox = "outbox=\"it-origin\"";
    for counter in [
        "relay_outbox_published_total",
        "relay_outbox_parked_total",
        "relay_outbox_publish_errors_total",
        "relay_outbox_interruptions_total",
    ] {
        assert_eq!(sample(&poller, counter, &[outbox]), Some(0.0), "{counter} at start:\n{poller}");
    }
    let topic_label = format!("topic=\"{topic}\"");
    let at_start = sample(&poller, "relay_outbox_publish_latency_seconds_count", &[outbox, &topic_label]);
    assert_eq!(at_start, Some(0.0), "{poller}");
    let consumer = promtool_accepts(&consumer_addr, "consumer at start").await;
    let ledger = "inbox=\"ledger\"";
    for counter in [
        "relay_inbox_inserted_total",
        "relay_inbox_duplicates_total",
        "relay_inbox_dead_letters_total",
        "relay_inbox_conflicts_total",
        "relay_inbox_write_errors_total",
    ] {
        assert_eq!(sample(&consumer, counter, &[ledger]), Some(0.0), "{counter} at start:\n{consumer}");
    }
    let at_start = sample(&consumer, "relay_inbox_store_latency_seconds_count", &[ledger, &topic_label]);
    assert_eq!(at_start, Some(0.0), "{consumer}");

    // 60 messages later: each one observed once, from its commit, in seconds.
    enqueue_many(&origin, &topic, 60, 6, 10).await;
    await_inbox(&inbox, "ledger", &topic, 60, Duration::from_secs(120)).await;
    let stages = [
        (&poller_addr, "relay_outbox_publish_latency_seconds", outbox, "relay_outbox_published_total"),
        (&consumer_addr, "relay_inbox_store_latency_seconds", ledger, "relay_inbox_inserted_total"),
    ];
    for (addr, histogram, service, counter) in stages {
        await_at_least(addr, counter, &[service], 60.0).await;
        let text = await_at_least(addr, &format!("{histogram}_count"), &[service, &topic_label], 60.0).await;
        let labels = [service, topic_label.as_str()];
        let count = sample(&text, &format!("{histogram}_count"), &labels).expect("count");
        let inf = sample(&text, &format!("{histogram}_bucket"), &[service, &topic_label, "le=\"+Inf\""]);
        assert_eq!((count, inf), (60.0, Some(60.0)), "{histogram}:\n{text}");
        let sum = sample(&text, &format!("{histogram}_sum"), &labels).expect("sum");
        assert!(sum > 0.0 && sum / count < 60.0, "{histogram}: mean {} s:\n{text}", sum / count);
        let millisecond =
            sample(&text, &format!("{histogram}_bucket"), &[service, &topic_label, "le=\"0.001\""]);
        assert!(millisecond.is_some(), "{histogram} has no bucket in seconds (le=0.001):\n{text}");
        promtool_accepts(addr, histogram).await;
    }

    // The reconciler in service mode over the same pair: its pass time and interval, described.
    let addr = free_addr();
    let env = [
        ("RECONCILE_OUTBOXES", format!("it-origin={}", origin.url)),
        ("RECONCILE_INBOXES", format!("ledger={}", inbox.url)),
        ("RECONCILE_SUBSCRIPTIONS", format!("ledger={topic}")),
        ("RECONCILE_SERVE", "true".into()),
        ("RECONCILE_INTERVAL_SECS", "1".into()),
        ("RECONCILE_GRACE_SECS", "0".into()),
        ("RECONCILE_METRICS_ADDR", addr.clone()),
    ];
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let _reconciler = spawn(test, "reconciler", env!("CARGO_BIN_EXE_reconciler"), &env);
    // relay_reconcile_up is set by a completed pass; the pass timestamp holds the start time before.
    let text = await_at_least(&addr, "relay_reconcile_up", &[], 1.0).await;
    assert!(
        sample(&text, "relay_reconcile_last_pass_timestamp_seconds", &[]).is_some_and(|t| t > 1.0e9),
        "{text}"
    );
    assert_eq!(sample(&text, "relay_reconcile_interval_seconds", &[]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "relay_reconcile_clean", &[]), Some(1.0), "{text}");
    promtool_accepts(&addr, "reconciler").await;
}
