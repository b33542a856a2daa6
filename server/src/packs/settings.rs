//! The pack store's limits and allow-list.

use chorus_protocol::Limits;
use std::time::Duration;

/// The media types a server accepts by default: the five whose content the
/// store can check by its magic bytes ([`MediaKind`](super::MediaKind)).
pub const DEFAULT_MEDIA_TYPES: [&str; 5] = [
    "image/jpeg",
    "image/png",
    "image/webp",
    "video/mp4",
    "video/webm",
];

/// Limits and policy of a [`PackStore`](super::PackStore).
///
/// [`Default`] takes the pack limits of [`Limits::default`] (what the server
/// announces in its hello) and the values documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSettings {
    /// Largest pack, in bytes (`Limits::max_pack_bytes`, 2 MiB).
    pub max_pack_bytes: u64,
    /// Packs in one room, available and being uploaded together
    /// (`Limits::max_packs_per_room`, 300).
    pub max_packs_per_room: u32,
    /// Bytes of one room's packs, available and being uploaded (by announced
    /// size) together (`Limits::max_pack_bytes_per_room`, 256 MiB). Content
    /// shared with other rooms counts in full in each room.
    pub max_bytes_per_room: u64,
    /// Longest pack name and media type, in UTF-8 bytes
    /// (`Limits::max_pack_name_len`, 128).
    pub max_name_len: u32,
    /// Media types accepted, compared ASCII case-insensitively and exactly
    /// otherwise (no parameters such as `; codecs=`). A pack takes the type's
    /// spelling from this list. Default: [`DEFAULT_MEDIA_TYPES`]. The content
    /// of a type the store knows ([`MediaKind`](super::MediaKind)) is checked
    /// by its magic bytes; a type the operator adds that the store does not
    /// know is accepted without a content check.
    pub allowed_media_types: Vec<String>,
    /// Uploads in progress in one room (default 8).
    pub max_pending_uploads_per_room: u32,
    /// Everything the process holds or has promised to hold: stored content
    /// (each once) plus the announced sizes of all pending uploads
    /// (default 1 GiB). The store keeps everything in memory, so this is the
    /// bound on its memory whatever the number of rooms.
    pub max_store_bytes: u64,
    /// A pending upload untouched (no announce, no write) for this long is
    /// dropped by [`PackStore::sweep`](super::PackStore::sweep) (default 5 min).
    pub upload_idle_timeout: Duration,
}

impl PackSettings {
    /// The pack limits of `limits`, and the defaults for everything else.
    pub fn from_limits(limits: &Limits) -> Self {
        PackSettings {
            max_pack_bytes: u64::from(limits.max_pack_bytes),
            max_packs_per_room: limits.max_packs_per_room,
            max_bytes_per_room: u64::from(limits.max_pack_bytes_per_room),
            max_name_len: limits.max_pack_name_len,
            allowed_media_types: DEFAULT_MEDIA_TYPES.iter().map(|t| t.to_string()).collect(),
            max_pending_uploads_per_room: 8,
            max_store_bytes: 1024 * 1024 * 1024,
            upload_idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

impl Default for PackSettings {
    fn default() -> Self {
        PackSettings::from_limits(&Limits::default())
    }
}
