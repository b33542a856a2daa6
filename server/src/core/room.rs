//! [`Room`]: the state machine of one room.

use super::SessionId;
use chorus_protocol::{
    Action, Audience, ChatEntry, DisplayInfo, ErrorCode, ErrorDetail, ErrorFrame, FailoverMode,
    LeaveReason, MemberId, MemberInfo, PackInfo, PermissionPolicy, Presence, RequestId, Role,
    RoomKind, RoomSlot, RoomSnapshot, Seq, ServerMessage, ServerTime, StateEntry, TimelineOp,
    TimelineState,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

/// Who is behind a session, as far as bans are concerned. Set by the shell
/// from the connection and a verified join token, never by the client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    pub ip: IpAddr,
    /// The `sub` claim of the join token this member joined with.
    pub subject: Option<String>,
}

/// What the shell established about a join before handing it to the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAccess {
    pub identity: ClientIdentity,
    /// The role a verified join token grants; `None` without a token.
    pub role: Option<Role>,
    /// Whether the join carried a password at all.
    pub password_given: bool,
    /// The [password generation](Room::password_generation) whose hash the
    /// shell verified the given password against (or set, when the join
    /// created the room with it). `None`: not verified.
    pub password_verified: Option<u64>,
    /// The joining session's resume key, kept with the member so its client
    /// can resume after a restart.
    pub resume_key: Option<ResumeKey>,
    /// When the join token runs out (the member is kept with it).
    pub token_expires: Option<ServerTime>,
}

/// A room password, as the room keeps it: an Argon2 hash string (PHC format),
/// never the password. Verification happens in the shell, off the room task.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashString(pub Arc<str>);

impl std::fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// Settings of one room, fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    pub max_members: u32,
    /// How long a room stays after its last member left, in microseconds.
    pub idle_ttl_us: u64,
    pub max_state_keys: u32,
    /// Sum of key and value bytes over the whole state.
    pub max_state_total_bytes: u64,
    /// Sequenced events kept for members resuming after a dropped connection
    /// (a member further behind gets a fresh snapshot instead).
    pub event_log_len: usize,
    /// The same log's bound in bytes of payload (state values, command payloads).
    pub event_log_bytes: usize,
    /// Idempotency keys remembered; the oldest is forgotten first.
    pub idempotency_keys: usize,
    /// Role of members after the first (who is host), when no token names one.
    pub default_role: Role,
    /// The room's own permission rules over the defaults.
    pub policy: PermissionPolicy,
    /// How long a kicked member is kept out, in microseconds.
    pub kick_ban_us: u64,
    /// Bans remembered at once; past it the one ending soonest is forgotten.
    pub max_bans: usize,
    /// A persistent room never expires when empty.
    pub persistent: bool,
    /// The password hash the room starts with.
    pub password: Option<PasswordHashString>,
    pub kind: RoomKind,
    pub failover: FailoverMode,
    /// How long a member whose connection dropped stays (as reconnecting)
    /// before it leaves; 0: members leave at once.
    pub resume_window_us: u64,
    /// A host not heard from for this long is away, and failover starts.
    pub host_timeout_us: u64,
    /// How long a host that went away can come back and take its role back.
    pub reclaim_window_us: u64,
    /// Commands of this kind are chat: the last ones are kept as history.
    pub chat_kind: String,
    /// Chat messages kept for joining and resuming members.
    pub chat_history_len: usize,
    /// Timelines per room.
    pub max_timelines: usize,
    /// How far ahead a timeline change may be scheduled.
    pub max_schedule_ahead_us: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_members: 32,
            idle_ttl_us: 2 * 60 * 60 * 1_000_000,
            max_state_keys: 1024,
            max_state_total_bytes: 900_000,
            event_log_len: 1024,
            event_log_bytes: 4 * 1024 * 1024,
            idempotency_keys: 4096,
            default_role: Role::Editor,
            policy: PermissionPolicy::default(),
            kick_ban_us: 5 * 60 * 1_000_000,
            max_bans: 1024,
            persistent: false,
            password: None,
            kind: RoomKind::Normal,
            failover: FailoverMode::NextMember,
            resume_window_us: 60 * 1_000_000,
            host_timeout_us: 15 * 1_000_000,
            reclaim_window_us: 60 * 1_000_000,
            chat_kind: "chat".into(),
            chat_history_len: 50,
            max_timelines: 16,
            max_schedule_ahead_us: 10 * 1_000_000,
        }
    }
}

