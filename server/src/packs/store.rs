//! [`PackStore`]: the content, each room's references and uploads in progress.

use super::{MediaKind, PackError, PackLimit, PackSettings};
use bytes::Bytes;
use chorus_protocol::{MemberId, PackInfo, RoomSlot};
use ring::digest::{Context, SHA256};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// A pack's SHA-256: its identity in the store.
pub type PackHash = [u8; 32];

/// A hash from the wire (`PackUpload`, `PackFetch`, a pack stream header) as a
/// [`PackHash`]; [`PackError::InvalidHash`] unless it is 32 bytes.
pub fn parse_hash(bytes: &[u8]) -> Result<PackHash, PackError> {
    PackHash::try_from(bytes).map_err(|_| PackError::InvalidHash { len: bytes.len() })
}

/// Which room a pack reference belongs to: the room's id or its slot.
///
/// A room id survives restarts (an on-disk store will need it); a slot is
/// never reused while the server runs, so it is as good a key for this
/// in-memory store. An id key and a slot key never name the same room, even
/// `RoomKey::id("7")` and `RoomKey::slot(RoomSlot(7))`: the caller must key
/// each room one way only (the room id, preferably).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey(Key);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Id(String),
    Slot(u32),
}

impl RoomKey {
    /// The room with this id.
    pub fn id(id: impl Into<String>) -> Self {
        RoomKey(Key::Id(id.into()))
    }

    /// The room in this slot.
    pub fn slot(slot: RoomSlot) -> Self {
        RoomKey(Key::Slot(slot.0))
    }
}

impl From<RoomSlot> for RoomKey {
    fn from(slot: RoomSlot) -> Self {
        RoomKey::slot(slot)
    }
}

impl From<&str> for RoomKey {
    fn from(id: &str) -> Self {
        RoomKey::id(id)
    }
}

impl From<String> for RoomKey {
    fn from(id: String) -> Self {
        RoomKey::id(id)
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Key::Id(id) => write!(f, "room {id:?}"),
            Key::Slot(slot) => write!(f, "room slot {slot}"),
        }
    }
}

/// The answer to [`PackStore::announce`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// The pack is available in this room already: nothing needs sending and
    /// nothing changed; `pack` is the room's existing entry (its name, media
    /// type and uploader, not this announcement's). Never the answer for
    /// content the store holds only for other rooms: that room must upload it.
    AlreadyAvailable {
        /// The pack as the room lists it.
        pack: PackInfo,
    },
    /// Send the content from `offset` (`PackUploadReady`). Non-zero when an
    /// earlier, interrupted upload of the same content to this room resumes.
    /// Also the answer when the store holds the content for other rooms only
    /// (from 0, or the room's own resume offset), so the answer does not tell
    /// whether the server has it.
    Upload {
        /// Bytes of this room's upload the store already has.
        offset: u64,
    },
}

/// The result of a [`PackStore::write`] that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// More is expected; the next write starts at `received`.
    Partial {
        /// Bytes received so far.
        received: u64,
    },
    /// The content arrived whole, matched its hash and media type, and is now
    /// available in the room (the room tells its members: `PackAvailable`).
    Complete(PackInfo),
}

/// What the store holds, for `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackStats {
    /// Distinct contents stored (each once, however many rooms use it).
    pub contents: usize,
    /// Their bytes.
    pub content_bytes: u64,
    /// Pack references: packs available, summed over rooms.
    pub room_packs: usize,
    /// Rooms with packs or uploads in progress.
    pub rooms: usize,
    /// Uploads in progress.
    pub pending_uploads: usize,
    /// Bytes those uploads have received so far.
    pub pending_received_bytes: u64,
    /// Bytes those uploads have announced (what they hold when complete).
    pub pending_announced_bytes: u64,
}

