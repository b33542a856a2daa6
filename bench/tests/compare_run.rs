//! A tiny comparison run against the real Node.js `ws` relay, through
//! `chorus-bench compare`'s own code path ([`compare::compare`]), checking
//! the accounting of the report it gives: every tick sent in the window
//! reaches exactly the other members of its room, nothing else arrives, and
//! the figures are those of a relay. Never how fast anything was.
//!
//! Needs `node` (>= 20) and `npm`: without `node` the test prints why and
//! passes without checking anything; the relays' packages are installed with
//! `npm ci` when `bench/baselines/node_modules` is missing.

use chorus_bench::baselines::{BaselineError, LaunchOptions, node_version};
use chorus_bench::compare::{self, CompareTarget};
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
    let done = compare::compare(
        &cfg,
        &[CompareTarget::WsRelay],
        &launch,
        Duration::ZERO,
        |msg| heard.push(msg.to_owned()),
    );
    assert!(done.failures.is_empty(), "{:?}", done.failures);
    assert_eq!(heard, ["run 1 of 1: ws-relay"]);
    let [report]: [Report; 1] = done.reports.try_into().expect("one report");

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
