//! Every setting of the `chorus` binary: one clap argument each, so one
//! command-line flag, one `CHORUS_*` environment variable and one key in the
//! configuration file (the flag's name in snake case).
//!
//! The allowed range of each integer setting is in [`RANGES`], one place that
//! both checks values (from every source) and documents them; a unit test
//! keeps it complete. [`Settings::server_config`] turns the settings into a
//! [`ServerConfig`] and checks what spans several settings.

use super::ConfigError;
use super::range::Range;
use crate::access::guard::AbuseConfig;
use crate::access::tokens::TokenConfig;
use crate::cert::CertificateSource;
use crate::http::TcpTls;
use crate::logging::LogFormat;
use crate::server::ServerConfig;
use crate::session::{AccessSettings, IceSettings};
use crate::templates::load_templates;
use chorus_protocol::{Limits, Rate, RateLimits};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The server's settings. Integer ranges are in [`RANGES`].
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// UDP addresses to listen on for WebTransport (comma-separated).
    #[arg(
        long,
        env = "CHORUS_LISTEN",
        value_delimiter = ',',
        default_value = "127.0.0.1:4433,[::1]:4433"
    )]
    pub listen: Vec<SocketAddr>,
    /// Directory for the development certificate (made when missing or near expiry).
    #[arg(long, env = "CHORUS_CERT_DIR", default_value = "certs")]
    pub cert_dir: PathBuf,
    /// PEM certificate chain for production (needs key).
    #[arg(long, env = "CHORUS_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key for production (needs cert).
    #[arg(long, env = "CHORUS_KEY")]
    pub key: Option<PathBuf>,
    /// Rooms held at once.
    #[arg(long, env = "CHORUS_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: u32,
    /// Members per room.
    #[arg(long, env = "CHORUS_MAX_MEMBERS", default_value_t = 32)]
    pub max_members: u32,
    /// Rooms one session may join at once.
    #[arg(long, env = "CHORUS_MAX_ROOMS_PER_SESSION", default_value_t = 16)]
    pub max_rooms_per_session: u32,
    /// Seconds an empty room is kept.
    #[arg(long, env = "CHORUS_ROOM_IDLE_TTL_SECS", default_value_t = 7200)]
    pub room_idle_ttl_secs: u64,
    /// Largest control frame in bytes.
    #[arg(long, env = "CHORUS_MAX_FRAME_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_frame_bytes: u32,
    /// Largest tick payload in bytes (browsers carry about 1000 per datagram).
    #[arg(long, env = "CHORUS_MAX_TICK_PAYLOAD_BYTES", default_value_t = 1000)]
    pub max_tick_payload_bytes: u32,
    /// Largest state value in bytes.
    #[arg(long, env = "CHORUS_MAX_STATE_VALUE_BYTES", default_value_t = 900_000)]
    pub max_state_value_bytes: u32,
    /// Largest total state of one room in bytes (keys plus values).
    #[arg(long, env = "CHORUS_MAX_STATE_TOTAL_BYTES", default_value_t = 900_000)]
    pub max_state_total_bytes: u32,
    /// Largest command payload in bytes.
    #[arg(long, env = "CHORUS_MAX_COMMAND_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_command_payload_bytes: u32,
    /// Milliseconds a client has to complete the handshake.
    #[arg(long, env = "CHORUS_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// TCP addresses for WebSocket and HTTP (comma-separated); by default the
    /// listen addresses, so UDP and TCP share each port number.
    #[arg(long, env = "CHORUS_TCP_LISTEN", value_delimiter = ',')]
    pub tcp_listen: Option<Vec<SocketAddr>>,
    /// TLS on the TCP listener: `auto` (TLS and plain on one port), `on`, or
    /// `off` (plain, behind a TLS-terminating proxy).
    #[arg(long, env = "CHORUS_TCP_TLS", default_value = "auto")]
    pub tcp_tls: TcpTls,
    /// Web origins allowed to connect besides loopback and same-host pages
    /// (comma-separated `scheme://host[:port]`, or `*` for any).
    #[arg(long, env = "CHORUS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Seconds between heartbeats (QUIC keep-alive, WebSocket ping).
    #[arg(long, env = "CHORUS_HEARTBEAT_INTERVAL_SECS", default_value_t = 10)]
    pub heartbeat_interval_secs: u64,
    /// Seconds of silence after which a connection is dropped and its members
    /// leave with reason TimedOut (longer than the interval).
    #[arg(long, env = "CHORUS_HEARTBEAT_TIMEOUT_SECS", default_value_t = 30)]
    pub heartbeat_timeout_secs: u64,
    /// Outgoing datagram bytes queued per connection; the oldest ticks are
    /// dropped past it, so a slow receiver gets fresh ticks, not late ones.
    #[arg(long, env = "CHORUS_DATAGRAM_SEND_BUFFER_BYTES", default_value_t = crate::server::DEFAULT_DATAGRAM_SEND_BUFFER as u64)]
    pub datagram_send_buffer_bytes: u64,
    /// Incoming datagram bytes queued per connection before the oldest are dropped.
    #[arg(long, env = "CHORUS_DATAGRAM_RECEIVE_BUFFER_BYTES", default_value_t = crate::server::DEFAULT_DATAGRAM_RECEIVE_BUFFER as u64)]
    pub datagram_receive_buffer_bytes: u64,
    /// Ask QUIC peers that support the ACK frequency extension (quinn-based
    /// clients) to acknowledge every N+1 packets (or after their max ACK
    /// delay) instead of every 2nd; ticks are never retransmitted, so this
    /// saves packets. 0: ask nothing.
    #[arg(long, env = "CHORUS_QUIC_ACK_ELICITING_THRESHOLD", default_value_t = crate::server::DEFAULT_QUIC_ACK_ELICITING_THRESHOLD)]
    pub quic_ack_eliciting_threshold: u32,
    /// Coalescing window for ticks, in ms: the first tick waiting for a
    /// receiver waits this long for others, which then leave together (one
    /// WebSocket write; as few QUIC packets as fit). Adds up to the window
    /// plus 1 ms of latency (tokio's timer counts whole milliseconds); 0 sends
    /// every tick at once. BENCHMARKS.md has its measured cost and gain.
    #[arg(long, env = "CHORUS_TICK_COALESCE_MS", default_value_t = crate::server::DEFAULT_TICK_COALESCE_MS)]
    pub tick_coalesce_ms: u64,
    /// Kernel receive/send buffer per UDP socket, in bytes (capped by the
    /// kernel's net.core.rmem_max / wmem_max).
    #[arg(long, env = "CHORUS_UDP_SOCKET_BUFFER_BYTES", default_value_t = crate::server::DEFAULT_UDP_SOCKET_BUFFER as u64)]
    pub udp_socket_buffer_bytes: u64,
    /// Do not serve the demo page and browser SDK at `/`.
    #[arg(long, env = "CHORUS_NO_DEMO")]
    pub no_demo: bool,
    /// API keys a client must present in its hello (comma-separated; any one
    /// admits). None: no key needed (development).
    #[arg(
        long = "api-key",
        env = "CHORUS_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Secret for HS256 join tokens (prefer the environment variable: command
    /// lines are visible to other users of the machine).
    #[arg(long, env = "CHORUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file with the P-256 public key for ES256 join tokens.
    #[arg(long, env = "CHORUS_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Seconds of clock skew allowed when checking a token's exp and nbf.
    #[arg(long, env = "CHORUS_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// Refuse joins without a join token.
    #[arg(long, env = "CHORUS_REQUIRE_JOIN_TOKEN")]
    pub require_join_token: bool,
    /// TOML file with room templates (see the README).
    #[arg(long, env = "CHORUS_ROOM_TEMPLATES")]
    pub room_templates: Option<PathBuf>,
    /// Room id length in bytes.
    #[arg(long, env = "CHORUS_MAX_ROOM_ID_LEN", default_value_t = 128)]
    pub max_room_id_len: u32,
    /// Display name and client name length in bytes.
    #[arg(long, env = "CHORUS_MAX_NAME_LEN", default_value_t = 64)]
    pub max_name_len: u32,
    /// Room password length in bytes.
    #[arg(long, env = "CHORUS_MAX_PASSWORD_LEN", default_value_t = 128)]
    pub max_password_len: u32,
    /// Kick and close reason length in bytes.
    #[arg(long, env = "CHORUS_MAX_REASON_LEN", default_value_t = 96)]
    pub max_reason_len: u32,
    /// State keys per room.
    #[arg(long, env = "CHORUS_MAX_STATE_KEYS", default_value_t = 1024)]
    pub max_state_keys: u32,
    /// Room events kept per room for resuming members (history length); a
    /// member further behind gets a fresh snapshot.
    #[arg(long, env = "CHORUS_EVENT_LOG_LEN", default_value_t = 1024)]
    pub event_log_len: u32,
    /// Bytes of state values and command payloads in that log.
    #[arg(long, env = "CHORUS_EVENT_LOG_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub event_log_bytes: u64,
    /// Chat messages (commands of the chat kind) a joining member receives.
    #[arg(long, env = "CHORUS_CHAT_HISTORY_LEN", default_value_t = 50)]
    pub chat_history_len: u32,
    /// The command kind that is chat.
    #[arg(long, env = "CHORUS_CHAT_KIND", default_value = "chat")]
    pub chat_kind: String,
    /// Seconds a dropped session can be resumed (0: no resuming).
    #[arg(long, env = "CHORUS_RESUME_WINDOW_SECS", default_value_t = 60)]
    pub resume_window_secs: u64,
    /// Seconds of silence after which a host is away and failover starts.
    #[arg(long, env = "CHORUS_HOST_TIMEOUT_SECS", default_value_t = 15)]
    pub host_timeout_secs: u64,
    /// Seconds a host that went away may come back and take its role back.
    #[arg(long, env = "CHORUS_RECLAIM_WINDOW_SECS", default_value_t = 60)]
    pub reclaim_window_secs: u64,
    /// Timelines per room.
    #[arg(long, env = "CHORUS_MAX_TIMELINES_PER_ROOM", default_value_t = 16)]
    pub max_timelines_per_room: u32,
    /// How far ahead a timeline change may be scheduled, in milliseconds.
    #[arg(long, env = "CHORUS_MAX_SCHEDULE_AHEAD_MS", default_value_t = 10_000)]
    pub max_schedule_ahead_ms: u32,
    /// Largest direct or broadcast message payload in bytes.
    #[arg(long, env = "CHORUS_MAX_DIRECT_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_direct_payload_bytes: u32,
    /// Direct and broadcast messages per second per session (burst: twice this).
    #[arg(long, env = "CHORUS_RATE_DIRECT", default_value_t = 30)]
    pub rate_direct: u32,
    /// Largest pack in bytes.
    #[arg(long, env = "CHORUS_MAX_PACK_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_pack_bytes: u32,
    /// Packs per room.
    #[arg(long, env = "CHORUS_MAX_PACKS_PER_ROOM", default_value_t = 300)]
    pub max_packs_per_room: u32,
    /// Bytes of all packs of one room.
    #[arg(long, env = "CHORUS_MAX_PACK_BYTES_PER_ROOM", default_value_t = 256 * 1024 * 1024)]
    pub max_pack_bytes_per_room: u32,
    /// Bytes of pack content the whole server keeps in memory.
    #[arg(long, env = "CHORUS_MAX_PACK_STORE_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_pack_store_bytes: u64,
    /// Media types packs may have (checked by their content's magic bytes).
    #[arg(
        long,
        env = "CHORUS_PACK_MEDIA_TYPES",
        value_delimiter = ',',
        default_value = "image/jpeg,image/png,image/webp,video/mp4,video/webm"
    )]
    pub pack_media_types: Vec<String>,
    /// STUN URLs handed to clients asking for ICE servers (comma-separated).
    #[arg(long, env = "CHORUS_STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Vec<String>,
    /// TURN URLs handed out with time-limited credentials (needs turn_secret).
    #[arg(long, env = "CHORUS_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// The TURN server's shared secret (coturn static-auth-secret; prefer the variable).
    #[arg(long, env = "CHORUS_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Seconds TURN credentials stay valid.
    #[arg(long, env = "CHORUS_TURN_TTL_SECS", default_value_t = 3600)]
    pub turn_ttl_secs: u64,
    /// Control messages per second per session (burst: twice this).
    #[arg(long, env = "CHORUS_RATE_MESSAGES", default_value_t = 45)]
    pub rate_messages: u32,
    /// State updates per second per session (burst: twice this).
    #[arg(long, env = "CHORUS_RATE_STATE_UPDATES", default_value_t = 20)]
    pub rate_state_updates: u32,
    /// Commands per second per session (burst: twice this).
    #[arg(long, env = "CHORUS_RATE_COMMANDS", default_value_t = 30)]
    pub rate_commands: u32,
    /// Ticks per second per session (burst: twice this).
    #[arg(long, env = "CHORUS_RATE_TICKS", default_value_t = 120)]
    pub rate_ticks: u32,
    /// Joins per second per session (burst: twice this).
    #[arg(long, env = "CHORUS_RATE_JOINS", default_value_t = 5)]
    pub rate_joins: u32,
    /// Rate-limit refusals within 10 seconds that disconnect a session.
    #[arg(
        long,
        env = "CHORUS_RATE_VIOLATIONS_BEFORE_DISCONNECT",
        default_value_t = 20
    )]
    pub rate_violations_before_disconnect: u32,
    /// Open connections on the whole server, both transports together (new ones past it are refused with TooManyConnections); at start the server raises its open-file limit to this plus 64, as far as the hard limit allows.
    #[arg(long, env = "CHORUS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: u32,
    /// Open connections per client address.
    #[arg(long, env = "CHORUS_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: u32,
    /// New connections per client address per minute.
    #[arg(
        long,
        env = "CHORUS_CONNECTIONS_PER_IP_PER_MINUTE",
        default_value_t = 600
    )]
    pub connections_per_ip_per_minute: u32,
    /// Joins per client address per minute.
    #[arg(long, env = "CHORUS_JOINS_PER_IP_PER_MINUTE", default_value_t = 600)]
    pub joins_per_ip_per_minute: u32,
    /// Wrong passwords per address and room before joins to it are blocked.
    #[arg(long, env = "CHORUS_WRONG_PASSWORD_ATTEMPTS", default_value_t = 3)]
    pub wrong_password_attempts: u32,
    /// Seconds a wrong-password block lasts.
    #[arg(long, env = "CHORUS_WRONG_PASSWORD_BLOCK_SECS", default_value_t = 1800)]
    pub wrong_password_block_secs: u64,
    /// Unknown rooms an address may ask for per hour before its joins are blocked.
    #[arg(long, env = "CHORUS_UNKNOWN_ROOMS_PER_HOUR", default_value_t = 5)]
    pub unknown_rooms_per_hour: u32,
    /// Seconds an unknown-room block lasts.
    #[arg(long, env = "CHORUS_UNKNOWN_ROOM_BLOCK_SECS", default_value_t = 3600)]
    pub unknown_room_block_secs: u64,
    /// Seconds a kicked member is kept out of the room.
    #[arg(long, env = "CHORUS_KICK_BAN_SECS", default_value_t = 300)]
    pub kick_ban_secs: u64,
    /// Seconds between sweeps of expired per-address records and blocks.
    #[arg(long, env = "CHORUS_CLEANUP_INTERVAL_SECS", default_value_t = 30)]
    pub cleanup_interval_secs: u64,
    /// Hours a development certificate is valid (browsers accept at most 14 days).
    #[arg(long, env = "CHORUS_DEV_CERT_VALIDITY_HOURS", default_value_t = 14 * 24)]
    pub dev_cert_validity_hours: u64,
    /// Hours before its end that a development certificate is renewed (the old
    /// hash stays listed at /cert-hash that long, or until the old one ends).
    #[arg(long, env = "CHORUS_CERT_ROTATE_BEFORE_HOURS", default_value_t = 48)]
    pub cert_rotate_before_hours: u64,
    /// Seconds between checks of the PEM files (reloaded when they change).
    #[arg(long, env = "CHORUS_CERT_CHECK_INTERVAL_SECS", default_value_t = 5)]
    pub cert_check_interval_secs: u64,
    /// Seconds a shutdown waits for sessions to write their last events and close.
    #[arg(long, env = "CHORUS_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Seconds a shutting-down server tells clients to wait before reconnecting.
    #[arg(
        long,
        env = "CHORUS_RECONNECT_AFTER_SHUTDOWN_SECS",
        default_value_t = 5
    )]
    pub reconnect_after_shutdown_secs: u64,
    /// Directory of the store rooms and packs are kept in across restarts
    /// (file `chorus.redb`; one server per directory).
    #[arg(long, env = "CHORUS_DATA_DIR", default_value = "chorus-data")]
    pub data_dir: PathBuf,
    /// Keep rooms in memory only: nothing is written, a restart starts empty.
    #[arg(long, env = "CHORUS_MEMORY_ONLY")]
    pub memory_only: bool,
    /// When room changes reach the disk: `sync` (committed, with fsync, before
    /// they are acknowledged or broadcast; concurrent changes share a commit),
    /// `interval` (committed every --persist-interval-ms), `none` (written
    /// only at a graceful shutdown; a crash loses everything since start).
    #[arg(long, env = "CHORUS_DURABILITY", default_value = "interval")]
    pub durability: crate::store::Durability,
    /// Milliseconds between commits in `interval` durability (the most a
    /// crash loses).
    #[arg(long, env = "CHORUS_PERSIST_INTERVAL_MS", default_value_t = 200)]
    pub persist_interval_ms: u64,
    /// Start even if the store cannot be read: copy it aside
    /// (`chorus.redb.corrupt-<time>`) and go on without what cannot be read.
    /// Without it the server refuses to start.
    #[arg(long, env = "CHORUS_DISCARD_CORRUPT_DATA")]
    pub discard_corrupt_data: bool,
    /// Log line format: `human` or `json` (one object per line, with spans).
    #[arg(long, env = "CHORUS_LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `chorus_server=debug`.
    #[arg(long, env = "CHORUS_LOG", default_value = "info")]
    pub log: String,
}

