//! The client's error types, one per boundary:
//! [`ConnectError`] for [`Client::connect`](crate::Client::connect),
//! [`RequestError`] for every request/reply call (join, leave, state, commands,
//! kick, roles, password, close, timelines, messages, snapshots, packs),
//! [`TickError`] for [`Room::send_tick`](crate::Room::send_tick),
//! and [`CloseReason`], why a connection ended.

use crate::url::UrlError;
use chorus_protocol::{ErrorCode, ErrorDetail, ErrorFrame, LimitViolation, ProtocolVersion};
use std::fmt;
use std::time::Duration;
use thiserror::Error;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This client closed it: [`Client::close`](crate::Client::close), or every
    /// `Client` and `Room` handle was dropped.
    Local,
    /// The server closed the connection normally (WebTransport close code 0,
    /// WebSocket close code 1000).
    ServerClosed {
        /// The close reason text the server gave (may be empty).
        reason: String,
    },
    /// The server closed the connection because of an error. Holds the `Error` frame
    /// the server sent just before closing when there was one, otherwise an error
    /// built from the close code and the close reason text: the WebTransport close
    /// code *is* the Chorus error code, a WebSocket close code is 4000 + the
    /// Chorus error code (e.g. 4400 for `SlowConsumer`).
    Server(ErrorFrame),
    /// The server sent bytes this client cannot understand (an undecodable frame,
    /// a frame over the size limit, a broken handshake); the client closed the
    /// connection.
    Protocol(String),
    /// The connection failed below Chorus: idle timeout, QUIC, HTTP/3 or WebSocket
    /// error, network error, or a WebSocket close code outside 1000/1001/4000-4999.
    Transport(String),
}

impl CloseReason {
    /// The server's error code, when the server closed the connection because of one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CloseReason::Server(frame) => Some(frame.code),
            _ => None,
        }
    }

    /// How long to wait before reconnecting, when the server's error says so
    /// (e.g. [`ErrorCode::RateLimited`] after repeated violations, or
    /// [`ErrorCode::TooManyConnections`]). See [`retry_after`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CloseReason::Server(frame) => retry_after(frame),
            _ => None,
        }
    }
}

/// The wait an error frame asks for: its [`ErrorDetail::RetryAfter`], which
/// comes with [`ErrorCode::RateLimited`], [`ErrorCode::Blocked`],
/// [`ErrorCode::Banned`] and [`ErrorCode::TooManyConnections`].
pub fn retry_after(frame: &ErrorFrame) -> Option<Duration> {
    match frame.detail {
        ErrorDetail::RetryAfter { retry_after_ms } => Some(Duration::from_millis(retry_after_ms)),
        _ => None,
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by this client"),
            CloseReason::ServerClosed { reason } if reason.is_empty() => {
                f.write_str("closed by the server")
            }
            CloseReason::ServerClosed { reason } => write!(f, "closed by the server: {reason}"),
            CloseReason::Server(frame) => write!(f, "closed by the server with error {frame}"),
            CloseReason::Protocol(msg) => write!(f, "protocol error: {msg}"),
            CloseReason::Transport(msg) => write!(f, "transport error: {msg}"),
        }
    }
}

/// Why [`Client::connect`](crate::Client::connect) failed.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The server URL (or [`websocket_url`](crate::ConnectOptions::websocket_url))
    /// is not a valid Chorus URL, or does not fit the chosen
    /// [`TransportChoice`](crate::TransportChoice).
    #[error("invalid server URL: {0}")]
    Url(#[from] UrlError),
    /// The trust settings could not be turned into a TLS configuration (e.g. a PEM
    /// without certificates, an empty hash list).
    #[error("invalid TLS trust settings: {0}")]
    Tls(String),
    /// A local I/O failure, e.g. binding the UDP socket or configuring the TCP one.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The transport connection could not be established: DNS, QUIC or TCP
    /// connect, TLS handshake, certificate rejected, WebTransport session or
    /// WebSocket upgrade refused. The text names the transport.
    #[error("connection failed: {0}")]
    Connecting(String),
    /// The server answered the WebSocket upgrade with this HTTP status instead of
    /// 101, e.g. 403 (origin refused, PROTOCOL.md §1.4) or 404 (wrong path).
    #[error("the server refused the WebSocket upgrade with HTTP status {0}")]
    HttpStatus(u16),
    /// The session was established but failed before the Chorus handshake finished.
    #[error("connection failed during the handshake: {0}")]
    Closed(CloseReason),
    /// The handshake (connection, hello and initial clock sync) did not finish in
    /// time; for the WebTransport attempt of [`TransportChoice::Auto`](crate::TransportChoice::Auto),
    /// the session was not established within `fallback_after`.
    #[error("handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    /// The server speaks an incompatible protocol version.
    #[error("protocol version mismatch: server speaks {server}, client {client}")]
    VersionMismatch {
        /// The server's version.
        server: ProtocolVersion,
        /// This client's version.
        client: ProtocolVersion,
    },
    /// The server refused the handshake with this error.
    #[error("server refused the handshake: {0}")]
    Server(ErrorFrame),
    /// The server broke the protocol during the handshake.
    #[error("protocol error during the handshake: {0}")]
    Protocol(String),
    /// [`TransportChoice::Auto`](crate::TransportChoice::Auto): neither transport
    /// connected. Holds why each attempt failed.
    #[error("WebTransport failed ({webtransport}), then WebSocket failed ({websocket})")]
    AllTransportsFailed {
        /// Why the WebTransport attempt failed (or gave up after `fallback_after`).
        webtransport: Box<ConnectError>,
        /// Why the WebSocket attempt failed.
        websocket: Box<ConnectError>,
    },
}

