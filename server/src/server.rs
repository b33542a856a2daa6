//! Starting and stopping a server: listeners, certificate, shared context.
//!
//! [`Server::start`] loads or makes the certificate, binds every configured
//! address (a UDP endpoint for WebTransport and, on the same port number by
//! default, a TCP listener for WebSocket and HTTP), and spawns the accept loops.
//! It returns a [`RunningServer`] that tells where it listens and stops it.
//! Tests, the bench and the `chorus` binary all start servers this way.

use crate::cert::{CertError, CertManager, CertificateSource, RotationSettings, ServerCertificate};
use crate::clock::ServerClock;
use crate::http::{self, HttpState, TcpTls};
use crate::metrics::Metrics;
use crate::origin::OriginPolicy;
use crate::rooms::{RoomRegistry, RoomSettings};
use crate::session::{AccessControl, AccessSettings, SessionConfig, SessionContext};
use crate::stats::ServerStats;
use crate::transport::websocket::WsSettings;
use crate::transport::webtransport::{WEBTRANSPORT_PATH, WtSettings, handle_incoming};
use chorus_protocol::ErrorCode;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wtransport::endpoint::endpoint_side;
use wtransport::{Endpoint, ServerConfig as WtServerConfig};

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP addresses for WebTransport. Both loopback families by default,
    /// because Chromium resolves `localhost` to `::1` for QUIC.
    pub listen: Vec<SocketAddr>,
    /// TCP addresses for WebSocket and HTTP. `None`: the same addresses and
    /// port numbers as `listen` (UDP and TCP side by side, as HTTP/3 servers do).
    pub tcp_listen: Option<Vec<SocketAddr>>,
    /// Whether the TCP listener speaks TLS, plain, or both.
    pub tcp_tls: TcpTls,
    pub certificate: CertificateSource,
    /// Validity of a development certificate the server makes (at most 14
    /// days, which browsers require for certificates pinned by hash).
    pub dev_cert_validity: Duration,
    /// A development certificate is renewed this long before its end, without
    /// a restart; after any swap (renewal or changed PEM files) the previous
    /// certificate's hash stays listed at `/cert-hash` this long (never past
    /// its end).
    pub cert_rotate_before: Duration,
    /// How often the PEM files are checked for a change (size, modification
    /// time), and the longest the renewal task goes without looking at the clock.
    pub cert_check_interval: Duration,
    /// Origins allowed besides loopback and same-host ones (`*`: any).
    pub allowed_origins: Vec<String>,
    pub session: SessionConfig,
    pub rooms: RoomSettings,
    /// API keys, join tokens, password hashing, per-address limits and bans.
    pub access: AccessSettings,
    /// How often expired per-address records (rates, blocks), resume tokens
    /// and idle pack uploads are swept.
    pub cleanup_interval: Duration,
    /// Pack limits and media types.
    pub packs: crate::packs::PackSettings,
    /// How long a shutdown waits for sessions to write their last events and
    /// close before the endpoints are closed under them.
    pub shutdown_timeout: Duration,
    /// How often an idle connection is probed (QUIC keep-alive, WebSocket ping).
    pub heartbeat_interval: Duration,
    /// A connection silent this long is closed and its members leave with
    /// `TimedOut` (QUIC idle timeout, WebSocket read timeout).
    pub heartbeat_timeout: Duration,
    /// WebSocket control messages longer than this are chunked.
    pub websocket_chunk_bytes: usize,
    /// Serve the demo page and browser SDK at `/` on the TCP listener.
    pub serve_demo: bool,
    /// Where rooms are kept across restarts; `None`: memory only (the
    /// library default; the `chorus` binary keeps them under `--data-dir`).
    pub store: Option<crate::store::StoreSettings>,
    /// Outgoing datagram bytes queued per connection. When a receiver cannot
    /// take ticks as fast as they come, the oldest queued ones are dropped: this
    /// bound is what makes the tick lane newest-wins instead of seconds behind.
    pub datagram_send_buffer_bytes: usize,
    /// Incoming datagram bytes queued per connection before the oldest are
    /// dropped (also the largest datagram a client may send).
    pub datagram_receive_buffer_bytes: usize,
    /// Kernel receive and send buffer of each UDP socket. Every WebTransport
    /// client shares the one socket, so the kernel default (208 KiB) overflows
    /// under load; the kernel caps this at `net.core.rmem_max`/`wmem_max`.
    pub udp_socket_buffer_bytes: usize,
    /// Ask each QUIC peer (that supports the ACK frequency extension, as
    /// quinn-based clients do) to acknowledge only every this many
    /// ack-eliciting packets plus one, or after its max ACK delay. Ticks are
    /// never retransmitted, so fewer ACKs cost nothing but packets; 0 asks
    /// nothing (the peer acknowledges every second packet).
    pub quic_ack_eliciting_threshold: u32,
    /// How long a receiver's first pending tick waits for others to share its
    /// WebSocket write or QUIC packet (`crate::transport::ticks`); zero sends
    /// each at once.
    pub tick_coalesce: Duration,
}

