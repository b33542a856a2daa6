//! Connecting and the [`Client`] handle: the WebTransport session, the control
//! stream handshake (`ClientHello` → `ServerHello`), the initial clock sync, and
//! client-level operations (join, clock, errors, close).

use crate::clock::{ClockEstimate, LocalClock};
use crate::driver::{ControlStream, Reply, Shared, reason_from_connection};
use crate::error::{CloseReason, ConnectError, RequestError};
use crate::options::{ConnectOptions, JoinOptions};
use crate::room::Room;
use crate::url::ServerUrl;
use chorus_protocol::{
    ClientHello, ClientMessage, DecodeError, ErrorCode, ErrorDetail, ErrorFrame, FrameDecoder,
    Limits, PROTOCOL_VERSION, ServerHello, ServerMessage, ServerTime, decode_server_message,
    encode_frame,
};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::{debug, info};
use wtransport::{Endpoint, RecvStream};

/// A connection to a Chorus server. Cheap to clone; all clones share one
/// connection, which stays open while any `Client` or [`Room`] handle exists
/// (dropping the last one closes it) or until [`close`](Self::close).
#[derive(Clone)]
pub struct Client {
    handle: Arc<ClientHandle>,
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
            .field("closed", &self.handle.shared.close_reason())
            .finish()
    }
}

impl Client {
    /// Connects to `url` (e.g. `https://127.0.0.1:4433/chorus`), performs the
    /// handshake and the initial clock sync, and starts the background driver.
    ///
    /// Must be called within a Tokio runtime. The whole sequence is bounded by
    /// [`ConnectOptions::handshake_timeout`].
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Client, ConnectError> {
        ServerUrl::parse(url)?;
        let config = options.client_config()?;
        let timeout = options.handshake_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let endpoint = Endpoint::client(config)?;
        let clock = LocalClock::new();

        let (conn, control, hello) = tokio::time::timeout_at(deadline, async {
            let conn = endpoint
                .connect(url)
                .await
                .map_err(|e| ConnectError::Connecting(e.to_string()))?;
            let result = handshake(&conn, &options).await;
            Ok::<_, ConnectError>((conn, result))
        })
        .await
        .map_err(|_| ConnectError::HandshakeTimeout(timeout))
        .and_then(|r| r)
        .and_then(|(conn, result)| match result {
            Ok((control, hello)) => Ok((conn, control, hello)),
            Err(e) => {
                conn.close(0u32.into(), b"handshake failed");
                Err(e)
            }
        })?;
        info!(
            session_id = hello.session_id,
            server = %hello.server_name,
            version = %hello.version,
            "connected"
        );

        let pings = options.clock_sync_pings;
        let shared = Shared::start(endpoint, conn, control, hello, options, clock);
        let client = Client {
            handle: Arc::new(ClientHandle { shared }),
        };
        if pings > 0 {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
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

    /// Joins (by default creating) a room.
    ///
    /// On success the returned [`Room`]'s replica holds the snapshot the server sent;
    /// events after it update the replica as they arrive. One client may join many
    /// rooms (up to the server's `max_rooms_per_session`).
    ///
    /// Server refusals come back as [`RequestError::Server`] with codes such as
    /// `RoomNotFound` (without `create_if_missing`), `RoomFull`, `TooManyJoined`,
    /// `AlreadyJoined` or `InvalidRoomId`. If this future is dropped before the
    /// reply, a late `Joined` is answered with a `Leave`, so no membership lingers.
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

    /// This session's id on the server (for logs and support).
    pub fn session_id(&self) -> u64 {
        self.handle.shared.hello.session_id
    }

    /// The server's hello.
    pub fn server_hello(&self) -> &ServerHello {
        &self.handle.shared.hello
    }

    /// The limits the server announced; requests over them fail locally with
    /// [`RequestError::Limit`].
    pub fn limits(&self) -> &Limits {
        &self.handle.shared.hello.limits
    }

    /// The largest datagram this connection can send right now (`None`: datagrams
    /// unsupported).
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.handle.shared.conn.max_datagram_size()
    }

    /// The server's clock now, according to the current estimate.
    pub fn server_time(&self) -> ServerTime {
        self.server_time_at(Instant::now())
    }

    /// The server's clock at a local instant (e.g. a tick's `received_at`).
    pub fn server_time_at(&self, instant: Instant) -> ServerTime {
        let shared = &self.handle.shared;
        self.clock().to_server_time(shared.clock.at_us(instant))
    }

    /// The clock estimate: offset to the server clock, the RTT of the sample it
    /// comes from, samples in the window. Before the first ping sample (only with
    /// `clock_sync_pings: 0`), the offset is the rough one from the server hello's
    /// `server_time`, not corrected for RTT, and `samples` is 0.
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
    /// tick, or the reason for an imminent disconnect), from now on. Bounded
    /// ([`ConnectOptions::error_capacity`]); they are also logged.
    pub fn errors(&self) -> broadcast::Receiver<ErrorFrame> {
        self.handle.shared.errors.subscribe()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.shared.close_reason().is_some()
    }

    /// Why the connection ended, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.handle.shared.close_reason()
    }

