//! One bench run: start (or reach) a server, connect R × C clients, send ticks
//! at H Hz for warm-up + duration, drain, measure, and hand back a [`Report`].
//!
//! Threads: the in-process server runs on its own multi-thread runtime whose
//! threads are named [`SERVER_THREAD`] (its QUIC endpoint driver tasks run there
//! too, since the endpoint is created on it); every client runs on a second
//! runtime named [`CLIENT_THREAD`]. CPU is attributed by thread name from
//! `/proc/self/task`. The orchestration itself (sleeping, sampling) runs on the
//! calling thread, which belongs to neither.

use crate::payload::{self, Header, Seen, SeenWindow};
use crate::procfs;
use crate::report::{
    ClientTotals, CpuFigures, KernelUdp, Measurements, MemFigures, Params, Report, RunMeta,
    ServerCounters, new_histogram, record, rfc3339_utc,
};
use anyhow::{Context, Result, anyhow, bail};
use chorus_client::{Client, ConnectOptions, JoinOptions, Room};
use chorus_server::stats::ServerStats;
use chorus_server::{RunningServer, Server, ServerConfig};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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
        url: String,
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
    pub connect_concurrency: usize,
    pub server_threads: usize,
    pub client_threads: usize,
    pub target: Target,
}

impl BenchConfig {
    fn validate(&self) -> Result<()> {
        if self.rooms == 0 || self.clients_per_room == 0 {
            bail!("--rooms and --clients must be at least 1");
        }
        self.rooms
            .checked_mul(self.clients_per_room)
            .context("rooms x clients overflows")?;
        if !(self.hz.is_finite() && self.hz > 0.0 && self.hz <= 1000.0) {
            bail!("--hz must be in (0, 1000], got {}", self.hz);
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

    fn total_clients(&self) -> u32 {
        self.rooms * self.clients_per_room
    }

    fn params(&self, url: &str) -> Params {
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
            connect_concurrency: self.connect_concurrency,
            server: match self.target {
                Target::InProcess { .. } => "in-process".into(),
                Target::External { .. } => "external".into(),
            },
            url: url.to_owned(),
        }
    }
}

/// Runs the bench; blocks the calling thread (which must not be inside a Tokio
/// runtime) until the run is over, at most a bounded time after `warmup + duration`.
pub fn run(cfg: &BenchConfig) -> Result<Report> {
    cfg.validate()?;
    let epoch = Instant::now();

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
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.client_threads)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()
        .context("building the client runtime")?;

    let server = match (&cfg.target, &server_rt) {
        (Target::InProcess { cert_dir }, Some(rt)) => Some(start_server(cfg, cert_dir, rt)?),
        _ => None,
    };
    let (url, cert_hash) = match (&cfg.target, &server) {
        (_, Some(s)) => (s.url(), s.cert_hash()),
        (Target::External { url, cert_hash, .. }, None) => (url.clone(), *cert_hash),
        (Target::InProcess { .. }, None) => bail!("in-process server did not start"),
    };
    let stats = server.as_ref().map(|s| s.stats().clone());
    let server_pid = match cfg.target {
        Target::External { server_pid, .. } => server_pid,
        Target::InProcess { .. } => None,
    };

    let outcome = client_rt.block_on(drive(cfg, &url, cert_hash, epoch, stats, server_pid));

    if let (Some(server), Some(rt)) = (server, &server_rt) {
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
        });
    }
    client_rt.shutdown_timeout(Duration::from_secs(2));
    if let Some(rt) = server_rt {
        rt.shutdown_timeout(Duration::from_secs(2));
    }

    let (totals, measurements) = outcome?;
    let meta = run_meta();
    Ok(Report::compute(
        cfg.params(&url),
        meta,
        &totals,
        measurements,
    ))
}

fn start_server(
    cfg: &BenchConfig,
    cert_dir: &std::path::Path,
    rt: &Runtime,
) -> Result<RunningServer> {
    let mut config = ServerConfig::ephemeral(cert_dir);
    let limits = &mut config.session.limits;
    limits.max_members_per_room = limits.max_members_per_room.max(cfg.clients_per_room);
    config.rooms.max_rooms = config.rooms.max_rooms.max(cfg.rooms);
    // Spawned, so that the endpoint (and its driver task) lives on a server thread.
    rt.block_on(async { tokio::spawn(Server::start(config)).await })
        .context("server start task failed")?
        .context("starting the in-process server")
}

