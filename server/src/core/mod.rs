//! The sans-IO room core: one plain state machine per room.
//!
//! A [`Room`] takes inputs with [`Room::handle`] (time comes in as an argument),
//! and queues outputs that the caller drains with [`Room::poll_output`]. It never
//! awaits, never touches a socket and never reads a clock, so every rule of a room
//! (membership, sequencing, state versions, idempotency, permissions, limits,
//! idle expiry) is tested here deterministically, and is the same for every
//! transport.
//!
//! This module must not depend on tokio, on the transports or on the session: it
//! knows sessions only as opaque [`SessionId`]s that the shell gives it.

mod room;

pub use room::{
    AuditEvent, ChangeKind, ClientIdentity, Failover, FanoutEntry, JoinAccess, PasswordHashString,
    Recipient, RestoreError, ResumeKey, Room, RoomChanges, RoomConfig, RoomInput, RoomOutput,
    RoomRecords, RoomStats, StoredBan, StoredChoices, StoredMember, StoredReclaim, StoredRoom,
    StoredValue, validate_room_id,
};

use std::fmt;

/// A connection on this server, as the room core knows it. Assigned by the
/// server, never by a client, so no client can act as another session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
