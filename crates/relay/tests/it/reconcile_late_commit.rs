//! Service mode finds the late commits a one-shot run finds (issue 13 item 7); below verified
//! ranges, other changes are found as of the last full pass (the second test). A message whose
//! transaction commits after later messages were verified and had settled used to sit below the
//! range service mode no longer read, so it was never checked while a one-shot run found it
//! missing. Ranges are now skipped only once no running transaction can still add a row to them.
use std::{collections::BTreeMap, time::Duration};

use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    harness::*,
    reconcile::ids,
    reconcile_truth::{json, run, Fixture, RECONCILER, TOPIC},
};

/// Opens a transaction on its own connection that enqueues one message and stays open.
async fn hold_open(f: &Fixture, key: &str) -> (Client, Uuid) {
    let client = f.origin.client().await;
    client.batch_execute("BEGIN").await.expect("begin");
    let row = client
        .query_one("SELECT relay.enqueue($1, $2, 'late'::bytea)", &[&TOPIC, &key])
        .await
        .expect("enqueue in the open transaction");
    (client, row.get(0))
}

/// The number of completed passes the service has logged.
fn passes(service: &Service) -> usize {
    service.log_text().lines().filter(|l| l.contains("reconciled") && l.contains("rows_read")).count()
}

async fn missing_count(addr: &str) -> Option<f64> {
    let labels = ["kind=\"missing\"", "inbox=\"ledger\"", "source=\"it-origin\""];
    sample(&scrape(addr).await?, "relay_reconcile_findings", &labels)
}

#[tokio::test(flavor = "multi_thread")]
async fn service_mode_finds_messages_whose_transactions_committed_after_later_ones_settled() {
    let f = Fixture::new().await;
    let early = f.enqueue(100, 600.0).await;
    f.deliver(&early).await;
    // Two writers hold their rows (ids 101 and 162) while later rows commit and are delivered.
    let (first, first_id) = hold_open(&f, "late-first").await;
    let middle = f.enqueue(60, 0.0).await;
    f.deliver(&middle).await;
    let (second, second_id) = hold_open(&f, "late-second").await;
    let tail = f.enqueue(60, 0.0).await;
    f.deliver(&tail).await;

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
    let service = spawn("reconcile_late_commit", "reconciler", RECONCILER, &env);
    // Several clean passes while both are open: everything committed looks settled.
    eventually(Duration::from_secs(60), "three clean passes", || async {
        let clean = sample(&scrape(&addr).await?, "relay_reconcile_clean", &[])?;
        (clean == 1.0 && passes(&service) >= 3).then_some(())
    })
    .await;
    let busy_rows =
        sample(&scrape(&addr).await.expect("metrics"), "relay_reconcile_rows_read", &[]).expect("rows");

    // The later writer commits; its message is published and never arrives.
    second.batch_execute("COMMIT").await.expect("commit");
    f.publish(&[second_id]).await;
    eventually(Duration::from_secs(30), "the late message counted missing", || async {
        (missing_count(&addr).await? == 1.0).then_some(())
    })
    .await;
    // Then the earliest one, below every range verified so far.
    first.batch_execute("COMMIT").await.expect("commit");
    f.publish(&[first_id]).await;
    eventually(Duration::from_secs(30), "both late messages counted missing", || async {
        (missing_count(&addr).await? == 2.0).then_some(())
    })
    .await;
    let log = service.log_text();
    for id in [first_id, second_id] {
        assert!(
            log.lines().any(|l| l.contains("reconciliation finding") && l.contains(&id.to_string())),
            "no finding names {id}:\n{log}"
        );
    }
    // A one-shot run finds the same.
    let mut args = f.env();
    args.push(("RECONCILE_GRACE_SECS".into(), "0".into()));
    let (code, report, stderr) = json(&run(&[], &args, &["--format", "json", "--bucket-size", "10"]).await);
    assert_eq!(code, 1, "{stderr}");
    let expected = [first_id, second_id].iter().map(Uuid::to_string).collect();
    assert_eq!(ids(&report["pairs"][0]["missing"]), expected);

    // Delivered at last: clean again, and with no transaction left open the verified ranges
    // are skipped, so a pass reads less than it did while the writers were open.
    f.store("it-origin", &[first_id, second_id]).await;
    let settled = eventually(Duration::from_secs(30), "a clean pass that skips verified ranges", || async {
        let text = scrape(&addr).await?;
        let rows = sample(&text, "relay_reconcile_rows_read", &[])?;
        (sample(&text, "relay_reconcile_clean", &[])? == 1.0 && rows < busy_rows).then_some(rows)
    })
    .await;
    assert!(settled < busy_rows, "rows read {busy_rows} then {settled}");
}

/// Verified ranges are skipped, but not forever: every `RECONCILE_FULL_PASS_SECS` a pass reads
/// everything, so a message that goes missing below them (an inbox row deleted by hand) is found
/// too, as a one-shot run finds it.
#[tokio::test(flavor = "multi_thread")]
async fn service_mode_re_reads_verified_ranges_every_full_pass() {
    let f = Fixture::new().await;
    let sent = f.enqueue(200, 600.0).await;
    f.deliver(&sent).await;
    let addr = free_addr();
    let mut env: BTreeMap<String, String> = f.env().into_iter().collect();
    for (k, v) in [
        ("RECONCILE_SERVE", "true"),
        ("RECONCILE_INTERVAL_SECS", "1"),
        ("RECONCILE_GRACE_SECS", "0"),
        ("RECONCILE_SETTLE_SECS", "0"),
        ("RECONCILE_FULL_PASS_SECS", "4"),
        ("RECONCILE_BUCKET_SIZE", "10"),
        ("RECONCILE_METRICS_ADDR", &addr),
    ] {
        env.insert(k.into(), v.into());
    }
    let _service = spawn("reconcile_full_pass", "reconciler", RECONCILER, &env);
    let rows = |text: &str| sample(text, "relay_reconcile_rows_read", &[]);
    let first =
        eventually(Duration::from_secs(30), "a first pass", || async { rows(&scrape(&addr).await?) }).await;
    eventually(Duration::from_secs(30), "a pass that skips verified ranges", || async {
        (rows(&scrape(&addr).await?)? < first).then_some(())
    })
    .await;
    let inbox = f.inbox.client().await;
    let deleted: Uuid = inbox
        .query_one("DELETE FROM relay.inbox WHERE message_id = $1 RETURNING message_id", &[&sent[4]])
        .await
        .expect("delete")
        .get(0);
    eventually(Duration::from_secs(30), "the deleted message counted missing", || async {
        (missing_count(&addr).await? == 1.0).then_some(())
    })
    .await;
    let mut args = f.env();
    args.push(("RECONCILE_GRACE_SECS".into(), "0".into()));
    let (code, report, _) = json(&run(&[], &args, &["--format", "json"]).await);
    assert_eq!(code, 1);
    assert_eq!(ids(&report["pairs"][0]["missing"]), [deleted.to_string()].into());
}
