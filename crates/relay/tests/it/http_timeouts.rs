//! The HTTP endpoint against clients that hold connections open: one that sends nothing, one that
//! sends half a request line, one that keeps an idle keep-alive connection after a response.
//! Each is closed within the documented header read timeout, while `/metrics` and `/readyz`
//! keep answering other clients. Every Relay service serves HTTP through `relay_health::serve`,
//! so the consumer stands for all of them.
use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::*;

/// Reads until the server closes the connection; the bytes read. Panics if it is still open
/// `limit` after the call (a reset also counts as closed).
async fn closed_within(stream: &mut TcpStream, limit: Duration, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: still open after {limit:?}");
    received
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_half_sent_and_idle_keep_alive_connections_are_closed_while_the_endpoints_answer() {
    let db = TestDb::new().await;
    // No topic needs to exist, nor a broker to answer: only the endpoint is tested.
    let mut env = consumer_env(&db, "ledger", &format!("it-{}", unique()));
    let addr = free_addr();
    env.insert("RELAY_HTTP_ADDR".into(), addr.clone());
    let consumer = spawn("http_timeouts", "consumer", CONSUMER, &env);
    // The endpoint answers whether or not the broker is up; readiness is not what is tested.
    eventually(Duration::from_secs(60), "the consumer's endpoint", || async {
        (http_get(&addr, "/healthz").await?.0 == 200).then_some(())
    })
    .await;

    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut half = TcpStream::connect(&addr).await.expect("connect");
    half.write_all(b"GET /metr").await.expect("half a request line");
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n").await.expect("request");
    let mut response = vec![0u8; 1024];
    let n = idle.read(&mut response).await.expect("response");
    let response = String::from_utf8_lossy(&response[..n]).to_string();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "a complete response before the idle wait: {response}");

    // The three hold their connections; others are still served.
    let (status, _) = http_get(&addr, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    let (status, body) = http_get(&addr, "/readyz").await.expect("/readyz answers");
    assert!([200, 503].contains(&status) && body.contains("schema: "), "{status}: {body}");

    // The timeout plus a margin for a shared, busy machine.
    let limit = relay_health::HEADER_READ_TIMEOUT + Duration::from_secs(10);
    assert_eq!(closed_within(&mut silent, limit, "a client that sends nothing").await, b"");
    let answer = closed_within(&mut half, limit, "half a request line").await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "half a request served");
    assert_eq!(closed_within(&mut idle, limit, "an idle keep-alive connection").await, b"");

    // A request that did not fit the head limit is refused, and the endpoint still serves.
    let mut huge = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(relay_health::MAX_HEAD_BYTES * 2)
    );
    let _ = huge.write_all(head.as_bytes()).await;
    let answer = closed_within(&mut huge, limit, "an oversized request head").await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "an oversized head was served");
    assert_eq!(http_get(&addr, "/healthz").await, Some((200, "ok\n".into())));
    drop(consumer);
}
