//! [`Room`]: the state machine of one room.

use super::SessionId;
use chorus_protocol::{
    DisplayInfo, ErrorCode, ErrorDetail, ErrorFrame, LeaveReason, MemberId, MemberInfo, RequestId,
    Role, RoomSlot, RoomSnapshot, Seq, ServerMessage, ServerTime, StateEntry,
};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Which roles may do what in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub set_state: Vec<Role>,
    pub send_commands: Vec<Role>,
    pub send_ticks: Vec<Role>,
}

impl Default for Permissions {
    /// Hosts and editors write state and send commands; everyone sends ticks
    /// (a viewer's cursor is still worth showing).
    fn default() -> Self {
        Permissions {
            set_state: vec![Role::Host, Role::Editor],
            send_commands: vec![Role::Host, Role::Editor],
            send_ticks: vec![Role::Host, Role::Editor, Role::Viewer],
        }
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
    /// Role of members after the first (who is host).
    pub default_role: Role,
    pub permissions: Permissions,
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
            permissions: Permissions::default(),
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
}

/// One row of the tick fan-out table the shell publishes for the tick lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutEntry {
    pub session: SessionId,
    pub member: MemberId,
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
        Room {
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
                may_send_ticks: self.config.permissions.send_ticks.contains(&m.role),
            })
            .collect()
    }

    /// The next queued output, in the order the room produced them.
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<ServerTime> {
        match (self.expired, self.empty_since) {
            (false, Some(since)) => Some(since.saturating_add_micros(self.config.idle_ttl_us)),
            _ => None,
        }
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
        if self.expired {
            // The shell stops feeding an expired room; be safe if it does not.
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
            } => self.join(session, request_id, display),
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

    fn join(&mut self, session: SessionId, request_id: RequestId, display: DisplayInfo) {
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
        // Whoever finds the room empty hosts it; nobody else is there to lead.
        let role = if self.members.is_empty() {
            Role::Host
        } else {
            self.config.default_role
        };
        self.members.insert(
            id,
            Member {
                session,
                role,
                display: display.clone(),
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

    fn forbidden(&mut self, session: SessionId, request_id: RequestId, role: Role, what: &str) {
        self.error(
            session,
            ErrorFrame::new(
                Some(request_id),
                ErrorCode::Forbidden,
                format!("role {role} may not {what} in room {}", self.id),
            ),
        );
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
        if !self.config.permissions.set_state.contains(&role) {
            return self.forbidden(session, request_id, role, "change state");
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
        if !self.config.permissions.send_commands.contains(&role) {
            return self.forbidden(session, request_id, role, "send commands");
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