impl Settings {
    /// The server configuration these settings describe. Checks what no
    /// single value can: combinations, the log filter's syntax, and the
    /// files named (room templates, JWT public key).
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(ConfigError::Invalid(format!(
                "invalid value '{}' for log: {e}",
                self.log
            )));
        }
        if self.max_state_value_bytes > self.max_frame_bytes {
            return Err(ConfigError::Invalid(format!(
                "max_state_value_bytes ({}) cannot exceed max_frame_bytes ({})",
                self.max_state_value_bytes, self.max_frame_bytes
            )));
        }
        if self.heartbeat_timeout_secs <= self.heartbeat_interval_secs {
            return Err(ConfigError::Invalid(format!(
                "heartbeat_timeout_secs ({}) must be longer than heartbeat_interval_secs ({})",
                self.heartbeat_timeout_secs, self.heartbeat_interval_secs
            )));
        }
        let mut config = ServerConfig {
            listen: self.listen.clone(),
            certificate: match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => CertificateSource::Pem {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                (None, None) => CertificateSource::Development {
                    dir: self.cert_dir.clone(),
                },
                (Some(_), None) => return Err(ConfigError::Invalid("cert needs key".into())),
                (None, Some(_)) => return Err(ConfigError::Invalid("key needs cert".into())),
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
            quic_ack_eliciting_threshold: self.quic_ack_eliciting_threshold,
            tick_coalesce: Duration::from_millis(self.tick_coalesce_ms),
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
            max_room_id_len: self.max_room_id_len,
            max_name_len: self.max_name_len,
            max_password_len: self.max_password_len,
            max_reason_len: self.max_reason_len,
            max_state_keys: self.max_state_keys,
            max_timelines_per_room: self.max_timelines_per_room,
            max_schedule_ahead_ms: self.max_schedule_ahead_ms,
            max_direct_payload_bytes: self.max_direct_payload_bytes,
            max_pack_bytes: self.max_pack_bytes,
            max_packs_per_room: self.max_packs_per_room,
            max_pack_bytes_per_room: self.max_pack_bytes_per_room,
            ..Limits::default()
        };
        let rate = |per_second: u32| Rate {
            per_second,
            burst: per_second.saturating_mul(2),
        };
        config.session.rate_limits = RateLimits {
            messages: rate(self.rate_messages),
            state_updates: rate(self.rate_state_updates),
            commands: rate(self.rate_commands),
            ticks: rate(self.rate_ticks),
            joins: rate(self.rate_joins),
            direct: rate(self.rate_direct),
        };
        config.session.violations_before_disconnect = self.rate_violations_before_disconnect;
        config.session.handshake_timeout = Duration::from_millis(self.handshake_timeout_ms);
        config.rooms.max_rooms = self.max_rooms;
        config.rooms.room.idle_ttl_us = self.room_idle_ttl_secs * 1_000_000;
        let room = &mut config.rooms.room;
        room.event_log_len = self.event_log_len as usize;
        room.event_log_bytes = usize::try_from(self.event_log_bytes).unwrap_or(usize::MAX);
        room.chat_history_len = self.chat_history_len as usize;
        room.chat_kind = self.chat_kind.clone();
        room.host_timeout_us = self.host_timeout_secs * 1_000_000;
        room.reclaim_window_us = self.reclaim_window_secs * 1_000_000;
        config.session.resume_window = Duration::from_secs(self.resume_window_secs);
        config.packs.max_store_bytes = self.max_pack_store_bytes;
        config.packs.allowed_media_types = self.pack_media_types.clone();
        if !self.turn_urls.is_empty() && self.turn_secret.is_none() {
            return Err(ConfigError::Invalid(
                "turn_urls needs turn_secret (TURN servers are handed out with credentials only)"
                    .into(),
            ));
        }
        config.session.ice = IceSettings {
            stun_urls: self.stun_urls.clone(),
            turn_urls: self.turn_urls.clone(),
            turn_secret: self.turn_secret.clone(),
            turn_ttl: Duration::from_secs(self.turn_ttl_secs),
        };
        if let Some(path) = &self.room_templates {
            config.rooms.templates = load_templates(path)
                .map_err(|e| ConfigError::Invalid(format!("room_templates: {e}")))?;
        }
        let es256_public_key_pem = match &self.jwt_public_key {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ConfigError::Invalid(format!(
                    "jwt_public_key: cannot read {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        config.access = AccessSettings {
            api_keys: self
                .api_keys
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
            tokens: TokenConfig {
                hs256_secret: self.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
                es256_public_key_pem,
                leeway_secs: self.jwt_leeway_secs,
            },
            require_join_token: self.require_join_token,
            abuse: AbuseConfig {
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                new_connections_per_ip_per_minute: self.connections_per_ip_per_minute,
                joins_per_ip_per_minute: self.joins_per_ip_per_minute,
                wrong_passwords_per_room: self.wrong_password_attempts,
                wrong_password_block: Duration::from_secs(self.wrong_password_block_secs),
                unknown_rooms_per_hour: self.unknown_rooms_per_hour,
                unknown_room_block: Duration::from_secs(self.unknown_room_block_secs),
                ban_duration: Duration::from_secs(self.kick_ban_secs),
                ..AbuseConfig::default()
            },
            ..AccessSettings::default()
        };
        if self.require_join_token
            && config.access.tokens.hs256_secret.is_none()
            && config.access.tokens.es256_public_key_pem.is_none()
        {
            return Err(ConfigError::Invalid(
                "require_join_token needs jwt_secret or jwt_public_key".into(),
            ));
        }
        config.cleanup_interval = Duration::from_secs(self.cleanup_interval_secs);
        config.dev_cert_validity = Duration::from_secs(self.dev_cert_validity_hours * 3600);
        config.cert_rotate_before = Duration::from_secs(self.cert_rotate_before_hours * 3600);
        config.cert_check_interval = Duration::from_secs(self.cert_check_interval_secs);
        config.shutdown_timeout = Duration::from_secs(self.shutdown_timeout_secs);
        config.session.reconnect_after_shutdown =
            Duration::from_secs(self.reconnect_after_shutdown_secs);
        config.store = (!self.memory_only).then(|| {
            let mut store = crate::store::StoreSettings::new(&self.data_dir);
            store.durability = self.durability;
            store.interval = Duration::from_millis(self.persist_interval_ms);
            store.discard_corrupt = self.discard_corrupt_data;
            store
        });
        Ok(config)
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// The allowed values of every integer setting, by setting name. Applied to
/// the flag and environment variable by the value parser, to the file's
/// values by the file reader, and printed in the help and the docs. A
/// setting missing here fails `every_integer_setting_has_a_range`.
pub const RANGES: &[(&str, Range)] = &[
    ("max_rooms", Range::at_least(1)),
    ("max_members", Range::at_least(1)),
    ("max_rooms_per_session", Range::at_least(1)),
    ("room_idle_ttl_secs", Range::new(60, 365 * DAY)),
    ("max_frame_bytes", Range::at_least(KIB)),
    // Browsers carry about 1000 payload bytes per datagram; 1200 is QUIC's floor.
    ("max_tick_payload_bytes", Range::new(1, 1200)),
    ("max_state_value_bytes", Range::at_least(1)),
    ("max_state_total_bytes", Range::at_least(1)),
    ("max_command_payload_bytes", Range::at_least(1)),
    ("handshake_timeout_ms", Range::new(100, 10 * 60 * 1000)),
    ("heartbeat_interval_secs", Range::new(1, HOUR)),
    ("heartbeat_timeout_secs", Range::new(2, DAY)),
    ("datagram_send_buffer_bytes", Range::new(2 * KIB, 64 * MIB)),
    (
        "datagram_receive_buffer_bytes",
        Range::new(2 * KIB, 64 * MIB),
    ),
    ("udp_socket_buffer_bytes", Range::new(64 * KIB, GIB)),
    ("quic_ack_eliciting_threshold", Range::new(0, 1000)),
    ("tick_coalesce_ms", Range::new(0, 100)),
    ("jwt_leeway_secs", Range::new(0, 600)),
    ("max_room_id_len", Range::new(8, 1024)),
    ("max_name_len", Range::new(1, 1024)),
    ("max_password_len", Range::new(1, 1024)),
    ("max_reason_len", Range::new(0, 1024)),
    ("max_state_keys", Range::at_least(1)),
    ("event_log_len", Range::new(0, 1_000_000)),
    ("event_log_bytes", Range::new(0, 4 * GIB)),
    ("chat_history_len", Range::new(0, 10_000)),
    ("resume_window_secs", Range::new(0, DAY)),
    ("host_timeout_secs", Range::new(1, HOUR)),
    ("reclaim_window_secs", Range::new(0, DAY)),
    ("max_timelines_per_room", Range::new(1, 1024)),
    ("max_schedule_ahead_ms", Range::new(0, 600_000)),
    ("max_direct_payload_bytes", Range::at_least(1)),
    ("rate_direct", Range::at_least(1)),
    ("max_pack_bytes", Range::at_least(1)),
    ("max_packs_per_room", Range::at_least(1)),
    ("max_pack_bytes_per_room", Range::at_least(1)),
    ("max_pack_store_bytes", Range::at_least(1)),
    ("turn_ttl_secs", Range::new(60, 7 * DAY)),
    ("rate_messages", Range::at_least(1)),
    ("rate_state_updates", Range::at_least(1)),
    ("rate_commands", Range::at_least(1)),
    ("rate_ticks", Range::at_least(1)),
    ("rate_joins", Range::at_least(1)),
    ("rate_violations_before_disconnect", Range::at_least(1)),
    ("max_connections", Range::at_least(1)),
    ("max_connections_per_ip", Range::at_least(1)),
    ("connections_per_ip_per_minute", Range::at_least(1)),
    ("joins_per_ip_per_minute", Range::at_least(1)),
    ("wrong_password_attempts", Range::at_least(1)),
    ("wrong_password_block_secs", Range::new(1, 30 * DAY)),
    ("unknown_rooms_per_hour", Range::at_least(1)),
    ("unknown_room_block_secs", Range::new(1, 30 * DAY)),
    ("kick_ban_secs", Range::new(0, 30 * DAY)),
    ("cleanup_interval_secs", Range::new(5, DAY)),
    ("dev_cert_validity_hours", Range::new(1, 14 * 24)),
    ("cert_rotate_before_hours", Range::new(1, 13 * 24)),
    ("cert_check_interval_secs", Range::new(1, HOUR)),
    ("shutdown_timeout_secs", Range::new(1, 600)),
    ("persist_interval_ms", Range::new(10, 60_000)),
    ("reconnect_after_shutdown_secs", Range::new(0, HOUR)),
];

/// The allowed values of the integer setting `name`.
pub fn range_of(name: &str) -> Option<Range> {
    RANGES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}
