//! The join storm (`chorus-bench storm`): N clients connect and join rooms
//! of a given size at R per second, open loop (client `i` starts at
//! `t0 + i / R` whether or not the earlier ones are done), and stay
//! connected until the storm is over.
//!
//! Per transport it reports the rate achieved (attempts started per second,
//! joins completed per second), connect + join latency p50 / p90 / p99 / max
//! measured from each client's *scheduled* start (so a load generator that
//! falls behind shows as latency, not as a lower rate; the start lateness is
//! reported apart), the connect and join parts, failures by stage and error
//! code, server CPU over the storm and the measured process's RSS.
//!
//! [`StormReport::compute`] is the pure accounting over the per-client
//! [`Attempt`]s; [`run_storm`] drives one storm.

use crate::progress;
use crate::report::{Percentiles, RunMeta, new_histogram, record, round3};
use crate::run::run_meta;
use crate::server_target::{
    LoadedServer, ServerArgs, ServerSettings, TransportPick, TransportTestReport, close_clients,
    cpu_between, each_transport, sessions_text, write_results,
};
use crate::transports::{ClientTransport, PerTransport};
use anyhow::{Context, Result, bail};
use chorus_client::{Client, ConnectError, JoinOptions, RequestError, Room};
use clap::Args;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Schema tag of the storm's JSON line.
pub const STORM_SCHEMA: &str = "chorus-bench-storm/1";

/// Highest `--rate`: beyond it the schedule's spacing is under 10 µs.
const MAX_RATE: f64 = 100_000.0;

/// `chorus-bench storm`: N clients connect and join at R per second.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Clients to connect and join (each its own connection).
    #[arg(long)]
    pub clients: u32,
    /// Connect + join attempts started per second (open loop).
    #[arg(long)]
    pub rate: f64,
    /// Clients per room (the last room may have fewer).
    #[arg(long, default_value_t = 4)]
    pub room_size: u32,
    /// webtransport, websocket, or both (one storm each, side by side).
    #[arg(long, value_enum, default_value_t = TransportPick::Webtransport)]
    pub transport: TransportPick,
    /// Also append one JSON line per storm to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write a Markdown report (parameters, commit, machine, figures).
    #[arg(long)]
    pub report_md: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// One storm's settings.
#[derive(Debug, Clone)]
pub struct StormConfig {
    pub clients: u32,
    pub rate: f64,
    pub room_size: u32,
    pub transport: ClientTransport,
    pub server: ServerSettings,
}

impl StormArgs {
    /// One configuration per transport asked for.
    pub fn configs(&self) -> Result<Vec<StormConfig>> {
        let server = self.server.settings()?;
        let configs: Vec<StormConfig> = self
            .transport
            .transports()
            .into_iter()
            .map(|transport| StormConfig {
                clients: self.clients,
                rate: self.rate,
                room_size: self.room_size,
                transport,
                server: server.clone(),
            })
            .collect();
        for c in &configs {
            c.validate()?;
        }
        Ok(configs)
    }
}

impl StormConfig {
    fn validate(&self) -> Result<()> {
        if self.clients == 0 || self.room_size == 0 {
            bail!("--clients and --room-size must be at least 1");
        }
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            bail!("--rate must be in (0, {MAX_RATE}], got {}", self.rate);
        }
        Ok(())
    }

    /// When client `i` is due, from the storm's start.
    pub fn offset(&self, i: u32) -> Duration {
        Duration::from_secs_f64(f64::from(i) / self.rate)
    }
}

/// How one client's connect + join went, times from the storm's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// When it was due.
    pub scheduled: Duration,
    /// When its task actually started connecting.
    pub started: Duration,
    /// When the connection was up (handshake done), if it came up.
    pub connected: Option<Duration>,
    /// When the join was acknowledged, if it was.
    pub joined: Option<Duration>,
    /// `stage: code` of the failure (`connect: handshake_timeout`,
    /// `join: rate_limited`, …), if it failed.
    pub failure: Option<String>,
    /// The failure's error text.
    pub error: Option<String>,
}

