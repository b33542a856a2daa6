//! Small identifier and value types shared by many messages.
//!
//! All are newtypes over integers and encode exactly as their inner integer
//! (postcard varint), so they cost nothing on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Client request correlation id, chosen by the client, echoed in the reply or error.
pub type RequestId = u32;

/// Protocol version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A room's short numeric id on one server, used by ticks instead of the room's
/// string id. Assigned when the room is created; never reused while the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomSlot(pub u32);

/// A member of one room. Assigned by the room in join order starting at 1, never
/// reused within the room's life, so a late tick can never be attributed to a
/// member who joined after the sender left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub u32);

/// A room's sequence number: every reliable room event (member joined or left,
/// state changed, command) gets the next one, giving all members one total order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The following sequence number (saturating: 2^64 events never happen, and
    /// a peer's value must not be able to cause an overflow panic).
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

/// Server time: microseconds since the Unix epoch on the server's clock (which is
/// monotonic while the server runs). Clients sync to it with ping / pong.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ServerTime(pub u64);

impl ServerTime {
    pub fn from_micros(us: u64) -> Self {
        ServerTime(us)
    }
    pub fn as_micros(self) -> u64 {
        self.0
    }
    pub fn saturating_add_micros(self, us: u64) -> Self {
        ServerTime(self.0.saturating_add(us))
    }
    pub fn saturating_since(self, earlier: ServerTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A member's role in a room. The first member of a new room is its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Host,
    Editor,
    Viewer,
}

impl Role {
    /// Every role, highest first.
    pub const ALL: [Role; 3] = [Role::Host, Role::Editor, Role::Viewer];

    /// Host 2, editor 1, viewer 0. A member may grant at most its own rank, and
    /// may kick or re-role only members of lower or equal rank.
    pub const fn rank(self) -> u8 {
        match self {
            Role::Host => 2,
            Role::Editor => 1,
            Role::Viewer => 0,
        }
    }

    /// The lowercase name, as [`Display`](fmt::Display) writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }

    /// The role named `name`; `leader` maps to host, `participant` to editor and
    /// `follower` to viewer.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "host" | "leader" | "owner" => Some(Role::Host),
            "editor" | "participant" => Some(Role::Editor),
            "viewer" | "follower" => Some(Role::Viewer),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a member is reachable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Presence {
    /// Connected.
    Online,
    /// Its connection dropped; it may resume within the server's resume window.
    Reconnecting,
    /// Connected but silent past the room's heartbeat timeout (hosts).
    Away,
}

impl Presence {
    pub const fn name(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Reconnecting => "reconnecting",
            Presence::Away => "away",
        }
    }
}

/// What a room keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RoomKind {
    /// State, commands with history, timelines, packs.
    #[default]
    Normal,
    /// Stores nothing: no state, no history, no packs, never persisted; only
    /// relays broadcasts, direct messages and ticks between its members.
    Relay,
}

/// What happens when a room's host goes silent or away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum FailoverMode {
    /// The host role passes to the room's delegate if one is set and online,
    /// else to the online member who joined earliest (editors before viewers).
    #[default]
    NextMember,
    /// Nobody is promoted; every playing timeline is paused.
    PauseTimeline,
    /// Members are told the host is away; nothing else changes.
    Nothing,
}

/// Why a member left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaveReason {
    /// The member sent `Leave`.
    Left,
    /// The member's connection closed or failed.
    Disconnected,
    /// The member could not keep up with the room's reliable events and was cut off.
    TooSlow,
    /// The member's connection went silent past the heartbeat timeout.
    TimedOut,
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaveReason::Left => "left",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::TooSlow => "too slow",
            LeaveReason::TimedOut => "timed out",
        })
    }
}
