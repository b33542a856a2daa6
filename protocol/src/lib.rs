//! The Chorus wire protocol: every byte that travels between a client and a server.
//!
//! This crate owns the message types (serde + postcard), the stream framing, the
//! protocol version, the limits a peer must respect, and the stable error codes.
//! It performs no I/O and depends on no runtime: transports hand it bytes and get
//! typed messages back (or a typed [`DecodeError`]), and the reverse.
//!
//! Three kinds of payload exist (PROTOCOL.md has the byte layout of each):
//! - [`ClientMessage`] / [`ServerMessage`]: the reliable, ordered control lane, one
//!   message per [frame](frame) on a stream.
//! - [`Datagram`]: the unreliable tick lane, one message per QUIC datagram.
//!
//! Decoding never panics, rejects trailing bytes, and checks every string length
//! and count against [`Limits`] (see [`codec`]).

pub mod codec;
pub mod error;
pub mod frame;
pub mod limits;
pub mod message;
pub mod policy;
pub mod types;

pub use codec::{
    DecodeError, decode_client_message, decode_client_message_unchecked, decode_datagram,
    decode_server_message, encode_datagram, encode_message, encode_pack_header, peek_hello_version,
    split_pack_message, validate_client_message,
};
pub use error::{ErrorCode, ErrorDetail, ErrorFrame};
pub use frame::{FrameDecoder, FrameError, encode_frame};
pub use limits::{LimitViolation, Limits};
pub use message::*;
pub use policy::{Action, PermissionPolicy, PermissionRule, Rate, RateLimits};
pub use types::*;

/// The protocol version this crate speaks.
///
/// Peers with a different `major` cannot talk; the server refuses them with
/// [`ErrorCode::VersionMismatch`] and an [`ErrorDetail::Version`] naming both.
/// Within one major version, messages never change shape: new abilities come as
/// new message tags or new enum variants, and the server never sends a client a
/// tag newer than the `minor` the client announced.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 2, minor: 0 };
