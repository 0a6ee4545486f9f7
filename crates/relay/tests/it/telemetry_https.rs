//! Span export to an `https://` OTLP collector: the exporter's client speaks TLS and trusts the
//! collector's CA through `OTEL_EXPORTER_OTLP_CERTIFICATE` (the standard OpenTelemetry
//! variable); a collector whose certificate it cannot verify receives nothing, and the service
//! delivers all the same.
use std::time::Duration;

use relay_chaos::tls::{Authority, TlsTerminator};

use crate::{harness::*, telemetry::Collector};

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_an_https_collector_whose_ca_is_trusted_and_never_an_unverified_one() {
    let test = "telemetry_https";
    let collector = Collector::start().await;
    let target = collector.addr.parse().expect("collector address");
    let dir = std::env::temp_dir().join(format!("relay-it-otlp-{}", unique()));
    std::fs::create_dir_all(&dir).expect("certificate directory");
    let ca = Authority::new("Relay test collector CA").expect("CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
    let server = ca.issue_server(&["localhost"]).expect("server cert");
    // The collector behind TLS, twice: once as the poller's, once as the consumer's, which is
    // not told to trust the CA.
    let trusted =
        TlsTerminator::start(0, target, &server, None).await.expect("TLS in front of the collector");
    let untrusted =
        TlsTerminator::start(0, target, &server, None).await.expect("TLS in front of the collector");

    let relay = {
        let (origin, inbox) = (TestDb::new().await, TestDb::new().await);
        let topic = topic(1).await;
        let mut poller_vars = poller_env(&origin, &topic);
        poller_vars.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("https://localhost:{}", trusted.addr().port())),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE".into(), ca_file.display().to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]);
        let mut consumer_vars = consumer_env(&inbox, "ledger", &topic);
        consumer_vars.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("https://localhost:{}", untrusted.addr().port())),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]);
        let poller = spawn(test, "poller", POLLER, &poller_vars);
        let consumer = spawn(test, "consumer", CONSUMER, &consumer_vars);
        await_table(&origin, "relay.outbox").await;
        (origin, inbox, topic, poller, consumer)
    };
    let (origin, inbox, topic, _poller, _consumer) = relay;
    enqueue_many(&origin, &topic, 10, 2, 5).await;
    await_inbox(&inbox, "ledger", &topic, 10, Duration::from_secs(60)).await;

    eventually(Duration::from_secs(30), "the poller's spans exported over TLS", || async {
        (trusted.handshakes() > 0 && collector.holds(&[b"outbox-poller", b"outbox.scan"])).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the consumer's exporter refused the unverified collector",
        || async { (untrusted.refused() > 0).then_some(()) },
    )
    .await;
    assert_eq!(untrusted.handshakes(), 0, "no TLS session with a collector the consumer cannot verify");
    assert!(!collector.holds(&[b"inbox-consumer"]), "nothing of the consumer's reached the collector");
    let _ = std::fs::remove_dir_all(&dir);
}
