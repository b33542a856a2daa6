//! `chorus-bench`: load and latency bench for Chorus.
//!
//! ```text
//! cargo run --release -p chorus-bench -- --rooms 10 --clients 5 --hz 30 --duration 20
//! ```
//!
//! Prints a table, then one JSON line per run (also appended to `--json-out`).
//! `--transport both` runs the scenario once per transport and prints the two
//! side by side. `--scenario s1..s5` picks a preset shape (explicit shape
//! flags win over it); `--state-rate` and `--command-rate` add the reliable
//! loads. `--report-md` and `--plots` write a Markdown report and SVG plots
//! of the runs. Subcommands ([`cli_modes`] and the library): `compare` runs
//! one scenario against Chorus and the Node.js baseline relays, `saturate`
//! searches for the highest load within a latency and loss bound, `storm` is
//! a join storm and `idle` measures memory per idle connection.

use anyhow::{Context, Result, bail};
use chorus_bench::live::{RunProbe, RunSeries};
use chorus_bench::report::{Report, side_by_side};
use chorus_bench::run::{BenchConfig, Target, run_probed};
use chorus_bench::scenario::{self, Scenario, ShapeFlags};
use chorus_bench::transports::TransportMix;
use chorus_bench::{idle, markdown, payload, plots, progress, storm};
use clap::{Args, Parser, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod cli_modes;

/// What `--transport` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    /// Every client on WebTransport.
    Webtransport,
    /// Every client on WebSocket.
    Websocket,
    /// Two runs of the same scenario, WebTransport then WebSocket.
    Both,
    /// Half of each room's clients on each transport (even in-room indices on
    /// WebTransport), latency also reported per sender -> receiver transport.
    Mixed,
}

impl TransportArg {
    fn runs(self) -> Vec<TransportMix> {
        match self {
            TransportArg::Webtransport => vec![TransportMix::WebTransport],
            TransportArg::Websocket => vec![TransportMix::WebSocket],
            TransportArg::Both => vec![TransportMix::WebTransport, TransportMix::WebSocket],
            TransportArg::Mixed => vec![TransportMix::Mixed],
        }
    }
}

/// What `--scenario` asks for (issue 8's presets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    /// 10 rooms x 5 clients at 30 Hz.
    S1,
    /// 50 rooms x 10 clients at 30 Hz.
    S2,
    /// 4 rooms x 50 clients at 30 Hz (dense rooms).
    S3,
    /// 20 rooms x 8 clients at 60 Hz.
    S4,
    /// 500 rooms x 4 clients at 20 Hz (2000 connections).
    S5,
}

impl From<ScenarioArg> for Scenario {
    fn from(arg: ScenarioArg) -> Scenario {
        match arg {
            ScenarioArg::S1 => Scenario::S1,
            ScenarioArg::S2 => Scenario::S2,
            ScenarioArg::S3 => Scenario::S3,
            ScenarioArg::S4 => Scenario::S4,
            ScenarioArg::S5 => Scenario::S5,
        }
    }
}

/// Pause between the runs of `--transport both`, so that the first run's
/// sessions are gone from the server before the second connects.
const SETTLE_BETWEEN_RUNS: Duration = Duration::from_secs(1);

/// Load and latency bench for Chorus: R rooms x C clients send P-byte ticks at
/// H Hz, and optionally state updates and commands at N per second per room,
/// through a real server over WebTransport and/or WebSocket (in process by
/// default).
#[derive(Debug, Parser)]
#[command(name = "chorus-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(flatten)]
    run: RunFlags,
}

