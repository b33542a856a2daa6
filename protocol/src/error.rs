//! Stable error codes and the error message a server sends to a client.
//!
//! Codes are grouped like HTTP statuses: 1xx the bytes or the protocol, 2xx rooms
//! and membership, 3xx permission and state, 4xx flow control, 5xx the server.
//! A code's number never changes meaning; clients must treat unknown codes as
//! [`ErrorCode::Unknown`] and keep going.

use crate::types::{ProtocolVersion, RequestId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A stable, numeric error code. Travels as a `u16` varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 100: the bytes did not decode as a message of this protocol.
    Malformed,
    /// 101: a message tag this server does not know.
    UnknownMessage,
    /// 102: a frame's declared length exceeds the negotiated maximum.
    FrameTooLarge,
    /// 103: the client's major protocol version differs from the server's.
    VersionMismatch,
    /// 104: a valid message at the wrong time (e.g. anything before `Hello`, a second `Hello`).
    ProtocolViolation,
    /// 105: a string, payload or count exceeds its limit.
    LimitExceeded,
    /// 106: the client did not complete the handshake in time.
    HandshakeTimeout,
    /// 200: no room with that id, and the join did not ask to create it.
    RoomNotFound,
    /// 201: the room has its maximum number of members.
    RoomFull,
    /// 202: the server has its maximum number of rooms.
    TooManyRooms,
    /// 203: this session has joined its maximum number of rooms.
    TooManyJoined,
    /// 204: this session is already a member of that room.
    AlreadyJoined,
    /// 205: the room slot names no room this session has joined.
    NotJoined,
    /// 206: a tick named a sender other than the session's own member.
    InvalidSender,
    /// 207: the room id is empty or contains characters outside the allowed set.
    InvalidRoomId,
    /// 208: this client was kicked from the room and its ban has not run out;
    /// the detail carries the time left.
    Banned,
    /// 209: the resume token is unknown or its window has passed; join afresh.
    ResumeFailed,
    /// 210: no pack with that hash in the room (or its upload is not complete).
    PackNotFound,
    /// 300: the member's role does not permit this action.
    Forbidden,
    /// 301: an `if_version` precondition failed; the detail carries the current version.
    Conflict,
    /// 302: the room's state would exceed its total size or key count.
    StateFull,
    /// 303: the server requires an API key (or a join token) and none, or a
    /// wrong one, was given.
    Unauthorized,
    /// 304: a join token is malformed, badly signed, not yet valid, or for
    /// another room.
    InvalidToken,
    /// 305: a join token has expired (at join, or later: the session is closed).
    TokenExpired,
    /// 306: the room's password does not match.
    WrongPassword,
    /// 307: the room has a password and the join gave none.
    PasswordRequired,
    /// 308: an uploaded pack's content does not have the SHA-256 it was announced with.
    HashMismatch,
    /// 309: a pack's media type is not allowed, or its content is not of that type.
    MediaTypeRefused,
    /// 310: the room does not store anything of this kind (relay rooms).
    NotStored,
    /// 400: the client did not read reliable events fast enough and is disconnected.
    SlowConsumer,
    /// 401: a rate budget is spent; the detail carries when to retry. Repeated
    /// violations close the session with this code.
    RateLimited,
    /// 402: too many failed attempts (wrong passwords, unknown rooms) from this
    /// address; joins are blocked for the time in the detail.
    Blocked,
    /// 403: this address has its maximum number of connections, or opened new
    /// ones too fast.
    TooManyConnections,
    /// 500: an internal server error; the request may be retried.
    Internal,
    /// 501: the server is shutting down.
    ShuttingDown,
    /// A code this build does not know (from a newer peer).
    Unknown(u16),
}

