//! The server the join storm ([`crate::storm`]) and the idle-connection test
//! ([`crate::idle`]) load, and the client runtime they load it from: an
//! in-process server on its own runtime (threads [`SERVER_THREAD`]), sized
//! for the test like the load run's, or an external one (`--url`,
//! `--cert-hash`, `--server-pid`), exactly as [`crate::run`] does for the
//! load run; plus their shared command-line flags ([`ServerArgs`],
//! [`TransportPick`]), how they close their clients ([`close_clients`]),
//! run once per transport ([`each_transport`]) and write their results
//! ([`write_results`]).

use crate::markdown::{self, MachineInfo};
use crate::report::{RunMeta, merge_columns, text_columns};
use crate::run::{
    BenchConfig, CpuSample, SERVER_THREAD, StatsSource, Target, Urls, check_ws_url, client_runtime,
    derive_ws_url, http_authority, sample_cpu, start_server,
};
use crate::transports::{ClientTransport, PerTransport, TransportMix};
use anyhow::{Context, Result, bail};
use chorus_client::{Client, ConnectOptions, Room};
use chorus_server::RunningServer;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// `--transport` of the storm and idle tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportPick {
    /// Every client on WebTransport.
    Webtransport,
    /// Every client on WebSocket.
    Websocket,
    /// One test per transport, WebTransport first, side by side.
    Both,
}

impl TransportPick {
    /// The transports to test, in order.
    pub fn transports(self) -> Vec<ClientTransport> {
        match self {
            TransportPick::Webtransport => vec![ClientTransport::WebTransport],
            TransportPick::Websocket => vec![ClientTransport::WebSocket],
            TransportPick::Both => ClientTransport::ALL.to_vec(),
        }
    }
}

/// Which server to load and how, for the storm and idle tests (the same
/// flags as the load run's).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Target an external server at this URL (`https://`) instead of starting
    /// one in process.
    #[arg(long, requires = "cert_hash")]
    pub url: Option<String>,
    /// With --url: the server's WebSocket URL (`ws://` or `wss://`). Default:
    /// --url with `ws://` (`wss://` with --ws-tls).
    #[arg(long, requires = "url")]
    pub ws_url: Option<String>,
    /// WebSocket over TLS (`wss://`) instead of plain `ws://`.
    #[arg(long)]
    pub ws_tls: bool,
    /// SHA-256 of the external server's certificate (hex, `:` allowed).
    #[arg(long, requires = "url")]
    pub cert_hash: Option<String>,
    /// With --url: sample this process's CPU and RSS from /proc.
    #[arg(long, requires = "url")]
    pub server_pid: Option<u32>,
    /// Worker threads of the in-process server runtime (`chorus-server`).
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Worker threads of the client runtime (`bench-client`).
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Where the in-process server keeps its development certificate.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
}

/// Where the server is and how the two runtimes are sized.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub target: Target,
    pub ws_tls: bool,
    pub server_threads: usize,
    pub client_threads: usize,
}

impl ServerArgs {
    /// The settings these flags ask for.
    pub fn settings(&self) -> Result<ServerSettings> {
        let target = match (&self.url, &self.cert_hash) {
            (Some(url), Some(hash)) => Target::External {
                url: url.clone(),
                ws_url: self.ws_url.clone(),
                cert_hash: chorus_client::Trust::parse_hash(hash)
                    .context("--cert-hash must be 64 hex digits")?,
                server_pid: self.server_pid,
            },
            (None, None) => Target::InProcess {
                cert_dir: self
                    .cert_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("chorus-bench-certs")),
            },
            _ => bail!("--url and --cert-hash go together"),
        };
        if self.server_threads == 0 || self.client_threads == 0 {
            bail!("thread counts must be at least 1");
        }
        Ok(ServerSettings {
            target,
            ws_tls: self.ws_tls,
            server_threads: self.server_threads,
            client_threads: self.client_threads,
        })
    }
}

/// A server ready to be loaded, and the runtime to load it from.
#[derive(Debug)]
pub struct LoadedServer {
    server_rt: Option<Runtime>,
    client_rt: Runtime,
    server: Option<RunningServer>,
    urls: Urls,
    cert_hash: [u8; 32],
    stats: StatsSource,
    server_pid: Option<u32>,
}