/// The scenario and run flags, of a plain run and of the compare and
/// saturate subcommands.
#[derive(Debug, Args)]
struct RunFlags {
    /// A preset shape of issue 8, with 48-byte payloads; --rooms, --clients,
    /// --hz and --payload-bytes given explicitly override it.
    #[arg(long, value_enum)]
    scenario: Option<ScenarioArg>,
    /// Rooms (`bench-<transport>-0` ..). Default: the scenario's, else 10.
    #[arg(long)]
    rooms: Option<u32>,
    /// Clients per room; each has its own connection. Default: the
    /// scenario's, else 5.
    #[arg(long)]
    clients: Option<u32>,
    /// Ticks per second per client; 0 sends no ticks (e.g. a state load
    /// alone). Default: the scenario's, else 30.
    #[arg(long)]
    hz: Option<f64>,
    /// Tick payload size; at least 16 (the bench header). Default: 48.
    #[arg(long)]
    payload_bytes: Option<usize>,
    /// State updates (`SetState`) per second per room, round-robin over the
    /// room's clients; ack and fan-out latency are measured. 0: none.
    #[arg(long, default_value_t = 0.0)]
    state_rate: f64,
    /// Commands per second per room, round-robin over the room's clients;
    /// ack and fan-out latency are measured. 0: none.
    #[arg(long, default_value_t = 0.0)]
    command_rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before the measured window, excluded from the figures.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// After the window, how long receivers wait for ticks and change events
    /// still in flight, and senders for acks; later ones count as lost or
    /// unanswered.
    #[arg(long, default_value_t = 500)]
    drain_ms: u64,
    /// Seed for payload padding and the order of the send stagger.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Which transport the clients use: webtransport, websocket, both (one run
    /// each, side by side) or mixed (both in every room).
    #[arg(long, value_enum, default_value_t = TransportArg::Webtransport)]
    transport: TransportArg,
    /// Target an external server at this URL (`https://`) instead of starting
    /// one in process.
    #[arg(long, requires = "cert_hash")]
    url: Option<String>,
    /// With --url: the server's WebSocket URL (`ws://` or `wss://`). Default:
    /// --url with `ws://` (`wss://` with --ws-tls).
    #[arg(long, requires = "url")]
    ws_url: Option<String>,
    /// WebSocket over TLS (`wss://`, trusting the server's certificate hash)
    /// instead of plain `ws://`.
    #[arg(long)]
    ws_tls: bool,
    /// SHA-256 of the external server's certificate (hex, `:` allowed).
    #[arg(long, requires = "url")]
    cert_hash: Option<String>,
    /// With --url: sample this process's CPU and peak RSS from /proc.
    #[arg(long, requires = "url")]
    server_pid: Option<u32>,
    /// Also append the JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Write a Markdown report of the run(s) to this file: parameters,
    /// commit, machine and the figures, one column per run.
    #[arg(long)]
    report_md: Option<PathBuf>,
    /// Write SVG plots into this directory: latency CDF per run and ticks
    /// received per second over time.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// The SDK's per-room tick receive buffer (newest-wins).
    #[arg(long, default_value_t = 64)]
    tick_capacity: usize,
    /// WebTransport clients: incoming datagram bytes quinn buffers per
    /// connection before dropping the oldest (the SDK's
    /// `datagram_receive_buffer_bytes`). Default: the SDK's (64 KiB).
    #[arg(long)]
    datagram_receive_buffer_bytes: Option<usize>,
    /// WebTransport clients share this many QUIC endpoints (UDP sockets),
    /// round-robin, so the load generator reads many connections' packets per
    /// system call; 0: each client has its own, as an app does.
    #[arg(long, default_value_t = 0)]
    client_endpoints: usize,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Worker threads of the in-process server runtime (`chorus-server`).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the client runtime (`bench-client`).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Where the in-process server keeps its development certificate.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
}

/// The tests beside the load run.
#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Join storm: N clients connect and join rooms at R per second (open
    /// loop); connect + join latency, failures by code, server CPU and RSS.
    Storm(storm::StormArgs),
    /// Idle connections: N connections joined to rooms and left idle; RSS
    /// per connection, per transport.
    Idle(idle::IdleArgs),
    /// Runs one scenario against Chorus over WebTransport and over WebSocket,
    /// and against the Node.js ws and Socket.IO relays (started with node),
    /// one after the other, and prints them side by side.
    Compare(cli_modes::CompareArgs),
    /// Keeps a scenario's shape (rooms, Hz, payload) and raises the clients
    /// per room until p99 or loss goes over its bound; reports each step and
    /// the highest delivered rate within the bounds.
    Saturate(cli_modes::SaturateArgs),
}

fn seconds(name: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} {v} is not a valid duration"))
}

/// One configuration per run.
fn configs(cli: &RunFlags) -> Result<Vec<BenchConfig>> {
    let base = config(cli)?;
    Ok(cli
        .transport
        .runs()
        .into_iter()
        .map(|transport| BenchConfig {
            transport,
            ..base.clone()
        })
        .collect())
}

