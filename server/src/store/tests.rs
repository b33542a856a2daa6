//! The store file against real files in a temporary directory: what is
//! written is read back, what cannot be read stops the start (or is dropped
//! when told to), and the writer's modes commit when they promise to.

use super::db::{self, Write};
use super::*;
use crate::core::{
    ChangeKind, ClientIdentity, JoinAccess, Room, RoomChanges, RoomConfig, RoomInput,
};
use bytes::Bytes;
use chorus_protocol::{DisplayInfo, PackInfo, RoomSlot, ServerTime};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn temp_settings(name: &str) -> StoreSettings {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "chorus-store-{name}-{}-{nanos}",
        std::process::id()
    ));
    StoreSettings::new(dir)
}

/// A room with one member and one state key, tracked from its creation.
fn room(id: &str, slot: u32) -> Room {
    let mut room = Room::new(
        id.into(),
        RoomSlot(slot),
        RoomConfig::default(),
        ServerTime(1),
    );
    room.track_changes();
    room.handle(
        ServerTime(2),
        RoomInput::Join {
            session: crate::core::SessionId(1),
            request_id: 1,
            display: DisplayInfo::default(),
            access: JoinAccess {
                identity: ClientIdentity {
                    ip: [127, 0, 0, 1].into(),
                    subject: None,
                },
                role: None,
                password_given: false,
                password_verified: None,
                resume_key: None,
                token_expires: None,
            },
        },
    );
    room.handle(
        ServerTime(3),
        RoomInput::SetState {
            session: crate::core::SessionId(1),
            request_id: 2,
            key: "key".into(),
            value: b"value".to_vec(),
            if_version: None,
        },
    );
    while room.poll_output().is_some() {}
    room
}

fn write(database: &redb::Database, writes: Vec<Write>) {
    let refs: Vec<&Write> = writes.iter().collect();
    db::apply(database, &refs).expect("written");
}

fn changes(room: &mut Room) -> RoomChanges {
    room.take_changes().expect("changes")
}

#[test]
fn what_is_written_is_read_back_after_reopening() {
    let settings = temp_settings("roundtrip");
    let (database, loaded) = Store::open(&settings).expect("opens");
    assert!(loaded.rooms.is_empty());
    let mut a = room("a", 1);
    let mut b = Room::new(
        "b".into(),
        RoomSlot(2),
        RoomConfig::default(),
        ServerTime(1),
    );
    b.track_changes();
    write(
        &database,
        vec![Write::Room(changes(&mut a)), Write::Room(changes(&mut b))],
    );
    // b ends (empty past its idle time): everything of it goes.
    b.handle_timeout(ServerTime(u64::MAX));
    assert!(b.is_ended());
    write(&database, vec![Write::Room(changes(&mut b))]);
    drop(database);

    let (_database, loaded) = Store::open(&settings).expect("reopens");
    assert_eq!(loaded.rooms.len(), 1);
    let records = &loaded.rooms[0];
    assert_eq!(records.room.id, "a");
    assert_eq!(records.room.slot, RoomSlot(1));
    assert_eq!(records.state.len(), 1);
    assert_eq!(records.state[0].1.value, b"value");
    assert_eq!(records.events.len(), 2, "the join and the write");
    assert!(loaded.discarded.is_empty());
}

