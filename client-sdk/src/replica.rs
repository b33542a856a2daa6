//! The local replica of one room: members (with presence), state, timelines,
//! packs and chat history, kept up to date by applying the room's events in
//! sequence order.
//!
//! [`RoomReplica`] is a pure state machine: it starts from a snapshot (the
//! `Joined` one, or a later one that replaces it) and
//! [`apply`](RoomReplica::apply)s [`ServerMessage`] room events, returning the
//! [`RoomEvent`] to publish. It does no I/O and reads no clock (the caller
//! passes the server time where one matters), so it is tested without a
//! server. The driver holds one per joined room behind a mutex.

use crate::timeline::TimelineSchedule;
use bytes::Bytes;
use chorus_protocol::{
    Action, ChatEntry, FailoverMode, PackInfo, PermissionPolicy, Presence, RoomKind, ServerMessage,
    ServerTime, StateEntry, TimelineState,
};
use chorus_protocol::{LeaveReason, MemberId, MemberInfo, Role, RoomSlot, RoomSnapshot, Seq};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Chat messages (commands of kind [`CHAT_KIND`]) the replica keeps at least;
/// more when the server's snapshot held more.
pub const CHAT_HISTORY: usize = 50;

/// The command kind the server keeps as chat history.
pub const CHAT_KIND: &str = "chat";

/// One state key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateValue {
    /// The value bytes.
    pub value: Bytes,
    /// The room's state version at this key's last write (use it as `if_version`).
    pub version: u64,
    /// Who wrote it last.
    pub author: MemberId,
}

/// An application command as every member receives it (the sender included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEvent {
    /// The command's room sequence number.
    pub seq: Seq,
    /// Who sent it.
    pub author: MemberId,
    /// Application-defined kind, e.g. `"chat"`.
    pub kind: String,
    /// Application-defined payload.
    pub payload: Bytes,
    /// The sender's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