/// The default port for both WebTransport (UDP) and WebSocket/HTTP (TCP).
pub const DEFAULT_PORT: u16 = 4433;
/// quinn's own default is 1 MiB, which at tick rates is seconds of stale ticks.
pub const DEFAULT_DATAGRAM_SEND_BUFFER: usize = 16 * 1024;
pub const DEFAULT_DATAGRAM_RECEIVE_BUFFER: usize = 64 * 1024;
pub const DEFAULT_UDP_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Measured (bench S1 over WebTransport, external server): 9 leaves tick
/// latency as it was and cuts the server's CPU by a sixth and the UDP
/// packets by a fifth; on S2 it delivers 30 % more under overload.
pub const DEFAULT_QUIC_ACK_ELICITING_THRESHOLD: u32 = 9;
/// No coalescing window by default: ticks are latency-first, and under load
/// the writers batch what waits anyway (BENCHMARKS.md has the measured cost
/// and gain of a window).
pub const DEFAULT_TICK_COALESCE_MS: u64 = 0;
/// A datagram buffer must hold at least one full-size datagram.
pub const MIN_DATAGRAM_BUFFER: usize = 2048;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, DEFAULT_PORT)),
            ],
            tcp_listen: None,
            tcp_tls: TcpTls::Auto,
            certificate: CertificateSource::Development {
                dir: PathBuf::from("certs"),
            },
            dev_cert_validity: crate::cert::DEV_VALIDITY,
            cert_rotate_before: crate::cert::DEV_RENEW_BEFORE,
            cert_check_interval: Duration::from_secs(5),
            allowed_origins: Vec::new(),
            session: SessionConfig::default(),
            access: AccessSettings::default(),
            cleanup_interval: Duration::from_secs(30),
            packs: crate::packs::PackSettings::default(),
            shutdown_timeout: Duration::from_secs(10),
            rooms: RoomSettings::default(),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            websocket_chunk_bytes: 16 * 1024,
            serve_demo: true,
            store: None,
            datagram_send_buffer_bytes: DEFAULT_DATAGRAM_SEND_BUFFER,
            datagram_receive_buffer_bytes: DEFAULT_DATAGRAM_RECEIVE_BUFFER,
            udp_socket_buffer_bytes: DEFAULT_UDP_SOCKET_BUFFER,
            quic_ack_eliciting_threshold: DEFAULT_QUIC_ACK_ELICITING_THRESHOLD,
            tick_coalesce: Duration::from_millis(DEFAULT_TICK_COALESCE_MS),
        }
    }
}

impl ServerConfig {
    /// A configuration for tests and in-process benches: one ephemeral port on
    /// 127.0.0.1 (UDP and TCP) and a development certificate in `cert_dir`.
    pub fn ephemeral(cert_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
            certificate: CertificateSource::Development {
                dir: cert_dir.into(),
            },
            ..ServerConfig::default()
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("cannot listen on {addr} ({protocol}): {source}")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        source: std::io::Error,
    },
    #[error("no listen address configured")]
    NoListenAddress,
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(
        "the store holds rooms that cannot be restored: {0}; start with \
         --discard-corrupt-data to go on without them"
    )]
    Restore(String),
}

/// The entry point; see [`Server::start`].
#[derive(Debug)]
pub struct Server;

type WtEndpoint = Endpoint<endpoint_side::Server>;