#[test]
fn pack_content_comes_back_with_the_room_that_lists_it_and_orphans_go() {
    let settings = temp_settings("packs");
    let (database, _) = Store::open(&settings).expect("opens");
    let content = Bytes::from_static(b"pack bytes");
    let hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &content)
        .as_ref()
        .try_into()
        .expect("32 bytes");
    let orphan = [7u8; 32];
    let mut a = room("a", 1);
    a.handle(
        ServerTime(4),
        RoomInput::PackAdded {
            session: crate::core::SessionId(1),
            request_id: None,
            pack: PackInfo {
                hash: hash.to_vec(),
                name: "p".into(),
                media_type: "application/octet-stream".into(),
                size: content.len() as u64,
                uploader: chorus_protocol::MemberId(1),
            },
        },
    );
    while a.poll_output().is_some() {}
    write(
        &database,
        vec![
            Write::PutPack(hash, content.clone(), 1),
            Write::PutPack(orphan, Bytes::from_static(b"nobody lists me"), 2),
            Write::Room(changes(&mut a)),
        ],
    );
    drop(database);
    let (database, loaded) = Store::open(&settings).expect("reopens");
    assert_eq!(loaded.packs.get(&hash), Some(&content));
    assert!(!loaded.packs.contains_key(&orphan));
    drop(database);
    // The orphan was dropped from the file, not only from what was read.
    let read = redb::Database::open(settings.file()).expect("opens");
    let txn = redb::ReadableDatabase::begin_read(&read).expect("read");
    let packs = txn
        .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("packs"))
        .expect("table");
    assert!(packs.get(orphan.as_slice()).expect("get").is_none());
}

