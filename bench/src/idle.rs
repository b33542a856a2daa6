//! The idle-connection memory test (`chorus-bench idle`): open N connections,
//! join them to rooms (4 per room by default), wait until every client sees
//! its whole room, let the server settle, and compare the measured process's
//! RSS with a baseline taken before the first connection: bytes per idle
//! connection, per transport.
//!
//! What is measured:
//!
//! - in process (default): the whole bench process, i.e. the server *and*
//!   the N clients (each with its own connection state, and on WebTransport
//!   its own QUIC endpoint and UDP socket). An upper bound on the server's
//!   share; the baseline is taken after the server and both runtimes
//!   started. With `--transport both` each transport runs in a fresh child
//!   process of the bench (`--same-process` turns that off), so the second
//!   does not reuse memory the first one freed.
//! - external with `--server-pid`: the server process alone. Its baseline is
//!   whatever it holds before the test; with `--transport both` the second
//!   transport runs against the memory the first left behind (restart the
//!   server between transports for a clean figure).
//!
//! [`bytes_per_connection`] is the arithmetic, a pure function.

use crate::progress;
use crate::report::{RunMeta, round3};
use crate::run::run_meta;
use crate::server_target::{
    LoadedServer, ServerArgs, ServerSettings, TransportPick, TransportTestReport, close_clients,
    each_transport, sessions_text, write_results,
};
use crate::transports::{ClientTransport, PerTransport};
use anyhow::{Context, Result, bail};
use chorus_client::{Client, JoinOptions, Room};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Schema tag of the idle test's JSON line.
pub const IDLE_SCHEMA: &str = "chorus-bench-idle/1";

/// `chorus-bench idle`: RSS per idle connection.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to open (each joins a room and stays idle).
    #[arg(long)]
    pub connections: u32,
    /// Connections per room (the last room may have fewer).
    #[arg(long, default_value_t = 4)]
    pub room_size: u32,
    /// webtransport, websocket, or both (one test each, side by side).
    #[arg(long, value_enum, default_value_t = TransportPick::Webtransport)]
    pub transport: TransportPick,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,
    /// How long to wait after every client sees its room before sampling RSS.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// In process with --transport both: run both transports in this
    /// process instead of one child process each.
    #[arg(long)]
    pub same_process: bool,
    /// Print only the JSON line(s) (what a child process does).
    #[arg(long, hide = true)]
    pub json_only: bool,
    /// Also append one JSON line per transport to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write a Markdown report (parameters, commit, machine, figures).
    #[arg(long)]
    pub report_md: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// One idle test's settings.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    pub connections: u32,
    pub room_size: u32,
    pub transport: ClientTransport,
    pub connect_concurrency: usize,
    pub settle: Duration,
    pub server: ServerSettings,
}

impl IdleConfig {
    fn validate(&self) -> Result<()> {
        if self.connections == 0 || self.room_size == 0 || self.connect_concurrency == 0 {
            bail!("--connections, --room-size and --connect-concurrency must be at least 1");
        }
        Ok(())
    }

    /// Members of the room of client `index`: `room_size`, except the last
    /// room of a count that does not divide evenly.
    pub fn room_members(&self, index: u32) -> u32 {
        let room = index / self.room_size;
        let first = room * self.room_size;
        self.room_size.min(self.connections - first)
    }
}

impl IdleArgs {
    /// One configuration per transport asked for.
    pub fn configs(&self) -> Result<Vec<IdleConfig>> {
        let server = self.server.settings()?;
        let configs: Vec<IdleConfig> = self
            .transport
            .transports()
            .into_iter()
            .map(|transport| IdleConfig {
                connections: self.connections,
                room_size: self.room_size,
                transport,
                connect_concurrency: self.connect_concurrency,
                settle: Duration::from_millis(self.settle_ms),
                server: server.clone(),
            })
            .collect();
        for c in &configs {
            c.validate()?;
        }
        Ok(configs)
    }
}

/// RSS growth per connection, in bytes: `(after − before) × 1024 / n` for
/// RSS in KiB; negative if the process shrank; `None` for no connections.
pub fn bytes_per_connection(
    rss_before_kib: u64,
    rss_after_kib: u64,
    connections: u64,
) -> Option<f64> {
    (connections > 0).then(|| {
        let delta = rss_after_kib as f64 - rss_before_kib as f64;
        round3(delta * 1024.0 / connections as f64)
    })
}