/// Something a session asks of the room. The session is named by the shell,
/// never by the client, and every request is checked against the member that
/// session holds in this room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomInput {
    Join {
        session: SessionId,
        request_id: RequestId,
        display: DisplayInfo,
        access: JoinAccess,
    },
    /// `request_id` is `None` when the shell removes a member (disconnect, too slow).
    Leave {
        session: SessionId,
        request_id: Option<RequestId>,
        reason: LeaveReason,
    },
    SetState {
        session: SessionId,
        request_id: RequestId,
        key: String,
        value: Vec<u8>,
        if_version: Option<u64>,
    },
    DeleteState {
        session: SessionId,
        request_id: RequestId,
        key: String,
        if_version: Option<u64>,
    },
    Command {
        session: SessionId,
        request_id: RequestId,
        kind: String,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
    },
    Kick {
        session: SessionId,
        request_id: RequestId,
        member: MemberId,
        reason: String,
    },
    SetRole {
        session: SessionId,
        request_id: RequestId,
        member: MemberId,
        role: Role,
    },
    /// `hash` is already computed by the shell (`None` removes the password).
    SetPassword {
        session: SessionId,
        request_id: RequestId,
        hash: Option<PasswordHashString>,
    },
    CloseRoom {
        session: SessionId,
        request_id: RequestId,
        reason: String,
    },
    /// The session's connection dropped, but it may resume: its member stays,
    /// reconnecting, for the resume window.
    Detach {
        session: SessionId,
        /// How the member leaves if it does not come back in time.
        reason: LeaveReason,
    },
    /// A resumed session takes `member` back; it saw events up to `last_seq`.
    Reattach {
        session: SessionId,
        member: MemberId,
        /// `None`: the client kept nothing of the room; send a snapshot.
        last_seq: Option<Seq>,
        /// The resuming session's own resume key (it replaces the old one).
        resume_key: Option<ResumeKey>,
    },
    /// The session's client is active (sent something); hosts heard from
    /// are not away.
    Alive { session: SessionId },
    Timeline {
        session: SessionId,
        request_id: RequestId,
        name: String,
        op: TimelineOp,
        at: Option<ServerTime>,
        expected_seq: Option<Seq>,
    },
    Direct {
        session: SessionId,
        request_id: RequestId,
        to: MemberId,
        kind: String,
        payload: Vec<u8>,
    },
    Broadcast {
        session: SessionId,
        request_id: RequestId,
        audience: Audience,
        kind: String,
        payload: Vec<u8>,
    },
    Snapshot {
        session: SessionId,
        request_id: RequestId,
    },
    SetDelegate {
        session: SessionId,
        request_id: RequestId,
        member: Option<MemberId>,
    },
    /// A pack's content is in the store for this room (its upload completed,
    /// or the content was there already); `request_id` is the `PackUpload`
    /// request when the room should acknowledge it.
    PackAdded {
        session: SessionId,
        request_id: Option<RequestId>,
        pack: PackInfo,
    },
}

/// A security-relevant fact, for the audit log. The shell logs these with
/// their [`name`](AuditEvent::name) as a stable event name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// A join was refused for a reason that matters to security (ban,
    /// password, permission); capacity refusals are not audited.
    JoinRefused {
        session: SessionId,
        ip: IpAddr,
        code: ErrorCode,
    },
    Kicked {
        by: MemberId,
        member: MemberId,
        ip: IpAddr,
        subject: Option<String>,
        ban_us: u64,
    },
    RoleChanged {
        by: MemberId,
        member: MemberId,
        from: Role,
        to: Role,
    },
    PasswordChanged {
        by: MemberId,
        set: bool,
    },
    RoomClosed {
        by: MemberId,
    },
    /// A request was refused by the room's permission policy.
    Forbidden {
        member: MemberId,
        action: Action,
    },
}

impl AuditEvent {
    /// The stable event name, e.g. `"join_refused"`.
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::JoinRefused { .. } => "join_refused",
            AuditEvent::Kicked { .. } => "member_kicked",
            AuditEvent::RoleChanged { .. } => "role_changed",
            AuditEvent::PasswordChanged { .. } => "password_changed",
            AuditEvent::RoomClosed { .. } => "room_closed",
            AuditEvent::Forbidden { .. } => "permission_denied",
        }
    }
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Session(SessionId),
    /// Every member, in the order the room lists them.
    Everyone,
    EveryoneExcept(SessionId),
    /// These sessions (members), in this order.
    Sessions(Vec<SessionId>),
}

/// Something the room wants done.
// `Send` (a whole message) dwarfs the other variants, but it is nearly every
// output, and the queue is drained after each input: boxing it would add an
// allocation per message to save a little transient memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomOutput {
    /// Deliver on the reliable lane.
    Send {
        to: Recipient,
        message: ServerMessage,
    },
    /// A session became a member: start routing to it. Comes before any `Send` to it.
    MemberAdded {
        session: SessionId,
        member: MemberId,
    },
    /// A session stopped being a member: stop routing to it. Comes after the last `Send` to it.
    MemberRemoved {
        session: SessionId,
        member: MemberId,
    },
    /// The room has been empty for its idle TTL and is gone; the shell drops it.
    Expired,
    /// A host closed the room; every member has been removed. The shell drops it.
    Closed,
    /// A member's role changed: republish the tick table (tick permission may differ).
    RoleChanged { member: MemberId },
    /// The room's password changed; the shell publishes the new hash so joins
    /// verify against it.
    PasswordChanged {
        hash: Option<PasswordHashString>,
        generation: u64,
    },
    /// Something for the audit log.
    Audit(AuditEvent),
    /// The server acted on a lost host (for metrics; the events that tell
    /// the members come as `Send`s).
    Failover(Failover),
}

/// What the server did about a room's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// The host went silent: a substitute hosts now.
    HostAway,
    /// The room had no host left (the host left): a substitute hosts now.
    HostLeft,
    /// The host went silent and the room's mode pauses the timelines instead.
    Paused,
    /// The away host came back within the reclaim window and hosts again.
    Reclaimed,
}

/// One row of the tick fan-out table the shell publishes for the tick lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutEntry {
    pub session: SessionId,
    pub member: MemberId,
    pub role: Role,
    /// Whether this member's role may send ticks.
    pub may_send_ticks: bool,
}

/// Figures for `/stats` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStats {
    pub members: usize,
    pub state_keys: usize,
    pub state_bytes: u64,
    pub last_seq: Seq,
    pub created_at: ServerTime,
    pub last_activity: ServerTime,
}

#[derive(Debug)]
struct Member {
    /// The session attached now, or the last one while reconnecting.
    session: SessionId,
    role: Role,
    display: DisplayInfo,
    identity: ClientIdentity,
    presence: Presence,
    /// When the member's connection dropped (presence `Reconnecting`), and
    /// how it leaves if the resume window runs out.
    detached_at: Option<ServerTime>,
    detach_reason: LeaveReason,
    /// The last time the member's client was heard from.
    last_heard: ServerTime,
    /// Set once the member's silence was acted on (host away, failover);
    /// cleared when it is heard again.
    silent: bool,
    resume_key: Option<ResumeKey>,
    token_expires: Option<ServerTime>,
}

