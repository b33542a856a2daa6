//! One bench run against a Node.js baseline relay (`bench/baselines/`), with
//! the same scenario machinery as a Chorus run ([`crate::run`]): the same
//! rooms × clients × Hz × payload (the bench header and padding, sent as the
//! relay's JSON with the payload in base64), the same staggered senders and
//! the same receive loop judging every tick (`run::TickTasks`), warm-up
//! excluded, and the same [`Report`], whose `target` names the relay.
//!
//! The relay runs as its own `node` process, started here
//! ([`RelayProcess`]) and stopped after the run: server CPU and peak RSS are
//! that process's, from `/proc` ([`procfs`]); load-generator CPU is the
//! client runtime's threads ([`CLIENT_THREAD`](crate::run::CLIENT_THREAD)) as for Chorus.
//!
//! Before sending, every client joins its room again and the relay's answer
//! must count the whole room: a barrier after which every member is in, so
//! no tick is sent to a room still filling up (the relays forward to the
//! members present).
//!
//! The relays have no state or commands: a run with `--state-rate` or
//! `--command-rate` is refused. They have no server counters either, so
//! those figures are absent from the report.

use crate::baselines::{
    ClientOptions, LaunchOptions, RelayClient, RelayKind, RelayProcess, TickSender, TickStream,
    ensure_installed, node_version,
};
use crate::live::{RunOutput, RunProbe, RunSeries};
use crate::procfs;
use crate::report::{ClientTotals, Measurements, MemFigures, Report, ServerKind, new_histogram};
use crate::run::{
    BenchConfig, Gathered, KernelSample, TickClient, TickSink, TickSource, TickTasks, Timeline,
    client_runtime, connect_failure, cpu_figures, gather_connects, run_meta, sample_cpu,
    sleep_until,
};
use crate::transports::{ClientTransport, TransportMix};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

impl From<RelayKind> for ServerKind {
    fn from(kind: RelayKind) -> ServerKind {
        match kind {
            RelayKind::Ws => ServerKind::WsRelay,
            RelayKind::SocketIo => ServerKind::SocketioRelay,
        }
    }
}

impl TickSink for TickSender {
    async fn send(&self, payload: &[u8]) -> Result<(), String> {
        self.send_tick(payload).await.map_err(|e| e.to_string())
    }
}

impl TickSource for TickStream {
    async fn next_tick(&mut self) -> Option<(Bytes, Instant)> {
        self.recv().await.map(|t| (t.payload, t.received_at))
    }

    fn lost_to_lag(&self) -> u64 {
        self.dropped()
    }
}

/// Whether `cfg` is a load the relays can take: ticks only.
fn check_relay_config(cfg: &BenchConfig) -> Result<()> {
    cfg.validate()?;
    if cfg.state_rate > 0.0 || cfg.command_rate > 0.0 {
        bail!("the baseline relays have no state updates or commands: run them with ticks only");
    }
    if cfg.hz == 0.0 {
        bail!("--hz 0 sends nothing to a baseline relay");
    }
    Ok(())
}

/// Starts the `kind` relay with `launch` (`npm ci` first if its packages are
/// missing), loads it with `cfg`'s scenario over WebSocket, stops it, and
/// reports. `cfg.target` and `cfg.transport` are not used: the relay is
/// always a `node` process started here, and its clients always WebSocket.
/// Blocks the calling thread, which must not be inside a Tokio runtime.
pub fn run_relay(cfg: &BenchConfig, kind: RelayKind, launch: &LaunchOptions) -> Result<Report> {
    let probe = RunProbe::new(cfg.total_clients(), cfg.clients_per_room);
    run_relay_probed(cfg, kind, launch, &Arc::new(probe)).map(|out| out.report)
}

