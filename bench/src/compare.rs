//! `chorus-bench compare`: one scenario against several targets, one after
//! the other: Chorus over WebTransport, Chorus over WebSocket (both through
//! [`crate::run`], in process or `--url`), and the Node.js `ws` and
//! Socket.IO relays ([`crate::baseline_run`], started by the bench). Each
//! run gives the same [`Report`], so they print side by side
//! ([`crate::report::side_by_side`]) and as comparable JSON lines.

use crate::baseline_run::run_relay;
use crate::baselines::{LaunchOptions, RelayKind};
use crate::report::Report;
use crate::run::{BenchConfig, run};
use crate::transports::TransportMix;
use anyhow::{Context, Result};
use std::fmt;
use std::time::Duration;

/// What one run of a comparison loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum CompareTarget {
    /// Chorus, every client on WebTransport.
    ChorusWt,
    /// Chorus, every client on WebSocket.
    ChorusWs,
    /// The Node.js `ws` relay (`bench/baselines/ws-relay.mjs`).
    WsRelay,
    /// The Node.js Socket.IO 4 relay (`bench/baselines/socketio-relay.mjs`).
    SocketioRelay,
}

impl CompareTarget {
    /// Every target, in the order a comparison runs them.
    pub const ALL: [CompareTarget; 4] = [
        CompareTarget::ChorusWt,
        CompareTarget::ChorusWs,
        CompareTarget::WsRelay,
        CompareTarget::SocketioRelay,
    ];

    /// `"chorus-wt"`, `"chorus-ws"`, `"ws-relay"` or `"socketio-relay"`, as
    /// `--targets` takes them.
    pub fn name(self) -> &'static str {
        match self {
            CompareTarget::ChorusWt => "chorus-wt",
            CompareTarget::ChorusWs => "chorus-ws",
            CompareTarget::WsRelay => "ws-relay",
            CompareTarget::SocketioRelay => "socketio-relay",
        }
    }

    /// The relay this target starts, if it is one.
    pub fn relay(self) -> Option<RelayKind> {
        match self {
            CompareTarget::WsRelay => Some(RelayKind::Ws),
            CompareTarget::SocketioRelay => Some(RelayKind::SocketIo),
            CompareTarget::ChorusWt | CompareTarget::ChorusWs => None,
        }
    }

    /// `cfg` for this target: Chorus targets set the clients' transport.
    pub fn config(self, cfg: &BenchConfig) -> BenchConfig {
        let transport = match self {
            CompareTarget::ChorusWt => TransportMix::WebTransport,
            // The relays are WebSocket servers too.
            _ => TransportMix::WebSocket,
        };
        BenchConfig {
            transport,
            ..cfg.clone()
        }
    }
}

impl fmt::Display for CompareTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One run of `cfg`'s scenario against `target`; relays are started with
/// `launch`. Blocks the calling thread (not inside a Tokio runtime).
pub fn run_target(
    cfg: &BenchConfig,
    target: CompareTarget,
    launch: &LaunchOptions,
) -> Result<Report> {
    let cfg = target.config(cfg);
    match target.relay() {
        Some(kind) => run_relay(&cfg, kind, launch),
        None => run(&cfg),
    }
    .with_context(|| format!("{target} run"))
}

/// What a comparison gave: the reports of the runs that completed, in
/// target order, and the error of each that did not.
#[derive(Debug, Default)]
pub struct Comparison {
    pub reports: Vec<Report>,
    pub failures: Vec<(CompareTarget, anyhow::Error)>,
}

/// Runs `cfg`'s scenario against each of `targets` in turn, `settle` apart
/// (so one run's connections are gone before the next connects). A target
/// that fails does not stop the others. `progress` hears which run starts.
pub fn compare(
    cfg: &BenchConfig,
    targets: &[CompareTarget],
    launch: &LaunchOptions,
    settle: Duration,
    mut progress: impl FnMut(&str),
) -> Comparison {
    let mut out = Comparison::default();
    for (i, &target) in targets.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(settle);
        }
        progress(&format!("run {} of {}: {target}", i + 1, targets.len()));
        match run_target(cfg, target, launch) {
            Ok(report) => out.reports.push(report),
            Err(e) => {
                progress(&format!("{target} failed: {e:#}"));
                out.failures.push((target, e));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn targets_are_named_as_the_command_line_takes_them() {
        for t in CompareTarget::ALL {
            let value = t.to_possible_value().expect("every target is selectable");
            assert_eq!(value.get_name(), t.name());
            assert_eq!(CompareTarget::from_str(t.name(), false), Ok(t));
        }
        assert_eq!(CompareTarget::WsRelay.relay(), Some(RelayKind::Ws));
        assert_eq!(
            CompareTarget::SocketioRelay.relay(),
            Some(RelayKind::SocketIo)
        );
        assert_eq!(CompareTarget::ChorusWs.relay(), None);
    }
}
