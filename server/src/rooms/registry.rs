//! Finds rooms by id and creates them on first join, within the server's cap.

use super::{RoomHandle, task};
use crate::clock::ServerClock;
use crate::core::{PasswordHashString, ResumeKey, Room, RoomConfig, RoomRecords, SessionId};
use crate::packs::{PackHash, PackStore, RoomKey};
use crate::stats::ServerStats;
use crate::store::StoreHandle;
use chorus_protocol::{
    ErrorCode, ErrorDetail, ErrorFrame, PermissionPolicy, RequestId, Role, RoomSlot, ServerTime,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

/// Server-wide room settings.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// Rooms this server holds at once.
    pub max_rooms: u32,
    /// Defaults for every new room (a join may lower `max_members`).
    pub room: RoomConfig,
    /// Requests queued to one room task before senders wait.
    pub inbox_capacity: usize,
    /// Room templates by name, for joins that create a room with
    /// `JoinOption::Template`.
    pub templates: HashMap<String, RoomTemplate>,
}

/// A server-side preset for new rooms, named in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomTemplate {
    /// Rules over the default policy.
    pub policy: PermissionPolicy,
    /// Member cap (never above the server's).
    pub max_members: Option<u32>,
    /// Role of members who join without a token, after the first.
    pub default_role: Option<Role>,
    /// Never expire when empty.
    pub persistent: bool,
}

/// How a join that may create a room wants it made.
#[derive(Debug, Clone, Default)]
pub struct RoomCreate {
    /// Create when missing. With an empty room id: make up an invite code.
    pub create: bool,
    pub max_members: Option<u32>,
    /// Already validated against the limits.
    pub policy: Option<PermissionPolicy>,
    pub template: Option<String>,
    pub password: Option<PasswordHashString>,
    pub kind: Option<chorus_protocol::RoomKind>,
    pub failover: Option<chorus_protocol::FailoverMode>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            max_rooms: 1000,
            room: RoomConfig::default(),
            inbox_capacity: 1024,
            templates: HashMap::new(),
        }
    }
}

/// A room as `/stats` lists it.
#[derive(Debug, Clone)]
pub struct RoomSummary {
    pub id: String,
    pub slot: RoomSlot,
    pub members: usize,
    pub created_at: ServerTime,
    pub last_activity: ServerTime,
    /// Requests waiting in the room's inbox.
    pub inbox_depth: usize,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct RoomRegistry {
    rooms: Mutex<HashMap<String, RoomHandle>>,
    next_slot: Mutex<u32>,
    settings: RoomSettings,
    clock: ServerClock,
    stats: Arc<ServerStats>,
    /// Where the rooms' packs are kept; a room's go with it.
    packs: Arc<PackStore>,
    /// Where rooms are kept across restarts; `None`: memory only.
    store: Option<StoreHandle>,
    this: Weak<RoomRegistry>,
}

/// A member of a room read back after a restart, waiting for its client to
/// resume with the token behind `key`.
#[derive(Debug, Clone)]
pub struct RestoredMember {
    pub room: RoomHandle,
    pub member: chorus_protocol::MemberId,
    pub key: ResumeKey,
    pub token_expires: Option<ServerTime>,
}

impl RoomRegistry {
    pub fn new(
        settings: RoomSettings,
        clock: ServerClock,
        stats: Arc<ServerStats>,
        packs: Arc<PackStore>,
        store: Option<StoreHandle>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| RoomRegistry {
            rooms: Mutex::new(HashMap::new()),
            next_slot: Mutex::new(1),
            settings,
            clock,
            stats,
            packs,
            store,
            this: this.clone(),
        })
    }

    /// The store rooms are kept in, if any.
    pub fn store(&self) -> Option<&StoreHandle> {
        self.store.as_ref()
    }

    fn spawn(&self, room: Room) -> RoomHandle {
        task::spawn(
            room,
            self.settings.inbox_capacity,
            self.this.clone(),
            self.clock,
            self.stats.clone(),
            self.store.clone(),
        )
    }

