//! Why the pack store refused something, and how that travels on the wire.

use super::MediaKind;
use chorus_protocol::{ErrorCode, ErrorDetail, ErrorFrame, RequestId};
use std::fmt;
use thiserror::Error;

/// Which limit a [`PackError::LimitExceeded`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackLimit {
    /// One pack's size ([`PackSettings::max_pack_bytes`](super::PackSettings::max_pack_bytes)).
    PackBytes,
    /// Packs in the room, pending uploads included.
    PacksPerRoom,
    /// Bytes of the room's packs, pending uploads included.
    BytesPerRoom,
    /// Uploads in progress in the room.
    PendingUploads,
    /// Everything the process stores or has promised to store.
    StoreBytes,
    /// The pack's name.
    NameLen,
    /// The pack's media type.
    MediaTypeLen,
}

impl PackLimit {
    /// A short stable name, e.g. `"packs_per_room"`, for messages and logs.
    pub const fn name(self) -> &'static str {
        match self {
            PackLimit::PackBytes => "pack_bytes",
            PackLimit::PacksPerRoom => "packs_per_room",
            PackLimit::BytesPerRoom => "pack_bytes_per_room",
            PackLimit::PendingUploads => "pending_uploads_per_room",
            PackLimit::StoreBytes => "server_pack_bytes",
            PackLimit::NameLen => "pack_name_len",
            PackLimit::MediaTypeLen => "pack_media_type_len",
        }
    }
}

impl fmt::Display for PackLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A refusal by the [`PackStore`](super::PackStore).
///
/// Messages never quote what the client sent (names, media types): only
/// numbers and the store's own words. [`code`](Self::code) and
/// [`detail`](Self::detail) give what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PackError {
    /// A hash on the wire was not 32 bytes. Code `Malformed`.
    #[error("a pack hash is 32 bytes (SHA-256), not {len}")]
    InvalidHash {
        /// The length that came.
        len: usize,
    },
    /// A size or count limit. Code `LimitExceeded`, detail `Limit`.
    #[error("{limit} would be {actual}, over the limit of {max}")]
    LimitExceeded {
        /// Which limit.
        limit: PackLimit,
        /// The limit.
        max: u64,
        /// What the request would have made it.
        actual: u64,
    },
    /// The media type is not on the server's allow-list. Code `MediaTypeRefused`.
    #[error("this media type is not accepted for packs")]
    MediaTypeNotAllowed,
    /// The name's extension stands for another media type than the declared
    /// one (e.g. `cat.png` declared `video/mp4`). Code `MediaTypeRefused`.
    #[error("the name's extension is for {extension_kind}, not the declared media type")]
    NameMismatch {
        /// The media type the extension stands for.
        extension_kind: MediaKind,
    },
    /// The content does not start like its declared media type (or is too
    /// short to). Code `MediaTypeRefused`.
    #[error("the content is not {declared}")]
    ContentMismatch {
        /// The declared media type.
        declared: MediaKind,
    },
    /// No pack with that hash is available in the room. Code `PackNotFound`.
    #[error("no pack with that hash in this room")]
    NotFound,
    /// No upload of that hash is in progress in the room (never announced,
    /// already complete, failed or dropped as idle): announce it again.
    /// Code `PackNotFound`.
    #[error("no upload of that pack is in progress in this room; announce it again")]
    NoUpload,
    /// A write did not start where the upload stands. Code `Conflict` with
    /// detail `Conflict { current_version: expected }`: the offset to resume
    /// from (the protocol has no dedicated offset detail).
    #[error("the upload continues at offset {expected}, not {offset}")]
    WrongOffset {
        /// Bytes received so far: where the next write must start.
        expected: u64,
        /// Where the write started.
        offset: u64,
    },
    /// A write would go past the announced size. Code `LimitExceeded`, detail
    /// `Limit { limit: size, actual: end }`.
    #[error("the write would end at byte {end}, past the announced size {size}")]
    PastEnd {
        /// The announced size.
        size: u64,
        /// Where the write would have ended (saturated at `u64::MAX`).
        end: u64,
    },
    /// The uploaded content's SHA-256 is not the announced hash; the upload
    /// was dropped. Code `HashMismatch`.
    #[error("the content's SHA-256 is not the announced hash")]
    HashMismatch,
    /// A read started past the pack's end. Code `LimitExceeded`, detail
    /// `Limit { limit: size, actual: offset }`.
    #[error("offset {offset} is past the end of the pack ({size} bytes)")]
    OffsetPastEnd {
        /// The requested offset.
        offset: u64,
        /// The pack's size.
        size: u64,
    },
}

impl PackError {
    /// The code the client is told.
    pub const fn code(&self) -> ErrorCode {
        match self {
            PackError::InvalidHash { .. } => ErrorCode::Malformed,
            PackError::LimitExceeded { .. }
            | PackError::PastEnd { .. }
            | PackError::OffsetPastEnd { .. } => ErrorCode::LimitExceeded,
            PackError::MediaTypeNotAllowed
            | PackError::NameMismatch { .. }
            | PackError::ContentMismatch { .. } => ErrorCode::MediaTypeRefused,
            PackError::NotFound | PackError::NoUpload => ErrorCode::PackNotFound,
            PackError::WrongOffset { .. } => ErrorCode::Conflict,
            PackError::HashMismatch => ErrorCode::HashMismatch,
        }
    }

    /// The structured detail that goes with [`code`](Self::code).
    pub const fn detail(&self) -> ErrorDetail {
        match *self {
            PackError::LimitExceeded { max, actual, .. } => {
                ErrorDetail::Limit { limit: max, actual }
            }
            PackError::PastEnd { size, end } => ErrorDetail::Limit {
                limit: size,
                actual: end,
            },
            PackError::OffsetPastEnd { offset, size } => ErrorDetail::Limit {
                limit: size,
                actual: offset,
            },
            PackError::WrongOffset { expected, .. } => ErrorDetail::Conflict {
                current_version: expected,
            },
            PackError::InvalidHash { .. }
            | PackError::MediaTypeNotAllowed
            | PackError::NameMismatch { .. }
            | PackError::ContentMismatch { .. }
            | PackError::NotFound
            | PackError::NoUpload
            | PackError::HashMismatch => ErrorDetail::None,
        }
    }

    /// The error frame for the request `request_id`: code, message and detail.
    pub fn to_frame(&self, request_id: Option<RequestId>) -> ErrorFrame {
        ErrorFrame::new(request_id, self.code(), self.to_string()).with_detail(self.detail())
    }
}
