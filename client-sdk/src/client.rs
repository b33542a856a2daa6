//! Connecting and the [`Client`] handle: choosing the transport (WebTransport,
//! WebSocket, or WebTransport with WebSocket fallback), the handshake
//! (`ClientHello` → `ServerHello`, written once for both transports), the
//! initial clock sync, and client-level operations (join, clock, errors, close).

use crate::clock::{ClockEstimate, LocalClock};
use crate::driver::{Reply, Shared};
use crate::error::{CloseReason, ConnectError, RequestError};
use crate::options::{ConnectOptions, JoinOptions, TransportChoice};
use crate::reconnect::ConnectionEvent;
use crate::room::Room;
use crate::transport::{
    Connected, Inbound, LinkClose, LinkReader, LinkWriter, OutMessage, Transport, websocket,
    webtransport,
};
use crate::url::{Scheme, ServerUrl, UrlError};
use chorus_protocol::{
    ClientHello, ClientMessage, DecodeError, ErrorCode, ErrorDetail, ErrorFrame, HelloOption,
    Limits, PROTOCOL_VERSION, RateLimits, ServerHello, ServerMessage, ServerTime,
    decode_server_message, peek_hello_version,
};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::time::Instant as Deadline;
use tracing::{debug, info, trace};

/// A connection to a Chorus server. Cheap to clone; all clones share one
/// connection, which stays open while any `Client` or [`Room`] handle exists
/// (dropping the last one closes it) or until [`close`](Self::close).
#[derive(Clone)]
pub struct Client {
    pub(crate) handle: Arc<ClientHandle>,
}

/// Owns the connection on behalf of every `Client` and `Room` handle; closing it
/// when the last handle goes away.
pub(crate) struct ClientHandle {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.shared.shutdown(CloseReason::Local);
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &self.session_id())
            .field("transport", &self.transport())
            .field("closed", &self.handle.shared.close_reason())
            .finish()
    }
}