/// One connected client.
struct Connected {
    index: u32,
    client: Client,
    room: Room,
}

/// Where the run is in time. Send times are ns since `epoch`.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    epoch: Instant,
    start: Instant,
    window_start: Instant,
    window_end: Instant,
    recv_deadline: Instant,
    window_start_ns: u64,
    window_end_ns: u64,
}

fn ns_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// A snapshot of the CPU counters.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    at: Option<Instant>,
    server_threads: u64,
    client_threads: u64,
    process: Option<u64>,
    server_process: Option<u64>,
    machine: Option<u64>,
}

fn sample_cpu(server_pid: Option<u32>) -> CpuSample {
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

fn server_counters(stats: &ServerStats) -> ServerCounters {
    ServerCounters {
        ticks_in: stats.ticks_in.get(),
        ticks_out: stats.ticks_out.get(),
        ticks_dropped: stats.ticks_dropped.get(),
        ticks_rejected: stats.ticks_rejected.get(),
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
    url: &str,
    cert_hash: [u8; 32],
    epoch: Instant,
    stats: Option<Arc<ServerStats>>,
    server_pid: Option<u32>,
) -> Result<(ClientTotals, Measurements)> {
    let (clients, connect_join_us) = connect_all(cfg, url, cert_hash).await?;
    let result = measure(cfg, &clients, epoch, stats, server_pid).await;
    close_all(clients).await;
    let (totals, mut m) = result?;
    m.connect_join_us = connect_join_us;
    Ok((totals, m))
}

/// Connects and joins every client, `connect_concurrency` at a time. Any failure
/// fails the run.
async fn connect_all(
    cfg: &BenchConfig,
    url: &str,
    cert_hash: [u8; 32],
) -> Result<(Vec<Connected>, Histogram<u64>)> {
    let total = cfg.total_clients();
    let options = ConnectOptions {
        // The bench needs no server clock (latency is measured on this process's
        // monotonic clock), so skip the clock sync at connect and in the background.
        clock_sync_pings: 0,
        clock_sync_interval: Duration::ZERO,
        tick_capacity: cfg.tick_capacity,
        ..ConnectOptions::with_cert_hashes([cert_hash])
    };
    // Each connect is bounded by the SDK (handshake and request timeouts); this
    // bounds the whole phase.
    let waves = u64::from(total).div_ceil(cfg.connect_concurrency as u64);
    let phase_limit = Duration::from_secs(30 + 5 * waves);
    let permits = Arc::new(Semaphore::new(cfg.connect_concurrency));
    let mut set = JoinSet::new();
    for index in 0..total {
        let permits = permits.clone();
        let options = options.clone();
        let url = url.to_owned();
        let room_id = format!("bench-{}", index / cfg.clients_per_room);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| anyhow!("{e}"))?;
            let t0 = Instant::now();
            let client = Client::connect(&url, options)
                .await
                .with_context(|| format!("client {index}: connect to {url}"))?;
            let room = client
                .join(&room_id, JoinOptions::named(format!("bench-{index}")))
                .await
                .with_context(|| format!("client {index}: join {room_id}"))?;
            Ok::<_, anyhow::Error>((
                Connected {
                    index,
                    client,
                    room,
                },
                t0.elapsed(),
            ))
        });
    }
    let mut connected = Vec::with_capacity(total as usize);
    let mut hist = new_histogram();
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + phase_limit;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Err(_) => {
                errors.push(format!(
                    "connect phase over {phase_limit:?} ({} of {total} connected)",
                    connected.len()
                ));
                set.abort_all();
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(join))) => errors.push(format!("connect task failed: {join}")),
            Ok(Some(Ok(Err(e)))) => errors.push(format!("{e:#}")),
            Ok(Some(Ok(Ok((c, took))))) => {
                hist.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
                connected.push(c);
            }
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(5);
        close_all(connected).await;
        bail!(
            "{n} of {total} clients could not connect and join; first errors:\n  {}",
            errors.join("\n  ")
        );
    }
    connected.sort_by_key(|c| c.index);
    Ok((connected, hist))
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
    stats: Option<Arc<ServerStats>>,
    server_pid: Option<u32>,
) -> Result<(ClientTotals, Measurements)> {
    wait_for_full_rooms(cfg, clients).await?;
    if let Some(first) = clients.first() {
        let max = first.room.max_tick_payload();
        payload::check_size(cfg.payload_bytes, max)
            .context("payload does not fit this server or connection")?;
    }

    let start = Instant::now() + Duration::from_millis(100);
    let window_start = start + cfg.warmup;
    let window_end = window_start + cfg.duration;
    let tl = Timeline {
        epoch,
        start,
        window_start,
        window_end,
        recv_deadline: window_end + cfg.drain,
        window_start_ns: ns_since(epoch, window_start),
        window_end_ns: ns_since(epoch, window_end),
    };

    // Stagger: client i fires at start + period × slot(i) / n, slots shuffled by seed.
    let n = clients.len();
    let mut slots: Vec<usize> = (0..n).collect();
    let mut rng = cfg.seed;
    for i in (1..n).rev() {
        let j = (payload::splitmix64(&mut rng) % (i as u64 + 1)) as usize;
        slots.swap(i, j);
    }
    let period = Duration::from_secs_f64(1.0 / cfg.hz);

    let mut senders = JoinSet::new();
    let mut receivers = JoinSet::new();
    for (c, slot) in clients.iter().zip(slots) {
        let offset = period.mul_f64(slot as f64 / n as f64);
        let room = c.room.clone();
        let seed = cfg.seed ^ u64::from(c.index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (index, size) = (c.index, cfg.payload_bytes);
        senders.spawn(send_loop(room, index, size, seed, tl, offset, period));
        let room_index = c.index / cfg.clients_per_room;
        receivers.spawn(receive_loop(
            c.room.ticks(),
            room_index,
            cfg.clients_per_room,
            tl,
        ));
    }

    let udp0 = procfs::udp_counters();
    sleep_until(tl.window_start).await;
    let cpu0 = sample_cpu(server_pid);
    let counters0 = stats.as_deref().map(server_counters);
    sleep_until(tl.window_end).await;
    let cpu1 = sample_cpu(server_pid);
    let mem_pid = server_pid.map_or_else(|| "self".to_owned(), |p| p.to_string());
    let (peak_rss_mib, rss_end_mib) = procfs::memory_mib(&mem_pid);
    sleep_until(tl.recv_deadline).await;
    let counters1 = stats.as_deref().map(server_counters);
    let udp1 = procfs::udp_counters();

    // Senders stop at the window end and receivers at the drain deadline; this
    // bound only guards against a task that does not.
    let mut totals = ClientTotals::default();
    let mut send_error = None;
    let collect_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(joined)) =
        tokio::time::timeout_at(collect_deadline, senders.join_next()).await
    {
        let (sender_totals, first_error) = joined.context("sender task failed")?;
        totals.merge(&sender_totals);
        if send_error.is_none() {
            send_error = first_error;
        }
    }
    while let Ok(Some(joined)) =
        tokio::time::timeout_at(collect_deadline, receivers.join_next()).await
    {
        totals.merge(&joined.context("receiver task failed")?);
    }
    if !senders.is_empty() || !receivers.is_empty() {
        bail!("sender or receiver tasks did not finish in time");
    }
    if let Some(e) = send_error {
        tracing::warn!(errors = totals.send_errors, first = %e, "send_tick refused ticks");
    }

    let clk_tck = procfs::clock_ticks_per_second();
    let secs = match (cpu0.at, cpu1.at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let pct = |a: u64, b: u64| procfs::cpu_pct(b.saturating_sub(a), clk_tck, secs);
    let in_process = stats.is_some();
    let cpu = CpuFigures {
        server_pct: if in_process {
            Some(pct(cpu0.server_threads, cpu1.server_threads))
        } else {
            match (cpu0.server_process, cpu1.server_process) {
                (Some(a), Some(b)) => Some(pct(a, b)),
                _ => None,
            }
        },
        loadgen_pct: Some(pct(cpu0.client_threads, cpu1.client_threads)),
        bench_process_pct: match (cpu0.process, cpu1.process) {
            (Some(a), Some(b)) => Some(pct(a, b)),
            _ => None,
        },
        machine_pct: match (cpu0.machine, cpu1.machine) {
            (Some(a), Some(b)) => Some(pct(a, b)),
            _ => None,
        },
        clk_tck,
    };
    let scope = match (in_process, server_pid) {
        (true, _) => "bench process: in-process server + all clients",
        (false, Some(_)) => "external server process",
        (false, None) => "bench process: clients only (server not sampled)",
    };
    let memory = MemFigures {
        peak_rss_mib,
        rss_end_mib,
        scope: scope.to_owned(),
    };
    let server_counters = match (counters0, counters1) {
        (Some(a), Some(b)) => Some(counters_delta(a, b)),
        _ => None,
    };
    let kernel_udp = match (udp0, udp1) {
        (Some(a), Some(b)) => Some(KernelUdp {
            in_datagrams: b.in_datagrams.saturating_sub(a.in_datagrams),
            out_datagrams: b.out_datagrams.saturating_sub(a.out_datagrams),
            rcvbuf_errors: b.rcvbuf_errors.saturating_sub(a.rcvbuf_errors),
            sndbuf_errors: b.sndbuf_errors.saturating_sub(a.sndbuf_errors),
        }),
        _ => None,
    };
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
            kernel_udp,
        },
    ))
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
}

