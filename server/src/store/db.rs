//! The store file: its tables and keys, opening and checking it, reading it
//! whole at start, and applying a batch of writes in one transaction. All of
//! it blocks; the writer task runs it off the async workers.
//!
//! Keys of per-room tables are the room id, a 0 byte, then the entry's own
//! key (a state key, an idempotency key) or its seq as 8 big-endian bytes,
//! so one room's entries are one contiguous range, in order. Room ids never
//! contain a 0 byte (they may not contain control characters).

use super::{Durability, StoreError, StoreSettings};
use crate::core::{ChangeKind, RoomChanges, RoomRecords, StoredRoom, StoredValue};
use bytes::Bytes;
use chorus_protocol::{ChatEntry, Seq, ServerMessage};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The store's file name under the data directory.
pub const STORE_FILE: &str = "chorus.redb";

/// The layout this build reads and writes. Bumped when a record's shape or
/// a key's layout changes (records embed protocol types, so a protocol
/// change that alters them bumps it too).
const FORMAT: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
const CHAT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chat");
const IDEMPOTENCY: TableDefinition<&[u8], u64> = TableDefinition::new("idempotency");
const PACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("packs");

/// What the store held at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rooms: Vec<RoomRecords>,
    /// Content of the packs the rooms list, by hash.
    pub packs: HashMap<[u8; 32], Bytes>,
    /// Records that could not be read and were dropped (only with
    /// `discard_corrupt`), as "table/key: reason".
    pub discarded: Vec<String>,
    /// Where the file was copied before anything was dropped.
    pub copied_aside: Option<PathBuf>,
}

/// One write of a batch.
// Nearly every write is a room's changes; boxing them would add an
// allocation per write to save memory on the rare pack writes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Write {
    Room(RoomChanges),
    /// Content, with the pack store's epoch of its coming in.
    PutPack([u8; 32], Bytes, u64),
    /// Content freed, each with the pack store's epoch of its freeing.
    DeletePacks(Vec<([u8; 32], u64)>),
    /// Drop every room and pack, then write these (a whole image).
    ReplaceAll {
        rooms: Vec<RoomChanges>,
        packs: Vec<([u8; 32], Bytes)>,
    },
}

fn prefix(room: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(room.len() + 9);
    key.extend_from_slice(room.as_bytes());
    key.push(0);
    key
}

/// The key range of one room in a per-room table: `room\0` up to `room\x01`.
fn room_range(room: &str) -> (Vec<u8>, Vec<u8>) {
    let start = prefix(room);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    (start, end)
}

fn named_key(room: &str, name: &str) -> Vec<u8> {
    let mut key = prefix(room);
    key.extend_from_slice(name.as_bytes());
    key
}

fn seq_key(room: &str, seq: Seq) -> Vec<u8> {
    let mut key = prefix(room);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

/// The part of a per-room key after the room prefix.
fn suffix<'k>(key: &'k [u8], room: &str) -> &'k [u8] {
    key.get(room.len() + 1..).unwrap_or_default()
}

fn seq_of(suffix: &[u8]) -> Option<Seq> {
    Some(Seq(u64::from_be_bytes(suffix.try_into().ok()?)))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    chorus_protocol::encode_message(value)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Opens the store and reads it. See [`Store::open`](super::Store::open).
pub(super) fn open(settings: &StoreSettings) -> Result<(Arc<Database>, Loaded), StoreError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| StoreError::DataDir {
        path: settings.data_dir.clone(),
        source,
    })?;
    let path = settings.file();
    match open_and_read(&path, settings.durability) {
        Ok(done) => Ok(done),
        Err(OpenFailure::Fatal(e)) => Err(e),
        Err(OpenFailure::Unreadable(reason)) if settings.discard_corrupt => {
            let aside = copy_aside(&path)?;
            tracing::error!(path = %path.display(), aside = %aside.display(), %reason,
                "store unreadable; copied aside, starting with an empty store");
            std::fs::remove_file(&path).map_err(|e| corrupt(&path, e))?;
            let (db, mut loaded) = open_and_read(&path, settings.durability)
                .map_err(|failure| failure.into_error(&path))?;
            loaded.discarded.push(format!("whole file: {reason}"));
            loaded.copied_aside = Some(aside);
            Ok((db, loaded))
        }
        Err(OpenFailure::BadRecords(bad, _)) if settings.discard_corrupt => {
            let aside = copy_aside(&path)?;
            let db = open_file(&path)?;
            drop_bad_records(&db, &path, &bad)?;
            drop(db);
            let (db, mut loaded) = open_and_read(&path, settings.durability)
                .map_err(|failure| failure.into_error(&path))?;
            for b in &bad {
                tracing::error!(path = %path.display(), record = %b.describe(), "unreadable record dropped");
            }
            loaded.discarded = bad.iter().map(BadRecord::describe).collect();
            loaded.copied_aside = Some(aside);
            Ok((db, loaded))
        }
        Err(failure) => Err(failure.into_error(&path)),
    }
}

