//! The live progress bar on stderr (indicatif), for a load run and for the
//! storm and idle tests.
//!
//! A load run's bar is drawn by a thread of its own ([`RunProgress`]) that
//! reads the run's [`RunProbe`] four times a second: the phase (connecting
//! n/N, warm-up, measuring with elapsed / total, draining), ticks received
//! per second over the last second and the loss so far. The run itself never
//! touches the bar. The storm and idle tests count connections on a plain
//! bar ([`count_bar`]).
//!
//! The bar is hidden (nothing drawn, no thread started) when stderr is not a
//! terminal or with `--quiet` ([`visible`]), so redirected output and CI logs
//! stay clean.

use crate::live::{LiveTotals, Phase, RunProbe};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the bar is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// The span the live rate is measured over.
const RATE_SPAN: Duration = Duration::from_secs(1);

/// Whether to draw progress: stderr is a terminal and `--quiet` was not given.
pub fn visible(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar counting up to `total` (connections, joins), labelled `label`;
/// hidden unless `show`.
pub fn count_bar(show: bool, label: &str, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(style("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})"));
    bar.set_prefix(label.to_owned());
    bar
}

/// The bar of one load run, redrawn by its own thread until [`finish`](Self::finish).
#[derive(Debug)]
pub struct RunProgress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunProgress {
    /// Starts drawing `probe`'s run as `label` if `show`; otherwise does nothing.
    pub fn start(show: bool, label: &str, probe: Arc<RunProbe>) -> RunProgress {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = show.then(|| {
            let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
            bar.set_style(style("{prefix} [{bar:30}] {msg}"));
            bar.set_prefix(label.to_owned());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bench-progress".into())
                .spawn(move || draw_until_stopped(&bar, &probe, &stop))
                .ok()
        });
        RunProgress {
            stop,
            thread: thread.flatten(),
        }
    }

    /// Stops the thread and clears the bar.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunProgress {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn draw_until_stopped(bar: &ProgressBar, probe: &RunProbe, stop: &AtomicBool) {
    let mut recent: VecDeque<(Instant, u64)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let totals = probe.totals();
        recent.push_back((now, totals.received));
        while recent
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > RATE_SPAN)
        {
            recent.pop_front();
        }
        let rate = match (recent.front(), recent.back()) {
            (Some(&(t0, n0)), Some(&(t1, n1))) if t1 > t0 => {
                n1.saturating_sub(n0) as f64 / t1.saturating_duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        };
        let status = status(probe.phase(now), totals, rate, probe.receivers_per_tick());
        bar.set_length(status.len.max(1));
        bar.set_position(status.pos.min(status.len));
        bar.set_message(status.message);
        std::thread::sleep(REDRAW_EVERY);
    }
    bar.finish_and_clear();
}

/// What the bar shows: how far the phase is (`pos` of `len`) and a line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub pos: u64,
    pub len: u64,
    pub message: String,
}

/// The bar's content for `phase`, the live totals, ticks received per second
/// over the last second, and how many room-mates each tick should reach.
pub fn status(phase: Phase, totals: LiveTotals, received_per_s: f64, receivers: u32) -> Status {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let figures = || {
        let loss = totals
            .loss_pct(receivers)
            .map_or_else(|| "-".to_owned(), |l| format!("{l:.3} %"));
        format!("{received_per_s:.0} ticks received/s, loss so far {loss}")
    };
    match phase {
        Phase::Connecting { connected, total } => Status {
            pos: u64::from(connected),
            len: u64::from(total),
            message: format!("connecting {connected}/{total}"),
        },
        Phase::WarmUp { left } => Status {
            pos: 0,
            len: 1,
            message: format!(
                "warm-up, {:.1} s left | {received_per_s:.0} ticks received/s",
                left.as_secs_f64()
            ),
        },
        Phase::Measuring { elapsed, total } => Status {
            pos: ms(elapsed),
            len: ms(total),
            message: format!(
                "measuring {:.1}/{:.1} s | {}",
                elapsed.as_secs_f64(),
                total.as_secs_f64(),
                figures()
            ),
        },
        Phase::Draining { left } => Status {
            pos: 1,
            len: 1,
            message: format!("draining, {:.1} s left | {}", left.as_secs_f64(), figures()),
        },
        Phase::Closing => Status {
            pos: 1,
            len: 1,
            message: format!("closing | {}", figures()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_has_its_position_and_text() {
        let totals = LiveTotals {
            sent: 100,
            delivered: 396,
            received: 500,
        };
        let s = status(
            Phase::Connecting {
                connected: 3,
                total: 8,
            },
            totals,
            0.0,
            4,
        );
        assert_eq!((s.pos, s.len), (3, 8));
        assert_eq!(s.message, "connecting 3/8");
        let s = status(
            Phase::Measuring {
                elapsed: Duration::from_millis(2500),
                total: Duration::from_secs(10),
            },
            totals,
            1234.4,
            4,
        );
        assert_eq!((s.pos, s.len), (2500, 10_000));
        assert_eq!(
            s.message,
            "measuring 2.5/10.0 s | 1234 ticks received/s, loss so far 1.000 %"
        );
        let s = status(
            Phase::WarmUp {
                left: Duration::from_millis(1500),
            },
            LiveTotals::default(),
            10.0,
            4,
        );
        assert_eq!(s.message, "warm-up, 1.5 s left | 10 ticks received/s");
        let s = status(
            Phase::Draining {
                left: Duration::from_millis(300),
            },
            LiveTotals::default(),
            0.0,
            4,
        );
        assert!(
            s.message.starts_with("draining, 0.3 s left"),
            "{}",
            s.message
        );
        assert!(s.message.ends_with("loss so far -"), "{}", s.message);
        assert!(
            status(Phase::Closing, totals, 0.0, 4)
                .message
                .starts_with("closing")
        );
    }

    #[test]
    fn hidden_bars_draw_nothing_and_start_no_thread() {
        let bar = count_bar(false, "storm", 10);
        bar.inc(3);
        assert!(bar.is_hidden());
        let probe = Arc::new(RunProbe::new(2, 2));
        let p = RunProgress::start(false, "x", probe);
        assert!(p.thread.is_none());
        p.finish();
    }
}