impl Client {
    /// Connects to `url`, performs the handshake and the initial clock sync, and
    /// starts the background driver.
    ///
    /// The URL says the transport ([`ConnectOptions::transport`] can narrow it):
    /// - `https://127.0.0.1:4433/chorus`: WebTransport; with
    ///   [`TransportChoice::Auto`] (the default), if the WebTransport session is
    ///   not established within [`ConnectOptions::fallback_after`] or fails
    ///   (UDP blocked, nothing listening on UDP), WebSocket at
    ///   `wss://127.0.0.1:4433/chorus` (or [`ConnectOptions::websocket_url`])
    ///   with the same trust settings. [`Client::transport`] tells which one won.
    /// - `wss://…` or `ws://…`: WebSocket (TLS, or plain TCP for loopback
    ///   development and behind a TLS-terminating proxy).
    ///
    /// Must be called within a Tokio runtime. Each attempt is bounded by
    /// [`ConnectOptions::handshake_timeout`]. Later reconnects (see
    /// [`crate::reconnect`]) go through the same steps.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Client, ConnectError> {
        let (connected, hello, deadline) = open(url, &options, None).await?;
        let timeout = options.handshake_timeout;
        let pings = options.clock_sync_pings;
        let shared = Shared::start(url.to_owned(), connected, hello, options, LocalClock::new());
        let client = Client {
            handle: Arc::new(ClientHandle { shared }),
        };
        if pings > 0 {
            let remaining = deadline.saturating_duration_since(Deadline::now());
            let per_ping = remaining / pings.max(1);
            let sync =
                tokio::time::timeout(remaining, client.handle.shared.sync_clock(pings, per_ping))
                    .await
                    .unwrap_or(0);
            if let Some(reason) = client.handle.shared.close_reason() {
                return Err(ConnectError::Closed(reason));
            }
            if sync == 0 {
                return Err(ConnectError::HandshakeTimeout(timeout));
            }
            debug!(samples = sync, clock = ?client.clock(), "clock synced");
        }
        Ok(client)
    }

    /// The transport of the current connection (after a reconnect with
    /// [`TransportChoice::Auto`], it may differ from the first one's).
    pub fn transport(&self) -> Transport {
        self.handle.shared.transport()
    }

    /// Ticks sent with [`Room::send_tick`] that never reached the network because
    /// a newer tick of the same room replaced them while the socket was busy
    /// (WebSocket; always 0 on WebTransport, where the QUIC datagram buffer drops
    /// the oldest instead, see [`ConnectOptions::datagram_send_buffer_bytes`]).
    pub fn outgoing_ticks_dropped(&self) -> u64 {
        self.handle.shared.outgoing_ticks_dropped()
    }

    /// Joins (by default creating) a room.
    ///
    /// On success the returned [`Room`]'s replica holds the snapshot the server sent;
    /// events after it update the replica as they arrive. One client may join many
    /// rooms (up to the server's `max_rooms_per_session`).
    ///
    /// With an empty `room_id` and [`JoinOptions::create_if_missing`], the
    /// server creates a room under a fresh id (an invite code to share, eight
    /// upper-case letters and digits); [`Room::id`] returns it. Room ids are
    /// compared exactly: turn a code people type to upper case first.
    ///
    /// Server refusals come back as [`RequestError::Server`] with codes such as
    /// `RoomNotFound` (without `create_if_missing`), `RoomFull`, `TooManyJoined`,
    /// `AlreadyJoined`, `InvalidRoomId`, `PasswordRequired` or `WrongPassword`
    /// ([`JoinOptions::password`]), `Unauthorized`, `InvalidToken` or
    /// `TokenExpired` ([`JoinOptions::token`]), and `Banned` (kicked recently)
    /// or `Blocked` (too many failed attempts) or `RateLimited`, which say when
    /// to try again ([`RequestError::retry_after`]). If this future is dropped
    /// before the reply, a late `Joined` is answered with a `Leave`, so no
    /// membership lingers.
    pub async fn join(&self, room_id: &str, options: JoinOptions) -> Result<Room, RequestError> {
        let wire_options = options.wire_options();
        let reply = self
            .handle
            .shared
            .request(|request_id| ClientMessage::Join {
                request_id,
                room_id: room_id.to_owned(),
                display: options.display,
                options: wire_options,
            })
            .await?;
        match reply {
            Reply::Joined(joined) => match joined.take() {
                // The connection may have ended between the reply and now.
                Some(_) if self.is_closed() => {
                    Err(RequestError::Closed(self.handle.shared.closed_error()))
                }
                Some(room) => Ok(Room::new(Arc::clone(&self.handle), room)),
                None => Err(RequestError::UnexpectedReply("joined")),
            },
            other => Err(other.into_error()),
        }
    }

    /// This session's id on the server (for logs and support); a resume
    /// gives the session a new id.
    pub fn session_id(&self) -> u64 {
        self.handle.shared.session_id()
    }

    /// The server's hello on the first connection. (A resumed connection's
    /// hello only renews the resume token and the session id; limits and
    /// rate budgets stay the same.)
    pub fn server_hello(&self) -> &ServerHello {
        &self.handle.shared.hello
    }

    /// The limits the server announced; requests over them fail locally with
    /// [`RequestError::Limit`].
    pub fn limits(&self) -> &Limits {
        &self.handle.shared.hello.limits
    }

    /// This session's rate budgets, as the server announced them. The client
    /// does not pace itself: past a budget the server refuses a message with
    /// [`ErrorCode::RateLimited`] and the time to wait
    /// ([`RequestError::retry_after`]), and repeated violations end the
    /// connection.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.handle.shared.hello.rate_limits
    }

    /// The largest datagram this connection can send right now. `None` on
    /// WebSocket (ticks travel in-band; the server's hello says
    /// `max_datagram_size: 0` there) and when datagrams are unsupported.
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.handle.shared.max_datagram_size()
    }

    /// The server's clock now, according to the current estimate.
    ///
    /// # Accuracy
    ///
    /// The estimate comes from ping/pong exchanges: the `clock_sync_pings` at
    /// connect, then one keep-alive ping every
    /// [`ConnectOptions::ping_interval`] (5 s). Of the last
    /// [`ConnectOptions::clock_window`] samples, the one with the smallest
    /// round trip gives the offset, whose error is at most half that round
    /// trip and, in practice, half the *asymmetry* between the two
    /// directions. Expect, against the server's clock:
    /// - loopback or LAN: well under a millisecond;
    /// - the internet: about half the path's asymmetry, typically a few
    ///   milliseconds; never more than half the best RTT
    ///   ([`ClockEstimate::rtt`]);
    /// - plus the local clock's drift since that sample (tens of parts per
    ///   million: well under a millisecond per minute), which the steady
    ///   keep-alive samples keep correcting.
    ///
    /// Every member computes a timeline's position from its own estimate, so
    /// two members agree within the sum of their errors.
    pub fn server_time(&self) -> ServerTime {
        self.handle.shared.server_time()
    }

    /// The server's clock at a local instant (e.g. a tick's `received_at`).
    pub fn server_time_at(&self, instant: Instant) -> ServerTime {
        self.handle.shared.server_time_at(instant)
    }

    /// The clock estimate: offset to the server clock, the RTT of the sample it
    /// comes from, samples in the window. Before the first ping sample (only with
    /// `clock_sync_pings: 0`), the offset is the rough one from the server hello's
    /// `server_time`, not corrected for RTT, and `samples` is 0. A reconnect
    /// keeps the estimate (the server's clock does not change).
    pub fn clock(&self) -> ClockEstimate {
        self.handle.shared.clock_estimate()
    }

    /// Runs a clock sync now (`pings` pings, one after another) and returns the new
    /// estimate. The background re-sync does this periodically on its own.
    pub async fn sync_clock(&self, pings: u32) -> ClockEstimate {
        let shared = &self.handle.shared;
        shared
            .sync_clock(pings, shared.options.request_timeout)
            .await;
        self.clock()
    }

    /// Errors the server reports that are not tied to a request (e.g. a refused
    /// tick, a tick over the rate budget, or the reason for an imminent
    /// disconnect), from now on. Bounded ([`ConnectOptions::error_capacity`]);
    /// they are also logged. [`error::retry_after`](crate::error::retry_after)
    /// reads the wait a `RateLimited` frame asks for.
    pub fn errors(&self) -> broadcast::Receiver<ErrorFrame> {
        self.handle.shared.errors.subscribe()
    }

    /// What happens to the connection from now on: reconnect attempts,
    /// resumes (with each room's outcome), and the end
    /// ([`ConnectionEvent`]; see [`crate::reconnect`]).
    ///
    /// Bounded (64 events): a receiver that falls further behind gets
    /// `RecvError::Lagged`. The stream ends when the client does.
    ///
    /// ```no_run
    /// # async fn demo(client: chorus_client::Client) {
    /// use chorus_client::ConnectionEvent;
    ///
    /// let mut events = client.connection_events();
    /// while let Ok(event) = events.recv().await {
    ///     match event {
    ///         ConnectionEvent::Reconnecting { attempt, delay, reason } => {
    ///             println!("connection lost ({reason}); attempt {attempt} in {delay:?}");
    ///         }
    ///         ConnectionEvent::Resumed { rooms, .. } => println!("back: {rooms:?}"),
    ///         ConnectionEvent::Lost { reason } => println!("gone for good: {reason}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn connection_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.handle.shared.subscribe_events()
    }

    /// Whether a connection is up: false while reconnecting and once closed.
    pub fn is_connected(&self) -> bool {
        self.handle.shared.is_up()
    }

    /// Whether the client has ended (closed, or lost for good).
    pub fn is_closed(&self) -> bool {
        self.handle.shared.close_reason().is_some()
    }

    /// Why the client ended, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.handle.shared.close_reason()
    }

    /// Waits until the client ends (not a mere reconnect) and returns why.
    pub async fn closed(&self) -> CloseReason {
        self.handle.shared.wait_closed().await
    }

    /// Closes the connection cleanly: first leaves every joined room (waiting
    /// up to 2 s for the server's answers), so the other members see a leave
    /// and not a member reconnecting, then closes (WebTransport close code 0,
    /// WebSocket close code 1000). Pending requests fail with
    /// [`RequestError::Closed`]`(`[`CloseReason::Local`]`)`, streams end.
    /// Waits a few seconds at most for the close to reach the network.
    pub async fn close(&self) {
        self.handle.shared.close_gracefully().await;
    }
}

