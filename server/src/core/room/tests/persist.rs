//! Deterministic tests of what a room hands out to be kept, and of a room
//! rebuilt from it after a restart. A small model store applies the changes
//! the way the real one does (by key, by range), so these tests check the
//! core's half of the contract without a file.

use super::*;
use crate::core::{ChangeKind, RoomChanges, RoomRecords, StoredRoom, StoredValue};
use chorus_protocol::{ChatEntry, RoomKind};
use std::collections::BTreeMap;

const SEC: u64 = 1_000_000;

fn at(secs: u64) -> ServerTime {
    T0.saturating_add_micros(secs * SEC)
}

#[derive(Debug, Default)]
struct ModelRoom {
    record: Option<StoredRoom>,
    state: BTreeMap<String, StoredValue>,
    events: BTreeMap<Seq, ServerMessage>,
    chat: BTreeMap<Seq, ChatEntry>,
    idempotency: BTreeMap<String, Seq>,
}

/// Keeps what rooms hand out, as the real store does.
#[derive(Debug, Default)]
struct ModelStore {
    rooms: BTreeMap<String, ModelRoom>,
}

impl ModelStore {
    fn apply(&mut self, changes: RoomChanges) {
        match changes.kind {
            ChangeKind::Delete => {
                self.rooms.remove(&changes.room_id);
                return;
            }
            ChangeKind::Replace => {
                self.rooms.remove(&changes.room_id);
            }
            ChangeKind::Update => {}
        }
        let room = self.rooms.entry(changes.room_id).or_default();
        if let Some(record) = changes.room {
            room.record = Some(record);
        }
        for (key, value) in changes.state {
            match value {
                Some(v) => room.state.insert(key, v),
                None => room.state.remove(&key),
            };
        }
        room.events.extend(changes.events);
        if let Some(from) = changes.events_from {
            room.events.retain(|seq, _| *seq >= from);
        }
        room.chat
            .extend(changes.chat.into_iter().map(|c| (c.seq, c)));
        if let Some(from) = changes.chat_from {
            room.chat.retain(|seq, _| *seq >= from);
        }
        for (key, seq) in changes.idempotency {
            match seq {
                Some(seq) => room.idempotency.insert(key, seq),
                None => room.idempotency.remove(&key),
            };
        }
    }

    fn keep(&mut self, room: &mut Room) {
        if let Some(changes) = room.take_changes() {
            self.apply(changes);
        }
    }

    fn records(&self, id: &str) -> RoomRecords {
        let room = &self.rooms[id];
        RoomRecords {
            room: room.record.clone().expect("a room record"),
            state: room
                .state
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            events: room.events.iter().map(|(s, m)| (*s, m.clone())).collect(),
            chat: room.chat.values().cloned().collect(),
            idempotency: room
                .idempotency
                .iter()
                .map(|(k, s)| (k.clone(), *s))
                .collect(),
        }
    }
}

fn tracked_room(config: RoomConfig) -> Room {
    let mut room = room_with(config);
    room.track_changes();
    room
}

fn with_key(ip: u8, key: u8) -> JoinAccess {
    JoinAccess {
        resume_key: Some(ResumeKey([key; 32])),
        ..access(ip)
    }
}

/// Sessions given to restored members: far from the test's own.
fn placeholders() -> impl FnMut() -> SessionId {
    let mut next = 1000;
    move || {
        next += 1;
        SessionId(next)
    }
}

#[test]
fn a_new_room_is_written_whole_then_only_what_changes() {
    let mut room = tracked_room(RoomConfig::default());
    let first = room.take_changes().expect("the first write");
    assert_eq!(first.kind, ChangeKind::Replace);
    assert!(first.room.is_some());
    assert_eq!(room.take_changes(), None, "nothing changed since");

    join_with(&mut room, T0, s(1), "ann", with_key(1, 9));
    let joined = room.take_changes().expect("a join changes the room");
    assert_eq!(joined.kind, ChangeKind::Update);
    let record = joined.room.expect("members are in the record");
    assert_eq!(record.members.len(), 1);
    assert_eq!(record.members[0].resume_key, Some(ResumeKey([9; 32])));
    // The join is a sequenced event, kept for resuming members.
    assert_eq!(joined.events.len(), 1);

    set(&mut room, s(1), "k", b"v", None);
    let update = room.take_changes().expect("a write");
    assert_eq!(
        update.state,
        vec![(
            "k".to_owned(),
            Some(StoredValue {
                value: b"v".to_vec(),
                version: 1,
                author: MemberId(1),
            })
        )]
    );
    assert_eq!(update.events.len(), 1, "only the new event");
    assert!(update.room.is_some(), "the seq and state version moved");

    set(&mut room, s(1), "k", b"", None);
    room.handle(
        T0,
        RoomInput::DeleteState {
            session: s(1),
            request_id: 5,
            key: "k".into(),
            if_version: None,
        },
    );
    drain(&mut room);
    let deleted = room.take_changes().expect("a delete");
    assert_eq!(
        deleted.state,
        vec![("k".to_owned(), None)],
        "one entry per key, the last"
    );
}