    /// Starts the rooms read back from the store (before serving), with
    /// their packs. Returns the members waiting to be resumed, and what was
    /// left out (rooms whose records do not fit together; packs without
    /// content), as messages for the log. Slots stay what they were, so a
    /// resuming client's room numbers still hold.
    pub fn restore(
        &self,
        records: Vec<RoomRecords>,
        packs: &HashMap<PackHash, bytes::Bytes>,
        mut new_session: impl FnMut() -> SessionId,
    ) -> (Vec<RestoredMember>, Vec<String>) {
        let now = self.clock.now();
        let mut members = Vec::new();
        let mut problems = Vec::new();
        let mut rooms = self.rooms();
        for records in records {
            let id = records.room.id.clone();
            let room_packs = records.room.packs.clone();
            let mut room =
                match Room::restore(records, self.settings.room.clone(), now, &mut new_session) {
                    Ok(room) => room,
                    Err(e) => {
                        problems.push(e.to_string());
                        continue;
                    }
                };
            if !self
                .store
                .as_ref()
                .is_some_and(|s| s.durability().tracks_changes())
            {
                // `None` durability: nothing is written until shutdown.
                room.stop_tracking_changes();
            }
            let slot = room.slot();
            for name in self
                .packs
                .restore_room(&RoomKey::slot(slot), &room_packs, packs)
            {
                problems.push(format!("room {id:?}: pack {name:?} has no content"));
            }
            let waiting = room.resumable_members();
            let handle = self.spawn(room);
            for (member, key, token_expires) in waiting {
                members.push(RestoredMember {
                    room: handle.clone(),
                    member,
                    key,
                    token_expires,
                });
            }
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            *next = (*next).max(slot.0.saturating_add(1)).max(1);
            rooms.insert(id, handle);
        }
        (members, problems)
    }