/// The configuration of the first run.
fn config(cli: &RunFlags) -> Result<BenchConfig> {
    let resolved = scenario::resolve(
        cli.scenario.map(Scenario::from),
        ShapeFlags {
            rooms: cli.rooms,
            clients_per_room: cli.clients,
            hz: cli.hz,
            payload_bytes: cli.payload_bytes,
        },
    );
    let shape = resolved.shape;
    payload::check_size(shape.payload_bytes, usize::MAX)?;
    let target = match (&cli.url, &cli.cert_hash) {
        (Some(url), Some(hash)) => Target::External {
            url: url.clone(),
            ws_url: cli.ws_url.clone(),
            cert_hash: chorus_client::Trust::parse_hash(hash)
                .context("--cert-hash must be 64 hex digits")?,
            server_pid: cli.server_pid,
        },
        (None, None) => Target::InProcess {
            cert_dir: cli
                .cert_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("chorus-bench-certs")),
        },
        _ => bail!("--url and --cert-hash go together"),
    };
    Ok(BenchConfig {
        rooms: shape.rooms,
        clients_per_room: shape.clients_per_room,
        hz: shape.hz,
        payload_bytes: shape.payload_bytes,
        duration: seconds("duration", cli.duration)?,
        warmup: seconds("warmup", cli.warmup)?,
        drain: Duration::from_millis(cli.drain_ms),
        seed: cli.seed,
        tick_capacity: cli.tick_capacity,
        datagram_receive_buffer_bytes: cli.datagram_receive_buffer_bytes,
        client_endpoints: cli.client_endpoints,
        connect_concurrency: cli.connect_concurrency,
        server_threads: cli.server_threads,
        client_threads: cli.client_threads,
        target,
        transport: cli.transport.runs()[0],
        ws_tls: cli.ws_tls,
        state_rate: cli.state_rate,
        command_rate: cli.command_rate,
        scenario: resolved.scenario,
        scenario_overrides: resolved.overrides,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match real_main(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chorus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: &Cli) -> Result<()> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    match &cli.command {
        Some(BenchCommand::Storm(args)) => return storm::main(args, cli.quiet, &command_line),
        Some(BenchCommand::Idle(args)) => return idle::main(args, cli.quiet, &command_line),
        Some(BenchCommand::Compare(args)) => {
            return cli_modes::compare(args, cli.quiet, &command_line);
        }
        Some(BenchCommand::Saturate(args)) => {
            return cli_modes::saturate(args, cli.quiet, &command_line);
        }
        None => {}
    }
    let configs = configs(&cli.run)?;
    let mut reports = Vec::with_capacity(configs.len());
    let mut series = Vec::with_capacity(configs.len());
    let mut failure = None;
    let show_progress = progress::visible(cli.quiet);
    for (i, cfg) in configs.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(SETTLE_BETWEEN_RUNS);
        }
        let probe = Arc::new(RunProbe::new(cfg.total_clients(), cfg.clients_per_room));
        let bar = progress::RunProgress::start(show_progress, cfg.transport.name(), probe.clone());
        let outcome = run_probed(cfg, &probe).with_context(|| format!("{} run", cfg.transport));
        bar.finish();
        match outcome {
            Ok(out) => {
                reports.push(out.report);
                series.push(out.series);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // Whatever completed is printed, even if a later run failed.
    print_reports(&cli.run, &reports)?;
    write_report_files(&cli.run, &reports, &series, &command_line)?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_reports(cli: &RunFlags, reports: &[Report]) -> Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    let lines = reports
        .iter()
        .map(Report::json_line)
        .collect::<Result<Vec<_>, _>>()
        .context("serializing the report")?;
    print_table_and_lines(cli, &side_by_side(reports), &lines)
}

/// Prints `table`, then `lines` (JSON), also appending them to `--json-out`.
fn print_table_and_lines(cli: &RunFlags, table: &str, lines: &[String]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "{table}")?;
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    chorus_bench::report::append_json_lines(cli.json_out.as_deref(), lines)
}

/// The Markdown report and the plots, when asked for.
fn write_report_files(
    cli: &RunFlags,
    reports: &[Report],
    series: &[RunSeries],
    command_line: &str,
) -> Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    if let Some(path) = &cli.report_md {
        let md = markdown::run_report(reports, command_line, &markdown::MachineInfo::probe());
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &cli.plots {
        for file in plots::write_plots(dir, series)? {
            eprintln!("chorus-bench: wrote {}", file.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed_and_checks_its_arguments() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["chorus-bench", "--payload-bytes", "8"]).expect("parses");
        let err = config(&cli.run).expect_err("8 bytes is under the header");
        assert!(err.to_string().contains("too small"), "{err}");
        let cli = Cli::try_parse_from(["chorus-bench", "--rooms", "3", "--clients", "4"])
            .expect("parses");
        let cfg = config(&cli.run).expect("valid");
        assert_eq!((cfg.rooms, cfg.clients_per_room), (3, 4));
        assert!(matches!(cfg.target, Target::InProcess { .. }));
        assert!(Cli::try_parse_from(["chorus-bench", "--url", "https://x/chorus"]).is_err());
        let cli = Cli::try_parse_from([
            "chorus-bench",
            "--url",
            "https://127.0.0.1:4433/chorus",
            "--cert-hash",
            &"ab".repeat(32),
            "--server-pid",
            "1",
        ])
        .expect("parses");
        assert!(matches!(
            config(&cli.run).expect("valid").target,
            Target::External {
                server_pid: Some(1),
                ws_url: None,
                ..
            }
        ));
    }

    fn parse(args: &[&str]) -> BenchConfig {
        let cli = Cli::try_parse_from(std::iter::once("chorus-bench").chain(args.iter().copied()))
            .expect("parses");
        config(&cli.run).expect("valid")
    }

    #[test]
    fn scenario_presets_resolve_and_flags_override_them() {
        let shape = |c: &BenchConfig| (c.rooms, c.clients_per_room, c.hz, c.payload_bytes);
        // No preset: S1's shape, unnamed.
        let c = parse(&[]);
        assert_eq!(shape(&c), (10, 5, 30.0, 48));
        assert_eq!(c.scenario, None);
        let c = parse(&["--scenario", "s2"]);
        assert_eq!(shape(&c), (50, 10, 30.0, 48));
        assert_eq!(c.scenario, Some(Scenario::S2));
        assert!(c.scenario_overrides.is_empty());
        assert_eq!(shape(&parse(&["--scenario", "s3"])), (4, 50, 30.0, 48));
        assert_eq!(shape(&parse(&["--scenario", "s4"])), (20, 8, 60.0, 48));
        assert_eq!(shape(&parse(&["--scenario", "s5"])), (500, 4, 20.0, 48));
        // Explicit flags win, whatever their order, and are named.
        let c = parse(&["--clients", "3", "--scenario", "s5", "--hz", "0"]);
        assert_eq!(shape(&c), (500, 3, 0.0, 48));
        assert_eq!(c.scenario, Some(Scenario::S5));
        assert_eq!(c.scenario_overrides, ["clients_per_room", "hz"]);
        assert!(Cli::try_parse_from(["chorus-bench", "--scenario", "s6"]).is_err());
    }

    #[test]
    fn reliable_load_flags_reach_the_config() {
        let c = parse(&["--scenario", "s2", "--state-rate", "20"]);
        assert_eq!((c.state_rate, c.command_rate), (20.0, 0.0));
        let c = parse(&["--command-rate", "2.5", "--hz", "0"]);
        assert_eq!((c.state_rate, c.command_rate, c.hz), (0.0, 2.5, 0.0));
        // Off by default.
        let c = parse(&[]);
        assert_eq!((c.state_rate, c.command_rate), (0.0, 0.0));
    }

    #[test]
    fn transport_flag_gives_one_config_per_run() {
        let mixes = |args: &[&str]| -> Vec<TransportMix> {
            let cli =
                Cli::try_parse_from(std::iter::once("chorus-bench").chain(args.iter().copied()))
                    .expect("parses");
            configs(&cli.run)
                .expect("valid")
                .into_iter()
                .map(|c| c.transport)
                .collect()
        };
        assert_eq!(mixes(&[]), [TransportMix::WebTransport]);
        assert_eq!(
            mixes(&["--transport", "websocket"]),
            [TransportMix::WebSocket]
        );
        assert_eq!(mixes(&["--transport", "mixed"]), [TransportMix::Mixed]);
        assert_eq!(
            mixes(&["--transport", "both", "--rooms", "3"]),
            [TransportMix::WebTransport, TransportMix::WebSocket]
        );
        assert!(Cli::try_parse_from(["chorus-bench", "--transport", "quic"]).is_err());
        // --ws-url only with an external server.
        assert!(Cli::try_parse_from(["chorus-bench", "--ws-url", "ws://x/chorus"]).is_err());
        let cli = Cli::try_parse_from([
            "chorus-bench",
            "--transport",
            "both",
            "--url",
            "https://127.0.0.1:4433/chorus",
            "--cert-hash",
            &"ab".repeat(32),
            "--ws-url",
            "wss://127.0.0.1:4433/chorus",
        ])
        .expect("parses");
        let cfgs = configs(&cli.run).expect("valid");
        assert_eq!(cfgs.len(), 2);
        for cfg in cfgs {
            let Target::External { ws_url, .. } = cfg.target else {
                panic!("external");
            };
            assert_eq!(ws_url.as_deref(), Some("wss://127.0.0.1:4433/chorus"));
        }
    }
}
