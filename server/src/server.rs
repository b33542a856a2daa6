//! Starting and stopping a server: listeners, certificate, shared context.
//!
//! [`Server::start`] binds every configured address, loads or makes the
//! certificate, and spawns one accept loop per listener. It returns a
//! [`RunningServer`] that tells where it listens and stops it. Tests, the bench
//! and the `chorus` binary all start servers this way.

use crate::cert::{self, CertError, CertificateSource, ServerCertificate};
use crate::clock::ServerClock;
use crate::rooms::{RoomRegistry, RoomSettings};
use crate::session::{SessionConfig, SessionContext};
use crate::stats::ServerStats;
use crate::transport::webtransport::{WEBTRANSPORT_PATH, handle_incoming};
use chorus_protocol::ErrorCode;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use wtransport::config::Ipv6DualStackConfig;
use wtransport::{Endpoint, ServerConfig as WtServerConfig};

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP addresses for WebTransport. Both loopback families by default,
    /// because Chromium resolves `localhost` to `::1` for QUIC.
    pub listen: Vec<SocketAddr>,
    pub certificate: CertificateSource,
    pub session: SessionConfig,
    pub rooms: RoomSettings,
    /// A QUIC connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval, so a quiet but healthy client is not timed out.
    pub keep_alive: Duration,
    /// Outgoing datagram bytes queued per connection. When a receiver cannot
    /// take ticks as fast as they come, the oldest queued ones are dropped: this
    /// bound is what makes the tick lane newest-wins instead of seconds behind.
    pub datagram_send_buffer_bytes: usize,
    /// Incoming datagram bytes queued per connection before the oldest are
    /// dropped (also the largest datagram a client may send).
    pub datagram_receive_buffer_bytes: usize,
}

/// The default port for both WebTransport (UDP) and, later, WebSocket (TCP).
pub const DEFAULT_PORT: u16 = 4433;
/// quinn's own default is 1 MiB, which at tick rates is seconds of stale ticks.
pub const DEFAULT_DATAGRAM_SEND_BUFFER: usize = 16 * 1024;
pub const DEFAULT_DATAGRAM_RECEIVE_BUFFER: usize = 64 * 1024;
/// A datagram buffer must hold at least one full-size datagram.
pub const MIN_DATAGRAM_BUFFER: usize = 2048;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, DEFAULT_PORT)),
            ],
            certificate: CertificateSource::Development {
                dir: PathBuf::from("certs"),
            },
            session: SessionConfig::default(),
            rooms: RoomSettings::default(),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            datagram_send_buffer_bytes: DEFAULT_DATAGRAM_SEND_BUFFER,
            datagram_receive_buffer_bytes: DEFAULT_DATAGRAM_RECEIVE_BUFFER,
        }
    }
}

impl ServerConfig {
    /// A configuration for tests and in-process benches: one ephemeral port on
    /// 127.0.0.1 and a development certificate in `cert_dir`.
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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no listen address configured")]
    NoListenAddress,
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

/// The entry point; see [`Server::start`].
#[derive(Debug)]
pub struct Server;

/// A started server. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
pub struct RunningServer {
    addrs: Vec<SocketAddr>,
    certificate: ServerCertificate,
    stats: Arc<ServerStats>,
    registry: Arc<RoomRegistry>,
    endpoints: Vec<Arc<Endpoint<wtransport::endpoint::endpoint_side::Server>>>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds, loads the certificate and starts accepting.
    pub async fn start(mut config: ServerConfig) -> Result<RunningServer, StartError> {
        if config.listen.is_empty() {
            return Err(StartError::NoListenAddress);
        }
        // The room's member cap and the announced limit are one setting.
        config.rooms.room.max_members = config.session.limits.max_members_per_room;
        config.rooms.room.max_state_keys = config.session.limits.max_state_keys;
        config.rooms.room.max_state_total_bytes =
            u64::from(config.session.limits.max_state_total_bytes);
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
        if config.idle_timeout <= config.keep_alive {
            return Err(StartError::InvalidSetting(format!(
                "idle timeout ({:?}) must be longer than keep-alive ({:?})",
                config.idle_timeout, config.keep_alive
            )));
        }

        let certificate = cert::load(&config.certificate)?;
        let clock = ServerClock::new();
        let stats = Arc::new(ServerStats::default());
        let registry = RoomRegistry::new(config.rooms.clone(), clock, stats.clone());
        let ctx = Arc::new(SessionContext::new(
            config.session.clone(),
            registry.clone(),
            clock,
            stats.clone(),
        ));

        let mut endpoints = Vec::new();
        let mut addrs = Vec::new();
        for addr in &config.listen {
            let builder = WtServerConfig::builder();
            let builder = match addr {
                SocketAddr::V4(_) => builder.with_bind_address(*addr),
                SocketAddr::V6(v6) => builder.with_bind_address_v6(*v6, Ipv6DualStackConfig::Deny),
            };
            let mut transport = wtransport::quinn::TransportConfig::default();
            transport
                .datagram_send_buffer_size(config.datagram_send_buffer_bytes)
                .datagram_receive_buffer_size(Some(config.datagram_receive_buffer_bytes));
            let wt_config = builder
                .with_custom_tls_and_transport(certificate.tls.clone(), transport)
                .keep_alive_interval(Some(config.keep_alive))
                .max_idle_timeout(Some(config.idle_timeout))
                .map_err(|_| {
                    StartError::InvalidSetting(format!(
                        "idle timeout {:?} is out of range",
                        config.idle_timeout
                    ))
                })?
                .build();
            let endpoint = Endpoint::server(wt_config).map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
            let local = endpoint.local_addr().map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
            addrs.push(local);
            endpoints.push(Arc::new(endpoint));
        }

        let accept_tasks = endpoints
            .iter()
            .map(|endpoint| {
                let endpoint = endpoint.clone();
                let ctx = ctx.clone();
                let handshake_timeout = config.session.handshake_timeout;
                tokio::spawn(async move {
                    loop {
                        let incoming = endpoint.accept().await;
                        tokio::spawn(handle_incoming(incoming, ctx.clone(), handshake_timeout));
                    }
                })
            })
            .collect();

        Ok(RunningServer {
            addrs,
            certificate,
            stats,
            registry,
            endpoints,
            accept_tasks,
        })
    }
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addrs", &self.addrs)
            .field("cert_hash", &self.certificate.sha256_hex())
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The bound addresses, in configuration order (ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The WebTransport URL of the first listener.
    pub fn url(&self) -> String {
        webtransport_url(self.addrs[0])
    }

    /// The WebTransport URL of every listener.
    pub fn urls(&self) -> Vec<String> {
        self.addrs.iter().copied().map(webtransport_url).collect()
    }

    /// SHA-256 of the certificate, for clients that pin it.
    pub fn cert_hash(&self) -> [u8; 32] {
        self.certificate.sha256
    }

    pub fn certificate(&self) -> &ServerCertificate {
        &self.certificate
    }

    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    pub fn rooms(&self) -> &Arc<RoomRegistry> {
        &self.registry
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(self) {
        for task in &self.accept_tasks {
            task.abort();
        }
        for endpoint in &self.endpoints {
            endpoint.close(
                wtransport::VarInt::from_u32(u32::from(ErrorCode::ShuttingDown.as_u16())),
                b"server shutting down",
            );
        }
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
    }
}

/// `https://ADDR/chorus`, with IPv6 addresses in brackets.
pub fn webtransport_url(addr: SocketAddr) -> String {
    format!("https://{addr}{WEBTRANSPORT_PATH}")
}
