//! One session per client connection, the same for every transport.
//!
//! A transport adapter (WebTransport today) turns its connection into three
//! small pieces: a [`TransportReader`] that yields control-message bodies and
//! datagrams, a [`TransportWriter`] that writes batches of control-message bodies,
//! and a [`TickSink`] for ticks to this client. [`run_session`] does everything
//! else: the handshake, decoding and checking every message, talking to rooms
//! through their handles, the tick fan-out, errors, and a clean close. No room
//! logic lives here: the session knows only the rooms it has joined, and the room
//! core re-checks every request.
//!
//! Ticks take a short path: the session decodes the datagram header, checks the
//! sender against its own membership and the room's published fan-out table, and
//! hands the datagram's own bytes to every other member's tick sink. Nothing on
//! that path waits on the room task or on the reliable lane.

mod access;
mod join;
mod live;
mod outbox;
mod packs;
mod requests;
mod resume;

pub use access::{AccessControl, AccessSettingError, AccessSettings};
pub use live::{LiveSessions, OutboxDepths};
pub use outbox::{Outbox, PushError};
pub use requests::IceSettings;
pub use resume::ResumeRegistry;

use crate::access::rate::{Budgets, ViolationTracker};
use crate::clock::ServerClock;
use crate::core::{RoomInput, SessionId};
use crate::rooms::{OutgoingTick, RoomHandle, RoomRegistry, RoomRequest, TickDelivery, TickSink};
use crate::stats::{Budget, QuietEnd, ServerStats, SessionEnd, TickDrop};
use arc_swap::ArcSwap;
use bytes::Bytes;
use chorus_protocol::codec::{decode_client_message_unchecked, validate_client_message};
use chorus_protocol::{
    ClientHello, ClientMessage, Datagram, DecodeError, ErrorCode, ErrorDetail, ErrorFrame,
    FrameError, HelloOption, LeaveReason, Limits, MemberId, PROTOCOL_VERSION, RateLimits,
    RequestId, RoomSlot, ServerHello, ServerMessage, decode_datagram, encode_message,
};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::Instrument;

/// Something a transport received.
#[derive(Debug)]
pub enum Inbound {
    /// One control message body (framing already removed).
    Control(Bytes),
    /// One datagram.
    Datagram(Bytes),
    /// Something the transport received but could not pass on (e.g. a text
    /// WebSocket message); the client is told, and the session goes on.
    Refused(ErrorFrame),
    /// One pack-lane message (WebSocket): a framed `PackStreamHeader::Upload`
    /// followed by one chunk of content.
    PackChunk(Bytes),
    /// A pack stream the client opened (WebTransport unidirectional stream):
    /// its bytes as they arrive, the framed `Upload` header first; the channel
    /// closes at the stream's end.
    PackStream(PackStreamRx),
}

/// The bytes of one incoming pack stream, in order (bounded by the transport).
pub type PackStreamRx = tokio::sync::mpsc::Receiver<Result<Bytes, TransportError>>;

/// A pack on its way to a client: the content from `offset` to the end, for
/// the `PackFetch` request `request_id`.
#[derive(Debug, Clone)]
pub struct PackDownload {
    pub request_id: RequestId,
    pub hash: [u8; 32],
    pub offset: u64,
    /// The whole pack's size.
    pub size: u64,
    /// The bytes from `offset` on (a slice of the stored content, not a copy).
    pub content: Bytes,
}

/// A transport's pack lane toward its client.
pub trait PackSink: Send + Sync + std::fmt::Debug {
    /// Sends one download. WebTransport: a new unidirectional stream with the
    /// framed `PackStreamHeader::Download`, then the content, then its end.
    /// WebSocket: pack-lane messages of at most the chunk size, each a framed
    /// `Download` header (with that chunk's offset) and the chunk, queued
    /// behind control messages and ticks so a big pack never delays them.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled send leaves a stream the client sees end
    /// early (it can fetch the rest from the offset it got to).
    fn send_pack(
        &self,
        download: PackDownload,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send + '_>>;
}

/// Why a transport stopped delivering.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer went silent past the heartbeat timeout")]
    TimedOut,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("transport failed: {0}")]
    Failed(String),
}

/// The receiving half of a transport.
pub trait TransportReader: Send + 'static {
    /// The next control message or datagram.
    ///
    /// # Cancel safety
    /// Implementations must be cancel safe: the session selects on this.
    fn recv(&mut self) -> impl Future<Output = Result<Inbound, TransportError>> + Send;

    /// The connection's round-trip time as the transport last measured it
    /// (QUIC's estimate, the WebSocket heartbeat's ping and pong), if it has.
    fn rtt(&self) -> Option<Duration> {
        None
    }
}

