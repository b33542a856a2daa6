//! One bench run: start (or reach) a server, connect R × C clients, send ticks
//! at H Hz and the reliable loads ([`crate::reliable`]) for warm-up +
//! duration, drain, measure, and hand back a [`Report`].
//!
//! Threads: the in-process server runs on its own multi-thread runtime whose
//! threads are named [`SERVER_THREAD`] (its QUIC endpoint driver tasks run there
//! too, since the endpoint is created on it); every client runs on a second
//! runtime named [`CLIENT_THREAD`]. CPU is attributed by thread name from
//! `/proc/self/task`. The orchestration itself (sleeping, sampling) runs on the
//! calling thread, which belongs to neither.
//!
//! Transports: each client connects with exactly the transport
//! [`TransportMix::of_global`] gives it (WebTransport to the `https://` URL,
//! WebSocket to the `ws://`/`wss://` one, no fallback), and the run fails if
//! [`Client::transport`] says otherwise or if the server's per-transport
//! session counters disagree.

use crate::live::{PhaseTimes, RunOutput, RunProbe, RunSeries};
use crate::payload::{self, Header, RoomSenders};
use crate::procfs;
use crate::reliable::{self, Lane, LaneReceiver, LaneSender};
use crate::report::{
    ClientTotals, CpuFigures, KernelTcp, KernelUdp, LaneTotals, Measurements, MemFigures, Params,
    Report, RunMeta, ServerCounters, ServerReliableCounters, new_histogram, record, rfc3339_utc,
};
use crate::scenario::Scenario;
use crate::transports::{ClientTransport, PerTransport, TransportMix};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use chorus_client::{Client, ConnectOptions, JoinOptions, Room, Scheme, ServerUrl, SharedEndpoint};
use chorus_server::stats::ServerStats;
use chorus_server::{RunningServer, Server, ServerConfig};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// Name prefix of the in-process server's runtime threads.
pub const SERVER_THREAD: &str = "chorus-server";
/// Name prefix of the client runtime's threads.
pub const CLIENT_THREAD: &str = "bench-client";

/// Protocol ceiling on tick payloads, checked before connecting; the server's
/// announced limit is checked after.
const PROTOCOL_MAX_TICK_PAYLOAD: usize = 1000;

/// Which server to load.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start one in this process, with its development certificate in `cert_dir`.
    InProcess { cert_dir: PathBuf },
    /// An already running server.
    External {
        /// Its WebTransport URL (`https://`).
        url: String,
        /// Its WebSocket URL; `None`: `url` with `ws://` (or `wss://` with
        /// [`BenchConfig::ws_tls`]), as the server listens on TCP at the same
        /// port and path.
        ws_url: Option<String>,
        cert_hash: [u8; 32],
        /// Sample this process's CPU and memory.
        server_pid: Option<u32>,
    },
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub rooms: u32,
    pub clients_per_room: u32,
    pub hz: f64,
    pub payload_bytes: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain: Duration,
    pub seed: u64,
    /// The SDK's per-room tick buffer (`ConnectOptions::tick_capacity`).
    pub tick_capacity: usize,
    /// `ConnectOptions::datagram_receive_buffer_bytes`; `None`: the SDK default.
    pub datagram_receive_buffer_bytes: Option<usize>,
    /// WebTransport clients share this many QUIC endpoints (UDP sockets),
    /// round-robin; 0: each client has its own, as an app does.
    pub client_endpoints: usize,
    pub connect_concurrency: usize,
    pub server_threads: usize,
    pub client_threads: usize,
    pub target: Target,
    /// Which transport each client uses.
    pub transport: TransportMix,
    /// WebSocket over TLS (`wss://`, trusting the same certificate hash)
    /// instead of plain `ws://`, unless an explicit WebSocket URL says otherwise.
    pub ws_tls: bool,
    /// State updates per second per room, round-robin over its clients
    /// (0: none).
    pub state_rate: f64,
    /// Commands per second per room, round-robin over its clients (0: none).
    pub command_rate: f64,
    /// The preset the shape came from, if any (named in the report).
    pub scenario: Option<Scenario>,
    /// Shape fields an explicit flag changed from the preset's.
    pub scenario_overrides: Vec<&'static str>,
}

/// Highest `--state-rate` / `--command-rate`: far above any server budget,
/// low enough that a typo does not spawn millions of requests.
const MAX_LANE_RATE: f64 = 100_000.0;

/// Lowest non-zero `--hz`, `--state-rate` or `--command-rate`: one send per
/// 100 s, so that a period always fits a `Duration`.
const MIN_RATE: f64 = 0.01;

/// Whether `rate` is 0 (off) or in `[MIN_RATE, max]`.
fn rate_ok(rate: f64, max: f64) -> bool {
    rate == 0.0 || (MIN_RATE..=max).contains(&rate)
}

impl BenchConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.rooms == 0 || self.clients_per_room == 0 {
            bail!("--rooms and --clients must be at least 1");
        }
        self.rooms
            .checked_mul(self.clients_per_room)
            .context("rooms x clients overflows")?;
        for (flag, rate, max) in [
            ("hz", self.hz, 1000.0),
            ("state-rate", self.state_rate, MAX_LANE_RATE),
            ("command-rate", self.command_rate, MAX_LANE_RATE),
        ] {
            if !rate_ok(rate, max) {
                bail!("--{flag} must be 0 or in [{MIN_RATE}, {max}], got {rate}");
            }
        }
        if self.hz == 0.0 && self.state_rate == 0.0 && self.command_rate == 0.0 {
            bail!("nothing to send: --hz, --state-rate and --command-rate are all 0");
        }
        payload::check_size(self.payload_bytes, PROTOCOL_MAX_TICK_PAYLOAD)?;
        if self.duration.is_zero() {
            bail!("--duration must be positive");
        }
        if self.connect_concurrency == 0 || self.server_threads == 0 || self.client_threads == 0 {
            bail!("concurrency and thread counts must be at least 1");
        }
        Ok(())
    }

    /// A small run for tests and examples: `rooms` × `clients_per_room`
    /// WebTransport clients at 20 Hz with 48-byte payloads, 1 s measured
    /// without warm-up, 500 ms drain, an in-process server with its
    /// certificate in the system's temporary directory; no reliable load.
    pub fn small(rooms: u32, clients_per_room: u32) -> BenchConfig {
        BenchConfig {
            rooms,
            clients_per_room,
            hz: 20.0,
            payload_bytes: 48,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            drain: Duration::from_millis(500),
            seed: 1,
            tick_capacity: 64,
            datagram_receive_buffer_bytes: None,
            client_endpoints: 0,
            connect_concurrency: 8,
            server_threads: 1,
            client_threads: 2,
            target: Target::InProcess {
                cert_dir: std::env::temp_dir().join("chorus-bench-certs"),
            },
            transport: TransportMix::WebTransport,
            ws_tls: false,
            state_rate: 0.0,
            command_rate: 0.0,
            scenario: None,
            scenario_overrides: Vec::new(),
        }
    }

    /// Clients in all (one connection each).
    pub fn total_clients(&self) -> u32 {
        self.rooms.saturating_mul(self.clients_per_room)
    }

    /// `rooms × clients × hz × (clients − 1)`: the deliveries per second asked.
    pub fn nominal_deliveries_per_s(&self) -> f64 {
        f64::from(self.total_clients())
            * self.hz
            * f64::from(self.clients_per_room.saturating_sub(1))
    }

    fn uses_websocket(&self) -> bool {
        self.transport.per_room(self.clients_per_room).websocket > 0
    }

    pub(crate) fn params(&self, url: &str, ws_url: &str) -> Params {
        Params {
            rooms: self.rooms,
            clients_per_room: self.clients_per_room,
            hz: self.hz,
            payload_bytes: self.payload_bytes,
            duration_s: self.duration.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            drain_ms: u64::try_from(self.drain.as_millis()).unwrap_or(u64::MAX),
            seed: self.seed,
            tick_capacity: self.tick_capacity,
            datagram_receive_buffer_bytes: self.datagram_receive_buffer_bytes,
            client_endpoints: self.client_endpoints,
            connect_concurrency: self.connect_concurrency,
            server: match self.target {
                Target::InProcess { .. } => "in-process".into(),
                Target::External { .. } => "external".into(),
            },
            url: url.to_owned(),
            ws_url: self.uses_websocket().then(|| ws_url.to_owned()),
            scenario: self.scenario.map(|s| s.name().to_owned()),
            scenario_overrides: self
                .scenario_overrides
                .iter()
                .map(|&f| f.to_owned())
                .collect(),
            state_rate: self.state_rate,
            command_rate: self.command_rate,
        }
    }

    /// The reliable loads this run sends, with their rates per room.
    fn lanes(&self) -> Vec<(Lane, f64)> {
        [
            (Lane::State, self.state_rate),
            (Lane::Commands, self.command_rate),
        ]
        .into_iter()
        .filter(|&(_, rate)| rate > 0.0)
        .collect()
    }
}