/// A reliable room event, in room-sequence order.
///
/// Direct and broadcast messages are not room events (they are not
/// sequenced): [`Room::messages`](crate::Room::messages) delivers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A member joined.
    MemberJoined {
        /// The new member.
        member: MemberInfo,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// A member left.
    MemberLeft {
        /// Who left.
        member: MemberId,
        /// What the replica knew about them (`None` only if the server announced a
        /// member this client never saw).
        info: Option<MemberInfo>,
        /// Why they left.
        reason: LeaveReason,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// A state key was set (`value: Some`) or deleted (`value: None`).
    StateChanged {
        /// The key.
        key: String,
        /// The new value, `None` when deleted.
        value: Option<Bytes>,
        /// The room's state version after this write.
        version: u64,
        /// Who wrote it.
        author: MemberId,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// An application command.
    Command(CommandEvent),
    /// A member's role changed (the replica's member list has the new role).
    /// When `member` is this client, [`Room::role`](crate::Room::role) and
    /// [`Room::can`](crate::Room::can) follow it. `by` is `MemberId(0)` when
    /// the server did it (host failover).
    RoleChanged {
        /// Whose role changed.
        member: MemberId,
        /// The new role.
        role: Role,
        /// Who changed it (`MemberId(0)`: the server).
        by: MemberId,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// A member was removed from the room by another, and may not rejoin for
    /// `ban`. When `member` is this client, this is the room's last event: the
    /// room is no longer joined and its streams end after it.
    MemberKicked {
        /// Who was removed.
        member: MemberId,
        /// What the replica knew about them (`None` only if the server named a
        /// member this client never saw).
        info: Option<MemberInfo>,
        /// Who removed them.
        by: MemberId,
        /// The reason text given (may be empty).
        reason: String,
        /// How long the removed member may not rejoin (joins fail with `Banned`).
        ban: Duration,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// The room was closed: nobody is a member any more. This is the room's
    /// last event; the room is no longer joined and its streams end after it.
    RoomClosed {
        /// Who closed it.
        by: MemberId,
        /// The reason text given (may be empty).
        reason: String,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// A member's presence changed: its connection dropped
    /// ([`Presence::Reconnecting`], it may come back within the server's
    /// resume window), it is back ([`Presence::Online`]), or it is connected
    /// but silent ([`Presence::Away`], hosts). The member list has the new
    /// presence.
    PresenceChanged {
        /// Whose presence changed.
        member: MemberId,
        /// The new presence.
        presence: Presence,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// A timeline changed. It takes effect at `timeline.anchor_time`, which
    /// may be a little ahead (a scheduled change): until then
    /// [`Room::timeline`](crate::Room::timeline) still gives the previous
    /// state (see [`timeline`](crate::timeline)).
    TimelineChanged {
        /// The new state (its `seq` is this event's).
        timeline: TimelineState,
        /// Who changed it (`MemberId(0)`: the server, e.g. pausing on failover).
        by: MemberId,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// A pack is available in the room ([`Room::fetch_pack`](crate::Room::fetch_pack)).
    PackAvailable {
        /// The pack.
        pack: PackInfo,
        /// The event's room sequence number.
        seq: Seq,
    },
    /// The replica was replaced by a fresh snapshot of the room at `seq`: after
    /// a resume whose gap was too old to replay, or after
    /// [`Room::request_snapshot`](crate::Room::request_snapshot). The events
    /// in between were not delivered one by one: read the room again
    /// (members, state, timelines, packs).
    Resynced {
        /// The snapshot's last sequence number.
        seq: Seq,
    },
}

impl RoomEvent {
    /// The event's room sequence number (for [`RoomEvent::Resynced`], the
    /// snapshot's).
    pub fn seq(&self) -> Seq {
        match self {
            RoomEvent::MemberJoined { seq, .. }
            | RoomEvent::MemberLeft { seq, .. }
            | RoomEvent::StateChanged { seq, .. }
            | RoomEvent::RoleChanged { seq, .. }
            | RoomEvent::MemberKicked { seq, .. }
            | RoomEvent::RoomClosed { seq, .. }
            | RoomEvent::PresenceChanged { seq, .. }
            | RoomEvent::TimelineChanged { seq, .. }
            | RoomEvent::PackAvailable { seq, .. }
            | RoomEvent::Resynced { seq } => *seq,
            RoomEvent::Command(c) => c.seq,
        }
    }
}

/// A consistent copy of a room's replica at one sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    /// Members in join order, this client included.
    pub members: Vec<MemberInfo>,
    /// State by key.
    pub state: BTreeMap<String, StateValue>,
    /// The state map's version (highest key version written).
    pub state_version: u64,
    /// The last event applied.
    pub last_seq: Seq,
    /// Each timeline's newest state, by name (a scheduled change included,
    /// before its anchor time: see [`crate::timeline`]).
    pub timelines: BTreeMap<String, TimelineState>,
    /// Packs available in the room, oldest first.
    pub packs: Vec<PackInfo>,
    /// The last chat messages (commands of kind `"chat"`), oldest first.
    pub chat: Vec<ChatEntry>,
}

/// What applying one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The replica changed; publish this event.
    Event(RoomEvent),
    /// This client is no longer in the room: it left, was removed or kicked, or
    /// the room was closed (publish the event, then treat the room as left).
    Removed(RoomEvent),
    /// The event's seq is not after the replica's: already applied, ignored.
    Stale {
        /// The event's seq.
        seq: Seq,
        /// The replica's last seq.
        last: Seq,
    },
    /// Not a room event for this replica (a reply, another room, a ping).
    NotRoomEvent,
}

/// Members, state, timelines, packs and chat of one room, as of `last_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomReplica {
    room_id: String,
    slot: RoomSlot,
    me: MemberId,
    role: Role,
    members: Vec<MemberInfo>,
    state: BTreeMap<String, StateValue>,
    state_version: u64,
    last_seq: Seq,
    policy: PermissionPolicy,
    kind: RoomKind,
    failover: FailoverMode,
    timelines: BTreeMap<String, TimelineSchedule>,
    packs: Vec<PackInfo>,
    chat: VecDeque<ChatEntry>,
    chat_capacity: usize,
    /// Events whose seq skipped ahead of `last_seq + 1` (a server bug or a lost
    /// event); counted for diagnostics, applied anyway.
    gaps: u64,
}

impl RoomReplica {
    /// The replica right after joining (or from a later snapshot).
    pub fn from_snapshot(snapshot: RoomSnapshot) -> Self {
        let RoomSnapshot {
            room_id,
            room,
            you,
            role,
            members,
            state,
            state_version,
            last_seq,
            policy,
            kind,
            failover,
            timelines,
            packs,
            chat,
        } = snapshot;
        let state = state
            .into_iter()
            .map(
                |StateEntry {
                     key,
                     value,
                     version,
                     author,
                 }| {
                    (
                        key,
                        StateValue {
                            value: Bytes::from(value),
                            version,
                            author,
                        },
                    )
                },
            )
            .collect();
        let timelines = timelines
            .into_iter()
            .map(|t| (t.name.clone(), TimelineSchedule::new(t)))
            .collect();
        RoomReplica {
            room_id,
            slot: room,
            me: you,
            role,
            members,
            state,
            state_version,
            last_seq,
            policy,
            kind,
            failover,
            timelines,
            packs,
            chat_capacity: CHAT_HISTORY.max(chat.len()),
            chat: chat.into(),
            gaps: 0,
        }
    }

    /// Replaces everything with a fresh snapshot of the same room, returning
    /// the [`RoomEvent::Resynced`] to publish.
    pub fn replace(&mut self, snapshot: RoomSnapshot) -> RoomEvent {
        let seq = snapshot.last_seq;
        let gaps = self.gaps;
        *self = RoomReplica::from_snapshot(snapshot);
        self.gaps = gaps;
        RoomEvent::Resynced { seq }
    }

    /// The room's string id.
    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// The room's slot on this server.
    pub fn slot(&self) -> RoomSlot {
        self.slot
    }

    /// This client's member id in the room.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// This client's role: from the member list when it is there, else from the snapshot.
    pub fn role(&self) -> Role {
        self.member(self.me).map_or(self.role, |m| m.role)
    }

    /// The room's own permission rules, from the snapshot (the defaults apply
    /// where none matches).
    pub fn policy(&self) -> &PermissionPolicy {
        &self.policy
    }

    /// What the room keeps ([`RoomKind::Relay`]: nothing but relaying).
    pub fn kind(&self) -> RoomKind {
        self.kind
    }

    /// What happens when the room's host goes away.
    pub fn failover(&self) -> FailoverMode {
        self.failover
    }

    /// Whether this client's role may do `action` on `target` (a state key or
    /// command kind; empty for other actions) under the room's policy: the
    /// same rule ([`PermissionPolicy::allows`]) the server applies.
    pub fn can(&self, action: Action, target: &str) -> bool {
        self.policy.allows(self.role(), action, target)
    }

    /// Members in join order.
    pub fn members(&self) -> &[MemberInfo] {
        &self.members
    }

    /// One member, if present.
    pub fn member(&self, id: MemberId) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.id == id)
    }

    /// One state key.
    pub fn state(&self, key: &str) -> Option<&StateValue> {
        self.state.get(key)
    }

    /// All state.
    pub fn state_map(&self) -> &BTreeMap<String, StateValue> {
        &self.state
    }

    /// The state map's version.
    pub fn state_version(&self) -> u64 {
        self.state_version
    }

    /// The last applied event's seq.
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// How many events arrived with a seq beyond `last_seq + 1`.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// One timeline's schedule (its known states), if the room has it.
    pub fn timeline_schedule(&self, name: &str) -> Option<&TimelineSchedule> {
        self.timelines.get(name)
    }

    /// The state of timeline `name` in force at server time `now`.
    pub fn timeline_at(&self, name: &str, now: ServerTime) -> Option<&TimelineState> {
        self.timelines.get(name).map(|t| t.at(now))
    }

    /// The names of the room's timelines.
    pub fn timeline_names(&self) -> impl Iterator<Item = &str> {
        self.timelines.keys().map(String::as_str)
    }

    /// Packs available in the room, oldest first.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// The pack with this SHA-256, if available in the room.
    pub fn pack(&self, hash: &[u8]) -> Option<&PackInfo> {
        self.packs.iter().find(|p| p.hash == hash)
    }

    /// The last chat messages, oldest first: the snapshot's, then every
    /// command of kind `"chat"` since (their `time` is this client's estimate
    /// of the server time when it arrived), at most [`CHAT_HISTORY`] (or as
    /// many as the snapshot held).
    pub fn chat(&self) -> impl ExactSizeIterator<Item = &ChatEntry> {
        self.chat.iter()
    }

    /// A consistent copy.
    pub fn view(&self) -> RoomView {
        RoomView {
            members: self.members.clone(),
            state: self.state.clone(),
            state_version: self.state_version,
            last_seq: self.last_seq,
            timelines: self
                .timelines
                .iter()
                .map(|(name, t)| (name.clone(), t.latest().clone()))
                .collect(),
            packs: self.packs.clone(),
            chat: self.chat.iter().cloned().collect(),
        }
    }

    /// Admits `seq` if it is after `last_seq`, counting gaps.
    fn admit(&mut self, seq: Seq) -> Result<(), Applied> {
        if seq <= self.last_seq {
            return Err(Applied::Stale {
                seq,
                last: self.last_seq,
            });
        }
        if seq != self.last_seq.next() {
            self.gaps += 1;
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Applies one server message if it is an event of this room. `now` is
    /// the current server time: it dates chat entries, and tells a timeline
    /// change scheduled ahead (pending until its `anchor_time`) from one in
    /// force at once.
    pub fn apply(&mut self, msg: ServerMessage, now: ServerTime) -> Applied {
        match msg {
            ServerMessage::MemberJoined { room, seq, member } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                match self.members.iter_mut().find(|m| m.id == member.id) {
                    Some(existing) => *existing = member.clone(),
                    None => self.members.push(member.clone()),
                }
                Applied::Event(RoomEvent::MemberJoined { member, seq })
            }
            ServerMessage::MemberLeft {
                room,
                seq,
                member,
                reason,
            } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                let info = self.remove_member(member);
                let event = RoomEvent::MemberLeft {
                    member,
                    info,
                    reason,
                    seq,
                };
                if member == self.me {
                    Applied::Removed(event)
                } else {
                    Applied::Event(event)
                }
            }
            ServerMessage::StateChanged {
                room,
                seq,
                key,
                value,
                version,
                author,
            } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                let value = value.map(Bytes::from);
                match &value {
                    Some(bytes) => {
                        self.state.insert(
                            key.clone(),
                            StateValue {
                                value: bytes.clone(),
                                version,
                                author,
                            },
                        );
                    }
                    None => {
                        self.state.remove(&key);
                    }
                }
                self.state_version = self.state_version.max(version);
                Applied::Event(RoomEvent::StateChanged {
                    key,
                    value,
                    version,
                    author,
                    seq,
                })
            }
            ServerMessage::CommandEvent {
                room,
                seq,
                author,
                kind,
                payload,
                idempotency_key,
            } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                let payload = Bytes::from(payload);
                if kind == CHAT_KIND {
                    if self.chat.len() >= self.chat_capacity {
                        self.chat.pop_front();
                    }
                    self.chat.push_back(ChatEntry {
                        seq,
                        author,
                        time: now,
                        payload: payload.to_vec(),
                    });
                }
                Applied::Event(RoomEvent::Command(CommandEvent {
                    seq,
                    author,
                    kind,
                    payload,
                    idempotency_key,
                }))
            }
            ServerMessage::RoleChanged {
                room,
                seq,
                member,
                role,
                by,
            } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                if let Some(m) = self.members.iter_mut().find(|m| m.id == member) {
                    m.role = role;
                }
                if member == self.me {
                    self.role = role;
                }
                Applied::Event(RoomEvent::RoleChanged {
                    member,
                    role,
                    by,
                    seq,
                })
            }
            ServerMessage::MemberKicked {
                room,
                seq,
                member,
                by,
                reason,
                ban_ms,
            } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                let info = self.remove_member(member);
                let event = RoomEvent::MemberKicked {
                    member,
                    info,
                    by,
                    reason,
                    ban: Duration::from_millis(ban_ms),
                    seq,
                };
                if member == self.me {
                    Applied::Removed(event)
                } else {
                    Applied::Event(event)
                }
            }
            ServerMessage::RoomClosed {
                room,
                seq,
                by,
                reason,
            } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                // Nobody is a member any more; the state stays readable.
                self.members.clear();
                Applied::Removed(RoomEvent::RoomClosed { by, reason, seq })
            }
            ServerMessage::PresenceChanged {
                room,
                seq,
                member,
                presence,
            } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                if let Some(m) = self.members.iter_mut().find(|m| m.id == member) {
                    m.presence = presence;
                }
                Applied::Event(RoomEvent::PresenceChanged {
                    member,
                    presence,
                    seq,
                })
            }
            ServerMessage::TimelineChanged {
                room,
                seq,
                timeline,
                by,
            } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                self.timelines
                    .entry(timeline.name.clone())
                    .or_insert_with(|| TimelineSchedule::initial(&timeline.name))
                    .push(timeline.clone(), now);
                Applied::Event(RoomEvent::TimelineChanged { timeline, by, seq })
            }
            ServerMessage::PackAvailable { room, seq, pack } if room == self.slot => {
                if let Err(stale) = self.admit(seq) {
                    return stale;
                }
                if !self.packs.iter().any(|p| p.hash == pack.hash) {
                    self.packs.push(pack.clone());
                }
                Applied::Event(RoomEvent::PackAvailable { pack, seq })
            }
            _ => Applied::NotRoomEvent,
        }
    }

    /// Removes a member from the list, returning what was known about it.
    fn remove_member(&mut self, id: MemberId) -> Option<MemberInfo> {
        self.members
            .iter()
            .position(|m| m.id == id)
            .map(|i| self.members.remove(i))
    }
}

