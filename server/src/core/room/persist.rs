//! What of a room outlives the process: the records a store keeps, the
//! changes a room hands out after each input ([`Room::take_changes`]), and a
//! room rebuilt from its records after a restart ([`Room::restore`]).
//!
//! The room only describes what changed; writing it anywhere (and when, and
//! how durably) is the shell's business. Nothing here does I/O or reads a
//! clock. A relay room keeps nothing, so it never has changes.
//!
//! Members are kept with the hash of their session's resume token, so after
//! a restart every member is back as reconnecting (its resume window counted
//! from the restart) and its client can resume with the token it holds.

use super::{
    BanKey, ClientIdentity, CommandResult, Member, PasswordHashString, Reclaim, Room, RoomConfig,
    StateValue,
};
use crate::core::SessionId;
use chorus_protocol::{
    ChatEntry, DisplayInfo, FailoverMode, LeaveReason, MemberId, PackInfo, PermissionPolicy,
    Presence, Role, RoomKind, RoomSlot, Seq, ServerMessage, ServerTime, TimelineState,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

/// The SHA-256 of a session's resume token: what a room keeps of it, so the
/// token itself is never written to disk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResumeKey(pub [u8; 32]);

impl std::fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResumeKey({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// What the room's creator chose (the rest of a room's settings are the
/// server's, and a restart takes the server's current ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredChoices {
    pub max_members: u32,
    pub default_role: Role,
    pub policy: PermissionPolicy,
    pub persistent: bool,
    pub failover: FailoverMode,
}

/// One member as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMember {
    pub id: MemberId,
    pub role: Role,
    pub display: DisplayInfo,
    pub ip: IpAddr,
    pub subject: Option<String>,
    pub presence: Presence,
    pub resume_key: Option<ResumeKey>,
    /// When the join token this member joined with runs out.
    pub token_expires: Option<ServerTime>,
}

/// A ban as kept: on the token subject when the kicked member had one, else
/// on its address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StoredBan {
    Subject { subject: String, until: ServerTime },
    Ip { ip: IpAddr, until: ServerTime },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReclaim {
    pub host: MemberId,
    pub substitute: MemberId,
    pub substitute_role: Role,
    pub deadline: ServerTime,
}

/// Everything of a room but its state entries, logged events, chat history
/// and idempotency keys (each kept as records of their own, so one update
/// writes one entry, not the whole room).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRoom {
    pub id: String,
    pub slot: RoomSlot,
    pub choices: StoredChoices,
    pub members: Vec<StoredMember>,
    pub next_member: u32,
    pub state_version: u64,
    pub last_seq: Seq,
    pub timelines: Vec<TimelineState>,
    pub packs: Vec<PackInfo>,
    pub delegate: Option<MemberId>,
    pub reclaim: Option<StoredReclaim>,
    pub created_at: ServerTime,
    pub empty_since: Option<ServerTime>,
    /// Argon2 PHC string, never the password.
    pub password: Option<String>,
    pub password_generation: u64,
    pub bans: Vec<StoredBan>,
}

/// One state entry as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub version: u64,
    pub author: MemberId,
}

/// What to do with a room's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Apply these changes over what is kept.
    Update,
    /// Drop whatever is kept of the room first (its first write, or a whole
    /// image), then write these.
    Replace,
    /// The room has ended: drop everything kept of it.
    Delete,
}

/// What changed in a room since the last [`Room::take_changes`].
#[derive(Debug, Clone, PartialEq)]
pub struct RoomChanges {
    pub room_id: String,
    /// The room's slot: a `Delete` removes only the records of this room,
    /// not of a room created since under the same id.
    pub slot: RoomSlot,
    pub kind: ChangeKind,
    /// The room record, when it changed.
    pub room: Option<StoredRoom>,
    /// State keys set (`Some`) or deleted (`None`).
    pub state: Vec<(String, Option<StoredValue>)>,
    /// Events to keep, in seq order.
    pub events: Vec<(Seq, ServerMessage)>,
    /// Kept events with a lower seq are gone from the log.
    pub events_from: Option<Seq>,
    pub chat: Vec<ChatEntry>,
    /// Kept chat entries with a lower seq are gone from the history.
    pub chat_from: Option<Seq>,
    /// Idempotency keys remembered (`Some(seq)`) or forgotten (`None`).
    pub idempotency: Vec<(String, Option<Seq>)>,
}