/// The process-wide pack store: each content once, each room's references,
/// uploads in progress. See the [module documentation](super).
///
/// All state sits behind one [`std::sync::Mutex`], held only for memory work
/// proportional to the call's own bytes (a chunk is copied and hashed as it
/// arrives; reads return a slice of the shared [`Bytes`]); share the store in
/// an `Arc`. A poisoned lock is taken over as is: no method panics, so the
/// state is whole.
pub struct PackStore {
    settings: PackSettings,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    contents: HashMap<PackHash, Content>,
    /// Sum of `contents`' lengths.
    content_bytes: u64,
    rooms: HashMap<RoomKey, RoomPacks>,
    /// Sum of every room's `pending_bytes`.
    pending_announced: u64,
    /// Bumped whenever content comes in or is freed, so a copy elsewhere
    /// (the store on disk) can order a free against a later upload of the
    /// same bytes, whatever order the two reach it in.
    epoch: u64,
}

/// One stored content and the number of rooms that reference it.
struct Content {
    bytes: Bytes,
    rooms: u64,
    /// The store's epoch when this content came in (see [`Inner::epoch`]).
    epoch: u64,
}

/// One room's bookkeeping.
#[derive(Default)]
struct RoomPacks {
    /// Available packs, in the order they became available.
    packs: Vec<PackInfo>,
    /// Hash → index in `packs` (packs are only removed with the whole room).
    index: HashMap<PackHash, usize>,
    /// Sum of `packs`' sizes.
    bytes: u64,
    pending: HashMap<PackHash, Pending>,
    /// Sum of `pending`'s announced sizes.
    pending_bytes: u64,
}

/// An upload in progress.
struct Pending {
    uploader: MemberId,
    name: String,
    /// The allow-list's spelling.
    media_type: String,
    /// `None` for an allowed type the store cannot check.
    kind: Option<MediaKind>,
    size: u64,
    /// `size` as a `usize` (checked at announce): `buf` never grows past it.
    size_usize: usize,
    buf: Vec<u8>,
    /// SHA-256 of `buf` so far, updated chunk by chunk.
    hasher: Context,
    /// Whether `buf`'s first bytes were checked against `kind` already.
    sniffed: bool,
    touched: Instant,
}

/// A `usize` length as `u64` (saturating on a platform where it would not fit).
fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// `LimitExceeded` unless `actual <= max`.
fn check_limit(limit: PackLimit, actual: u64, max: u64) -> Result<(), PackError> {
    if actual > max {
        Err(PackError::LimitExceeded { limit, max, actual })
    } else {
        Ok(())
    }
}

impl RoomPacks {
    fn is_empty(&self) -> bool {
        self.packs.is_empty() && self.pending.is_empty()
    }

    fn info(&self, hash: &PackHash) -> Option<&PackInfo> {
        self.index.get(hash).and_then(|&i| self.packs.get(i))
    }

    /// Packs, bytes and pending uploads counted against the room's limits,
    /// leaving out a pending upload of `hash` (which the caller replaces).
    fn usage_without(&self, hash: &PackHash) -> Usage {
        let (pending, pending_bytes) = match self.pending.get(hash) {
            Some(p) => (
                self.pending.len().saturating_sub(1),
                self.pending_bytes.saturating_sub(p.size),
            ),
            None => (self.pending.len(), self.pending_bytes),
        };
        Usage {
            packs: len_u64(self.packs.len()).saturating_add(len_u64(pending)),
            bytes: self.bytes.saturating_add(pending_bytes),
            pending: len_u64(pending),
            replaced_bytes: self.pending.get(hash).map_or(0, |p| p.size),
        }
    }

    /// Makes `info` (whose content is in the store) available in the room.
    fn push(&mut self, hash: PackHash, info: PackInfo) {
        self.index.insert(hash, self.packs.len());
        self.bytes = self.bytes.saturating_add(info.size);
        self.packs.push(info);
    }

    /// Forgets the pending upload of `hash`, if any; its announced size is
    /// returned so the caller can release it from the process total.
    fn remove_pending(&mut self, hash: &PackHash) -> Option<Pending> {
        let p = self.pending.remove(hash)?;
        self.pending_bytes = self.pending_bytes.saturating_sub(p.size);
        Some(p)
    }
}