impl ConnectError {
    /// Whether a failed WebTransport attempt should be followed by WebSocket:
    /// anything but settings that WebSocket would refuse just the same.
    fn allows_fallback(&self) -> bool {
        !matches!(self, ConnectError::Url(_) | ConnectError::Tls(_))
    }
}

/// Where to reach the server by WebSocket: a `ws://`/`wss://` URL as it is; for
/// an `https://` URL, `websocket_url` or the same URL with `wss://`.
fn websocket_target(
    server: &ServerUrl,
    options: &ConnectOptions,
) -> Result<ServerUrl, ConnectError> {
    if server.scheme.is_websocket() {
        return Ok(server.clone());
    }
    match &options.websocket_url {
        Some(url) => {
            let target = ServerUrl::parse(url)?;
            if !target.scheme.is_websocket() {
                return Err(UrlError::UnsupportedScheme(target.scheme.as_str().into()).into());
            }
            Ok(target)
        }
        None => Ok(server.websocket()),
    }
}

/// The bound on control messages from the server until its hello says otherwise.
fn initial_max_frame_bytes(options: &ConnectOptions) -> u32 {
    options
        .max_frame_bytes
        .unwrap_or(Limits::default().max_frame_bytes)
}

/// Opens a connection to `url` the way the options say (with
/// [`TransportChoice::Auto`], WebTransport then WebSocket) and performs the
/// hello exchange, with `resume` among the hello's options when reconnecting.
/// Returns the connected transport, the server's hello, and the handshake
/// deadline (for the initial clock sync).
pub(crate) async fn open(
    url: &str,
    options: &ConnectOptions,
    resume: Option<HelloOption>,
) -> Result<(Connected, ServerHello, Deadline), ConnectError> {
    let server = ServerUrl::parse(url)?;
    match (server.scheme, options.transport) {
        (Scheme::Https, TransportChoice::Auto) => {
            // Only a session that is not established in time (or fails) falls
            // back; once it is, the Chorus handshake's outcome is final.
            let deadline = Deadline::now() + options.handshake_timeout;
            let wait = options.fallback_after.min(options.handshake_timeout);
            let webtransport_error = match webtransport_session(url, options, wait).await {
                Ok(connected) => return establish(connected, options, resume, deadline).await,
                Err(e) if !e.allows_fallback() => return Err(e),
                Err(e) => e,
            };
            let target = websocket_target(&server, options)?;
            info!(
                error = %webtransport_error,
                url = %target,
                "WebTransport unavailable, trying WebSocket"
            );
            connect_websocket(&target, options, resume)
                .await
                .map_err(|websocket_error| ConnectError::AllTransportsFailed {
                    webtransport: Box::new(webtransport_error),
                    websocket: Box::new(websocket_error),
                })
        }
        (Scheme::Https, TransportChoice::WebTransport) => {
            let deadline = Deadline::now() + options.handshake_timeout;
            let connected = webtransport_session(url, options, options.handshake_timeout).await?;
            establish(connected, options, resume, deadline).await
        }
        (_, TransportChoice::WebSocket) | (Scheme::Ws | Scheme::Wss, TransportChoice::Auto) => {
            let target = websocket_target(&server, options)?;
            connect_websocket(&target, options, resume).await
        }
        (scheme @ (Scheme::Ws | Scheme::Wss), TransportChoice::WebTransport) => Err(
            ConnectError::Url(UrlError::UnsupportedScheme(scheme.as_str().into())),
        ),
    }
}

