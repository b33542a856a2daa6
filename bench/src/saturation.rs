//! `chorus-bench saturate`: the saturation search of issue 8. It keeps a
//! scenario's shape (rooms, Hz, payload) and raises the clients per room,
//! doubling from the scenario's own count while each run stays within the
//! bounds (p99 latency, loss), then bisecting between the largest count
//! within the bounds and the smallest over them, until the two are one
//! client apart. The answer is the highest delivered rate of a run within
//! the bounds.
//!
//! The stopping rule is pure ([`judge`], [`next_step`]): it sees figures and
//! counts, never a clock, so it is unit-tested on known numbers. The driver
//! ([`saturate`]) runs each step with a [`TargetRunner`]: a fresh server
//! (in process or its own process) or relay per step, unless the server is
//! an external one at `--url`.

use crate::compare::{CompareTarget, TargetRunner};
use crate::markdown::{self, MachineInfo};
use crate::report::{Report, round3};
use crate::run::{BenchConfig, run_meta};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Schema tag of the summary JSON line.
pub const SCHEMA: &str = "chorus-bench-saturation/1";

/// Fewest clients per room a step uses: with one, nobody receives.
pub const MIN_CLIENTS_PER_ROOM: u32 = 2;

/// What a run must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// Highest p99 one-way latency, ms.
    pub p99_ms: f64,
    /// Highest loss, %.
    pub loss_pct: f64,
}

/// The figures of one run that the rule judges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFigures {
    /// `None`: nothing was delivered.
    pub p99_ms: Option<f64>,
    pub loss_pct: f64,
}

impl StepFigures {
    pub fn of(report: &Report) -> StepFigures {
        StepFigures {
            p99_ms: report.latency_ms.p99,
            loss_pct: report.loss_pct,
        }
    }
}

/// Whether a run stayed within the bounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    Within,
    /// Over a bound (or the run failed), and why.
    Over(String),
}

impl Verdict {
    pub fn is_within(&self) -> bool {
        matches!(self, Verdict::Within)
    }
}

/// Judges one run: over when its p99 is above the bound, its loss above the
/// bound, or nothing was delivered; a value equal to its bound is within.
pub fn judge(f: StepFigures, bounds: Bounds) -> Verdict {
    let mut over = Vec::new();
    match f.p99_ms {
        None => over.push("nothing delivered".to_owned()),
        Some(p99) if p99 > bounds.p99_ms => {
            over.push(format!("p99 {p99:.3} ms > {} ms", bounds.p99_ms));
        }
        Some(_) => {}
    }
    if f.loss_pct > bounds.loss_pct {
        over.push(format!("loss {:.3} % > {} %", f.loss_pct, bounds.loss_pct));
    }
    if over.is_empty() {
        Verdict::Within
    } else {
        Verdict::Over(over.join(", "))
    }
}

/// What the search knows: the largest clients per room found within the
/// bounds and the smallest found over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bracket {
    pub within: Option<u32>,
    pub over: Option<u32>,
}

impl Bracket {
    /// Adds the verdict of a run with `clients` per room.
    pub fn record(&mut self, clients: u32, within: bool) {
        if within {
            self.within = Some(self.within.map_or(clients, |w| w.max(clients)));
        } else {
            self.over = Some(self.over.map_or(clients, |o| o.min(clients)));
        }
    }
}

/// Why the search stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The largest count within the bounds and the smallest over them are
    /// one client apart.
    Converged,
    /// Even [`MIN_CLIENTS_PER_ROOM`] clients per room were over the bounds.
    NoneWithinBounds,
    /// The cap on clients per room was within the bounds: the real limit is higher.
    ReachedMax,
    /// The step limit came first; the bracket is what was found.
    StepLimit,
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Converged => "converged: within and over the bounds one client apart",
            StopReason::NoneWithinBounds => "no count of clients per room was within the bounds",
            StopReason::ReachedMax => {
                "the cap on clients per room was within the bounds (--max-clients)"
            }
            StopReason::StepLimit => "step limit reached before converging (--max-steps)",
        }
    }
}

