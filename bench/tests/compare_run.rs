//! A tiny comparison run against the real Node.js `ws` relay, through
//! `chorus-bench compare`'s own code path ([`compare::compare`]), checking
//! the accounting of the report it gives: every tick sent in the window
//! reaches exactly the other members of its room, nothing else arrives, and
//! the figures are those of a relay. Never how fast anything was.
//!
//! Needs `node` (>= 20) and `npm`: without `node` the test prints why and
//! passes without checking anything; the relays' packages are installed with
//! `npm ci` when `bench/baselines/node_modules` is missing.
//!
//! And the same for Chorus started as its own process (`--chorus-bin`), from
//! the `chorus` binary `cargo test --workspace` builds beside this test.

use chorus_bench::baselines::{BaselineError, LaunchOptions, node_version};
use chorus_bench::chorus_process::ChorusLaunch;
use chorus_bench::compare::{self, CompareTarget, TargetRunner};
use chorus_bench::markdown::{self, MachineInfo};
use chorus_bench::report::{Report, ServerKind};
use chorus_bench::run::BenchConfig;
use chorus_bench::transports::{ClientTransport, TransportMix};
use std::io::Write;
use std::time::Duration;

#[test]
fn tiny_compare_against_the_ws_relay_delivers_every_tick_once() {
    let launch = LaunchOptions::default();
    match node_version(&launch.node) {
        Ok(version) => eprintln!("node {version}"),
        Err(BaselineError::NodeMissing { program }) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: `{program}` not found; the comparison against the Node.js relays needs Node.js >= 20 and npm"
            );
            return;
        }
        Err(e) => panic!("cannot run node: {e}"),
    }
    // 2 rooms x 3 clients, 20 Hz, 1 s measured, no warm-up; a relay run
    // starts its own relay, whatever the config's Chorus target.
    let cfg = BenchConfig {
        seed: 7,
        ..BenchConfig::small(2, 3)
    };
    let mut heard = Vec::new();
    let runner = TargetRunner {
        launch,
        ..TargetRunner::default()
    };
    let done = compare::compare(
        &cfg,
        &[CompareTarget::WsRelay],
        &runner,
        Duration::ZERO,
        |msg| heard.push(msg.to_owned()),
    );
    assert!(done.failures.is_empty(), "{:?}", done.failures);
    assert_eq!(heard, ["run 1 of 1: ws-relay"]);
    let [report]: [Report; 1] = done.reports.try_into().expect("one report");
    // Its curves are named after the target, not the transport.
    assert_eq!(done.series.len(), 1);
    assert_eq!(done.series[0].latency[0].label, "ws-relay");

    assert_eq!(report.target, ServerKind::WsRelay);
    assert_eq!(report.transport, TransportMix::WebSocket);
    assert!(report.params.server.starts_with("node v"), "{report:?}");
    assert!(report.params.url.starts_with("ws://127.0.0.1:"));
    // Sends: every sender fires at most once per 50 ms period of the 1 s
    // window (each at its own offset inside the period): 20 each, 120 in all.
    assert!(
        report.sent > 0 && report.sent <= 120,
        "sent {}",
        report.sent
    );
    assert_eq!(report.nominal_sent_per_s, 120.0);
    assert_eq!(report.send_errors, 0);
    // Deliveries: each tick reaches the 2 other members of its room, once.
    assert_eq!(report.expected, report.sent * 2);
    assert_eq!(report.delivered, report.expected, "{report:?}");
    assert_eq!(report.loss_pct, 0.0);
    assert_eq!(report.anomalies.duplicates, 0);
    assert_eq!(report.anomalies.misrouted, 0);
    assert_eq!(report.anomalies.undecodable, 0);
    assert_eq!(report.anomalies.too_old, 0);
    assert_eq!(report.sdk_dropped, 0);
    assert_eq!(report.receivers_ended_early, 0);
    assert_eq!(report.latency_ms.samples, report.delivered);
    assert_eq!(report.connect_join_ms.samples, 6);
    let pairs: Vec<_> = report.by_pair.iter().map(|p| (p.from, p.to)).collect();
    assert_eq!(
        pairs,
        [(ClientTransport::WebSocket, ClientTransport::WebSocket)]
    );
    // The relay's own process is what is measured; it has no Chorus counters.
    assert_eq!(report.memory.scope, "relay process (node)");
    assert!(report.memory.peak_rss_mib.is_some_and(|m| m > 0.0));
    assert!(report.cpu.server_pct.is_some());
    assert!(report.cpu.loadgen_pct.is_some());
    assert_eq!(report.server_counters, None);
    assert_eq!(report.server_sessions_opened, None);
    // The JSON line names the target and parses back to the same report.
    let line = report.json_line().expect("serializes");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["target"], "ws-relay");
    assert_eq!(v["transport"], "websocket");
    let back: Report = serde_json::from_str(&line).expect("parses back");
    assert_eq!(back, report);
    assert!(report.table().contains("ws-relay (node v"));
}