/// The figures of one storm; serialized as its JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StormReport {
    pub schema: String,
    pub transport: ClientTransport,
    #[serde(flatten)]
    pub meta: RunMeta,
    pub clients: u32,
    pub room_size: u32,
    pub rate_asked: f64,
    /// `"in-process"` or `"external"`.
    pub server: String,
    /// Attempts that started.
    pub attempts: u64,
    /// Attempts started per second: `(attempts − 1) / (last start − first
    /// start)`; below `rate_asked` when the load generator fell behind.
    pub attempts_per_s: Option<f64>,
    pub joined: u64,
    /// Joins completed per second, from the first scheduled start to the
    /// last join.
    pub joined_per_s: Option<f64>,
    /// Failed attempts by `stage: code`.
    pub failures: BTreeMap<String, u64>,
    /// The first error text seen for each `stage: code` of `failures`.
    pub failure_examples: BTreeMap<String, String>,
    /// Scheduled start to join acknowledged, joined clients.
    pub connect_join_ms: Percentiles,
    /// Actual start to connection up.
    pub connect_ms: Percentiles,
    /// Connection up to join acknowledged.
    pub join_ms: Percentiles,
    /// How late attempts started after their schedule.
    pub start_lateness_ms: Percentiles,
    /// From the first scheduled start to the last attempt's end, s.
    pub span_s: f64,
    #[serde(flatten)]
    pub measured: StormMeasurements,
}

