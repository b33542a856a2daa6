//! Message types for both lanes.
//!
//! The order of enum variants and struct fields *is* the wire format (postcard
//! encodes a variant as its index and a struct as its fields in order): never
//! reorder, insert or remove; append new variants at the end only, with a new
//! minor protocol version. PROTOCOL.md documents each byte; the golden vectors in
//! `protocol/golden/` pin them.

use crate::error::ErrorFrame;
use crate::limits::Limits;
use crate::policy::{PermissionPolicy, RateLimits};
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
    /// The room's password. When this join creates the room, sets it.
    Password(String),
    /// A signed join token (JWT) from the application's backend: admits the
    /// member to the room it names, with the role it names.
    Token(String),
    /// When this join creates the room: its permission rules (over the defaults).
    Policy(PermissionPolicy),
    /// When this join creates the room: a room template from the server's
    /// configuration (policy, caps, persistence). Unknown names are refused.
    Template(String),
}

/// Options of the client hello. A server refuses options it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloOption {
    /// The server's API key, when the server requires one.
    ApiKey(String),
}

/// First message of a client on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub version: ProtocolVersion,
    /// Free-form client identification, e.g. `"chorus-client-rust/0.1"`.
    pub client_name: String,
    /// Capability bits; none are defined in 2.0 and a server ignores unknown bits.
    pub capabilities: u64,
    pub options: Vec<HelloOption>,
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
    /// Remove `member` from the room; it cannot rejoin during the server's ban
    /// time. Answered by `Ack`; every member sees `MemberKicked`.
    Kick {
        request_id: RequestId,
        room: RoomSlot,
        member: MemberId,
        reason: String,
    },
    /// Give `member` a role. Answered by `Ack`; every member sees `RoleChanged`.
    SetRole {
        request_id: RequestId,
        room: RoomSlot,
        member: MemberId,
        role: Role,
    },
    /// Set (`Some`) or remove (`None`) the room's password. Answered by `Ack`.
    /// Members already in the room stay.
    SetPassword {
        request_id: RequestId,
        room: RoomSlot,
        password: Option<String>,
    },
    /// End the room for everyone. Answered by `Ack`; every member sees
    /// `RoomClosed` and is no longer a member.
    CloseRoom {
        request_id: RequestId,
        room: RoomSlot,
        reason: String,
    },
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
    /// The room's own permission rules (the defaults apply where none matches).
    pub policy: PermissionPolicy,
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
    /// This session's rate budgets.
    pub rate_limits: RateLimits,
    /// Additions of later minor versions; a client skips kinds it does not know.
    pub extensions: Vec<HelloExtension>,
}

/// A tagged, length-delimited addition to the server hello. None are defined
/// in 2.0; the list exists so that a 2.x server can tell a 2.0 client more
/// without breaking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloExtension {
    pub kind: u16,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
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
    /// `member`'s role changed, by `by`'s request.
    RoleChanged {
        room: RoomSlot,
        seq: Seq,
        member: MemberId,
        role: Role,
        by: MemberId,
    },
    /// `member` was removed by `by` and may not rejoin for `ban_ms`. The kicked
    /// member receives this too, and is no longer in the room after it.
    MemberKicked {
        room: RoomSlot,
        seq: Seq,
        member: MemberId,
        by: MemberId,
        reason: String,
        ban_ms: u64,
    },
    /// The room ended; nobody is a member any more.
    RoomClosed {
        room: RoomSlot,
        seq: Seq,
        by: MemberId,
        reason: String,
    },
    /// A request that has no other answer (`Kick`, `SetRole`, `SetPassword`,
    /// `CloseRoom`) was carried out; `seq` is the room event it caused, or the
    /// room's last sequence number when it caused none.
    Ack {
        request_id: RequestId,
        room: RoomSlot,
        seq: Seq,
    },
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
            ClientMessage::Kick { .. } => "kick",
            ClientMessage::SetRole { .. } => "set_role",
            ClientMessage::SetPassword { .. } => "set_password",
            ClientMessage::CloseRoom { .. } => "close_room",
        }
    }

    /// The request id, for messages that carry one.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            ClientMessage::Join { request_id, .. }
            | ClientMessage::Leave { request_id, .. }
            | ClientMessage::SetState { request_id, .. }
            | ClientMessage::DeleteState { request_id, .. }
            | ClientMessage::Command { request_id, .. }
            | ClientMessage::Kick { request_id, .. }
            | ClientMessage::SetRole { request_id, .. }
            | ClientMessage::SetPassword { request_id, .. }
            | ClientMessage::CloseRoom { request_id, .. } => Some(*request_id),
            ClientMessage::Hello(_) | ClientMessage::Ping { .. } => None,
        }
    }
}