/// The sending half of a transport's control lane.
pub trait TransportWriter: Send + 'static {
    /// Writes message bodies in order, each framed as the transport requires.
    fn write_frames(
        &mut self,
        frames: &[Bytes],
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Ends the control lane after the last write and waits (bounded by the
    /// caller) until the peer has it.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// Closes a transport's connection with a code the client can read.
pub trait TransportCloser: Send + Sync + 'static {
    fn close(&self, code: u16, reason: &str);
}

/// Per-session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub server_name: String,
    /// Limits announced to clients and enforced on what they send.
    pub limits: Limits,
    pub handshake_timeout: Duration,
    /// Bounds of each session's reliable outbox.
    pub outbox_max_frames: usize,
    pub outbox_max_bytes: usize,
    /// How long a closing session waits for its last frames to reach the client.
    pub close_flush_timeout: Duration,
    /// Errors about bad datagrams reported to a client per second, at most
    /// (a flood of bad datagrams must not become a flood of error frames).
    pub datagram_errors_per_second: u32,
    /// Per-session budgets, announced in the hello.
    pub rate_limits: RateLimits,
    /// How long a dropped session can be resumed (zero: not at all).
    pub resume_window: Duration,
    /// What a shutting-down server tells clients to wait before reconnecting.
    pub reconnect_after_shutdown: Duration,
    /// STUN/TURN servers handed out with `GetIceServers`.
    pub ice: IceSettings,
    /// Rate-limit refusals within `violation_window` that close the session.
    pub violations_before_disconnect: u32,
    pub violation_window: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            server_name: format!("chorus/{}", env!("CARGO_PKG_VERSION")),
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            outbox_max_frames: 4096,
            outbox_max_bytes: 16 * 1024 * 1024,
            close_flush_timeout: Duration::from_secs(2),
            datagram_errors_per_second: 5,
            rate_limits: RateLimits::default(),
            resume_window: Duration::from_secs(60),
            reconnect_after_shutdown: Duration::from_secs(5),
            ice: IceSettings::default(),
            violations_before_disconnect: 20,
            violation_window: Duration::from_secs(10),
        }
    }
}

