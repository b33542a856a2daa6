//! `chorus`: runs a Chorus server. With no arguments it listens on loopback with
//! a development certificate; every setting is a flag or a `CHORUS_*` variable.

use anyhow::Context;
use chorus_protocol::Limits;
use chorus_server::cert::{CertificateSource, dev_hash_file};
use chorus_server::http::TcpTls;
use chorus_server::{Server, ServerConfig};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Chorus: a realtime room-sync server (WebTransport).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// UDP addresses to listen on for WebTransport (comma-separated).
    #[arg(
        long,
        env = "CHORUS_LISTEN",
        value_delimiter = ',',
        default_value = "127.0.0.1:4433,[::1]:4433"
    )]
    listen: Vec<SocketAddr>,
    /// Directory for the development certificate (made when missing or near expiry).
    #[arg(long, env = "CHORUS_CERT_DIR", default_value = "certs")]
    cert_dir: PathBuf,
    /// PEM certificate chain for production (needs --key).
    #[arg(long, env = "CHORUS_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for production (needs --cert).
    #[arg(long, env = "CHORUS_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Rooms held at once.
    #[arg(long, env = "CHORUS_MAX_ROOMS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_rooms: u32,
    /// Members per room.
    #[arg(long, env = "CHORUS_MAX_MEMBERS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    max_members: u32,
    /// Rooms one session may join at once.
    #[arg(long, env = "CHORUS_MAX_ROOMS_PER_SESSION", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_rooms_per_session: u32,
    /// Seconds an empty room is kept (at least 60).
    #[arg(long, env = "CHORUS_ROOM_IDLE_TTL_SECS", default_value_t = 7200, value_parser = clap::value_parser!(u64).range(60..))]
    room_idle_ttl_secs: u64,
    /// Largest control frame in bytes.
    #[arg(long, env = "CHORUS_MAX_FRAME_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    max_frame_bytes: u32,
    /// Largest tick payload in bytes (browsers carry about 1000 per datagram).
    #[arg(long, env = "CHORUS_MAX_TICK_PAYLOAD_BYTES", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1200))]
    max_tick_payload_bytes: u32,
    /// Largest state value in bytes.
    #[arg(long, env = "CHORUS_MAX_STATE_VALUE_BYTES", default_value_t = 900_000)]
    max_state_value_bytes: u32,
    /// Largest total state of one room in bytes (keys plus values).
    #[arg(long, env = "CHORUS_MAX_STATE_TOTAL_BYTES", default_value_t = 900_000)]
    max_state_total_bytes: u32,
    /// Largest command payload in bytes.
    #[arg(long, env = "CHORUS_MAX_COMMAND_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    max_command_payload_bytes: u32,
    /// Milliseconds a client has to complete the handshake.
    #[arg(long, env = "CHORUS_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    handshake_timeout_ms: u64,
    /// TCP addresses for WebSocket and HTTP (comma-separated); by default the
    /// --listen addresses, so UDP and TCP share each port number.
    #[arg(long, env = "CHORUS_TCP_LISTEN", value_delimiter = ',')]
    tcp_listen: Option<Vec<SocketAddr>>,
    /// TLS on the TCP listener: `auto` (TLS and plain on one port), `on`, or
    /// `off` (plain, behind a TLS-terminating proxy).
    #[arg(long, env = "CHORUS_TCP_TLS", default_value = "auto")]
    tcp_tls: TcpTls,
    /// Web origins allowed to connect besides loopback and same-host pages
    /// (comma-separated `scheme://host[:port]`, or `*` for any).
    #[arg(long, env = "CHORUS_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Seconds between heartbeats (QUIC keep-alive, WebSocket ping).
    #[arg(long, env = "CHORUS_HEARTBEAT_INTERVAL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_interval_secs: u64,
    /// Seconds of silence after which a connection is dropped and its members
    /// leave with reason TimedOut (longer than the interval).
    #[arg(long, env = "CHORUS_HEARTBEAT_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    heartbeat_timeout_secs: u64,
    /// Outgoing datagram bytes queued per connection; the oldest ticks are
    /// dropped past it, so a slow receiver gets fresh ticks, not late ones.
    #[arg(long, env = "CHORUS_DATAGRAM_SEND_BUFFER_BYTES", default_value_t = chorus_server::server::DEFAULT_DATAGRAM_SEND_BUFFER as u64, value_parser = clap::value_parser!(u64).range(2048..=64 * 1024 * 1024))]
    datagram_send_buffer_bytes: u64,
    /// Incoming datagram bytes queued per connection before the oldest are dropped.
    #[arg(long, env = "CHORUS_DATAGRAM_RECEIVE_BUFFER_BYTES", default_value_t = chorus_server::server::DEFAULT_DATAGRAM_RECEIVE_BUFFER as u64, value_parser = clap::value_parser!(u64).range(2048..=64 * 1024 * 1024))]
    datagram_receive_buffer_bytes: u64,
    /// Kernel receive/send buffer per UDP socket, in bytes (capped by the
    /// kernel's net.core.rmem_max / wmem_max).
    #[arg(long, env = "CHORUS_UDP_SOCKET_BUFFER_BYTES", default_value_t = chorus_server::server::DEFAULT_UDP_SOCKET_BUFFER as u64, value_parser = clap::value_parser!(u64).range(65536..=1024 * 1024 * 1024))]
    udp_socket_buffer_bytes: u64,
    /// Do not serve the demo page and browser SDK at `/`.
    #[arg(long, env = "CHORUS_NO_DEMO")]
    no_demo: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `chorus_server=debug`.
    #[arg(long, env = "CHORUS_LOG", default_value = "info")]
    log: String,
}

