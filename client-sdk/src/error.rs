//! The client's error types, one per boundary:
//! [`ConnectError`] for [`Client::connect`](crate::Client::connect),
//! [`RequestError`] for every request/reply call (join, leave, state, commands),
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
    /// The server closed the connection normally (close code 0), e.g. on shutdown.
    ServerClosed {
        /// The close reason text the server gave (may be empty).
        reason: String,
    },
    /// The server closed the connection because of an error. Holds the `Error` frame
    /// the server sent just before closing when there was one, otherwise an error
    /// built from the WebTransport close code (the code *is* the Chorus error code)
    /// and the close reason text.
    Server(ErrorFrame),
    /// The server sent bytes this client cannot understand (an undecodable frame,
    /// a frame over the size limit, a broken handshake); the client closed the
    /// connection.
    Protocol(String),
    /// The connection failed below Chorus: idle timeout, QUIC or HTTP/3 error,
    /// network error.
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
    /// The server URL is not a valid WebTransport URL.
    #[error("invalid server URL: {0}")]
    Url(#[from] UrlError),
    /// The trust settings could not be turned into a TLS configuration (e.g. a PEM
    /// without certificates, an empty hash list).
    #[error("invalid TLS trust settings: {0}")]
    Tls(String),
    /// A local I/O failure, e.g. binding the UDP socket.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The WebTransport session could not be established (DNS, QUIC or TLS handshake,
    /// certificate rejected, session refused by the server).
    #[error("WebTransport connection failed: {0}")]
    Connecting(String),
    /// The session was established but failed before the Chorus handshake finished.
    #[error("connection failed during the handshake: {0}")]
    Closed(CloseReason),
    /// The handshake (connection, hello and initial clock sync) did not finish in time.
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
}

/// Why a request (join, leave, set/delete state, command) failed.
#[derive(Debug, Clone, Error)]
pub enum RequestError {
    /// The server refused the request. See [`RequestError::code`].
    #[error("server error: {0}")]
    Server(ErrorFrame),
    /// The connection ended before the reply arrived (or had already ended).
    #[error("connection closed: {0}")]
    Closed(CloseReason),
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
}

impl RequestError {
    /// The server's error code, for [`RequestError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Server(frame) => Some(frame.code),
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
    /// datagram size (path MTU).
    #[error("tick datagram of {len} bytes exceeds the connection's maximum datagram size {max}")]
    DatagramTooLarge {
        /// Encoded datagram length.
        len: usize,
        /// The connection's current maximum.
        max: usize,
    },
    /// The server's endpoint does not accept datagrams.
    #[error("the connection does not support datagrams")]
    DatagramsUnsupported,
    /// The room handle is no longer joined.
    #[error("not joined to this room any more")]
    NotJoined,
    /// The connection has ended.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
}