/// A started server. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
pub struct RunningServer {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    certs: Arc<CertManager>,
    stats: Arc<ServerStats>,
    registry: Arc<RoomRegistry>,
    ctx: Arc<SessionContext>,
    ready: Arc<AtomicBool>,
    endpoints: Vec<Arc<WtEndpoint>>,
    accept_tasks: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("udp_addrs", &self.udp_addrs)
            .field("tcp_addrs", &self.tcp_addrs)
            .field("cert_hash", &self.certs.current().sha256_hex())
            .finish_non_exhaustive()
    }
}

fn check(config: &mut ServerConfig) -> Result<(), StartError> {
    if config.listen.is_empty() {
        return Err(StartError::NoListenAddress);
    }
    rotation_settings(config)
        .validate()
        .map_err(StartError::InvalidSetting)?;
    // The room's caps and the announced limits are one setting each.
    config.rooms.room.max_members = config.session.limits.max_members_per_room;
    config.rooms.room.max_state_keys = config.session.limits.max_state_keys;
    config.rooms.room.max_state_total_bytes =
        u64::from(config.session.limits.max_state_total_bytes);
    let limits = &config.session.limits;
    config.rooms.room.resume_window_us =
        u64::try_from(config.session.resume_window.as_micros()).unwrap_or(u64::MAX);
    config.rooms.room.max_timelines = limits.max_timelines_per_room as usize;
    config.rooms.room.max_schedule_ahead_us = u64::from(limits.max_schedule_ahead_ms) * 1000;
    config.packs.max_pack_bytes = u64::from(limits.max_pack_bytes);
    config.packs.max_packs_per_room = limits.max_packs_per_room;
    config.packs.max_bytes_per_room = u64::from(limits.max_pack_bytes_per_room);
    config.packs.max_name_len = limits.max_pack_name_len;
    config.rooms.room.kick_ban_us =
        u64::try_from(config.access.abuse.ban_duration.as_micros()).unwrap_or(u64::MAX);
    crate::access::rate::validate_rate_limits(&config.session.rate_limits)
        .map_err(|e| StartError::InvalidSetting(e.to_string()))?;
    for (name, template) in &config.rooms.templates {
        template
            .policy
            .validate(config.session.limits.max_state_key_len as usize)
            .map_err(|why| StartError::InvalidSetting(format!("room template {name:?}: {why}")))?;
    }
    for (name, value) in [
        ("datagram send buffer", config.datagram_send_buffer_bytes),
        (
            "datagram receive buffer",
            config.datagram_receive_buffer_bytes,
        ),
    ] {
        if value < MIN_DATAGRAM_BUFFER {
            return Err(StartError::InvalidSetting(format!(
                "{name} of {value} bytes is below the minimum of {MIN_DATAGRAM_BUFFER}"
            )));
        }
    }
    if config.heartbeat_timeout <= config.heartbeat_interval {
        return Err(StartError::InvalidSetting(format!(
            "heartbeat timeout ({:?}) must be longer than the heartbeat interval ({:?})",
            config.heartbeat_timeout, config.heartbeat_interval
        )));
    }
    if config.cleanup_interval < Duration::from_secs(5) {
        return Err(StartError::InvalidSetting(format!(
            "cleanup interval {:?} is below the minimum of 5 s",
            config.cleanup_interval
        )));
    }
    if config.heartbeat_interval.is_zero() {
        return Err(StartError::InvalidSetting(
            "heartbeat interval must be above zero".into(),
        ));
    }
    if config.websocket_chunk_bytes < 1024 {
        return Err(StartError::InvalidSetting(format!(
            "WebSocket chunk size {} is below the minimum of 1024",
            config.websocket_chunk_bytes
        )));
    }
    Ok(())
}

fn rotation_settings(config: &ServerConfig) -> RotationSettings {
    RotationSettings {
        dev_validity: config.dev_cert_validity,
        rotate_before: config.cert_rotate_before,
        check_interval: config.cert_check_interval,
    }
}

