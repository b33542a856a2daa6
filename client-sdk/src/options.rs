//! Settings: how to connect ([`ConnectOptions`], [`Trust`], [`TransportChoice`])
//! and how to join a room ([`JoinOptions`]), and turning them into a wtransport
//! client configuration or a rustls configuration for `wss://`.

use crate::error::ConnectError;
use crate::reconnect::ReconnectOptions;
use chorus_protocol::{
    DisplayInfo, FailoverMode, HelloOption, JoinOption, PermissionPolicy, RoomKind,
};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use wtransport::ClientConfig;
use wtransport::tls::Sha256Digest;
use wtransport::tls::client::ServerHashVerification;
use wtransport::tls::rustls;
use wtransport::tls::rustls::RootCertStore;
use wtransport::tls::rustls::pki_types::CertificateDer;
use wtransport::tls::rustls::pki_types::pem::PemObject;

/// Which transport [`Client::connect`](crate::Client::connect) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TransportChoice {
    /// With an `https://` URL: WebTransport, falling back to WebSocket (`wss://`
    /// at the same host, port and path, or
    /// [`websocket_url`](ConnectOptions::websocket_url)) when the WebTransport
    /// session is not established within
    /// [`fallback_after`](ConnectOptions::fallback_after) or fails (UDP blocked,
    /// nothing listening on UDP). With a `ws://` or `wss://` URL: WebSocket.
    #[default]
    Auto,
    /// Only WebTransport; the URL must be `https://`.
    WebTransport,
    /// Only WebSocket: a `ws://`/`wss://` URL as given, or an `https://` URL's
    /// [`websocket_url`](ConnectOptions::websocket_url) or `wss://` equivalent.
    WebSocket,
}

/// How the client decides to trust the server's TLS certificate. The same
/// settings apply to WebTransport and to WebSocket over TLS (`wss://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Accept a certificate whose SHA-256 (of its DER encoding) is one of these, as
    /// browsers do with `serverCertificateHashes`. The certificate must then be
    /// ECDSA P-256 and valid for at most 14 days. This is how a client reaches a
    /// development server (`chorus` prints the hash at start).
    CertificateHashes(Vec<[u8; 32]>),
    /// Verify the certificate chain against the operating system's root store.
    NativeRoots,
    /// Verify against the certificates in this PEM (one or more `CERTIFICATE`
    /// sections): a private CA, or a self-signed server certificate itself.
    CaPem(Vec<u8>),
}

impl Trust {
    /// Parses a certificate hash written as hex, with or without `:` separators
    /// (e.g. as printed by `openssl x509 -fingerprint -sha256`), case-insensitive.
    pub fn parse_hash(hex: &str) -> Option<[u8; 32]> {
        let digits: Vec<u8> = hex
            .trim()
            .bytes()
            .filter(|b| *b != b':')
            .map(|b| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                b'A'..=b'F' => Some(b - b'A' + 10),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if digits.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (pair[0] << 4) | pair[1];
        }
        Some(out)
    }
}