enum OpenFailure {
    /// Not about the file's content (in use, newer format, no directory).
    Fatal(StoreError),
    /// The file as a whole cannot be opened or read.
    Unreadable(String),
    /// The file opens, but these records do not decode.
    BadRecords(Vec<BadRecord>, String),
}

impl OpenFailure {
    /// The error to report when nothing more is to be tried.
    fn into_error(self, path: &Path) -> StoreError {
        match self {
            OpenFailure::Fatal(e) => e,
            OpenFailure::Unreadable(reason) | OpenFailure::BadRecords(_, reason) => {
                corrupt(path, reason)
            }
        }
    }
}

/// A record that does not decode: the room it belongs to is dropped whole
/// (a room without its record, or with part of its entries, is not a room).
#[derive(Debug, Clone)]
struct BadRecord {
    room: Option<String>,
    pack: Option<[u8; 32]>,
    what: String,
}

impl BadRecord {
    fn describe(&self) -> String {
        match (&self.room, &self.pack) {
            (Some(room), _) => format!("room {room:?}: {}", self.what),
            (None, Some(hash)) => format!("pack {}: {}", hex(hash), self.what),
            (None, None) => self.what.clone(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn open_file(path: &Path) -> Result<Database, StoreError> {
    open_file_inner(path).map_err(|failure| failure.into_error(path))
}

fn open_file_inner(path: &Path) -> Result<Database, OpenFailure> {
    // redb checks some invariants with debug assertions; a damaged file must
    // be reported, never take the process down, whatever the build.
    let opened = std::panic::catch_unwind(|| Database::create(path));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            Err(OpenFailure::Fatal(StoreError::InUse {
                path: path.to_owned(),
            }))
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(OpenFailure::Fatal(StoreError::Write {
                path: path.to_owned(),
                reason: e.to_string(),
            }))
        }
        Ok(Err(e)) => Err(OpenFailure::Unreadable(e.to_string())),
        Err(_) => Err(OpenFailure::Unreadable(
            "the store library failed reading it".into(),
        )),
    }
}

fn open_and_read(
    path: &Path,
    durability: Durability,
) -> Result<(Arc<Database>, Loaded), OpenFailure> {
    let db = open_file_inner(path)?;
    let unreadable = |e: &dyn std::fmt::Display| OpenFailure::Unreadable(e.to_string());
    check_format(&db, path)?;
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_all(&db)));
    let (loaded, bad) = match read {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(unreadable(&e)),
        Err(_) => return Err(unreadable(&"the store library failed reading it")),
    };
    if !bad.is_empty() {
        let reason = format!(
            "{} unreadable record(s), first: {}",
            bad.len(),
            bad[0].describe()
        );
        return Err(OpenFailure::BadRecords(bad, reason));
    }
    let db = Arc::new(db);
    // Content no room lists (an upload whose room was not committed before
    // a crash) is never read again: drop it.
    let orphans = orphan_packs(&db, &loaded).map_err(|e| unreadable(&e))?;
    if !orphans.is_empty() {
        tracing::info!(packs = orphans.len(), "dropping pack content no room lists");
        let orphans = orphans.into_iter().map(|hash| (hash, 0)).collect();
        apply(&db, &[&Write::DeletePacks(orphans)]).map_err(|e| {
            OpenFailure::Fatal(StoreError::Write {
                path: path.to_owned(),
                reason: e,
            })
        })?;
    }
    if durability == Durability::None && !loaded.rooms.is_empty() {
        apply(
            &db,
            &[&Write::ReplaceAll {
                rooms: Vec::new(),
                packs: Vec::new(),
            }],
        )
        .map_err(|e| {
            OpenFailure::Fatal(StoreError::Write {
                path: path.to_owned(),
                reason: e,
            })
        })?;
    }
    Ok((db, loaded))
}

