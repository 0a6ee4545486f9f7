//! Traces and logs of the running services: a message's W3C trace context reaches the inbox row,
//! the publish and consume spans are exported over OTLP as children of it, and JSON logs are JSON.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::harness::*;

/// An OTLP/HTTP endpoint that keeps every request body it receives.
pub(crate) struct Collector {
    pub(crate) addr: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    pub(crate) async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let kept = Arc::clone(&bodies);
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock().expect("collector lock").push(body.to_vec());
                ""
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
        let addr = listener.local_addr().expect("collector addr").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, bodies }
    }

    /// Whether one exported batch holds every one of `needles`.
    pub(crate) fn holds(&self, needles: &[&[u8]]) -> bool {
        let bodies = self.bodies.lock().expect("collector lock");
        bodies.iter().any(|body| needles.iter().all(|n| body.windows(n.len()).any(|w| w == *n)))
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_messages_trace_context_reaches_the_inbox_and_its_spans_are_exported_over_otlp() {
    let test = "telemetry";
    let collector = Collector::start().await;
    let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
    let topic = topic(1).await;
    let otlp = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), format!("http://{}", collector.addr)),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
        ("LOG_FORMAT".to_string(), "json".to_string()),
    ];
    let mut poller_vars = poller_env(&origin, &topic);
    poller_vars.extend(otlp.clone());
    let mut consumer_vars = consumer_env(&inbox, "ledger", &topic);
    consumer_vars.extend(otlp);
    let poller = spawn(test, "poller", POLLER, &poller_vars);
    let consumer = spawn(test, "consumer", CONSUMER, &consumer_vars);
    await_table(&origin, "relay.outbox").await;

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    origin
        .client()
        .await
        .execute(
            "SELECT relay.enqueue($1, 'k', '\\x01'::bytea, '{}', 'it.traced', 'application/octet-stream', $2, 'vendor=1')",
            &[&topic, &traceparent],
        )
        .await
        .expect("enqueue with a trace context");
    await_inbox(&inbox, "ledger", &topic, 1, Duration::from_secs(60)).await;
    let row = inbox
        .client()
        .await
        .query_one("SELECT traceparent, tracestate FROM relay.inbox WHERE inbox = 'ledger'", &[])
        .await
        .expect("inbox row");
    assert_eq!(row.get::<_, Option<String>>(0), Some(traceparent.clone()));
    assert_eq!(row.get::<_, Option<String>>(1), Some("vendor=1".to_string()));

    // Both spans belong to the application's trace and name their service.
    let trace = hex_bytes(&trace_id);
    for (span, service) in [("relay.publish", "outbox-poller"), ("relay.consume", "inbox-consumer")] {
        eventually(Duration::from_secs(30), &format!("{span} exported by {service}"), || async {
            collector.holds(&[&trace, span.as_bytes(), service.as_bytes()]).then_some(())
        })
        .await;
    }
    assert!(collector.holds(&[b"outbox.scan"]), "the poll span is exported");
    assert!(collector.holds(&[b"inbox.insert"]), "the insert span is exported");

    for service in [&poller, &consumer] {
        let log = service.log_text();
        assert!(!log.is_empty());
        for line in log.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        }
    }
}
