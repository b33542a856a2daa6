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
    FailoverMode, LeaveReason, MemberId, Presence, ProtocolVersion, RequestId, Role, RoomKind,
    RoomSlot, Seq, ServerTime,
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
    /// When this join creates the room: its kind (default `Normal`).
    Kind(RoomKind),
    /// When this join creates the room: what happens when its host goes away.
    Failover(FailoverMode),
}

/// A room a resuming client was in, and the last room sequence number it saw there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRoom {
    pub room: RoomSlot,
    pub last_seq: Seq,
}

/// Options of the client hello. A server refuses options it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloOption {
    /// The server's API key, when the server requires one.
    ApiKey(String),
    /// Resume an earlier session: its resume token, and per room the last
    /// sequence number seen. The server answers each room with `Resumed` (and
    /// the missed events) or `ResumeLost`.
    Resume {
        token: String,
        rooms: Vec<ResumeRoom>,
    },
}

/// A timeline control operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimelineOp {
    Play,
    Pause,
    /// Move to a position (microseconds from the timeline's start).
    Seek {
        position_us: u64,
    },
    /// Playback rate in parts per million (1 000 000 = normal speed; 0 is refused).
    SetRate {
        rate_ppm: u32,
    },
    /// Tempo in milli-beats per minute (120 000 = 120 BPM), or none.
    SetTempo {
        tempo_mbpm: Option<u32>,
    },
}

/// Who a broadcast goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    Everyone,
    /// Everyone but the sender.
    Others,
    /// Members with this role.
    Role(Role),
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
    /// Control a timeline (created on first use). Takes effect at `at` (a
    /// server time no more than the server's schedule horizon ahead), or now.
    /// With `expected_seq`, only if the timeline's last change has that room
    /// sequence number (0: never changed); else `Conflict` with the current one.
    /// Answered by `Ack`; every member sees `TimelineChanged`.
    Timeline {
        request_id: RequestId,
        room: RoomSlot,
        name: String,
        op: TimelineOp,
        at: Option<ServerTime>,
        expected_seq: Option<Seq>,
    },
    /// A message for one member only (signalling, private notes). Not
    /// sequenced, not stored. Answered by `Ack`.
    Direct {
        request_id: RequestId,
        room: RoomSlot,
        to: MemberId,
        kind: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A message for several members. Not sequenced, not stored. Answered by `Ack`.
    Broadcast {
        request_id: RequestId,
        room: RoomSlot,
        audience: Audience,
        kind: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Ask for a fresh snapshot of the room. Answered by `Snapshot`.
    RequestSnapshot {
        request_id: RequestId,
        room: RoomSlot,
    },
    /// Ask for STUN/TURN servers (with time-limited TURN credentials when the
    /// server has a TURN secret). Answered by `IceServers`.
    GetIceServers {
        request_id: RequestId,
        room: RoomSlot,
    },
    /// Name the member who takes over as host if the host goes away (or
    /// `None`). Needs GrantRoles. Answered by `Ack`.
    SetDelegate {
        request_id: RequestId,
        room: RoomSlot,
        member: Option<MemberId>,
    },
    /// Offer a pack. If the room already has it, the answer is `Ack`; else
    /// `PackUploadReady` with the offset to send from (non-zero when an
    /// interrupted upload resumes). Once all of it arrived and checked out,
    /// every member gets `PackAvailable`.
    PackUpload {
        request_id: RequestId,
        room: RoomSlot,
        #[serde(with = "serde_bytes")]
        hash: Vec<u8>,
        name: String,
        media_type: String,
        size: u64,
    },
    /// Ask for a pack's bytes from `offset`. The server sends them on a pack
    /// stream (WebTransport) or pack lane (WebSocket); errors come as `Error`.
    PackFetch {
        request_id: RequestId,
        room: RoomSlot,
        #[serde(with = "serde_bytes")]
        hash: Vec<u8>,
        offset: u64,
    },
}

/// One member as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: MemberId,
    pub role: Role,
    pub display: DisplayInfo,
    pub presence: Presence,
}

/// A timeline's state: position = `anchor_position_us` + (now − `anchor_time`)
/// × `rate_ppm` / 1 000 000 while playing, else `anchor_position_us`. For a
/// scheduled change, `anchor_time` is in the future: until then the previous
/// state applies (the client keeps it until that time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineState {
    pub name: String,
    pub playing: bool,
    pub rate_ppm: u32,
    pub anchor_time: ServerTime,
    pub anchor_position_us: u64,
    pub tempo_mbpm: Option<u32>,
    /// The room sequence number of the change that made this state.
    pub seq: Seq,
}