#[test]
fn alive_and_refused_requests_write_nothing() {
    let mut room = tracked_room(RoomConfig::default());
    join(&mut room, s(1), "ann");
    let _ = room.take_changes();
    room.handle(at(1), RoomInput::Alive { session: s(1) });
    drain(&mut room);
    set(&mut room, s(9), "k", b"v", None); // not a member
    assert_eq!(room.take_changes(), None);
}

#[test]
fn a_relay_room_keeps_nothing_and_an_ended_room_is_deleted_once() {
    let mut relay = tracked_room(RoomConfig {
        kind: RoomKind::Relay,
        ..RoomConfig::default()
    });
    join(&mut relay, s(1), "ann");
    assert_eq!(relay.take_changes(), None);
    assert_eq!(relay.image(), None);

    let mut room = tracked_room(RoomConfig::default());
    let _ = room.take_changes();
    room.handle_timeout(ServerTime(u64::MAX));
    assert!(room.is_ended());
    let gone = room.take_changes().expect("the room's end");
    assert_eq!(gone.kind, ChangeKind::Delete);
    assert_eq!(room.take_changes(), None);
}

#[test]
fn the_kept_event_log_follows_the_rooms_bound() {
    let mut room = tracked_room(RoomConfig {
        event_log_len: 4,
        ..RoomConfig::default()
    });
    let mut store = ModelStore::default();
    join(&mut room, s(1), "ann");
    for i in 0..10u8 {
        set(&mut room, s(1), "k", &[i], None);
        store.keep(&mut room);
    }
    let kept: Vec<Seq> = store.rooms["lobby"].events.keys().copied().collect();
    assert_eq!(kept, vec![Seq(8), Seq(9), Seq(10), Seq(11)]);
}

/// A room with a bit of everything, kept in `store` as it goes.
fn busy_room(store: &mut ModelStore) -> Room {
    let mut room = tracked_room(RoomConfig {
        chat_history_len: 3,
        ..RoomConfig::default()
    });
    join_with(&mut room, T0, s(1), "host", with_key(1, 1));
    join_with(&mut room, T0, s(2), "guest", with_key(2, 2));
    join_with(&mut room, T0, s(3), "pest", with_key(3, 3));
    store.keep(&mut room);
    set(&mut room, s(1), "a", b"1", None);
    set(&mut room, s(2), "b", b"2", None);
    store.keep(&mut room);
    for i in 0..5 {
        room.handle(
            T0,
            RoomInput::Command {
                session: s(2),
                request_id: 100 + i,
                kind: "chat".into(),
                payload: vec![b'0' + i as u8],
                idempotency_key: Some(format!("msg-{i}")),
            },
        );
        drain(&mut room);
    }
    store.keep(&mut room);
    kick(&mut room, T0, s(1), 3);
    store.keep(&mut room);
    room
}