/// The `chorus` binary of this build (`cargo test --workspace` builds it:
/// the server's own tests need it).
fn chorus_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    // target/<profile>/deps/<test> -> target/<profile>/chorus
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("chorus");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p chorus-server` (or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

#[test]
fn chorus_started_as_its_own_process_is_measured_as_a_relay_is() {
    let cfg = BenchConfig {
        seed: 3,
        ..BenchConfig::small(2, 3)
    };
    let runner = TargetRunner {
        chorus: Some(ChorusLaunch::new(chorus_bin(), Vec::new())),
        ..TargetRunner::default()
    };
    let targets = [CompareTarget::ChorusWt, CompareTarget::ChorusWs];
    let done = compare::compare(&cfg, &targets, &runner, Duration::ZERO, |_| {});
    assert!(done.failures.is_empty(), "{:?}", done.failures);
    assert_eq!(done.reports.len(), 2);
    for ((report, series), target) in done.reports.iter().zip(&done.series).zip(targets) {
        assert_eq!(report.target, ServerKind::Chorus);
        assert_eq!(series.latency[0].label, target.name());
        // Every tick of the window reaches the two others, once.
        assert!(
            report.sent > 0 && report.sent <= 120,
            "sent {}",
            report.sent
        );
        assert_eq!(report.expected, report.sent * 2);
        assert_eq!(report.delivered, report.expected, "{target}: {report:?}");
        assert_eq!(report.anomalies.duplicates, 0);
        assert_eq!(report.anomalies.misrouted, 0);
        // The server's own process is sampled, and its counters read over HTTP.
        assert!(
            report.params.url.starts_with("https://127.0.0.1:"),
            "{}",
            report.params.url
        );
        assert_eq!(report.memory.scope, "external server process");
        assert!(report.memory.peak_rss_mib.is_some_and(|m| m > 0.0));
        assert!(report.cpu.server_pct.is_some());
        let counters = report.server_counters.expect("the server's /stats");
        assert!(
            counters.ticks_in > 0 && counters.ticks_out > 0,
            "{counters:?}"
        );
    }
    assert_eq!(done.reports[0].transport, TransportMix::WebTransport);
    assert_eq!(done.reports[1].transport, TransportMix::WebSocket);
    // The Markdown report: a column per run, and each run's own server.
    let md = markdown::run_report(
        &done.reports,
        "chorus-bench compare",
        &MachineInfo::default(),
    );
    assert!(md.contains("| figure | webtransport | websocket |"), "{md}");
    let server = md
        .lines()
        .find(|l| l.starts_with("| server |"))
        .unwrap_or_else(|| panic!("no server row:\n{md}"));
    assert!(
        server.contains("webtransport: external, https://127.0.0.1:")
            && server.contains("; websocket: external, https://127.0.0.1:"),
        "{server}"
    );
    // Each server is stopped and its directory removed after its run.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("chorus-bench-server-{}-", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