/// The figures of one idle test; serialized as its JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleReport {
    pub schema: String,
    pub transport: ClientTransport,
    #[serde(flatten)]
    pub meta: RunMeta,
    pub connections: u32,
    pub room_size: u32,
    /// `"in-process"` or `"external"`.
    pub server: String,
    /// Whether this test had its process to itself (in process: a fresh
    /// process, or the first test of this one).
    pub fresh_process: bool,
    /// VmRSS before the first connection, KiB.
    pub rss_before_kib: u64,
    /// VmRSS with every connection up and idle, KiB.
    pub rss_after_kib: u64,
    /// `(after − before) × 1024 / connections`.
    pub bytes_per_connection: Option<f64>,
    /// Which process the memory figures are about.
    pub memory_scope: String,
    /// From the first connect to every client seeing its whole room, s.
    pub connect_s: f64,
    pub settle_ms: u64,
    /// Sessions the server opened per transport during the test.
    pub server_sessions_opened: Option<PerTransport>,
}

impl IdleReport {
    /// The single JSON line.
    pub fn json_line(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl TransportTestReport for IdleReport {
    fn transport(&self) -> ClientTransport {
        self.transport
    }

    fn meta(&self) -> &RunMeta {
        &self.meta
    }

    fn title(&self) -> String {
        format!(
            "chorus-bench idle: {} idle connections in rooms of {}, server {}",
            self.connections, self.room_size, self.server
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        vec![
            ("transport".into(), self.transport.name().to_owned()),
            (
                "connections (rooms of)".into(),
                format!("{} ({})", self.connections, self.room_size),
            ),
            (
                "RSS before / after".into(),
                format!("{} / {}", mib(self.rss_before_kib), mib(self.rss_after_kib)),
            ),
            (
                "bytes per idle connection".into(),
                self.bytes_per_connection
                    .map_or_else(|| "-".to_owned(), |b| format!("{b:.0}")),
            ),
            ("memory of".into(), self.memory_scope.clone()),
            (
                "fresh process".into(),
                if self.fresh_process {
                    "yes"
                } else {
                    "no (after another test)"
                }
                .to_owned(),
            ),
            (
                "all up after".into(),
                format!("{:.3} s (+{} ms settle)", self.connect_s, self.settle_ms),
            ),
            (
                "server sessions opened WT / WS".into(),
                sessions_text(self.server_sessions_opened),
            ),
        ]
    }
}

/// VmRSS of `/proc/PID/status` in KiB.
fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    crate::procfs::status_kib(&status, "VmRSS:")
}

/// A connected, joined, idle client.
struct IdleClient {
    client: Client,
    room: Room,
    /// Members its room should have.
    members: usize,
}

/// Runs one idle test; prints nothing. `fresh_process`: whether nothing ran
/// in this process before (recorded in the report). Blocks the calling
/// thread (not inside a Tokio runtime).
pub fn run_idle(cfg: &IdleConfig, fresh_process: bool, show_progress: bool) -> Result<IdleReport> {
    cfg.validate()?;
    let server = LoadedServer::start(&cfg.server, cfg.connections, cfg.room_size)?;
    let result = server
        .client_runtime()
        .block_on(idle(cfg, &server, fresh_process, show_progress));
    server.shutdown();
    result
}

async fn idle(
    cfg: &IdleConfig,
    server: &LoadedServer,
    fresh_process: bool,
    show_progress: bool,
) -> Result<IdleReport> {
    let Some(mem_pid) = server.memory_pid() else {
        bail!("the idle test needs the server's memory: run it in process, or give --server-pid");
    };
    let sessions_before = server.stats().sample().await;
    let rss_before_kib =
        rss_kib(&mem_pid).with_context(|| format!("reading /proc/{mem_pid}/status"))?;
    let t0 = Instant::now();
    let clients = connect_all(cfg, server, show_progress).await?;
    let all_up = wait_for_full_rooms(&clients).await;
    let connect_s = round3(t0.elapsed().as_secs_f64());
    if let Err(e) = all_up {
        close_clients(clients.into_iter().map(|c| (c.client, c.room))).await;
        return Err(e);
    }
    tokio::time::sleep(cfg.settle).await;
    let rss_after_kib = rss_kib(&mem_pid);
    let sessions_after = server.stats().sample().await;
    close_clients(clients.into_iter().map(|c| (c.client, c.room))).await;
    let rss_after_kib = rss_after_kib.with_context(|| format!("reading /proc/{mem_pid}/status"))?;
    Ok(IdleReport {
        schema: IDLE_SCHEMA.to_owned(),
        transport: cfg.transport,
        meta: run_meta(),
        connections: cfg.connections,
        room_size: cfg.room_size,
        server: if server.in_process() {
            "in-process".to_owned()
        } else {
            "external".to_owned()
        },
        fresh_process,
        rss_before_kib,
        rss_after_kib,
        bytes_per_connection: bytes_per_connection(
            rss_before_kib,
            rss_after_kib,
            u64::from(cfg.connections),
        ),
        memory_scope: server.memory_scope().to_owned(),
        connect_s,
        settle_ms: u64::try_from(cfg.settle.as_millis()).unwrap_or(u64::MAX),
        server_sessions_opened: sessions_before
            .zip(sessions_after)
            .map(|(a, b)| PerTransport::delta(a.sessions_opened, b.sessions_opened)),
    })
}

/// Connects and joins every client, `connect_concurrency` at a time; any
/// failure fails the test.
async fn connect_all(
    cfg: &IdleConfig,
    server: &LoadedServer,
    show_progress: bool,
) -> Result<Vec<IdleClient>> {
    let bar = progress::count_bar(
        show_progress,
        &format!("idle {}", cfg.transport),
        u64::from(cfg.connections),
    );
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let permits = Arc::new(Semaphore::new(cfg.connect_concurrency));
    let mut set = JoinSet::new();
    for i in 0..cfg.connections {
        let permits = permits.clone();
        let url = server.url(cfg.transport).to_owned();
        let options = server.connect_options(cfg.transport);
        let room_id = format!("idle-{}-{nonce}-{}", cfg.transport, i / cfg.room_size);
        let (transport, members) = (cfg.transport, cfg.room_members(i) as usize);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let client = Client::connect(&url, options)
                .await
                .with_context(|| format!("client {i}: connect to {url}"))?;
            crate::run::check_transport(i, transport, client.transport())?;
            let room = client
                .join(&room_id, JoinOptions::named(format!("idle-{i}")))
                .await
                .with_context(|| format!("client {i}: join {room_id}"))?;
            Ok::<_, anyhow::Error>(IdleClient {
                client,
                room,
                members,
            })
        });
    }
    let limit = Duration::from_secs(
        30 + 5 * u64::from(cfg.connections).div_ceil(cfg.connect_concurrency as u64),
    );
    let deadline = tokio::time::Instant::now() + limit;
    let mut clients = Vec::with_capacity(cfg.connections as usize);
    let mut errors = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Err(_) => {
                errors.push(format!("connect phase over {limit:?}"));
                set.abort_all();
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => errors.push(format!("connect task failed: {e}")),
            Ok(Some(Ok(Err(e)))) => errors.push(format!("{e:#}")),
            Ok(Some(Ok(Ok(c)))) => {
                bar.inc(1);
                clients.push(c);
            }
        }
    }
    bar.finish_and_clear();
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(5);
        close_clients(clients.into_iter().map(|c| (c.client, c.room))).await;
        bail!(
            "{n} of {} clients could not connect and join; first errors:\n  {}",
            cfg.connections,
            errors.join("\n  ")
        );
    }
    Ok(clients)
}