    /// Waits until the connection ends and returns why.
    pub async fn closed(&self) -> CloseReason {
        self.handle.shared.wait_closed().await
    }

    /// Closes the connection cleanly (WebTransport close code 0). Pending requests
    /// fail with [`RequestError::Closed`]`(`[`CloseReason::Local`]`)`, streams end.
    /// Waits up to a second for the close to reach the network.
    pub async fn close(&self) {
        self.handle.shared.close_gracefully().await;
    }
}

/// Opens the control stream, sends the hello and reads the server's answer.
async fn handshake(
    conn: &wtransport::Connection,
    options: &ConnectOptions,
) -> Result<(ControlStream, ServerHello), ConnectError> {
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(opening) => match opening.await {
            Ok(streams) => streams,
            Err(e) => return Err(closed_during_handshake(conn, e.to_string()).await),
        },
        Err(e) => return Err(closed_during_handshake(conn, e.to_string()).await),
    };
    let hello = ClientMessage::Hello(ClientHello {
        version: PROTOCOL_VERSION,
        client_name: options.client_name.clone(),
        capabilities: 0,
    });
    if let Err(e) = send.write_all(&encode_frame(&hello)).await {
        return Err(closed_during_handshake(conn, e.to_string()).await);
    }
    let mut decoder = FrameDecoder::new(
        options
            .max_frame_bytes
            .unwrap_or(Limits::default().max_frame_bytes),
    );
    let hello = match read_hello(&mut recv, &mut decoder).await {
        Ok(hello) => hello,
        Err(HelloError::Connect(e)) => return Err(e),
        Err(HelloError::Stream(text)) => return Err(closed_during_handshake(conn, text).await),
    };
    // From now on the bound is the announced one.
    if options.max_frame_bytes.is_none() {
        decoder.set_max_frame_bytes(hello.limits.max_frame_bytes);
    }
    Ok((
        ControlStream {
            send,
            recv,
            decoder,
        },
        hello,
    ))
}

/// Why the hello could not be read.
enum HelloError {
    /// The server answered, but not with a usable hello.
    Connect(ConnectError),
    /// The stream failed or ended; the connection's close reason says more.
    Stream(String),
}

impl From<ConnectError> for HelloError {
    fn from(e: ConnectError) -> Self {
        HelloError::Connect(e)
    }
}

/// The error for a connection that failed during the handshake: the server's
/// close code and reason when it closed the connection (a fatal error's code), or
/// the stream error `text`.
async fn closed_during_handshake(conn: &wtransport::Connection, text: String) -> ConnectError {
    let reason = match tokio::time::timeout(Duration::from_millis(500), conn.closed()).await {
        Ok(err) => reason_from_connection(err, None),
        Err(_) => CloseReason::Transport(text),
    };
    ConnectError::Closed(reason)
}

/// Reads frames until the server's hello (or its refusal).
async fn read_hello(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<ServerHello, HelloError> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(body) = decoder
            .next_frame()
            .map_err(|e| HelloError::Connect(ConnectError::Protocol(e.to_string())))?
        {
            match decode_server_message(&body) {
                Ok(msg) => return Ok(hello_outcome(msg)?),
                Err(DecodeError::UnknownTag { tag }) => {
                    debug!(tag, "skipping server frame with unknown tag");
                }
                Err(e) => return Err(ConnectError::Protocol(e.to_string()).into()),
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.extend(&buf[..n]),
            Ok(None) => {
                return Err(HelloError::Stream(
                    "the server ended the control stream before its hello".into(),
                ));
            }
            Err(e) => return Err(HelloError::Stream(e.to_string())),
        }
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
        }
    }

    #[test]
    fn hello_with_same_major_is_accepted() {
        let h = hello(PROTOCOL_VERSION.major);
        assert_eq!(hello_outcome(ServerMessage::Hello(h.clone())).ok(), Some(h));
    }

    #[test]
    fn version_mismatch_is_typed_from_error_or_hello() {
        let server = ProtocolVersion { major: 2, minor: 0 };
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