/// The WebSocket URL of the server at WebTransport URL `url`: same host, port
/// and path, `ws://` or (`tls`) `wss://`.
pub fn derive_ws_url(url: &str, tls: bool) -> Result<String> {
    let mut u = ServerUrl::parse(url).with_context(|| format!("bad server URL {url}"))?;
    u.scheme = if tls { Scheme::Wss } else { Scheme::Ws };
    Ok(u.to_string())
}

/// Checks that `url` is a WebSocket URL.
pub(crate) fn check_ws_url(url: &str) -> Result<()> {
    let u = ServerUrl::parse(url).with_context(|| format!("bad WebSocket URL {url}"))?;
    if !u.scheme.is_websocket() {
        bail!("WebSocket URL {url} must be ws:// or wss://");
    }
    Ok(())
}

/// `host:port` of the plain HTTP endpoint next to the server at `url`.
pub(crate) fn http_authority(url: &str) -> Result<String> {
    let u = ServerUrl::parse(url).with_context(|| format!("bad server URL {url}"))?;
    Ok(if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    })
}

/// Makes room in this process for `clients` connections' descriptors before
/// they connect (`chorus_server::descriptors`): each client holds one (its
/// QUIC endpoint's UDP socket, or its TCP socket), and an in-process server
/// one more per WebSocket. Growing the descriptor table while clients connect
/// stalled every connection in flight for 10–15 ms at 256, 512 and 1024
/// descriptors, which was the whole connect + join tail of a WebTransport
/// storm. The limits are best effort: a shortfall shows as connect failures.
pub(crate) fn prepare_descriptors(clients: u32) {
    let wanted = 2 * u64::from(clients) + chorus_server::descriptors::HEADROOM;
    let _ = chorus_server::descriptors::prepare(wanted);
}

/// Runs the bench; blocks the calling thread (which must not be inside a Tokio
/// runtime) until the run is over, at most a bounded time after `warmup + duration`.
pub fn run(cfg: &BenchConfig) -> Result<Report> {
    cfg.validate()?;
    let probe = RunProbe::new(cfg.total_clients(), cfg.clients_per_room);
    run_probed(cfg, &Arc::new(probe)).map(|out| out.report)
}

/// [`run`], watched through `probe` (made for this configuration) while it
/// goes; also hands back the run's curves for the plots.
pub fn run_probed(cfg: &BenchConfig, probe: &Arc<RunProbe>) -> Result<RunOutput> {
    cfg.validate()?;
    prepare_descriptors(cfg.total_clients());
    let epoch = Instant::now();
    // Peak RSS from here on (it is the process's high-water mark otherwise,
    // which would carry an earlier run's peak into this one).
    let mem_pid = match cfg.target {
        Target::External {
            server_pid: Some(pid),
            ..
        } => pid.to_string(),
        _ => "self".to_owned(),
    };
    let peak_since_run_start = procfs::reset_peak_rss(&mem_pid);

    let server_rt = match cfg.target {
        Target::InProcess { .. } => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cfg.server_threads)
                .thread_name(SERVER_THREAD)
                .enable_all()
                .build()
                .context("building the server runtime")?,
        ),
        Target::External { .. } => None,
    };
    let client_rt = client_runtime(cfg.client_threads)?;

    let server = match (&cfg.target, &server_rt) {
        (Target::InProcess { cert_dir }, Some(rt)) => Some(start_server(cfg, cert_dir, rt)?),
        _ => None,
    };
    let (url, ws_url, cert_hash) = match (&cfg.target, &server) {
        (_, Some(s)) => {
            let ws = if cfg.ws_tls { s.wss_url() } else { s.ws_url() };
            (s.url(), ws, s.cert_hash())
        }
        (
            Target::External {
                url,
                ws_url,
                cert_hash,
                ..
            },
            None,
        ) => {
            let ws = match ws_url {
                Some(ws) => ws.clone(),
                None => derive_ws_url(url, cfg.ws_tls)?,
            };
            (url.clone(), ws, *cert_hash)
        }
        (Target::InProcess { .. }, None) => bail!("in-process server did not start"),
    };
    check_ws_url(&ws_url)?;
    let stats = match &server {
        Some(s) => StatsSource::InProcess(s.stats().clone()),
        None => StatsSource::Http {
            authority: http_authority(&url)?,
        },
    };
    let server_pid = match cfg.target {
        Target::External { server_pid, .. } => server_pid,
        Target::InProcess { .. } => None,
    };
    let urls = Urls {
        webtransport: url.clone(),
        websocket: ws_url.clone(),
    };

    let outcome = client_rt.block_on(drive(
        cfg, &urls, cert_hash, epoch, &stats, server_pid, probe,
    ));

    if let (Some(server), Some(rt)) = (server, &server_rt) {
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
        });
    }
    client_rt.shutdown_timeout(Duration::from_secs(2));
    if let Some(rt) = server_rt {
        rt.shutdown_timeout(Duration::from_secs(2));
    }

    let (totals, mut measurements) = outcome?;
    measurements.memory.peak_since_run_start = peak_since_run_start;
    let meta = run_meta();
    let series = RunSeries::collect(
        cfg.transport,
        &totals,
        probe,
        cfg.nominal_deliveries_per_s(),
    );
    let report = Report::compute(
        cfg.params(&url, &ws_url),
        cfg.transport,
        meta,
        &totals,
        measurements,
    );
    Ok(RunOutput { report, series })
}

/// The runtime every bench client runs on: `threads` workers named
/// [`CLIENT_THREAD`], so their CPU is the load generator's.
pub(crate) fn client_runtime(threads: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()
        .context("building the client runtime")
}

pub(crate) fn start_server(
    cfg: &BenchConfig,
    cert_dir: &std::path::Path,
    rt: &Runtime,
) -> Result<RunningServer> {
    let config = sized_config(cfg, cert_dir);
    // Spawned, so that the endpoint (and its driver task) lives on a server thread.
    rt.block_on(async { tokio::spawn(Server::start(config)).await })
        .context("server start task failed")?
        .context("starting the in-process server")
}