impl ConnectError {
    /// How long to wait before connecting again, when the server said: a
    /// handshake refused or a connection closed with
    /// [`ErrorCode::TooManyConnections`], [`ErrorCode::RateLimited`] or
    /// [`ErrorCode::Blocked`] (see [`retry_after`]). For
    /// [`AllTransportsFailed`](Self::AllTransportsFailed), the longer wait of
    /// the two attempts.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectError::Server(frame) => retry_after(frame),
            ConnectError::Closed(reason) => reason.retry_after(),
            ConnectError::AllTransportsFailed {
                webtransport,
                websocket,
            } => webtransport.retry_after().max(websocket.retry_after()),
            _ => None,
        }
    }
}

/// Why a request (join, leave, set/delete state, command, kick, set role, set
/// password, close room, timeline control, direct or broadcast message,
/// snapshot, ICE servers, delegate, pack upload or fetch) failed.
#[derive(Debug, Clone, Error)]
pub enum RequestError {
    /// The server refused the request. See [`RequestError::code`].
    #[error("server error: {0}")]
    Server(ErrorFrame),
    /// The connection ended for good before the reply arrived (or had already
    /// ended).
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The connection dropped while the request was in flight: it may or may
    /// not have been applied. The client is reconnecting on its own
    /// ([`ConnectionEvent`](crate::ConnectionEvent)); once resumed, the room
    /// replica shows whether it was. Commands with an idempotency key never
    /// fail this way: they are sent again after the resume, applied once.
    #[error(
        "the connection dropped before the reply; the request may or may not have been applied"
    )]
    ConnectionLost,
    /// No reply within the request timeout
    /// ([`ConnectOptions::request_timeout`](crate::ConnectOptions::request_timeout)).
    /// The request may still have been applied.
    #[error("no reply within the request timeout")]
    Timeout,
    /// The request breaks one of the server's announced limits; it was not sent.
    #[error("request not sent: {0}")]
    Limit(#[from] LimitViolation),
    /// The room handle is no longer joined (it was left, or the server removed this
    /// member); the request was not sent.
    #[error("not joined to this room any more")]
    NotJoined,
    /// The server answered with a reply of the wrong kind for this request.
    #[error("unexpected reply from the server: {0}")]
    UnexpectedReply(&'static str),
    /// A fetched pack's content does not have the SHA-256 it was asked for.
    #[error("the pack's content does not match its SHA-256")]
    PackHashMismatch,
    /// A pack transfer broke off in a way resuming cannot fix (content out of
    /// order, larger than announced or than the server's `max_pack_bytes`).
    #[error("pack transfer failed: {0}")]
    PackTransfer(String),
}

impl RequestError {
    /// The server's error code, for [`RequestError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Server(frame) => Some(frame.code),
            _ => None,
        }
    }

    /// How long to wait before trying again, when the server said: a request
    /// refused with [`ErrorCode::RateLimited`], a join refused with
    /// [`ErrorCode::Banned`] (time left of the ban) or [`ErrorCode::Blocked`],
    /// or a connection closed with such an error ([`CloseReason::retry_after`]).
    ///
    /// ```no_run
    /// # async fn demo(room: chorus_client::Room) -> Result<(), chorus_client::RequestError> {
    /// use chorus_client::ErrorCode;
    /// use std::time::Duration;
    ///
    /// let ack = loop {
    ///     match room.set_state("title", b"hi").await {
    ///         Err(e) if e.code() == Some(ErrorCode::RateLimited) => {
    ///             let wait = e.retry_after().unwrap_or(Duration::from_secs(1));
    ///             tokio::time::sleep(wait).await;
    ///         }
    ///         other => break other?,
    ///     }
    /// };
    /// println!("title written at seq {}", ack.seq.0);
    /// # Ok(()) }
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RequestError::Server(frame) => retry_after(frame),
            RequestError::Closed(reason) => reason.retry_after(),
            _ => None,
        }
    }

    /// For an `if_version` conflict: the key's current version (0 when the key
    /// does not exist).
    pub fn conflict_version(&self) -> Option<u64> {
        match self {
            RequestError::Server(ErrorFrame {
                code: ErrorCode::Conflict,
                detail: ErrorDetail::Conflict { current_version },
                ..
            }) => Some(*current_version),
            _ => None,
        }
    }

    /// For a timeline request refused with [`ErrorCode::Conflict`] (its
    /// [`expected_seq`](crate::TimelineOptions::expected_seq) was not the
    /// timeline's last change): the sequence number of that last change.
    pub fn conflict_seq(&self) -> Option<chorus_protocol::Seq> {
        match self {
            RequestError::Server(ErrorFrame {
                code: ErrorCode::Conflict,
                detail: ErrorDetail::Sequence { current_seq },
                ..
            }) => Some(*current_seq),
            _ => None,
        }
    }

    /// For an upload refused with [`ErrorCode::Conflict`] because its content
    /// did not start where the server expected: the offset it expected.
    pub fn conflict_offset(&self) -> Option<u64> {
        self.conflict_version()
    }

    /// Whether the request failed because the connection dropped
    /// ([`RequestError::ConnectionLost`]): trying again after the resume may work.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, RequestError::ConnectionLost)
    }
}