impl RoomChanges {
    fn new(room_id: String, slot: RoomSlot, kind: ChangeKind) -> Self {
        RoomChanges {
            room_id,
            slot,
            kind,
            room: None,
            state: Vec::new(),
            events: Vec::new(),
            events_from: None,
            chat: Vec::new(),
            chat_from: None,
            idempotency: Vec::new(),
        }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.kind == ChangeKind::Update
            && self.room.is_none()
            && self.state.is_empty()
            && self.events.is_empty()
            && self.events_from.is_none()
            && self.chat.is_empty()
            && self.chat_from.is_none()
            && self.idempotency.is_empty()
    }
}

/// A room's records, as read back from a store.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomRecords {
    pub room: StoredRoom,
    /// In key order.
    pub state: Vec<(String, StoredValue)>,
    /// In seq order.
    pub events: Vec<(Seq, ServerMessage)>,
    /// In seq order.
    pub chat: Vec<ChatEntry>,
    pub idempotency: Vec<(String, Seq)>,
}

/// Why a room's records cannot make a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("the records of room {room:?} do not fit together: {what}")]
    Inconsistent { room: String, what: String },
}

/// What a room has handed out already, so the next changes are only the new.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// Never written: the next changes replace whatever is kept.
    fresh: bool,
    /// The room record as last handed out.
    room: Option<StoredRoom>,
    dirty_state: BTreeSet<String>,
    /// The highest event seq handed out, and the lowest kept.
    events_to: Seq,
    events_from: Seq,
    chat_to: Seq,
    chat_from: Seq,
    idempotency: Vec<(String, Option<Seq>)>,
    deleted: bool,
}

impl Journal {
    pub(super) fn state_changed(&mut self, key: &str) {
        if !self.dirty_state.contains(key) {
            self.dirty_state.insert(key.to_owned());
        }
    }

    pub(super) fn idempotency_changed(&mut self, key: String, seq: Option<Seq>) {
        self.idempotency.push((key, seq));
    }
}

impl Room {
    /// From now on, remember what changes so [`take_changes`](Self::take_changes)
    /// can hand it out. The first changes then replace whatever a store
    /// keeps of a room with this id. Relay rooms keep nothing and ignore this.
    pub fn track_changes(&mut self) {
        if self.config.kind == RoomKind::Relay {
            return;
        }
        self.journal = Some(Journal {
            fresh: true,
            ..Journal::default()
        });
    }

    /// Stops remembering changes (a restored room in a store that is only
    /// written whole, at shutdown).
    pub fn stop_tracking_changes(&mut self) {
        self.journal = None;
    }

    /// What changed since the last call (everything, the first time), or
    /// `None` when nothing did or changes are not tracked.
    pub fn take_changes(&mut self) -> Option<RoomChanges> {
        let mut journal = self.journal.take()?;
        let changes = self.changes_since(&mut journal);
        self.journal = Some(journal);
        changes.filter(|c| !c.is_empty())
    }

    /// Everything kept of the room, as changes that replace what a store
    /// holds (for writing all rooms at once, e.g. at shutdown). `None` for a
    /// relay room or one that has ended.
    pub fn image(&self) -> Option<RoomChanges> {
        if self.config.kind == RoomKind::Relay || self.is_ended() {
            return None;
        }
        let mut journal = Journal {
            fresh: true,
            ..Journal::default()
        };
        self.changes_since(&mut journal)
    }

