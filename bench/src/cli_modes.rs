//! The `compare` and `saturate` subcommands of the `chorus-bench` binary
//! (a module of `main.rs`, not of the library): their flags, and how their
//! results are printed. The work is in the library's
//! [`chorus_bench::compare`] and [`chorus_bench::saturation`].
//!
//! Both take every scenario and run flag of a plain run (`--scenario`,
//! `--rooms`, `--duration`, `--url`, `--json-out`, …) after the subcommand's
//! name, except `--transport`: the targets choose the transport.

use super::{RunFlags, TransportArg, config, print_reports, print_table_and_lines};
use anyhow::{Context, Result, bail};
use chorus_bench::baselines::LaunchOptions;
use chorus_bench::compare::{self, CompareTarget};
use chorus_bench::report::Report;
use chorus_bench::run::BenchConfig;
use chorus_bench::saturation::{self, Bounds, SearchSettings};
use clap::Args;
use std::ffi::OsString;
use std::time::Duration;

/// `chorus-bench compare`.
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    #[command(flatten)]
    run: RunFlags,
    /// The targets, in the order they run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = CompareTarget::ALL)]
    targets: Vec<CompareTarget>,
    /// Pause between two runs, ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// The Node.js program that runs the relays.
    #[arg(long, default_value = "node")]
    node: OsString,
}

/// `chorus-bench saturate`.
#[derive(Debug, Args)]
pub(crate) struct SaturateArgs {
    #[command(flatten)]
    run: RunFlags,
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
    /// Pause between two runs, ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// The Node.js program that runs the relays.
    #[arg(long, default_value = "node")]
    node: OsString,
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

fn launch_options(node: &OsString) -> LaunchOptions {
    LaunchOptions {
        node: node.clone(),
        ..LaunchOptions::default()
    }
}

/// `chorus-bench compare`: runs, prints, and fails if any target failed.
pub(crate) fn compare(args: &CompareArgs) -> Result<()> {
    if args.targets.is_empty() {
        bail!("--targets names no target");
    }
    let cfg = target_config(&args.run, &args.targets, "--targets")?;
    let done = compare::compare(
        &cfg,
        &args.targets,
        &launch_options(&args.node),
        Duration::from_millis(args.settle_ms),
        |msg| eprintln!("chorus-bench compare: {msg}"),
    );
    // Whatever completed is printed, even if some target failed.
    print_reports(&args.run, &done.reports)?;
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
pub(crate) fn saturate(args: &SaturateArgs) -> Result<()> {
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
        settle: Duration::from_millis(args.settle_ms),
    };
    let search = saturation::saturate(
        &cfg,
        args.target,
        &launch_options(&args.node),
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
    print_table_and_lines(&args.run, &search.table(), &lines)
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