/// The next step of the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run with this many clients per room.
    Try(u32),
    Stop(StopReason),
}

/// The stopping rule. From `start` clients per room, double while within the
/// bounds (up to `max`); once a count is over, bisect between the largest
/// within (or [`MIN_CLIENTS_PER_ROOM`] − 1 when none is) and the smallest
/// over, until they are adjacent. At most `max_steps` runs in all.
pub fn next_step(bracket: Bracket, start: u32, max: u32, steps_taken: u32, max_steps: u32) -> Next {
    let max = max.max(MIN_CLIENTS_PER_ROOM);
    let start = start.clamp(MIN_CLIENTS_PER_ROOM, max);
    let next = match bracket {
        Bracket {
            within: None,
            over: None,
        } => Next::Try(start),
        Bracket {
            within: Some(w),
            over: None,
        } if w >= max => Next::Stop(StopReason::ReachedMax),
        Bracket {
            within: Some(w),
            over: None,
        } => Next::Try(w.saturating_mul(2).min(max)),
        Bracket {
            within,
            over: Some(o),
        } => {
            let low = within.unwrap_or(MIN_CLIENTS_PER_ROOM - 1);
            if o <= low + 1 {
                Next::Stop(if within.is_some() {
                    StopReason::Converged
                } else {
                    StopReason::NoneWithinBounds
                })
            } else {
                Next::Try(low + (o - low) / 2)
            }
        }
    };
    match next {
        Next::Try(_) if steps_taken >= max_steps => Next::Stop(StopReason::StepLimit),
        other => other,
    }
}

/// Settings of a search besides the scenario.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    pub bounds: Bounds,
    /// Highest clients per room tried.
    pub max_clients_per_room: u32,
    /// Most runs in all.
    pub max_steps: u32,
    /// Pause between runs.
    pub settle: Duration,
}

/// One run of the search.
#[derive(Debug, Clone)]
pub struct Step {
    pub clients_per_room: u32,
    pub verdict: Verdict,
    /// `None` when the run failed (its error is the verdict's reason).
    pub report: Option<Report>,
}

/// A finished search.
#[derive(Debug, Clone)]
pub struct Saturation {
    pub target: CompareTarget,
    /// The scenario's shape with its starting clients per room.
    pub base: BenchConfig,
    pub settings: SearchSettings,
    pub steps: Vec<Step>,
    pub bracket: Bracket,
    pub stop: StopReason,
}

/// Runs the search of `cfg`'s shape against `target`; `progress` hears each
/// step as it starts and ends. A run that fails counts as over the bounds
/// (e.g. clients that cannot connect), its error as the reason.
pub fn saturate(
    cfg: &BenchConfig,
    target: CompareTarget,
    runner: &TargetRunner,
    settings: &SearchSettings,
    mut progress: impl FnMut(&str),
) -> Saturation {
    let mut bracket = Bracket::default();
    let mut steps: Vec<Step> = Vec::new();
    let stop = loop {
        let taken = u32::try_from(steps.len()).unwrap_or(u32::MAX);
        let clients = match next_step(
            bracket,
            cfg.clients_per_room,
            settings.max_clients_per_room,
            taken,
            settings.max_steps,
        ) {
            Next::Stop(reason) => break reason,
            Next::Try(clients) => clients,
        };
        if !steps.is_empty() {
            std::thread::sleep(settings.settle);
        }
        let step_cfg = with_clients(cfg, clients);
        progress(&format!(
            "step {}: {} rooms x {clients} clients ({} connections), {:.0} deliveries/s asked",
            taken + 1,
            cfg.rooms,
            u64::from(cfg.rooms) * u64::from(clients),
            asked_deliveries_per_s(cfg.rooms, clients, cfg.hz)
        ));
        let step = match runner.run(&step_cfg, target).map(|run| run.report) {
            Ok(report) => Step {
                clients_per_room: clients,
                verdict: judge(StepFigures::of(&report), settings.bounds),
                report: Some(report),
            },
            Err(e) => Step {
                clients_per_room: clients,
                verdict: Verdict::Over(format!("run failed: {e:#}")),
                report: None,
            },
        };
        progress(&format!("step {}: {}", taken + 1, step_line(&step)));
        bracket.record(clients, step.verdict.is_within());
        steps.push(step);
    };
    Saturation {
        target,
        base: cfg.clone(),
        settings: settings.clone(),
        steps,
        bracket,
        stop,
    }
}