impl Args {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        anyhow::ensure!(
            self.max_state_value_bytes <= self.max_frame_bytes,
            "--max-state-value-bytes ({}) cannot exceed --max-frame-bytes ({})",
            self.max_state_value_bytes,
            self.max_frame_bytes
        );
        let mut config = ServerConfig {
            listen: self.listen.clone(),
            certificate: match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => CertificateSource::Pem {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                _ => CertificateSource::Development {
                    dir: self.cert_dir.clone(),
                },
            },
            tcp_listen: self.tcp_listen.clone(),
            tcp_tls: self.tcp_tls,
            serve_demo: !self.no_demo,
            allowed_origins: self.allowed_origins.clone(),
            heartbeat_interval: Duration::from_secs(self.heartbeat_interval_secs),
            heartbeat_timeout: Duration::from_secs(self.heartbeat_timeout_secs),
            datagram_send_buffer_bytes: self.datagram_send_buffer_bytes as usize,
            datagram_receive_buffer_bytes: self.datagram_receive_buffer_bytes as usize,
            udp_socket_buffer_bytes: self.udp_socket_buffer_bytes as usize,
            ..ServerConfig::default()
        };
        config.session.limits = Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_tick_payload_bytes: self.max_tick_payload_bytes,
            max_rooms_per_session: self.max_rooms_per_session,
            max_members_per_room: self.max_members,
            max_state_value_bytes: self.max_state_value_bytes,
            max_state_total_bytes: self.max_state_total_bytes,
            max_command_payload_bytes: self.max_command_payload_bytes,
            ..Limits::default()
        };
        config.session.handshake_timeout = Duration::from_millis(self.handshake_timeout_ms);
        config.rooms.max_rooms = self.max_rooms;
        config.rooms.room.idle_ttl_us = self.room_idle_ttl_secs * 1_000_000;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .with_context(|| format!("invalid --log filter {:?}", args.log))?,
        )
        .init();
    let config = args.config()?;
    let server = Server::start(config.clone())
        .await
        .context("could not start the server")?;

    println!("Chorus {} listening", env!("CARGO_PKG_VERSION"));
    for url in server.urls() {
        println!("  WebTransport  {url}");
    }
    for addr in server.tcp_addrs() {
        let (ws, http) = match config.tcp_tls {
            TcpTls::Auto => ("ws:// and wss://", "http:// and https://"),
            TcpTls::Required => ("wss://", "https://"),
            TcpTls::Off => ("ws://", "http://"),
        };
        println!("  WebSocket     {ws}{addr}/chorus");
        println!("  HTTP          {http}{addr}/health, /stats, /metrics, /cert-hash");
    }
    if config.serve_demo
        && let Some(addr) = server.tcp_addrs().first()
        && config.tcp_tls != TcpTls::Required
    {
        println!("  Demo page     http://{addr}/  (open it in two tabs)");
    }
    println!("certificate sha256: {}", server.certificate().sha256_hex());
    if let CertificateSource::Development { dir } = &config.certificate {
        println!(
            "  (development certificate in {}; hash also in {})",
            dir.display(),
            dev_hash_file(dir).display()
        );
    }

    tokio::signal::ctrl_c()
        .await
        .context("could not listen for Ctrl-C")?;
    println!("shutting down");
    server.shutdown().await;
    Ok(())
}