/// The ephemeral server configuration with its limits raised to `cfg`'s
/// load (members per room, rooms, connection caps, rate budgets), so that
/// the limits are not what is measured. An external server started by the
/// bench gets the same limits as flags ([`crate::chorus_process`]).
pub(crate) fn sized_config(cfg: &BenchConfig, cert_dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::ephemeral(cert_dir);
    let limits = &mut config.session.limits;
    limits.max_members_per_room = limits.max_members_per_room.max(cfg.clients_per_room);
    config.rooms.max_rooms = config.rooms.max_rooms.max(cfg.rooms);
    // All load comes from one address: size the per-address caps to the load,
    // as an operator would for a gateway, so they are not what is measured.
    let clients = cfg.total_clients();
    let abuse = &mut config.access.abuse;
    abuse.max_connections = abuse.max_connections.max(clients);
    abuse.max_connections_per_ip = abuse.max_connections_per_ip.max(clients);
    abuse.new_connections_per_ip_per_minute = abuse
        .new_connections_per_ip_per_minute
        .max(clients.saturating_mul(2));
    abuse.joins_per_ip_per_minute = abuse.joins_per_ip_per_minute.max(clients.saturating_mul(2));
    // A tick rate above the default budget needs a bigger budget.
    let ticks = &mut config.session.rate_limits.ticks;
    let hz = cfg.hz.ceil() as u32;
    ticks.per_second = ticks.per_second.max(hz.saturating_mul(2));
    ticks.burst = ticks.burst.max(ticks.per_second.saturating_mul(2));
    // Likewise the reliable budgets: each client sends its share of its
    // room's rate (round-robin), and every request also counts as a message.
    let share = |rate: f64| (rate / f64::from(cfg.clients_per_room.max(1))).ceil() as u32;
    let budgets = &mut config.session.rate_limits;
    let (state, commands) = (share(cfg.state_rate), share(cfg.command_rate));
    for (budget, per_client) in [
        (&mut budgets.state_updates, state),
        (&mut budgets.commands, commands),
        (&mut budgets.messages, state.saturating_add(commands)),
    ] {
        budget.per_second = budget.per_second.max(per_client.saturating_mul(2));
        budget.burst = budget.burst.max(budget.per_second.saturating_mul(2));
    }
    config
}

/// Where clients connect, per transport.
#[derive(Debug, Clone)]
pub(crate) struct Urls {
    pub(crate) webtransport: String,
    pub(crate) websocket: String,
}

impl Urls {
    pub(crate) fn of(&self, t: ClientTransport) -> &str {
        match t {
            ClientTransport::WebTransport => &self.webtransport,
            ClientTransport::WebSocket => &self.websocket,
        }
    }
}

/// One connected client.
struct Connected {
    index: u32,
    transport: ClientTransport,
    client: Client,
    room: Room,
}

/// Where the server's counters come from.
#[derive(Debug)]
pub(crate) enum StatsSource {
    /// The in-process server's own counters.
    InProcess(Arc<ServerStats>),
    /// An external server's `GET /stats` on its TCP port (plain HTTP).
    Http { authority: String },
}

/// The server counters the bench uses, at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub ticks: ServerCounters,
    pub sessions_opened: PerTransport,
    /// `None` from a server whose `/stats` does not have them.
    pub reliable: Option<ServerReliableCounters>,
}

impl StatsSource {
    /// `None` if an external server's `/stats` cannot be read (e.g. its TCP
    /// port requires TLS); the run goes on without server counters.
    pub(crate) async fn sample(&self) -> Option<StatsSnapshot> {
        match self {
            StatsSource::InProcess(stats) => Some(StatsSnapshot {
                ticks: server_counters(stats),
                sessions_opened: PerTransport {
                    webtransport: stats.webtransport_opened.get(),
                    websocket: stats.websocket_opened.get(),
                },
                reliable: Some(ServerReliableCounters {
                    state_updates: stats
                        .state_updates
                        .nonzero()
                        .map(|(outcome, n)| (outcome.to_owned(), n))
                        .collect(),
                    commands: stats.commands.total(),
                }),
            }),
            StatsSource::Http { authority } => match http_get(authority, "/stats").await {
                Ok(body) => {
                    let parsed = parse_stats_json(&body);
                    if parsed.is_none() {
                        tracing::warn!(%authority, "unexpected /stats body");
                    }
                    parsed
                }
                Err(e) => {
                    tracing::warn!(%authority, error = %format!("{e:#}"), "cannot read /stats");
                    None
                }
            },
        }
    }
}

/// A bounded HTTP/1.0 GET (so the reply is neither chunked nor kept alive);
/// the body of a 200 reply.
async fn http_get(authority: &str, path: &str) -> Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .context("timed out")?
        .context("HTTP exchange")?;
    http_ok_body(&raw).context("not an HTTP 200 reply")
}

/// The body of a raw HTTP/1.x 200 response.
pub fn http_ok_body(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    let mut parts = status.split_ascii_whitespace();
    let version = parts.next()?;
    (version.starts_with("HTTP/1.") && parts.next()? == "200").then(|| body.to_owned())
}

/// The counters of a `/stats` body (README: `totals.ticks_*`,
/// `totals.sessions.<transport>.opened`, and if present
/// `totals.state_updates` by outcome and `totals.commands`).
pub fn parse_stats_json(body: &str) -> Option<StatsSnapshot> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let t = v.get("totals")?;
    let n = |key: &str| t.get(key)?.as_u64();
    let opened = |transport: &str| t.get("sessions")?.get(transport)?.get("opened")?.as_u64();
    Some(StatsSnapshot {
        ticks: ServerCounters {
            ticks_in: n("ticks_in")?,
            ticks_out: n("ticks_out")?,
            ticks_dropped: n("ticks_dropped")?,
            ticks_rejected: n("ticks_rejected")?,
        },
        sessions_opened: PerTransport {
            webtransport: opened("webtransport")?,
            websocket: opened("websocket")?,
        },
        reliable: parse_reliable_counters(t),
    })
}

/// `totals.state_updates` (`{outcome: n}`) and `totals.commands` of `/stats`.
fn parse_reliable_counters(totals: &serde_json::Value) -> Option<ServerReliableCounters> {
    let state_updates = totals
        .get("state_updates")?
        .as_object()?
        .iter()
        .map(|(outcome, n)| Some((outcome.clone(), n.as_u64()?)))
        .collect::<Option<_>>()?;
    Some(ServerReliableCounters {
        state_updates,
        commands: totals.get("commands")?.as_u64()?,
    })
}

/// Where the run is in time. Send times are ns since `epoch`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    pub(crate) epoch: Instant,
    /// Sending starts (warm-up first).
    pub(crate) start: Instant,
    pub(crate) window_start: Instant,
    /// Sending stops.
    pub(crate) window_end: Instant,
    /// Receivers stop; requests still unanswered are abandoned.
    pub(crate) recv_deadline: Instant,
    pub(crate) window_start_ns: u64,
    pub(crate) window_end_ns: u64,
}

impl Timeline {
    /// Sending starts 100 ms from now with `cfg.warmup`, then the measured
    /// window of `cfg.duration`, then `cfg.drain`.
    pub(crate) fn starting_soon(epoch: Instant, cfg: &BenchConfig) -> Timeline {
        let start = Instant::now() + Duration::from_millis(100);
        let window_start = start + cfg.warmup;
        let window_end = window_start + cfg.duration;
        Timeline {
            epoch,
            start,
            window_start,
            window_end,
            recv_deadline: window_end + cfg.drain,
            window_start_ns: ns_since(epoch, window_start),
            window_end_ns: ns_since(epoch, window_end),
        }
    }

    /// Send times (ns since `epoch`) that count: the measured window.
    pub(crate) fn window_ns(&self) -> std::ops::Range<u64> {
        self.window_start_ns..self.window_end_ns
    }

