//! `chorus-bench compare`: one scenario against several targets, one after
//! the other: Chorus over WebTransport, Chorus over WebSocket (both through
//! [`crate::run`]: in process, at `--url`, or started as its own process with
//! `--chorus-bin`, [`crate::chorus_process`]), and the Node.js `ws` and
//! Socket.IO relays ([`crate::baseline_run`], started by the bench). Each
//! run gives the same [`Report`] and curves, so they print side by side
//! ([`crate::report::side_by_side`]), as comparable JSON lines, and in one
//! Markdown report and one set of plots. [`TargetRunner`] runs one target,
//! for a comparison and for a saturation search alike.

use crate::baseline_run::run_relay_probed;
use crate::baselines::{LaunchOptions, RelayKind};
use crate::chorus_process::{ChorusLaunch, ChorusProcess};
use crate::live::{RunOutput, RunProbe, RunSeries};
use crate::progress::RunProgress;
use crate::report::Report;
use crate::run::{BenchConfig, run_probed};
use crate::transports::TransportMix;
use anyhow::{Context, Result};
use std::fmt;
use std::sync::Arc;
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

/// How each run of a comparison or a search is started and shown.
#[derive(Debug, Clone, Default)]
pub struct TargetRunner {
    /// How the relays are started.
    pub launch: LaunchOptions,
    /// Chorus as its own process for each run; `None`: as the run's
    /// configuration says (in process, or the external server at `--url`).
    pub chorus: Option<ChorusLaunch>,
    /// A live progress bar on stderr while a run goes.
    pub show_progress: bool,
}

impl TargetRunner {
    /// One run of `cfg`'s scenario against `target`, its curves named after
    /// the target. Blocks the calling thread (not inside a Tokio runtime).
    pub fn run(&self, cfg: &BenchConfig, target: CompareTarget) -> Result<RunOutput> {
        let cfg = target.config(cfg);
        let probe = Arc::new(RunProbe::new(cfg.total_clients(), cfg.clients_per_room));
        let bar = RunProgress::start(self.show_progress, target.name(), probe.clone());
        let outcome = match (target.relay(), &self.chorus) {
            (Some(kind), _) => run_relay_probed(&cfg, kind, &self.launch, &probe),
            (None, Some(launch)) => run_chorus_process(&cfg, launch, &probe),
            (None, None) => run_probed(&cfg, &probe),
        };
        bar.finish();
        outcome
            .map(|out| RunOutput {
                series: out.series.labelled(target.name()),
                ..out
            })
            .with_context(|| format!("{target} run"))
    }
}

/// A run against a Chorus process started for it, stopped after it.
fn run_chorus_process(
    cfg: &BenchConfig,
    launch: &ChorusLaunch,
    probe: &Arc<RunProbe>,
) -> Result<RunOutput> {
    let server = ChorusProcess::start(launch, cfg)?;
    let cfg = BenchConfig {
        target: server.target(),
        ..cfg.clone()
    };
    run_probed(&cfg, probe)
        .with_context(|| format!("the server's last stderr lines:\n{}", server.stderr_tail()))
}

/// What a comparison gave: the reports and curves of the runs that
/// completed, in target order, and the error of each that did not.
#[derive(Debug, Default)]
pub struct Comparison {
    pub reports: Vec<Report>,
    pub series: Vec<RunSeries>,
    pub failures: Vec<(CompareTarget, anyhow::Error)>,
}

/// Runs `cfg`'s scenario against each of `targets` in turn with `runner`,
/// `settle` apart (so one run's connections are gone before the next
/// connects). A target that fails does not stop the others. `progress`
/// hears which run starts.
pub fn compare(
    cfg: &BenchConfig,
    targets: &[CompareTarget],
    runner: &TargetRunner,
    settle: Duration,
    mut progress: impl FnMut(&str),
) -> Comparison {
    let mut out = Comparison::default();
    for (i, &target) in targets.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(settle);
        }
        progress(&format!("run {} of {}: {target}", i + 1, targets.len()));
        match runner.run(cfg, target) {
            Ok(run) => {
                out.reports.push(run.report);
                out.series.push(run.series);
            }
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