/// The WebTransport session and its control stream, giving up after `wait`.
async fn webtransport_session(
    url: &str,
    options: &ConnectOptions,
    wait: Duration,
) -> Result<Connected, ConnectError> {
    let max_frame_bytes = initial_max_frame_bytes(options);
    tokio::time::timeout(
        wait,
        webtransport::connect(url, options, max_frame_bytes, wait),
    )
    .await
    .map_err(|_| ConnectError::HandshakeTimeout(wait))?
}

/// WebSocket: TCP, TLS for `wss://`, the upgrade, then the handshake.
async fn connect_websocket(
    target: &ServerUrl,
    options: &ConnectOptions,
    resume: Option<HelloOption>,
) -> Result<(Connected, ServerHello, Deadline), ConnectError> {
    let deadline = Deadline::now() + options.handshake_timeout;
    let max_frame_bytes = initial_max_frame_bytes(options);
    let connected = tokio::time::timeout_at(
        deadline,
        websocket::connect(target, options, max_frame_bytes),
    )
    .await
    .map_err(|_| ConnectError::HandshakeTimeout(options.handshake_timeout))??;
    establish(connected, options, resume, deadline).await
}

/// On a connected transport: the hello exchange, before `deadline`.
async fn establish(
    connected: Connected,
    options: &ConnectOptions,
    resume: Option<HelloOption>,
    deadline: Deadline,
) -> Result<(Connected, ServerHello, Deadline), ConnectError> {
    let Connected {
        link,
        mut reader,
        mut writer,
    } = connected;
    let timeout = options.handshake_timeout;
    let hello = match tokio::time::timeout_at(
        deadline,
        handshake(&mut reader, &mut writer, options, resume),
    )
    .await
    {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            writer.abort(&link).await;
            return Err(e);
        }
        Err(_) => {
            writer.abort(&link).await;
            return Err(ConnectError::HandshakeTimeout(timeout));
        }
    };
    // From now on the bound is the announced one.
    if options.max_frame_bytes.is_none() {
        reader.set_max_frame_bytes(hello.limits.max_frame_bytes);
    }
    info!(
        session_id = hello.session_id,
        server = %hello.server_name,
        version = %hello.version,
        transport = %link.kind(),
        resumable = !hello.resume_token.is_empty(),
        "connected"
    );
    // 2.0 defines no hello extensions: every kind is one this client skips.
    for extension in &hello.extensions {
        debug!(
            kind = extension.kind,
            len = extension.data.len(),
            "skipping unknown hello extension"
        );
    }
    Ok((
        Connected {
            link,
            reader,
            writer,
        },
        hello,
        deadline,
    ))
}