/// A host whose role passed to `substitute` while it was away: it gets the
/// role back if it returns before `deadline`.
#[derive(Debug, Clone, Copy)]
struct Reclaim {
    host: MemberId,
    substitute: MemberId,
    substitute_role: Role,
    deadline: ServerTime,
}

/// A sequenced event kept for resuming members.
#[derive(Debug)]
struct LoggedEvent {
    seq: Seq,
    message: ServerMessage,
    bytes: usize,
}

/// Whom a ban keeps out: the token subject when the kicked member had one,
/// else its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BanKey {
    Subject(String),
    Ip(IpAddr),
}

impl BanKey {
    fn of(identity: &ClientIdentity) -> BanKey {
        match &identity.subject {
            Some(subject) => BanKey::Subject(subject.clone()),
            None => BanKey::Ip(identity.ip),
        }
    }
}

#[derive(Debug)]
struct StateValue {
    value: Vec<u8>,
    version: u64,
    author: MemberId,
}

#[derive(Debug, Clone, Copy)]
struct CommandResult {
    seq: Seq,
}

/// The state machine of one room. See the [module docs](super).
#[derive(Debug)]
pub struct Room {
    id: String,
    slot: RoomSlot,
    config: RoomConfig,
    /// Members in join order (ids are assigned increasingly).
    members: BTreeMap<MemberId, Member>,
    by_session: HashMap<SessionId, MemberId>,
    next_member: u32,
    state: BTreeMap<String, StateValue>,
    state_version: u64,
    state_bytes: u64,
    last_seq: Seq,
    events: VecDeque<LoggedEvent>,
    event_bytes: usize,
    chat: VecDeque<ChatEntry>,
    timelines: BTreeMap<String, TimelineState>,
    packs: Vec<PackInfo>,
    delegate: Option<MemberId>,
    reclaim: Option<Reclaim>,
    idempotency: HashMap<String, CommandResult>,
    idempotency_order: VecDeque<String>,
    created_at: ServerTime,
    last_activity: ServerTime,
    /// Set while the room has no members.
    empty_since: Option<ServerTime>,
    expired: bool,
    closed: bool,
    password: Option<PasswordHashString>,
    /// Bumped on every password change, so a join verified against an older
    /// hash is refused.
    password_generation: u64,
    /// Kicked identities and when their ban ends.
    bans: HashMap<BanKey, ServerTime>,
    /// What was handed out to be kept, when changes are tracked.
    journal: Option<persist::Journal>,
    outputs: VecDeque<RoomOutput>,
}

/// Checks a room id: 1 or more characters, none of them control characters or
/// whitespace other than a plain space, and no leading or trailing space.
pub fn validate_room_id(room_id: &str) -> Result<(), &'static str> {
    if room_id.is_empty() {
        return Err("room id is empty");
    }
    if room_id.starts_with(' ') || room_id.ends_with(' ') {
        return Err("room id has leading or trailing spaces");
    }
    if room_id
        .chars()
        .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
    {
        return Err("room id contains control or whitespace characters");
    }
    Ok(())
}

