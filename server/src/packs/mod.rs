//! The pack content store: the bytes of packs (asset bundles, images, video)
//! that room members upload, content-addressed by SHA-256.
//!
//! What it owns:
//! - the content, each once per process ([`PackStore`] keys it by its 32-byte
//!   SHA-256 and holds it as shared [`bytes::Bytes`], so every download is a
//!   cheap slice of the one copy, whichever room it is for);
//! - each room's references: the packs available in the room, in upload order,
//!   with the name, media type and uploader the room saw, and the room's count
//!   and byte totals for the limits; content no room references any more is
//!   freed at once (reference counting, no separate collector);
//! - uploads in progress: announced, filled chunk by chunk at the offset the
//!   store expects (so an interrupted upload resumes where it stopped),
//!   verified against the announced hash and, for the media types it knows,
//!   against the content's magic bytes ([`MediaKind`]), then stored;
//! - every limit on packs: one pack's size, packs and bytes per room (pending
//!   uploads included), pending uploads per room, all content and pending
//!   uploads of the process together ([`PackSettings`]).
//!
//! What it must not do: I/O of any kind (the copy on disk is
//! [`store`](crate::store)'s, fed by the session and the rooms), read a clock (every call that needs the time takes `now`),
//! spawn tasks or depend on tokio, decide who may upload or fetch (the
//! `UploadPacks` permission and membership are `core/`'s and the session's),
//! assign sequence numbers or tell anyone (`PackAvailable` is the room's
//! event), or panic on any input: every offset, size and conversion is checked
//! and every refusal is a [`PackError`] that maps to the wire's
//! [`ErrorCode`](chorus_protocol::ErrorCode) and
//! [`ErrorDetail`](chorus_protocol::ErrorDetail).
//!
//! Memory is bounded: a pending upload's buffer grows with the bytes that
//! arrived, never past its announced size (itself at most
//! [`PackSettings::max_pack_bytes`]); pending uploads per room are capped; and
//! everything the store holds or has promised to hold (stored content plus
//! the announced sizes of pending uploads) stays within
//! [`PackSettings::max_store_bytes`]. Idle uploads are dropped by
//! [`PackStore::sweep`], which the caller runs now and then.
//!
//! Deduplication across rooms saves memory, never an upload: content reaches
//! a room only by being uploaded to that room in full and verified (SHA-256,
//! magic bytes), even when the store holds it for another room already. Only
//! then does the room share the stored copy, and the upload's buffer is freed.
//! `announce` answers content held for other rooms exactly as unknown content
//! (`Upload` from 0), so knowing a hash neither pulls another room's content
//! nor tells whether the server has it.

mod error;
mod media;
mod settings;
mod store;
#[cfg(test)]
mod tests;

pub use error::{PackError, PackLimit};
pub use media::MediaKind;
pub use settings::{DEFAULT_MEDIA_TYPES, PackSettings};
pub use store::{Announce, PackHash, PackStats, PackStore, RoomKey, WriteOutcome, parse_hash};