/// Settings of [`Client::connect`](crate::Client::connect).
///
/// Build with `ConnectOptions { trust: ..., ..Default::default() }` or one of the
/// `with_*` helpers.
///
/// `Debug` prints `api_key` as `<redacted>`, so options can be logged.
#[derive(Clone)]
pub struct ConnectOptions {
    /// How to trust the server certificate. Default: [`Trust::NativeRoots`].
    pub trust: Trust,
    /// Which transport to use. Default: [`TransportChoice::Auto`].
    pub transport: TransportChoice,
    /// With [`TransportChoice::Auto`] and an `https://` URL: how long to wait for
    /// the WebTransport (QUIC) session before trying WebSocket instead. Default: 3 s.
    pub fallback_after: Duration,
    /// Where to reach the server by WebSocket when the URL given to `connect` is
    /// `https://` (a `ws://` or `wss://` URL). Default `None`: the same URL with
    /// `wss://`, as the server listens on TCP at its WebTransport port and path.
    pub websocket_url: Option<String>,
    /// Sent in the hello, for the server's logs. Default: `chorus-client-rust/<version>`.
    pub client_name: String,
    /// The server's API key, sent in the hello (as `HelloOption::ApiKey`) when
    /// set. A server that requires one refuses a hello without it, or with a
    /// wrong one, with [`ErrorCode::Unauthorized`](crate::ErrorCode::Unauthorized):
    /// [`ConnectError::Server`], or [`ConnectError::Closed`] when only the close
    /// code arrived. Default: `None`.
    pub api_key: Option<String>,
    /// Bound on connecting: transport connection (QUIC session, or TCP, TLS and
    /// WebSocket upgrade), hello exchange and initial clock sync. Default: 10 s.
    /// After a WebTransport attempt that gave up ([`TransportChoice::Auto`]), the
    /// WebSocket attempt has this much time of its own.
    pub handshake_timeout: Duration,
    /// How long a request waits for its reply before failing with
    /// [`RequestError::Timeout`](crate::RequestError::Timeout). Default: 10 s.
    pub request_timeout: Duration,
    /// Pings sent one after another at connect to sync the clock; `connect`
    /// returns after them. Default: 8. 0 skips the initial sync.
    pub clock_sync_pings: u32,
    /// The keep-alive: one Chorus `Ping` this often while connected. It tells
    /// the server this client is there (a host silent for 15 s is seen as
    /// away, and the room may fail over to another host), and each pong is a
    /// clock sample, so the estimate follows the clock's drift. When nothing
    /// at all arrives for three intervals (at least a second), not even a
    /// pong, the connection is taken for dropped (and resumed, see
    /// [`reconnect`](crate::reconnect)) without waiting for the transport's
    /// idle timeout. Default: 5 s (the server expects at least that often).
    /// [`Duration::ZERO`] disables both.
    pub ping_interval: Duration,
    /// How often a burst of [`clock_refresh_pings`](Self::clock_refresh_pings)
    /// re-syncs the clock in the background, on top of the keep-alive pings.
    /// Default: 60 s. [`Duration::ZERO`] disables these bursts.
    pub clock_sync_interval: Duration,
    /// Pings per background re-sync. Default: 3.
    pub clock_refresh_pings: u32,
    /// Pause between consecutive pings of one sync, so their samples see
    /// independent queueing. Default: 10 ms.
    pub clock_ping_spacing: Duration,
    /// Recent clock samples kept; the minimum-RTT one gives the estimate.
    /// Default: 16, that is the connect-time samples and then about 80 s of
    /// keep-alive samples: old ones age out, so the estimate follows the
    /// local clock's drift (PROTOCOL.md §17.2).
    pub clock_window: usize,
    /// Capacity of each room's event (and command) broadcast: a receiver that falls
    /// further behind gets `RecvError::Lagged`. Default: 1024.
    pub event_capacity: usize,
    /// Capacity of each room's tick broadcast: a receiver that falls further behind
    /// loses the oldest ticks. Default: 64.
    pub tick_capacity: usize,
    /// Capacity of each room's direct and broadcast message channel
    /// ([`Room::messages`](crate::Room::messages)): a receiver that falls further
    /// behind loses the oldest (and counts them). Default: 256.
    pub message_capacity: usize,
    /// Capacity of the client-level error broadcast ([`Client::errors`](crate::Client::errors)).
    /// Default: 64.
    pub error_capacity: usize,
    /// Reconnecting and resuming after a dropped connection (see
    /// [`reconnect`](crate::reconnect)). Default: on, 250 ms doubling to 10 s,
    /// full jitter, for as long as the server's resume window lasts.
    pub reconnect: ReconnectOptions,
    /// Frames queued for the control-stream writer before requests wait. Default: 256.
    pub write_queue: usize,
    /// Largest control-stream frame body accepted from the server; a larger one
    /// is a protocol error that ends the connection. Default `None`: as PROTOCOL.md
    /// §3 says, the protocol default (4 MiB) until the server hello, then the
    /// `max_frame_bytes` the server announced.
    pub max_frame_bytes: Option<u32>,
    /// Keep-alive interval: QUIC keep-alives on WebTransport, a WebSocket Ping on
    /// WebSocket. Default: 5 s. `None` sends none.
    pub keep_alive_interval: Option<Duration>,
    /// Idle timeout: on WebTransport the QUIC idle timeout (the smaller of both
    /// sides' applies); on WebSocket the connection ends with
    /// [`CloseReason::Transport`](crate::CloseReason::Transport)`("idle timeout")`
    /// when nothing (no message, ping or pong) arrives for this long. Default: 30 s.
    /// [`Duration::ZERO`] disables the WebSocket check.
    pub max_idle_timeout: Duration,
    /// Outgoing datagram bytes queued before the oldest ticks are dropped
    /// (WebTransport; on WebSocket each room keeps only its newest unsent tick).
    /// Default: 16 KiB (quinn's own 1 MiB would queue seconds of stale ticks).
    pub datagram_send_buffer_bytes: usize,
    /// Incoming datagram bytes queued before the oldest ticks are dropped, so a
    /// busy application reads fresh ticks, not a backlog. Default: 64 KiB.
    pub datagram_receive_buffer_bytes: usize,
    /// A QUIC endpoint (one UDP socket) to open the WebTransport connection
    /// on, shared with other clients, instead of one of its own. For programs
    /// that hold many connections (load generators, gateways): one socket
    /// reads many connections' packets per system call. Default: `None`.
    pub endpoint: Option<SharedEndpoint>,
}