    /// µs from a send time (ns since `epoch`) to `at`.
    pub(crate) fn us_since_sent(&self, send_ns: u64, at: Instant) -> u64 {
        let sent_at = self.epoch + Duration::from_nanos(send_ns);
        u64::try_from(at.saturating_duration_since(sent_at).as_micros()).unwrap_or(u64::MAX)
    }
}

pub(crate) fn ns_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// A snapshot of the CPU counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSample {
    pub(crate) at: Option<Instant>,
    pub(crate) server_threads: u64,
    pub(crate) client_threads: u64,
    pub(crate) process: Option<u64>,
    pub(crate) server_process: Option<u64>,
    pub(crate) machine: Option<u64>,
}

pub(crate) fn sample_cpu(server_pid: Option<u32>) -> CpuSample {
    let by_prefix = procfs::thread_cpu_ticks_by_prefix(&[SERVER_THREAD, CLIENT_THREAD]);
    CpuSample {
        at: Some(Instant::now()),
        server_threads: by_prefix[0],
        client_threads: by_prefix[1],
        process: procfs::process_cpu_ticks("self"),
        server_process: server_pid.and_then(|pid| procfs::process_cpu_ticks(&pid.to_string())),
        machine: procfs::machine_busy_ticks(),
    }
}

/// CPU use between two samples. The server's share is its runtime's threads
/// when `server_in_process`, else the sampled server process's.
pub(crate) fn cpu_figures(
    cpu0: &CpuSample,
    cpu1: &CpuSample,
    server_in_process: bool,
) -> CpuFigures {
    let clk_tck = procfs::clock_ticks_per_second();
    let secs = match (cpu0.at, cpu1.at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let pct = |a: u64, b: u64| procfs::cpu_pct(b.saturating_sub(a), clk_tck, secs);
    let both = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| pct(a, b));
    CpuFigures {
        server_pct: if server_in_process {
            Some(pct(cpu0.server_threads, cpu1.server_threads))
        } else {
            both(cpu0.server_process, cpu1.server_process)
        },
        loadgen_pct: Some(pct(cpu0.client_threads, cpu1.client_threads)),
        bench_process_pct: both(cpu0.process, cpu1.process),
        machine_pct: both(cpu0.machine, cpu1.machine),
        clk_tck,
    }
}

/// The machine-wide kernel UDP and TCP counters at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KernelSample {
    udp: Option<procfs::UdpCounters>,
    tcp: Option<procfs::TcpCounters>,
}

impl KernelSample {
    pub(crate) fn now() -> KernelSample {
        KernelSample {
            udp: procfs::udp_counters(),
            tcp: procfs::tcp_counters(),
        }
    }

    /// What the counters grew by from this sample to `later`.
    pub(crate) fn until(self, later: KernelSample) -> (Option<KernelUdp>, Option<KernelTcp>) {
        let udp = self.udp.zip(later.udp).map(|(a, b)| KernelUdp {
            in_datagrams: b.in_datagrams.saturating_sub(a.in_datagrams),
            out_datagrams: b.out_datagrams.saturating_sub(a.out_datagrams),
            rcvbuf_errors: b.rcvbuf_errors.saturating_sub(a.rcvbuf_errors),
            sndbuf_errors: b.sndbuf_errors.saturating_sub(a.sndbuf_errors),
        });
        let tcp = self.tcp.zip(later.tcp).map(|(a, b)| KernelTcp {
            in_segs: b.in_segs.saturating_sub(a.in_segs),
            out_segs: b.out_segs.saturating_sub(a.out_segs),
            retrans_segs: b.retrans_segs.saturating_sub(a.retrans_segs),
        });
        (udp, tcp)
    }
}

fn server_counters(stats: &ServerStats) -> ServerCounters {
    ServerCounters {
        ticks_in: stats.ticks_in.get(),
        ticks_out: stats.ticks_out.get(),
        ticks_dropped: stats.ticks_dropped.get(),
        ticks_rejected: stats.ticks_rejected.get(),
    }
}

/// `b − a` per outcome; outcomes that did not grow are left out.
fn reliable_delta(
    a: &ServerReliableCounters,
    b: &ServerReliableCounters,
) -> ServerReliableCounters {
    ServerReliableCounters {
        state_updates: b
            .state_updates
            .iter()
            .map(|(outcome, &n)| {
                let before = a.state_updates.get(outcome).copied().unwrap_or(0);
                (outcome.clone(), n.saturating_sub(before))
            })
            .filter(|&(_, n)| n > 0)
            .collect(),
        commands: b.commands.saturating_sub(a.commands),
    }
}

fn counters_delta(a: ServerCounters, b: ServerCounters) -> ServerCounters {
    ServerCounters {
        ticks_in: b.ticks_in.saturating_sub(a.ticks_in),
        ticks_out: b.ticks_out.saturating_sub(a.ticks_out),
        ticks_dropped: b.ticks_dropped.saturating_sub(a.ticks_dropped),
        ticks_rejected: b.ticks_rejected.saturating_sub(a.ticks_rejected),
    }
}

/// Runs on the client runtime (its `block_on` future stays on the calling thread).
async fn drive(
    cfg: &BenchConfig,
    urls: &Urls,
    cert_hash: [u8; 32],
    epoch: Instant,
    stats: &StatsSource,
    server_pid: Option<u32>,
    probe: &Arc<RunProbe>,
) -> Result<(ClientTotals, Measurements)> {
    let before = stats.sample().await;
    let (clients, connect_join_us) = connect_all(cfg, urls, cert_hash, probe).await?;
    let after = stats.sample().await;
    let sessions = match (before, after) {
        (Some(a), Some(b)) => Some(PerTransport::delta(a.sessions_opened, b.sessions_opened)),
        _ => None,
    };
    if let Err(e) = check_sessions(cfg, sessions) {
        close_all(clients).await;
        return Err(e);
    }
    let result = measure(cfg, &clients, epoch, stats, server_pid, probe).await;
    close_all(clients).await;
    let (totals, mut m) = result?;
    m.connect_join_us = connect_join_us;
    m.server_sessions_opened = sessions;
    Ok((totals, m))
}

/// The sessions the server opened while the bench connected must be the
/// bench's own, on the transports planned.
fn check_sessions(cfg: &BenchConfig, opened: Option<PerTransport>) -> Result<()> {
    let Some(opened) = opened else {
        return Ok(());
    };
    let per_room = cfg.transport.per_room(cfg.clients_per_room);
    let rooms = u64::from(cfg.rooms);
    let planned = PerTransport {
        webtransport: per_room.webtransport * rooms,
        websocket: per_room.websocket * rooms,
    };
    if opened != planned {
        bail!(
            "the server opened {} WebTransport and {} WebSocket sessions while the bench \
             connected, but the plan was {} and {}: figures would be mislabelled",
            opened.webtransport,
            opened.websocket,
            planned.webtransport,
            planned.websocket
        );
    }
    Ok(())
}

/// Fails unless the client uses the transport it was asked to.
pub(crate) fn check_transport(
    index: u32,
    asked: ClientTransport,
    actual: chorus_client::Transport,
) -> Result<()> {
    if actual != asked.sdk() {
        bail!("client {index} asked for {asked} but the SDK connected with {actual}");
    }
    Ok(())
}