    /// Has every room hand what it keeps to the store (at shutdown, after
    /// the sessions have detached): in `None` durability the whole images
    /// are written at once, with the packs they list; otherwise each room
    /// queues its last changes. Then waits for the commit, and closes the
    /// store (rooms that go on meanwhile are no longer kept).
    pub async fn persist_all(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let handles: Vec<RoomHandle> = self.rooms().values().cloned().collect();
        let mut images = Vec::new();
        for handle in handles {
            let (reply, image) = tokio::sync::oneshot::channel();
            if handle
                .send(super::RoomRequest::Persist { reply })
                .await
                .is_err()
            {
                continue;
            }
            if let Ok(Some(image)) = image.await {
                images.push(image);
            }
        }
        let result = if store.durability().tracks_changes() {
            store.flush().await
        } else {
            let mut packs = Vec::new();
            for image in &images {
                for info in image.room.iter().flat_map(|r| &r.packs) {
                    if let Ok(hash) = <PackHash>::try_from(info.hash.as_slice())
                        && let Some((content, _)) = self.packs.content(&hash)
                        && !packs.iter().any(|(h, _)| *h == hash)
                    {
                        packs.push((hash, content));
                    }
                }
            }
            store.replace_all(images, packs).await
        };
        if result.is_err() || store.close().await.is_err() {
            tracing::error!("the store stopped before the rooms were written");
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        // Critical sections are single map operations; a panic cannot leave the
        // map half-changed, so a poisoned lock is still consistent.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    /// The room with `room_id`, and whether this call created it. Created when
    /// missing if `how.create` is set (an empty `room_id` then gets a fresh
    /// invite code), with the template, policy, member cap and password asked
    /// for; those are ignored when the room exists.
    pub fn get_or_create(
        &self,
        request_id: RequestId,
        room_id: &str,
        how: &RoomCreate,
    ) -> Result<(RoomHandle, bool), ErrorFrame> {
        let mut rooms = self.rooms();
        if let Some(handle) = rooms.get(room_id) {
            return Ok((handle.clone(), false));
        }
        if !how.create {
            return Err(ErrorFrame::new(
                Some(request_id),
                ErrorCode::RoomNotFound,
                format!("no room {room_id:?}; join with CreateIfMissing to create it"),
            ));
        }
        if rooms.len() as u64 >= u64::from(self.settings.max_rooms) {
            return Err(ErrorFrame::new(
                Some(request_id),
                ErrorCode::TooManyRooms,
                "the server has its maximum number of rooms",
            )
            .with_detail(ErrorDetail::Limit {
                limit: u64::from(self.settings.max_rooms),
                actual: rooms.len() as u64 + 1,
            }));
        }
        let slot = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let slot = *next;
            // Slots are never reused while the server runs; 4 billion room
            // creations would be needed to wrap, and then old slots are long gone.
            *next = next.wrapping_add(1).max(1);
            RoomSlot(slot)
        };
        let mut config = self.settings.room.clone();
        if let Some(name) = &how.template {
            let Some(template) = self.settings.templates.get(name) else {
                return Err(ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::ProtocolViolation,
                    format!("this server has no room template {name:?}"),
                ));
            };
            config.policy = template.policy.clone();
            if let Some(max) = template.max_members {
                config.max_members = config.max_members.min(max);
            }
            if let Some(role) = template.default_role {
                config.default_role = role;
            }
            config.persistent = template.persistent;
        }
        if let Some(policy) = &how.policy {
            // The creator's rules come after the template's, so they win on
            // the same scope (the earliest strictly longer scope wins).
            let mut rules = policy.rules.clone();
            rules.append(&mut config.policy.rules);
            config.policy = PermissionPolicy { rules };
        }
        if let Some(max) = how.max_members {
            config.max_members = config.max_members.min(max);
        }
        config.password = how.password.clone();
        if let Some(kind) = how.kind {
            config.kind = kind;
        }
        if let Some(failover) = how.failover {
            config.failover = failover;
        }
        if config.kind == chorus_protocol::RoomKind::Relay {
            // A relay room stores nothing: not even while waiting for a
            // dropped member (its events are not kept to replay).
            config.event_log_len = 0;
            config.chat_history_len = 0;
        }
        let room_id = if room_id.is_empty() {
            // 31^8 codes: a collision is rare; retry a few times and give up
            // with a typed error (as when the OS has no randomness to give).
            match (0..16)
                .map_while(|_| crate::access::invite::try_new_invite_code().ok())
                .find(|code| !rooms.contains_key(code))
            {
                Some(code) => code,
                None => {
                    return Err(ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::Internal,
                        "could not make a free invite code; retry",
                    ));
                }
            }
        } else {
            room_id.to_owned()
        };
        let room_id = room_id.as_str();
        let mut room = Room::new(room_id.to_owned(), slot, config, self.clock.now());
        if self
            .store
            .as_ref()
            .is_some_and(|s| s.durability().tracks_changes())
        {
            room.track_changes();
        }
        let handle = self.spawn(room);
        rooms.insert(room_id.to_owned(), handle.clone());
        self.stats.rooms_created.inc();
        tracing::debug!(room = %room_id, slot = slot.0, "room created");
        Ok((handle, true))
    }

    /// The room with `room_id`, if it exists.
    pub fn get(&self, room_id: &str) -> Option<RoomHandle> {
        self.rooms().get(room_id).cloned()
    }

    /// Drops `handle`'s room from the registry, if it is still the one under
    /// its id, and its packs (content no other room uses is freed; its
    /// hashes are returned, with the epoch of their freeing).
    pub(super) fn forget(&self, handle: &RoomHandle) -> Vec<(PackHash, u64)> {
        let freed = self.packs.drop_room(&RoomKey::slot(handle.slot()));
        let mut rooms = self.rooms();
        if rooms
            .get(handle.id())
            .is_some_and(|h| h.slot() == handle.slot())
        {
            rooms.remove(handle.id());
        }
        freed
    }

    /// Rooms held now.
    pub fn len(&self) -> usize {
        self.rooms().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A summary of every room, sorted by id.
    pub fn summaries(&self) -> Vec<RoomSummary> {
        let mut list: Vec<RoomSummary> = self
            .rooms()
            .values()
            .map(|h| RoomSummary {
                id: h.id().to_owned(),
                slot: h.slot(),
                members: h.shared.fanout.load().targets.len(),
                created_at: h.shared.created_at,
                last_activity: ServerTime(h.shared.last_activity.load(Ordering::Relaxed)),
                inbox_depth: h.inbox_depth(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }
}