/// Writes the format on a new file; refuses a newer one.
fn check_format(db: &Database, path: &Path) -> Result<(), OpenFailure> {
    let unreadable = |e: &dyn std::fmt::Display| OpenFailure::Unreadable(e.to_string());
    let found = {
        let read = db.begin_read().map_err(|e| unreadable(&e))?;
        match read.open_table(META) {
            Ok(meta) => match meta.get("format").map_err(|e| unreadable(&e))? {
                Some(v) => Some(
                    <[u8; 4]>::try_from(v.value())
                        .map(u32::from_le_bytes)
                        .map_err(|_| unreadable(&"the format record is damaged"))?,
                ),
                None => None,
            },
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(unreadable(&e)),
        }
    };
    match found {
        Some(FORMAT) => Ok(()),
        Some(found) if found > FORMAT => Err(OpenFailure::Fatal(StoreError::NewerFormat {
            path: path.to_owned(),
            found,
            supported: FORMAT,
        })),
        Some(found) => Err(OpenFailure::Unreadable(format!(
            "format {found} is not one this build reads ({FORMAT})"
        ))),
        None => {
            let fatal = |e: &dyn std::fmt::Display| {
                OpenFailure::Fatal(StoreError::Write {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            };
            let write = db.begin_write().map_err(|e| fatal(&e))?;
            {
                let mut meta = write.open_table(META).map_err(|e| fatal(&e))?;
                meta.insert("format", FORMAT.to_le_bytes().as_slice())
                    .map_err(|e| fatal(&e))?;
                // Create every table, so reading never meets a missing one.
                write.open_table(ROOMS).map_err(|e| fatal(&e))?;
                write.open_table(STATE).map_err(|e| fatal(&e))?;
                write.open_table(EVENTS).map_err(|e| fatal(&e))?;
                write.open_table(CHAT).map_err(|e| fatal(&e))?;
                write.open_table(IDEMPOTENCY).map_err(|e| fatal(&e))?;
                write.open_table(PACKS).map_err(|e| fatal(&e))?;
            }
            write.commit().map_err(|e| fatal(&e))
        }
    }
}

type ReadResult = Result<(Loaded, Vec<BadRecord>), redb::Error>;

/// Reads every room and the pack content they list. Records that do not
/// decode are returned beside (their room is not in the result).
fn read_all(db: &Database) -> ReadResult {
    let read = db.begin_read()?;
    let rooms = read.open_table(ROOMS)?;
    let state = read.open_table(STATE)?;
    let events = read.open_table(EVENTS)?;
    let chat = read.open_table(CHAT)?;
    let idempotency = read.open_table(IDEMPOTENCY)?;
    let packs = read.open_table(PACKS)?;
    let mut loaded = Loaded::default();
    let mut bad = Vec::new();
    for entry in rooms.iter()? {
        let (id, record) = entry?;
        let id = id.value().to_owned();
        match read_room(&id, record.value(), &state, &events, &chat, &idempotency) {
            Ok(records) => loaded.rooms.push(records),
            Err(what) => bad.push(BadRecord {
                room: Some(id),
                pack: None,
                what,
            }),
        }
    }
    let mut good_rooms = Vec::with_capacity(loaded.rooms.len());
    for room in std::mem::take(&mut loaded.rooms) {
        let mut missing = None;
        for pack in &room.room.packs {
            let Ok(hash) = <[u8; 32]>::try_from(pack.hash.as_slice()) else {
                missing = Some(format!("pack {:?} has a malformed hash", pack.name));
                break;
            };
            if loaded.packs.contains_key(&hash) {
                continue;
            }
            match packs.get(hash.as_slice())? {
                Some(content) if content.value().len() as u64 == pack.size => {
                    loaded
                        .packs
                        .insert(hash, Bytes::copy_from_slice(content.value()));
                }
                Some(_) => {
                    missing = Some(format!(
                        "the content of pack {} has the wrong size",
                        hex(&hash)
                    ));
                    break;
                }
                None => {
                    missing = Some(format!("the content of pack {} is missing", hex(&hash)));
                    break;
                }
            }
        }
        match missing {
            None => good_rooms.push(room),
            Some(what) => bad.push(BadRecord {
                room: Some(room.room.id.clone()),
                pack: None,
                what,
            }),
        }
    }
    loaded.rooms = good_rooms;
    Ok((loaded, bad))
}

fn orphan_packs(db: &Database, loaded: &Loaded) -> Result<Vec<[u8; 32]>, redb::Error> {
    let read = db.begin_read()?;
    let packs = read.open_table(PACKS)?;
    let mut orphans = Vec::new();
    for entry in packs.iter()? {
        let (hash, _) = entry?;
        match <[u8; 32]>::try_from(hash.value()) {
            Ok(hash) if loaded.packs.contains_key(&hash) => {}
            Ok(hash) => orphans.push(hash),
            // A key of the wrong length cannot be a pack: nothing reads it.
            Err(_) => {}
        }
    }
    Ok(orphans)
}

fn read_room(
    id: &str,
    record: &[u8],
    state: &impl ReadableTable<&'static [u8], &'static [u8]>,
    events: &impl ReadableTable<&'static [u8], &'static [u8]>,
    chat: &impl ReadableTable<&'static [u8], &'static [u8]>,
    idempotency: &impl ReadableTable<&'static [u8], u64>,
) -> Result<RoomRecords, String> {
    let room: StoredRoom = decode(record).map_err(|e| format!("room record: {e}"))?;
    if room.id != id {
        return Err(format!("the record names room {:?}", room.id));
    }
    let (start, end) = room_range(id);
    let range = start.as_slice()..end.as_slice();
    let io = |e: redb::StorageError| e.to_string();
    let mut records = RoomRecords {
        room,
        state: Vec::new(),
        events: Vec::new(),
        chat: Vec::new(),
        idempotency: Vec::new(),
    };
    for entry in state.range(range.clone()).map_err(io)? {
        let (k, v) = entry.map_err(io)?;
        let key = std::str::from_utf8(suffix(k.value(), id))
            .map_err(|_| "a state key is not UTF-8".to_owned())?
            .to_owned();
        let value: StoredValue = decode(v.value()).map_err(|e| format!("state {key:?}: {e}"))?;
        records.state.push((key, value));
    }
    for entry in events.range(range.clone()).map_err(io)? {
        let (k, v) = entry.map_err(io)?;
        let seq = seq_of(suffix(k.value(), id)).ok_or("an event key is malformed")?;
        let message: ServerMessage = chorus_protocol::decode_server_message(v.value())
            .map_err(|e| format!("event {}: {e}", seq.0))?;
        records.events.push((seq, message));
    }
    for entry in chat.range(range.clone()).map_err(io)? {
        let (k, v) = entry.map_err(io)?;
        let seq = seq_of(suffix(k.value(), id)).ok_or("a chat key is malformed")?;
        let entry: ChatEntry = decode(v.value()).map_err(|e| format!("chat {}: {e}", seq.0))?;
        records.chat.push(entry);
    }
    for entry in idempotency.range(range).map_err(io)? {
        let (k, v) = entry.map_err(io)?;
        let key = std::str::from_utf8(suffix(k.value(), id))
            .map_err(|_| "an idempotency key is not UTF-8".to_owned())?
            .to_owned();
        records.idempotency.push((key, Seq(v.value())));
    }
    Ok(records)
}

/// Removes the rooms (whole) and packs named by `bad`.
fn drop_bad_records(db: &Database, path: &Path, bad: &[BadRecord]) -> Result<(), StoreError> {
    let fail = |e: &dyn std::fmt::Display| StoreError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let write = db.begin_write().map_err(|e| fail(&e))?;
    for b in bad {
        if let Some(room) = &b.room {
            delete_room(&write, room).map_err(|e| fail(&e))?;
        }
        if let Some(hash) = &b.pack {
            let mut packs = write.open_table(PACKS).map_err(|e| fail(&e))?;
            packs.remove(hash.as_slice()).map_err(|e| fail(&e))?;
        }
    }
    write.commit().map_err(|e| fail(&e))
}

fn copy_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    let to = PathBuf::from(name);
    std::fs::copy(path, &to).map_err(|source| StoreError::CopyAside {
        path: path.to_owned(),
        to: to.clone(),
        source,
    })?;
    Ok(to)
}

fn delete_room(write: &redb::WriteTransaction, room: &str) -> Result<(), redb::Error> {
    write.open_table(ROOMS)?.remove(room)?;
    let (start, end) = room_range(room);
    let range = start.as_slice()..end.as_slice();
    write
        .open_table(STATE)?
        .retain_in(range.clone(), |_, _| false)?;
    write
        .open_table(EVENTS)?
        .retain_in(range.clone(), |_, _| false)?;
    write
        .open_table(CHAT)?
        .retain_in(range.clone(), |_, _| false)?;
    write
        .open_table(IDEMPOTENCY)?
        .retain_in(range, |_, _| false)?;
    Ok(())
}

fn write_room(write: &redb::WriteTransaction, changes: &RoomChanges) -> Result<(), redb::Error> {
    let room = changes.room_id.as_str();
    match changes.kind {
        ChangeKind::Delete => {
            // Only the room that ended: a room created since under the same
            // id (another slot) may have been written first.
            let stored_slot = match write.open_table(ROOMS)?.get(room)? {
                Some(record) => decode::<StoredRoom>(record.value()).ok().map(|r| r.slot),
                None => return Ok(()),
            };
            if stored_slot.is_some_and(|slot| slot != changes.slot) {
                return Ok(());
            }
            return delete_room(write, room);
        }
        ChangeKind::Replace => delete_room(write, room)?,
        ChangeKind::Update => {}
    }
    if let Some(record) = &changes.room {
        write
            .open_table(ROOMS)?
            .insert(room, encode(record).as_slice())?;
    }
    if !changes.state.is_empty() {
        let mut state = write.open_table(STATE)?;
        for (key, value) in &changes.state {
            let k = named_key(room, key);
            match value {
                Some(v) => {
                    state.insert(k.as_slice(), encode(v).as_slice())?;
                }
                None => {
                    state.remove(k.as_slice())?;
                }
            }
        }
    }
    if !changes.events.is_empty() || changes.events_from.is_some() {
        let mut events = write.open_table(EVENTS)?;
        for (seq, message) in &changes.events {
            events.insert(seq_key(room, *seq).as_slice(), encode(message).as_slice())?;
        }
        if let Some(from) = changes.events_from {
            let (start, _) = room_range(room);
            let end = seq_key(room, from);
            events.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
        }
    }
    if !changes.chat.is_empty() || changes.chat_from.is_some() {
        let mut chat = write.open_table(CHAT)?;
        for entry in &changes.chat {
            chat.insert(
                seq_key(room, entry.seq).as_slice(),
                encode(entry).as_slice(),
            )?;
        }
        if let Some(from) = changes.chat_from {
            let (start, _) = room_range(room);
            let end = seq_key(room, from);
            chat.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
        }
    }
    if !changes.idempotency.is_empty() {
        let mut idempotency = write.open_table(IDEMPOTENCY)?;
        for (key, seq) in &changes.idempotency {
            let k = named_key(room, key);
            match seq {
                Some(seq) => {
                    idempotency.insert(k.as_slice(), seq.0)?;
                }
                None => {
                    idempotency.remove(k.as_slice())?;
                }
            }
        }
    }
    Ok(())
}

/// Applies `writes` in one transaction, committed with fsync.
pub(super) fn apply(db: &Database, writes: &[&Write]) -> Result<(), String> {
    let run = || -> Result<(), redb::Error> {
        let write = db.begin_write()?;
        for w in writes {
            match w {
                Write::Room(changes) => write_room(&write, changes)?,
                Write::PutPack(hash, content, _) => {
                    write
                        .open_table(PACKS)?
                        .insert(hash.as_slice(), content.as_ref())?;
                }
                Write::DeletePacks(hashes) => {
                    let mut packs = write.open_table(PACKS)?;
                    for (hash, _) in hashes {
                        packs.remove(hash.as_slice())?;
                    }
                }
                Write::ReplaceAll { rooms, packs } => {
                    write.open_table(ROOMS)?.retain(|_, _| false)?;
                    write.open_table(STATE)?.retain(|_, _| false)?;
                    write.open_table(EVENTS)?.retain(|_, _| false)?;
                    write.open_table(CHAT)?.retain(|_, _| false)?;
                    write.open_table(IDEMPOTENCY)?.retain(|_, _| false)?;
                    write.open_table(PACKS)?.retain(|_, _| false)?;
                    for room in rooms {
                        write_room(&write, room)?;
                    }
                    let mut table = write.open_table(PACKS)?;
                    for (hash, content) in packs {
                        table.insert(hash.as_slice(), content.as_ref())?;
                    }
                }
            }
        }
        write.commit()?;
        Ok(())
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .map_err(|_| "the store library failed writing".to_owned())?
        .map_err(|e| e.to_string())
}
