//! Graceful shutdown of the real `chorus` binary: on SIGTERM or SIGINT every
//! client is told the server is going away and when to come back, and the
//! process exits 0 within the drain bound.

mod common;

use chorus_protocol::*;
use common::*;
use std::time::{Duration, Instant};

async fn shuts_down_gracefully_on(signal: &str) {
    let chorus = ChorusProcess::start(&[
        "--memory-only".as_ref(),
        "--reconnect-after-shutdown-secs".as_ref(),
        "7".as_ref(),
    ]);
    let mut client = RawWs::connect_url(&chorus.ws_url()).await;
    client.send(&hello(PROTOCOL_VERSION)).await;
    assert!(matches!(client.recv().await, ServerMessage::Hello(_)));
    client.join("going-away", 1).await;

    chorus.signal(signal);
    let sent = Instant::now();

    // The client is told, with when to come back, then the connection closes cleanly.
    let error = client.recv_error().await;
    assert_eq!(error.code, ErrorCode::ShuttingDown);
    assert_eq!(
        error.detail,
        ErrorDetail::RetryAfter {
            retry_after_ms: 7000
        }
    );
    assert_eq!(client.closed_code().await, Some(4501));

    // The process exits 0 within the drain bound (10 s by default) and a margin.
    let status = chorus.wait_exit().await;
    assert!(status.success(), "exit status {status}");
    assert!(sent.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn sigterm_tells_clients_to_come_back_and_exits_zero() {
    shuts_down_gracefully_on("-TERM").await;
}

#[tokio::test]
async fn sigint_tells_clients_to_come_back_and_exits_zero() {
    shuts_down_gracefully_on("-INT").await;
}