impl ErrorCode {
    pub const fn as_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 100,
            ErrorCode::UnknownMessage => 101,
            ErrorCode::FrameTooLarge => 102,
            ErrorCode::VersionMismatch => 103,
            ErrorCode::ProtocolViolation => 104,
            ErrorCode::LimitExceeded => 105,
            ErrorCode::HandshakeTimeout => 106,
            ErrorCode::RoomNotFound => 200,
            ErrorCode::RoomFull => 201,
            ErrorCode::TooManyRooms => 202,
            ErrorCode::TooManyJoined => 203,
            ErrorCode::AlreadyJoined => 204,
            ErrorCode::NotJoined => 205,
            ErrorCode::InvalidSender => 206,
            ErrorCode::InvalidRoomId => 207,
            ErrorCode::Banned => 208,
            ErrorCode::ResumeFailed => 209,
            ErrorCode::PackNotFound => 210,
            ErrorCode::Forbidden => 300,
            ErrorCode::Conflict => 301,
            ErrorCode::StateFull => 302,
            ErrorCode::Unauthorized => 303,
            ErrorCode::InvalidToken => 304,
            ErrorCode::TokenExpired => 305,
            ErrorCode::WrongPassword => 306,
            ErrorCode::PasswordRequired => 307,
            ErrorCode::HashMismatch => 308,
            ErrorCode::MediaTypeRefused => 309,
            ErrorCode::NotStored => 310,
            ErrorCode::SlowConsumer => 400,
            ErrorCode::RateLimited => 401,
            ErrorCode::Blocked => 402,
            ErrorCode::TooManyConnections => 403,
            ErrorCode::Internal => 500,
            ErrorCode::ShuttingDown => 501,
            ErrorCode::Unknown(code) => code,
        }
    }

    pub const fn from_u16(code: u16) -> Self {
        match code {
            100 => ErrorCode::Malformed,
            101 => ErrorCode::UnknownMessage,
            102 => ErrorCode::FrameTooLarge,
            103 => ErrorCode::VersionMismatch,
            104 => ErrorCode::ProtocolViolation,
            105 => ErrorCode::LimitExceeded,
            106 => ErrorCode::HandshakeTimeout,
            200 => ErrorCode::RoomNotFound,
            201 => ErrorCode::RoomFull,
            202 => ErrorCode::TooManyRooms,
            203 => ErrorCode::TooManyJoined,
            204 => ErrorCode::AlreadyJoined,
            205 => ErrorCode::NotJoined,
            206 => ErrorCode::InvalidSender,
            207 => ErrorCode::InvalidRoomId,
            208 => ErrorCode::Banned,
            209 => ErrorCode::ResumeFailed,
            210 => ErrorCode::PackNotFound,
            300 => ErrorCode::Forbidden,
            301 => ErrorCode::Conflict,
            302 => ErrorCode::StateFull,
            303 => ErrorCode::Unauthorized,
            304 => ErrorCode::InvalidToken,
            305 => ErrorCode::TokenExpired,
            306 => ErrorCode::WrongPassword,
            307 => ErrorCode::PasswordRequired,
            308 => ErrorCode::HashMismatch,
            309 => ErrorCode::MediaTypeRefused,
            310 => ErrorCode::NotStored,
            400 => ErrorCode::SlowConsumer,
            401 => ErrorCode::RateLimited,
            402 => ErrorCode::Blocked,
            403 => ErrorCode::TooManyConnections,
            500 => ErrorCode::Internal,
            501 => ErrorCode::ShuttingDown,
            other => ErrorCode::Unknown(other),
        }
    }

    /// A short stable name, e.g. `"room_not_found"`, for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::ProtocolViolation => "protocol_violation",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::HandshakeTimeout => "handshake_timeout",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::TooManyJoined => "too_many_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::InvalidSender => "invalid_sender",
            ErrorCode::InvalidRoomId => "invalid_room_id",
            ErrorCode::Banned => "banned",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::PackNotFound => "pack_not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::StateFull => "state_full",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::PasswordRequired => "password_required",
            ErrorCode::HashMismatch => "hash_mismatch",
            ErrorCode::MediaTypeRefused => "media_type_refused",
            ErrorCode::NotStored => "not_stored",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Blocked => "blocked",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::Internal => "internal",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Unknown(_) => "unknown",
        }
    }

    /// Every code this build knows, for documentation and tests.
    pub const ALL: [ErrorCode; 35] = [
        ErrorCode::Malformed,
        ErrorCode::UnknownMessage,
        ErrorCode::FrameTooLarge,
        ErrorCode::VersionMismatch,
        ErrorCode::ProtocolViolation,
        ErrorCode::LimitExceeded,
        ErrorCode::HandshakeTimeout,
        ErrorCode::RoomNotFound,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRooms,
        ErrorCode::TooManyJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::NotJoined,
        ErrorCode::InvalidSender,
        ErrorCode::InvalidRoomId,
        ErrorCode::Banned,
        ErrorCode::ResumeFailed,
        ErrorCode::PackNotFound,
        ErrorCode::Forbidden,
        ErrorCode::Conflict,
        ErrorCode::StateFull,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::WrongPassword,
        ErrorCode::PasswordRequired,
        ErrorCode::HashMismatch,
        ErrorCode::MediaTypeRefused,
        ErrorCode::NotStored,
        ErrorCode::SlowConsumer,
        ErrorCode::RateLimited,
        ErrorCode::Blocked,
        ErrorCode::TooManyConnections,
        ErrorCode::Internal,
        ErrorCode::ShuttingDown,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ErrorCode::from_u16)
    }
}

/// Structured data that goes with some error codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorDetail {
    None,
    /// With [`ErrorCode::Conflict`]: the key's version now (0 when the key does not exist).
    Conflict {
        current_version: u64,
    },
    /// With [`ErrorCode::VersionMismatch`]: both sides' versions.
    Version {
        server: ProtocolVersion,
        client: ProtocolVersion,
    },
    /// With [`ErrorCode::LimitExceeded`], [`ErrorCode::FrameTooLarge`] and the like:
    /// the limit and the size or count that exceeded it.
    Limit {
        limit: u64,
        actual: u64,
    },
    /// With [`ErrorCode::RateLimited`], [`ErrorCode::Blocked`],
    /// [`ErrorCode::Banned`] and [`ErrorCode::TooManyConnections`]: how long to
    /// wait before trying again.
    RetryAfter {
        retry_after_ms: u64,
    },
    /// With [`ErrorCode::Conflict`] on a timeline request: the room sequence
    /// number of the timeline's last change.
    Sequence {
        current_seq: crate::types::Seq,
    },
}

/// An error the server reports to a client.
///
/// `request_id` names the request that caused it; it is `None` for errors not tied
/// to one request (a bad datagram, an undecodable frame, a disconnect reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub request_id: Option<RequestId>,
    pub code: ErrorCode,
    pub message: String,
    pub detail: ErrorDetail,
}

impl ErrorFrame {
    pub fn new(request_id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame {
            request_id,
            code,
            message: message.into(),
            detail: ErrorDetail::None,
        }
    }

    pub fn with_detail(mut self, detail: ErrorDetail) -> Self {
        self.detail = detail;
        self
    }
}

impl fmt::Display for ErrorFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(id) = self.request_id {
            write!(f, " (request {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorFrame {}