/// What every session of a server shares.
#[derive(Debug)]
pub struct SessionContext {
    pub config: SessionConfig,
    pub registry: Arc<RoomRegistry>,
    pub clock: ServerClock,
    pub stats: Arc<ServerStats>,
    pub access: AccessControl,
    pub resumes: ResumeRegistry,
    /// Pack content of every room.
    pub packs: Arc<crate::packs::PackStore>,
    /// Sessions running now (for queue-depth metrics).
    pub live: LiveSessions,
    next_id: AtomicU64,
    /// Flips to `true` when the server shuts down; every session then ends
    /// with ShuttingDown.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl SessionContext {
    pub fn new(
        config: SessionConfig,
        registry: Arc<RoomRegistry>,
        clock: ServerClock,
        stats: Arc<ServerStats>,
        access: AccessControl,
        packs: Arc<crate::packs::PackStore>,
    ) -> Self {
        SessionContext {
            config,
            registry,
            clock,
            stats,
            access,
            resumes: ResumeRegistry::new(1_000_000),
            packs,
            live: LiveSessions::default(),
            next_id: AtomicU64::new(1),
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Ends every session (and any that starts later) with ShuttingDown.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn new_session_id(&self) -> SessionId {
        // A counter, not a random number: ids are unique by construction, and
        // rooms key their routing on them.
        SessionId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// A room this session is a member of.
#[derive(Debug, Clone)]
pub struct JoinedRoom {
    pub room: RoomHandle,
    pub member: MemberId,
}

impl JoinedRoom {
    /// Whether this member's current role may do `action` (for a session to
    /// refuse early what costs work; the room core checks again).
    pub fn may(&self, action: chorus_protocol::Action) -> bool {
        let role = self.room.shared.fanout.load().role_of(self.member);
        role.is_some_and(|r| self.room.shared.policy.allows(r, action, ""))
    }
}

/// The part of a session that rooms hold: where to deliver, and how to stop it.
#[derive(Debug)]
pub struct SessionShared {
    pub id: SessionId,
    pub outbox: Outbox,
    pub ticks: Arc<dyn TickSink>,
    pub packs: Arc<dyn PackSink>,
    /// Uploads this session announced and may now send, by hash.
    uploads: Mutex<HashMap<[u8; 32], packs::PendingUpload>>,
    /// Downloads in flight at once, at most.
    downloads: tokio::sync::Semaphore,
    /// Rooms joined, by slot. Written by room tasks (so a membership exists
    /// before the client hears of it), read on every tick without a lock.
    joined: ArcSwap<HashMap<RoomSlot, JoinedRoom>>,
    close_reason: Mutex<Option<Option<ErrorFrame>>>,
    close_requested: Notify,
    /// Set when another connection resumed this session: its end then only
    /// detaches (the new connection holds the members).
    replaced: AtomicBool,
    /// When the join token of each room runs out (the session is closed
    /// then, if still in that room). Shared so a resumed session keeps them.
    token_deadlines: Mutex<HashMap<RoomSlot, Instant>>,
}

impl SessionShared {
    fn new(
        id: SessionId,
        outbox: Outbox,
        ticks: Arc<dyn TickSink>,
        packs: Arc<dyn PackSink>,
    ) -> Self {
        SessionShared {
            id,
            outbox,
            ticks,
            packs,
            uploads: Mutex::new(HashMap::new()),
            downloads: tokio::sync::Semaphore::new(packs::DOWNLOADS_PER_SESSION),
            joined: ArcSwap::from_pointee(HashMap::new()),
            close_reason: Mutex::new(None),
            close_requested: Notify::new(),
            replaced: AtomicBool::new(false),
            token_deadlines: Mutex::new(HashMap::new()),
        }
    }

    fn token_deadlines(&self) -> std::sync::MutexGuard<'_, HashMap<RoomSlot, Instant>> {
        self.token_deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert_joined(&self, joined: JoinedRoom) {
        self.joined.rcu(|rooms| {
            let mut rooms = HashMap::clone(rooms);
            rooms.insert(joined.room.slot(), joined.clone());
            rooms
        });
    }

    pub(crate) fn remove_joined(&self, slot: RoomSlot, member: MemberId) {
        self.joined.rcu(|rooms| {
            let mut rooms = HashMap::clone(rooms);
            if rooms.get(&slot).is_some_and(|j| j.member == member) {
                rooms.remove(&slot);
            }
            rooms
        });
    }

    /// Asks the session to end, telling the client `error`. The first request wins.
    pub fn close_with(&self, error: ErrorFrame) {
        self.request_close(Some(error));
    }

    fn request_close(&self, error: Option<ErrorFrame>) {
        let mut reason = self.close_reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            *reason = Some(error);
            self.close_requested.notify_one();
        }
    }

    fn take_close_reason(&self) -> Option<ErrorFrame> {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .flatten()
    }
}

/// Facts about the connection, from the transport.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub remote: SocketAddr,
    /// `"webtransport"` or `"websocket"`.
    pub transport: &'static str,
    /// Largest datagram the connection carries now (0 without datagrams).
    pub max_datagram_size: u32,
    /// When the transport took the connection (handshake time runs from here).
    pub accepted_at: Instant,
}

/// Runs one session to its end: handshake, messages, then a clean close.
///
/// A plain function returning the future, not an `async fn`: an `async fn`
/// around the instrumented block would keep its own copy of every argument
/// beside the block's, for the whole life of the connection.
pub fn run_session<R, W, C>(
    ctx: Arc<SessionContext>,
    info: SessionInfo,
    reader: R,
    writer: W,
    closer: C,
    ticks: Arc<dyn TickSink>,
    packs: Arc<dyn PackSink>,
) -> impl Future<Output = ()>
where
    R: TransportReader,
    W: TransportWriter,
    C: TransportCloser,
{
    let id = ctx.new_session_id();
    let span =
        tracing::info_span!("session", id = %id, remote = %info.remote, transport = info.transport);
    async move {
        let outbox = Outbox::new(ctx.config.outbox_max_frames, ctx.config.outbox_max_bytes);
        let shared = Arc::new(SessionShared::new(id, outbox, ticks, packs));
        let _live = LiveSessions::register(&ctx, &shared);
        ctx.stats.sessions_opened.inc();
        let (opened, _) = ctx.stats.transport_counters(info.transport);
        opened.inc();
        let transport = info.transport;
        tracing::debug!("session opened");
        let writer_task = tokio::spawn(write_loop(shared.clone(), writer).in_current_span());
        // Per-address connection cap and rate, held for the session's life.
        let permit = match ctx
            .access
            .guard
            .open_connection(info.remote.ip(), Instant::now())
        {
            Ok(permit) => Some(permit),
            Err(refused) => {
                audit_refusal("connection_refused", &info, refused.code());
                shared.close_with(
                    ErrorFrame::new(None, refused.code(), refused.to_string()).with_detail(
                        ErrorDetail::RetryAfter {
                            retry_after_ms: duration_ms(refused.retry_after()),
                        },
                    ),
                );
                None
            }
        };

        let mut session = Session {
            shutdown: ctx.shutdown.subscribe(),
            ctx: ctx.clone(),
            shared: shared.clone(),
            info,
            reader,
            datagram_errors: ErrorBudget::new(ctx.config.datagram_errors_per_second),
            leave_reason: LeaveReason::Disconnected,
            budgets: Budgets::new(&ctx.config.rate_limits, Instant::now()),
            violations: ViolationTracker::new(
                ctx.config.violations_before_disconnect,
                ctx.config.violation_window,
            ),
            resume_token: None,
            alive_sent: HashMap::new(),
        };
        let end = session.run().await;
        let leave_reason = session.leave_reason;
        let resume_token = session.resume_token.take();
        drop(permit);

        // Tell the client why, if there is a why; then leave every room.
        if let Some(error) = &end {
            tracing::debug!(code = %error.code, message = %error.message, "closing session");
            ctx.stats.error_sent(error.code);
            shared
                .outbox
                .push_final(Bytes::from(encode_message(&ServerMessage::Error(
                    error.clone(),
                ))));
        }
        // A dropped connection (no reason of ours) may be resumed: its
        // members stay, reconnecting, for the resume window. A session that
        // another connection resumed only lets go of its routing.
        let joined: Vec<JoinedRoom> = shared.joined.load().values().cloned().collect();
        let replaced = shared.replaced.load(Ordering::Acquire);
        // A server going away keeps its members the same way: their clients
        // resume (after a restart, from the store) once it is back.
        let going_away = end
            .as_ref()
            .is_some_and(|e| e.code == ErrorCode::ShuttingDown);
        let resumable = replaced
            || ((end.is_none() || going_away)
                && !ctx.config.resume_window.is_zero()
                && resume_token.is_some());
        if let Some(token) = &resume_token {
            if resumable && !replaced {
                let until = Instant::now() + ctx.config.resume_window;
                ctx.resumes.ended(token, joined.clone(), until);
            } else if !replaced {
                ctx.resumes.remove(token);
            }
        }
        for room in joined {
            if resumable {
                room.room.detach(id, leave_reason).await;
            } else {
                room.room.remove(id, leave_reason).await;
            }
        }
        shared.outbox.close();
        if tokio::time::timeout(ctx.config.close_flush_timeout, writer_task)
            .await
            .is_err()
        {
            tracing::debug!("client did not take its last frames in time");
        }
        // The session may be kept (for resuming) a while longer; not its frames.
        shared.outbox.discard();
        match &end {
            Some(error) => closer.close(error.code.as_u16(), &error.message),
            None => closer.close(0, "closed"),
        }
        ctx.stats.session_closed(
            transport,
            session_end(&end, shared.replaced.load(Ordering::Acquire), leave_reason),
        );
        tracing::debug!("session closed");
    }
    .instrument(span)
}

async fn write_loop<W: TransportWriter>(shared: Arc<SessionShared>, mut writer: W) {
    let mut batch = Vec::new();
    while shared.outbox.drain(&mut batch).await {
        if let Err(e) = writer.write_frames(&batch).await {
            tracing::debug!(error = %e, "control lane write failed");
            shared.request_close(None);
            return;
        }
        batch.clear();
    }
    writer.finish().await;
}

/// Allows a few reports per second, and drops the rest.
#[derive(Debug)]
struct ErrorBudget {
    per_second: u32,
    window_start: Option<Instant>,
    used: u32,
}

impl ErrorBudget {
    fn new(per_second: u32) -> Self {
        ErrorBudget {
            per_second,
            window_start: None,
            used: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window_start = Some(now);
                self.used = 0;
            }
        }
        if self.used < self.per_second {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

struct Session<R> {
    ctx: Arc<SessionContext>,
    shared: Arc<SessionShared>,
    info: SessionInfo,
    reader: R,
    datagram_errors: ErrorBudget,
    /// How the session's members leave their rooms when it ends.
    leave_reason: LeaveReason,
    shutdown: tokio::sync::watch::Receiver<bool>,
    budgets: Budgets,
    violations: ViolationTracker,
    /// When the earliest join token this session joined with expires; the
    /// session is closed with TokenExpired then.
    /// This session's resume token, while it can be resumed.
    resume_token: Option<String>,
    /// When this session last told each room its client is active.
    alive_sent: HashMap<RoomSlot, Instant>,
}

fn version_mismatch(client: chorus_protocol::ProtocolVersion) -> ErrorFrame {
    ErrorFrame::new(
        None,
        ErrorCode::VersionMismatch,
        format!("server speaks protocol {PROTOCOL_VERSION}, client {client}"),
    )
    .with_detail(ErrorDetail::Version {
        server: PROTOCOL_VERSION,
        client,
    })
}

/// Logs a refusal that happens before a session has a room (stable event names).
fn audit_refusal(event: &'static str, info: &SessionInfo, code: ErrorCode) {
    tracing::info!(target: "chorus::audit", event, ip = %info.remote.ip(), transport = info.transport, code = code.name());
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The error for a spent budget.
fn rate_limited(request_id: Option<RequestId>, what: &str, retry_after: Duration) -> ErrorFrame {
    ErrorFrame::new(
        request_id,
        ErrorCode::RateLimited,
        format!("too many {what}; retry later"),
    )
    .with_detail(ErrorDetail::RetryAfter {
        retry_after_ms: duration_ms(retry_after),
    })
}

/// A reason to end the session; `Some` is told to the client.
type End = Option<ErrorFrame>;

impl<R: TransportReader> Session<R> {
    async fn run(&mut self) -> End {
        let hello = match tokio::time::timeout(self.ctx.config.handshake_timeout, self.read_hello())
            .await
        {
            Ok(Ok(hello)) => hello,
            Ok(Err(end)) => return end,
            Err(_) => {
                return Some(ErrorFrame::new(
                    None,
                    ErrorCode::HandshakeTimeout,
                    format!(
                        "no Hello within {} ms",
                        self.ctx.config.handshake_timeout.as_millis()
                    ),
                ));
            }
        };
        if hello.version.major != PROTOCOL_VERSION.major {
            return Some(version_mismatch(hello.version));
        }
        let mut api_key = None;
        let mut resume = None;
        for option in &hello.options {
            match option {
                HelloOption::ApiKey(key) => api_key = Some(key.as_str()),
                HelloOption::Resume { token, rooms } => {
                    resume = Some((token.clone(), rooms.clone()))
                }
            }
        }
        if self.ctx.access.api_keys.check(api_key).is_err() {
            audit_refusal("api_key_rejected", &self.info, ErrorCode::Unauthorized);
            return Some(ErrorFrame::new(
                None,
                ErrorCode::Unauthorized,
                if api_key.is_some() {
                    "the API key is not valid"
                } else {
                    "this server needs an API key in the hello"
                },
            ));
        }
        tracing::debug!(client = %hello.client_name, version = %hello.version, "hello");
        if !self.ctx.config.resume_window.is_zero() {
            self.resume_token = self
                .ctx
                .resumes
                .register(self.shared.clone(), Instant::now());
        }
        self.reply(ServerMessage::Hello(ServerHello {
            version: PROTOCOL_VERSION,
            server_name: self.ctx.config.server_name.clone(),
            session_id: self.shared.id.0,
            server_time: self.ctx.clock.now(),
            max_datagram_size: self.info.max_datagram_size,
            limits: self.ctx.config.limits.clone(),
            rate_limits: self.ctx.config.rate_limits.clone(),
            resume_token: self.resume_token.clone().unwrap_or_default(),
            resume_window_ms: if self.resume_token.is_some() {
                u64::try_from(self.ctx.config.resume_window.as_millis()).unwrap_or(u64::MAX)
            } else {
                0
            },
            extensions: Vec::new(),
        }));
        let transport = self.ctx.stats.transport(self.info.transport);
        transport.sessions_opened.inc();
        transport.handshake.observe(self.info.accepted_at.elapsed());
        if let Some((token, rooms)) = resume {
            // Boxed, as `on_control` below.
            Box::pin(self.resume(&token, rooms)).await;
        }

        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                () = self.shared.close_requested.notified() => return self.shared.take_close_reason(),
                () = server_stopping(&mut shutdown) => {
                    // Going away: say when to come back, so clients reconnect
                    // to the restarted server instead of giving up.
                    let after = self.ctx.config.reconnect_after_shutdown;
                    return Some(
                        ErrorFrame::new(
                            None,
                            ErrorCode::ShuttingDown,
                            format!(
                                "the server is shutting down; reconnect in {} s",
                                after.as_secs_f64()
                            ),
                        )
                        .with_detail(ErrorDetail::RetryAfter {
                            retry_after_ms: duration_ms(after),
                        }),
                    );
                }
                () = token_expired(self.next_token_expiry()) => {
                    if let Some(end) = self.on_token_expiry() {
                        return Some(end);
                    }
                }
                inbound = self.reader.recv() => match inbound {
                    // Request handling is boxed: inline, its state (and the
                    // pack chunk's) would be part of every idle session's
                    // future, about 4 kB more per connection.
                    Ok(Inbound::Control(body)) => Box::pin(self.on_control(body)).await,
                    Ok(Inbound::Datagram(bytes)) => self.on_datagram(bytes),
                    Ok(Inbound::Refused(error)) => self.reply_error(error),
                    Ok(Inbound::PackChunk(message)) => Box::pin(self.on_pack_chunk(message)).await,
                    Ok(Inbound::PackStream(rx)) => self.on_pack_stream(rx),
                    Err(e) => return self.transport_ended(e),
                },
            }
        }
    }

    fn transport_ended(&mut self, error: TransportError) -> End {
        match error {
            TransportError::Closed => None,
            TransportError::TimedOut => {
                tracing::debug!("client went silent past the heartbeat timeout");
                self.leave_reason = LeaveReason::TimedOut;
                None
            }
            TransportError::Frame(e) => {
                let e = DecodeError::Frame(e);
                Some(ErrorFrame::new(None, e.code(), e.to_string()).with_detail(e.detail()))
            }
            TransportError::Failed(reason) => {
                tracing::debug!(%reason, "transport failed");
                None
            }
        }
    }

    async fn read_hello(&mut self) -> Result<ClientHello, End> {
        loop {
            match self.reader.recv().await {
                // Datagrams before the handshake have no room to go to.
                Ok(Inbound::Datagram(_)) => self.ctx.stats.ticks_rejected.inc(),
                // Nor have packs: no upload can have been announced yet.
                Ok(Inbound::PackChunk(_) | Inbound::PackStream(_)) => {}
                Ok(Inbound::Refused(error)) => return Err(Some(error)),
                Ok(Inbound::Control(body)) => {
                    self.ctx.stats.reliable_in.inc();
                    let msg = decode_client_message_unchecked(&body).map_err(|e| {
                        // A hello of another major version may have another
                        // shape: name the version, not the bytes, as the problem.
                        if let Some(theirs) = chorus_protocol::peek_hello_version(&body)
                            && theirs.major != PROTOCOL_VERSION.major
                        {
                            return Some(version_mismatch(theirs));
                        }
                        Some(ErrorFrame::new(None, e.code(), e.to_string()).with_detail(e.detail()))
                    })?;
                    let ClientMessage::Hello(hello) = msg else {
                        return Err(Some(ErrorFrame::new(
                            msg.request_id(),
                            ErrorCode::ProtocolViolation,
                            format!("expected Hello first, got {}", msg.name()),
                        )));
                    };
                    if let Err(v) = validate_client_message(
                        &ClientMessage::Hello(hello.clone()),
                        &self.ctx.config.limits,
                    ) {
                        return Err(Some(limit_error(None, &v)));
                    }
                    return Ok(hello);
                }
                Err(e) => return Err(self.transport_ended(e)),
            }
        }
    }

    /// Queues a message to this client. A client that cannot take even its own
    /// replies is too slow, and is closed.
    fn reply(&self, message: ServerMessage) {
        if let ServerMessage::Error(error) = &message {
            self.ctx.stats.error_sent(error.code);
        }
        if let Err(PushError::Full) = self
            .shared
            .outbox
            .push(Bytes::from(encode_message(&message)))
        {
            self.shared.close_with(ErrorFrame::new(
                None,
                ErrorCode::SlowConsumer,
                "replies were not read fast enough",
            ));
        }
    }

    fn reply_error(&self, error: ErrorFrame) {
        self.reply(ServerMessage::Error(error));
    }

    fn joined(&self, slot: RoomSlot) -> Option<JoinedRoom> {
        self.shared.joined.load().get(&slot).cloned()
    }

    async fn on_control(&mut self, body: Bytes) {
        let received_at = self.ctx.clock.now();
        self.ctx.stats.reliable_in.inc();
        let msg = match decode_client_message_unchecked(&body) {
            Ok(msg) => msg,
            Err(e) => {
                // The frame boundary is intact, so the session can go on.
                return self.reply_error(
                    ErrorFrame::new(None, e.code(), e.to_string()).with_detail(e.detail()),
                );
            }
        };
        if let Err(v) = validate_client_message(&msg, &self.ctx.config.limits) {
            return self.reply_error(limit_error(msg.request_id(), &v));
        }
        if let Err(error) = self.spend_budget(&msg) {
            return self.reply_error(error);
        }
        self.alive_in_every_room();
        match msg {
            ClientMessage::Hello(_) => self.reply_error(ErrorFrame::new(
                None,
                ErrorCode::ProtocolViolation,
                "Hello was already received",
            )),
            ClientMessage::Join {
                request_id,
                room_id,
                display,
                options,
            } => self.join(request_id, room_id, display, options).await,
            ClientMessage::Leave { request_id, room } => {
                self.to_room(request_id, room, |session| RoomInput::Leave {
                    session,
                    request_id: Some(request_id),
                    reason: LeaveReason::Left,
                })
                .await
            }
            ClientMessage::SetState {
                request_id,
                room,
                key,
                value,
                if_version,
            } => {
                self.to_room(request_id, room, |session| RoomInput::SetState {
                    session,
                    request_id,
                    key,
                    value,
                    if_version,
                })
                .await
            }
            ClientMessage::DeleteState {
                request_id,
                room,
                key,
                if_version,
            } => {
                self.to_room(request_id, room, |session| RoomInput::DeleteState {
                    session,
                    request_id,
                    key,
                    if_version,
                })
                .await
            }
            ClientMessage::Command {
                request_id,
                room,
                kind,
                payload,
                idempotency_key,
            } => {
                self.to_room(request_id, room, |session| RoomInput::Command {
                    session,
                    request_id,
                    kind,
                    payload,
                    idempotency_key,
                })
                .await
            }
            ClientMessage::Kick {
                request_id,
                room,
                member,
                reason,
            } => {
                self.to_room(request_id, room, |session| RoomInput::Kick {
                    session,
                    request_id,
                    member,
                    reason,
                })
                .await
            }
            ClientMessage::SetRole {
                request_id,
                room,
                member,
                role,
            } => {
                self.to_room(request_id, room, |session| RoomInput::SetRole {
                    session,
                    request_id,
                    member,
                    role,
                })
                .await
            }
            ClientMessage::SetPassword {
                request_id,
                room,
                password,
            } => self.set_password(request_id, room, password).await,
            ClientMessage::CloseRoom {
                request_id,
                room,
                reason,
            } => {
                self.to_room(request_id, room, |session| RoomInput::CloseRoom {
                    session,
                    request_id,
                    reason,
                })
                .await
            }
            ClientMessage::Timeline {
                request_id,
                room,
                name,
                op,
                at,
                expected_seq,
            } => {
                self.to_room(request_id, room, |session| RoomInput::Timeline {
                    session,
                    request_id,
                    name,
                    op,
                    at,
                    expected_seq,
                })
                .await
            }
            ClientMessage::Direct {
                request_id,
                room,
                to,
                kind,
                payload,
            } => {
                self.to_room(request_id, room, |session| RoomInput::Direct {
                    session,
                    request_id,
                    to,
                    kind,
                    payload,
                })
                .await
            }
            ClientMessage::Broadcast {
                request_id,
                room,
                audience,
                kind,
                payload,
            } => {
                self.to_room(request_id, room, |session| RoomInput::Broadcast {
                    session,
                    request_id,
                    audience,
                    kind,
                    payload,
                })
                .await
            }
            ClientMessage::RequestSnapshot { request_id, room } => {
                self.to_room(request_id, room, |session| RoomInput::Snapshot {
                    session,
                    request_id,
                })
                .await
            }
            ClientMessage::SetDelegate {
                request_id,
                room,
                member,
            } => {
                self.to_room(request_id, room, |session| RoomInput::SetDelegate {
                    session,
                    request_id,
                    member,
                })
                .await
            }
            ClientMessage::GetIceServers { request_id, room } => self.ice_servers(request_id, room),
            ClientMessage::PackUpload {
                request_id,
                room,
                hash,
                name,
                media_type,
                size,
            } => {
                self.pack_upload(request_id, room, hash, name, media_type, size)
                    .await
            }
            ClientMessage::PackFetch {
                request_id,
                room,
                hash,
                offset,
            } => self.pack_fetch(request_id, room, hash, offset).await,
            ClientMessage::Ping { client_time } => {
                // The protocol carries no RTT from the client; the transport's
                // own estimate is what the server can measure.
                if let Some(rtt) = self.reader.rtt() {
                    self.ctx
                        .stats
                        .transport(self.info.transport)
                        .rtt
                        .observe(rtt);
                }
                self.reply(ServerMessage::Pong {
                    client_time,
                    server_receive_time: received_at,
                    server_send_time: self.ctx.clock.now(),
                })
            }
        }
    }

    fn next_token_expiry(&self) -> Option<Instant> {
        self.shared.token_deadlines().values().min().copied()
    }

    /// A token deadline passed: close the session if it is still in a room
    /// whose token ran out (rooms it left no longer count).
    fn on_token_expiry(&mut self) -> Option<ErrorFrame> {
        let now = Instant::now();
        let expired: Vec<RoomSlot> = self
            .shared
            .token_deadlines()
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(slot, _)| *slot)
            .collect();
        for slot in expired {
            self.shared.token_deadlines().remove(&slot);
            if self.joined(slot).is_some() {
                audit_refusal("token_expired", &self.info, ErrorCode::TokenExpired);
                return Some(ErrorFrame::new(
                    None,
                    ErrorCode::TokenExpired,
                    format!("the join token for room slot {} has expired", slot.0),
                ));
            }
        }
        None
    }

    /// Takes `msg` from the session's budgets, or says why not. Every refusal
    /// counts as a violation; too many close the session.
    fn spend_budget(&mut self, msg: &ClientMessage) -> Result<(), ErrorFrame> {
        let now = Instant::now();
        let specific = match msg {
            ClientMessage::SetState { .. } | ClientMessage::DeleteState { .. } => {
                Some(("state updates", self.budgets.state_update(now)))
            }
            ClientMessage::Command { .. } => Some(("commands", self.budgets.command(now))),
            ClientMessage::Join { .. } => Some(("joins", self.budgets.join(now))),
            ClientMessage::Direct { .. } | ClientMessage::Broadcast { .. } => {
                Some(("direct messages", self.budgets.direct(now)))
            }
            _ => None,
        };
        let refused = match self.budgets.message(now) {
            Err(retry) => Some(("messages", retry)),
            Ok(()) => specific.and_then(|(what, r)| r.err().map(|retry| (what, retry))),
        };
        let Some((what, retry)) = refused else {
            return Ok(());
        };
        self.ctx.stats.rate_limit_hit(match what {
            "state updates" => Budget::StateUpdates,
            "commands" => Budget::Commands,
            "joins" => Budget::Joins,
            "direct messages" => Budget::Direct,
            _ => Budget::Messages,
        });
        self.note_violation(now);
        Err(rate_limited(msg.request_id(), what, retry))
    }

    /// Counts a rate-limit refusal; past the allowance, closes the session.
    fn note_violation(&mut self, now: Instant) {
        if self.violations.record(now) {
            audit_refusal("rate_limit_disconnect", &self.info, ErrorCode::RateLimited);
            self.ctx.stats.rate_limit_disconnects.inc();
            self.shared.close_with(ErrorFrame::new(
                None,
                ErrorCode::RateLimited,
                "rate limits were exceeded again and again; disconnected",
            ));
        }
    }

    /// Forwards a request to a joined room.
    async fn to_room(
        &self,
        request_id: RequestId,
        slot: RoomSlot,
        input: impl FnOnce(SessionId) -> RoomInput,
    ) {
        let Some(joined) = self.joined(slot) else {
            return self.reply_error(not_joined(Some(request_id), slot));
        };
        let request = RoomRequest::Input(input(self.shared.id));
        if joined.room.send(request).await.is_err() {
            // Rooms expire only when empty, so this is a race with our own leave.
            self.reply_error(not_joined(Some(request_id), slot));
        }
    }

    fn on_datagram(&mut self, bytes: Bytes) {
        let now = Instant::now();
        if let Err(retry) = self.budgets.tick(now) {
            self.ctx.stats.ticks_rejected.inc();
            self.ctx.stats.rate_limit_hit(Budget::Ticks);
            self.ctx.stats.ticks_dropped_for(TickDrop::RateLimit, 1);
            self.note_violation(now);
            if self.datagram_errors.allow(now) {
                self.reply_error(rate_limited(None, "ticks", retry));
            }
            return;
        }
        match self.forward_tick(&bytes) {
            Ok(slot) => self.alive(slot),
            Err(error) => {
                self.ctx.stats.ticks_rejected.inc();
                if error.code == ErrorCode::LimitExceeded {
                    self.ctx.stats.ticks_dropped_for(TickDrop::Oversize, 1);
                }
                if self.datagram_errors.allow(Instant::now()) {
                    self.reply_error(error);
                }
            }
        }
    }

    /// Checks a tick and hands its bytes to every other member of its room.
    fn forward_tick(&self, bytes: &Bytes) -> Result<RoomSlot, ErrorFrame> {
        let Datagram::Tick(tick) =
            decode_datagram(bytes, &self.ctx.config.limits).map_err(|e| {
                ErrorFrame::new(None, e.code(), format!("bad datagram: {e}"))
                    .with_detail(e.detail())
            })?;
        let joined = self.shared.joined.load();
        let Some(room) = joined.get(&tick.room) else {
            return Err(not_joined(None, tick.room));
        };
        if tick.sender != room.member {
            return Err(ErrorFrame::new(
                None,
                ErrorCode::InvalidSender,
                format!(
                    "tick for room slot {} names sender {}, but this session is member {}",
                    tick.room.0, tick.sender.0, room.member.0
                ),
            ));
        }
        let fanout = room.room.shared.fanout.load();
        if !fanout.may_send(room.member) {
            return Err(ErrorFrame::new(
                None,
                ErrorCode::Forbidden,
                format!("your role may not send ticks in room {}", room.room.id()),
            ));
        }
        self.ctx.stats.ticks_in.inc();
        let outgoing = OutgoingTick::new(bytes.clone());
        let (mut sent, mut replaced, mut too_large, mut closed) = (0, 0, 0, 0);
        for target in &fanout.targets {
            if target.session == self.shared.id {
                continue;
            }
            match target.sink.send_tick(tick.room, tick.sender, &outgoing) {
                TickDelivery::Queued => sent += 1,
                TickDelivery::Replaced => {
                    sent += 1;
                    replaced += 1;
                }
                TickDelivery::TooLarge => too_large += 1,
                TickDelivery::Closed => closed += 1,
            }
        }
        let stats = &self.ctx.stats;
        stats.ticks_out.add(sent);
        let dropped = replaced + too_large + closed;
        if dropped > 0 {
            stats.ticks_dropped.add(dropped);
            stats.ticks_dropped_for(TickDrop::SlowReceiver, replaced);
            stats.ticks_dropped_for(TickDrop::Oversize, too_large);
            stats.ticks_dropped_for(TickDrop::ReceiverClosed, closed);
        }
        Ok(tick.room)
    }
}

/// Resolves when the join token deadline passes (never without one).
async fn token_expired(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves once the server is shutting down (never, if the sender is gone).
async fn server_stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any await, so the
    // session future stays `Send`.
    if shutdown.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How a session ended, for the sessions-closed metric.
fn session_end(end: &End, replaced: bool, leave_reason: LeaveReason) -> SessionEnd {
    match end {
        _ if replaced => SessionEnd::Quiet(QuietEnd::Replaced),
        Some(error) => SessionEnd::Error(error.code),
        None if leave_reason == LeaveReason::TimedOut => SessionEnd::Quiet(QuietEnd::TimedOut),
        None => SessionEnd::Quiet(QuietEnd::Closed),
    }
}

fn not_joined(request_id: Option<RequestId>, slot: RoomSlot) -> ErrorFrame {
    ErrorFrame::new(
        request_id,
        ErrorCode::NotJoined,
        format!("this session has not joined a room with slot {}", slot.0),
    )
}

fn limit_error(request_id: Option<RequestId>, v: &chorus_protocol::LimitViolation) -> ErrorFrame {
    ErrorFrame::new(request_id, ErrorCode::LimitExceeded, v.to_string()).with_detail(
        ErrorDetail::Limit {
            limit: v.limit,
            actual: v.actual,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_budget_allows_a_few_per_second() {
        let mut budget = ErrorBudget::new(2);
        let t0 = Instant::now();
        assert!(budget.allow(t0));
        assert!(budget.allow(t0));
        assert!(!budget.allow(t0 + Duration::from_millis(999)));
        assert!(budget.allow(t0 + Duration::from_millis(1000)));
    }
}