/// What the storm measured beside the attempts (CPU, memory, server
/// counters); part of [`StormReport`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StormMeasurements {
    /// Over the storm's span, % of one core.
    pub server_cpu_pct: Option<f64>,
    pub loadgen_cpu_pct: f64,
    /// VmHWM over the storm (reset at its start when possible), MiB.
    pub peak_rss_mib: Option<f64>,
    /// VmRSS with every joined client still connected, MiB.
    pub rss_end_mib: Option<f64>,
    /// Which process the memory figures are about.
    pub memory_scope: String,
    /// Sessions the server opened per transport during the storm (in process
    /// or from an external server's `/stats`).
    pub server_sessions_opened: Option<PerTransport>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl StormReport {
    /// The storm's figures from its attempts (any order).
    pub fn compute(
        cfg: &StormConfig,
        meta: RunMeta,
        server: &str,
        attempts: &[Attempt],
        m: StormMeasurements,
    ) -> StormReport {
        let mut total = new_histogram();
        let mut connect = new_histogram();
        let mut join = new_histogram();
        let mut lateness = new_histogram();
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let mut failure_examples: BTreeMap<String, String> = BTreeMap::new();
        let mut joined = 0u64;
        for a in attempts {
            record(&mut lateness, us(a.started.saturating_sub(a.scheduled)));
            if let Some(c) = a.connected {
                record(&mut connect, us(c.saturating_sub(a.started)));
            }
            match (a.connected, a.joined) {
                (Some(c), Some(j)) => {
                    joined += 1;
                    record(&mut join, us(j.saturating_sub(c)));
                    record(&mut total, us(j.saturating_sub(a.scheduled)));
                }
                _ => {
                    let why = a.failure.clone().unwrap_or_else(|| "unknown".to_owned());
                    if let Some(error) = &a.error {
                        failure_examples
                            .entry(why.clone())
                            .or_insert_with(|| error.clone());
                    }
                    *failures.entry(why).or_default() += 1;
                }
            }
        }
        let first_scheduled = attempts.iter().map(|a| a.scheduled).min();
        let starts = attempts.iter().map(|a| a.started);
        let (first_start, last_start) = (starts.clone().min(), starts.max());
        let last_end = attempts
            .iter()
            .map(|a| a.joined.or(a.connected).unwrap_or(a.started))
            .max();
        let attempts_per_s = match (first_start, last_start) {
            (Some(a), Some(b)) if b > a && attempts.len() > 1 => {
                Some(round3((attempts.len() - 1) as f64 / (b - a).as_secs_f64()))
            }
            _ => None,
        };
        let last_join = attempts.iter().filter_map(|a| a.joined).max();
        let joined_per_s = match (first_scheduled, last_join) {
            (Some(a), Some(b)) if b > a => Some(round3(joined as f64 / (b - a).as_secs_f64())),
            _ => None,
        };
        let span_s = match (first_scheduled, last_end) {
            (Some(a), Some(b)) => round3(b.saturating_sub(a).as_secs_f64()),
            _ => 0.0,
        };
        StormReport {
            schema: STORM_SCHEMA.to_owned(),
            transport: cfg.transport,
            meta,
            clients: cfg.clients,
            room_size: cfg.room_size,
            rate_asked: cfg.rate,
            server: server.to_owned(),
            attempts: attempts.len() as u64,
            attempts_per_s,
            joined,
            joined_per_s,
            failures,
            failure_examples,
            connect_join_ms: Percentiles::from_us(&total),
            connect_ms: Percentiles::from_us(&connect),
            join_ms: Percentiles::from_us(&join),
            start_lateness_ms: Percentiles::from_us(&lateness),
            span_s,
            measured: m,
        }
    }

    /// The single JSON line.
    pub fn json_line(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl TransportTestReport for StormReport {
    fn transport(&self) -> ClientTransport {
        self.transport
    }

    fn meta(&self) -> &RunMeta {
        &self.meta
    }

    fn title(&self) -> String {
        format!(
            "chorus-bench storm: {} clients in rooms of {} at {} joins/s asked, server {}",
            self.clients, self.room_size, self.rate_asked, self.server
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let rate = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}/s"));
        let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} %"));
        let mib = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} MiB"));
        let four = |p: &Percentiles| {
            format!(
                "{} / {} / {} / {}",
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max)
            )
        };
        let failures = if self.failures.is_empty() {
            "0".to_owned()
        } else {
            self.failures
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        vec![
            ("transport".into(), self.transport.name().to_owned()),
            (
                "attempts started".into(),
                format!(
                    "{} ({} of {:.1}/s asked)",
                    self.attempts,
                    rate(self.attempts_per_s),
                    self.rate_asked
                ),
            ),
            (
                "joined".into(),
                format!(
                    "{} of {} ({})",
                    self.joined,
                    self.clients,
                    rate(self.joined_per_s)
                ),
            ),
            ("failures".into(), failures),
            (
                "first error of each".into(),
                if self.failure_examples.is_empty() {
                    "-".to_owned()
                } else {
                    self.failure_examples
                        .iter()
                        .map(|(k, e)| format!("{k}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            ),
            (
                "connect+join ms p50/p90/p99/max".into(),
                four(&self.connect_join_ms),
            ),
            ("connect ms p50/p90/p99/max".into(), four(&self.connect_ms)),
            ("join ms p50/p90/p99/max".into(), four(&self.join_ms)),
            (
                "start lateness ms p50/p99/max".into(),
                format!(
                    "{} / {} / {}",
                    ms(self.start_lateness_ms.p50),
                    ms(self.start_lateness_ms.p99),
                    ms(self.start_lateness_ms.max)
                ),
            ),
            ("storm span".into(), format!("{:.3} s", self.span_s)),
            (
                "server CPU (of one core)".into(),
                pct(self.measured.server_cpu_pct),
            ),
            (
                "load-generator CPU".into(),
                format!("{:.1} %", self.measured.loadgen_cpu_pct),
            ),
            (
                "peak RSS / RSS at end".into(),
                format!(
                    "{} / {}",
                    mib(self.measured.peak_rss_mib),
                    mib(self.measured.rss_end_mib)
                ),
            ),
            ("memory of".into(), self.measured.memory_scope.clone()),
            (
                "server sessions opened WT / WS".into(),
                sessions_text(self.measured.server_sessions_opened),
            ),
        ]
    }
}

/// `stage: code` of a failed connect.
fn connect_failure(e: &ConnectError) -> String {
    let code = match e {
        ConnectError::Server(frame) => frame.code.name().to_owned(),
        ConnectError::Closed(reason) => reason
            .code()
            .map_or_else(|| "closed".to_owned(), |c| c.name().to_owned()),
        ConnectError::HandshakeTimeout(_) => "handshake_timeout".to_owned(),
        ConnectError::HttpStatus(status) => format!("http_{status}"),
        ConnectError::Connecting(_) => "connecting".to_owned(),
        ConnectError::Io(_) => "io".to_owned(),
        ConnectError::Protocol(_) => "protocol".to_owned(),
        ConnectError::VersionMismatch { .. } => "version_mismatch".to_owned(),
        _ => "other".to_owned(),
    };
    format!("connect: {code}")
}

/// `stage: code` of a failed join.
fn join_failure(e: &RequestError) -> String {
    if let Some(code) = e.code() {
        return format!("join: {}", code.name());
    }
    let code = match e {
        RequestError::Timeout => "timeout",
        RequestError::ConnectionLost => "connection_lost",
        RequestError::Closed(_) => "closed",
        RequestError::Limit(_) => "limit",
        _ => "other",
    };
    format!("join: {code}")
}

/// A joined client, kept connected until the storm is over.
struct Joined {
    client: Client,
    room: Room,
}

/// Runs one storm per configuration; prints nothing. Blocks the calling
/// thread (not inside a Tokio runtime).
pub fn run_storm(cfg: &StormConfig, show_progress: bool) -> Result<StormReport> {
    cfg.validate()?;
    crate::run::prepare_descriptors(cfg.clients);
    let server = LoadedServer::start(&cfg.server, cfg.clients, cfg.room_size)?;
    let result = server
        .client_runtime()
        .block_on(storm(cfg, &server, show_progress));
    server.shutdown();
    result
}

async fn storm(
    cfg: &StormConfig,
    server: &LoadedServer,
    show_progress: bool,
) -> Result<StormReport> {
    let mem_pid = server.memory_pid();
    let peak_reset = mem_pid
        .as_deref()
        .is_some_and(crate::procfs::reset_peak_rss);
    let sessions_before = server.stats().sample().await;
    let bar = progress::count_bar(
        show_progress,
        &format!("storm {}", cfg.transport),
        u64::from(cfg.clients),
    );
    // Rooms unique to this storm, so that storms against one external server
    // never share a room.
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let cpu0 = server.sample_cpu();
    let t0 = Instant::now() + Duration::from_millis(50);
    let offsets: Vec<Duration> = (0..cfg.clients).map(|i| cfg.offset(i)).collect();
    let starts = pace(t0, &offsets)?;
    let mut tasks = JoinSet::new();
    for ((i, scheduled), start) in (0..cfg.clients).zip(offsets).zip(starts) {
        let url = server.url(cfg.transport).to_owned();
        let options = server.connect_options(cfg.transport);
        let room_id = format!("storm-{}-{nonce}-{}", cfg.transport, i / cfg.room_size);
        let transport = cfg.transport;
        let bar = bar.clone();
        tasks.spawn(async move {
            // Err only if the pacer thread is gone; start at once then.
            let _ = start.await;
            let since = |t: Instant| t.saturating_duration_since(t0);
            let started = since(Instant::now());
            let mut attempt = Attempt {
                scheduled,
                started,
                connected: None,
                joined: None,
                failure: None,
                error: None,
            };
            let client = match Client::connect(&url, options).await {
                Ok(c) => c,
                Err(e) => {
                    attempt.failure = Some(connect_failure(&e));
                    attempt.error = Some(e.to_string());
                    return (attempt, None);
                }
            };
            attempt.connected = Some(since(Instant::now()));
            if client.transport() != transport.sdk() {
                attempt.connected = None;
                attempt.failure = Some("connect: wrong_transport".to_owned());
                attempt.error = Some(format!("asked for {transport}, got {}", client.transport()));
                return (attempt, None);
            }
            match client
                .join(&room_id, JoinOptions::named(format!("storm-{i}")))
                .await
            {
                Ok(room) => {
                    attempt.joined = Some(since(Instant::now()));
                    bar.inc(1);
                    (attempt, Some(Joined { client, room }))
                }
                Err(e) => {
                    attempt.failure = Some(join_failure(&e));
                    attempt.error = Some(e.to_string());
                    (attempt, None)
                }
            }
        });
    }
    let (attempts, joined) = collect(cfg, &mut tasks, &bar).await;
    let cpu1 = server.sample_cpu();
    let (peak_rss_mib, rss_end_mib) = mem_pid
        .as_deref()
        .map_or((None, None), crate::procfs::memory_mib);
    let sessions_after = server.stats().sample().await;
    bar.finish_and_clear();
    close_clients(joined.into_iter().map(|j| (j.client, j.room))).await;
    let (server_cpu_pct, loadgen_cpu_pct) = cpu_between(&cpu0, &cpu1, server.in_process());
    let m = StormMeasurements {
        server_cpu_pct,
        loadgen_cpu_pct,
        peak_rss_mib: peak_rss_mib.filter(|_| peak_reset),
        rss_end_mib,
        memory_scope: server.memory_scope().to_owned(),
        server_sessions_opened: sessions_before
            .zip(sessions_after)
            .map(|(a, b)| PerTransport::delta(a.sessions_opened, b.sessions_opened)),
    };
    let where_ = if server.in_process() {
        "in-process"
    } else {
        "external"
    };
    Ok(StormReport::compute(cfg, run_meta(), where_, &attempts, m))
}

/// Fires one start signal per offset, each at `t0 + offset`, from a thread of
/// its own. tokio's timer rounds every deadline up to a whole millisecond, so
/// a task sleeping until its start began 1–2 ms late (p50 about 1.3 ms idle),
/// and that lateness of the load generator's went into every connect + join
/// figure; a thread's `sleep` wakes within tens of microseconds.
fn pace(t0: Instant, offsets: &[Duration]) -> Result<Vec<oneshot::Receiver<()>>> {
    let (senders, receivers): (Vec<_>, Vec<_>) = offsets.iter().map(|_| oneshot::channel()).unzip();
    let schedule: Vec<Instant> = offsets.iter().map(|offset| t0 + *offset).collect();
    std::thread::Builder::new()
        .name("storm-pacer".into())
        .spawn(move || {
            for (at, start) in schedule.into_iter().zip(senders) {
                let wait = at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                // The attempt may be gone (the storm ended early): nothing to do.
                let _ = start.send(());
            }
        })
        .context("starting the storm's pacer thread")?;
    Ok(receivers)
}

/// Waits for every attempt, bounded by the schedule plus a minute.
async fn collect(
    cfg: &StormConfig,
    tasks: &mut JoinSet<(Attempt, Option<Joined>)>,
    bar: &ProgressBar,
) -> (Vec<Attempt>, Vec<Joined>) {
    let limit = cfg.offset(cfg.clients) + Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + limit;
    let mut attempts = Vec::with_capacity(cfg.clients as usize);
    let mut joined = Vec::with_capacity(cfg.clients as usize);
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok((attempt, client)))) => {
                attempts.push(attempt);
                joined.extend(client);
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "storm task failed");
            }
            Ok(None) => break,
            Err(_) => {
                bar.println(format!(
                    "storm: {} attempts unfinished after {limit:?}, abandoned",
                    tasks.len()
                ));
                tasks.abort_all();
                break;
            }
        }
    }
    (attempts, joined)
}

