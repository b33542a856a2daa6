//! [`Room`]: the state machine of one room.

use super::SessionId;
use chorus_protocol::{
    Action, DisplayInfo, ErrorCode, ErrorDetail, ErrorFrame, LeaveReason, MemberId, MemberInfo,
    PermissionPolicy, RequestId, Role, RoomSlot, RoomSnapshot, Seq, ServerMessage, ServerTime,
    StateEntry,
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
    /// Commands kept for catch-up.
    pub command_log_len: usize,
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
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_members: 32,
            idle_ttl_us: 2 * 60 * 60 * 1_000_000,
            max_state_keys: 1024,
            max_state_total_bytes: 900_000,
            command_log_len: 256,
            idempotency_keys: 4096,
            default_role: Role::Editor,
            policy: PermissionPolicy::default(),
            kick_ban_us: 5 * 60 * 1_000_000,
            max_bans: 1024,
            persistent: false,
            password: None,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    Session(SessionId),
    /// Every member, in the order the room lists them.
    Everyone,
    EveryoneExcept(SessionId),
}

/// Something the room wants done.
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
    session: SessionId,
    role: Role,
    display: DisplayInfo,
    identity: ClientIdentity,
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

/// A command kept in the recent log, for members catching up.
#[derive(Debug)]
struct LoggedCommand {
    seq: Seq,
    message: ServerMessage,
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
    command_log: VecDeque<LoggedCommand>,
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
            command_log: VecDeque::new(),
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
            created_at: now,
            last_activity: now,
            empty_since: Some(now),
            expired: false,
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

    /// The tick fan-out table: every member with its session and tick permission.
    pub fn fanout(&self) -> Vec<FanoutEntry> {
        self.members
            .iter()
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

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<ServerTime> {
        if self.config.persistent || self.is_ended() {
            return None;
        }
        self.empty_since
            .map(|since| since.saturating_add_micros(self.config.idle_ttl_us))
    }

    /// Lets time pass: an empty room past its idle TTL expires.
    pub fn handle_timeout(&mut self, now: ServerTime) {
        if let Some(deadline) = self.poll_timeout()
            && now >= deadline
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
            } => self.command(session, request_id, kind, payload, idempotency_key),
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
        self.send(
            Recipient::EveryoneExcept(session),
            ServerMessage::MemberJoined {
                room: self.slot,
                seq,
                member: MemberInfo { id, role, display },
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
        }
    }

    fn leave(
        &mut self,
        now: ServerTime,
        session: SessionId,
        request_id: Option<RequestId>,
        reason: LeaveReason,
    ) {
        let Some(member) = self.by_session.remove(&session) else {
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
        self.members.remove(&member);
        let seq = self.next_seq();
        if let Some(request_id) = request_id {
            self.send(
                Recipient::Session(session),
                ServerMessage::Left {
                    request_id,
                    room: self.slot,
                },
            );
        }
        self.outputs
            .push_back(RoomOutput::MemberRemoved { session, member });
        self.send(
            Recipient::Everyone,
            ServerMessage::MemberLeft {
                room: self.slot,
                seq,
                member,
                reason,
            },
        );
        if self.members.is_empty() {
            self.empty_since = Some(now);
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
        let Some((author, role)) = self.member_of(session, request_id) else {
            return;
        };
        if !self.allows(role, Action::SetState, &key) {
            return self.forbidden(
                session,
                request_id,
                (author, role),
                Action::SetState,
                &format!("change state key {key:?}"),
            );
        }
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
        self.send(
            Recipient::Everyone,
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
        session: SessionId,
        request_id: RequestId,
        kind: String,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
    ) {
        let Some((author, role)) = self.member_of(session, request_id) else {
            return;
        };
        if !self.allows(role, Action::SendCommands, &kind) {
            return self.forbidden(
                session,
                request_id,
                (author, role),
                Action::SendCommands,
                &format!("send {kind:?} commands"),
            );
        }
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
        if self.config.command_log_len > 0 {
            if self.command_log.len() == self.config.command_log_len {
                self.command_log.pop_front();
            }
            self.command_log.push_back(LoggedCommand {
                seq,
                message: event.clone(),
            });
        }
        self.send(Recipient::Everyone, event);
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
        let Some((by, role)) = self.member_of(session, request_id) else {
            return;
        };
        if !self.allows(role, Action::Kick, "") {
            return self.forbidden(
                session,
                request_id,
                (by, role),
                Action::Kick,
                "kick members",
            );
        }
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
        self.send(
            Recipient::Everyone,
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
        self.by_session.remove(&kicked.session);
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
        self.outputs.push_back(RoomOutput::MemberRemoved {
            session: kicked_session,
            member: target,
        });
        self.audit(event);
        self.ack(session, request_id, seq);
        if self.members.is_empty() {
            self.empty_since = Some(now);
        }
    }

    fn set_role(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        target: MemberId,
        new_role: Role,
    ) {
        let Some((by, role)) = self.member_of(session, request_id) else {
            return;
        };
        if !self.allows(role, Action::GrantRoles, "") {
            return self.forbidden(
                session,
                request_id,
                (by, role),
                Action::GrantRoles,
                "change roles",
            );
        }
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
        if let Some(m) = self.members.get_mut(&target) {
            m.role = new_role;
        }
        let seq = self.next_seq();
        self.send(
            Recipient::Everyone,
            ServerMessage::RoleChanged {
                room: self.slot,
                seq,
                member: target,
                role: new_role,
                by,
            },
        );
        self.outputs
            .push_back(RoomOutput::RoleChanged { member: target });
        self.audit(AuditEvent::RoleChanged {
            by,
            member: target,
            from: old_role,
            to: new_role,
        });
        self.ack(session, request_id, seq);
    }

    fn set_password(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        hash: Option<PasswordHashString>,
    ) {
        let Some((by, role)) = self.member_of(session, request_id) else {
            return;
        };
        if !self.allows(role, Action::SetPassword, "") {
            return self.forbidden(
                session,
                request_id,
                (by, role),
                Action::SetPassword,
                "set the password",
            );
        }
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
        let Some((by, role)) = self.member_of(session, request_id) else {
            return;
        };
        if !self.allows(role, Action::CloseRoom, "") {
            return self.forbidden(
                session,
                request_id,
                (by, role),
                Action::CloseRoom,
                "close the room",
            );
        }
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

    /// The `CommandEvent`s in the recent log with a sequence number after `after`,
    /// oldest first: what a member that saw up to `after` has missed.
    pub fn commands_after(&self, after: Seq) -> impl Iterator<Item = &ServerMessage> + '_ {
        self.command_log
            .iter()
            .filter(move |c| c.seq > after)
            .map(|c| &c.message)
    }
}

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
        } => Some((*session, Some(*request_id))),
        RoomInput::Leave {
            session,
            request_id,
            ..
        } => request_id.map(|id| (*session, Some(id))),
    }
}

#[cfg(test)]
mod tests;
