//! Logs a person can read during an outage: with the brokers unreachable, the poller (rows to
//! publish) and the consumer retry for as long as it lasts, and each kind of repeated line is
//! written once and then summarised with its count (`LOG_REPEAT_SUMMARY_SECS`), instead of
//! hundreds of identical lines. The same outage with summarising off is the baseline.
use std::{collections::BTreeMap, time::Duration};

use crate::harness::*;

/// How long the outage lasts, and the summary window within it.
const OUTAGE: Duration = Duration::from_secs(12);
const WINDOW_SECS: &str = "4";

/// The poller's and the consumer's log lines over the outage, with summaries every `window` s
/// (0: off). Nothing listens on the brokers' address.
async fn outage_logs(test: &str, window: &str) -> (Vec<String>, Vec<String>) {
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let dead_brokers = free_addr();
    let base = |db: &TestDb| -> BTreeMap<String, String> {
        [
            ("DATABASE_URL", db.url.as_str()),
            ("KAFKA_BROKERS", dead_brokers.as_str()),
            ("LOG_REPEAT_SUMMARY_SECS", window),
            ("RELAY_HTTP_ADDR", &free_addr()),
            ("RELAY_PROBE_INTERVAL_MS", "200"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    };
    let mut poller_vars = base(&origin);
    poller_vars.extend(
        [("OUTBOX_SOURCE", "it-origin"), ("OUTBOX_TOPICS", "payments"), ("OUTBOX_POLL_INTERVAL_MS", "200")]
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut consumer_vars = base(&inbox);
    consumer_vars.extend(
        [("INBOX_NAME", "ledger"), ("INBOX_TOPICS", "payments"), ("INBOX_GROUP_ID", "ledger")]
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut poller = spawn(test, &format!("poller-window-{window}"), POLLER, &poller_vars);
    let mut consumer = spawn(test, &format!("consumer-window-{window}"), CONSUMER, &consumer_vars);
    await_table(&origin, "relay.outbox").await;
    enqueue_many(&origin, "payments", 50, 5, 10).await;
    tokio::time::sleep(OUTAGE).await;
    // SIGTERM: the summaries still pending are written at exit.
    for service in [&mut poller, &mut consumer] {
        service.terminate(Duration::from_secs(30)).await;
    }
    let lines = |s: &Service| s.log_text().lines().map(String::from).collect::<Vec<_>>();
    (lines(&poller), lines(&consumer))
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_brokers_down_each_repeated_line_is_written_once_then_summarised_with_its_count() {
    let test = "quiet_outage";
    let ((poller, consumer), (poller_all, consumer_all)) =
        tokio::join!(outage_logs(test, WINDOW_SECS), outage_logs(test, "0"));
    for (name, summarised, baseline) in
        [("poller", &poller, &poller_all), ("consumer", &consumer, &consumer_all)]
    {
        let shown = |lines: &[String]| lines.join("\n");
        // The outage is in the logs: the brokers cannot be reached.
        let about_brokers = |l: &&String| l.contains(&"Connect to".to_string()) || l.contains("kafka");
        assert!(
            summarised.iter().any(|l| about_brokers(&l)),
            "{name} never said the brokers are down:\n{}",
            shown(summarised)
        );
        let summaries: Vec<&String> = summarised.iter().filter(|l| l.contains("times in the last")).collect();
        assert!(!summaries.is_empty(), "{name} wrote no summary:\n{}", shown(summarised));
        for summary in &summaries {
            let count: u64 = summary
                .split("(repeated ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: no count in {summary}"));
            assert!(count >= 1, "{summary}");
        }
        assert!(
            summarised.len() <= 60,
            "{name} wrote {} lines in a {OUTAGE:?} outage:\n{}",
            summarised.len(),
            shown(summarised)
        );
        assert!(
            summarised.len() * 2 <= baseline.len(),
            "{name}: {} lines summarised against {} without: summarising saved too little",
            summarised.len(),
            baseline.len()
        );
    }
}