/// The room a server message belongs to, for sequenced room events.
pub fn event_room(msg: &ServerMessage) -> Option<RoomSlot> {
    match msg {
        ServerMessage::MemberJoined { room, .. }
        | ServerMessage::MemberLeft { room, .. }
        | ServerMessage::StateChanged { room, .. }
        | ServerMessage::CommandEvent { room, .. }
        | ServerMessage::RoleChanged { room, .. }
        | ServerMessage::MemberKicked { room, .. }
        | ServerMessage::RoomClosed { room, .. }
        | ServerMessage::PresenceChanged { room, .. }
        | ServerMessage::TimelineChanged { room, .. }
        | ServerMessage::PackAvailable { room, .. } => Some(*room),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::DisplayInfo;

    const SLOT: RoomSlot = RoomSlot(7);

    fn member(id: u32, name: &str, role: Role) -> MemberInfo {
        MemberInfo {
            id: MemberId(id),
            role,
            display: DisplayInfo {
                name: name.into(),
                meta: vec![],
            },
            presence: Presence::Online,
        }
    }

    /// The server time the tests apply events at.
    const NOW: ServerTime = ServerTime(50_000_000);

    fn apply(r: &mut RoomReplica, msg: ServerMessage) -> Applied {
        r.apply(msg, NOW)
    }

    /// A snapshot with nothing of the sync additions (no timelines, packs, chat).
    fn bare(
        you: MemberId,
        role: Role,
        members: Vec<MemberInfo>,
        state: Vec<StateEntry>,
        state_version: u64,
        last_seq: Seq,
        policy: PermissionPolicy,
    ) -> RoomSnapshot {
        RoomSnapshot {
            room_id: "lobby".into(),
            room: SLOT,
            you,
            role,
            members,
            state,
            state_version,
            last_seq,
            policy,
            kind: RoomKind::Normal,
            failover: FailoverMode::NextMember,
            timelines: vec![],
            packs: vec![],
            chat: vec![],
        }
    }

    fn replica() -> RoomReplica {
        RoomReplica::from_snapshot(bare(
            MemberId(2),
            Role::Editor,
            vec![member(1, "ada", Role::Host), member(2, "bob", Role::Editor)],
            vec![StateEntry {
                key: "title".into(),
                value: b"hello".to_vec(),
                version: 3,
                author: MemberId(1),
            }],
            4,
            Seq(10),
            PermissionPolicy::default(),
        ))
    }

    fn set(seq: u64, key: &str, value: Option<&[u8]>, version: u64) -> ServerMessage {
        ServerMessage::StateChanged {
            room: SLOT,
            seq: Seq(seq),
            key: key.into(),
            value: value.map(|v| v.to_vec()),
            version,
            author: MemberId(1),
        }
    }

    #[test]
    fn snapshot_is_the_starting_point() {
        let r = replica();
        assert_eq!(r.room_id(), "lobby");
        assert_eq!(r.slot(), SLOT);
        assert_eq!(r.me(), MemberId(2));
        assert_eq!(r.role(), Role::Editor);
        assert_eq!(r.members().len(), 2);
        assert_eq!(
            r.state("title"),
            Some(&StateValue {
                value: Bytes::from_static(b"hello"),
                version: 3,
                author: MemberId(1)
            })
        );
        assert_eq!(r.state_version(), 4);
        assert_eq!(r.last_seq(), Seq(10));
    }

    #[test]
    fn members_join_and_leave_in_order() {
        let mut r = replica();
        let carol = member(3, "carol", Role::Viewer);
        assert_eq!(
            apply(
                &mut r,
                ServerMessage::MemberJoined {
                    room: SLOT,
                    seq: Seq(11),
                    member: carol.clone()
                }
            ),
            Applied::Event(RoomEvent::MemberJoined {
                member: carol.clone(),
                seq: Seq(11)
            })
        );
        assert_eq!(
            r.members().iter().map(|m| m.id.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(
            apply(
                &mut r,
                ServerMessage::MemberLeft {
                    room: SLOT,
                    seq: Seq(12),
                    member: MemberId(1),
                    reason: LeaveReason::Disconnected
                }
            ),
            Applied::Event(RoomEvent::MemberLeft {
                member: MemberId(1),
                info: Some(member(1, "ada", Role::Host)),
                reason: LeaveReason::Disconnected,
                seq: Seq(12)
            })
        );
        assert_eq!(
            r.members().iter().map(|m| m.id.0).collect::<Vec<_>>(),
            [2, 3]
        );
        // Leaving twice (or an unknown member) still yields an event, without info.
        match apply(
            &mut r,
            ServerMessage::MemberLeft {
                room: SLOT,
                seq: Seq(13),
                member: MemberId(9),
                reason: LeaveReason::Left,
            },
        ) {
            Applied::Event(RoomEvent::MemberLeft { info: None, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(r.last_seq(), Seq(13));
        assert_eq!(r.gaps(), 0);
    }

    #[test]
    fn rejoin_with_same_id_replaces_the_member() {
        let mut r = replica();
        let renamed = member(1, "ada lovelace", Role::Host);
        apply(
            &mut r,
            ServerMessage::MemberJoined {
                room: SLOT,
                seq: Seq(11),
                member: renamed.clone(),
            },
        );
        assert_eq!(r.members().len(), 2);
        assert_eq!(r.member(MemberId(1)), Some(&renamed));
    }

    #[test]
    fn state_set_and_delete_update_versions() {
        let mut r = replica();
        let applied = apply(&mut r, set(11, "title", Some(b"bye"), 5));
        assert_eq!(
            applied,
            Applied::Event(RoomEvent::StateChanged {
                key: "title".into(),
                value: Some(Bytes::from_static(b"bye")),
                version: 5,
                author: MemberId(1),
                seq: Seq(11)
            })
        );
        assert_eq!(r.state("title").map(|v| v.version), Some(5));
        assert_eq!(r.state_version(), 5);
        apply(&mut r, set(12, "other", Some(b"x"), 6));
        apply(&mut r, set(13, "title", None, 7));
        assert_eq!(r.state("title"), None);
        assert_eq!(r.state_map().keys().collect::<Vec<_>>(), ["other"]);
        assert_eq!(r.state_version(), 7);
        let view = r.view();
        assert_eq!(view.last_seq, Seq(13));
        assert_eq!(view.state.len(), 1);
    }

    #[test]
    fn commands_pass_through_in_order() {
        let mut r = replica();
        let applied = apply(
            &mut r,
            ServerMessage::CommandEvent {
                room: SLOT,
                seq: Seq(11),
                author: MemberId(2),
                kind: "chat".into(),
                payload: b"hi".to_vec(),
                idempotency_key: Some("k1".into()),
            },
        );
        assert_eq!(
            applied,
            Applied::Event(RoomEvent::Command(CommandEvent {
                seq: Seq(11),
                author: MemberId(2),
                kind: "chat".into(),
                payload: Bytes::from_static(b"hi"),
                idempotency_key: Some("k1".into())
            }))
        );
        assert_eq!(r.last_seq(), Seq(11));
    }

    #[test]
    fn stale_events_are_ignored_and_gaps_counted() {
        let mut r = replica();
        // At or before the snapshot's seq: already part of the snapshot.
        assert_eq!(
            apply(&mut r, set(10, "title", Some(b"old"), 9)),
            Applied::Stale {
                seq: Seq(10),
                last: Seq(10)
            }
        );
        assert_eq!(r.state("title").map(|v| v.version), Some(3));
        // A skipped seq is applied but counted.
        assert!(matches!(
            apply(&mut r, set(15, "k", Some(b"v"), 9)),
            Applied::Event(_)
        ));
        assert_eq!(r.gaps(), 1);
        assert_eq!(r.last_seq(), Seq(15));
        assert!(matches!(
            apply(&mut r, set(14, "k", Some(b"w"), 10)),
            Applied::Stale { .. }
        ));
        assert_eq!(
            r.state("k").map(|v| v.value.clone()),
            Some(Bytes::from_static(b"v"))
        );
    }

    #[test]
    fn other_rooms_and_replies_are_not_room_events() {
        let mut r = replica();
        let other = ServerMessage::CommandEvent {
            room: RoomSlot(8),
            seq: Seq(11),
            author: MemberId(2),
            kind: "chat".into(),
            payload: vec![],
            idempotency_key: None,
        };
        assert_eq!(event_room(&other), Some(RoomSlot(8)));
        assert_eq!(apply(&mut r, other), Applied::NotRoomEvent);
        let ack = ServerMessage::CommandAck {
            request_id: 1,
            room: SLOT,
            seq: Seq(11),
            duplicate: false,
        };
        assert_eq!(event_room(&ack), None);
        assert_eq!(apply(&mut r, ack), Applied::NotRoomEvent);
        assert_eq!(r.last_seq(), Seq(10));
    }

    #[test]
    fn being_removed_is_reported() {
        let mut r = replica();
        match apply(
            &mut r,
            ServerMessage::MemberLeft {
                room: SLOT,
                seq: Seq(11),
                member: MemberId(2),
                reason: LeaveReason::TooSlow,
            },
        ) {
            Applied::Removed(RoomEvent::MemberLeft { member, .. }) => {
                assert_eq!(member, MemberId(2))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn role_changes_update_members_and_my_permissions() {
        let mut r = replica();
        assert!(r.can(Action::SetState, "title"));
        assert!(!r.can(Action::Kick, ""));
        // Someone else's role.
        assert_eq!(
            apply(
                &mut r,
                ServerMessage::RoleChanged {
                    room: SLOT,
                    seq: Seq(11),
                    member: MemberId(1),
                    role: Role::Viewer,
                    by: MemberId(1),
                }
            ),
            Applied::Event(RoomEvent::RoleChanged {
                member: MemberId(1),
                role: Role::Viewer,
                by: MemberId(1),
                seq: Seq(11)
            })
        );
        assert_eq!(r.member(MemberId(1)).map(|m| m.role), Some(Role::Viewer));
        assert_eq!(r.role(), Role::Editor);
        // Mine: up to host, then down to viewer.
        apply(
            &mut r,
            ServerMessage::RoleChanged {
                room: SLOT,
                seq: Seq(12),
                member: MemberId(2),
                role: Role::Host,
                by: MemberId(1),
            },
        );
        assert_eq!(r.role(), Role::Host);
        assert!(r.can(Action::Kick, ""));
        apply(
            &mut r,
            ServerMessage::RoleChanged {
                room: SLOT,
                seq: Seq(13),
                member: MemberId(2),
                role: Role::Viewer,
                by: MemberId(1),
            },
        );
        assert_eq!(r.role(), Role::Viewer);
        assert!(!r.can(Action::SetState, "title"));
        assert!(r.can(Action::SendTicks, ""));
        // An unknown member's change is still an event, and still sequenced.
        assert!(matches!(
            apply(
                &mut r,
                ServerMessage::RoleChanged {
                    room: SLOT,
                    seq: Seq(15),
                    member: MemberId(9),
                    role: Role::Editor,
                    by: MemberId(1),
                }
            ),
            Applied::Event(RoomEvent::RoleChanged { .. })
        ));
        assert_eq!((r.last_seq(), r.gaps()), (Seq(15), 1));
    }

    #[test]
    fn the_room_policy_decides_with_my_role() {
        let mut snapshot_policy = PermissionPolicy::default();
        snapshot_policy.rules.push(chorus_protocol::PermissionRule {
            action: Action::SetState,
            scope: "cursor/".into(),
            roles: vec![Role::Host, Role::Editor, Role::Viewer],
        });
        let mut r = RoomReplica::from_snapshot(bare(
            MemberId(2),
            Role::Viewer,
            vec![member(2, "bob", Role::Viewer)],
            vec![],
            0,
            Seq(1),
            snapshot_policy.clone(),
        ));
        assert_eq!(r.policy(), &snapshot_policy);
        assert!(r.can(Action::SetState, "cursor/2"));
        assert!(!r.can(Action::SetState, "title"));
        assert!(!r.can(Action::SendCommands, "chat"));
        apply(
            &mut r,
            ServerMessage::RoleChanged {
                room: SLOT,
                seq: Seq(2),
                member: MemberId(2),
                role: Role::Editor,
                by: MemberId(1),
            },
        );
        assert!(r.can(Action::SetState, "title"));
    }

    #[test]
    fn kicks_remove_the_member_and_end_the_room_for_me() {
        let mut r = replica();
        assert_eq!(
            apply(
                &mut r,
                ServerMessage::MemberKicked {
                    room: SLOT,
                    seq: Seq(11),
                    member: MemberId(1),
                    by: MemberId(2),
                    reason: "spam".into(),
                    ban_ms: 60_000,
                }
            ),
            Applied::Event(RoomEvent::MemberKicked {
                member: MemberId(1),
                info: Some(member(1, "ada", Role::Host)),
                by: MemberId(2),
                reason: "spam".into(),
                ban: Duration::from_secs(60),
                seq: Seq(11)
            })
        );
        assert_eq!(r.members().iter().map(|m| m.id.0).collect::<Vec<_>>(), [2]);
        // A stale repeat changes nothing.
        assert!(matches!(
            apply(
                &mut r,
                ServerMessage::MemberKicked {
                    room: SLOT,
                    seq: Seq(11),
                    member: MemberId(2),
                    by: MemberId(1),
                    reason: String::new(),
                    ban_ms: 0,
                }
            ),
            Applied::Stale { .. }
        ));
        assert_eq!(r.members().len(), 1);
        match apply(
            &mut r,
            ServerMessage::MemberKicked {
                room: SLOT,
                seq: Seq(12),
                member: MemberId(2),
                by: MemberId(3),
                reason: "bye".into(),
                ban_ms: 1500,
            },
        ) {
            Applied::Removed(RoomEvent::MemberKicked {
                member, info, ban, ..
            }) => {
                assert_eq!(member, MemberId(2));
                assert_eq!(info.map(|m| m.display.name), Some("bob".into()));
                assert_eq!(ban, Duration::from_millis(1500));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(r.members().is_empty());
        assert_eq!((r.last_seq(), r.gaps()), (Seq(12), 0));
    }

    #[test]
    fn a_closed_room_has_no_members_and_ends() {
        let mut r = replica();
        let closed = ServerMessage::RoomClosed {
            room: SLOT,
            seq: Seq(12),
            by: MemberId(1),
            reason: "show's over".into(),
        };
        assert_eq!(event_room(&closed), Some(SLOT));
        assert_eq!(
            apply(&mut r, closed),
            Applied::Removed(RoomEvent::RoomClosed {
                by: MemberId(1),
                reason: "show's over".into(),
                seq: Seq(12)
            })
        );
        assert!(r.members().is_empty());
        // The state stays readable; the skipped seq 11 is counted.
        assert!(r.state("title").is_some());
        assert_eq!((r.last_seq(), r.gaps()), (Seq(12), 1));
        // Another room's close is not this room's event.
        assert_eq!(
            apply(
                &mut r,
                ServerMessage::RoomClosed {
                    room: RoomSlot(8),
                    seq: Seq(13),
                    by: MemberId(1),
                    reason: String::new(),
                }
            ),
            Applied::NotRoomEvent
        );
        assert_eq!(
            event_room(&ServerMessage::Ack {
                request_id: 1,
                room: SLOT,
                seq: Seq(12)
            }),
            None
        );
    }

    #[test]
    fn presence_changes_update_the_member_list() {
        let mut r = replica();
        assert_eq!(
            apply(
                &mut r,
                ServerMessage::PresenceChanged {
                    room: SLOT,
                    seq: Seq(11),
                    member: MemberId(1),
                    presence: Presence::Reconnecting,
                }
            ),
            Applied::Event(RoomEvent::PresenceChanged {
                member: MemberId(1),
                presence: Presence::Reconnecting,
                seq: Seq(11)
            })
        );
        assert_eq!(
            r.member(MemberId(1)).map(|m| m.presence),
            Some(Presence::Reconnecting)
        );
        assert_eq!(
            r.member(MemberId(2)).map(|m| m.presence),
            Some(Presence::Online)
        );
        // A stale replay of the same event changes nothing.
        assert!(matches!(
            apply(
                &mut r,
                ServerMessage::PresenceChanged {
                    room: SLOT,
                    seq: Seq(11),
                    member: MemberId(1),
                    presence: Presence::Away,
                }
            ),
            Applied::Stale { .. }
        ));
        assert_eq!(
            r.member(MemberId(1)).map(|m| m.presence),
            Some(Presence::Reconnecting)
        );
    }

    fn timeline(seq: u64, playing: bool, anchor: ServerTime, position_us: u64) -> TimelineState {
        TimelineState {
            name: "song".into(),
            playing,
            rate_ppm: 1_000_000,
            anchor_time: anchor,
            anchor_position_us: position_us,
            tempo_mbpm: Some(120_000),
            seq: Seq(seq),
        }
    }

    #[test]
    fn a_scheduled_timeline_change_keeps_the_previous_state_until_its_anchor() {
        let mut r = replica();
        let start = NOW;
        // Playing from 0 at NOW.
        let playing = timeline(11, true, start, 0);
        assert_eq!(
            apply(
                &mut r,
                ServerMessage::TimelineChanged {
                    room: SLOT,
                    seq: Seq(11),
                    timeline: playing.clone(),
                    by: MemberId(1),
                }
            ),
            Applied::Event(RoomEvent::TimelineChanged {
                timeline: playing.clone(),
                by: MemberId(1),
                seq: Seq(11)
            })
        );
        let at = |us: u64| ServerTime(start.0 + us);
        assert_eq!(r.timeline_at("song", at(500_000)), Some(&playing));
        // A pause at position 2 s, scheduled for NOW + 2 s, arrives at NOW + 1 s.
        let paused = timeline(12, false, at(2_000_000), 2_000_000);
        r.apply(
            ServerMessage::TimelineChanged {
                room: SLOT,
                seq: Seq(12),
                timeline: paused.clone(),
                by: MemberId(1),
            },
            at(1_000_000),
        );
        let position = |r: &RoomReplica, t: ServerTime| {
            r.timeline_schedule("song").map(|s| s.position_us_at(t))
        };
        assert_eq!(r.timeline_at("song", at(1_999_999)), Some(&playing));
        assert_eq!(position(&r, at(1_500_000)), Some(1_500_000));
        assert_eq!(r.timeline_at("song", at(2_000_000)), Some(&paused));
        assert_eq!(position(&r, at(9_000_000)), Some(2_000_000));
        // The view lists the newest state.
        assert_eq!(r.view().timelines.get("song"), Some(&paused));
        assert_eq!(r.timeline_names().collect::<Vec<_>>(), ["song"]);
        assert_eq!(r.timeline_at("other", NOW), None);
    }

    #[test]
    fn packs_and_chat_history() {
        let mut r = replica();
        let pack = PackInfo {
            hash: vec![9; 32],
            name: "cover.png".into(),
            media_type: "image/png".into(),
            size: 1234,
            uploader: MemberId(1),
        };
        assert_eq!(
            apply(
                &mut r,
                ServerMessage::PackAvailable {
                    room: SLOT,
                    seq: Seq(11),
                    pack: pack.clone(),
                }
            ),
            Applied::Event(RoomEvent::PackAvailable {
                pack: pack.clone(),
                seq: Seq(11)
            })
        );
        assert_eq!(r.packs(), std::slice::from_ref(&pack));
        assert_eq!(r.pack(&[9; 32]), Some(&pack));
        assert_eq!(r.pack(&[8; 32]), None);
        // Chat: commands of kind "chat", bounded, with the arrival time.
        apply(
            &mut r,
            ServerMessage::CommandEvent {
                room: SLOT,
                seq: Seq(12),
                author: MemberId(1),
                kind: "move".into(),
                payload: vec![],
                idempotency_key: None,
            },
        );
        assert_eq!(r.chat().len(), 0);
        for i in 0..(CHAT_HISTORY as u64 + 5) {
            apply(
                &mut r,
                ServerMessage::CommandEvent {
                    room: SLOT,
                    seq: Seq(13 + i),
                    author: MemberId(1),
                    kind: "chat".into(),
                    payload: vec![i as u8],
                    idempotency_key: None,
                },
            );
        }
        let chat: Vec<&ChatEntry> = r.chat().collect();
        assert_eq!(chat.len(), CHAT_HISTORY);
        assert_eq!((chat[0].payload[0], chat[0].seq), (5, Seq(18)));
        assert!(
            chat.iter()
                .all(|c| c.time == NOW && c.author == MemberId(1))
        );
        assert_eq!(r.view().chat.len(), chat.len());
        assert_eq!(r.view().packs, [pack]);
    }

    #[test]
    fn a_snapshot_replaces_everything() {
        let mut r = replica();
        apply(&mut r, set(11, "title", Some(b"changed"), 5));
        let mut fresh = bare(
            MemberId(2),
            Role::Host,
            vec![member(2, "bob", Role::Host)],
            vec![],
            9,
            Seq(40),
            PermissionPolicy::default(),
        );
        fresh.kind = RoomKind::Relay;
        fresh.failover = FailoverMode::PauseTimeline;
        fresh.timelines = vec![timeline(30, true, NOW, 0)];
        fresh.chat = (0..60)
            .map(|i| ChatEntry {
                seq: Seq(i),
                author: MemberId(1),
                time: NOW,
                payload: vec![],
            })
            .collect();
        assert_eq!(r.replace(fresh), RoomEvent::Resynced { seq: Seq(40) });
        assert_eq!(r.last_seq(), Seq(40));
        assert_eq!(r.state("title"), None);
        assert_eq!(r.role(), Role::Host);
        assert_eq!(r.members().len(), 1);
        assert_eq!(r.kind(), RoomKind::Relay);
        assert_eq!(r.failover(), FailoverMode::PauseTimeline);
        assert!(r.timeline_at("song", NOW).is_some());
        assert_eq!(
            r.chat().len(),
            60,
            "a longer snapshot history is kept whole"
        );
        // Events continue from the snapshot's seq.
        assert!(matches!(
            apply(&mut r, set(40, "k", Some(b"v"), 10)),
            Applied::Stale { .. }
        ));
        assert!(matches!(
            apply(&mut r, set(41, "k", Some(b"v"), 10)),
            Applied::Event(_)
        ));
        assert_eq!(r.gaps(), 0);
    }
}