/// A client QUIC endpoint (one UDP socket) that several [`Client`](crate::Client)s
/// open their WebTransport connections on ([`ConnectOptions::endpoint`]).
/// Cheap to clone. Its trust, idle timeout, keep-alive and datagram buffers
/// are those of the options it was made from, for every connection on it.
#[derive(Clone)]
pub struct SharedEndpoint(
    pub(crate) Arc<wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>>,
);

impl SharedEndpoint {
    /// Binds a new endpoint with the WebTransport settings of `options`, on
    /// a dual-stack UDP socket whose kernel buffers are asked to hold
    /// `socket_buffer_bytes` each way (the many connections on one socket
    /// receive in bursts; the system may grant less, up to its maximum).
    pub fn new(options: &ConnectOptions, socket_buffer_bytes: usize) -> Result<Self, ConnectError> {
        let socket = shared_socket(socket_buffer_bytes)
            .map_err(|e| ConnectError::Connecting(format!("binding a UDP socket: {e}")))?;
        let endpoint = wtransport::Endpoint::client(options.client_config_on(Some(socket))?)?;
        Ok(SharedEndpoint(Arc::new(endpoint)))
    }

    /// Connections open on this endpoint now.
    pub fn open_connections(&self) -> usize {
        self.0.open_connections()
    }
}

/// `[::]:0`, dual-stack, non-blocking, with big buffers.
fn shared_socket(buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(false)?;
    // The system caps these at its maximum; a smaller buffer only drops more.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.set_nonblocking(true)?;
    let any: std::net::SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, 0).into();
    socket.bind(&any.into())?;
    Ok(socket.into())
}

impl fmt::Debug for SharedEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedEndpoint")
            .field("open_connections", &self.0.open_connections())
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            trust: Trust::NativeRoots,
            transport: TransportChoice::Auto,
            fallback_after: Duration::from_secs(3),
            websocket_url: None,
            client_name: format!("chorus-client-rust/{}", env!("CARGO_PKG_VERSION")),
            api_key: None,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            clock_sync_pings: 8,
            ping_interval: Duration::from_secs(5),
            clock_sync_interval: Duration::from_secs(60),
            clock_refresh_pings: 3,
            clock_ping_spacing: Duration::from_millis(10),
            clock_window: 16,
            event_capacity: 1024,
            tick_capacity: 64,
            message_capacity: 256,
            error_capacity: 64,
            reconnect: ReconnectOptions::default(),
            write_queue: 256,
            max_frame_bytes: None,
            keep_alive_interval: Some(Duration::from_secs(5)),
            max_idle_timeout: Duration::from_secs(30),
            datagram_send_buffer_bytes: 16 * 1024,
            datagram_receive_buffer_bytes: 64 * 1024,
            endpoint: None,
        }
    }
}