/// Why [`Room::send_tick`](crate::Room::send_tick) refused a tick. A refused tick
/// does not consume a tick sequence number.
#[derive(Debug, Clone, Error)]
pub enum TickError {
    /// The payload exceeds the server's `max_tick_payload_bytes`.
    #[error("tick payload of {len} bytes exceeds the server limit of {max}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded datagram does not fit this connection's current maximum
    /// datagram size (path MTU). WebTransport only: on WebSocket ticks travel
    /// in-band and only the payload limit applies.
    #[error("tick datagram of {len} bytes exceeds the connection's maximum datagram size {max}")]
    DatagramTooLarge {
        /// Encoded datagram length.
        len: usize,
        /// The connection's current maximum.
        max: usize,
    },
    /// The server's endpoint does not accept datagrams (WebTransport only).
    #[error("the connection does not support datagrams")]
    DatagramsUnsupported,
    /// The room handle is no longer joined.
    #[error("not joined to this room any more")]
    NotJoined,
    /// The connection dropped and the client is reconnecting: the tick was not
    /// sent. Ticks flow again once the session is resumed.
    #[error("reconnecting: the tick was not sent")]
    Disconnected,
    /// The connection has ended.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_limited(ms: u64) -> ErrorFrame {
        ErrorFrame::new(Some(3), ErrorCode::RateLimited, "slow down")
            .with_detail(ErrorDetail::RetryAfter { retry_after_ms: ms })
    }

    #[test]
    fn retry_after_reads_the_detail_wherever_the_frame_is() {
        let wait = Some(Duration::from_millis(1500));
        assert_eq!(retry_after(&rate_limited(1500)), wait);
        assert_eq!(RequestError::Server(rate_limited(1500)).retry_after(), wait);
        let closed = CloseReason::Server(rate_limited(1500));
        assert_eq!(closed.retry_after(), wait);
        assert_eq!(RequestError::Closed(closed.clone()).retry_after(), wait);
        assert_eq!(ConnectError::Server(rate_limited(1500)).retry_after(), wait);
        assert_eq!(ConnectError::Closed(closed).retry_after(), wait);
        let both = ConnectError::AllTransportsFailed {
            webtransport: Box::new(ConnectError::Server(rate_limited(200))),
            websocket: Box::new(ConnectError::Server(rate_limited(900))),
        };
        assert_eq!(both.retry_after(), Some(Duration::from_millis(900)));
    }

    #[test]
    fn conflicts_name_the_current_seq_version_or_offset() {
        use chorus_protocol::Seq;
        let timeline = RequestError::Server(
            ErrorFrame::new(Some(1), ErrorCode::Conflict, "changed at 7").with_detail(
                ErrorDetail::Sequence {
                    current_seq: Seq(7),
                },
            ),
        );
        assert_eq!(timeline.conflict_seq(), Some(Seq(7)));
        assert_eq!(timeline.conflict_version(), None);
        let state = RequestError::Server(
            ErrorFrame::new(Some(1), ErrorCode::Conflict, "at version 4")
                .with_detail(ErrorDetail::Conflict { current_version: 4 }),
        );
        assert_eq!(state.conflict_seq(), None);
        assert_eq!(state.conflict_version(), Some(4));
        assert_eq!(state.conflict_offset(), Some(4));
        assert!(RequestError::ConnectionLost.is_connection_lost());
        assert!(!RequestError::Timeout.is_connection_lost());
    }

    #[test]
    fn no_retry_after_without_the_detail() {
        let conflict = ErrorFrame::new(Some(1), ErrorCode::Conflict, "at version 4")
            .with_detail(ErrorDetail::Conflict { current_version: 4 });
        assert_eq!(RequestError::Server(conflict).retry_after(), None);
        assert_eq!(RequestError::Timeout.retry_after(), None);
        assert_eq!(RequestError::NotJoined.retry_after(), None);
        assert_eq!(RequestError::ConnectionLost.retry_after(), None);
        assert_eq!(CloseReason::Local.retry_after(), None);
        assert_eq!(
            ConnectError::HandshakeTimeout(Duration::from_secs(1)).retry_after(),
            None
        );
    }
}