/// Overwrites the record of room `id` with bytes that do not decode.
fn damage_room_record(settings: &StoreSettings, id: &str) {
    let database = redb::Database::open(settings.file()).expect("opens");
    let txn = database.begin_write().expect("write");
    {
        let mut rooms = txn
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("rooms"))
            .expect("table");
        rooms.insert(id, [0xff_u8; 3].as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn an_unreadable_record_stops_the_start_unless_told_to_drop_it() {
    let mut settings = temp_settings("bad-record");
    let (database, _) = Store::open(&settings).expect("opens");
    let mut a = room("a", 1);
    let mut b = room("b", 2);
    write(
        &database,
        vec![Write::Room(changes(&mut a)), Write::Room(changes(&mut b))],
    );
    drop(database);
    damage_room_record(&settings, "b");

    match Store::open(&settings) {
        Err(StoreError::Corrupt { path, reason }) => {
            assert_eq!(path, settings.file());
            assert!(reason.contains("room \"b\""), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    settings.discard_corrupt = true;
    let (_database, loaded) = Store::open(&settings).expect("opens, told to go on");
    assert_eq!(loaded.rooms.len(), 1);
    assert_eq!(loaded.rooms[0].room.id, "a");
    assert_eq!(loaded.discarded.len(), 1);
    let aside = loaded.copied_aside.expect("a copy was made first");
    assert!(aside.exists());
}

#[test]
fn a_store_from_a_newer_chorus_is_refused() {
    let settings = temp_settings("newer");
    drop(Store::open(&settings).expect("opens"));
    {
        let database = redb::Database::open(settings.file()).expect("opens");
        let txn = database.begin_write().expect("write");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .expect("table");
            meta.insert("format", 99u32.to_le_bytes().as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    assert!(matches!(
        Store::open(&settings),
        Err(StoreError::NewerFormat { found: 99, .. })
    ));
}

#[test]
fn none_mode_empties_the_store_once_read() {
    let mut settings = temp_settings("none");
    let (database, _) = Store::open(&settings).expect("opens");
    let mut a = room("a", 1);
    write(&database, vec![Write::Room(changes(&mut a))]);
    drop(database);
    settings.durability = Durability::None;
    let (database, loaded) = Store::open(&settings).expect("opens");
    assert_eq!(loaded.rooms.len(), 1, "read as it was");
    drop(database);
    let (_database, loaded) = Store::open(&settings).expect("opens again");
    assert!(loaded.rooms.is_empty(), "nothing kept past a crash");
}

#[tokio::test]
async fn sync_writes_return_once_committed_and_flush_waits_for_interval_writes() {
    for durability in [Durability::Sync, Durability::Interval] {
        let mut settings = temp_settings(durability.name());
        settings.durability = durability;
        // Long enough that only a flush can have committed the write below.
        settings.interval = std::time::Duration::from_secs(3600);
        let (database, _) = Store::open(&settings).expect("opens");
        let stats = Arc::new(crate::stats::ServerStats::default());
        let handle = Store::start_writer(
            database.clone(),
            &settings,
            Arc::new(AtomicBool::new(true)),
            stats.clone(),
        );
        let mut a = room("a", 1);
        handle.write_room(changes(&mut a)).await.expect("queued");
        if durability == Durability::Interval {
            handle.flush().await.expect("flushed");
        }
        // Committed: a reader sees it now.
        let txn = redb::ReadableDatabase::begin_read(&*database).expect("read");
        let rooms = txn
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("rooms"))
            .expect("table");
        assert!(rooms.get("a").expect("get").is_some(), "{durability}");
        assert_eq!(stats.store.commits.get(), 1, "{durability}: one commit");
        assert_eq!(stats.store.writes.get(), 1, "{durability}");
    }
}

#[test]
fn replace_kind_drops_what_was_kept_first() {
    let settings = temp_settings("replace");
    let (database, _) = Store::open(&settings).expect("opens");
    let mut a = room("a", 1);
    write(&database, vec![Write::Room(changes(&mut a))]);
    // A new room under the same id (the old one ended, its delete lost).
    let mut again = Room::new(
        "a".into(),
        RoomSlot(5),
        RoomConfig::default(),
        ServerTime(9),
    );
    again.track_changes();
    let first = changes(&mut again);
    assert_eq!(first.kind, ChangeKind::Replace);
    write(&database, vec![Write::Room(first)]);
    drop(database);
    let (_database, loaded) = Store::open(&settings).expect("reopens");
    assert_eq!(loaded.rooms[0].room.slot, RoomSlot(5));
    assert!(
        loaded.rooms[0].state.is_empty(),
        "the old room's state went with it"
    );
}

#[test]
fn the_end_of_a_room_does_not_delete_a_new_room_under_the_same_id() {
    let settings = temp_settings("same-id");
    let (database, _) = Store::open(&settings).expect("opens");
    let mut old = Room::new(
        "a".into(),
        RoomSlot(1),
        RoomConfig::default(),
        ServerTime(1),
    );
    old.track_changes();
    write(&database, vec![Write::Room(changes(&mut old))]);
    old.handle_timeout(ServerTime(u64::MAX));
    let old_end = changes(&mut old);
    assert_eq!(old_end.kind, ChangeKind::Delete);
    // The new room's first write reaches the store before the old one's end.
    let mut new = room("a", 2);
    write(
        &database,
        vec![Write::Room(changes(&mut new)), Write::Room(old_end)],
    );
    drop(database);
    let (_database, loaded) = Store::open(&settings).expect("reopens");
    assert_eq!(loaded.rooms.len(), 1);
    assert_eq!(loaded.rooms[0].room.slot, RoomSlot(2));
}

#[tokio::test]
async fn freed_pack_content_uploaded_again_meanwhile_is_kept() {
    let mut settings = temp_settings("pack-epochs");
    settings.durability = Durability::Sync;
    let (database, _) = Store::open(&settings).expect("opens");
    let handle = Store::start_writer(
        database.clone(),
        &settings,
        Arc::new(AtomicBool::new(true)),
        Arc::new(crate::stats::ServerStats::default()),
    );
    let hash = [3u8; 32];
    let stored = |database: &redb::Database| {
        let txn = redb::ReadableDatabase::begin_read(database).expect("read");
        let packs = txn
            .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("packs"))
            .expect("table");
        packs.get(hash.as_slice()).expect("get").is_some()
    };
    // Uploaded again (epoch 5) after it was freed (epoch 4), but the free
    // reaches the writer last: the content stays.
    handle
        .put_pack(hash, Bytes::from_static(b"bytes"), 5)
        .await
        .expect("queued");
    handle.delete_packs(vec![(hash, 4)]).await.expect("queued");
    handle.flush().await.expect("flushed");
    assert!(stored(&database));
    // Freed after that upload: it goes.
    handle.delete_packs(vec![(hash, 6)]).await.expect("queued");
    handle.flush().await.expect("flushed");
    assert!(!stored(&database));
}