/// Kernel buffer asked for each shared client endpoint's UDP socket: the
/// ticks of many connections arrive on it in bursts.
const SHARED_ENDPOINT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Connects and joins every client, `connect_concurrency` at a time. Any failure
/// fails the run.
async fn connect_all(
    cfg: &BenchConfig,
    urls: &Urls,
    cert_hash: [u8; 32],
    probe: &RunProbe,
) -> Result<(Vec<Connected>, Histogram<u64>)> {
    let total = cfg.total_clients();
    let mut options = ConnectOptions {
        // The bench needs no server clock (latency is measured on this process's
        // monotonic clock), so skip the clock sync at connect and in the background.
        clock_sync_pings: 0,
        clock_sync_interval: Duration::ZERO,
        tick_capacity: cfg.tick_capacity,
        ..ConnectOptions::with_cert_hashes([cert_hash])
    };
    if let Some(bytes) = cfg.datagram_receive_buffer_bytes {
        options.datagram_receive_buffer_bytes = bytes;
    }
    let endpoints = (0..cfg.client_endpoints)
        .map(|_| SharedEndpoint::new(&options, SHARED_ENDPOINT_SOCKET_BUFFER))
        .collect::<Result<Vec<_>, _>>()
        .context("binding the shared client endpoints")?;
    // Each connect is bounded by the SDK (handshake and request timeouts); this
    // bounds the whole phase.
    let waves = u64::from(total).div_ceil(cfg.connect_concurrency as u64);
    let phase_limit = Duration::from_secs(30 + 5 * waves);
    let permits = Arc::new(Semaphore::new(cfg.connect_concurrency));
    let mut set = JoinSet::new();
    for index in 0..total {
        let permits = permits.clone();
        let transport = cfg.transport.of_global(cfg.clients_per_room, index);
        let options = ConnectOptions {
            transport: transport.choice(),
            endpoint: endpoints
                .get(index as usize % endpoints.len().max(1))
                .cloned(),
            ..options.clone()
        };
        let url = urls.of(transport).to_owned();
        // Named per transport mix, so that two runs against one external
        // server never share a room (nor its members still leaving).
        let room_id = format!("bench-{}-{}", cfg.transport, index / cfg.clients_per_room);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| anyhow!("{e}"))?;
            let t0 = Instant::now();
            let client = Client::connect(&url, options)
                .await
                .with_context(|| format!("client {index}: connect to {url} by {transport}"))?;
            // A silent fallback would put this client's figures under the
            // wrong transport.
            check_transport(index, transport, client.transport())?;
            let room = client
                .join(&room_id, JoinOptions::named(format!("bench-{index}")))
                .await
                .with_context(|| format!("client {index}: join {room_id}"))?;
            Ok::<_, anyhow::Error>((
                Connected {
                    index,
                    transport,
                    client,
                    room,
                },
                t0.elapsed(),
            ))
        });
    }
    let Gathered {
        mut clients,
        connect_join_us,
        errors,
    } = gather_connects(set, total, phase_limit, || probe.client_connected()).await;
    if let Some(e) = connect_failure(errors, total) {
        close_all(clients).await;
        return Err(e);
    }
    clients.sort_by_key(|c| c.index);
    Ok((clients, connect_join_us))
}

/// What a run's connect phase gathered.
pub(crate) struct Gathered<T> {
    /// The clients that connected and joined, in the order they finished.
    pub(crate) clients: Vec<T>,
    /// Their connect + join times, µs.
    pub(crate) connect_join_us: Histogram<u64>,
    /// What went wrong for the others.
    pub(crate) errors: Vec<String>,
}

/// Gathers the connect tasks of a run (each gives a client and how long it
/// took to connect and join), `on_connected` hearing each success; tasks
/// still running `phase_limit` from now are aborted and counted as an error.
pub(crate) async fn gather_connects<T: Send + 'static>(
    mut set: JoinSet<Result<(T, Duration)>>,
    total: u32,
    phase_limit: Duration,
    mut on_connected: impl FnMut(),
) -> Gathered<T> {
    let mut gathered = Gathered {
        clients: Vec::with_capacity(total as usize),
        connect_join_us: new_histogram(),
        errors: Vec::new(),
    };
    let deadline = tokio::time::Instant::now() + phase_limit;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Err(_) => {
                gathered.errors.push(format!(
                    "connect phase over {phase_limit:?} ({} of {total} connected)",
                    gathered.clients.len()
                ));
                set.abort_all();
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(join))) => gathered.errors.push(format!("connect task failed: {join}")),
            Ok(Some(Ok(Err(e)))) => gathered.errors.push(format!("{e:#}")),
            Ok(Some(Ok(Ok((c, took))))) => {
                record(
                    &mut gathered.connect_join_us,
                    u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                );
                gathered.clients.push(c);
                on_connected();
            }
        }
    }
    gathered
}

/// The run's error when some of its `total` clients could not connect and
/// join (the first few reasons); `None` when all did.
pub(crate) fn connect_failure(mut errors: Vec<String>, total: u32) -> Option<anyhow::Error> {
    if errors.is_empty() {
        return None;
    }
    let n = errors.len();
    errors.truncate(5);
    Some(anyhow!(
        "{n} of {total} clients could not connect and join; first errors:\n  {}",
        errors.join("\n  ")
    ))
}