/// [`run_relay`], watched through `probe` (made for this configuration)
/// while it goes; also hands back the run's curves for the plots.
pub fn run_relay_probed(
    cfg: &BenchConfig,
    kind: RelayKind,
    launch: &LaunchOptions,
    probe: &Arc<RunProbe>,
) -> Result<RunOutput> {
    check_relay_config(cfg)?;
    let node = node_version(&launch.node)?;
    ensure_installed(&launch.dir)?;
    let epoch = Instant::now();
    let relay = RelayProcess::start(kind, launch)?;
    let pid = relay.pid();
    let peak_since_run_start = procfs::reset_peak_rss(&pid.to_string());
    let cfg = BenchConfig {
        transport: TransportMix::WebSocket,
        ..cfg.clone()
    };
    let client_rt = client_runtime(cfg.client_threads)?;
    let outcome = client_rt.block_on(drive(&cfg, kind, relay.url(), pid, epoch, probe));
    client_rt.shutdown_timeout(Duration::from_secs(2));
    let url = relay.url().to_owned();
    let stderr = relay.stderr_tail();
    let stopped = relay.stop();
    let (totals, mut measurements) = outcome
        .with_context(|| format!("{kind} relay run; the relay's last stderr lines:\n{stderr}"))?;
    if let Err(e) = stopped {
        tracing::warn!(%kind, error = %e, "the relay did not stop cleanly");
    }
    measurements.memory.peak_since_run_start = peak_since_run_start;
    let mut params = cfg.params(&url, &url);
    params.server = format!("node {node}");
    let series = RunSeries::collect(
        TransportMix::WebSocket,
        &totals,
        probe,
        cfg.nominal_deliveries_per_s(),
    );
    let report = Report::compute_for(
        kind.into(),
        params,
        TransportMix::WebSocket,
        run_meta(),
        &totals,
        measurements,
    );
    Ok(RunOutput { report, series })
}

/// One bench client of a relay.
#[derive(Debug)]
struct RelayMember {
    /// Global client index.
    index: u32,
    sender: TickSender,
    ticks: TickStream,
}

/// Runs on the client runtime: connect, check the rooms, measure, close.
async fn drive(
    cfg: &BenchConfig,
    kind: RelayKind,
    url: &str,
    pid: u32,
    epoch: Instant,
    probe: &Arc<RunProbe>,
) -> Result<(ClientTotals, Measurements)> {
    let (members, connect_join_us) = connect_all(cfg, kind, url, probe).await?;
    let senders: Vec<TickSender> = members.iter().map(|m| m.sender.clone()).collect();
    let result = async {
        check_full_rooms(cfg, &senders).await?;
        measure(cfg, members, pid, epoch, probe).await
    }
    .await;
    close_all(&senders).await;
    let (totals, mut m) = result?;
    m.connect_join_us = connect_join_us;
    Ok((totals, m))
}

/// Connects and joins every client to room `bench-<relay>-<r>`,
/// `connect_concurrency` at a time; any failure fails the run.
async fn connect_all(
    cfg: &BenchConfig,
    kind: RelayKind,
    url: &str,
    probe: &RunProbe,
) -> Result<(Vec<RelayMember>, Histogram<u64>)> {
    let total = cfg.rooms * cfg.clients_per_room;
    let options = ClientOptions {
        tick_capacity: cfg.tick_capacity,
        ..ClientOptions::default()
    };
    let permits = Arc::new(Semaphore::new(cfg.connect_concurrency));
    let mut set = JoinSet::new();
    for index in 0..total {
        let (permits, options, url) = (permits.clone(), options.clone(), url.to_owned());
        let room = format!("bench-{kind}-{}", index / cfg.clients_per_room);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| anyhow!("{e}"))?;
            let t0 = Instant::now();
            let client = RelayClient::connect(kind, &url, &room, &options)
                .await
                .with_context(|| format!("client {index}: connect to {url} and join {room}"))?;
            let (sender, ticks) = client.into_parts();
            let member = RelayMember {
                index,
                sender,
                ticks,
            };
            Ok::<_, anyhow::Error>((member, t0.elapsed()))
        });
    }
    // Each connect and join is bounded by `options.timeout` and they go a
    // wave of `connect_concurrency` at a time: one timeout per wave bounds
    // the whole phase.
    let waves = u64::from(total).div_ceil(cfg.connect_concurrency as u64);
    let phase_limit = options
        .timeout
        .saturating_mul(u32::try_from(waves).unwrap_or(u32::MAX));
    let Gathered {
        clients: mut members,
        connect_join_us,
        errors,
    } = gather_connects(set, total, phase_limit, || probe.client_connected()).await;
    if let Some(e) = connect_failure(errors, total) {
        let senders: Vec<TickSender> = members.iter().map(|m| m.sender.clone()).collect();
        close_all(&senders).await;
        return Err(e);
    }
    members.sort_by_key(|m| m.index);
    Ok((members, connect_join_us))
}