/// A room's usage without one pending upload.
struct Usage {
    packs: u64,
    bytes: u64,
    pending: u64,
    /// The announced size of the left-out pending upload (0 if none).
    replaced_bytes: u64,
}

impl Pending {
    fn received(&self) -> u64 {
        len_u64(self.buf.len())
    }

    /// Appends `chunk`, which the caller checked ends within `size`: the
    /// buffer grows by doubling but never past `size` bytes of capacity.
    fn append(&mut self, chunk: &[u8]) {
        let needed = self.buf.len().saturating_add(chunk.len());
        if needed > self.buf.capacity() {
            let target = needed
                .max(self.buf.capacity().saturating_mul(2))
                .min(self.size_usize)
                .max(needed);
            self.buf
                .reserve_exact(target.saturating_sub(self.buf.len()));
        }
        self.buf.extend_from_slice(chunk);
        self.hasher.update(chunk);
    }
}

impl Inner {
    /// Drops the room's entry if it holds nothing.
    fn forget_room_if_empty(&mut self, room: &RoomKey) {
        if self.rooms.get(room).is_some_and(RoomPacks::is_empty) {
            self.rooms.remove(room);
        }
    }

    /// Forgets a pending upload (failed or replaced) and releases its bytes.
    fn drop_pending(&mut self, room: &RoomKey, hash: &PackHash) {
        if let Some(p) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.remove_pending(hash))
        {
            self.pending_announced = self.pending_announced.saturating_sub(p.size);
        }
        self.forget_room_if_empty(room);
    }

    /// One room fewer references `hash`; the content goes when none does
    /// (then returns the epoch of its going).
    fn release_content(&mut self, hash: &PackHash) -> Option<u64> {
        if let Entry::Occupied(mut e) = self.contents.entry(*hash) {
            let content = e.get_mut();
            content.rooms = content.rooms.saturating_sub(1);
            if content.rooms == 0 {
                let len = len_u64(e.get().bytes.len());
                e.remove();
                self.content_bytes = self.content_bytes.saturating_sub(len);
                self.epoch += 1;
                return Some(self.epoch);
            }
        }
        None
    }

    /// Holds `bytes` as the content of `hash` for one more room.
    fn add_content(&mut self, hash: PackHash, bytes: impl FnOnce() -> Bytes) {
        match self.contents.entry(hash) {
            Entry::Occupied(mut e) => {
                let content = e.get_mut();
                content.rooms = content.rooms.saturating_add(1);
            }
            Entry::Vacant(e) => {
                let bytes = bytes();
                self.content_bytes = self.content_bytes.saturating_add(len_u64(bytes.len()));
                self.epoch += 1;
                e.insert(Content {
                    bytes,
                    rooms: 1,
                    epoch: self.epoch,
                });
            }
        }
    }
}

