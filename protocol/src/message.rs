//! Message types for both lanes.
//!
//! The order of enum variants and struct fields *is* the wire format (postcard
//! encodes a variant as its index and a struct as its fields in order): never
//! reorder, insert or remove; append new variants at the end only, with a new
//! minor protocol version. PROTOCOL.md documents each byte; the golden vectors in
//! `protocol/golden/` pin them.

use crate::error::ErrorFrame;
use crate::limits::Limits;
use crate::types::{
    LeaveReason, MemberId, ProtocolVersion, RequestId, Role, RoomSlot, Seq, ServerTime,
};
use serde::{Deserialize, Serialize};

/// How a member presents itself to the others.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DisplayInfo {
    /// Human-readable name; may be empty.
    pub name: String,
    /// Opaque application data (e.g. an avatar colour), relayed as-is.
    #[serde(with = "serde_bytes")]
    pub meta: Vec<u8>,
}

/// Options of a join request. A list, so later versions can add options without
/// changing the `Join` message; a server refuses options it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinOption {
    /// Create the room if it does not exist (the joiner becomes its host).
    CreateIfMissing,
    /// When this join creates the room: its member cap (never above the server's).
    MaxMembers(u32),
}

/// First message of a client on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub version: ProtocolVersion,
    /// Free-form client identification, e.g. `"chorus-client-rust/0.1"`.
    pub client_name: String,
    /// Capability bits; none are defined in 1.0 and a server ignores unknown bits.
    pub capabilities: u64,
}

/// Messages a client sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Must be the first message, exactly once.
    Hello(ClientHello),
    /// Join (and optionally create) a room. Answered by `Joined` or an error.
    Join {
        request_id: RequestId,
        room_id: String,
        display: DisplayInfo,
        options: Vec<JoinOption>,
    },
    /// Leave a joined room. Answered by `Left`.
    Leave {
        request_id: RequestId,
        room: RoomSlot,
    },
    /// Set a state key. With `if_version`, only when the key's version equals it
    /// (0: only when the key does not exist). Answered by `StateAck` or `Conflict`.
    SetState {
        request_id: RequestId,
        room: RoomSlot,
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        if_version: Option<u64>,
    },
    /// Delete a state key, with the same `if_version` rule as `SetState`.
    DeleteState {
        request_id: RequestId,
        room: RoomSlot,
        key: String,
        if_version: Option<u64>,
    },
    /// An application command, sequenced and broadcast to every member (the
    /// sender included). A repeated `idempotency_key` in the same room returns the
    /// first result again (`duplicate: true`) without a second broadcast.
    Command {
        request_id: RequestId,
        room: RoomSlot,
        kind: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        idempotency_key: Option<String>,
    },
    /// Clock sync and RTT probe; answered by `Pong` at once.
    Ping { client_time: u64 },
}

/// One member as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: MemberId,
    pub role: Role,
    pub display: DisplayInfo,
}

/// One key of a room's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    pub key: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The room's state version at this key's last write.
    pub version: u64,
    /// Who wrote it last.
    pub author: MemberId,
}

/// Everything a member needs to start following a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    pub room_id: String,
    /// The room's numeric slot, used in ticks.
    pub room: RoomSlot,
    /// The joining member's own id and role.
    pub you: MemberId,
    pub role: Role,
    /// All members, the joiner included, in join order.
    pub members: Vec<MemberInfo>,
    /// All state keys, sorted by key.
    pub state: Vec<StateEntry>,
    /// The version of the state map as a whole (the highest key version ever written).
    pub state_version: u64,
    /// The last room sequence number; the next event the member receives is after it.
    pub last_seq: Seq,
}

/// The server's answer to a valid `ClientHello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    pub version: ProtocolVersion,
    pub server_name: String,
    /// This session's id, for logs and support.
    pub session_id: u64,
    /// Server time when the hello was sent.
    pub server_time: ServerTime,
    /// Largest datagram this connection carries (0 on transports without datagrams).
    pub max_datagram_size: u32,
    pub limits: Limits,
}

/// Messages a server sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    Hello(ServerHello),
    Joined {
        request_id: RequestId,
        snapshot: RoomSnapshot,
    },
    Left {
        request_id: RequestId,
        room: RoomSlot,
    },
    MemberJoined {
        room: RoomSlot,
        seq: Seq,
        member: MemberInfo,
    },
    MemberLeft {
        room: RoomSlot,
        seq: Seq,
        member: MemberId,
        reason: LeaveReason,
    },
    /// A key was set (`value: Some`) or deleted (`value: None`).
    StateChanged {
        room: RoomSlot,
        seq: Seq,
        key: String,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        version: u64,
        author: MemberId,
    },
    /// The requester's own set or delete was applied (sent after its `StateChanged`).
    StateAck {
        request_id: RequestId,
        room: RoomSlot,
        version: u64,
        seq: Seq,
    },
    CommandEvent {
        room: RoomSlot,
        seq: Seq,
        author: MemberId,
        kind: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        idempotency_key: Option<String>,
    },
    /// The requester's command was sequenced (sent after its `CommandEvent`), or,
    /// with `duplicate`, had already been under that idempotency key.
    CommandAck {
        request_id: RequestId,
        room: RoomSlot,
        seq: Seq,
        duplicate: bool,
    },
    Pong {
        /// Echo of the ping's `client_time`.
        client_time: u64,
        /// Server time when the ping was read.
        server_receive_time: ServerTime,
        /// Server time when the pong was written.
        server_send_time: ServerTime,
    },
    Error(ErrorFrame),
}

/// A tick: a small, frequent, unreliable update (pose, cursor, scroll).
///
/// The same layout travels both ways. A client sets `sender` to its own member id
/// in that room; the server refuses any other value, then forwards the datagram's
/// bytes unchanged to the room's other members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick<'a> {
    pub room: RoomSlot,
    pub sender: MemberId,
    /// Per-sender sequence number; wraps at 2^32 (compare with wrapping arithmetic).
    pub seq: u32,
    #[serde(serialize_with = "serde_bytes::serialize")]
    pub payload: &'a [u8],
}

/// Messages on the unreliable lane, one per datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datagram<'a> {
    #[serde(borrow)]
    Tick(Tick<'a>),
}

/// Bytes a datagram spends on everything but the tick payload, at most:
/// tag (1) + room slot, sender, seq (5 each as varint u32) + payload length (3).
pub const TICK_MAX_OVERHEAD: usize = 1 + 5 + 5 + 5 + 3;

impl ClientMessage {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ClientMessage::Hello(_) => "hello",
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::SetState { .. } => "set_state",
            ClientMessage::DeleteState { .. } => "delete_state",
            ClientMessage::Command { .. } => "command",
            ClientMessage::Ping { .. } => "ping",
        }
    }

    /// The request id, for messages that carry one.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            ClientMessage::Join { request_id, .. }
            | ClientMessage::Leave { request_id, .. }
            | ClientMessage::SetState { request_id, .. }
            | ClientMessage::DeleteState { request_id, .. }
            | ClientMessage::Command { request_id, .. } => Some(*request_id),
            ClientMessage::Hello(_) | ClientMessage::Ping { .. } => None,
        }
    }
}