/// A pack as members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackInfo {
    /// SHA-256 of the content (32 bytes).
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
    pub name: String,
    pub media_type: String,
    pub size: u64,
    pub uploader: MemberId,
}

/// One chat message of a room's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatEntry {
    pub seq: Seq,
    pub author: MemberId,
    pub time: ServerTime,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A STUN or TURN server for WebRTC (the shape of `RTCIceServer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
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
    pub kind: RoomKind,
    pub failover: FailoverMode,
    /// Timelines, by name.
    pub timelines: Vec<TimelineState>,
    /// Packs available in the room, oldest first.
    pub packs: Vec<PackInfo>,
    /// The last chat messages (commands of kind `"chat"`), oldest first.
    pub chat: Vec<ChatEntry>,
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
    /// Presented in a later hello (`HelloOption::Resume`) to resume this
    /// session after a dropped connection; empty when resuming is off.
    pub resume_token: String,
    /// How long after a drop the session can be resumed.
    pub resume_window_ms: u64,
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
    /// A member's presence changed (reconnecting, back online, away).
    PresenceChanged {
        room: RoomSlot,
        seq: Seq,
        member: MemberId,
        presence: Presence,
    },
    /// A timeline changed (by a member, or by the server with `by` = 0 when
    /// failover pauses it).
    TimelineChanged {
        room: RoomSlot,
        seq: Seq,
        timeline: TimelineState,
        by: MemberId,
    },
    DirectMessage {
        room: RoomSlot,
        from: MemberId,
        kind: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    BroadcastMessage {
        room: RoomSlot,
        from: MemberId,
        kind: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    Snapshot {
        request_id: RequestId,
        snapshot: RoomSnapshot,
    },
    IceServers {
        request_id: RequestId,
        servers: Vec<IceServer>,
        /// When TURN credentials stop working (0 without TURN).
        expires: ServerTime,
    },
    /// The resumed session is back in `room` as `member`. With a snapshot,
    /// the gap was too old to replay: the snapshot replaces the client's
    /// replica. Without one, the missed events follow, in order, as the
    /// usual messages with their own sequence numbers.
    Resumed {
        room: RoomSlot,
        member: MemberId,
        snapshot: Option<RoomSnapshot>,
    },
    /// The resumed session is no longer in `room` (it ended, or the member was
    /// removed while away); `code` says why.
    ResumeLost {
        room: RoomSlot,
        code: crate::error::ErrorCode,
    },
    /// A pack is in the room.
    PackAvailable {
        room: RoomSlot,
        seq: Seq,
        pack: PackInfo,
    },
    /// Send the pack's bytes from `offset` (a resumed upload skips what the
    /// server already has).
    PackUploadReady {
        request_id: RequestId,
        #[serde(with = "serde_bytes")]
        hash: Vec<u8>,
        offset: u64,
    },
}

/// The header of a pack transfer: the first frame (varint length + body) of a
/// WebTransport unidirectional stream, whose remaining bytes are the pack's
/// content from `offset` to the stream's end; on WebSocket, the start of every
/// pack-lane message, followed by one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackStreamHeader {
    /// Client to server: content of the pack `hash` (announced with
    /// `PackUpload`) from `offset`.
    Upload {
        #[serde(with = "serde_bytes")]
        hash: Vec<u8>,
        offset: u64,
    },
    /// Server to client: content of the pack `hash` (asked for with
    /// `PackFetch` request `request_id`) from `offset`; `size` is the whole pack.
    Download {
        request_id: RequestId,
        #[serde(with = "serde_bytes")]
        hash: Vec<u8>,
        offset: u64,
        size: u64,
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
            ClientMessage::Timeline { .. } => "timeline",
            ClientMessage::Direct { .. } => "direct",
            ClientMessage::Broadcast { .. } => "broadcast",
            ClientMessage::RequestSnapshot { .. } => "request_snapshot",
            ClientMessage::GetIceServers { .. } => "get_ice_servers",
            ClientMessage::SetDelegate { .. } => "set_delegate",
            ClientMessage::PackUpload { .. } => "pack_upload",
            ClientMessage::PackFetch { .. } => "pack_fetch",
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
            | ClientMessage::CloseRoom { request_id, .. }
            | ClientMessage::Timeline { request_id, .. }
            | ClientMessage::Direct { request_id, .. }
            | ClientMessage::Broadcast { request_id, .. }
            | ClientMessage::RequestSnapshot { request_id, .. }
            | ClientMessage::GetIceServers { request_id, .. }
            | ClientMessage::SetDelegate { request_id, .. }
            | ClientMessage::PackUpload { request_id, .. }
            | ClientMessage::PackFetch { request_id, .. } => Some(*request_id),
            ClientMessage::Hello(_) | ClientMessage::Ping { .. } => None,
        }
    }
}