/// Waits until every client's replica lists its whole room, since the SDK
/// ignores ticks from members it does not know yet.
async fn wait_for_full_rooms(cfg: &BenchConfig, clients: &[Connected]) -> Result<()> {
    let want = cfg.clients_per_room as usize;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let short = clients
            .iter()
            .filter(|c| c.room.members().len() < want)
            .count();
        if short == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{short} clients still see fewer than {want} members after 15 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn measure(
    cfg: &BenchConfig,
    clients: &[Connected],
    epoch: Instant,
    stats: &StatsSource,
    server_pid: Option<u32>,
    probe: &Arc<RunProbe>,
) -> Result<(ClientTotals, Measurements)> {
    wait_for_full_rooms(cfg, clients).await?;
    if let Some(first) = clients.first() {
        let max = first.room.max_tick_payload();
        payload::check_size(cfg.payload_bytes, max)
            .context("payload does not fit this server or connection")?;
    }

    let tl = Timeline::starting_soon(epoch, cfg);
    probe.set_phases(PhaseTimes {
        start: tl.start,
        window_start: tl.window_start,
        window_end: tl.window_end,
        recv_deadline: tl.recv_deadline,
    });

    let ticks = if cfg.hz > 0.0 {
        let ends = clients
            .iter()
            .map(|c| TickClient {
                index: c.index,
                transport: c.transport,
                sink: c.room.clone(),
                source: c.room.ticks(),
            })
            .collect();
        TickTasks::spawn(cfg, tl, ends, probe)
    } else {
        TickTasks::none()
    };
    let mut lane_tasks = spawn_lanes(cfg, clients, tl);

    let kernel0 = KernelSample::now();
    sleep_until(tl.window_start).await;
    let cpu0 = sample_cpu(server_pid);
    let counters0 = stats.sample().await;
    sleep_until(tl.window_end).await;
    let cpu1 = sample_cpu(server_pid);
    let mem_pid = server_pid.map_or_else(|| "self".to_owned(), |p| p.to_string());
    let (peak_rss_mib, rss_end_mib) = procfs::memory_mib(&mem_pid);
    sleep_until(tl.recv_deadline).await;
    let counters1 = stats.sample().await;
    let sdk_outgoing_replaced = clients
        .iter()
        .map(|c| c.client.outgoing_ticks_dropped())
        .sum();

    let collect_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (totals, _first_send_error) = ticks.collect(collect_deadline).await?;
    let mut state = (cfg.state_rate > 0.0).then(LaneTotals::default);
    let mut commands = (cfg.command_rate > 0.0).then(LaneTotals::default);
    while let Ok(Some(joined)) =
        tokio::time::timeout_at(collect_deadline, lane_tasks.join_next()).await
    {
        let (lane, part) = joined.context("reliable-lane task failed")?;
        let totals = match lane {
            Lane::State => &mut state,
            Lane::Commands => &mut commands,
        };
        if let Some(totals) = totals {
            totals.merge(&part);
        }
    }
    if !lane_tasks.is_empty() {
        bail!("reliable-lane tasks did not finish in time");
    }

    let in_process = matches!(stats, StatsSource::InProcess(_));
    let cpu = cpu_figures(&cpu0, &cpu1, in_process);
    let scope = match (in_process, server_pid) {
        (true, _) => "bench process: in-process server + all clients",
        (false, Some(_)) => "external server process",
        (false, None) => "bench process: clients only (server not sampled)",
    };
    let memory = MemFigures {
        peak_rss_mib,
        rss_end_mib,
        peak_since_run_start: false,
        scope: scope.to_owned(),
    };
    let (server_counters, server_reliable) = match (&counters0, &counters1) {
        (Some(a), Some(b)) => (
            Some(counters_delta(a.ticks, b.ticks)),
            a.reliable
                .as_ref()
                .zip(b.reliable.as_ref())
                .map(|(a, b)| reliable_delta(a, b)),
        ),
        _ => (None, None),
    };
    let (kernel_udp, kernel_tcp) = kernel0.until(KernelSample::now());
    Ok((
        totals,
        Measurements {
            // Ticks are counted by send time in [window_start, window_end): the
            // nominal duration is the rate denominator. CPU uses the sampled span.
            window_s: cfg.duration.as_secs_f64(),
            connect_join_us: new_histogram(),
            cpu,
            memory,
            server_counters,
            server_sessions_opened: None,
            kernel_udp,
            kernel_tcp,
            sdk_outgoing_replaced,
            server_reliable,
            state,
            commands,
        },
    ))
}

/// A permutation of `0..n` shuffled by `seed`: the order in which senders
/// take their slot of a period, so that they do not all fire at once.
fn stagger_slots(n: usize, seed: u64) -> Vec<usize> {
    let mut slots: Vec<usize> = (0..n).collect();
    let mut rng = seed;
    for i in (1..n).rev() {
        let j = (payload::splitmix64(&mut rng) % (i as u64 + 1)) as usize;
        slots.swap(i, j);
    }
    slots
}

/// Starts the reliable loads: per room and lane one sender (staggered over
/// the lane's period across rooms), per client and lane one receiver, each
/// subscribed before the first request goes out.
fn spawn_lanes(
    cfg: &BenchConfig,
    clients: &[Connected],
    tl: Timeline,
) -> JoinSet<(Lane, LaneTotals)> {
    let mut tasks = JoinSet::new();
    let per_room = cfg.clients_per_room as usize;
    let rooms = clients.len().div_ceil(per_room.max(1));
    for (lane, rate) in cfg.lanes() {
        let period = Duration::from_secs_f64(1.0 / rate);
        // Each lane its own order, so the lanes do not fire in step.
        let slots = stagger_slots(rooms, cfg.seed ^ (lane as u64 + 1));
        for (room, slot) in clients.chunks(per_room).zip(slots) {
            let offset = period.mul_f64(slot as f64 / rooms as f64);
            let members = room
                .iter()
                .map(|c| LaneSender {
                    index: c.index,
                    room: c.room.clone(),
                })
                .collect();
            tasks.spawn(async move {
                (
                    lane,
                    reliable::send_loop(lane, members, tl, offset, period).await,
                )
            });
        }
        for c in clients {
            let me = LaneReceiver {
                me: c.index,
                room_index: c.index / cfg.clients_per_room,
                clients_per_room: cfg.clients_per_room,
            };
            match lane {
                Lane::State => {
                    let events = c.room.events();
                    tasks.spawn(async move {
                        (
                            lane,
                            reliable::fanout_loop(events, reliable::state_value, me, tl).await,
                        )
                    });
                }
                Lane::Commands => {
                    let events = c.room.commands();
                    tasks.spawn(async move {
                        (
                            lane,
                            reliable::fanout_loop(events, reliable::command_payload, me, tl).await,
                        )
                    });
                }
            }
        }
    }
    tasks
}

pub(crate) async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
}

/// Where one client sends its ticks: a Chorus [`Room`], or a baseline relay's
/// [`TickSender`](crate::baselines::TickSender) ([`crate::baseline_run`]).
pub(crate) trait TickSink: Send + 'static {
    /// Hands one tick to the transport; `Err` says why it was refused.
    fn send(&self, payload: &[u8]) -> impl Future<Output = Result<(), String>> + Send;
}

impl TickSink for Room {
    async fn send(&self, payload: &[u8]) -> Result<(), String> {
        self.send_tick(payload).map(drop).map_err(|e| e.to_string())
    }
}

/// Where one client's receiver reads the ticks of its room-mates: the Chorus
/// SDK's [`TickReceiver`](chorus_client::TickReceiver), or a baseline relay's
/// [`TickStream`](crate::baselines::TickStream).
pub(crate) trait TickSource: Send + 'static {
    /// The next tick's payload and when it was read off the connection;
    /// `None` once the stream has ended.
    fn next_tick(&mut self) -> impl Future<Output = Option<(Bytes, Instant)>> + Send;
    /// Ticks the bounded receive buffer lost because the reader fell behind.
    fn lost_to_lag(&self) -> u64;
}

impl TickSource for chorus_client::TickReceiver {
    async fn next_tick(&mut self) -> Option<(Bytes, Instant)> {
        self.recv().await.map(|t| (t.payload, t.received_at))
    }

    fn lost_to_lag(&self) -> u64 {
        self.dropped()
    }
}

/// One client's two ends of the tick load.
pub(crate) struct TickClient<S, T> {
    /// Global client index.
    pub(crate) index: u32,
    pub(crate) transport: ClientTransport,
    pub(crate) sink: S,
    pub(crate) source: T,
}

/// The tick load's sender and receiver tasks.
pub(crate) struct TickTasks {
    senders: JoinSet<(ClientTotals, Option<String>)>,
    receivers: JoinSet<ClientTotals>,
}

impl TickTasks {
    /// No tick load (`--hz 0`).
    pub(crate) fn none() -> TickTasks {
        TickTasks {
            senders: JoinSet::new(),
            receivers: JoinSet::new(),
        }
    }

