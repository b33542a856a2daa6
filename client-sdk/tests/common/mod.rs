//! What the fake-server test binaries share.
#![allow(dead_code)] // each test binary uses a different part of this module

use chorus_protocol::{
    DisplayInfo, FailoverMode, MemberId, MemberInfo, PermissionPolicy, Presence, Role, RoomKind,
    RoomSlot, RoomSnapshot, Seq, StateEntry,
};
use std::time::{SystemTime, UNIX_EPOCH};

/// The fake servers' certificate and key (a long-lived self-signed pair made
/// for these tests only; see tests/data/README).
pub const CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/test-server.cert.pem"
);
pub const KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/test-server.key.pem"
);

/// Now, in microseconds since the Unix epoch (the server-time unit).
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// A member as a snapshot lists it: member 1 hosts, others edit.
pub fn member(id: u32, name: &str) -> MemberInfo {
    MemberInfo {
        id: MemberId(id),
        role: if id == 1 { Role::Host } else { Role::Editor },
        display: DisplayInfo {
            name: name.into(),
            meta: vec![],
        },
        presence: Presence::Online,
    }
}

/// The room slot every fake server uses.
pub const SLOT: RoomSlot = RoomSlot(4);

/// The snapshot a fake server sends for a join: member 1 ("ada") hosts, the
/// client is member 2 (an editor) with `display`; `state` and the sequence
/// numbers are the caller's; the room has the default permission policy.
pub fn snapshot_with(
    room_id: &str,
    display: DisplayInfo,
    state: Vec<StateEntry>,
    state_version: u64,
    last_seq: Seq,
) -> RoomSnapshot {
    RoomSnapshot {
        room_id: room_id.into(),
        room: SLOT,
        you: MemberId(2),
        role: Role::Editor,
        members: vec![
            member(1, "ada"),
            MemberInfo {
                id: MemberId(2),
                role: Role::Editor,
                display,
                presence: Presence::Online,
            },
        ],
        state,
        state_version,
        last_seq,
        policy: PermissionPolicy::default(),
        kind: RoomKind::Normal,
        failover: FailoverMode::NextMember,
        timelines: vec![],
        packs: vec![],
        chat: vec![],
    }
}