/// How a secret shows in `Debug` output.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so a new field cannot be forgotten here.
        let ConnectOptions {
            trust,
            transport,
            fallback_after,
            websocket_url,
            client_name,
            api_key,
            handshake_timeout,
            request_timeout,
            clock_sync_pings,
            ping_interval,
            clock_sync_interval,
            clock_refresh_pings,
            clock_ping_spacing,
            clock_window,
            event_capacity,
            tick_capacity,
            message_capacity,
            error_capacity,
            reconnect,
            write_queue,
            max_frame_bytes,
            keep_alive_interval,
            max_idle_timeout,
            datagram_send_buffer_bytes,
            datagram_receive_buffer_bytes,
            endpoint,
        } = self;
        f.debug_struct("ConnectOptions")
            .field("trust", trust)
            .field("transport", transport)
            .field("fallback_after", fallback_after)
            .field("websocket_url", websocket_url)
            .field("client_name", client_name)
            .field("api_key", &redacted(api_key))
            .field("handshake_timeout", handshake_timeout)
            .field("request_timeout", request_timeout)
            .field("clock_sync_pings", clock_sync_pings)
            .field("ping_interval", ping_interval)
            .field("clock_sync_interval", clock_sync_interval)
            .field("clock_refresh_pings", clock_refresh_pings)
            .field("clock_ping_spacing", clock_ping_spacing)
            .field("clock_window", clock_window)
            .field("event_capacity", event_capacity)
            .field("tick_capacity", tick_capacity)
            .field("message_capacity", message_capacity)
            .field("error_capacity", error_capacity)
            .field("reconnect", reconnect)
            .field("write_queue", write_queue)
            .field("max_frame_bytes", max_frame_bytes)
            .field("keep_alive_interval", keep_alive_interval)
            .field("max_idle_timeout", max_idle_timeout)
            .field("datagram_send_buffer_bytes", datagram_send_buffer_bytes)
            .field(
                "datagram_receive_buffer_bytes",
                datagram_receive_buffer_bytes,
            )
            .field("endpoint", endpoint)
            .finish()
    }
}

impl ConnectOptions {
    /// The options of the client hello (the API key; a resume is added by
    /// the driver when it reconnects).
    pub(crate) fn hello_options(&self) -> Vec<HelloOption> {
        self.api_key
            .iter()
            .map(|key| HelloOption::ApiKey(key.clone()))
            .collect()
    }

    /// Default options trusting certificates with these SHA-256 hashes.
    pub fn with_cert_hashes(hashes: impl IntoIterator<Item = [u8; 32]>) -> Self {
        ConnectOptions {
            trust: Trust::CertificateHashes(hashes.into_iter().collect()),
            ..ConnectOptions::default()
        }
    }

    /// Default options trusting the certificates in this PEM.
    pub fn with_ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        ConnectOptions {
            trust: Trust::CaPem(pem.into()),
            ..ConnectOptions::default()
        }
    }

    /// Builds the wtransport client configuration for these options.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, ConnectError> {
        self.client_config_on(None)
    }

    /// The WebTransport client configuration, bound to `socket` if given
    /// (else to any address, dual-stack, on a port the system picks).
    pub(crate) fn client_config_on(
        &self,
        socket: Option<std::net::UdpSocket>,
    ) -> Result<ClientConfig, ConnectError> {
        let builder = match socket {
            Some(socket) => ClientConfig::builder().with_bind_socket(socket),
            None => ClientConfig::builder().with_bind_default(),
        };
        let builder = match &self.trust {
            Trust::CertificateHashes(hashes) => {
                if hashes.is_empty() {
                    return Err(ConnectError::Tls("no certificate hash given".into()));
                }
                builder.with_server_certificate_hashes(hashes.iter().map(|h| Sha256Digest::new(*h)))
            }
            Trust::NativeRoots => builder.with_native_certs(),
            Trust::CaPem(pem) => builder.with_custom_tls(tls_config_from_pem(pem)?),
        };
        // The whole transport configuration is ours: idle timeout, keep-alive,
        // and small datagram buffers, so ticks stay newest-wins end to end.
        let idle =
            wtransport::quinn::IdleTimeout::try_from(self.max_idle_timeout).map_err(|_| {
                ConnectError::Tls(format!(
                    "idle timeout {:?} is out of range",
                    self.max_idle_timeout
                ))
            })?;
        let mut transport = wtransport::quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive_interval)
            .datagram_send_buffer_size(self.datagram_send_buffer_bytes)
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer_bytes));
        let mut config = builder.build();
        config
            .quic_config_mut()
            .transport_config(Arc::new(transport));
        Ok(config)
    }
}

