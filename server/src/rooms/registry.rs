//! Finds rooms by id and creates them on first join, within the server's cap.

use super::{RoomHandle, task};
use crate::clock::ServerClock;
use crate::core::{Room, RoomConfig};
use crate::stats::ServerStats;
use chorus_protocol::{ErrorCode, ErrorDetail, ErrorFrame, RequestId, RoomSlot, ServerTime};
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
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            max_rooms: 1000,
            room: RoomConfig::default(),
            inbox_capacity: 1024,
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
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct RoomRegistry {
    rooms: Mutex<HashMap<String, RoomHandle>>,
    next_slot: Mutex<u32>,
    settings: RoomSettings,
    clock: ServerClock,
    stats: Arc<ServerStats>,
    this: Weak<RoomRegistry>,
}

impl RoomRegistry {
    pub fn new(settings: RoomSettings, clock: ServerClock, stats: Arc<ServerStats>) -> Arc<Self> {
        Arc::new_cyclic(|this| RoomRegistry {
            rooms: Mutex::new(HashMap::new()),
            next_slot: Mutex::new(1),
            settings,
            clock,
            stats,
            this: this.clone(),
        })
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        // Critical sections are single map operations; a panic cannot leave the
        // map half-changed, so a poisoned lock is still consistent.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    /// The room with `room_id`; created when missing if `create` is set, with
    /// `max_members` (already checked against the server's cap) if given.
    pub fn get_or_create(
        &self,
        request_id: RequestId,
        room_id: &str,
        create: bool,
        max_members: Option<u32>,
    ) -> Result<RoomHandle, ErrorFrame> {
        let mut rooms = self.rooms();
        if let Some(handle) = rooms.get(room_id) {
            return Ok(handle.clone());
        }
        if !create {
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
        if let Some(max) = max_members {
            config.max_members = max;
        }
        let room = Room::new(room_id.to_owned(), slot, config, self.clock.now());
        let handle = task::spawn(
            room,
            self.settings.inbox_capacity,
            self.this.clone(),
            self.clock,
            self.stats.clone(),
        );
        rooms.insert(room_id.to_owned(), handle.clone());
        self.stats.rooms_created.inc();
        tracing::debug!(room = %room_id, slot = slot.0, "room created");
        Ok(handle)
    }

    /// Drops `handle`'s room from the registry, if it is still the one under its id.
    pub(super) fn forget(&self, handle: &RoomHandle) {
        let mut rooms = self.rooms();
        if rooms
            .get(handle.id())
            .is_some_and(|h| h.slot() == handle.slot())
        {
            rooms.remove(handle.id());
        }
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
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }
}