/// Sends the hello and reads the server's answer (the same on both transports).
async fn handshake(
    reader: &mut LinkReader,
    writer: &mut LinkWriter,
    options: &ConnectOptions,
    resume: Option<HelloOption>,
) -> Result<ServerHello, ConnectError> {
    let mut hello_options = options.hello_options();
    hello_options.extend(resume);
    let hello = ClientMessage::Hello(ClientHello {
        version: PROTOCOL_VERSION,
        client_name: options.client_name.clone(),
        capabilities: 0,
        options: hello_options,
    });
    if let Err(close) = writer.send_control(OutMessage::encode(&hello)).await {
        return Err(handshake_close(close));
    }
    loop {
        match reader.recv().await {
            Ok(Inbound::Control(body)) => {
                if let Some(outcome) = hello_body_outcome(&body) {
                    return outcome;
                }
            }
            Ok(Inbound::Datagram(_) | Inbound::Pack(_) | Inbound::PackStream(_)) => {
                trace!("ignoring a datagram or pack before the hello");
            }
            Err(close) => return Err(handshake_close(close)),
        }
    }
}

/// What one control message body from the server means for the handshake;
/// `None` for a message with a tag newer than this client (skipped).
fn hello_body_outcome(body: &[u8]) -> Option<Result<ServerHello, ConnectError>> {
    match decode_server_message(body) {
        Ok(msg) => Some(hello_outcome(msg)),
        Err(DecodeError::UnknownTag { tag }) => {
            debug!(tag, "skipping server message with unknown tag");
            None
        }
        // A hello of another major version may have another shape (1.x: no
        // rate limits, no extensions); its version, first, reads in any shape.
        Err(e) => Some(Err(match peek_hello_version(body) {
            Some(server) if server.major != PROTOCOL_VERSION.major => {
                ConnectError::VersionMismatch {
                    server,
                    client: PROTOCOL_VERSION,
                }
            }
            _ => ConnectError::Protocol(e.to_string()),
        })),
    }
}

/// The error for a connection that ended during the handshake.
fn handshake_close(close: LinkClose) -> ConnectError {
    match close.into_reason(None) {
        CloseReason::Protocol(text) => ConnectError::Protocol(text),
        reason => ConnectError::Closed(reason),
    }
}

