//! Encoding and checked decoding of whole messages.
//!
//! A decode succeeds only if the bytes hold exactly one message of a known tag,
//! with nothing after it, and (for what a client sends) every string, payload and
//! count is within [`Limits`]. Each failure is a [`DecodeError`] that maps to the
//! [`ErrorCode`] the server answers with.

use crate::error::{ErrorCode, ErrorDetail};
use crate::frame::{FrameError, get_varint_u32};
use crate::limits::{LimitViolation, Limits};
use crate::message::{
    ClientMessage, Datagram, HelloOption, JoinOption, PackStreamHeader, ServerMessage,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Number of `ClientMessage` variants (tags `0..CLIENT_MESSAGE_TAGS`).
pub const CLIENT_MESSAGE_TAGS: u32 = 19;
/// Number of `ServerMessage` variants.
pub const SERVER_MESSAGE_TAGS: u32 = 25;
/// Number of `Datagram` variants.
pub const DATAGRAM_TAGS: u32 = 1;

/// Why bytes did not decode into a valid message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown message tag {tag}")]
    UnknownTag { tag: u32 },
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    #[error("{extra} unexpected bytes after the message")]
    TrailingBytes { extra: usize },
    #[error(transparent)]
    Limit(#[from] LimitViolation),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl DecodeError {
    /// The wire error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Empty | DecodeError::Malformed(_) | DecodeError::TrailingBytes { .. } => {
                ErrorCode::Malformed
            }
            DecodeError::UnknownTag { .. } => ErrorCode::UnknownMessage,
            DecodeError::Limit(_) => ErrorCode::LimitExceeded,
            DecodeError::Frame(FrameError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
            DecodeError::Frame(FrameError::BadLength) => ErrorCode::Malformed,
        }
    }

    /// Structured detail for the wire error.
    pub fn detail(&self) -> ErrorDetail {
        match self {
            DecodeError::Limit(v) => ErrorDetail::Limit {
                limit: v.limit,
                actual: v.actual,
            },
            DecodeError::Frame(FrameError::TooLarge { declared, max }) => ErrorDetail::Limit {
                limit: u64::from(*max),
                actual: *declared,
            },
            _ => ErrorDetail::None,
        }
    }
}

/// Encodes a message body (no length prefix): for datagrams, and for transports
/// that frame messages themselves.
pub fn encode_message<T: Serialize>(message: &T) -> Vec<u8> {
    match postcard::to_allocvec(message) {
        Ok(bytes) => bytes,
        Err(e) => unreachable!("postcard cannot fail to encode a protocol message: {e}"),
    }
}

/// Encodes a datagram.
pub fn encode_datagram(datagram: &Datagram<'_>) -> Vec<u8> {
    encode_message(datagram)
}

fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8], tags: u32) -> Result<T, DecodeError> {
    match get_varint_u32(bytes) {
        Ok(None) if bytes.is_empty() => return Err(DecodeError::Empty),
        Ok(Some((tag, _))) if tag >= tags => return Err(DecodeError::UnknownTag { tag }),
        Ok(_) => {}
        Err(e) => return Err(DecodeError::Frame(e)),
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}

/// Decodes one client message and checks it against `limits`.
pub fn decode_client_message(bytes: &[u8], limits: &Limits) -> Result<ClientMessage, DecodeError> {
    let msg = decode_client_message_unchecked(bytes)?;
    validate_client_message(&msg, limits)?;
    Ok(msg)
}

/// Decodes one client message without checking it against limits, for a caller
/// that wants the request id of a message over a limit. The caller must then
/// call [`validate_client_message`]. Allocation is still bounded by `bytes`.
pub fn decode_client_message_unchecked(bytes: &[u8]) -> Result<ClientMessage, DecodeError> {
    decode_exact(bytes, CLIENT_MESSAGE_TAGS)
}

/// The protocol version of a `Hello` body, read from its first bytes only
/// (tag 0, then `major` and `minor` as varints). A server uses it to answer a
/// client of another major version with VersionMismatch even when the rest of
/// that client's hello has another shape and does not decode.
pub fn peek_hello_version(bytes: &[u8]) -> Option<crate::types::ProtocolVersion> {
    let (&tag, rest) = bytes.split_first()?;
    if tag != 0 {
        return None;
    }
    let (version, _): (crate::types::ProtocolVersion, _) = postcard::take_from_bytes(rest).ok()?;
    Some(version)
}

/// Largest pack stream header body, in bytes.
pub const MAX_PACK_HEADER_BYTES: usize = 256;

/// Encodes a pack stream header as a frame (varint length, then the body):
/// the start of a pack stream, or of a pack-lane message on WebSocket.
pub fn encode_pack_header(header: &PackStreamHeader) -> Vec<u8> {
    crate::frame::encode_frame(header).to_vec()
}

/// Splits a pack-lane message (or the start of a pack stream) into its header
/// and the content bytes after it. The header must be a complete frame of at
/// most [`MAX_PACK_HEADER_BYTES`] holding exactly one header with a 32-byte hash.
pub fn split_pack_message(bytes: &[u8]) -> Result<(PackStreamHeader, &[u8]), DecodeError> {
    let Some((len, prefix)) = get_varint_u32(bytes)? else {
        return Err(DecodeError::Empty);
    };
    let len = len as usize;
    if len > MAX_PACK_HEADER_BYTES {
        return Err(DecodeError::Frame(FrameError::TooLarge {
            declared: len as u64,
            max: MAX_PACK_HEADER_BYTES as u32,
        }));
    }
    let body = bytes
        .get(prefix..prefix + len)
        .ok_or(DecodeError::Malformed(
            postcard::Error::DeserializeUnexpectedEnd,
        ))?;
    let header: PackStreamHeader = decode_exact(body, 2)?;
    let hash = match &header {
        PackStreamHeader::Upload { hash, .. } | PackStreamHeader::Download { hash, .. } => hash,
    };
    if hash.len() != 32 {
        return Err(DecodeError::Limit(LimitViolation {
            field: "pack hash",
            limit: 32,
            actual: hash.len() as u64,
        }));
    }
    Ok((header, &bytes[prefix + len..]))
}

/// Decodes one server message. Clients skip frames with tags they do not know
/// (they see [`DecodeError::UnknownTag`]) and carry on.
pub fn decode_server_message(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    decode_exact(bytes, SERVER_MESSAGE_TAGS)
}

/// Decodes one datagram, borrowing its payload from `bytes`, and checks the
/// payload against `limits`.
pub fn decode_datagram<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Datagram<'a>, DecodeError> {
    let datagram: Datagram<'a> = decode_exact(bytes, DATAGRAM_TAGS)?;
    let Datagram::Tick(tick) = &datagram;
    Limits::check(
        "tick payload",
        tick.payload.len(),
        limits.max_tick_payload_bytes,
    )?;
    Ok(datagram)
}