impl Room {
    /// A new, empty room. It expires after `config.idle_ttl_us` unless someone joins.
    pub fn new(id: String, slot: RoomSlot, config: RoomConfig, now: ServerTime) -> Self {
        let password = config.password.clone();
        Room {
            password,
            password_generation: 1,
            bans: HashMap::new(),
            closed: false,
            id,
            slot,
            config,
            members: BTreeMap::new(),
            by_session: HashMap::new(),
            next_member: 1,
            state: BTreeMap::new(),
            state_version: 0,
            state_bytes: 0,
            last_seq: Seq(0),
            events: VecDeque::new(),
            event_bytes: 0,
            chat: VecDeque::new(),
            timelines: BTreeMap::new(),
            packs: Vec::new(),
            delegate: None,
            reclaim: None,
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
            created_at: now,
            last_activity: now,
            empty_since: Some(now),
            expired: false,
            journal: None,
            outputs: VecDeque::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn slot(&self) -> RoomSlot {
        self.slot
    }

    pub fn is_expired(&self) -> bool {
        self.expired
    }

    /// Whether the room has ended, by expiry or by a host closing it.
    pub fn is_ended(&self) -> bool {
        self.expired || self.closed
    }

    /// The current password hash, if the room has a password.
    pub fn password(&self) -> Option<&PasswordHashString> {
        self.password.as_ref()
    }

    /// Starts at 1; bumped by every password change.
    pub fn password_generation(&self) -> u64 {
        self.password_generation
    }

    pub fn policy(&self) -> &PermissionPolicy {
        &self.config.policy
    }

    fn allows(&self, role: Role, action: Action, target: &str) -> bool {
        self.config.policy.allows(role, action, target)
    }

    pub fn stats(&self) -> RoomStats {
        RoomStats {
            members: self.members.len(),
            state_keys: self.state.len(),
            state_bytes: self.state_bytes,
            last_seq: self.last_seq,
            created_at: self.created_at,
            last_activity: self.last_activity,
        }
    }

    pub fn kind(&self) -> RoomKind {
        self.config.kind
    }

    /// The tick fan-out table: every connected member with its session and
    /// tick permission (reconnecting members get no ticks).
    pub fn fanout(&self) -> Vec<FanoutEntry> {
        self.members
            .iter()
            .filter(|(_, m)| m.presence != Presence::Reconnecting)
            .map(|(id, m)| FanoutEntry {
                session: m.session,
                member: *id,
                role: m.role,
                may_send_ticks: self.allows(m.role, Action::SendTicks, ""),
            })
            .collect()
    }

    /// The next queued output, in the order the room produced them.
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called:
    /// the earliest of idle expiry, a reconnecting member's resume window, a
    /// host's heartbeat deadline and a reclaim window.
    pub fn poll_timeout(&self) -> Option<ServerTime> {
        if self.is_ended() {
            return None;
        }
        let idle = match (self.config.persistent, self.empty_since) {
            (false, Some(since)) => Some(since.saturating_add_micros(self.config.idle_ttl_us)),
            _ => None,
        };
        [idle, self.presence_deadline()].into_iter().flatten().min()
    }

    /// Lets time pass: resume windows run out, silent hosts go away, and an
    /// empty room past its idle TTL expires.
    pub fn handle_timeout(&mut self, now: ServerTime) {
        if self.is_ended() {
            return;
        }
        self.presence_timeouts(now);
        if !self.config.persistent
            && let Some(since) = self.empty_since
            && now >= since.saturating_add_micros(self.config.idle_ttl_us)
        {
            self.expired = true;
            self.outputs.push_back(RoomOutput::Expired);
        }
    }

    /// Applies one input at time `now`.
    pub fn handle(&mut self, now: ServerTime, input: RoomInput) {
        if self.is_ended() {
            // The shell stops feeding an ended room; be safe if it does not.
            if let Some((session, request_id)) = input_origin(&input) {
                self.error(
                    session,
                    ErrorFrame::new(request_id, ErrorCode::Internal, "room has closed; retry"),
                );
            }
            return;
        }
        self.last_activity = now;
        if let Some(session) = input_session(&input) {
            self.heard_from(now, session);
        }
        match input {
            RoomInput::Join {
                session,
                request_id,
                display,
                access,
            } => self.join(now, session, request_id, display, access),
            RoomInput::Leave {
                session,
                request_id,
                reason,
            } => self.leave(now, session, request_id, reason),
            RoomInput::SetState {
                session,
                request_id,
                key,
                value,
                if_version,
            } => self.write_state(session, request_id, key, Some(value), if_version),
            RoomInput::DeleteState {
                session,
                request_id,
                key,
                if_version,
            } => self.write_state(session, request_id, key, None, if_version),
            RoomInput::Command {
                session,
                request_id,
                kind,
                payload,
                idempotency_key,
            } => self.command(now, session, request_id, kind, payload, idempotency_key),
            RoomInput::Kick {
                session,
                request_id,
                member,
                reason,
            } => self.kick(now, session, request_id, member, reason),
            RoomInput::SetRole {
                session,
                request_id,
                member,
                role,
            } => self.set_role(session, request_id, member, role),
            RoomInput::SetPassword {
                session,
                request_id,
                hash,
            } => self.set_password(session, request_id, hash),
            RoomInput::CloseRoom {
                session,
                request_id,
                reason,
            } => self.close(session, request_id, reason),
            RoomInput::Detach { session, reason } => self.detach(now, session, reason),
            RoomInput::Reattach {
                session,
                member,
                last_seq,
                resume_key,
            } => self.reattach(now, session, member, last_seq, resume_key),
            // Being heard from is all it does, and that happened above.
            RoomInput::Alive { .. } => {}
            RoomInput::Timeline {
                session,
                request_id,
                name,
                op,
                at,
                expected_seq,
            } => self.timeline(now, session, request_id, name, op, at, expected_seq),
            RoomInput::Direct {
                session,
                request_id,
                to,
                kind,
                payload,
            } => self.direct(session, request_id, to, kind, payload),
            RoomInput::Broadcast {
                session,
                request_id,
                audience,
                kind,
                payload,
            } => self.broadcast(session, request_id, audience, kind, payload),
            RoomInput::Snapshot {
                session,
                request_id,
            } => self.send_snapshot(session, request_id),
            RoomInput::SetDelegate {
                session,
                request_id,
                member,
            } => self.set_delegate(session, request_id, member),
            RoomInput::PackAdded {
                session,
                request_id,
                pack,
            } => self.pack_added(session, request_id, pack),
        }
    }

    /// Sends a sequenced room event and keeps it for resuming members.
    fn event(&mut self, to: Recipient, seq: Seq, message: ServerMessage) {
        self.log_event(seq, &message);
        self.send(to, message);
    }

    fn log_event(&mut self, seq: Seq, message: &ServerMessage) {
        if self.config.kind == RoomKind::Relay || self.config.event_log_len == 0 {
            return;
        }
        let bytes = event_payload_bytes(message);
        self.events.push_back(LoggedEvent {
            seq,
            message: message.clone(),
            bytes,
        });
        self.event_bytes += bytes;
        while self.events.len() > self.config.event_log_len
            || (self.event_bytes > self.config.event_log_bytes && self.events.len() > 1)
        {
            if let Some(old) = self.events.pop_front() {
                self.event_bytes -= old.bytes;
            }
        }
    }

    fn send(&mut self, to: Recipient, message: ServerMessage) {
        self.outputs.push_back(RoomOutput::Send { to, message });
    }

    fn error(&mut self, session: SessionId, error: ErrorFrame) {
        self.send(Recipient::Session(session), ServerMessage::Error(error));
    }

    fn next_seq(&mut self) -> Seq {
        self.last_seq = self.last_seq.next();
        self.last_seq
    }

    fn join(
        &mut self,
        now: ServerTime,
        session: SessionId,
        request_id: RequestId,
        display: DisplayInfo,
        access: JoinAccess,
    ) {
        if self.by_session.contains_key(&session) {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::AlreadyJoined,
                    format!("already a member of room {}", self.id),
                ),
            );
        }
        if let Some(until) = self.banned_until(now, &access.identity) {
            self.audit(AuditEvent::JoinRefused {
                session,
                ip: access.identity.ip,
                code: ErrorCode::Banned,
            });
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::Banned,
                    format!(
                        "you were removed from room {}; the ban has not ended",
                        self.id
                    ),
                )
                .with_detail(ErrorDetail::RetryAfter {
                    retry_after_ms: until.saturating_since(now).div_ceil(1000),
                }),
            );
        }
        if self.password.is_some() {
            let refusal = if !access.password_given {
                Some((ErrorCode::PasswordRequired, "room {} needs a password"))
            } else if access.password_verified != Some(self.password_generation) {
                Some((ErrorCode::WrongPassword, "wrong password for room {}"))
            } else {
                None
            };
            if let Some((code, text)) = refusal {
                self.audit(AuditEvent::JoinRefused {
                    session,
                    ip: access.identity.ip,
                    code,
                });
                let message = text.replace("{}", &self.id);
                return self.error(session, ErrorFrame::new(Some(request_id), code, message));
            }
        }
        if self.members.len() as u64 >= u64::from(self.config.max_members) {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::RoomFull,
                    format!("room {} is full", self.id),
                )
                .with_detail(ErrorDetail::Limit {
                    limit: u64::from(self.config.max_members),
                    actual: self.members.len() as u64 + 1,
                }),
            );
        }
        let Some(next) = self.next_member.checked_add(1) else {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::RoomFull,
                    "room has used every member id; it must be recreated",
                ),
            );
        };
        let id = MemberId(self.next_member);
        self.next_member = next;
        // A token's role is the application's decision. Without one, whoever
        // finds the room empty hosts it: nobody else is there to lead.
        let role = match access.role {
            Some(role) => role,
            None if self.members.is_empty() => Role::Host,
            None => self.config.default_role,
        };
        self.members.insert(
            id,
            Member {
                session,
                role,
                display: display.clone(),
                identity: access.identity,
                presence: Presence::Online,
                detached_at: None,
                detach_reason: LeaveReason::Disconnected,
                last_heard: now,
                silent: false,
                resume_key: access.resume_key,
                token_expires: access.token_expires,
            },
        );
        self.by_session.insert(session, id);
        self.empty_since = None;
        let seq = self.next_seq();
        self.outputs.push_back(RoomOutput::MemberAdded {
            session,
            member: id,
        });
        let snapshot = self.snapshot(id, role);
        self.send(
            Recipient::Session(session),
            ServerMessage::Joined {
                request_id,
                snapshot,
            },
        );
        self.event(
            Recipient::EveryoneExcept(session),
            seq,
            ServerMessage::MemberJoined {
                room: self.slot,
                seq,
                member: MemberInfo {
                    id,
                    role,
                    display,
                    presence: Presence::Online,
                },
            },
        );
    }

    fn snapshot(&self, you: MemberId, role: Role) -> RoomSnapshot {
        RoomSnapshot {
            room_id: self.id.clone(),
            room: self.slot,
            you,
            role,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberInfo {
                    id: *id,
                    role: m.role,
                    display: m.display.clone(),
                    presence: m.presence,
                })
                .collect(),
            state: self
                .state
                .iter()
                .map(|(key, v)| StateEntry {
                    key: key.clone(),
                    value: v.value.clone(),
                    version: v.version,
                    author: v.author,
                })
                .collect(),
            state_version: self.state_version,
            last_seq: self.last_seq,
            policy: self.config.policy.clone(),
            kind: self.config.kind,
            failover: self.config.failover,
            timelines: self.timelines.values().cloned().collect(),
            packs: self.packs.clone(),
            chat: self.chat.iter().cloned().collect(),
        }
    }

    fn leave(
        &mut self,
        now: ServerTime,
        session: SessionId,
        request_id: Option<RequestId>,
        reason: LeaveReason,
    ) {
        let Some(member) = self.by_session.get(&session).copied() else {
            if let Some(request_id) = request_id {
                self.error(
                    session,
                    ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::NotJoined,
                        format!("not a member of room {}", self.id),
                    ),
                );
            }
            return;
        };
        if let Some(request_id) = request_id {
            self.send(
                Recipient::Session(session),
                ServerMessage::Left {
                    request_id,
                    room: self.slot,
                },
            );
        }
        self.remove_member(now, member, reason);
    }

    /// Removes a member (attached or reconnecting) and tells the others.
    fn remove_member(&mut self, now: ServerTime, member: MemberId, reason: LeaveReason) {
        let Some(removed) = self.members.remove(&member) else {
            return;
        };
        if self.by_session.get(&removed.session) == Some(&member) {
            self.by_session.remove(&removed.session);
            self.outputs.push_back(RoomOutput::MemberRemoved {
                session: removed.session,
                member,
            });
        }
        let seq = self.next_seq();
        self.event(
            Recipient::Everyone,
            seq,
            ServerMessage::MemberLeft {
                room: self.slot,
                seq,
                member,
                reason,
            },
        );
        self.forget_member(now, member);
    }

    /// After `member` is gone: clear references to it, promote a new host if
    /// the room has none left (by its failover mode), and start the idle clock.
    fn forget_member(&mut self, now: ServerTime, member: MemberId) {
        if self.delegate == Some(member) {
            self.delegate = None;
        }
        if self
            .reclaim
            .is_some_and(|r| r.host == member || r.substitute == member)
        {
            self.reclaim = None;
        }
        if self.members.is_empty() {
            self.empty_since = Some(now);
        } else if !self.members.values().any(|m| m.role == Role::Host) {
            self.promote_substitute(now, None);
        }
    }

    /// The member a session holds here, with its role, or an error to that session.
    fn member_of(&mut self, session: SessionId, request_id: RequestId) -> Option<(MemberId, Role)> {
        match self.by_session.get(&session) {
            Some(id) => self.members.get(id).map(|m| (*id, m.role)),
            None => {
                self.error(
                    session,
                    ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::NotJoined,
                        format!("not a member of room {}", self.id),
                    ),
                );
                None
            }
        }
    }

    /// Who is asking, if they may: the member behind `session`, when it may
    /// do `action` on its target (a state key or command kind; "" for the
    /// others). `stored` names what the request needs a room to keep, so a
    /// relay room refuses it. Otherwise the refusal (NotJoined, NotStored or
    /// Forbidden, in that order) is sent to the session and `None` returned.
    fn authorize(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        (action, target): (Action, &str),
        stored: Option<&str>,
        what: impl FnOnce() -> String,
    ) -> Option<(MemberId, Role)> {
        let (member, role) = self.member_of(session, request_id)?;
        if let Some(noun) = stored
            && self.refuse_in_relay_room(session, request_id, noun)
        {
            return None;
        }
        if !self.allows(role, action, target) {
            let what = what();
            self.forbidden(session, request_id, (member, role), action, &what);
            return None;
        }
        Some((member, role))
    }

    /// Refuses a request the policy does not allow, and audits it.
    fn forbidden(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        (member, role): (MemberId, Role),
        action: Action,
        what: &str,
    ) {
        self.audit(AuditEvent::Forbidden { member, action });
        self.error(
            session,
            ErrorFrame::new(
                Some(request_id),
                ErrorCode::Forbidden,
                format!("role {role} may not {what} in room {}", self.id),
            ),
        );
    }

    /// In a relay room, refuses a request for something only stored rooms
    /// have (returns true when it did).
    fn refuse_in_relay_room(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        what: &str,
    ) -> bool {
        if self.config.kind != RoomKind::Relay {
            return false;
        }
        self.error(
            session,
            ErrorFrame::new(
                Some(request_id),
                ErrorCode::NotStored,
                format!("room {} is a relay room: it keeps no {what}", self.id),
            ),
        );
        true
    }

    fn audit(&mut self, event: AuditEvent) {
        self.outputs.push_back(RoomOutput::Audit(event));
    }

    /// When the ban on `identity` ends, if one is in force. Forgets ended bans.
    fn banned_until(&mut self, now: ServerTime, identity: &ClientIdentity) -> Option<ServerTime> {
        self.bans.retain(|_, until| *until > now);
        let by_subject = identity
            .subject
            .as_ref()
            .and_then(|s| self.bans.get(&BanKey::Subject(s.clone())));
        let by_ip = self.bans.get(&BanKey::Ip(identity.ip));
        by_subject.into_iter().chain(by_ip).max().copied()
    }

    /// Set (`value: Some`) or delete (`value: None`) a key.
    fn write_state(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        key: String,
        value: Option<Vec<u8>>,
        if_version: Option<u64>,
    ) {
        let Some((author, _)) = self.authorize(
            session,
            request_id,
            (Action::SetState, &key),
            Some("state"),
            || format!("change state key {key:?}"),
        ) else {
            return;
        };
        let current = self.state.get(&key);
        let current_version = current.map_or(0, |v| v.version);
        if let Some(expected) = if_version
            && expected != current_version
        {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::Conflict,
                    format!("key {key:?} is at version {current_version}, not {expected}"),
                )
                .with_detail(ErrorDetail::Conflict { current_version }),
            );
        }
        let old_bytes = current.map_or(0, |v| (key.len() + v.value.len()) as u64);
        match &value {
            Some(new_value) => {
                let new_bytes = (key.len() + new_value.len()) as u64;
                let total = self.state_bytes - old_bytes + new_bytes;
                if total > self.config.max_state_total_bytes {
                    return self.error(
                        session,
                        ErrorFrame::new(
                            Some(request_id),
                            ErrorCode::StateFull,
                            format!("room state would be {total} bytes"),
                        )
                        .with_detail(ErrorDetail::Limit {
                            limit: self.config.max_state_total_bytes,
                            actual: total,
                        }),
                    );
                }
                if current.is_none()
                    && self.state.len() as u64 >= u64::from(self.config.max_state_keys)
                {
                    return self.error(
                        session,
                        ErrorFrame::new(
                            Some(request_id),
                            ErrorCode::StateFull,
                            "room state has its maximum number of keys",
                        )
                        .with_detail(ErrorDetail::Limit {
                            limit: u64::from(self.config.max_state_keys),
                            actual: self.state.len() as u64 + 1,
                        }),
                    );
                }
                self.state_bytes = total;
            }
            None if current.is_none() => {
                // Deleting an absent key changes nothing: acknowledge, broadcast nothing.
                let seq = self.last_seq;
                return self.send(
                    Recipient::Session(session),
                    ServerMessage::StateAck {
                        request_id,
                        room: self.slot,
                        version: 0,
                        seq,
                    },
                );
            }
            None => self.state_bytes -= old_bytes,
        }
        self.state_version += 1;
        let version = self.state_version;
        if let Some(journal) = &mut self.journal {
            journal.state_changed(&key);
        }
        match &value {
            Some(v) => {
                self.state.insert(
                    key.clone(),
                    StateValue {
                        value: v.clone(),
                        version,
                        author,
                    },
                );
            }
            None => {
                self.state.remove(&key);
            }
        }
        let seq = self.next_seq();
        self.event(
            Recipient::Everyone,
            seq,
            ServerMessage::StateChanged {
                room: self.slot,
                seq,
                key,
                value,
                version,
                author,
            },
        );
        self.send(
            Recipient::Session(session),
            ServerMessage::StateAck {
                request_id,
                room: self.slot,
                version,
                seq,
            },
        );
    }

    fn command(
        &mut self,
        now: ServerTime,
        session: SessionId,
        request_id: RequestId,
        kind: String,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
    ) {
        let Some((author, _)) = self.authorize(
            session,
            request_id,
            (Action::SendCommands, &kind),
            Some("commands"),
            || format!("send {kind:?} commands"),
        ) else {
            return;
        };
        if let Some(key) = &idempotency_key
            && let Some(first) = self.idempotency.get(key).copied()
        {
            return self.send(
                Recipient::Session(session),
                ServerMessage::CommandAck {
                    request_id,
                    room: self.slot,
                    seq: first.seq,
                    duplicate: true,
                },
            );
        }
        let seq = self.next_seq();
        if let Some(key) = &idempotency_key {
            self.remember_idempotency_key(key.clone(), CommandResult { seq });
        }
        let event = ServerMessage::CommandEvent {
            room: self.slot,
            seq,
            author,
            kind,
            payload,
            idempotency_key,
        };
        if let ServerMessage::CommandEvent {
            kind,
            payload,
            author,
            ..
        } = &event
            && *kind == self.config.chat_kind
            && self.config.chat_history_len > 0
        {
            if self.chat.len() >= self.config.chat_history_len {
                self.chat.pop_front();
            }
            self.chat.push_back(ChatEntry {
                seq,
                author: *author,
                time: now,
                payload: payload.clone(),
            });
        }
        self.event(Recipient::Everyone, seq, event);
        self.send(
            Recipient::Session(session),
            ServerMessage::CommandAck {
                request_id,
                room: self.slot,
                seq,
                duplicate: false,
            },
        );
    }

    fn remember_idempotency_key(&mut self, key: String, result: CommandResult) {
        if self.config.idempotency_keys == 0 {
            return;
        }
        if self.idempotency_order.len() == self.config.idempotency_keys
            && let Some(oldest) = self.idempotency_order.pop_front()
        {
            self.idempotency.remove(&oldest);
            if let Some(journal) = &mut self.journal {
                journal.idempotency_changed(oldest, None);
            }
        }
        if let Some(journal) = &mut self.journal {
            journal.idempotency_changed(key.clone(), Some(result.seq));
        }
        self.idempotency_order.push_back(key.clone());
        self.idempotency.insert(key, result);
    }

    fn ack(&mut self, session: SessionId, request_id: RequestId, seq: Seq) {
        self.send(
            Recipient::Session(session),
            ServerMessage::Ack {
                request_id,
                room: self.slot,
                seq,
            },
        );
    }

    /// The target member's role, or a NotJoined-style error naming it.
    fn target_role(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        member: MemberId,
    ) -> Option<Role> {
        match self.members.get(&member) {
            Some(m) => Some(m.role),
            None => {
                self.error(
                    session,
                    ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::NotJoined,
                        format!("member {} is not in room {}", member.0, self.id),
                    ),
                );
                None
            }
        }
    }

    fn outranked(&mut self, session: SessionId, request_id: RequestId, what: &str) {
        self.error(
            session,
            ErrorFrame::new(
                Some(request_id),
                ErrorCode::Forbidden,
                format!("you may not {what} in room {}", self.id),
            ),
        );
    }

    fn kick(
        &mut self,
        now: ServerTime,
        session: SessionId,
        request_id: RequestId,
        target: MemberId,
        reason: String,
    ) {
        let Some((by, role)) =
            self.authorize(session, request_id, (Action::Kick, ""), None, || {
                "kick members".to_owned()
            })
        else {
            return;
        };
        let Some(target_role) = self.target_role(session, request_id, target) else {
            return;
        };
        if target == by {
            return self.outranked(session, request_id, "kick yourself (send Leave)");
        }
        if target_role.rank() > role.rank() {
            return self.outranked(session, request_id, &format!("kick a {target_role}"));
        }
        let seq = self.next_seq();
        let ban_us = self.config.kick_ban_us;
        // Everyone hears it, the kicked member included, before its routing ends.
        self.event(
            Recipient::Everyone,
            seq,
            ServerMessage::MemberKicked {
                room: self.slot,
                seq,
                member: target,
                by,
                reason,
                ban_ms: ban_us / 1000,
            },
        );
        let Some(kicked) = self.members.remove(&target) else {
            return;
        };
        let attached = self.by_session.get(&kicked.session) == Some(&target);
        if attached {
            self.by_session.remove(&kicked.session);
        }
        if ban_us > 0 && self.config.max_bans > 0 {
            if self.bans.len() >= self.config.max_bans {
                // Forget the ban that ends soonest; bans are bounded like everything else.
                if let Some(key) = self
                    .bans
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(k, _)| k.clone())
                {
                    self.bans.remove(&key);
                }
            }
            self.bans.insert(
                BanKey::of(&kicked.identity),
                now.saturating_add_micros(ban_us),
            );
        }
        let kicked_session = kicked.session;
        let event = AuditEvent::Kicked {
            by,
            member: target,
            ip: kicked.identity.ip,
            subject: kicked.identity.subject,
            ban_us,
        };
        if attached {
            self.outputs.push_back(RoomOutput::MemberRemoved {
                session: kicked_session,
                member: target,
            });
        }
        self.audit(event);
        self.ack(session, request_id, seq);
        self.forget_member(now, target);
    }

    fn set_role(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        target: MemberId,
        new_role: Role,
    ) {
        let Some((by, role)) =
            self.authorize(session, request_id, (Action::GrantRoles, ""), None, || {
                "change roles".to_owned()
            })
        else {
            return;
        };
        let Some(old_role) = self.target_role(session, request_id, target) else {
            return;
        };
        if new_role.rank() > role.rank() {
            return self.outranked(session, request_id, &format!("grant the {new_role} role"));
        }
        if old_role.rank() > role.rank() {
            return self.outranked(
                session,
                request_id,
                &format!("change the role of a {old_role}"),
            );
        }
        if old_role == new_role {
            let seq = self.last_seq;
            return self.ack(session, request_id, seq);
        }
        let hosts = self
            .members
            .values()
            .filter(|m| m.role == Role::Host)
            .count();
        if old_role == Role::Host && hosts == 1 {
            return self.outranked(session, request_id, "leave the room without a host");
        }
        // The role differs (checked above), so this is a change and has a seq.
        let seq = self
            .change_role(target, new_role, by)
            .unwrap_or(self.last_seq);
        self.ack(session, request_id, seq);
    }

    fn set_password(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        hash: Option<PasswordHashString>,
    ) {
        let Some((by, _)) =
            self.authorize(session, request_id, (Action::SetPassword, ""), None, || {
                "set the password".to_owned()
            })
        else {
            return;
        };
        let set = hash.is_some();
        self.password = hash.clone();
        self.password_generation += 1;
        self.outputs.push_back(RoomOutput::PasswordChanged {
            hash,
            generation: self.password_generation,
        });
        self.audit(AuditEvent::PasswordChanged { by, set });
        let seq = self.last_seq;
        self.ack(session, request_id, seq);
    }

    fn close(&mut self, session: SessionId, request_id: RequestId, reason: String) {
        let Some((by, _)) =
            self.authorize(session, request_id, (Action::CloseRoom, ""), None, || {
                "close the room".to_owned()
            })
        else {
            return;
        };
        let seq = self.next_seq();
        self.send(
            Recipient::Everyone,
            ServerMessage::RoomClosed {
                room: self.slot,
                seq,
                by,
                reason,
            },
        );
        self.ack(session, request_id, seq);
        let members = std::mem::take(&mut self.members);
        self.by_session.clear();
        for (member, m) in members {
            self.outputs.push_back(RoomOutput::MemberRemoved {
                session: m.session,
                member,
            });
        }
        self.audit(AuditEvent::RoomClosed { by });
        self.closed = true;
        self.outputs.push_back(RoomOutput::Closed);
    }

    /// The logged events with a sequence number after `after`, oldest first,
    /// or `None` when the log no longer reaches back to `after + 1` (the
    /// member must then get a snapshot).
    pub fn events_after(&self, after: Seq) -> Option<Vec<&ServerMessage>> {
        if after >= self.last_seq {
            return Some(Vec::new());
        }
        let first = self.events.front()?.seq;
        if first > after.next() {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|e| e.seq > after)
                .map(|e| &e.message)
                .collect(),
        )
    }
}