/// A UDP socket with the configured kernel buffers (best effort: the kernel
/// caps them, and a refusal is logged, not fatal).
fn udp_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(buffer_bytes)),
        ("send", socket.set_send_buffer_size(buffer_bytes)),
    ] {
        if let Err(e) = result {
            tracing::warn!(%addr, error = %e, "could not set the UDP {what} buffer");
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_udp(
    addr: SocketAddr,
    config: &ServerConfig,
    tls: &wtransport::tls::rustls::ServerConfig,
) -> Result<WtEndpoint, StartError> {
    let socket =
        udp_socket(addr, config.udp_socket_buffer_bytes).map_err(|source| StartError::Bind {
            addr,
            protocol: "udp",
            source,
        })?;
    let builder = WtServerConfig::builder().with_bind_socket(socket);
    let mut transport = wtransport::quinn::TransportConfig::default();
    transport
        .datagram_send_buffer_size(config.datagram_send_buffer_bytes)
        .datagram_receive_buffer_size(Some(config.datagram_receive_buffer_bytes))
        // Pack uploads: MAX_PACK_STREAMS open at once, plus HTTP/3 streams.
        .max_concurrent_uni_streams(crate::transport::webtransport::MAX_CLIENT_UNI_STREAMS.into())
        .max_concurrent_bidi_streams(
            crate::transport::webtransport::MAX_CLIENT_BIDI_STREAMS.into(),
        );
    if config.quic_ack_eliciting_threshold > 0 {
        let mut ack_frequency = wtransport::quinn::AckFrequencyConfig::default();
        ack_frequency.ack_eliciting_threshold(config.quic_ack_eliciting_threshold.into());
        transport.ack_frequency_config(Some(ack_frequency));
    }
    let wt_config = builder
        .with_custom_tls_and_transport(tls.clone(), transport)
        .keep_alive_interval(Some(config.heartbeat_interval))
        .max_idle_timeout(Some(config.heartbeat_timeout))
        .map_err(|_| {
            StartError::InvalidSetting(format!(
                "heartbeat timeout {:?} is out of range",
                config.heartbeat_timeout
            ))
        })?
        .build();
    Endpoint::server(wt_config).map_err(|source| StartError::Bind {
        addr,
        protocol: "udp",
        source,
    })
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr,
            protocol: "tcp",
            source,
        })
}

fn local_addr(
    addr: SocketAddr,
    protocol: &'static str,
    got: std::io::Result<SocketAddr>,
) -> Result<SocketAddr, StartError> {
    got.map_err(|source| StartError::Bind {
        addr,
        protocol,
        source,
    })
}