    fn changes_since(&self, journal: &mut Journal) -> Option<RoomChanges> {
        if journal.deleted {
            return None;
        }
        if self.is_ended() {
            journal.deleted = true;
            // Never written: nothing to delete.
            return (!journal.fresh)
                .then(|| RoomChanges::new(self.id.clone(), self.slot, ChangeKind::Delete));
        }
        let fresh = std::mem::take(&mut journal.fresh);
        let kind = if fresh {
            ChangeKind::Replace
        } else {
            ChangeKind::Update
        };
        let mut changes = RoomChanges::new(self.id.clone(), self.slot, kind);
        let record = self.stored_room();
        if journal.room.as_ref() != Some(&record) {
            journal.room = Some(record.clone());
            changes.room = Some(record);
        }
        if fresh {
            changes.state = self
                .state
                .iter()
                .map(|(k, v)| (k.clone(), Some(stored_value(v))))
                .collect();
            journal.dirty_state.clear();
            changes.idempotency = self
                .idempotency_order
                .iter()
                .filter_map(|k| Some((k.clone(), Some(self.idempotency.get(k)?.seq))))
                .collect();
            journal.idempotency.clear();
        } else {
            changes.state = std::mem::take(&mut journal.dirty_state)
                .into_iter()
                .map(|k| {
                    let v = self.state.get(&k).map(stored_value);
                    (k, v)
                })
                .collect();
            changes.idempotency = std::mem::take(&mut journal.idempotency);
        }
        changes.events = self
            .events
            .iter()
            .filter(|e| e.seq > journal.events_to)
            .map(|e| (e.seq, e.message.clone()))
            .collect();
        if let Some((seq, _)) = changes.events.last() {
            journal.events_to = *seq;
        }
        let events_from = self.events.front().map_or(self.last_seq.next(), |e| e.seq);
        if events_from != journal.events_from {
            journal.events_from = events_from;
            changes.events_from = Some(events_from);
        }
        changes.chat = self
            .chat
            .iter()
            .filter(|c| c.seq > journal.chat_to)
            .cloned()
            .collect();
        if let Some(c) = changes.chat.last() {
            journal.chat_to = c.seq;
        }
        let chat_from = self.chat.front().map_or(self.last_seq.next(), |c| c.seq);
        if chat_from != journal.chat_from {
            journal.chat_from = chat_from;
            changes.chat_from = Some(chat_from);
        }
        Some(changes)
    }

    fn stored_room(&self) -> StoredRoom {
        StoredRoom {
            id: self.id.clone(),
            slot: self.slot,
            choices: StoredChoices {
                max_members: self.config.max_members,
                default_role: self.config.default_role,
                policy: self.config.policy.clone(),
                persistent: self.config.persistent,
                failover: self.config.failover,
            },
            members: self
                .members
                .iter()
                .map(|(id, m)| StoredMember {
                    id: *id,
                    role: m.role,
                    display: m.display.clone(),
                    ip: m.identity.ip,
                    subject: m.identity.subject.clone(),
                    presence: m.presence,
                    resume_key: m.resume_key,
                    token_expires: m.token_expires,
                })
                .collect(),
            next_member: self.next_member,
            state_version: self.state_version,
            last_seq: self.last_seq,
            timelines: self.timelines.values().cloned().collect(),
            packs: self.packs.clone(),
            delegate: self.delegate,
            reclaim: self.reclaim.map(|r| StoredReclaim {
                host: r.host,
                substitute: r.substitute,
                substitute_role: r.substitute_role,
                deadline: r.deadline,
            }),
            created_at: self.created_at,
            empty_since: self.empty_since,
            password: self.password.as_ref().map(|p| p.0.to_string()),
            password_generation: self.password_generation,
            bans: {
                let mut bans: Vec<StoredBan> = self
                    .bans
                    .iter()
                    .map(|(key, until)| match key {
                        BanKey::Subject(subject) => StoredBan::Subject {
                            subject: subject.clone(),
                            until: *until,
                        },
                        BanKey::Ip(ip) => StoredBan::Ip {
                            ip: *ip,
                            until: *until,
                        },
                    })
                    .collect();
                // A map's order is arbitrary; the record must not change
                // when the bans did not.
                bans.sort();
                bans
            },
        }
    }

