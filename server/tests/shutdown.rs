//! Graceful shutdown of the real `chorus` binary: on SIGTERM or SIGINT every
//! client is told the server is going away and when to come back, and the
//! process exits 0 within the drain bound.

mod common;

use chorus_protocol::*;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Chorus {
    child: Child,
    tcp: std::net::SocketAddr,
}

impl Drop for Chorus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on ephemeral ports and reads where it listens.
fn start_chorus() -> Chorus {
    let cert_dir = cert_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["--listen", "127.0.0.1:0", "--no-demo", "--cert-dir"])
        .arg(&cert_dir)
        .args(["--reconnect-after-shutdown-secs", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chorus starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut tcp = None;
    for line in lines.by_ref() {
        let line = line.expect("a line");
        // "  WebSocket     ws:// and wss://127.0.0.1:PORT/chorus"
        if let Some(rest) = line.trim().strip_prefix("WebSocket") {
            let addr = rest
                .rsplit("://")
                .next()
                .and_then(|s| s.strip_suffix("/chorus"))
                .expect("an address");
            tcp = Some(addr.parse().expect("a socket address"));
        }
        if line.starts_with("certificate sha256:") {
            break;
        }
    }
    // Keep reading, so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Chorus {
        child,
        tcp: tcp.expect("chorus printed its WebSocket address"),
    }
}

async fn shuts_down_gracefully_on(signal: &str) {
    let mut chorus = start_chorus();
    let mut client = RawWs::connect_url(&format!("ws://{}/chorus", chorus.tcp)).await;
    client.send(&hello(PROTOCOL_VERSION)).await;
    assert!(matches!(client.recv().await, ServerMessage::Hello(_)));
    client.join("going-away", 1).await;

    let status = Command::new("kill")
        .args([signal, &chorus.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
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
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = chorus.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "chorus did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("wait task");
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