/// What the first message from the server means for the handshake.
pub(crate) fn hello_outcome(msg: ServerMessage) -> Result<ServerHello, ConnectError> {
    match msg {
        ServerMessage::Hello(hello) if hello.version.major == PROTOCOL_VERSION.major => Ok(hello),
        ServerMessage::Hello(hello) => Err(ConnectError::VersionMismatch {
            server: hello.version,
            client: PROTOCOL_VERSION,
        }),
        ServerMessage::Error(ErrorFrame {
            code: ErrorCode::VersionMismatch,
            detail: ErrorDetail::Version { server, client },
            ..
        }) => Err(ConnectError::VersionMismatch { server, client }),
        ServerMessage::Error(frame) => Err(ConnectError::Server(frame)),
        other => Err(ConnectError::Protocol(format!(
            "expected the server hello, got {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::{ProtocolVersion, Seq};

    fn hello(major: u16) -> ServerHello {
        ServerHello {
            version: ProtocolVersion { major, minor: 3 },
            server_name: "chorus".into(),
            session_id: 42,
            server_time: ServerTime(1),
            max_datagram_size: 1200,
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            resume_token: String::new(),
            resume_window_ms: 0,
            extensions: vec![],
        }
    }

    #[test]
    fn hello_with_same_major_is_accepted() {
        let h = hello(PROTOCOL_VERSION.major);
        assert_eq!(hello_outcome(ServerMessage::Hello(h.clone())).ok(), Some(h));
    }

    #[test]
    fn version_mismatch_is_typed_from_error_or_hello() {
        let server = ProtocolVersion { major: 3, minor: 0 };
        let err = ErrorFrame::new(None, ErrorCode::VersionMismatch, "no").with_detail(
            ErrorDetail::Version {
                server,
                client: PROTOCOL_VERSION,
            },
        );
        assert!(matches!(
            hello_outcome(ServerMessage::Error(err)),
            Err(ConnectError::VersionMismatch { server: s, client: c })
                if s == server && c == PROTOCOL_VERSION
        ));
        assert!(matches!(
            hello_outcome(ServerMessage::Hello(hello(9))),
            Err(ConnectError::VersionMismatch { .. })
        ));
    }

    #[test]
    fn a_hello_of_another_shape_still_names_its_version() {
        // A 1.0 server hello: version, name, session, time, datagram size,
        // limits, and none of the 2.0 fields, so it does not decode as 2.0.
        let old = postcard::to_extend(
            &(
                ProtocolVersion { major: 1, minor: 4 },
                "chorus/0.9",
                7u64,
                ServerTime(1),
                1200u32,
            ),
            vec![0u8],
        )
        .expect("encodes");
        assert!(decode_server_message(&old).is_err());
        assert!(matches!(
            hello_body_outcome(&old),
            Some(Err(ConnectError::VersionMismatch { server, client }))
                if server == ProtocolVersion { major: 1, minor: 4 } && client == PROTOCOL_VERSION
        ));
        // A 2.0 hello cut short is broken, not another version.
        let hello =
            chorus_protocol::encode_message(&ServerMessage::Hello(hello(PROTOCOL_VERSION.major)));
        assert!(matches!(
            hello_body_outcome(&hello[..hello.len() - 1]),
            Some(Err(ConnectError::Protocol(_)))
        ));
        assert!(matches!(hello_body_outcome(&hello), Some(Ok(_))));
        // A newer message kind is skipped.
        assert!(hello_body_outcome(&[200, 0]).is_none());
    }

    #[test]
    fn other_errors_and_messages_fail_the_handshake() {
        let err = ErrorFrame::new(None, ErrorCode::ShuttingDown, "bye");
        assert!(matches!(
            hello_outcome(ServerMessage::Error(err)),
            Err(ConnectError::Server(f)) if f.code == ErrorCode::ShuttingDown
        ));
        assert!(matches!(
            hello_outcome(ServerMessage::CommandAck {
                request_id: 1,
                room: chorus_protocol::RoomSlot(1),
                seq: Seq(1),
                duplicate: false
            }),
            Err(ConnectError::Protocol(_))
        ));
    }
}