    /// A room rebuilt from its records at `now`, after a restart. `config`
    /// holds the server's current room settings; the creator's choices come
    /// from the records. Every member is back as reconnecting (its session
    /// is gone) for the resume window from `now`, each with a placeholder
    /// session from `new_session` (never a live one), and the others hear
    /// of it as they would of a dropped connection. Changes are tracked, and
    /// the next ones update the records read.
    pub fn restore(
        records: RoomRecords,
        mut config: RoomConfig,
        now: ServerTime,
        mut new_session: impl FnMut() -> SessionId,
    ) -> Result<Room, RestoreError> {
        let RoomRecords {
            room: stored,
            state,
            events,
            chat,
            idempotency,
        } = records;
        let inconsistent = |what: String| RestoreError::Inconsistent {
            room: stored.id.clone(),
            what,
        };
        if stored
            .members
            .iter()
            .any(|m| m.id.0 == 0 || m.id.0 >= stored.next_member)
        {
            return Err(inconsistent(
                "a member id is not below the next member id".into(),
            ));
        }
        if let Some((seq, _)) = events.iter().find(|(seq, _)| *seq > stored.last_seq) {
            return Err(inconsistent(format!(
                "event {} is past the room's last seq {}",
                seq.0, stored.last_seq.0
            )));
        }
        config.max_members = config.max_members.min(stored.choices.max_members);
        config.default_role = stored.choices.default_role;
        config.policy = stored.choices.policy.clone();
        config.persistent = stored.choices.persistent;
        config.failover = stored.choices.failover;
        config.kind = RoomKind::Normal;
        config.password = stored
            .password
            .clone()
            .map(|p| PasswordHashString(Arc::from(p)));
        let mut room = Room::new(stored.id.clone(), stored.slot, config, stored.created_at);
        room.password_generation = stored.password_generation;
        room.next_member = stored.next_member;
        room.state_version = stored.state_version;
        room.last_seq = stored.last_seq;
        room.timelines = stored
            .timelines
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        room.packs = stored.packs.clone();
        room.delegate = stored.delegate;
        room.reclaim = stored.reclaim.map(|r| Reclaim {
            host: r.host,
            substitute: r.substitute,
            substitute_role: r.substitute_role,
            deadline: r.deadline,
        });
        room.empty_since = stored.empty_since.map(|since| since.max(now));
        room.bans = stored
            .bans
            .iter()
            .map(|ban| match ban {
                StoredBan::Subject { subject, until } => (BanKey::Subject(subject.clone()), *until),
                StoredBan::Ip { ip, until } => (BanKey::Ip(*ip), *until),
            })
            .collect();
        for (key, value) in state {
            room.state_bytes += (key.len() + value.value.len()) as u64;
            room.state.insert(
                key,
                StateValue {
                    value: value.value,
                    version: value.version,
                    author: value.author,
                },
            );
        }
        for (seq, message) in events {
            room.log_event(seq, &message);
        }
        for entry in chat.into_iter().rev().take(room.config.chat_history_len) {
            room.chat.push_front(entry);
        }
        let mut idempotency = idempotency;
        idempotency.sort_by_key(|(_, seq)| *seq);
        for (key, seq) in idempotency {
            room.remember_idempotency_key(key, CommandResult { seq });
        }
        // What was read is what a store holds: only what changes from here
        // on (the members' reconnecting, first of all) is written back.
        let mut journal = Journal::default();
        let _ = room.changes_since(&mut journal);
        journal.room = None;
        room.journal = Some(journal);
        room.last_activity = now;
        let mut placeholders = Vec::new();
        for m in stored.members {
            let session = new_session();
            placeholders.push(session);
            room.by_session.insert(session, m.id);
            room.members.insert(
                m.id,
                Member {
                    session,
                    role: m.role,
                    display: m.display,
                    identity: ClientIdentity {
                        ip: m.ip,
                        subject: m.subject,
                    },
                    presence: m.presence,
                    detached_at: None,
                    detach_reason: LeaveReason::Disconnected,
                    last_heard: now,
                    silent: false,
                    resume_key: m.resume_key,
                    token_expires: m.token_expires,
                },
            );
        }
        if !room.members.is_empty() {
            room.empty_since = None;
        }
        // The connections are gone, as after a drop: each member waits,
        // reconnecting, for its client to resume.
        let resume_window = room.config.resume_window_us;
        for session in placeholders {
            if resume_window == 0 {
                if let Some(member) = room.by_session.get(&session).copied() {
                    room.remove_member(now, member, LeaveReason::Disconnected);
                }
            } else {
                room.detach(now, session, LeaveReason::Disconnected);
            }
        }
        // Nobody is connected to hear anything; the events are logged.
        room.outputs.clear();
        Ok(room)
    }

    /// The reconnecting members a restored room waits for, with the resume
    /// key of their session and their join token's end.
    pub fn resumable_members(&self) -> Vec<(MemberId, ResumeKey, Option<ServerTime>)> {
        self.members
            .iter()
            .filter(|(_, m)| m.presence == Presence::Reconnecting)
            .filter_map(|(id, m)| Some((*id, m.resume_key?, m.token_expires)))
            .collect()
    }
}

fn stored_value(v: &StateValue) -> StoredValue {
    StoredValue {
        value: v.value.clone(),
        version: v.version,
        author: v.author,
    }
}