/// Sends ticks from `start + offset` every `period` until the window ends.
/// Returns the sender's counts (sent, refused, lateness) and its first refusal.
async fn send_loop(
    room: Room,
    index: u32,
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
            sender: index,
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
        match room.send_tick(&buf) {
            Ok(_) if in_window => totals.sent += 1,
            Ok(_) => {}
            Err(e) => {
                if in_window {
                    totals.send_errors += 1;
                }
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (totals, first_error)
}

/// Receives ticks until the drain deadline, counting those sent in the window.
async fn receive_loop(
    mut ticks: chorus_client::TickReceiver,
    room_index: u32,
    clients_per_room: u32,
    tl: Timeline,
) -> ClientTotals {
    let mut totals = ClientTotals::default();
    let room_base = room_index * clients_per_room;
    let mut seen = vec![SeenWindow::default(); clients_per_room as usize];
    let deadline = tokio::time::Instant::from_std(tl.recv_deadline);
    loop {
        let tick = match tokio::time::timeout_at(deadline, ticks.recv()).await {
            Err(_) => break,
            Ok(None) => {
                totals.receivers_ended_early += 1;
                break;
            }
            Ok(Some(tick)) => tick,
        };
        let Some(h) = Header::read(&tick.payload) else {
            totals.undecodable += 1;
            continue;
        };
        let Some(window) = h
            .sender
            .checked_sub(room_base)
            .and_then(|k| seen.get_mut(k as usize))
        else {
            totals.misrouted += 1;
            continue;
        };
        let verdict = window.observe(h.seq);
        if h.send_ns < tl.window_start_ns || h.send_ns >= tl.window_end_ns {
            continue;
        }
        match verdict {
            Seen::Duplicate => totals.duplicates += 1,
            Seen::TooOld => totals.too_old += 1,
            Seen::New => {
                totals.delivered += 1;
                let handoff = Instant::now()
                    .saturating_duration_since(tick.received_at)
                    .as_micros();
                record(
                    &mut totals.handoff_us,
                    u64::try_from(handoff).unwrap_or(u64::MAX),
                );
                let sent_at = tl.epoch + Duration::from_nanos(h.send_ns);
                let us = tick
                    .received_at
                    .saturating_duration_since(sent_at)
                    .as_micros();
                totals.record_latency_us(u64::try_from(us).unwrap_or(u64::MAX));
            }
        }
    }
    totals.sdk_dropped = ticks.dropped();
    totals
}

/// Closes every client at once, bounded.
async fn close_all(clients: Vec<Connected>) {
    let mut set = JoinSet::new();
    for c in clients {
        set.spawn(async move {
            drop(c.room);
            c.client.close().await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    set.abort_all();
}

fn run_meta() -> RunMeta {
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
