//! The harness's outputs and its two other tests on tiny in-process runs:
//! the Markdown report and the SVG plots of a load run (the files exist and
//! hold the run's figures and series), the join storm's accounting (N
//! clients, N joined, N latencies) and an idle test's structure. Nothing
//! here asserts how fast anything was.

use chorus_bench::idle::{self, IdleConfig};
use chorus_bench::live::RunProbe;
use chorus_bench::markdown::{self, MachineInfo};
use chorus_bench::plots;
use chorus_bench::run::{BenchConfig, Target, run_probed};
use chorus_bench::server_target::ServerSettings;
use chorus_bench::storm::{self, StormConfig};
use chorus_bench::transports::{ClientTransport, TransportMix};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A directory of this test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chorus-bench-out-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn in_process(dir: &std::path::Path) -> ServerSettings {
    ServerSettings {
        target: Target::InProcess {
            cert_dir: dir.join("certs"),
        },
        ws_tls: false,
        server_threads: 1,
        client_threads: 2,
    }
}

/// 1 room x 3 clients, 20 Hz, 1 s with 1 s of warm-up.
fn tiny(transport: TransportMix, dir: &std::path::Path) -> BenchConfig {
    BenchConfig {
        rooms: 1,
        clients_per_room: 3,
        hz: 20.0,
        payload_bytes: 48,
        duration: Duration::from_secs(1),
        warmup: Duration::from_secs(1),
        drain: Duration::from_millis(500),
        seed: 3,
        tick_capacity: 64,
        datagram_receive_buffer_bytes: None,
        client_endpoints: 0,
        connect_concurrency: 8,
        server_threads: 1,
        client_threads: 2,
        target: Target::InProcess {
            cert_dir: dir.join("certs"),
        },
        transport,
        ws_tls: false,
        state_rate: 0.0,
        command_rate: 0.0,
        scenario: None,
        scenario_overrides: Vec::new(),
    }
}

/// The numbers of the `<polyline points="x,y x,y …">` elements of an SVG.
fn polyline_lengths(svg: &str) -> Vec<usize> {
    svg.split("<polyline")
        .skip(1)
        .filter_map(|el| {
            let points = el.split("points=\"").nth(1)?.split('"').next()?;
            Some(points.split_whitespace().count())
        })
        .collect()
}

