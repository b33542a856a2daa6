//! Tiny real runs through an in-process server, one per transport mix and
//! with the reliable loads: check that the accounting is consistent, never
//! how fast anything was.

use chorus_bench::report::{LaneReport, Report};
use chorus_bench::run::{BenchConfig, Target, run};
use chorus_bench::scenario::Scenario;
use chorus_bench::transports::{ClientTransport, PerTransport, TransportMix};
use std::time::Duration;

/// 1 room x 3 clients, 20 Hz, 1 s, on `transport`, no reliable load.
fn tiny_config(transport: TransportMix) -> BenchConfig {
    BenchConfig {
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
        client_endpoints: 0,
        connect_concurrency: 32,
        server_threads: 2,
        client_threads: 2,
        target: Target::InProcess {
            cert_dir: std::path::PathBuf::new(),
        },
        transport,
        ws_tls: false,
        state_rate: 0.0,
        command_rate: 0.0,
        scenario: None,
        scenario_overrides: Vec::new(),
    }
}

/// Runs `cfg` against an in-process server whose certificate lives in a
/// directory of this test (`name`), removed afterwards.
fn run_in_process(mut cfg: BenchConfig, name: &str) -> Report {
    let cert_dir =
        std::env::temp_dir().join(format!("chorus-bench-test-{}-{name}", std::process::id()));
    cfg.target = Target::InProcess {
        cert_dir: cert_dir.clone(),
    };
    let report = run(&cfg).expect("the run completes");
    let _ = std::fs::remove_dir_all(&cert_dir);
    report
}

/// 1 room x 3 clients, 20 Hz, 1 s, on `transport`.
fn tiny_run(transport: TransportMix) -> Report {
    let report = run_in_process(tiny_config(transport), transport.name());
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
fn webtransport_clients_on_shared_endpoints_get_every_tick() {
    // Three clients on two shared QUIC endpoints (one UDP socket each).
    let mut cfg = tiny_config(TransportMix::WebTransport);
    cfg.client_endpoints = 2;
    let report = run_in_process(cfg, "shared-endpoints");
    check_accounting(&report);
    assert_eq!(report.params.client_endpoints, 2);
    assert_eq!(report.server_sessions_opened.map(|s| s.total()), Some(3));
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

/// What holds for a reliable lane in a tiny run on loopback: every request
/// is acked, every change reaches both other members (rooms of 3), nothing
/// is lost, refused, duplicated or misrouted. The drain is long enough that
/// no reliable message can still be in flight on an idle loopback.
fn check_lane(report: &Report, lane: Option<&LaneReport>, name: &str) {
    let lane = lane.unwrap_or_else(|| panic!("{name} load ran: {report:?}"));
    assert!(lane.sent > 0, "{name}: nothing sent: {lane:?}");
    assert_eq!(lane.acked, lane.sent, "{name}: {lane:?}");
    assert!(lane.refused.is_empty(), "{name}: {lane:?}");
    assert!(lane.failed.is_empty(), "{name}: {lane:?}");
    assert_eq!(lane.unanswered, 0, "{name}: {lane:?}");
    assert_eq!(lane.ack_latency_ms.samples, lane.acked, "{name}");
    assert_eq!(lane.expected, lane.acked * 2, "{name}: rooms of 3");
    assert_eq!(lane.delivered, lane.expected, "{name}: {lane:?}");
    assert_eq!(lane.loss_pct, 0.0, "{name}");
    assert_eq!(lane.fanout_latency_ms.samples, lane.delivered, "{name}");
    assert_eq!(
        (
            lane.anomalies.duplicates,
            lane.anomalies.misrouted,
            lane.anomalies.too_old,
            lane.anomalies.undecodable
        ),
        (0, 0, 0, 0),
        "{name}: {lane:?}"
    );
    assert_eq!(
        (lane.sdk_lagged, lane.streams_ended_early),
        (0, 0),
        "{name}"
    );
}

#[test]
fn tiny_state_and_command_load_beside_ticks_loses_nothing() {
    let cfg = BenchConfig {
        state_rate: 10.0,
        command_rate: 10.0,
        drain: Duration::from_secs(2),
        ..tiny_config(TransportMix::WebSocket)
    };
    let report = run_in_process(cfg, "lanes-ws");
    check_accounting(&report);
    check_lane(&report, report.state.as_ref(), "state");
    check_lane(&report, report.commands.as_ref(), "commands");
    let (state, commands) = (
        report.state.as_ref().expect("state"),
        report.commands.as_ref().expect("commands"),
    );
    assert_eq!((state.rate_per_room, commands.rate_per_room), (10.0, 10.0));
    // The server refused nothing either. (Its counts are not compared with
    // the bench's: it counts from its own sample times, the bench by send
    // time, and with no warm-up the first requests race the first sample.)
    let server = report
        .server_reliable
        .as_ref()
        .expect("in-process counters");
    assert_eq!(
        server.state_updates.keys().collect::<Vec<_>>(),
        ["applied"],
        "{server:?}"
    );
    let back: Report =
        serde_json::from_str(&report.json_line().expect("serializes")).expect("parses");
    assert_eq!(back, report);
}

#[test]
fn a_state_load_runs_alone_without_ticks() {
    let cfg = BenchConfig {
        hz: 0.0,
        state_rate: 10.0,
        drain: Duration::from_secs(2),
        scenario: Some(Scenario::S1),
        scenario_overrides: vec!["rooms", "clients_per_room", "hz"],
        ..tiny_config(TransportMix::WebTransport)
    };
    let report = run_in_process(cfg, "state-wt");
    assert_eq!((report.sent, report.expected, report.delivered), (0, 0, 0));
    assert_eq!(report.latency_ms.samples, 0);
    assert_eq!(report.commands, None);
    check_lane(&report, report.state.as_ref(), "state");
    assert_eq!(report.params.scenario.as_deref(), Some("s1"));
    assert_eq!(
        report.params.scenario_overrides,
        ["rooms", "clients_per_room", "hz"]
    );
    assert_eq!(report.server_sessions_opened.map(|s| s.total()), Some(3));
}

#[test]
fn too_small_payload_is_refused_before_connecting() {
    let cfg = BenchConfig {
        payload_bytes: 15,
        target: Target::External {
            url: "https://127.0.0.1:9/chorus".into(),
            ws_url: None,
            cert_hash: [0; 32],
            server_pid: None,
        },
        ..tiny_config(TransportMix::WebSocket)
    };
    let err = run(&cfg).expect_err("15 bytes cannot hold the header");
    assert!(format!("{err:#}").contains("too small"), "{err:#}");
}