/// Checks every length and count of a client message against `limits`.
pub fn validate_client_message(msg: &ClientMessage, limits: &Limits) -> Result<(), LimitViolation> {
    match msg {
        ClientMessage::Hello(hello) => {
            Limits::check("client_name", hello.client_name.len(), limits.max_name_len)?;
            Limits::check(
                "hello options",
                hello.options.len(),
                limits.max_join_options,
            )?;
            for option in &hello.options {
                match option {
                    HelloOption::ApiKey(key) => {
                        Limits::check("api key", key.len(), limits.max_api_key_len)?
                    }
                    HelloOption::Resume { token, rooms } => {
                        Limits::check("resume token", token.len(), limits.max_token_len)?;
                        Limits::check("resume rooms", rooms.len(), limits.max_rooms_per_session)?;
                    }
                }
            }
            Ok(())
        }
        ClientMessage::Join {
            room_id,
            display,
            options,
            ..
        } => {
            Limits::check("room_id", room_id.len(), limits.max_room_id_len)?;
            Limits::check("display name", display.name.len(), limits.max_name_len)?;
            Limits::check(
                "display meta",
                display.meta.len(),
                limits.max_display_meta_bytes,
            )?;
            Limits::check("join options", options.len(), limits.max_join_options)?;
            for option in options {
                match option {
                    JoinOption::Password(p) => {
                        Limits::check("password", p.len(), limits.max_password_len)?
                    }
                    JoinOption::Token(t) => Limits::check("token", t.len(), limits.max_token_len)?,
                    JoinOption::Template(t) => {
                        Limits::check("template", t.len(), limits.max_room_id_len)?
                    }
                    JoinOption::Policy(policy) => {
                        Limits::check("policy rules", policy.rules.len(), limits.max_policy_rules)?;
                        for rule in &policy.rules {
                            Limits::check(
                                "policy scope",
                                rule.scope.len(),
                                limits.max_state_key_len,
                            )?;
                        }
                    }
                    JoinOption::CreateIfMissing
                    | JoinOption::MaxMembers(_)
                    | JoinOption::Kind(_)
                    | JoinOption::Failover(_) => {}
                }
            }
            Ok(())
        }
        ClientMessage::Kick { reason, .. } | ClientMessage::CloseRoom { reason, .. } => {
            Limits::check("reason", reason.len(), limits.max_reason_len)
        }
        ClientMessage::SetPassword { password, .. } => Limits::check(
            "password",
            password.as_ref().map_or(0, String::len),
            limits.max_password_len,
        ),
        ClientMessage::SetState { key, value, .. } => {
            Limits::check("state key", key.len(), limits.max_state_key_len)?;
            Limits::check("state value", value.len(), limits.max_state_value_bytes)
        }
        ClientMessage::DeleteState { key, .. } => {
            Limits::check("state key", key.len(), limits.max_state_key_len)
        }
        ClientMessage::Command {
            kind,
            payload,
            idempotency_key,
            ..
        } => {
            Limits::check("command kind", kind.len(), limits.max_command_kind_len)?;
            Limits::check(
                "command payload",
                payload.len(),
                limits.max_command_payload_bytes,
            )?;
            Limits::check(
                "idempotency key",
                idempotency_key.as_ref().map_or(0, String::len),
                limits.max_idempotency_key_len,
            )
        }
        ClientMessage::Timeline { name, .. } => {
            Limits::check("timeline name", name.len(), limits.max_timeline_name_len)
        }
        ClientMessage::Direct { kind, payload, .. }
        | ClientMessage::Broadcast { kind, payload, .. } => {
            Limits::check("message kind", kind.len(), limits.max_command_kind_len)?;
            Limits::check(
                "message payload",
                payload.len(),
                limits.max_direct_payload_bytes,
            )
        }
        ClientMessage::PackUpload {
            hash,
            name,
            media_type,
            ..
        } => {
            Limits::check("pack hash", hash.len(), 32)?;
            Limits::check("pack name", name.len(), limits.max_pack_name_len)?;
            Limits::check("media type", media_type.len(), limits.max_pack_name_len)
        }
        ClientMessage::PackFetch { hash, .. } => Limits::check("pack hash", hash.len(), 32),
        ClientMessage::Leave { .. }
        | ClientMessage::Ping { .. }
        | ClientMessage::SetRole { .. }
        | ClientMessage::RequestSnapshot { .. }
        | ClientMessage::GetIceServers { .. }
        | ClientMessage::SetDelegate { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{DisplayInfo, Tick};
    use crate::types::{MemberId, RoomSlot};

    fn join(room_id: &str) -> ClientMessage {
        ClientMessage::Join {
            request_id: 9,
            room_id: room_id.into(),
            display: DisplayInfo::default(),
            options: vec![],
        }
    }

    #[test]
    fn tag_counts_match_the_enums() {
        // The highest tag of each enum decodes; one past it is unknown.
        let last = encode_message(&ClientMessage::PackFetch {
            request_id: 1,
            room: RoomSlot(1),
            hash: vec![0; 32],
            offset: 0,
        });
        assert_eq!(last[0] as u32, CLIENT_MESSAGE_TAGS - 1);
        let last = encode_message(&ServerMessage::PackUploadReady {
            request_id: 1,
            hash: vec![0; 32],
            offset: 0,
        });
        assert_eq!(last[0] as u32, SERVER_MESSAGE_TAGS - 1);
        assert_eq!(
            decode_client_message(&[CLIENT_MESSAGE_TAGS as u8], &Limits::default()),
            Err(DecodeError::UnknownTag {
                tag: CLIENT_MESSAGE_TAGS
            })
        );
    }

    #[test]
    fn rejects_empty_trailing_and_truncated() {
        let limits = Limits::default();
        assert_eq!(decode_client_message(&[], &limits), Err(DecodeError::Empty));
        let mut bytes = encode_message(&join("lobby"));
        bytes.push(0);
        assert_eq!(
            decode_client_message(&bytes, &limits),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            decode_client_message(&bytes, &limits),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn every_prefix_of_every_message_decodes_or_errors_without_panic() {
        let limits = Limits::default();
        let bytes = encode_message(&ClientMessage::Command {
            request_id: 300,
            room: RoomSlot(5),
            kind: "chat".into(),
            payload: vec![1; 300],
            idempotency_key: Some("k".into()),
        });
        for end in 0..bytes.len() {
            assert!(decode_client_message(&bytes[..end], &limits).is_err());
        }
        assert!(decode_client_message(&bytes, &limits).is_ok());
    }

    #[test]
    fn huge_declared_lengths_fail_without_allocating() {
        // Join with a room id claiming 4 GiB: must fail as malformed, not abort.
        let bytes = [1u8, 9, 0xff, 0xff, 0xff, 0xff, 0x0f, b'a'];
        assert!(matches!(
            decode_client_message(&bytes, &Limits::default()),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn limits_are_inclusive() {
        let limits = Limits::default();
        let at = "r".repeat(limits.max_room_id_len as usize);
        assert!(decode_client_message(&encode_message(&join(&at)), &limits).is_ok());
        let over = "r".repeat(limits.max_room_id_len as usize + 1);
        let err = decode_client_message(&encode_message(&join(&over)), &limits)
            .expect_err("one byte over the limit");
        assert_eq!(err.code(), ErrorCode::LimitExceeded);
        assert_eq!(
            err.detail(),
            ErrorDetail::Limit {
                limit: 128,
                actual: 129
            }
        );
    }

    #[test]
    fn datagram_payload_limit_and_borrowing() {
        let limits = Limits::default();
        let payload = vec![7u8; limits.max_tick_payload_bytes as usize];
        let tick = Datagram::Tick(Tick {
            room: RoomSlot(3),
            sender: MemberId(2),
            seq: 99,
            payload: &payload,
        });
        let bytes = encode_datagram(&tick);
        assert_eq!(decode_datagram(&bytes, &limits), Ok(tick));
        let big = vec![7u8; payload.len() + 1];
        let bytes = encode_datagram(&Datagram::Tick(Tick {
            payload: &big,
            ..match tick {
                Datagram::Tick(t) => t,
            }
        }));
        assert_eq!(
            decode_datagram(&bytes, &limits).map_err(|e| e.code()),
            Err(ErrorCode::LimitExceeded)
        );
    }

    #[test]
    fn the_hello_version_is_readable_from_any_hello_shape() {
        let hello = encode_message(&ClientMessage::Hello(crate::ClientHello {
            version: crate::ProtocolVersion { major: 1, minor: 7 },
            client_name: "old".into(),
            capabilities: 0,
            options: vec![],
        }));
        // A 1.x hello had no options: cut them off, as an old client would send it.
        let old = &hello[..hello.len() - 1];
        assert!(decode_client_message(old, &Limits::default()).is_err());
        assert_eq!(
            peek_hello_version(old),
            Some(crate::ProtocolVersion { major: 1, minor: 7 })
        );
        assert_eq!(peek_hello_version(&[1, 2, 0]), None, "not a hello");
        assert_eq!(peek_hello_version(&[0]), None, "truncated");
    }

    #[test]
    fn pack_messages_split_into_header_and_content() {
        let header = PackStreamHeader::Upload {
            hash: vec![7; 32],
            offset: 1 << 20,
        };
        let mut message = encode_pack_header(&header);
        message.extend_from_slice(b"content");
        let (decoded, rest) = split_pack_message(&message).expect("splits");
        assert_eq!((decoded, rest), (header, &b"content"[..]));
        // Every truncation of the header fails cleanly.
        let header_len = message.len() - b"content".len();
        for end in 0..header_len {
            assert!(split_pack_message(&message[..end]).is_err());
        }
        // A short hash is refused.
        let short = encode_pack_header(&PackStreamHeader::Upload {
            hash: vec![1; 31],
            offset: 0,
        });
        assert!(split_pack_message(&short).is_err());
        // A huge declared header is refused before reading it.
        assert!(matches!(
            split_pack_message(&[0xff, 0xff, 0x03]),
            Err(DecodeError::Frame(FrameError::TooLarge { .. }))
        ));
    }

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), code);
        }
        assert_eq!(ErrorCode::from_u16(9999), ErrorCode::Unknown(9999));
    }
}
