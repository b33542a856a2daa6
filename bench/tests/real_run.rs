//! One tiny real run through an in-process server: checks that the accounting
//! is consistent, never how fast anything was.

use chorus_bench::run::{BenchConfig, Target, run};
use std::time::Duration;

#[test]
fn tiny_in_process_run_has_consistent_accounting() {
    let cert_dir = std::env::temp_dir().join(format!("chorus-bench-test-{}", std::process::id()));
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
        connect_concurrency: 32,
        server_threads: 2,
        client_threads: 2,
        target: Target::InProcess {
            cert_dir: cert_dir.clone(),
        },
    };
    let report = run(&cfg).expect("the run completes");
    let _ = std::fs::remove_dir_all(&cert_dir);

    assert!(report.sent > 0, "nothing sent: {report:?}");
    assert_eq!(report.expected, report.sent * 2);
    assert!(report.delivered <= report.expected, "{report:?}");
    assert_eq!(report.misrouted, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.undecodable, 0);
    assert_eq!(report.send_errors, 0);
    assert_eq!(report.receivers_ended_early, 0);
    assert_eq!(report.latency_ms.samples, report.delivered);
    assert_eq!(report.connect_join_ms.samples, 3);
    let counters = report.server_counters.expect("in-process counters");
    assert!(counters.ticks_in > 0);
    // The JSON line parses back to the same report.
    let line = report.json_line().expect("serializes");
    let back: chorus_bench::report::Report = serde_json::from_str(&line).expect("parses");
    assert_eq!(back, report);
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
        connect_concurrency: 1,
        server_threads: 1,
        client_threads: 1,
        target: Target::External {
            url: "https://127.0.0.1:9/chorus".into(),
            cert_hash: [0; 32],
            server_pid: None,
        },
    };
    let err = run(&cfg).expect_err("15 bytes cannot hold the header");
    assert!(format!("{err:#}").contains("too small"), "{err:#}");
}