/// Bytes of application data an event carries (what the log's byte bound counts).
fn event_payload_bytes(message: &ServerMessage) -> usize {
    64 + match message {
        ServerMessage::StateChanged { key, value, .. } => {
            key.len() + value.as_ref().map_or(0, Vec::len)
        }
        ServerMessage::CommandEvent { kind, payload, .. } => kind.len() + payload.len(),
        ServerMessage::MemberJoined { member, .. } => {
            member.display.name.len() + member.display.meta.len()
        }
        _ => 0,
    }
}

/// The session and request a failure to handle `input` should be told about.
fn input_origin(input: &RoomInput) -> Option<(SessionId, Option<RequestId>)> {
    match input {
        RoomInput::Join {
            session,
            request_id,
            ..
        }
        | RoomInput::SetState {
            session,
            request_id,
            ..
        }
        | RoomInput::DeleteState {
            session,
            request_id,
            ..
        }
        | RoomInput::Command {
            session,
            request_id,
            ..
        }
        | RoomInput::Kick {
            session,
            request_id,
            ..
        }
        | RoomInput::SetRole {
            session,
            request_id,
            ..
        }
        | RoomInput::SetPassword {
            session,
            request_id,
            ..
        }
        | RoomInput::CloseRoom {
            session,
            request_id,
            ..
        }
        | RoomInput::Timeline {
            session,
            request_id,
            ..
        }
        | RoomInput::Direct {
            session,
            request_id,
            ..
        }
        | RoomInput::Broadcast {
            session,
            request_id,
            ..
        }
        | RoomInput::Snapshot {
            session,
            request_id,
            ..
        }
        | RoomInput::SetDelegate {
            session,
            request_id,
            ..
        } => Some((*session, Some(*request_id))),
        RoomInput::Leave {
            session,
            request_id,
            ..
        } => request_id.map(|id| (*session, Some(id))),
        RoomInput::PackAdded {
            session,
            request_id,
            ..
        } => request_id.map(|id| (*session, Some(id))),
        RoomInput::Detach { .. } | RoomInput::Reattach { .. } | RoomInput::Alive { .. } => None,
    }
}

/// The session an input comes from, if its client did something (detaching
/// and reattaching are the shell's doing, not the client's).
fn input_session(input: &RoomInput) -> Option<SessionId> {
    match input {
        RoomInput::Detach { .. } | RoomInput::Reattach { .. } => None,
        RoomInput::Leave {
            request_id: None, ..
        } => None,
        RoomInput::PackAdded {
            request_id: None, ..
        } => None,
        RoomInput::Alive { session } => Some(*session),
        other => input_origin(other).map(|(session, _)| session),
    }
}

mod messaging;
mod persist;
mod presence;
mod timeline;

pub use persist::{
    ChangeKind, RestoreError, ResumeKey, RoomChanges, RoomRecords, StoredBan, StoredChoices,
    StoredMember, StoredReclaim, StoredRoom, StoredValue,
};

#[cfg(test)]
mod tests;
