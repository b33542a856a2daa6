//! `chorus-bench`: load and latency bench for Chorus.
//!
//! ```text
//! cargo run --release -p chorus-bench -- --rooms 10 --clients 5 --hz 30 --duration 20
//! ```
//!
//! Prints a table, then one JSON line (also appended to `--json-out`).

use anyhow::{Context, Result, bail};
use chorus_bench::payload;
use chorus_bench::run::{BenchConfig, Target, run};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Load and latency bench for Chorus: R rooms x C clients send P-byte ticks at
/// H Hz through a real WebTransport server (in process by default).
#[derive(Debug, Parser)]
#[command(name = "chorus-bench", version)]
struct Cli {
    /// Rooms (`bench-0` .. `bench-<R-1>`).
    #[arg(long, default_value_t = 10)]
    rooms: u32,
    /// Clients per room; each has its own connection.
    #[arg(long, default_value_t = 5)]
    clients: u32,
    /// Ticks per second per client.
    #[arg(long, default_value_t = 30.0)]
    hz: f64,
    /// Tick payload size; at least 16 (the bench header).
    #[arg(long, default_value_t = 48)]
    payload_bytes: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before the measured window, excluded from the figures.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// After the window, how long receivers wait for ticks still in flight.
    #[arg(long, default_value_t = 500)]
    drain_ms: u64,
    /// Seed for payload padding and the order of the send stagger.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Target an external server at this URL instead of starting one in process.
    #[arg(long, requires = "cert_hash")]
    url: Option<String>,
    /// SHA-256 of the external server's certificate (hex, `:` allowed).
    #[arg(long, requires = "url")]
    cert_hash: Option<String>,
    /// With --url: sample this process's CPU and peak RSS from /proc.
    #[arg(long, requires = "url")]
    server_pid: Option<u32>,
    /// Also append the JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// The SDK's per-room tick receive buffer (newest-wins).
    #[arg(long, default_value_t = 64)]
    tick_capacity: usize,
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

fn seconds(name: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} {v} is not a valid duration"))
}

fn config(cli: &Cli) -> Result<BenchConfig> {
    payload::check_size(cli.payload_bytes, usize::MAX)?;
    let target = match (&cli.url, &cli.cert_hash) {
        (Some(url), Some(hash)) => Target::External {
            url: url.clone(),
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
        rooms: cli.rooms,
        clients_per_room: cli.clients,
        hz: cli.hz,
        payload_bytes: cli.payload_bytes,
        duration: seconds("duration", cli.duration)?,
        warmup: seconds("warmup", cli.warmup)?,
        drain: Duration::from_millis(cli.drain_ms),
        seed: cli.seed,
        tick_capacity: cli.tick_capacity,
        connect_concurrency: cli.connect_concurrency,
        server_threads: cli.server_threads,
        client_threads: cli.client_threads,
        target,
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
    let cfg = config(cli)?;
    let report = run(&cfg)?;
    let line = report.json_line().context("serializing the report")?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", report.table())?;
    writeln!(out, "{line}")?;
    out.flush()?;
    if let Some(path) = &cli.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
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
        let err = config(&cli).expect_err("8 bytes is under the header");
        assert!(err.to_string().contains("too small"), "{err}");
        let cli = Cli::try_parse_from(["chorus-bench", "--rooms", "3", "--clients", "4"])
            .expect("parses");
        let cfg = config(&cli).expect("valid");
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
            config(&cli).expect("valid").target,
            Target::External {
                server_pid: Some(1),
                ..
            }
        ));
    }
}
