//! A payment service in miniature: a business row and its outbox message per transaction.
use std::time::Instant;

use rand::Rng;

/// Options for `relay-demo generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The origin service's database.
    #[arg(long, env = "ORIGIN_DATABASE_URL")]
    database_url: String,
    #[arg(long, default_value = "payments")]
    topic: String,
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Accounts to spread payments over; each is a message key.
    #[arg(long, default_value_t = 200)]
    keys: usize,
    /// Concurrent transactions.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS demo_payment (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account text NOT NULL,
    amount_cents bigint NOT NULL,
    message_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let setup = crate::connect(&args.database_url).await?;
    wait_for_outbox(&setup).await?;
    setup.batch_execute(SCHEMA).await?;
    let started = Instant::now();
    let per_worker = args.messages.div_ceil(args.concurrency.max(1));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency.max(1) {
        let count = per_worker.min(args.messages.saturating_sub(worker * per_worker));
        let (url, topic, keys) = (args.database_url.clone(), args.topic.clone(), args.keys.max(1));
        workers.spawn(async move { write_payments(&url, &topic, keys, count).await });
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "generated {} payments on topic {} over {} accounts in {:.1}s ({:.0}/s)",
        args.messages,
        args.topic,
        args.keys,
        seconds,
        args.messages as f64 / seconds
    );
    Ok(())
}

async fn write_payments(url: &str, topic: &str, keys: usize, count: usize) -> anyhow::Result<()> {
    let mut client = crate::connect(url).await?;
    for _ in 0..count {
        let (account, amount) = {
            let mut rng = rand::rng();
            (format!("account-{:04}", rng.random_range(0..keys)), rng.random_range(1..1_000_000i64))
        };
        let tx = client.transaction().await?;
        let payload = serde_json::json!({ "account": account, "amount_cents": amount, "currency": "EUR" });
        let payload = serde_json::to_vec(&payload)?;
        let mut message = relay_outbox::Message::new(topic, &account, &payload);
        message.msg_type = "payment.created";
        message.content_type = "application/json";
        let message_id = relay_outbox::enqueue(&tx, &message).await?;
        tx.execute(
            "INSERT INTO demo_payment (account, amount_cents, message_id) VALUES ($1, $2, $3)",
            &[&account, &amount, &message_id],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The outbox-poller creates the schema at start-up; wait for it rather than race it.
async fn wait_for_outbox(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let row = client.query_one("SELECT to_regclass('relay.outbox') IS NOT NULL", &[]).await?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "relay.outbox did not appear: is the outbox-poller running?"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