/// Binds UDP and TCP on the same port number. For port 0, the ephemeral UDP
/// port may be taken on TCP by another program; then both are tried again.
async fn bind_pair(
    addr: SocketAddr,
    config: &ServerConfig,
    tls: &wtransport::tls::rustls::ServerConfig,
) -> Result<(WtEndpoint, TcpListener), StartError> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let endpoint = bind_udp(addr, config, tls)?;
        let udp = local_addr(addr, "udp", endpoint.local_addr())?;
        match bind_tcp(udp).await {
            Ok(tcp) => return Ok((endpoint, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or(StartError::NoListenAddress))
}

impl Server {
    /// Loads the certificate, binds and starts accepting.
    pub async fn start(mut config: ServerConfig) -> Result<RunningServer, StartError> {
        check(&mut config)?;
        // Every handshake (QUIC and TCP) takes the manager's current certificate.
        let certs = CertManager::load(config.certificate.clone(), rotation_settings(&config))?;
        let quic_tls = certs.quic_config();
        let clock = ServerClock::new();
        let stats = Arc::new(ServerStats::default());
        let packs = Arc::new(crate::packs::PackStore::new(config.packs.clone()));
        let store_healthy = Arc::new(AtomicBool::new(true));
        let (store, loaded) = match &config.store {
            Some(settings) => {
                let opened = {
                    let settings = settings.clone();
                    tokio::task::spawn_blocking(move || crate::store::Store::open(&settings))
                        .await
                        .map_err(|e| StartError::InvalidSetting(format!("store: {e}")))??
                };
                let (database, loaded) = opened;
                let writer = crate::store::Store::start_writer(
                    database,
                    settings,
                    store_healthy.clone(),
                    stats.clone(),
                );
                (Some(writer), Some(loaded))
            }
            None => (None, None),
        };
        let registry = RoomRegistry::new(
            config.rooms.clone(),
            clock,
            stats.clone(),
            packs.clone(),
            store,
        );
        let access = AccessControl::new(&config.access)
            .map_err(|e| StartError::InvalidSetting(e.to_string()))?;
        let ctx = Arc::new(SessionContext::new(
            config.session.clone(),
            registry.clone(),
            clock,
            stats.clone(),
            access,
            packs,
        ));
        if let (Some(loaded), Some(settings)) = (loaded, &config.store) {
            restore_rooms(&ctx, loaded, settings)?;
        }

        let mut endpoints = Vec::new();
        let mut listeners = Vec::new();
        match &config.tcp_listen {
            None => {
                for addr in &config.listen {
                    let (endpoint, tcp) = bind_pair(*addr, &config, &quic_tls).await?;
                    endpoints.push(endpoint);
                    listeners.push(tcp);
                }
            }
            Some(tcp_addrs) => {
                for addr in &config.listen {
                    endpoints.push(bind_udp(*addr, &config, &quic_tls)?);
                }
                for addr in tcp_addrs {
                    listeners.push(bind_tcp(*addr).await?);
                }
            }
        }
        let mut udp_addrs = Vec::new();
        for (endpoint, addr) in endpoints.iter().zip(&config.listen) {
            udp_addrs.push(local_addr(*addr, "udp", endpoint.local_addr())?);
        }
        let mut tcp_addrs = Vec::new();
        for listener in &listeners {
            tcp_addrs.push(local_addr(udp_addrs[0], "tcp", listener.local_addr())?);
        }

        let origins = OriginPolicy::new(&config.allowed_origins);
        let ready = Arc::new(AtomicBool::new(false));
        let wt = Arc::new(WtSettings {
            handshake_timeout: config.session.handshake_timeout,
            origins: origins.clone(),
            tick_coalesce: config.tick_coalesce,
        });
        let endpoints: Vec<Arc<WtEndpoint>> = endpoints.into_iter().map(Arc::new).collect();
        let mut accept_tasks: Vec<JoinHandle<()>> = endpoints
            .iter()
            .map(|endpoint| {
                let endpoint = endpoint.clone();
                let ctx = ctx.clone();
                let wt = wt.clone();
                tokio::spawn(async move {
                    loop {
                        let incoming = endpoint.accept().await;
                        tokio::spawn(handle_incoming(incoming, ctx.clone(), wt.clone()));
                    }
                })
            })
            .collect();

        let state = Arc::new(HttpState {
            ctx: ctx.clone(),
            origins,
            ws: WsSettings {
                heartbeat_interval: config.heartbeat_interval,
                heartbeat_timeout: config.heartbeat_timeout,
                chunk_bytes: config.websocket_chunk_bytes,
                tick_coalesce: config.tick_coalesce,
            },
            certs: certs.clone(),
            ready: ready.clone(),
            store_healthy,
            started_at: clock.now(),
            metrics: Metrics::new(),
            serve_demo: config.serve_demo,
        });
        let router = http::router(state);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.tcp_config()));
        for listener in listeners {
            let tls = (config.tcp_tls != TcpTls::Off).then(|| acceptor.clone());
            accept_tasks.push(tokio::spawn(http::serve(
                listener,
                tls,
                config.tcp_tls,
                router.clone(),
                config.session.handshake_timeout,
            )));
        }
        // The development certificate is renewed and PEM files reloaded.
        accept_tasks.push(tokio::spawn(certs.clone().run()));
        // Per-address records (rates, blocks) are pruned as they are used;
        // this sweep bounds the memory of addresses that never come back.
        {
            let ctx = ctx.clone();
            let every = config.cleanup_interval;
            accept_tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let now = std::time::Instant::now();
                    ctx.access.guard.prune(now);
                    ctx.resumes.prune(now);
                    ctx.packs.sweep(now);
                }
            }));
        }
        // Every listener is bound and accepting.
        ready.store(true, Ordering::Relaxed);

        Ok(RunningServer {
            udp_addrs,
            tcp_addrs,
            certs,
            stats,
            registry,
            ctx,
            ready,
            endpoints,
            accept_tasks,
            shutdown_timeout: config.shutdown_timeout,
        })
    }
}

impl RunningServer {
    /// The bound UDP (WebTransport) addresses, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The bound TCP (WebSocket, HTTP) addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The WebTransport URL of the first listener.
    pub fn url(&self) -> String {
        webtransport_url(self.udp_addrs[0])
    }