/// `chorus-bench storm`: runs, prints the table and JSON lines, writes the
/// JSON and Markdown files asked for. `command` is the invocation as typed.
pub fn main(args: &StormArgs, quiet: bool, command: &str) -> Result<()> {
    let configs = args.configs()?;
    let show = progress::visible(quiet);
    let (reports, failure) = each_transport(&configs, |_, cfg| {
        run_storm(cfg, show).with_context(|| format!("{} storm", cfg.transport))
    });
    // Whatever completed is reported, even if a later storm failed.
    write_results(
        &reports,
        true,
        args.json_out.as_deref(),
        args.report_md.as_deref(),
        command,
    )?;
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Target;
    use crate::server_target::text_report;

    fn cfg(clients: u32, rate: f64) -> StormConfig {
        StormConfig {
            clients,
            rate,
            room_size: 4,
            transport: ClientTransport::WebSocket,
            server: ServerSettings {
                target: Target::InProcess {
                    cert_dir: PathBuf::new(),
                },
                ws_tls: false,
                server_threads: 1,
                client_threads: 1,
            },
        }
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn ok(scheduled: u64, started: u64, connected: u64, joined: u64) -> Attempt {
        Attempt {
            scheduled: ms(scheduled),
            started: ms(started),
            connected: Some(ms(connected)),
            joined: Some(ms(joined)),
            failure: None,
            error: None,
        }
    }

    #[test]
    fn the_schedule_is_open_loop_at_the_rate() {
        let c = cfg(5, 200.0);
        assert_eq!(c.offset(0), Duration::ZERO);
        assert_eq!(c.offset(3), ms(15));
        assert!(cfg(0, 1.0).validate().is_err());
        assert!(cfg(1, 0.0).validate().is_err());
        assert!(cfg(1, f64::NAN).validate().is_err());
        assert!(cfg(1, MAX_RATE * 2.0).validate().is_err());
    }

    #[test]
    fn accounting_counts_joins_latency_from_schedule_and_failures() {
        // 4 due every 10 ms; the third starts 5 ms late; the fourth's join is
        // refused; a fifth never connects.
        let mut attempts = vec![
            ok(0, 0, 1, 2),
            ok(10, 10, 12, 13),
            ok(20, 25, 26, 28),
            Attempt {
                joined: None,
                failure: Some("join: rate_limited".into()),
                error: Some("server error: rate limited".into()),
                ..ok(30, 30, 31, 0)
            },
            Attempt {
                connected: None,
                joined: None,
                failure: Some("connect: handshake_timeout".into()),
                ..ok(40, 40, 0, 0)
            },
        ];
        attempts.reverse(); // any order
        let r = StormReport::compute(
            &cfg(5, 100.0),
            RunMeta::default(),
            "in-process",
            &attempts,
            StormMeasurements::default(),
        );
        assert_eq!((r.attempts, r.joined), (5, 3));
        assert_eq!(
            r.failures,
            [
                ("connect: handshake_timeout".to_owned(), 1),
                ("join: rate_limited".to_owned(), 1)
            ]
            .into_iter()
            .collect()
        );
        // From the schedule: 2, 3 and 8 ms.
        assert_eq!(r.connect_join_ms.samples, 3);
        // (3 significant digits above 2048 µs: 3 ms reads 3.001.)
        let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 0.01);
        assert!(near(r.connect_join_ms.p50, 3.0), "{:?}", r.connect_join_ms);
        assert!(near(r.connect_join_ms.max, 8.0), "{:?}", r.connect_join_ms);
        // Connect from the actual start: 1, 2, 1, 1 ms (four connected).
        assert_eq!(r.connect_ms.samples, 4);
        assert!(near(r.connect_ms.max, 2.0), "{:?}", r.connect_ms);
        assert_eq!(r.join_ms.samples, 3);
        assert_eq!(r.start_lateness_ms.samples, 5);
        assert!(
            near(r.start_lateness_ms.max, 5.0),
            "{:?}",
            r.start_lateness_ms
        );
        // 4 intervals between the first and last start (0 -> 40 ms).
        assert_eq!(r.attempts_per_s, Some(100.0));
        // 3 joins from 0 to 28 ms.
        assert_eq!(r.joined_per_s, Some(round3(3.0 / 0.028)));
        assert_eq!(r.span_s, 0.04);
        let line = r.json_line().expect("serializes");
        let back: StormReport = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["schema"], STORM_SCHEMA);
        assert_eq!(v["failures"]["join: rate_limited"], 1);
        assert_eq!(
            v["failure_examples"]["join: rate_limited"],
            "server error: rate limited"
        );
        assert!(
            v["failure_examples"]
                .get("connect: handshake_timeout")
                .is_none()
        );
        let table = text_report(&[r.clone(), r]);
        assert!(table.contains("joined"), "{table}");
        assert!(table.contains("3 of 5"), "{table}");
    }

    #[test]
    fn no_attempts_no_rates_and_no_nan() {
        let r = StormReport::compute(
            &cfg(1, 1.0),
            RunMeta::default(),
            "external",
            &[],
            StormMeasurements::default(),
        );
        assert_eq!((r.attempts, r.joined), (0, 0));
        assert_eq!((r.attempts_per_s, r.joined_per_s), (None, None));
        assert!(r.json_line().is_ok());
        assert_eq!(text_report::<StormReport>(&[]), "");
    }
}