impl LoadedServer {
    /// Starts the in-process server (its limits raised for `clients` clients
    /// in rooms of `room_size`, as the load run's are) or reaches the
    /// external one, and builds the client runtime.
    pub fn start(settings: &ServerSettings, clients: u32, room_size: u32) -> Result<LoadedServer> {
        let server_rt = match settings.target {
            Target::InProcess { .. } => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(settings.server_threads)
                    .thread_name(SERVER_THREAD)
                    .enable_all()
                    .build()
                    .context("building the server runtime")?,
            ),
            Target::External { .. } => None,
        };
        let client_rt = client_runtime(settings.client_threads)?;
        let server = match (&settings.target, &server_rt) {
            (Target::InProcess { cert_dir }, Some(rt)) => {
                let sizing = sizing_config(settings, clients, room_size);
                Some(start_server(&sizing, cert_dir, rt)?)
            }
            _ => None,
        };
        let (urls, cert_hash, stats, server_pid) = match (&settings.target, &server) {
            (_, Some(s)) => {
                let websocket = if settings.ws_tls {
                    s.wss_url()
                } else {
                    s.ws_url()
                };
                let urls = Urls {
                    webtransport: s.url(),
                    websocket,
                };
                (
                    urls,
                    s.cert_hash(),
                    StatsSource::InProcess(s.stats().clone()),
                    None,
                )
            }
            (
                Target::External {
                    url,
                    ws_url,
                    cert_hash,
                    server_pid,
                },
                None,
            ) => {
                let websocket = match ws_url {
                    Some(ws) => ws.clone(),
                    None => derive_ws_url(url, settings.ws_tls)?,
                };
                let stats = StatsSource::Http {
                    authority: http_authority(url)?,
                };
                let urls = Urls {
                    webtransport: url.clone(),
                    websocket,
                };
                (urls, *cert_hash, stats, *server_pid)
            }
            (Target::InProcess { .. }, None) => bail!("in-process server did not start"),
        };
        check_ws_url(&urls.websocket)?;
        Ok(LoadedServer {
            server_rt,
            client_rt,
            server,
            urls,
            cert_hash,
            stats,
            server_pid,
        })
    }

    /// The runtime the clients run on.
    pub fn client_runtime(&self) -> &Runtime {
        &self.client_rt
    }

    /// Where a client on `transport` connects.
    pub fn url(&self, transport: ClientTransport) -> &str {
        self.urls.of(transport)
    }

    /// Connect options for a client on exactly `transport`, with no clock
    /// sync (the tests need no server clock).
    pub fn connect_options(&self, transport: ClientTransport) -> ConnectOptions {
        ConnectOptions {
            transport: transport.choice(),
            clock_sync_pings: 0,
            clock_sync_interval: Duration::ZERO,
            ..ConnectOptions::with_cert_hashes([self.cert_hash])
        }
    }

    /// The server's counters.
    pub(crate) fn stats(&self) -> &StatsSource {
        &self.stats
    }

    /// Whether the server runs in this process.
    pub fn in_process(&self) -> bool {
        self.server.is_some()
    }

    /// The external server's pid, if given.
    pub fn server_pid(&self) -> Option<u32> {
        self.server_pid
    }

    /// The `/proc` entry whose memory is the server's: this process in
    /// process, the external server's with `--server-pid`, else `None`.
    pub fn memory_pid(&self) -> Option<String> {
        if self.in_process() {
            Some("self".to_owned())
        } else {
            self.server_pid.map(|p| p.to_string())
        }
    }

    /// What [`memory_pid`](Self::memory_pid)'s figures cover.
    pub fn memory_scope(&self) -> &'static str {
        match (self.in_process(), self.server_pid) {
            (true, _) => "bench process: in-process server + all clients",
            (false, Some(_)) => "external server process",
            (false, None) => "not sampled (external server without --server-pid)",
        }
    }

    /// The CPU counters now.
    pub(crate) fn sample_cpu(&self) -> CpuSample {
        sample_cpu(self.server_pid)
    }

    /// Stops the in-process server and both runtimes, bounded.
    pub fn shutdown(self) {
        if let (Some(server), Some(rt)) = (self.server, &self.server_rt) {
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
            });
        }
        self.client_rt.shutdown_timeout(Duration::from_secs(2));
        if let Some(rt) = self.server_rt {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A load-run configuration of `clients` clients in rooms of `room_size`,
/// used only to size the in-process server's limits ([`start_server`]).
fn sizing_config(settings: &ServerSettings, clients: u32, room_size: u32) -> BenchConfig {
    let room_size = room_size.max(1);
    BenchConfig {
        rooms: clients.div_ceil(room_size).max(1),
        clients_per_room: room_size,
        hz: 0.0,
        payload_bytes: crate::payload::HEADER_LEN,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        drain: Duration::ZERO,
        seed: 0,
        tick_capacity: 64,
        datagram_receive_buffer_bytes: None,
        client_endpoints: 0,
        connect_concurrency: 1,
        server_threads: settings.server_threads,
        client_threads: settings.client_threads,
        target: settings.target.clone(),
        transport: TransportMix::WebTransport,
        ws_tls: settings.ws_tls,
        state_rate: 0.0,
        command_rate: 0.0,
        scenario: None,
        scenario_overrides: Vec::new(),
    }
}

/// CPU % of one core between two samples: `(server, load generator)`; the
/// server's from its threads in process, else from `--server-pid`.
pub(crate) fn cpu_between(a: &CpuSample, b: &CpuSample, in_process: bool) -> (Option<f64>, f64) {
    let clk_tck = crate::procfs::clock_ticks_per_second();
    let secs = match (a.at, b.at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let pct = |x: u64, y: u64| crate::procfs::cpu_pct(y.saturating_sub(x), clk_tck, secs);
    let server = if in_process {
        Some(pct(a.server_threads, b.server_threads))
    } else {
        a.server_process
            .zip(b.server_process)
            .map(|(x, y)| pct(x, y))
    };
    (server, pct(a.client_threads, b.client_threads))
}

/// Leaves each room and closes each client, all at once, bounded.
pub(crate) async fn close_clients(clients: impl IntoIterator<Item = (Client, Room)>) {
    let mut set = JoinSet::new();
    for (client, room) in clients {
        set.spawn(async move {
            drop(room);
            client.close().await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    set.abort_all();
}

/// Pause between the tests of `--transport both`, so that the first one's
/// sessions are gone from the server before the second connects.
const SETTLE_BETWEEN_TESTS: Duration = Duration::from_secs(1);

/// Runs `one(i, config)` for each configuration in order (one per
/// transport), [`SETTLE_BETWEEN_TESTS`] apart, stopping at the first
/// failure: what completed, and the failure if any.
pub(crate) fn each_transport<C, R>(
    configs: &[C],
    mut one: impl FnMut(usize, &C) -> Result<R>,
) -> (Vec<R>, Option<anyhow::Error>) {
    let mut done = Vec::with_capacity(configs.len());
    for (i, cfg) in configs.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(SETTLE_BETWEEN_TESTS);
        }
        match one(i, cfg) {
            Ok(r) => done.push(r),
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// Prints the table of `reports` (if `print_table`) and their JSON lines
/// on stdout, appends the lines to `json_out` and writes the Markdown report
/// (of the invocation `command`) to `report_md`, when given. Nothing for no
/// reports.
pub(crate) fn write_results<R: TransportTestReport + serde::Serialize>(
    reports: &[R],
    print_table: bool,
    json_out: Option<&Path>,
    report_md: Option<&Path>,
    command: &str,
) -> Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    let lines = reports
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .context("serializing the report")?;
    if print_table {
        print!("{}", text_report(reports));
    }
    for line in &lines {
        println!("{line}");
    }
    crate::report::append_json_lines(json_out, &lines)?;
    if let Some(path) = report_md {
        let md = markdown_report(reports, command, &MachineInfo::probe());
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The report of a storm or idle test on one transport, as tabulated.
pub trait TransportTestReport {
    fn transport(&self) -> ClientTransport;
    fn meta(&self) -> &RunMeta;
    /// The table's first line and the Markdown heading.
    fn title(&self) -> String;
    /// Label / value rows.
    fn rows(&self) -> Vec<(String, String)>;
}

/// Tests of several transports as one text table, one column each.
pub fn text_report<R: TransportTestReport>(reports: &[R]) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let columns: Vec<Vec<(String, String)>> = reports.iter().map(R::rows).collect();
    format!(
        "{}\n{}",
        first.title(),
        text_columns(&merge_columns(&columns))
    )
}

/// Tests of several transports as a Markdown report: heading, command,
/// commit and machine, then the figures, one column each.
pub fn markdown_report<R: TransportTestReport>(
    reports: &[R],
    command: &str,
    machine: &MachineInfo,
) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let columns: Vec<Vec<(String, String)>> = reports.iter().map(R::rows).collect();
    let runs: Vec<&str> = reports.iter().map(|r| r.transport().name()).collect();
    let mut s = markdown::header(&first.title(), command, first.meta(), machine);
    s.push_str(&markdown::figures(&runs, &merge_columns(&columns)));
    s
}

/// The table's value for sessions opened per transport.
pub fn sessions_text(opened: Option<PerTransport>) -> String {
    opened.map_or_else(
        || "- (not readable)".to_owned(),
        |s| format!("{} / {}", s.webtransport, s.websocket),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_give_settings() {
        let args = ServerArgs {
            url: None,
            ws_url: None,
            ws_tls: false,
            cert_hash: None,
            server_pid: None,
            server_threads: 2,
            client_threads: 2,
            cert_dir: None,
        };
        assert!(matches!(
            args.settings().expect("valid").target,
            Target::InProcess { .. }
        ));
        let external = ServerArgs {
            url: Some("https://127.0.0.1:4433/chorus".into()),
            cert_hash: Some("ab".repeat(32)),
            server_pid: Some(7),
            ..args.clone()
        };
        assert!(matches!(
            external.settings().expect("valid").target,
            Target::External {
                server_pid: Some(7),
                ..
            }
        ));
        let no_hash = ServerArgs {
            url: Some("https://x/chorus".into()),
            ..args.clone()
        };
        assert!(no_hash.settings().is_err());
        let no_threads = ServerArgs {
            client_threads: 0,
            ..args
        };
        assert!(no_threads.settings().is_err());
        assert_eq!(
            TransportPick::Both.transports(),
            [ClientTransport::WebTransport, ClientTransport::WebSocket]
        );
    }

    #[test]
    fn the_server_is_sized_for_every_client() {
        let settings = ServerSettings {
            target: Target::InProcess {
                cert_dir: PathBuf::new(),
            },
            ws_tls: false,
            server_threads: 1,
            client_threads: 1,
        };
        let c = sizing_config(&settings, 10, 4);
        assert_eq!((c.rooms, c.clients_per_room), (3, 4));
        assert!(c.rooms * c.clients_per_room >= 10);
    }
}
