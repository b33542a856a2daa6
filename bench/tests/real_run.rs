//! Tiny real runs through an in-process server, one per transport mix: check
//! that the accounting is consistent, never how fast anything was.

use chorus_bench::report::Report;
use chorus_bench::run::{BenchConfig, Target, run};
use chorus_bench::transports::{ClientTransport, PerTransport, TransportMix};
use std::time::Duration;

/// 1 room x 3 clients, 20 Hz, 1 s, on `transport`.
fn tiny_run(transport: TransportMix) -> Report {
    let cert_dir = std::env::temp_dir().join(format!(
        "chorus-bench-test-{}-{transport}",
        std::process::id()
    ));
    let cfg = BenchConfig {
        rooms: 1,
        clients_per_room: 3,
        hz: 20.0,
        payload_bytes: 48,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        drain: Duration::from_millis(500),
        seed: 7,
        tick_capacity: 64,
        datagram_receive_buffer_bytes: None,
        connect_concurrency: 32,
        server_threads: 2,
        client_threads: 2,
        target: Target::InProcess {
            cert_dir: cert_dir.clone(),
        },
        transport,
        ws_tls: false,
        scenario: None,
        scenario_overrides: Vec::new(),
    };
    let report = run(&cfg).expect("the run completes");
    let _ = std::fs::remove_dir_all(&cert_dir);
    check_accounting(&report);
    report
}

/// What holds for every run, whatever the transport.
fn check_accounting(report: &Report) {
    assert!(report.sent > 0, "nothing sent: {report:?}");
    assert_eq!(report.expected, report.sent * 2);
    assert!(report.delivered <= report.expected, "{report:?}");
    assert_eq!(report.anomalies.misrouted, 0);
    assert_eq!(report.anomalies.duplicates, 0);
    assert_eq!(report.anomalies.undecodable, 0);
    assert_eq!(report.send_errors, 0);
    assert_eq!(report.receivers_ended_early, 0);
    assert_eq!(report.latency_ms.samples, report.delivered);
    assert_eq!(report.connect_join_ms.samples, 3);
    let counters = report.server_counters.expect("in-process counters");
    assert!(counters.ticks_in > 0);
    // The JSON line parses back to the same report.
    let line = report.json_line().expect("serializes");
    let back: Report = serde_json::from_str(&line).expect("parses");
    assert_eq!(&back, report);
    // The per-pair figures add up to the overall ones.
    let pairs = &report.by_pair;
    assert_eq!(
        pairs.iter().map(|p| p.expected).sum::<u64>(),
        report.expected
    );
    assert_eq!(
        pairs.iter().map(|p| p.delivered).sum::<u64>(),
        report.delivered
    );
    assert_eq!(
        pairs.iter().map(|p| p.latency_ms.samples).sum::<u64>(),
        report.latency_ms.samples
    );
    for p in pairs {
        assert!(p.delivered <= p.expected, "{p:?}");
    }
    // The server saw the sessions on the transports planned (the run checks
    // this too, and every client's own `transport()`).
    let per_room = report.clients_per_room_by_transport;
    assert_eq!(per_room.total(), 3);
    assert_eq!(report.server_sessions_opened, Some(per_room));
}

#[test]
fn tiny_webtransport_run_has_consistent_accounting() {
    let report = tiny_run(TransportMix::WebTransport);
    assert_eq!(report.transport, TransportMix::WebTransport);
    assert_eq!(report.params.ws_url, None);
    assert_eq!(report.sdk_outgoing_replaced, 0);
    assert_eq!(
        report
            .by_pair
            .iter()
            .map(|p| (p.from, p.to))
            .collect::<Vec<_>>(),
        [(ClientTransport::WebTransport, ClientTransport::WebTransport)]
    );
}

#[test]
fn tiny_websocket_run_has_consistent_accounting() {
    let report = tiny_run(TransportMix::WebSocket);
    assert_eq!(report.transport, TransportMix::WebSocket);
    let ws_url = report.params.ws_url.as_deref().expect("WebSocket URL");
    assert!(ws_url.starts_with("ws://127.0.0.1:"), "{ws_url}");
    assert_eq!(
        report.server_sessions_opened,
        Some(PerTransport {
            webtransport: 0,
            websocket: 3
        })
    );
    assert_eq!(
        report
            .by_pair
            .iter()
            .map(|p| (p.from, p.to))
            .collect::<Vec<_>>(),
        [(ClientTransport::WebSocket, ClientTransport::WebSocket)]
    );
}

#[test]
fn tiny_mixed_run_has_consistent_accounting() {
    use ClientTransport::{WebSocket as WS, WebTransport as WT};
    let report = tiny_run(TransportMix::Mixed);
    assert_eq!(report.transport, TransportMix::Mixed);
    // Clients 0 and 2 on WebTransport, 1 on WebSocket.
    assert_eq!(
        report.server_sessions_opened,
        Some(PerTransport {
            webtransport: 2,
            websocket: 1
        })
    );
    // The lone WebSocket client has no WebSocket room-mate.
    assert_eq!(
        report
            .by_pair
            .iter()
            .map(|p| (p.from, p.to))
            .collect::<Vec<_>>(),
        [(WT, WT), (WT, WS), (WS, WT)]
    );
    let p = |from, to| {
        report
            .by_pair
            .iter()
            .find(|p| (p.from, p.to) == (from, to))
            .copied()
            .expect("pair")
    };
    // WT -> WT: each WebTransport tick reaches the one other WebTransport
    // client; WT -> WS: the one WebSocket client; WS -> WT: both WebTransport ones.
    assert_eq!(p(WT, WT).expected, p(WT, WT).sent);
    assert_eq!(p(WT, WS).expected, p(WT, WS).sent);
    assert_eq!(p(WS, WT).expected, 2 * p(WS, WT).sent);
    assert_eq!(p(WT, WT).sent + p(WS, WT).sent, report.sent);
}

#[test]
fn too_small_payload_is_refused_before_connecting() {
    let cfg = BenchConfig {
        rooms: 1,
        clients_per_room: 2,
        hz: 20.0,
        payload_bytes: 15,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        drain: Duration::from_millis(100),
        seed: 1,
        tick_capacity: 64,
        datagram_receive_buffer_bytes: None,
        connect_concurrency: 1,
        server_threads: 1,
        client_threads: 1,
        target: Target::External {
            url: "https://127.0.0.1:9/chorus".into(),
            ws_url: None,
            cert_hash: [0; 32],
            server_pid: None,
        },
        transport: TransportMix::WebSocket,
        ws_tls: false,
        scenario: None,
        scenario_overrides: Vec::new(),
    };
    let err = run(&cfg).expect_err("15 bytes cannot hold the header");
    assert!(format!("{err:#}").contains("too small"), "{err:#}");
}