    /// The WebTransport URL of every listener.
    pub fn urls(&self) -> Vec<String> {
        self.udp_addrs
            .iter()
            .copied()
            .map(webtransport_url)
            .collect()
    }

    /// The plain WebSocket URL of the first TCP listener (`ws://…/chorus`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}{WEBTRANSPORT_PATH}", self.tcp_addrs[0])
    }

    /// The TLS WebSocket URL of the first TCP listener (`wss://…/chorus`).
    pub fn wss_url(&self) -> String {
        format!("wss://{}{WEBTRANSPORT_PATH}", self.tcp_addrs[0])
    }

    /// The plain HTTP base URL of the first TCP listener.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.tcp_addrs[0])
    }

    /// SHA-256 of the certificate new connections get, for clients that pin it.
    pub fn cert_hash(&self) -> [u8; 32] {
        self.certs.current().sha256
    }

    /// The certificate new connections get (it changes when rotated).
    pub fn certificate(&self) -> Arc<ServerCertificate> {
        self.certs.current()
    }

    /// The certificate manager: current and previous certificate, rotations.
    pub fn certificates(&self) -> &Arc<CertManager> {
        &self.certs
    }

    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// Figures of the pack store (content held once, pending uploads).
    pub fn pack_stats(&self) -> crate::packs::PackStats {
        self.ctx.packs.stats()
    }

    pub fn rooms(&self) -> &Arc<RoomRegistry> {
        &self.registry
    }

    /// Stops accepting, tells every session ShuttingDown (an `Error` frame
    /// with the time to reconnect after, and close code 501, or 4501 on
    /// WebSocket) once its queued reliable events are written, waits up to
    /// the configured shutdown timeout for the sessions to close, then closes
    /// the endpoints. Returns how many sessions were still open at the end.
    pub async fn shutdown(self) -> u64 {
        self.ready.store(false, Ordering::Relaxed);
        for task in &self.accept_tasks {
            task.abort();
        }
        self.ctx.begin_shutdown();
        let _ = tokio::time::timeout(self.shutdown_timeout, async {
            while self.stats.sessions_open() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        // The sessions have detached their members (reconnecting, so their
        // clients resume after the restart); keep the rooms as they are now.
        if tokio::time::timeout(self.shutdown_timeout, self.registry.persist_all())
            .await
            .is_err()
        {
            tracing::error!("the rooms could not all be written to the store in time");
        }
        for endpoint in &self.endpoints {
            endpoint.close(
                wtransport::VarInt::from_u32(u32::from(ErrorCode::ShuttingDown.as_u16())),
                b"server shutting down",
            );
        }
        let left = self.stats.sessions_open();
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
        left
    }
}

/// Starts the rooms the store held, and lets their members' clients resume
/// (each resume window counted from now).
fn restore_rooms(
    ctx: &Arc<SessionContext>,
    loaded: crate::store::Loaded,
    settings: &crate::store::StoreSettings,
) -> Result<(), StartError> {
    for what in &loaded.discarded {
        tracing::error!(record = %what, "store record could not be read and was dropped");
    }
    let room_count = loaded.rooms.len();
    let (members, problems) = ctx
        .registry
        .restore(loaded.rooms, &loaded.packs, || ctx.new_session_id());
    if !problems.is_empty() {
        if !settings.discard_corrupt {
            return Err(StartError::Restore(problems.join("; ")));
        }
        for problem in &problems {
            tracing::error!(%problem, "left out of the restored rooms");
        }
    }
    let until = std::time::Instant::now() + ctx.config.resume_window;
    let waiting = members.len();
    for m in members {
        let deadline = m.token_expires.map(|t| ctx.clock.instant_of(t));
        ctx.resumes.restore(
            m.key,
            crate::session::JoinedRoom {
                room: m.room,
                member: m.member,
            },
            deadline,
            until,
        );
    }
    tracing::info!(
        rooms = room_count,
        members_waiting = waiting,
        path = %settings.file().display(),
        durability = settings.durability.name(),
        "rooms restored from the store"
    );
    Ok(())
}

/// `https://ADDR/chorus`, with IPv6 addresses in brackets.
pub fn webtransport_url(addr: SocketAddr) -> String {
    format!("https://{addr}{WEBTRANSPORT_PATH}")
}