    /// Per client a sender, firing every `1 / hz` from `tl.start` plus its
    /// slot of the period (the slots a seeded permutation, so that senders do
    /// not all fire at once), and a receiver counting its room-mates' ticks.
    pub(crate) fn spawn<S: TickSink, T: TickSource>(
        cfg: &BenchConfig,
        tl: Timeline,
        clients: Vec<TickClient<S, T>>,
        probe: &Arc<RunProbe>,
    ) -> TickTasks {
        let mut tasks = TickTasks::none();
        let n = clients.len();
        let period = Duration::from_secs_f64(1.0 / cfg.hz);
        for (c, slot) in clients.into_iter().zip(stagger_slots(n, cfg.seed)) {
            let offset = period.mul_f64(slot as f64 / n as f64);
            let seed = cfg.seed ^ u64::from(c.index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let me = Sender {
                index: c.index,
                transport: c.transport,
                probe: probe.clone(),
            };
            let size = cfg.payload_bytes;
            tasks
                .senders
                .spawn(send_loop(c.sink, me, size, seed, tl, offset, period));
            let plan = RoomPlan {
                room_index: c.index / cfg.clients_per_room,
                clients_per_room: cfg.clients_per_room,
                mix: cfg.transport,
                me: c.transport,
                index: c.index,
            };
            tasks
                .receivers
                .spawn(receive_loop(c.source, plan, tl, probe.clone()));
        }
        tasks
    }

    /// Waits (until `deadline`) for every task and merges their totals; also
    /// the first refusal a sender met. Senders stop at the window end and
    /// receivers at the drain deadline: `deadline` only guards against a task
    /// that does not.
    pub(crate) async fn collect(
        mut self,
        deadline: tokio::time::Instant,
    ) -> Result<(ClientTotals, Option<String>)> {
        let mut totals = ClientTotals::default();
        let mut send_error = None;
        while let Ok(Some(joined)) =
            tokio::time::timeout_at(deadline, self.senders.join_next()).await
        {
            let (sender_totals, first_error) = joined.context("sender task failed")?;
            totals.merge(&sender_totals);
            if send_error.is_none() {
                send_error = first_error;
            }
        }
        while let Ok(Some(joined)) =
            tokio::time::timeout_at(deadline, self.receivers.join_next()).await
        {
            totals.merge(&joined.context("receiver task failed")?);
        }
        if !self.senders.is_empty() || !self.receivers.is_empty() {
            bail!("tick sender or receiver tasks did not finish in time");
        }
        if let Some(e) = &send_error {
            tracing::warn!(errors = totals.send_errors, first = %e, "ticks refused");
        }
        Ok((totals, send_error))
    }
}

/// Who sends.
#[derive(Debug, Clone)]
struct Sender {
    index: u32,
    transport: ClientTransport,
    /// Where the sender's running count goes.
    probe: Arc<RunProbe>,
}

/// Sends ticks from `start + offset` every `period` until the window ends.
/// Returns the sender's counts (sent, refused, lateness) and its first refusal.
async fn send_loop(
    sink: impl TickSink,
    me: Sender,
    size: usize,
    seed: u64,
    tl: Timeline,
    offset: Duration,
    period: Duration,
) -> (ClientTotals, Option<String>) {
    let mut buf = payload::padded_buffer(size, seed);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::from_std(tl.start + offset), period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut totals = ClientTotals::default();
    let mut first_error = None;
    let mut seq = 0u32;
    loop {
        let scheduled = ticker.tick().await.into_std();
        let now = Instant::now();
        if now >= tl.window_end {
            break;
        }
        let send_ns = ns_since(tl.epoch, now);
        let header = Header {
            sender: me.index,
            send_ns,
            seq,
        };
        seq = seq.wrapping_add(1);
        if header.write(&mut buf).is_err() {
            // Unreachable: the size was checked against the header length.
            totals.send_errors += 1;
            continue;
        }
        let in_window = send_ns >= tl.window_start_ns;
        if in_window {
            let late = now.saturating_duration_since(scheduled).as_micros();
            record(
                &mut totals.send_lateness_us,
                u64::try_from(late).unwrap_or(u64::MAX),
            );
        }
        match sink.send(&buf).await {
            Ok(()) if in_window => {
                totals.record_sent(me.transport);
                me.probe.store_sent(me.index, totals.sent);
            }
            Ok(()) => {}
            Err(e) => {
                if in_window {
                    totals.send_errors += 1;
                }
                first_error.get_or_insert(e);
            }
        }
    }
    (totals, first_error)
}

/// What a receiver knows about its room.
#[derive(Debug, Clone, Copy)]
struct RoomPlan {
    room_index: u32,
    clients_per_room: u32,
    /// Gives each sender's transport from its index in the room.
    mix: TransportMix,
    /// This receiver's transport.
    me: ClientTransport,
    /// This receiver's global index.
    index: u32,
}

/// Deliveries a receiver has counted but not yet put into its histograms.
///
/// Recording one sample at a time cost about 140 ns at S2 (6 % of the load
/// generator's CPU): 500 receivers' histograms (three each, 140 kB apiece)
/// do not fit in cache together, so almost every record missed. In batches,
/// a histogram's hot counters are loaded once per batch.
#[derive(Debug, Default)]
struct DeliveryBatch {
    /// `(sender's transport, one-way latency µs, SDK hand-off µs)`.
    pending: Vec<(ClientTransport, u64, u64)>,
}

impl DeliveryBatch {
    /// Deliveries held before [`flush_into`](Self::flush_into) is due.
    const CAPACITY: usize = 512;

    fn push(&mut self, from: ClientTransport, latency_us: u64, handoff_us: u64) {
        self.pending.push((from, latency_us, handoff_us));
    }

    fn is_full(&self) -> bool {
        self.pending.len() >= Self::CAPACITY
    }

    fn len(&self) -> u64 {
        self.pending.len() as u64
    }

