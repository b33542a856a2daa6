//! The `compare` and `saturate` subcommands of the `chorus-bench` binary
//! (a module of `main.rs`, not of the library): their flags, and how their
//! results are printed. The work is in the library's
//! [`chorus_bench::compare`] and [`chorus_bench::saturation`].
//!
//! Both take every scenario and run flag of a plain run (`--scenario`,
//! `--rooms`, `--duration`, `--url`, `--json-out`, `--report-md`, …) after
//! the subcommand's name, except `--transport`: the targets choose the
//! transport. Both show a progress bar per run, and start Chorus as its own
//! process with `--chorus-bin` ([`TargetFlags`]).

use super::{
    RunFlags, TransportArg, config, print_reports, print_table_and_lines, write_report_files,
};
use anyhow::{Context, Result, bail};
use chorus_bench::baselines::LaunchOptions;
use chorus_bench::chorus_process::ChorusLaunch;
use chorus_bench::compare::{self, CompareTarget, TargetRunner};
use chorus_bench::markdown::MachineInfo;
use chorus_bench::progress;
use chorus_bench::report::Report;
use chorus_bench::run::BenchConfig;
use chorus_bench::saturation::{self, Bounds, SearchSettings};
use clap::Args;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// How the targets of both subcommands are started.
#[derive(Debug, Args)]
pub(crate) struct TargetFlags {
    /// Start Chorus from this binary (e.g. target/release/chorus) as its own
    /// process for each Chorus run, with the load's limits, so that its CPU
    /// and peak RSS are its own, sampled from /proc as the relays' are.
    /// Without it Chorus runs in the bench process, whose memory figure then
    /// holds every client too.
    #[arg(long, conflicts_with = "url")]
    chorus_bin: Option<PathBuf>,
    /// One more flag for the --chorus-bin server, repeated for each word
    /// (e.g. --chorus-arg=--tick-coalesce-ms --chorus-arg=2).
    #[arg(long, requires = "chorus_bin", allow_hyphen_values = true)]
    chorus_arg: Vec<OsString>,
    /// Pause between two runs, ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// The Node.js program that runs the relays.
    #[arg(long, default_value = "node")]
    node: OsString,
}