/// Every client joins its room again; the relay's answer must count the whole
/// room. The relay handles a connection's messages in order, so once every
/// answer is in, every member is in its room.
async fn check_full_rooms(cfg: &BenchConfig, senders: &[TickSender]) -> Result<()> {
    for (index, sender) in senders.iter().enumerate() {
        let ack = sender
            .rejoin()
            .await
            .with_context(|| format!("client {index}: joining its room again"))?;
        if ack.members != cfg.clients_per_room {
            bail!(
                "room {} has {} members, not {}: the relay did not put every client in its room",
                ack.room,
                ack.members,
                cfg.clients_per_room
            );
        }
    }
    Ok(())
}

/// Sends and receives ticks through the measured window and the drain,
/// sampling the relay process's CPU and memory.
async fn measure(
    cfg: &BenchConfig,
    members: Vec<RelayMember>,
    pid: u32,
    epoch: Instant,
    probe: &Arc<RunProbe>,
) -> Result<(ClientTotals, Measurements)> {
    let tl = Timeline::starting_soon(epoch, cfg);
    let ends = members
        .into_iter()
        .map(|m| TickClient {
            index: m.index,
            transport: ClientTransport::WebSocket,
            sink: m.sender,
            source: m.ticks,
        })
        .collect();
    let ticks = TickTasks::spawn(cfg, tl, ends, probe);

    let kernel0 = KernelSample::now();
    sleep_until(tl.window_start).await;
    let cpu0 = sample_cpu(Some(pid));
    sleep_until(tl.window_end).await;
    let cpu1 = sample_cpu(Some(pid));
    let (peak_rss_mib, rss_end_mib) = procfs::memory_mib(&pid.to_string());
    sleep_until(tl.recv_deadline).await;
    let (kernel_udp, kernel_tcp) = kernel0.until(KernelSample::now());

    let collect_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (totals, _first_send_error) = ticks.collect(collect_deadline).await?;
    Ok((
        totals,
        Measurements {
            // Counted by send time in [window_start, window_end), as for Chorus.
            window_s: cfg.duration.as_secs_f64(),
            connect_join_us: new_histogram(),
            cpu: cpu_figures(&cpu0, &cpu1, false),
            memory: MemFigures {
                peak_rss_mib,
                rss_end_mib,
                peak_since_run_start: false,
                scope: "relay process (node)".to_owned(),
            },
            server_counters: None,
            server_sessions_opened: None,
            kernel_udp,
            kernel_tcp,
            sdk_outgoing_replaced: 0,
            server_reliable: None,
            state: None,
            commands: None,
        },
    ))
}

/// Starts every client's close handshake at once, bounded.
async fn close_all(senders: &[TickSender]) {
    let mut set = JoinSet::new();
    for sender in senders {
        let sender = sender.clone();
        set.spawn(async move {
            let _ = sender.close().await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    set.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BenchConfig {
        BenchConfig::small(2, 3)
    }

    #[test]
    fn relays_take_ticks_only() {
        assert!(check_relay_config(&cfg()).is_ok());
        let state = BenchConfig {
            state_rate: 5.0,
            ..cfg()
        };
        let err = check_relay_config(&state).expect_err("no state on a relay");
        assert!(err.to_string().contains("ticks only"), "{err}");
        let silent = BenchConfig {
            hz: 0.0,
            command_rate: 1.0,
            ..cfg()
        };
        assert!(check_relay_config(&silent).is_err());
    }

    #[test]
    fn relay_kinds_name_their_target() {
        assert_eq!(ServerKind::from(RelayKind::Ws).name(), "ws-relay");
        assert_eq!(
            ServerKind::from(RelayKind::SocketIo).name(),
            "socketio-relay"
        );
    }
}