/// Waits (bounded) until every client's replica lists its whole room.
async fn wait_for_full_rooms(clients: &[IdleClient]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let short = clients
            .iter()
            .filter(|c| c.room.members().len() < c.members)
            .count();
        if short == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{short} clients still do not see their whole room after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the test for `transport` in a child process of this bench and reads
/// back its JSON line.
fn run_in_child(args: &IdleArgs, transport: ClientTransport) -> Result<IdleReport> {
    let exe = std::env::current_exe().context("finding the bench's own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("idle")
        .args(["--transport", transport.name()])
        .args(["--connections", &args.connections.to_string()])
        .args(["--room-size", &args.room_size.to_string()])
        .args([
            "--connect-concurrency",
            &args.connect_concurrency.to_string(),
        ])
        .args(["--settle-ms", &args.settle_ms.to_string()])
        .args(["--server-threads", &args.server.server_threads.to_string()])
        .args(["--client-threads", &args.server.client_threads.to_string()])
        .args(["--json-only", "--quiet"]);
    if args.server.ws_tls {
        cmd.arg("--ws-tls");
    }
    if let Some(dir) = &args.server.cert_dir {
        cmd.arg("--cert-dir").arg(dir);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting the child process")?;
    if !out.status.success() {
        bail!("the {transport} child process failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the child process printed no JSON line")?;
    serde_json::from_str(line).context("reading the child process's JSON line")
}

/// `chorus-bench idle`: runs, prints the table and JSON lines, writes the
/// JSON and Markdown files asked for. `command` is the invocation as typed.
pub fn main(args: &IdleArgs, quiet: bool, command: &str) -> Result<()> {
    let configs = args.configs()?;
    let show = progress::visible(quiet);
    let in_process = args.server.url.is_none();
    let children = in_process && configs.len() > 1 && !args.same_process;
    let (reports, failure) = each_transport(&configs, |i, cfg| {
        let report = if children {
            run_in_child(args, cfg.transport)
        } else {
            run_idle(cfg, i == 0, show)
        };
        report.with_context(|| format!("{} idle test", cfg.transport))
    });
    // Whatever completed is reported, even if a later test failed.
    write_results(
        &reports,
        !args.json_only,
        args.json_out.as_deref(),
        args.report_md.as_deref(),
        command,
    )?;
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markdown::MachineInfo;
    use crate::run::Target;
    use crate::server_target::{markdown_report, text_report};

    #[test]
    fn bytes_per_connection_is_the_rss_growth_shared_out() {
        // 100 MiB -> 110 MiB over 1000 connections: 10 485.76 bytes each.
        assert_eq!(
            bytes_per_connection(100 * 1024, 110 * 1024, 1000),
            Some(10_485.76)
        );
        assert_eq!(bytes_per_connection(2048, 2048, 4), Some(0.0));
        // The process can shrink (the allocator gave memory back).
        assert_eq!(bytes_per_connection(2048, 2047, 1), Some(-1024.0));
        assert_eq!(bytes_per_connection(1, 2, 0), None);
    }

    #[test]
    fn the_last_room_takes_what_is_left() {
        let cfg = IdleConfig {
            connections: 10,
            room_size: 4,
            transport: ClientTransport::WebSocket,
            connect_concurrency: 1,
            settle: Duration::ZERO,
            server: ServerSettings {
                target: Target::InProcess {
                    cert_dir: PathBuf::new(),
                },
                ws_tls: false,
                server_threads: 1,
                client_threads: 1,
            },
        };
        assert_eq!(
            (0..10).map(|i| cfg.room_members(i)).collect::<Vec<_>>(),
            [4, 4, 4, 4, 4, 4, 4, 4, 2, 2]
        );
        assert!(cfg.validate().is_ok());
        assert!(
            IdleConfig {
                connections: 0,
                ..cfg
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn the_report_round_trips_and_tabulates() {
        let r = IdleReport {
            schema: IDLE_SCHEMA.to_owned(),
            transport: ClientTransport::WebTransport,
            meta: RunMeta::default(),
            connections: 1000,
            room_size: 4,
            server: "in-process".into(),
            fresh_process: true,
            rss_before_kib: 100 * 1024,
            rss_after_kib: 110 * 1024,
            bytes_per_connection: bytes_per_connection(100 * 1024, 110 * 1024, 1000),
            memory_scope: "bench process".into(),
            connect_s: 1.5,
            settle_ms: 1000,
            server_sessions_opened: None,
        };
        let line = r.json_line().expect("serializes");
        let back: IdleReport = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, r);
        let table = text_report(std::slice::from_ref(&r));
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with("bytes per idle connection"))
            .unwrap_or_default();
        assert!(row.ends_with(" 10486"), "{table}");
        let md = markdown_report(
            &[r],
            "chorus-bench idle --connections 1000",
            &MachineInfo::default(),
        );
        assert!(md.contains("| bytes per idle connection | 10486 |"), "{md}");
    }
}