    /// Records the held deliveries of a receiver on `to` into `totals`.
    fn flush_into(&mut self, totals: &mut ClientTotals, to: ClientTransport) {
        for &(_, _, handoff_us) in &self.pending {
            record(&mut totals.handoff_us, handoff_us);
        }
        for (from, latency_us, _) in self.pending.drain(..) {
            totals.record_delivery(from, to, latency_us);
        }
    }
}

/// Receives ticks until the drain deadline, counting those sent in the window.
async fn receive_loop(
    mut ticks: impl TickSource,
    plan: RoomPlan,
    tl: Timeline,
    probe: Arc<RunProbe>,
) -> ClientTotals {
    let mut totals = ClientTotals::default();
    let mut series = probe.new_series(plan.me);
    let mut received = 0u64;
    let mut senders = RoomSenders::new(plan.room_index, plan.clients_per_room);
    let mut batch = DeliveryBatch::default();
    // One timer for the whole loop: a `timeout_at` per tick would register
    // and cancel a timer entry for every tick that had to be waited for,
    // about 3 % of the load generator's CPU at S2.
    let deadline = tokio::time::sleep_until(tokio::time::Instant::from_std(tl.recv_deadline));
    tokio::pin!(deadline);
    loop {
        // The tick first, as `timeout_at` polls it: one already there counts.
        let next = tokio::select! {
            biased;
            tick = ticks.next_tick() => tick,
            () = &mut deadline => break,
        };
        let Some((payload, received_at)) = next else {
            totals.receivers_ended_early += 1;
            break;
        };
        // Live count for the progress bar and the plot's series: a store
        // and an array slot, no lock.
        series.record(received_at);
        received += 1;
        probe.store_received(plan.index, received);
        let Some((in_room, h)) = senders.receive(&payload, tl.window_ns(), &mut totals.anomalies)
        else {
            continue;
        };
        let handoff = Instant::now()
            .saturating_duration_since(received_at)
            .as_micros();
        batch.push(
            plan.mix.of(in_room),
            tl.us_since_sent(h.send_ns, received_at),
            u64::try_from(handoff).unwrap_or(u64::MAX),
        );
        if batch.is_full() {
            batch.flush_into(&mut totals, plan.me);
        }
        probe.store_delivered(plan.index, totals.delivered + batch.len());
    }
    batch.flush_into(&mut totals, plan.me);
    totals.sdk_dropped = ticks.lost_to_lag();
    probe.submit(series);
    totals
}

/// Closes every client at once, bounded.
async fn close_all(clients: Vec<Connected>) {
    crate::server_target::close_clients(clients.into_iter().map(|c| (c.client, c.room))).await;
}

pub(crate) fn run_meta() -> RunMeta {
    let usable = std::thread::available_parallelism().map_or(0, |n| n.get());
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    RunMeta {
        timestamp: rfc3339_utc(unix),
        timestamp_unix: unix,
        git_commit: git(&["rev-parse", "HEAD"]),
        git_dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        cores: procfs::machine_cores().unwrap_or(usable),
        usable_cores: usable,
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(transport: TransportMix, rooms: u32, clients: u32) -> BenchConfig {
        BenchConfig {
            rooms,
            clients_per_room: clients,
            hz: 30.0,
            payload_bytes: 48,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            drain: Duration::from_millis(100),
            seed: 1,
            tick_capacity: 64,
            datagram_receive_buffer_bytes: None,
            client_endpoints: 0,
            connect_concurrency: 1,
            server_threads: 1,
            client_threads: 1,
            target: Target::InProcess {
                cert_dir: PathBuf::from("unused"),
            },
            transport,
            ws_tls: false,
            state_rate: 0.0,
            command_rate: 0.0,
            scenario: None,
            scenario_overrides: Vec::new(),
        }
    }

    #[test]
    fn a_run_needs_some_load_and_sane_rates() {
        let base = cfg(TransportMix::WebTransport, 1, 2);
        assert!(base.validate().is_ok());
        let no_ticks = BenchConfig {
            hz: 0.0,
            ..base.clone()
        };
        let err = no_ticks.validate().expect_err("nothing to send");
        assert!(err.to_string().contains("nothing to send"), "{err}");
        let state_alone = BenchConfig {
            state_rate: 5.0,
            ..no_ticks.clone()
        };
        assert!(state_alone.validate().is_ok());
        assert_eq!(state_alone.lanes(), [(Lane::State, 5.0)]);
        let both = BenchConfig {
            command_rate: 2.0,
            ..state_alone
        };
        assert_eq!(both.lanes(), [(Lane::State, 5.0), (Lane::Commands, 2.0)]);
        for bad in [-1.0, f64::NAN, f64::INFINITY, MAX_LANE_RATE * 2.0, 1e-300] {
            let c = BenchConfig {
                command_rate: bad,
                ..base.clone()
            };
            assert!(c.validate().is_err(), "{bad}");
            let c = BenchConfig {
                hz: bad,
                state_rate: 1.0,
                ..base.clone()
            };
            assert!(c.validate().is_err(), "hz {bad}");
        }
        assert!(base.lanes().is_empty());
    }

    #[test]
    fn stagger_slots_are_a_seeded_permutation() {
        let mut slots = stagger_slots(50, 3);
        assert_eq!(slots, stagger_slots(50, 3));
        assert_ne!(slots, stagger_slots(50, 4));
        slots.sort_unstable();
        assert_eq!(slots, (0..50).collect::<Vec<_>>());
        assert!(stagger_slots(0, 1).is_empty());
    }

    #[test]
    fn reliable_counters_are_a_delta_by_outcome() {
        let at = |applied, conflict, commands| ServerReliableCounters {
            state_updates: [("applied", applied), ("conflict", conflict)]
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .map(|(k, n)| (k.to_owned(), n))
                .collect(),
            commands,
        };
        let d = reliable_delta(&at(10, 0, 5), &at(25, 2, 9));
        assert_eq!(d, at(15, 2, 4));
        // An outcome that did not grow is left out.
        assert_eq!(reliable_delta(&at(10, 2, 5), &at(12, 2, 5)), at(2, 0, 0));
    }

    #[test]
    fn websocket_url_follows_the_webtransport_one() {
        let url = "https://127.0.0.1:4433/chorus";
        assert_eq!(
            derive_ws_url(url, false).expect("valid"),
            "ws://127.0.0.1:4433/chorus"
        );
        assert_eq!(
            derive_ws_url(url, true).expect("valid"),
            "wss://127.0.0.1:4433/chorus"
        );
        assert_eq!(
            derive_ws_url("https://[::1]:9/x?y=1", false).expect("valid"),
            "ws://[::1]:9/x?y=1"
        );
        assert!(derive_ws_url("http://x/chorus", false).is_err());
        assert!(check_ws_url("ws://127.0.0.1:1/chorus").is_ok());
        assert!(check_ws_url("wss://127.0.0.1:1/chorus").is_ok());
        assert!(check_ws_url("https://127.0.0.1:1/chorus").is_err());
        assert_eq!(http_authority(url).expect("valid"), "127.0.0.1:4433");
        assert_eq!(
            http_authority("https://[::1]:4433/chorus").expect("valid"),
            "[::1]:4433"
        );
    }

    #[test]
    fn a_client_on_the_wrong_transport_fails_the_run() {
        assert!(
            check_transport(
                3,
                ClientTransport::WebSocket,
                chorus_client::Transport::WebSocket
            )
            .is_ok()
        );
        let err = check_transport(
            3,
            ClientTransport::WebTransport,
            chorus_client::Transport::WebSocket,
        )
        .expect_err("fallback must fail");
        assert!(
            err.to_string().contains("client 3 asked for webtransport"),
            "{err}"
        );
    }

    #[test]
    fn server_sessions_must_match_the_plan() {
        // 4 rooms of 5 mixed: 3 WT + 2 WS per room.
        let c = cfg(TransportMix::Mixed, 4, 5);
        let planned = PerTransport {
            webtransport: 12,
            websocket: 8,
        };
        assert!(check_sessions(&c, Some(planned)).is_ok());
        assert!(check_sessions(&c, None).is_ok(), "unknown: not checked");
        let fell_back = PerTransport {
            webtransport: 11,
            websocket: 9,
        };
        let err = check_sessions(&c, Some(fell_back)).expect_err("mismatch");
        assert!(err.to_string().contains("mislabelled"), "{err}");
        let c = cfg(TransportMix::WebSocket, 2, 3);
        assert!(
            check_sessions(
                &c,
                Some(PerTransport {
                    webtransport: 0,
                    websocket: 6
                })
            )
            .is_ok()
        );
        assert!(c.uses_websocket());
        assert!(!cfg(TransportMix::WebTransport, 1, 2).uses_websocket());
        assert!(!cfg(TransportMix::Mixed, 1, 1).uses_websocket());
    }

    #[test]
    fn stats_are_read_from_an_http_reply() {
        let body = r#"{"server_time":"x","totals":{"rooms":1,"members":2,
            "sessions":{"webtransport":{"open":1,"opened":4},"websocket":{"open":1,"opened":3},"total_open":2},
            "ticks_in":10,"ticks_out":20,"ticks_dropped":2,"ticks_rejected":1,"reliable_in":0}}"#;
        let raw = format!(
            "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let got = http_ok_body(raw.as_bytes()).expect("200");
        assert_eq!(got, body);
        assert_eq!(
            parse_stats_json(&got),
            Some(StatsSnapshot {
                ticks: ServerCounters {
                    ticks_in: 10,
                    ticks_out: 20,
                    ticks_dropped: 2,
                    ticks_rejected: 1,
                },
                sessions_opened: PerTransport {
                    webtransport: 4,
                    websocket: 3,
                },
                // A /stats without them (an older server): not an error.
                reliable: None,
            })
        );
        let with_reliable = body.replace(
            r#""reliable_in":0"#,
            r#""reliable_in":0,"state_updates":{"applied":7,"rate_limited":1},"commands":3"#,
        );
        assert_eq!(
            parse_stats_json(&with_reliable).and_then(|s| s.reliable),
            Some(ServerReliableCounters {
                state_updates: [("applied".to_owned(), 7), ("rate_limited".to_owned(), 1)]
                    .into_iter()
                    .collect(),
                commands: 3,
            })
        );
        assert_eq!(http_ok_body(b"HTTP/1.1 404 Not Found\r\n\r\n{}"), None);
        assert_eq!(http_ok_body(b"garbage"), None);
        assert_eq!(parse_stats_json(r#"{"totals":{"ticks_in":1}}"#), None);
        assert_eq!(parse_stats_json("not json"), None);
    }
}