/// `cfg` with `clients` per room; the report then says the run is not the
/// preset's shape when the preset has another count.
fn with_clients(cfg: &BenchConfig, clients: u32) -> BenchConfig {
    let mut overrides = cfg.scenario_overrides.clone();
    overrides.retain(|&f| f != "clients_per_room");
    if cfg
        .scenario
        .is_some_and(|s| s.shape().clients_per_room != clients)
    {
        overrides.push("clients_per_room");
    }
    // In the order `scenario::resolve` lists them.
    let order = ["rooms", "clients_per_room", "hz", "payload_bytes"];
    overrides.sort_by_key(|f| order.iter().position(|o| o == f));
    BenchConfig {
        clients_per_room: clients,
        scenario_overrides: overrides,
        ..cfg.clone()
    }
}

/// `rooms × c × (c − 1) × hz`: every tick should reach the c − 1 others.
pub fn asked_deliveries_per_s(rooms: u32, clients_per_room: u32, hz: f64) -> f64 {
    let c = f64::from(clients_per_room);
    f64::from(rooms) * c * (c - 1.0).max(0.0) * hz
}

/// The step's figures in one line.
fn step_line(step: &Step) -> String {
    let verdict = match &step.verdict {
        Verdict::Within => "within bounds".to_owned(),
        Verdict::Over(why) => format!("over: {why}"),
    };
    match &step.report {
        Some(r) => format!(
            "delivered {:.1}/s, loss {:.3} %, p99 {} ms -> {verdict}",
            r.delivered_per_s,
            r.loss_pct,
            r.latency_ms
                .p99
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
        ),
        None => verdict,
    }
}

/// The summary JSON line's shape.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    schema: &'static str,
    target: &'static str,
    scenario: Option<&'static str>,
    rooms: u32,
    hz: f64,
    payload_bytes: usize,
    duration_s: f64,
    bounds: Bounds,
    steps: Vec<StepSummary<'a>>,
    /// The within-bounds step with the highest delivered rate.
    best: Option<StepSummary<'a>>,
    stop: StopReason,
    highest_within: Option<u32>,
    lowest_over: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
struct StepSummary<'a> {
    clients_per_room: u32,
    asked_deliveries_per_s: f64,
    delivered_per_s: Option<f64>,
    loss_pct: Option<f64>,
    p99_ms: Option<f64>,
    server_cpu_pct: Option<f64>,
    loadgen_cpu_pct: Option<f64>,
    #[serde(flatten)]
    verdict: &'a Verdict,
}

impl Saturation {
    /// The within-bounds step with the highest delivered rate, if any.
    pub fn best(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.verdict.is_within())
            .filter_map(|s| s.report.as_ref().map(|r| (s, r.delivered_per_s)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(s, _)| s)
    }