impl TargetFlags {
    fn runner(&self, quiet: bool) -> TargetRunner {
        TargetRunner {
            launch: LaunchOptions {
                node: self.node.clone(),
                ..LaunchOptions::default()
            },
            chorus: self
                .chorus_bin
                .clone()
                .map(|bin| ChorusLaunch::new(bin, self.chorus_arg.clone())),
            show_progress: progress::visible(quiet),
        }
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

/// `chorus-bench compare`.
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    start: TargetFlags,
    /// The targets, in the order they run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = CompareTarget::ALL)]
    targets: Vec<CompareTarget>,
}

/// `chorus-bench saturate`.
#[derive(Debug, Args)]
pub(crate) struct SaturateArgs {
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    start: TargetFlags,
    /// What to load.
    #[arg(long, value_enum, default_value_t = CompareTarget::ChorusWt)]
    target: CompareTarget,
    /// A step is within the bounds while its p99 latency is at most this, ms.
    #[arg(long, default_value_t = 100.0)]
    p99_bound_ms: f64,
    /// A step is within the bounds while its loss is at most this, %.
    #[arg(long, default_value_t = 1.0)]
    loss_bound_pct: f64,
    /// Most clients per room tried.
    #[arg(long, default_value_t = 512)]
    max_clients: u32,
    /// Most runs in all.
    #[arg(long, default_value_t = 16)]
    max_steps: u32,
}

/// The shared part of both subcommands' checks: the configuration, without
/// `--transport`, and no reliable loads when a relay is among the targets.
fn target_config(
    flags: &RunFlags,
    targets: &[CompareTarget],
    chooser: &str,
) -> Result<BenchConfig> {
    if flags.transport != TransportArg::Webtransport {
        bail!(
            "--transport does not apply here: {chooser} chooses the targets and their transports"
        );
    }
    let cfg = config(flags)?;
    if (cfg.state_rate > 0.0 || cfg.command_rate > 0.0)
        && targets.iter().any(|t| t.relay().is_some())
    {
        bail!(
            "--state-rate and --command-rate need Chorus targets: the baseline relays carry ticks only"
        );
    }
    Ok(cfg)
}

/// `chorus-bench compare`: runs, prints, and fails if any target failed.
pub(crate) fn compare(args: &CompareArgs, quiet: bool, command_line: &str) -> Result<()> {
    if args.targets.is_empty() {
        bail!("--targets names no target");
    }
    let cfg = target_config(&args.run, &args.targets, "--targets")?;
    let done = compare::compare(
        &cfg,
        &args.targets,
        &args.start.runner(quiet),
        args.start.settle(),
        |msg| eprintln!("chorus-bench compare: {msg}"),
    );
    // Whatever completed is printed, even if some target failed.
    print_reports(&args.run, &done.reports)?;
    write_report_files(&args.run, &done.reports, &done.series, command_line)?;
    if !done.failures.is_empty() {
        let failed: Vec<String> = done
            .failures
            .iter()
            .map(|(target, e)| format!("{target}: {e:#}"))
            .collect();
        bail!(
            "{} of {} targets failed:\n  {}",
            failed.len(),
            args.targets.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// `chorus-bench saturate`: searches, prints the steps and the answer.
pub(crate) fn saturate(args: &SaturateArgs, quiet: bool, command_line: &str) -> Result<()> {
    if args.run.plots.is_some() {
        bail!("--plots is for runs and comparisons; a search writes its steps with --report-md");
    }
    let cfg = target_config(&args.run, &[args.target], "--target")?;
    for (flag, v) in [
        ("p99-bound-ms", args.p99_bound_ms),
        ("loss-bound-pct", args.loss_bound_pct),
    ] {
        if !v.is_finite() || v < 0.0 {
            bail!("--{flag} must be a number >= 0, got {v}");
        }
    }
    let settings = SearchSettings {
        bounds: Bounds {
            p99_ms: args.p99_bound_ms,
            loss_pct: args.loss_bound_pct,
        },
        max_clients_per_room: args.max_clients,
        max_steps: args.max_steps,
        settle: args.start.settle(),
    };
    let search = saturation::saturate(
        &cfg,
        args.target,
        &args.start.runner(quiet),
        &settings,
        |msg| eprintln!("chorus-bench saturate: {msg}"),
    );
    let mut lines = search
        .steps
        .iter()
        .filter_map(|s| s.report.as_ref())
        .map(Report::json_line)
        .collect::<Result<Vec<_>, _>>()
        .context("serializing a step's report")?;
    lines.push(search.json_line().context("serializing the search")?);
    print_table_and_lines(&args.run, &search.table(), &lines)?;
    if let Some(path) = &args.run.report_md {
        let md = search.markdown(command_line, &MachineInfo::probe());
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BenchCommand, Cli};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("chorus-bench").chain(args.iter().copied()))
    }

    #[test]
    fn compare_takes_the_scenario_flags_and_a_subset_of_targets() {
        let cli = parse(&["compare", "--scenario", "s1", "--duration", "10"]).expect("parses");
        let Some(BenchCommand::Compare(args)) = &cli.command else {
            panic!("compare: {cli:?}");
        };
        assert_eq!(args.targets, CompareTarget::ALL);
        let cfg = target_config(&args.run, &args.targets, "--targets").expect("valid");
        assert_eq!((cfg.rooms, cfg.clients_per_room), (10, 5));
        assert_eq!(cfg.duration, Duration::from_secs(10));

        let cli =
            parse(&["compare", "--targets", "ws-relay,chorus-wt", "--rooms", "2"]).expect("parses");
        let Some(BenchCommand::Compare(args)) = &cli.command else {
            panic!("compare");
        };
        assert_eq!(
            args.targets,
            [CompareTarget::WsRelay, CompareTarget::ChorusWt]
        );
        assert!(parse(&["compare", "--targets", "colyseus"]).is_err());
        // Scenario flags go after the subcommand, not before it.
        assert!(parse(&["--rooms", "2", "compare"]).is_err());
        // The targets choose the transport; relays take no reliable load.
        let cli = parse(&["compare", "--transport", "websocket"]).expect("parses");
        let Some(BenchCommand::Compare(args)) = &cli.command else {
            panic!("compare");
        };
        assert!(target_config(&args.run, &args.targets, "--targets").is_err());
        let cli = parse(&["compare", "--state-rate", "5"]).expect("parses");
        let Some(BenchCommand::Compare(args)) = &cli.command else {
            panic!("compare");
        };
        let err = target_config(&args.run, &args.targets, "--targets").expect_err("relays");
        assert!(err.to_string().contains("ticks only"), "{err}");
        assert!(target_config(&args.run, &[CompareTarget::ChorusWs], "--targets").is_ok());
        // Chorus as its own process, with flags of its own; not with --url.
        let cli = parse(&[
            "compare",
            "--chorus-bin",
            "target/release/chorus",
            "--chorus-arg=--tick-coalesce-ms",
            "--chorus-arg",
            "2",
            "--report-md",
            "out.md",
        ])
        .expect("parses");
        let Some(BenchCommand::Compare(args)) = &cli.command else {
            panic!("compare");
        };
        let runner = args.start.runner(true);
        let launch = runner.chorus.expect("a Chorus process");
        assert_eq!(launch.bin, PathBuf::from("target/release/chorus"));
        assert_eq!(launch.extra_args, ["--tick-coalesce-ms", "2"]);
        assert!(!runner.show_progress);
        assert_eq!(args.run.report_md, Some(PathBuf::from("out.md")));
        assert!(parse(&["compare", "--chorus-arg", "x"]).is_err());
        let both = parse(&[
            "compare",
            "--chorus-bin",
            "chorus",
            "--url",
            "https://127.0.0.1:4433/chorus",
            "--cert-hash",
            "00",
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn saturate_has_the_bounds_of_issue_8_by_default() {
        let cli = parse(&["saturate", "--scenario", "s2"]).expect("parses");
        let Some(BenchCommand::Saturate(args)) = &cli.command else {
            panic!("saturate: {cli:?}");
        };
        assert_eq!(args.target, CompareTarget::ChorusWt);
        assert_eq!((args.p99_bound_ms, args.loss_bound_pct), (100.0, 1.0));
        let cli = parse(&[
            "saturate",
            "--scenario",
            "s2",
            "--target",
            "socketio-relay",
            "--p99-bound-ms",
            "50",
            "--loss-bound-pct",
            "0.1",
        ])
        .expect("parses");
        let Some(BenchCommand::Saturate(args)) = &cli.command else {
            panic!("saturate");
        };
        assert_eq!(args.target, CompareTarget::SocketioRelay);
        assert_eq!((args.p99_bound_ms, args.loss_bound_pct), (50.0, 0.1));
        let cfg = target_config(&args.run, &[args.target], "--target").expect("valid");
        assert_eq!((cfg.rooms, cfg.clients_per_room), (50, 10));
        // A plain run still parses as before.
        let cli = parse(&["--rooms", "3"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.run.rooms, Some(3));
    }
}
