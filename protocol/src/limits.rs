//! The limits a server enforces and announces in its hello.
//!
//! Decoding is bounded by the frame size (no allocation can exceed the bytes that
//! arrived); these limits bound the meaning: string lengths, payload sizes and
//! counts. [`Limits::default`] holds the defaults the server starts with.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Size and count limits, announced to every client in `ServerHello`.
///
/// All lengths are in bytes (strings are measured in UTF-8 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest control-stream frame body, excluding its length prefix.
    pub max_frame_bytes: u32,
    /// Largest tick payload. Fits a browser datagram (Firefox allows 1024 bytes
    /// per datagram, Chromium 1211) with room for the tick header.
    pub max_tick_payload_bytes: u32,
    /// Rooms one session may be a member of at once.
    pub max_rooms_per_session: u32,
    /// Members in one room.
    pub max_members_per_room: u32,
    /// Room id length.
    pub max_room_id_len: u32,
    /// Display name length (also client name in the hello).
    pub max_name_len: u32,
    /// Opaque display metadata attached to a member.
    pub max_display_meta_bytes: u32,
    /// State key length.
    pub max_state_key_len: u32,
    /// One state value.
    pub max_state_value_bytes: u32,
    /// Sum of key and value bytes over a room's whole state.
    pub max_state_total_bytes: u32,
    /// Number of keys in a room's state.
    pub max_state_keys: u32,
    /// Command kind length.
    pub max_command_kind_len: u32,
    /// Command payload.
    pub max_command_payload_bytes: u32,
    /// Idempotency key length.
    pub max_idempotency_key_len: u32,
    /// Options in one join request (also options in the client hello).
    pub max_join_options: u32,
    /// Room password.
    pub max_password_len: u32,
    /// Reason text of a kick or room close.
    pub max_reason_len: u32,
    /// Signed join token.
    pub max_token_len: u32,
    /// API key in the client hello.
    pub max_api_key_len: u32,
    /// Rules in a room's permission policy.
    pub max_policy_rules: u32,
    /// Timeline name length.
    pub max_timeline_name_len: u32,
    /// Timelines in one room.
    pub max_timelines_per_room: u32,
    /// How far ahead a timeline change may be scheduled, in milliseconds.
    pub max_schedule_ahead_ms: u32,
    /// Direct and broadcast message payload.
    pub max_direct_payload_bytes: u32,
    /// One pack.
    pub max_pack_bytes: u32,
    /// Packs in one room.
    pub max_packs_per_room: u32,
    /// All packs of one room together.
    pub max_pack_bytes_per_room: u32,
    /// A pack's name and media type.
    pub max_pack_name_len: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 4 * 1024 * 1024,
            max_tick_payload_bytes: 1000,
            max_rooms_per_session: 16,
            max_members_per_room: 32,
            max_room_id_len: 128,
            max_name_len: 64,
            max_display_meta_bytes: 1024,
            max_state_key_len: 128,
            max_state_value_bytes: 900_000,
            max_state_total_bytes: 900_000,
            max_state_keys: 1024,
            max_command_kind_len: 64,
            max_command_payload_bytes: 64 * 1024,
            max_idempotency_key_len: 64,
            max_join_options: 16,
            max_password_len: 128,
            max_reason_len: 96,
            max_token_len: 4096,
            max_api_key_len: 256,
            max_policy_rules: 64,
            max_timeline_name_len: 64,
            max_timelines_per_room: 16,
            max_schedule_ahead_ms: 10_000,
            max_direct_payload_bytes: 64 * 1024,
            max_pack_bytes: 2 * 1024 * 1024,
            max_packs_per_room: 300,
            max_pack_bytes_per_room: 256 * 1024 * 1024,
            max_pack_name_len: 128,
        }
    }
}

/// One field over its limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} is {actual} bytes or items, over the limit of {limit}")]
pub struct LimitViolation {
    /// The message field, e.g. `"room_id"`.
    pub field: &'static str,
    pub limit: u64,
    pub actual: u64,
}

impl Limits {
    /// Checks `actual <= limit` for the named field.
    pub fn check(field: &'static str, actual: usize, limit: u32) -> Result<(), LimitViolation> {
        if actual as u64 > u64::from(limit) {
            Err(LimitViolation {
                field,
                limit: u64::from(limit),
                actual: actual as u64,
            })
        } else {
            Ok(())
        }
    }
}