impl ConnectOptions {
    /// The rustls client configuration for `wss://`: the same trust settings as
    /// WebTransport, ALPN `http/1.1`, the ring provider (the one wtransport uses).
    pub(crate) fn websocket_tls_config(&self) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let mut config = match &self.trust {
            Trust::CertificateHashes(hashes) => {
                if hashes.is_empty() {
                    return Err(ConnectError::Tls("no certificate hash given".into()));
                }
                // wtransport's verifier applies the browser rules (ECDSA P-256,
                // at most 14 days) and compares the leaf certificate's hash.
                let verifier =
                    ServerHashVerification::new(hashes.iter().map(|h| Sha256Digest::new(*h)));
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth()
            }
            Trust::NativeRoots => {
                let roots = wtransport::tls::build_native_cert_store();
                if roots.is_empty() {
                    return Err(ConnectError::Tls(
                        "no root certificates found on this system".into(),
                    ));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::CaPem(pem) => builder
                .with_root_certificates(roots_from_pem(pem)?)
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A rustls client configuration (TLS 1.3, WebTransport ALPN, ring provider) that
/// trusts exactly the certificates in `pem`.
fn tls_config_from_pem(pem: &[u8]) -> Result<rustls::ClientConfig, ConnectError> {
    Ok(wtransport::tls::client::build_default_tls_config(
        Arc::new(roots_from_pem(pem)?),
        None,
    ))
}

/// The certificates in `pem` as a root store.
fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, ConnectError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| ConnectError::Tls(format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ConnectError::Tls(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ConnectError::Tls(
            "no CERTIFICATE section in the PEM".into(),
        ));
    }
    Ok(roots)
}

/// Settings of [`Client::join`](crate::Client::join).
///
/// Build with [`JoinOptions::named`] and the `with_*` methods, or
/// `JoinOptions { max_members: Some(8), ..JoinOptions::named("ada") }`.
///
/// ```
/// use chorus_client::{Action, JoinOptions, PermissionPolicy, PermissionRule, Role};
///
/// // Create a password-protected room where viewers may also chat.
/// let chat_for_all = PermissionPolicy {
///     rules: vec![PermissionRule {
///         action: Action::SendCommands,
///         scope: "chat".into(),
///         roles: vec![Role::Host, Role::Editor, Role::Viewer],
///     }],
/// };
/// let options = JoinOptions::named("ada")
///     .with_password("s3cret")
///     .with_policy(chat_for_all);
/// assert_eq!(options.password.as_deref(), Some("s3cret"));
/// ```
///
/// `Debug` prints `password` and `token` as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// How this member presents itself to the others.
    pub display: DisplayInfo,
    /// Create the room if it does not exist (the joiner becomes its host). Default: true.
    ///
    /// With an empty room id, a join with this set asks the server to create a
    /// room under a fresh id (an invite code); [`Room::id`](crate::Room::id)
    /// then returns it.
    pub create_if_missing: bool,
    /// When this join creates the room: its member cap (the server caps it at its own).
    pub max_members: Option<u32>,
    /// The room's password. Needed to join a room that has one (else
    /// `PasswordRequired` or `WrongPassword`); when this join creates the room,
    /// the room gets it. Default: `None`.
    pub password: Option<String>,
    /// A signed join token from the application's backend: admits this client
    /// to the room it names, with the role it names (refused with
    /// `InvalidToken` or `TokenExpired`). Default: `None`.
    pub token: Option<String>,
    /// When this join creates the room: its permission rules, over the
    /// defaults ([`PermissionPolicy::default_rules`]). Default: `None`.
    pub policy: Option<PermissionPolicy>,
    /// When this join creates the room: the name of a room template from the
    /// server's configuration (policy, caps, persistence); unknown names are
    /// refused. Default: `None`.
    pub template: Option<String>,
    /// When this join creates the room: its kind. [`RoomKind::Relay`] rooms
    /// store nothing (no state, commands, timelines or packs: `NotStored`) and
    /// only relay ticks, direct and broadcast messages. Default: `None`
    /// (the server's default, a normal room).
    pub kind: Option<RoomKind>,
    /// When this join creates the room: what happens when its host goes
    /// away. Default: `None` (the server's default,
    /// [`FailoverMode::NextMember`]).
    pub failover: Option<FailoverMode>,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            display: DisplayInfo::default(),
            create_if_missing: true,
            max_members: None,
            password: None,
            token: None,
            policy: None,
            template: None,
            kind: None,
            failover: None,
        }
    }
}