#[test]
fn a_restored_room_has_its_state_seqs_history_bans_and_members() {
    let mut store = ModelStore::default();
    let before = busy_room(&mut store);
    let expected = before.snapshot(MemberId(1), Role::Host);

    // Within the 5-minute ban of the kicked member.
    let restart = at(60);
    let mut room = Room::restore(
        store.records("lobby"),
        RoomConfig::default(),
        restart,
        placeholders(),
    )
    .expect("restores");
    let snap = room.snapshot(MemberId(1), Role::Host);
    assert_eq!(snap.room, expected.room, "the slot is kept");
    assert_eq!(snap.state, expected.state);
    assert_eq!(snap.state_version, expected.state_version);
    assert_eq!(snap.chat, expected.chat, "the chat history (its last 3)");
    assert_eq!(snap.chat.len(), 3);
    assert_eq!(
        snap.members
            .iter()
            .map(|m| (m.id, m.role))
            .collect::<Vec<_>>(),
        expected
            .members
            .iter()
            .map(|m| (m.id, m.role))
            .collect::<Vec<_>>()
    );
    // Everyone is reconnecting now, each announced as a sequenced event
    // after the last one kept.
    assert!(
        snap.members
            .iter()
            .all(|m| m.presence == Presence::Reconnecting)
    );
    assert_eq!(snap.last_seq, Seq(expected.last_seq.0 + 2));
    assert_eq!(
        room.resumable_members(),
        vec![
            (MemberId(1), ResumeKey([1; 32]), None),
            (MemberId(2), ResumeKey([2; 32]), None),
        ]
    );
    // A client that saw up to the old last seq catches up from the log.
    let missed = room
        .events_after(expected.last_seq)
        .expect("still in the log");
    assert_eq!(missed.len(), 2);

    // The kicked member's ban holds across the restart.
    let outputs = join_with(&mut room, restart, s(7), "pest again", access(3));
    assert_eq!(err(outputs).code, ErrorCode::Banned);

    // A retried command is still recognised by its idempotency key.
    room.handle(
        restart,
        RoomInput::Reattach {
            session: s(8),
            member: MemberId(2),
            last_seq: Some(expected.last_seq),
            resume_key: Some(ResumeKey([8; 32])),
        },
    );
    drain(&mut room);
    room.handle(
        restart,
        RoomInput::Command {
            session: s(8),
            request_id: 900,
            kind: "chat".into(),
            payload: b"4".to_vec(),
            idempotency_key: Some("msg-4".into()),
        },
    );
    let outputs = drain(&mut room);
    assert!(outputs.iter().any(|o| matches!(
        o,
        RoomOutput::Send {
            message: ServerMessage::CommandAck {
                duplicate: true,
                ..
            },
            ..
        }
    )));
}

#[test]
fn members_not_back_within_the_window_from_the_restart_leave() {
    let mut store = ModelStore::default();
    let _ = busy_room(&mut store);
    let restart = at(3600);
    let config = RoomConfig::default();
    let window = config.resume_window_us;
    let mut room =
        Room::restore(store.records("lobby"), config, restart, placeholders()).expect("restores");
    // The window counts from the restart, not from when the records were written.
    room.handle_timeout(restart.saturating_add_micros(window - 1));
    assert_eq!(room.stats().members, 2);
    room.handle_timeout(restart.saturating_add_micros(window));
    assert_eq!(room.stats().members, 0);
    let left: Vec<_> = drain(&mut room)
        .into_iter()
        .filter(|o| {
            matches!(
                o,
                RoomOutput::Send {
                    message: ServerMessage::MemberLeft { .. },
                    ..
                }
            )
        })
        .collect();
    assert_eq!(left.len(), 2);
}

#[test]
fn a_restored_room_writes_on_from_what_was_read() {
    let mut store = ModelStore::default();
    let _ = busy_room(&mut store);
    let mut room = Room::restore(
        store.records("lobby"),
        RoomConfig::default(),
        at(10),
        placeholders(),
    )
    .expect("restores");
    let changes = room.take_changes().expect("the members' reconnecting");
    assert_eq!(
        changes.kind,
        ChangeKind::Update,
        "not a rewrite of the whole room"
    );
    assert!(changes.state.is_empty());
    assert_eq!(changes.events.len(), 2, "only the two presence events");
    store.apply(changes);
    // Restoring again from the same store gives the same room.
    let again = Room::restore(
        store.records("lobby"),
        RoomConfig::default(),
        at(20),
        placeholders(),
    )
    .expect("restores again");
    assert_eq!(
        again.snapshot(MemberId(1), Role::Host).state,
        room.snapshot(MemberId(1), Role::Host).state
    );
    assert_eq!(again.stats().last_seq, room.stats().last_seq);
}

#[test]
fn an_image_holds_everything_and_replaces() {
    let mut store = ModelStore::default();
    let room = busy_room(&mut store);
    let image = room.image().expect("an image");
    assert_eq!(image.kind, ChangeKind::Replace);
    let mut fresh = ModelStore::default();
    fresh.apply(image);
    assert_eq!(
        fresh.records("lobby"),
        store.records("lobby"),
        "the image is what the changes built up"
    );
}

#[test]
fn records_that_do_not_fit_together_are_refused() {
    let mut store = ModelStore::default();
    let _ = busy_room(&mut store);
    let mut records = store.records("lobby");
    records.room.next_member = 1;
    let refused = Room::restore(records, RoomConfig::default(), at(1), placeholders());
    assert!(matches!(refused, Err(RestoreError::Inconsistent { .. })));

    let mut records = store.records("lobby");
    records.room.last_seq = Seq(1);
    let refused = Room::restore(records, RoomConfig::default(), at(1), placeholders());
    assert!(matches!(refused, Err(RestoreError::Inconsistent { .. })));
}
