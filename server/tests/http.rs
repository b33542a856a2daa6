//! The HTTP endpoints on the TCP listener answer with the documented JSON (and
//! Prometheus text), over plain HTTP and over TLS on the same port.

mod common;

use common::*;
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn health_endpoints() {
    let server = start_server().await;
    let addr = server.tcp_addrs()[0];

    let (status, content_type, body) = http_get(addr, "/health/live", &[]).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(json(&body)["status"], "live");

    let (status, _, body) = http_get(addr, "/health/ready", &[]).await;
    assert_eq!(status, 200, "ready once every listener is up");
    assert_eq!(json(&body)["status"], "ready");

    let (status, content_type, body) = http_get(addr, "/health", &[]).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let health = json(&body);
    assert_eq!(health["ok"], true);
    assert_eq!(health["service"], "chorus");
    assert_eq!(health["rooms"], 0);
    let timestamp = health["timestamp"].as_str().expect("timestamp string");
    assert!(
        timestamp.len() >= 20 && timestamp.ends_with('Z') && timestamp.contains('T'),
        "RFC 3339: {timestamp}"
    );

    let (status, _, _) = http_get(addr, "/no/such/path", &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn stats_list_rooms_members_and_sessions_per_transport() {
    let server = start_server().await;
    let addr = server.tcp_addrs()[0];
    let (mut wt, _) = RawClient::connect_hello(&server).await;
    let (mut ws, _) = RawWs::connect_hello(&server).await;
    wt.join("alpha", 1).await;
    ws.join("alpha", 1).await;
    ws.join("beta", 2).await;

    let (status, content_type, body) = http_get(addr, "/stats", &[]).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let stats = json(&body);
    let rooms = stats["rooms"].as_array().expect("rooms");
    let summary: Vec<(String, u64)> = rooms
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id").to_owned(),
                r["members"].as_u64().expect("members"),
            )
        })
        .collect();
    assert_eq!(summary, [("alpha".into(), 2), ("beta".into(), 1)]);
    for room in rooms {
        assert!(room["created_at"].as_str().expect("created").ends_with('Z'));
        assert!(
            room["last_activity"]
                .as_str()
                .expect("activity")
                .ends_with('Z')
        );
    }
    let totals = &stats["totals"];
    assert_eq!(totals["rooms"], 2);
    assert_eq!(totals["members"], 3);
    assert_eq!(totals["sessions"]["webtransport"]["open"], 1);
    assert_eq!(totals["sessions"]["websocket"]["open"], 1);
    assert_eq!(totals["sessions"]["total_open"], 2);
    // The labelled counts of /metrics, in step.
    for reason in ["slow_receiver", "rate_limit", "oversize", "receiver_closed"] {
        assert_eq!(totals["ticks_dropped_by_reason"][reason], 0, "{reason}");
    }
    assert_eq!(totals["rate_limited_by_budget"]["joins"], 0);
    assert_eq!(totals["failovers"]["host_away"], 0);
    assert!(totals["errors"].is_object() && totals["sessions_closed"].is_object());
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_move_with_events() {
    let server = start_server().await;
    let addr = server.tcp_addrs()[0];
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let (mut b, _) = RawClient::connect_hello(&server).await;
    let room = a.join("metrics", 1).await;
    b.join("metrics", 1).await;
    a.send_tick(room.room, room.you, 1, b"t");
    b.recv_datagram().await;

    let (status, content_type, body) = http_get(addr, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{body}"))
    };
    assert_eq!(value("chorus_ticks_in_total"), 1.0);
    assert_eq!(value("chorus_ticks_out_total"), 1.0);
    assert_eq!(value("chorus_rooms"), 1.0);
    assert_eq!(value("chorus_members"), 2.0);
    assert_eq!(
        value("chorus_connections_open{transport=\"webtransport\"}"),
        2.0
    );
    assert!(body.contains("# HELP chorus_ticks_in_total"));
    assert!(body.contains("# TYPE chorus_ticks_in_total counter"));
}

#[tokio::test]
async fn cert_hash_gives_the_pinned_certificate() {
    let server = start_server().await;
    let (status, content_type, body) = http_get(server.tcp_addrs()[0], "/cert-hash", &[]).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let hash = json(&body);
    assert_eq!(hash["algorithm"], "sha-256");
    let expected: String = server
        .cert_hash()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash["hashes"][0], expected.as_str());
}

#[tokio::test]
async fn tls_and_plain_share_the_tcp_port() {
    use wtransport::tls::rustls;
    let server = start_server().await;
    let addr = server.tcp_addrs()[0];
    // A TLS client that pins the certificate by hash, as native clients do.
    let verifier = std::sync::Arc::new(wtransport::tls::client::ServerHashVerification::new([
        wtransport::tls::Sha256Digest::new(server.cert_hash()),
    ]));
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake on the shared port");
    let (status, _, body) = http_get_over(tls, "localhost", "/health/live", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["status"], "live");
    // And plain HTTP on the same port.
    let (status, _, _) = http_get(addr, "/health/live", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_demo_page_and_sdk_are_served_cross_origin_isolated_unless_disabled() {
    let server = start_server().await;
    let addr = server.tcp_addrs()[0];
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/demo.js", "text/javascript; charset=utf-8"),
        ("/chorus.js", "text/javascript; charset=utf-8"),
    ] {
        let (status, got_type, body) = http_get(addr, path, &[]).await;
        assert_eq!((status, got_type.as_str()), (200, content_type), "{path}");
        assert!(!body.is_empty());
    }
    let headers = http_headers(addr, "/").await;
    assert_eq!(
        headers
            .get("cross-origin-opener-policy")
            .map(String::as_str),
        Some("same-origin")
    );
    assert_eq!(
        headers
            .get("cross-origin-embedder-policy")
            .map(String::as_str),
        Some("require-corp")
    );

    let quiet = start_server_with(|c| c.serve_demo = false).await;
    let (status, _, _) = http_get(quiet.tcp_addrs()[0], "/", &[]).await;
    assert_eq!(status, 404);
}