impl PackStore {
    /// An empty store with these settings.
    pub fn new(settings: PackSettings) -> Self {
        PackStore {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The store's settings.
    pub fn settings(&self) -> &PackSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The allow-list's spelling of `media_type`, or `MediaTypeNotAllowed`.
    fn allowed_media_type(&self, media_type: &str) -> Result<&str, PackError> {
        self.settings
            .allowed_media_types
            .iter()
            .find(|allowed| allowed.eq_ignore_ascii_case(media_type))
            .map(String::as_str)
            .ok_or(PackError::MediaTypeNotAllowed)
    }

    /// A member of `room` offers the pack `hash` (`PackUpload`).
    ///
    /// Checked first, whatever the store holds: the name's and media type's
    /// lengths, the media type against the allow-list, the name's extension
    /// (if it is one of [`MediaKind::from_extension`]'s) against the media
    /// type, the size against `max_pack_bytes` and (for a type the store
    /// checks) against the shortest content of that type. Then:
    /// - the pack is available in the room: it is returned as it is
    ///   (`AlreadyAvailable`);
    /// - an upload of it is pending in the room with the same size and media
    ///   type: it resumes (`Upload { offset }` with the bytes received), now
    ///   under this announcement's name and uploader (a reconnected client has
    ///   a new member id); with another size or type it starts over;
    /// - otherwise a new upload starts (`Upload { offset: 0 }`) within the
    ///   room's limits on packs, bytes and pending uploads and the process's
    ///   `max_store_bytes`, all counted with pending uploads at their
    ///   announced size.
    ///
    /// Content the store holds for other rooms changes none of this: the room
    /// uploads it like unknown content (the answer does not reveal that the
    /// server has it), and only when that upload completes and verifies does
    /// [`write`](Self::write) share the stored copy. Knowing a hash is never
    /// enough to get content into a room.
    ///
    /// `now` marks the upload as touched (see [`sweep`](Self::sweep)).
    #[allow(clippy::too_many_arguments)]
    pub fn announce(
        &self,
        room: &RoomKey,
        uploader: MemberId,
        hash: &PackHash,
        name: &str,
        media_type: &str,
        size: u64,
        now: Instant,
    ) -> Result<Announce, PackError> {
        let s = &self.settings;
        let max_name = u64::from(s.max_name_len);
        check_limit(PackLimit::NameLen, len_u64(name.len()), max_name)?;
        check_limit(PackLimit::MediaTypeLen, len_u64(media_type.len()), max_name)?;
        let media_type = self.allowed_media_type(media_type)?;
        let kind = MediaKind::from_media_type(media_type);
        if let Some(extension_kind) = MediaKind::from_file_name(name)
            && Some(extension_kind) != kind
        {
            return Err(PackError::NameMismatch { extension_kind });
        }
        check_limit(PackLimit::PackBytes, size, s.max_pack_bytes)?;
        let size_usize = usize::try_from(size).map_err(|_| PackError::LimitExceeded {
            limit: PackLimit::PackBytes,
            max: len_u64(usize::MAX),
            actual: size,
        })?;
        if let Some(kind) = kind
            && size_usize < kind.magic_len()
        {
            return Err(PackError::ContentMismatch { declared: kind });
        }

        let mut guard = self.lock();
        let inner = &mut *guard;
        let room_packs = inner.rooms.get(room);
        if let Some(pack) = room_packs.and_then(|r| r.info(hash)) {
            return Ok(Announce::AlreadyAvailable { pack: pack.clone() });
        }
        let usage = room_packs.map_or(
            Usage {
                packs: 0,
                bytes: 0,
                pending: 0,
                replaced_bytes: 0,
            },
            |r| r.usage_without(hash),
        );
        let resumable = room_packs
            .and_then(|r| r.pending.get(hash))
            .is_some_and(|p| p.size == size && p.media_type == media_type);
        let info = PackInfo {
            hash: hash.to_vec(),
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            size,
            uploader,
        };

        if resumable
            && let Some(p) = inner
                .rooms
                .get_mut(room)
                .and_then(|r| r.pending.get_mut(hash))
        {
            p.uploader = uploader;
            p.name = info.name;
            p.touched = now;
            return Ok(Announce::Upload {
                offset: p.received(),
            });
        }

        check_limit(
            PackLimit::PacksPerRoom,
            usage.packs.saturating_add(1),
            u64::from(s.max_packs_per_room),
        )?;
        check_limit(
            PackLimit::BytesPerRoom,
            usage.bytes.saturating_add(size),
            s.max_bytes_per_room,
        )?;
        check_limit(
            PackLimit::PendingUploads,
            usage.pending.saturating_add(1),
            u64::from(s.max_pending_uploads_per_room),
        )?;
        check_limit(
            PackLimit::StoreBytes,
            inner
                .content_bytes
                .saturating_add(inner.pending_announced)
                .saturating_sub(usage.replaced_bytes)
                .saturating_add(size),
            s.max_store_bytes,
        )?;
        // Commit: nothing below can fail.
        inner.drop_pending(room, hash);
        let pending = Pending {
            uploader,
            name: info.name,
            media_type: info.media_type,
            kind,
            size,
            size_usize,
            buf: Vec::new(),
            hasher: Context::new(&SHA256),
            sniffed: false,
            touched: now,
        };
        let room_packs = inner.rooms.entry(room.clone()).or_default();
        room_packs.pending.insert(*hash, pending);
        room_packs.pending_bytes = room_packs.pending_bytes.saturating_add(size);
        inner.pending_announced = inner.pending_announced.saturating_add(size);
        Ok(Announce::Upload { offset: 0 })
    }

    /// Adds `chunk` at `offset` to the upload of `hash` in `room`.
    ///
    /// `offset` must be the bytes received so far (`WrongOffset` says which;
    /// nothing changes), and the chunk must end within the announced size
    /// (`PastEnd`; nothing changes). An upload whose first bytes show it is
    /// not of its declared type is dropped as soon as they are in
    /// (`ContentMismatch`). When the last byte arrives the SHA-256 is checked
    /// (`HashMismatch`, the upload is dropped) and the content is stored,
    /// once: if the store holds the same content already (for another room,
    /// uploaded before or meanwhile), the room shares that copy and the
    /// upload's buffer is freed. The pack is then available in the room:
    /// `Complete`. `NoUpload` if no upload of `hash` is pending in the room.
    /// `now` marks the upload as touched.
    pub fn write(
        &self,
        room: &RoomKey,
        hash: &PackHash,
        offset: u64,
        chunk: &[u8],
        now: Instant,
    ) -> Result<WriteOutcome, PackError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(p) = inner
            .rooms
            .get_mut(room)
            .and_then(|r| r.pending.get_mut(hash))
        else {
            return Err(PackError::NoUpload);
        };
        let received = p.received();
        if offset != received {
            return Err(PackError::WrongOffset {
                expected: received,
                offset,
            });
        }
        let end = received.saturating_add(len_u64(chunk.len()));
        if end > p.size {
            return Err(PackError::PastEnd { size: p.size, end });
        }
        p.append(chunk);
        p.touched = now;
        if !p.sniffed
            && let Some(kind) = p.kind
            && p.buf.len() >= kind.magic_len()
        {
            if !kind.matches(&p.buf) {
                inner.drop_pending(room, hash);
                return Err(PackError::ContentMismatch { declared: kind });
            }
            p.sniffed = true;
        }
        if end < p.size {
            return Ok(WriteOutcome::Partial { received: end });
        }

        let Some(p) = inner
            .rooms
            .get_mut(room)
            .and_then(|r| r.remove_pending(hash))
        else {
            return Err(PackError::NoUpload);
        };
        inner.pending_announced = inner.pending_announced.saturating_sub(p.size);
        if p.hasher.finish().as_ref() != hash.as_slice() {
            inner.forget_room_if_empty(room);
            return Err(PackError::HashMismatch);
        }
        // Unreachable in practice: announce refuses sizes below the magic
        // length, so the first bytes were checked above.
        if let Some(kind) = p.kind
            && !p.sniffed
            && !kind.matches(&p.buf)
        {
            inner.forget_room_if_empty(room);
            return Err(PackError::ContentMismatch { declared: kind });
        }
        let info = PackInfo {
            hash: hash.to_vec(),
            name: p.name,
            media_type: p.media_type,
            size: p.size,
            uploader: p.uploader,
        };
        // The same bytes (same SHA-256, verified above) may be stored for
        // another room already: then they are shared, and this upload's
        // buffer is dropped here.
        inner.add_content(*hash, || Bytes::from(p.buf));
        inner
            .rooms
            .entry(room.clone())
            .or_default()
            .push(*hash, info.clone());
        Ok(WriteOutcome::Complete(info))
    }

    /// Bytes received so far by the upload of `hash` in `room`, if one is pending.
    pub fn received(&self, room: &RoomKey, hash: &PackHash) -> Option<u64> {
        self.lock()
            .rooms
            .get(room)
            .and_then(|r| r.pending.get(hash))
            .map(Pending::received)
    }

    /// Up to `max_len` bytes of the pack `hash` from `offset`, if the pack is
    /// available in `room` (`NotFound` otherwise, also while its upload is
    /// pending). An `offset` equal to the size gives no bytes; past it,
    /// `OffsetPastEnd`. The bytes are a slice of the one stored copy.
    pub fn read(
        &self,
        room: &RoomKey,
        hash: &PackHash,
        offset: u64,
        max_len: usize,
    ) -> Result<Bytes, PackError> {
        let inner = self.lock();
        if inner.rooms.get(room).and_then(|r| r.info(hash)).is_none() {
            return Err(PackError::NotFound);
        }
        let Some(content) = inner.contents.get(hash) else {
            return Err(PackError::NotFound);
        };
        let len = content.bytes.len();
        let past_end = PackError::OffsetPastEnd {
            offset,
            size: len_u64(len),
        };
        let start = usize::try_from(offset).map_err(|_| past_end.clone())?;
        if start > len {
            return Err(past_end);
        }
        let end = start.saturating_add(max_len).min(len);
        Ok(content.bytes.slice(start..end))
    }

    /// The pack `hash` as `room` lists it, if available there.
    pub fn info(&self, room: &RoomKey, hash: &PackHash) -> Option<PackInfo> {
        self.lock()
            .rooms
            .get(room)
            .and_then(|r| r.info(hash))
            .cloned()
    }

    /// The packs available in `room`, in the order they became available
    /// (for the room snapshot).
    pub fn list(&self, room: &RoomKey) -> Vec<PackInfo> {
        self.lock()
            .rooms
            .get(room)
            .map(|r| r.packs.clone())
            .unwrap_or_default()
    }

    /// Forgets `room`: its packs and its pending uploads. Content no other
    /// room references is freed at once; returns the hashes freed, each
    /// with the epoch of its freeing (see [`content`](Self::content)).
    pub fn drop_room(&self, room: &RoomKey) -> Vec<(PackHash, u64)> {
        let mut inner = self.lock();
        let Some(room_packs) = inner.rooms.remove(room) else {
            return Vec::new();
        };
        inner.pending_announced = inner
            .pending_announced
            .saturating_sub(room_packs.pending_bytes);
        room_packs
            .index
            .keys()
            .filter_map(|hash| Some((*hash, inner.release_content(hash)?)))
            .collect()
    }

    /// The stored content of `hash`, whichever room has it, with the epoch
    /// it came in at (for the store on disk, never for a client: reads go
    /// through [`read`](Self::read)). A copy that saw this content come in
    /// after an epoch keeps it against a free of an earlier epoch.
    pub fn content(&self, hash: &PackHash) -> Option<(Bytes, u64)> {
        self.lock()
            .contents
            .get(hash)
            .map(|c| (c.bytes.clone(), c.epoch))
    }

    /// Gives `room` back its packs after a restart, with their content
    /// (read from disk and verified there by hash and size). A pack whose
    /// content is not in `contents`, or whose hash is malformed, is left
    /// out and named in the result. The process limits are not applied:
    /// what was kept before is kept.
    pub fn restore_room(
        &self,
        room: &RoomKey,
        packs: &[PackInfo],
        contents: &HashMap<PackHash, Bytes>,
    ) -> Vec<String> {
        let mut inner = self.lock();
        let mut missing = Vec::new();
        for info in packs {
            let Some((hash, bytes)) = <PackHash>::try_from(info.hash.as_slice())
                .ok()
                .and_then(|h| Some((h, contents.get(&h)?)))
            else {
                missing.push(info.name.clone());
                continue;
            };
            if inner
                .rooms
                .get(room)
                .is_some_and(|r| r.index.contains_key(&hash))
            {
                continue;
            }
            inner.add_content(hash, || bytes.clone());
            inner
                .rooms
                .entry(room.clone())
                .or_default()
                .push(hash, info.clone());
        }
        missing
    }

    /// Drops every pending upload untouched (announced, resumed or written
    /// to) for [`PackSettings::upload_idle_timeout`] or longer at `now`, and
    /// returns how many. A later write to one gets `NoUpload`; announcing it
    /// again starts over.
    pub fn sweep(&self, now: Instant) -> usize {
        let timeout = self.settings.upload_idle_timeout;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut dropped = 0;
        let mut released = 0u64;
        inner.rooms.retain(|_, r| {
            let before = r.pending.len();
            let mut room_released = 0u64;
            r.pending.retain(|_, p| {
                let keep = now.saturating_duration_since(p.touched) < timeout;
                if !keep {
                    room_released = room_released.saturating_add(p.size);
                }
                keep
            });
            dropped += before - r.pending.len();
            r.pending_bytes = r.pending_bytes.saturating_sub(room_released);
            released = released.saturating_add(room_released);
            !r.is_empty()
        });
        inner.pending_announced = inner.pending_announced.saturating_sub(released);
        dropped
    }

    /// What the store holds now.
    pub fn stats(&self) -> PackStats {
        let inner = self.lock();
        let mut stats = PackStats {
            contents: inner.contents.len(),
            content_bytes: inner.content_bytes,
            rooms: inner.rooms.len(),
            pending_announced_bytes: inner.pending_announced,
            ..PackStats::default()
        };
        for r in inner.rooms.values() {
            stats.room_packs = stats.room_packs.saturating_add(r.packs.len());
            stats.pending_uploads = stats.pending_uploads.saturating_add(r.pending.len());
            for p in r.pending.values() {
                stats.pending_received_bytes =
                    stats.pending_received_bytes.saturating_add(p.received());
            }
        }
        stats
    }

    /// Panics unless every running total matches what it sums (tests only).
    #[cfg(test)]
    pub(super) fn assert_consistent(&self) {
        let inner = self.lock();
        let content_bytes: u64 = inner
            .contents
            .values()
            .map(|c| len_u64(c.bytes.len()))
            .sum();
        assert_eq!(inner.content_bytes, content_bytes, "content_bytes");
        let mut refs: HashMap<PackHash, u64> = HashMap::new();
        let mut pending_announced = 0u64;
        for (key, r) in &inner.rooms {
            assert!(!r.is_empty(), "{key} is empty but kept");
            assert_eq!(r.packs.len(), r.index.len(), "{key} index");
            for (hash, &i) in &r.index {
                assert_eq!(r.packs[i].hash, hash.to_vec(), "{key} index entry");
                assert!(
                    !r.pending.contains_key(hash),
                    "{key} both available and pending"
                );
                *refs.entry(*hash).or_default() += 1;
            }
            let bytes = r
                .packs
                .iter()
                .fold(0u64, |sum, p| sum.saturating_add(p.size));
            assert_eq!(r.bytes, bytes, "{key} bytes");
            let pending = r
                .pending
                .values()
                .fold(0u64, |sum, p| sum.saturating_add(p.size));
            assert_eq!(r.pending_bytes, pending, "{key} pending_bytes");
            for p in r.pending.values() {
                assert!(p.buf.len() <= p.size_usize, "{key} pending overfull");
                assert!(p.buf.capacity() <= p.size_usize, "{key} pending capacity");
            }
            pending_announced = pending_announced.saturating_add(pending);
        }
        assert_eq!(
            inner.pending_announced, pending_announced,
            "pending_announced"
        );
        assert_eq!(
            refs.len(),
            inner.contents.len(),
            "unreferenced or missing content"
        );
        for (hash, content) in &inner.contents {
            assert_eq!(refs.get(hash), Some(&content.rooms), "reference count");
        }
    }
}

impl fmt::Debug for PackStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackStore")
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish()
    }
}