#[test]
fn markdown_and_plots_of_a_two_transport_run_hold_its_figures() {
    let dir = scratch("md-plots");
    let mut reports = Vec::new();
    let mut series = Vec::new();
    for transport in [TransportMix::WebTransport, TransportMix::WebSocket] {
        let cfg = tiny(transport, &dir);
        let probe = Arc::new(RunProbe::new(3, 3));
        let out = run_probed(&cfg, &probe).expect("the run completes");
        assert!(out.report.delivered > 0, "{:?}", out.report);
        // The probe saw what the report counts.
        let live = probe.totals();
        assert_eq!(live.sent, out.report.sent);
        assert_eq!(live.delivered, out.report.delivered);
        assert!(live.received >= live.delivered);
        // The series: every tick read, by arrival second, warm-up included;
        // at least the window's deliveries.
        let received: u64 = out.series.received.iter().flat_map(|c| &c.per_second).sum();
        assert_eq!(received, live.received);
        assert!(received >= out.report.delivered);
        assert_eq!(out.series.latency.len(), 1);
        assert_eq!(out.series.latency[0].latency_us.len(), out.report.delivered);
        assert_eq!(out.series.window_s, (1.0, 2.0));
        reports.push(out.report);
        series.push(out.series);
    }

    let md = markdown::run_report(
        &reports,
        "chorus-bench --transport both",
        &MachineInfo::probe(),
    );
    let md_path = dir.join("report.md");
    std::fs::write(&md_path, &md).expect("writes");
    let md = std::fs::read_to_string(&md_path).expect("the report exists");
    assert!(
        md.starts_with("## chorus-bench: 1 rooms x 3 clients"),
        "{md}"
    );
    assert!(md.contains("chorus-bench --transport both"), "{md}");
    assert!(md.contains("| figure | webtransport | websocket |"), "{md}");
    assert!(md.contains("| rooms x clients per room | 1 x 3 |"), "{md}");
    let delivered_row = md
        .lines()
        .find(|l| l.starts_with("| delivered |"))
        .unwrap_or_else(|| panic!("no delivered row:\n{md}"));
    for r in &reports {
        assert!(
            delivered_row.contains(&format!("{} (", r.delivered)),
            "{delivered_row}"
        );
    }
    // Every line of the figures table has a cell per run.
    let figures = md.split("### Figures").nth(1).expect("figures");
    for line in figures.lines().filter(|l| l.starts_with("| ")) {
        assert_eq!(line.matches(" | ").count(), 2, "{line}");
    }

    let files = plots::write_plots(&dir.join("plots"), &series).expect("plots");
    assert_eq!(files.len(), 2);
    let cdf = std::fs::read_to_string(dir.join("plots").join(plots::LATENCY_CDF_FILE))
        .expect("the CDF exists");
    assert!(cdf.starts_with("<svg"));
    let texts = plots::svg_texts(&cdf);
    assert!(
        texts.iter().any(|t| t == "webtransport") && texts.iter().any(|t| t == "websocket"),
        "{texts:?}"
    );
    let rate = std::fs::read_to_string(dir.join("plots").join(plots::RECEIVED_RATE_FILE))
        .expect("the rate plot exists");
    let texts = plots::svg_texts(&rate);
    assert!(
        texts.iter().any(|t| t == "webtransport") && texts.iter().any(|t| t == "websocket"),
        "{texts:?}"
    );
    // Two points (a step) per second of each run's series; the axes' ticks,
    // the line of the deliveries asked and the legend's samples have 2.
    let lengths = polyline_lengths(&rate);
    for s in &series {
        let seconds = s.received[0].per_second.len();
        assert!(seconds >= 3, "{seconds}");
        assert!(lengths.contains(&(2 * seconds)), "{lengths:?} vs {seconds}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tiny_storm_joins_every_client_and_times_each() {
    let dir = scratch("storm");
    for transport in ClientTransport::ALL {
        let cfg = StormConfig {
            clients: 6,
            rate: 100.0,
            room_size: 4,
            transport,
            server: in_process(&dir),
        };
        let r = storm::run_storm(&cfg, false).expect("the storm completes");
        assert_eq!((r.attempts, r.joined), (6, 6), "{r:?}");
        assert!(r.failures.is_empty(), "{r:?}");
        assert_eq!(r.connect_join_ms.samples, 6);
        assert_eq!(r.connect_ms.samples, 6);
        assert_eq!(r.join_ms.samples, 6);
        assert_eq!(r.start_lateness_ms.samples, 6);
        assert!(r.attempts_per_s.is_some() && r.joined_per_s.is_some());
        assert_eq!(r.transport, transport);
        // The server opened exactly these sessions, on this transport.
        let opened = r
            .measured
            .server_sessions_opened
            .expect("in-process counters");
        assert_eq!(
            (opened.get(transport), opened.total()),
            (6, 6),
            "{opened:?}"
        );
        assert!(r.measured.rss_end_mib.is_some());
        let line = r.json_line().expect("serializes");
        let back: storm::StormReport = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, r);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tiny_idle_test_reports_memory_per_connection() {
    let dir = scratch("idle");
    let cfg = IdleConfig {
        connections: 6,
        room_size: 4,
        transport: ClientTransport::WebSocket,
        connect_concurrency: 4,
        settle: Duration::ZERO,
        server: in_process(&dir),
    };
    let r = idle::run_idle(&cfg, true, false).expect("the idle test completes");
    assert_eq!(r.connections, 6);
    assert!(r.rss_before_kib > 0 && r.rss_after_kib > 0);
    assert_eq!(
        r.bytes_per_connection,
        idle::bytes_per_connection(r.rss_before_kib, r.rss_after_kib, 6)
    );
    assert_eq!(r.server_sessions_opened.map(|s| s.websocket), Some(6));
    assert!(r.memory_scope.contains("in-process server + all clients"));
    let _ = std::fs::remove_dir_all(&dir);
}