    fn step_summary<'a>(&self, step: &'a Step) -> StepSummary<'a> {
        let r = step.report.as_ref();
        StepSummary {
            clients_per_room: step.clients_per_room,
            asked_deliveries_per_s: round3(asked_deliveries_per_s(
                self.base.rooms,
                step.clients_per_room,
                self.base.hz,
            )),
            delivered_per_s: r.map(|r| r.delivered_per_s),
            loss_pct: r.map(|r| r.loss_pct),
            p99_ms: r.and_then(|r| r.latency_ms.p99),
            server_cpu_pct: r.and_then(|r| r.cpu.server_pct),
            loadgen_cpu_pct: r.and_then(|r| r.cpu.loadgen_pct),
            verdict: &step.verdict,
        }
    }

    /// The summary as one JSON line.
    pub fn json_line(&self) -> serde_json::Result<String> {
        let summary = Summary {
            schema: SCHEMA,
            target: self.target.name(),
            scenario: self.base.scenario.map(|s| s.name()),
            rooms: self.base.rooms,
            hz: self.base.hz,
            payload_bytes: self.base.payload_bytes,
            duration_s: self.base.duration.as_secs_f64(),
            bounds: self.settings.bounds,
            steps: self.steps.iter().map(|s| self.step_summary(s)).collect(),
            best: self.best().map(|s| self.step_summary(s)),
            stop: self.stop,
            highest_within: self.bracket.within,
            lowest_over: self.bracket.over,
        };
        serde_json::to_string(&summary)
    }

    /// The search's one-line description: shape, target, bounds.
    fn title(&self) -> String {
        let b = &self.base;
        let scenario = b
            .scenario
            .map_or_else(String::new, |sc| format!("scenario {sc} shape, "));
        format!(
            "chorus-bench saturate: {scenario}{} rooms, {} Hz, {} B payload, {} s measured per step, target {}, within p99 <= {} ms and loss <= {} %",
            b.rooms,
            b.hz,
            b.payload_bytes,
            b.duration.as_secs_f64(),
            self.target,
            self.settings.bounds.p99_ms,
            self.settings.bounds.loss_pct
        )
    }

    /// The step table's header, and one row per step (the verdict last).
    fn step_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let header = vec![
            "step",
            "clients/room",
            "connections",
            "asked/s",
            "delivered/s",
            "loss %",
            "p99 ms",
            "server CPU %",
            "loadgen CPU %",
            "verdict",
        ];
        let num = |v: Option<f64>, decimals: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
        };
        let rows = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let sum = self.step_summary(step);
                vec![
                    (i + 1).to_string(),
                    step.clients_per_room.to_string(),
                    (u64::from(self.base.rooms) * u64::from(step.clients_per_room)).to_string(),
                    format!("{:.0}", sum.asked_deliveries_per_s),
                    num(sum.delivered_per_s, 0),
                    num(sum.loss_pct, 3),
                    num(sum.p99_ms, 3),
                    num(sum.server_cpu_pct, 1),
                    num(sum.loadgen_cpu_pct, 1),
                    match &step.verdict {
                        Verdict::Within => "within".to_owned(),
                        Verdict::Over(why) => format!("over: {why}"),
                    },
                ]
            })
            .collect();
        (header, rows)
    }

    /// The answer: the best rate within the bounds, and why the search stopped.
    fn answer(&self) -> [String; 2] {
        let best = match self.best() {
            Some(step) => {
                let rate = step.report.as_ref().map_or(0.0, |r| r.delivered_per_s);
                format!(
                    "highest delivered rate within the bounds: {rate:.1}/s, at {} clients per room",
                    step.clients_per_room
                )
            }
            None => "highest delivered rate within the bounds: none".to_owned(),
        };
        let bracket = match (self.bracket.within, self.bracket.over) {
            (Some(w), Some(o)) => format!(" ({w} within, {o} over)"),
            (Some(w), None) => format!(" ({w} within)"),
            (None, Some(o)) => format!(" ({o} over)"),
            (None, None) => String::new(),
        };
        [best, format!("stopped: {}{bracket}", self.stop.describe())]
    }

    /// One row per step, then the answer.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.title());
        let (header, steps) = self.step_rows();
        let rows: Vec<Vec<String>> =
            std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
                .chain(steps)
                .collect();
        // The numbers right-aligned in their columns; the verdict as it is.
        let numbers = header.len() - 1;
        let widths: Vec<usize> = (0..numbers)
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let mut line = String::from(" ");
            for (cell, w) in row.iter().zip(&widths) {
                let _ = write!(line, " {cell:>w$}");
            }
            let _ = writeln!(s, "{line}  {}", row[numbers]);
        }
        for line in self.answer() {
            let _ = writeln!(s, "{line}");
        }
        s
    }

    /// The search as a Markdown report: the command, commit and machine,
    /// the bounds, one row per step and the answer.
    pub fn markdown(&self, command: &str, machine: &MachineInfo) -> String {
        let meta = self
            .steps
            .iter()
            .find_map(|s| s.report.as_ref().map(|r| r.meta.clone()))
            .unwrap_or_else(run_meta);
        let title = self.title();
        let mut s = markdown::header(
            title.trim_start_matches("chorus-bench saturate: "),
            command,
            &meta,
            machine,
        );
        let (header, rows) = self.step_rows();
        s.push_str("\n### Steps\n\n");
        s.push_str(&markdown::table(&header, &rows));
        s.push('\n');
        for line in self.answer() {
            let _ = writeln!(s, "{line}.  ");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        p99_ms: 100.0,
        loss_pct: 1.0,
    };

    fn figures(p99_ms: Option<f64>, loss_pct: f64) -> StepFigures {
        StepFigures { p99_ms, loss_pct }
    }

    #[test]
    fn judge_checks_both_bounds_inclusively() {
        assert_eq!(judge(figures(Some(3.0), 0.0), BOUNDS), Verdict::Within);
        assert_eq!(judge(figures(Some(100.0), 1.0), BOUNDS), Verdict::Within);
        assert_eq!(
            judge(figures(Some(100.5), 0.0), BOUNDS),
            Verdict::Over("p99 100.500 ms > 100 ms".into())
        );
        assert_eq!(
            judge(figures(Some(1.0), 1.001), BOUNDS),
            Verdict::Over("loss 1.001 % > 1 %".into())
        );
        assert_eq!(
            judge(figures(Some(250.0), 20.0), BOUNDS),
            Verdict::Over("p99 250.000 ms > 100 ms, loss 20.000 % > 1 %".into())
        );
        assert_eq!(
            judge(figures(None, 0.0), BOUNDS),
            Verdict::Over("nothing delivered".into())
        );
    }

    /// The counts the rule tries for a system whose limit is `limit`
    /// clients per room (within up to it, over above it).
    fn search(limit: u32, start: u32, max: u32, max_steps: u32) -> (Vec<u32>, Bracket, StopReason) {
        let mut bracket = Bracket::default();
        let mut tried = Vec::new();
        loop {
            let taken = u32::try_from(tried.len()).expect("few steps");
            match next_step(bracket, start, max, taken, max_steps) {
                Next::Stop(reason) => return (tried, bracket, reason),
                Next::Try(c) => {
                    assert!(!tried.contains(&c), "{c} tried twice: {tried:?}");
                    tried.push(c);
                    bracket.record(c, c <= limit);
                }
            }
        }
    }

    #[test]
    fn doubles_then_bisects_to_adjacent_counts() {
        // S2's 10 per room, a limit of 27: 10, 20, 40 over, then 30, 25, 27, 28.
        let (tried, bracket, stop) = search(27, 10, 1000, 50);
        assert_eq!(tried, [10, 20, 40, 30, 25, 27, 28]);
        assert_eq!(
            bracket,
            Bracket {
                within: Some(27),
                over: Some(28)
            }
        );
        assert_eq!(stop, StopReason::Converged);
        // The limit right at a doubling.
        let (tried, bracket, _) = search(20, 10, 1000, 50);
        assert_eq!(tried, [10, 20, 40, 30, 25, 22, 21]);
        assert_eq!(bracket.within, Some(20));
        assert_eq!(bracket.over, Some(21));
    }

    #[test]
    fn a_start_over_the_bounds_bisects_downwards() {
        // The relays on S2: 10 per room is already too much.
        let (tried, bracket, stop) = search(6, 10, 1000, 50);
        assert_eq!(tried, [10, 5, 7, 6]);
        assert_eq!((bracket.within, bracket.over), (Some(6), Some(7)));
        assert_eq!(stop, StopReason::Converged);
        // Nothing within: down to 2 clients, then stop.
        let (tried, bracket, stop) = search(1, 10, 1000, 50);
        assert_eq!(tried, [10, 5, 3, 2]);
        assert_eq!((bracket.within, bracket.over), (None, Some(2)));
        assert_eq!(stop, StopReason::NoneWithinBounds);
    }

    #[test]
    fn the_cap_and_the_step_limit_stop_the_search() {
        let (tried, _, stop) = search(u32::MAX, 10, 64, 50);
        assert_eq!(tried, [10, 20, 40, 64]);
        assert_eq!(stop, StopReason::ReachedMax);
        let (tried, bracket, stop) = search(27, 10, 1000, 4);
        assert_eq!(tried, [10, 20, 40, 30]);
        assert_eq!(stop, StopReason::StepLimit);
        assert_eq!((bracket.within, bracket.over), (Some(20), Some(30)));
        // A start of 1 (or 0) begins at the smallest useful room.
        let (tried, _, _) = search(3, 1, 1000, 50);
        assert_eq!(tried[0], MIN_CLIENTS_PER_ROOM);
        assert_eq!(next_step(Bracket::default(), 10, 4, 0, 50), Next::Try(4));
        assert_eq!(
            next_step(Bracket::default(), 10, 100, 0, 0),
            Next::Stop(StopReason::StepLimit)
        );
    }

    /// S2's shape, 10 s per step, with `hz` overridden (to the same value).
    fn base() -> BenchConfig {
        BenchConfig {
            hz: 30.0,
            duration: Duration::from_secs(10),
            scenario: Some(crate::scenario::Scenario::S2),
            scenario_overrides: vec!["hz"],
            ..BenchConfig::small(50, 10)
        }
    }

    #[test]
    fn steps_off_the_presets_count_are_named_overrides() {
        let c = with_clients(&base(), 20);
        assert_eq!(c.clients_per_room, 20);
        assert_eq!(c.scenario_overrides, ["clients_per_room", "hz"]);
        let c = with_clients(&c, 10);
        assert_eq!(c.scenario_overrides, ["hz"]);
    }

    #[test]
    fn summary_line_and_table_of_failed_steps() {
        let search = Saturation {
            target: CompareTarget::WsRelay,
            base: base(),
            settings: SearchSettings {
                bounds: BOUNDS,
                max_clients_per_room: 512,
                max_steps: 16,
                settle: Duration::ZERO,
            },
            steps: vec![Step {
                clients_per_room: 10,
                verdict: Verdict::Over("run failed: no node".into()),
                report: None,
            }],
            bracket: Bracket {
                within: None,
                over: Some(2),
            },
            stop: StopReason::NoneWithinBounds,
        };
        assert!(search.best().is_none());
        let v: serde_json::Value =
            serde_json::from_str(&search.json_line().expect("serializes")).expect("JSON");
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["target"], "ws-relay");
        assert_eq!(v["scenario"], "s2");
        assert_eq!(v["bounds"]["p99_ms"], 100.0);
        assert_eq!(v["stop"], "none_within_bounds");
        assert!(v["best"].is_null());
        assert_eq!(v["lowest_over"], 2);
        let step = &v["steps"][0];
        assert_eq!(step["clients_per_room"], 10);
        assert_eq!(step["asked_deliveries_per_s"], 135_000.0);
        assert!(step["delivered_per_s"].is_null());
        assert_eq!(step["verdict"], "over");
        assert_eq!(step["reason"], "run failed: no node");
        let table = search.table();
        assert!(table.contains("target ws-relay"), "{table}");
        assert!(table.contains("over: run failed: no node"), "{table}");
        assert!(table.contains("within the bounds: none"), "{table}");
        assert!(table.contains("stopped: no count"), "{table}");
        let md = search.markdown(
            "chorus-bench saturate --scenario s2",
            &MachineInfo::default(),
        );
        assert!(md.starts_with("## scenario s2 shape, 50 rooms"), "{md}");
        assert!(md.contains("chorus-bench saturate --scenario s2\n"), "{md}");
        assert!(
            md.contains(
                "| 1 | 10 | 500 | 135000 | - | - | - | - | - | over: run failed: no node |"
            ),
            "{md}"
        );
        assert!(md.contains("within the bounds: none"), "{md}");
    }

    #[test]
    fn asked_rate_counts_the_other_members() {
        // S2: 50 rooms x 10 clients at 30 Hz.
        assert_eq!(asked_deliveries_per_s(50, 10, 30.0), 135_000.0);
        assert_eq!(asked_deliveries_per_s(4, 50, 30.0), 294_000.0);
        assert_eq!(asked_deliveries_per_s(3, 1, 30.0), 0.0);
    }
}