impl fmt::Debug for JoinOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let JoinOptions {
            display,
            create_if_missing,
            max_members,
            password,
            token,
            policy,
            template,
            kind,
            failover,
        } = self;
        f.debug_struct("JoinOptions")
            .field("display", display)
            .field("create_if_missing", create_if_missing)
            .field("max_members", max_members)
            .field("password", &redacted(password))
            .field("token", &redacted(token))
            .field("policy", policy)
            .field("template", template)
            .field("kind", kind)
            .field("failover", failover)
            .finish()
    }
}

impl JoinOptions {
    /// Default options with this display name.
    pub fn named(name: impl Into<String>) -> Self {
        JoinOptions {
            display: DisplayInfo {
                name: name.into(),
                meta: Vec::new(),
            },
            ..JoinOptions::default()
        }
    }

    /// These options with the room's [`password`](Self::password).
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// These options with a signed join [`token`](Self::token).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// These options with the [`policy`](Self::policy) a created room gets.
    pub fn with_policy(mut self, policy: PermissionPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// These options with the [`template`](Self::template) a created room uses.
    pub fn with_template(mut self, template: impl Into<String>) -> Self {
        self.template = Some(template.into());
        self
    }

    /// These options with the [`kind`](Self::kind) a created room gets.
    pub fn with_kind(mut self, kind: RoomKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// These options with the [`failover`](Self::failover) mode a created room gets.
    pub fn with_failover(mut self, failover: FailoverMode) -> Self {
        self.failover = Some(failover);
        self
    }

    /// The wire option list.
    pub(crate) fn wire_options(&self) -> Vec<JoinOption> {
        let mut options = Vec::new();
        if self.create_if_missing {
            options.push(JoinOption::CreateIfMissing);
        }
        if let Some(max) = self.max_members {
            options.push(JoinOption::MaxMembers(max));
        }
        if let Some(password) = &self.password {
            options.push(JoinOption::Password(password.clone()));
        }
        if let Some(token) = &self.token {
            options.push(JoinOption::Token(token.clone()));
        }
        if let Some(policy) = &self.policy {
            options.push(JoinOption::Policy(policy.clone()));
        }
        if let Some(template) = &self.template {
            options.push(JoinOption::Template(template.clone()));
        }
        if let Some(kind) = self.kind {
            options.push(JoinOption::Kind(kind));
        }
        if let Some(failover) = self.failover {
            options.push(JoinOption::Failover(failover));
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hashes_in_common_spellings() {
        let hex = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef";
        let h = Trust::parse_hash(hex).expect("valid");
        assert_eq!(h[0], 0x01);
        assert_eq!(h[7], 0xef);
        assert_eq!(h[15], 0xef);
        let colons: String = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(Trust::parse_hash(&colons), Some(h));
        assert_eq!(Trust::parse_hash(&format!("  {hex}\n")), Some(h));
        assert_eq!(Trust::parse_hash(&hex[1..]), None);
        assert_eq!(Trust::parse_hash(&format!("{hex}00")), None);
        assert_eq!(Trust::parse_hash(&hex.replace('a', "g")), None);
    }

    #[test]
    fn join_options_map_to_wire_options() {
        assert_eq!(
            JoinOptions::default().wire_options(),
            vec![JoinOption::CreateIfMissing]
        );
        let o = JoinOptions {
            create_if_missing: false,
            max_members: Some(5),
            ..JoinOptions::named("ada")
        };
        assert_eq!(o.wire_options(), vec![JoinOption::MaxMembers(5)]);
        assert_eq!(o.display.name, "ada");
        let policy = PermissionPolicy {
            rules: vec![chorus_protocol::PermissionRule {
                action: chorus_protocol::Action::SetState,
                scope: "cursor/".into(),
                roles: vec![chorus_protocol::Role::Viewer],
            }],
        };
        let all = JoinOptions::named("bo")
            .with_password("pw")
            .with_token("tok")
            .with_policy(policy.clone())
            .with_template("classroom")
            .with_kind(RoomKind::Relay)
            .with_failover(FailoverMode::PauseTimeline);
        assert_eq!(
            all.wire_options(),
            vec![
                JoinOption::CreateIfMissing,
                JoinOption::Password("pw".into()),
                JoinOption::Token("tok".into()),
                JoinOption::Policy(policy),
                JoinOption::Template("classroom".into()),
                JoinOption::Kind(RoomKind::Relay),
                JoinOption::Failover(FailoverMode::PauseTimeline),
            ]
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let join = format!(
            "{:?}",
            JoinOptions::named("bo")
                .with_password("hunter2")
                .with_token("eyJtoken")
        );
        assert!(
            !join.contains("hunter2") && !join.contains("eyJtoken"),
            "{join}"
        );
        assert!(join.contains("<redacted>"), "{join}");
        let connect = ConnectOptions {
            api_key: Some("key-123".into()),
            ..ConnectOptions::default()
        };
        let text = format!("{connect:?}");
        assert!(!text.contains("key-123"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert_eq!(
            connect.hello_options(),
            vec![HelloOption::ApiKey("key-123".into())]
        );
        assert_eq!(ConnectOptions::default().hello_options(), vec![]);
    }

    #[test]
    fn trust_settings_are_checked() {
        let empty = ConnectOptions::with_cert_hashes([]);
        assert!(matches!(empty.client_config(), Err(ConnectError::Tls(_))));
        let bad_pem = ConnectOptions::with_ca_pem(b"not a pem".to_vec());
        assert!(matches!(bad_pem.client_config(), Err(ConnectError::Tls(_))));
        let hash = ConnectOptions::with_cert_hashes([[7u8; 32]]);
        assert!(hash.client_config().is_ok());
        // The same checks for wss://.
        assert!(matches!(
            empty.websocket_tls_config(),
            Err(ConnectError::Tls(_))
        ));
        assert!(matches!(
            bad_pem.websocket_tls_config(),
            Err(ConnectError::Tls(_))
        ));
        let config = hash.websocket_tls_config().expect("hash trust");
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn transport_defaults() {
        let o = ConnectOptions::default();
        assert_eq!(o.transport, TransportChoice::Auto);
        assert_eq!(o.fallback_after, Duration::from_secs(3));
        assert_eq!(o.websocket_url, None);
        assert!(o.reconnect.enabled);
        assert_eq!(o.reconnect.initial_delay, Duration::from_millis(250));
        assert_eq!(o.reconnect.max_delay, Duration::from_secs(10));
        assert_eq!(o.ping_interval, Duration::from_secs(5));
    }
}
