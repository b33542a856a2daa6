//! Deterministic tests of the room state machine: no runtime, no sockets, no clock.

use super::*;
use chorus_protocol::Action;

const T0: ServerTime = ServerTime(1_000_000);

fn s(n: u64) -> SessionId {
    SessionId(n)
}

fn room_with(config: RoomConfig) -> Room {
    Room::new("lobby".into(), RoomSlot(7), config, T0)
}

fn room() -> Room {
    room_with(RoomConfig::default())
}

fn drain(room: &mut Room) -> Vec<RoomOutput> {
    std::iter::from_fn(|| room.poll_output()).collect()
}

fn access(ip: u8) -> JoinAccess {
    JoinAccess {
        identity: ClientIdentity {
            ip: IpAddr::from([10, 0, 0, ip]),
            subject: None,
        },
        role: None,
        password_given: false,
        password_verified: None,
        resume_key: None,
        token_expires: None,
    }
}

fn join(room: &mut Room, session: SessionId, name: &str) -> Vec<RoomOutput> {
    // Each session comes from its own address unless a test says otherwise.
    join_with(room, T0, session, name, access(session.0 as u8))
}

fn join_with(
    room: &mut Room,
    now: ServerTime,
    session: SessionId,
    name: &str,
    access: JoinAccess,
) -> Vec<RoomOutput> {
    room.handle(
        now,
        RoomInput::Join {
            session,
            request_id: 1,
            display: DisplayInfo {
                name: name.into(),
                meta: vec![],
            },
            access,
        },
    );
    drain(room)
}

fn set(
    room: &mut Room,
    session: SessionId,
    key: &str,
    value: &[u8],
    if_version: Option<u64>,
) -> Vec<RoomOutput> {
    room.handle(
        T0,
        RoomInput::SetState {
            session,
            request_id: 42,
            key: key.into(),
            value: value.to_vec(),
            if_version,
        },
    );
    drain(room)
}

fn command(room: &mut Room, session: SessionId, kind: &str, key: Option<&str>) -> Vec<RoomOutput> {
    room.handle(
        T0,
        RoomInput::Command {
            session,
            request_id: 77,
            kind: kind.into(),
            payload: b"p".to_vec(),
            idempotency_key: key.map(Into::into),
        },
    );
    drain(room)
}

fn snapshot_of(outputs: &[RoomOutput]) -> &RoomSnapshot {
    outputs
        .iter()
        .find_map(|o| match o {
            RoomOutput::Send {
                message: ServerMessage::Joined { snapshot, .. },
                ..
            } => Some(snapshot),
            _ => None,
        })
        .expect("a Joined message")
}

/// The one error among `outputs` (audit records aside), which must hold nothing else.
fn error_of(outputs: &[RoomOutput]) -> (Recipient, &ErrorFrame) {
    let rest: Vec<&RoomOutput> = outputs
        .iter()
        .filter(|o| !matches!(o, RoomOutput::Audit(_)))
        .collect();
    match rest.as_slice() {
        [
            RoomOutput::Send {
                to,
                message: ServerMessage::Error(e),
            },
        ] => (to.clone(), e),
        other => panic!("expected exactly one error, got {other:?}"),
    }
}

#[test]
fn first_member_hosts_and_others_get_the_default_role() {
    let mut room = room();
    let out = join(&mut room, s(1), "ada");
    assert_eq!(
        out[0],
        RoomOutput::MemberAdded {
            session: s(1),
            member: MemberId(1)
        },
        "routing is set up before anything is sent to the member"
    );
    let snap = snapshot_of(&out);
    assert_eq!((snap.you, snap.role), (MemberId(1), Role::Host));
    assert_eq!(snap.room, RoomSlot(7));
    assert_eq!(snap.last_seq, Seq(1));

    let out = join(&mut room, s(2), "bo");
    let snap = snapshot_of(&out);
    assert_eq!((snap.you, snap.role), (MemberId(2), Role::Editor));
    let names: Vec<_> = snap
        .members
        .iter()
        .map(|m| m.display.name.as_str())
        .collect();
    assert_eq!(names, ["ada", "bo"]);
    assert!(out.contains(&RoomOutput::Send {
        to: Recipient::EveryoneExcept(s(2)),
        message: ServerMessage::MemberJoined {
            room: RoomSlot(7),
            seq: Seq(2),
            member: MemberInfo {
                presence: Presence::Online,
                id: MemberId(2),
                role: Role::Editor,
                display: DisplayInfo {
                    name: "bo".into(),
                    meta: vec![]
                },
            },
        },
    }));
}

#[test]
fn joining_twice_is_refused() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    let out = join(&mut room, s(1), "ada");
    let (to, e) = error_of(&out);
    assert_eq!(to, Recipient::Session(s(1)));
    assert_eq!((e.code, e.request_id), (ErrorCode::AlreadyJoined, Some(1)));
    assert_eq!(room.stats().members, 1);
}

#[test]
fn leave_tells_the_others_and_frees_routing() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    join(&mut room, s(2), "bo");
    room.handle(
        T0,
        RoomInput::Leave {
            session: s(2),
            request_id: Some(9),
            reason: LeaveReason::Left,
        },
    );
    let out = drain(&mut room);
    assert_eq!(
        out,
        vec![
            RoomOutput::Send {
                to: Recipient::Session(s(2)),
                message: ServerMessage::Left {
                    request_id: 9,
                    room: RoomSlot(7)
                },
            },
            RoomOutput::MemberRemoved {
                session: s(2),
                member: MemberId(2)
            },
            RoomOutput::Send {
                to: Recipient::Everyone,
                message: ServerMessage::MemberLeft {
                    room: RoomSlot(7),
                    seq: Seq(3),
                    member: MemberId(2),
                    reason: LeaveReason::Left,
                },
            },
        ]
    );
    // Leaving again is an error for a request, and silent for a disconnect.
    room.handle(
        T0,
        RoomInput::Leave {
            session: s(2),
            request_id: Some(10),
            reason: LeaveReason::Left,
        },
    );
    assert_eq!(error_of(&drain(&mut room)).1.code, ErrorCode::NotJoined);
    room.handle(
        T0,
        RoomInput::Leave {
            session: s(2),
            request_id: None,
            reason: LeaveReason::Disconnected,
        },
    );
    assert!(drain(&mut room).is_empty());
}

#[test]
fn member_ids_are_never_reused() {
    let mut room = room();
    join(&mut room, s(1), "a");
    join(&mut room, s(2), "b");
    room.handle(
        T0,
        RoomInput::Leave {
            session: s(2),
            request_id: None,
            reason: LeaveReason::Disconnected,
        },
    );
    drain(&mut room);
    let out = join(&mut room, s(3), "c");
    assert_eq!(snapshot_of(&out).you, MemberId(3));
}

#[test]
fn state_versions_increase_and_events_come_before_the_ack() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    let out = set(&mut room, s(1), "title", b"Hello", None);
    assert_eq!(
        out,
        vec![
            RoomOutput::Send {
                to: Recipient::Everyone,
                message: ServerMessage::StateChanged {
                    room: RoomSlot(7),
                    seq: Seq(2),
                    key: "title".into(),
                    value: Some(b"Hello".to_vec()),
                    version: 1,
                    author: MemberId(1),
                },
            },
            RoomOutput::Send {
                to: Recipient::Session(s(1)),
                message: ServerMessage::StateAck {
                    request_id: 42,
                    room: RoomSlot(7),
                    version: 1,
                    seq: Seq(2)
                },
            },
        ]
    );
    set(&mut room, s(1), "color", b"red", None);
    let out = set(&mut room, s(1), "title", b"Hi", None);
    assert!(matches!(
        &out[1],
        RoomOutput::Send {
            message: ServerMessage::StateAck {
                version: 3,
                seq: Seq(4),
                ..
            },
            ..
        }
    ));
}

#[test]
fn if_version_guards_writes_and_conflicts_carry_the_current_version() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    join(&mut room, s(2), "bo");
    // 0 means "only if absent".
    set(&mut room, s(1), "k", b"a", Some(0));
    let out = set(&mut room, s(2), "k", b"b", Some(0));
    let (to, e) = error_of(&out);
    assert_eq!(to, Recipient::Session(s(2)));
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(e.request_id, Some(42));
    assert_eq!(e.detail, ErrorDetail::Conflict { current_version: 1 });
    // With the right version the write passes.
    let out = set(&mut room, s(2), "k", b"b", Some(1));
    assert_eq!(out.len(), 2);
    // A delete with a stale version conflicts too.
    room.handle(
        T0,
        RoomInput::DeleteState {
            session: s(1),
            request_id: 5,
            key: "k".into(),
            if_version: Some(1),
        },
    );
    let out = drain(&mut room);
    assert_eq!(
        error_of(&out).1.detail,
        ErrorDetail::Conflict { current_version: 2 }
    );
}

#[test]
fn delete_removes_the_key_and_deleting_an_absent_key_is_a_quiet_ack() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    set(&mut room, s(1), "k", b"v", None);
    room.handle(
        T0,
        RoomInput::DeleteState {
            session: s(1),
            request_id: 5,
            key: "k".into(),
            if_version: None,
        },
    );
    let out = drain(&mut room);
    assert!(matches!(
        &out[0],
        RoomOutput::Send {
            to: Recipient::Everyone,
            message: ServerMessage::StateChanged {
                value: None,
                version: 2,
                ..
            }
        }
    ));
    assert_eq!(room.stats().state_keys, 0);
    assert_eq!(room.stats().state_bytes, 0);
    let seq = room.stats().last_seq;
    room.handle(
        T0,
        RoomInput::DeleteState {
            session: s(1),
            request_id: 6,
            key: "k".into(),
            if_version: None,
        },
    );
    assert_eq!(
        drain(&mut room),
        vec![RoomOutput::Send {
            to: Recipient::Session(s(1)),
            message: ServerMessage::StateAck {
                request_id: 6,
                room: RoomSlot(7),
                version: 0,
                seq
            }
        }]
    );
}

#[test]
fn state_total_size_and_key_count_limits_are_inclusive() {
    let mut room = room_with(RoomConfig {
        max_state_total_bytes: 10,
        max_state_keys: 2,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "ada");
    // "k" + 9 bytes = 10: exactly the limit.
    assert_eq!(set(&mut room, s(1), "k", &[0; 9], None).len(), 2);
    let out = set(&mut room, s(1), "j", &[0; 0], None);
    let e = error_of(&out).1;
    assert_eq!(e.code, ErrorCode::StateFull);
    assert_eq!(
        e.detail,
        ErrorDetail::Limit {
            limit: 10,
            actual: 11
        }
    );
    // Replacing a value counts the old one out first.
    assert_eq!(set(&mut room, s(1), "k", &[1; 9], None).len(), 2);
    assert_eq!(set(&mut room, s(1), "k", &[1; 3], None).len(), 2);
    assert_eq!(set(&mut room, s(1), "a", &[], None).len(), 2);
    let out = set(&mut room, s(1), "b", &[], None);
    assert_eq!(
        error_of(&out).1.detail,
        ErrorDetail::Limit {
            limit: 2,
            actual: 3
        }
    );
}

#[test]
fn commands_are_sequenced_in_one_order_with_other_events() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    join(&mut room, s(2), "bo");
    set(&mut room, s(1), "k", b"v", None);
    let out = command(&mut room, s(2), "chat", None);
    assert_eq!(
        out,
        vec![
            RoomOutput::Send {
                to: Recipient::Everyone,
                message: ServerMessage::CommandEvent {
                    room: RoomSlot(7),
                    seq: Seq(4),
                    author: MemberId(2),
                    kind: "chat".into(),
                    payload: b"p".to_vec(),
                    idempotency_key: None,
                },
            },
            RoomOutput::Send {
                to: Recipient::Session(s(2)),
                message: ServerMessage::CommandAck {
                    request_id: 77,
                    room: RoomSlot(7),
                    seq: Seq(4),
                    duplicate: false
                },
            },
        ]
    );
}

#[test]
fn repeated_idempotency_key_returns_the_first_result_without_broadcast() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    join(&mut room, s(2), "bo");
    let first = command(&mut room, s(1), "play", Some("play-1"));
    assert_eq!(first.len(), 2);
    // Same key again, from another member too: only an ack, with the first seq.
    let again = command(&mut room, s(2), "play", Some("play-1"));
    assert_eq!(
        again,
        vec![RoomOutput::Send {
            to: Recipient::Session(s(2)),
            message: ServerMessage::CommandAck {
                request_id: 77,
                room: RoomSlot(7),
                seq: Seq(3),
                duplicate: true
            }
        }]
    );
    assert_eq!(room.stats().last_seq, Seq(3));
}

#[test]
fn idempotency_memory_is_bounded_oldest_first() {
    let mut room = room_with(RoomConfig {
        idempotency_keys: 2,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "ada");
    command(&mut room, s(1), "c", Some("a"));
    command(&mut room, s(1), "c", Some("b"));
    command(&mut room, s(1), "c", Some("c"));
    // "a" was forgotten: it runs again; "c" is still remembered.
    assert_eq!(command(&mut room, s(1), "c", Some("a")).len(), 2);
    assert_eq!(command(&mut room, s(1), "c", Some("c")).len(), 1);
}

#[test]
fn the_event_log_is_bounded_and_serves_catch_up() {
    let mut room = room_with(RoomConfig {
        event_log_len: 3,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "ada");
    for _ in 0..5 {
        command(&mut room, s(1), "c", None);
    }
    // Seqs 2..=6 were commands; the log keeps the last 3.
    let seqs = |after: u64| -> Option<Vec<Seq>> {
        room.events_after(Seq(after)).map(|events| {
            events
                .into_iter()
                .map(|m| match m {
                    ServerMessage::CommandEvent { seq, .. } => *seq,
                    other => panic!("not a command: {other:?}"),
                })
                .collect()
        })
    };
    assert_eq!(seqs(3), Some(vec![Seq(4), Seq(5), Seq(6)]));
    assert_eq!(seqs(5), Some(vec![Seq(6)]));
    assert_eq!(seqs(6), Some(vec![]), "nothing missed");
    assert_eq!(
        seqs(2),
        None,
        "seq 3 is no longer kept: a snapshot is needed"
    );
}

#[test]
fn room_full_refuses_the_member_past_the_cap_only() {
    let mut room = room_with(RoomConfig {
        max_members: 2,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "a");
    assert_eq!(snapshot_of(&join(&mut room, s(2), "b")).you, MemberId(2));
    let out = join(&mut room, s(3), "c");
    let e = error_of(&out).1;
    assert_eq!(e.code, ErrorCode::RoomFull);
    assert_eq!(
        e.detail,
        ErrorDetail::Limit {
            limit: 2,
            actual: 3
        }
    );
    assert_eq!(room.stats().members, 2);
}

#[test]
fn viewers_may_tick_but_not_write() {
    let mut room = room_with(RoomConfig {
        default_role: Role::Viewer,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "viewer");
    let e = error_of(&set(&mut room, s(2), "k", b"v", None)).1.clone();
    assert_eq!((e.code, e.request_id), (ErrorCode::Forbidden, Some(42)));
    let e = error_of(&command(&mut room, s(2), "c", None)).1.clone();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert_eq!(
        room.stats().last_seq,
        Seq(2),
        "refused requests consume no seq"
    );
    assert!(room.fanout().iter().all(|f| f.may_send_ticks));

    let mut strict = room_with(RoomConfig {
        default_role: Role::Viewer,
        policy: PermissionPolicy {
            rules: vec![chorus_protocol::PermissionRule {
                action: Action::SendTicks,
                scope: String::new(),
                roles: vec![Role::Host],
            }],
        },
        ..RoomConfig::default()
    });
    join(&mut strict, s(1), "host");
    join(&mut strict, s(2), "viewer");
    let may: Vec<bool> = strict.fanout().iter().map(|f| f.may_send_ticks).collect();
    assert_eq!(may, [true, false]);
}

#[test]
fn requests_from_non_members_are_refused() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    let e = error_of(&set(&mut room, s(9), "k", b"v", None)).1.clone();
    assert_eq!(e.code, ErrorCode::NotJoined);
    let e = error_of(&command(&mut room, s(9), "c", None)).1.clone();
    assert_eq!(e.code, ErrorCode::NotJoined);
}

#[test]
fn an_empty_room_expires_after_its_idle_ttl() {
    let ttl = 60_000_000;
    let mut room = room_with(RoomConfig {
        idle_ttl_us: ttl,
        ..RoomConfig::default()
    });
    // A room created but never joined expires too.
    assert_eq!(room.poll_timeout(), Some(ServerTime(T0.0 + ttl)));
    join(&mut room, s(1), "ada");
    assert_eq!(
        room.poll_timeout(),
        Some(ServerTime(T0.0 + 15_000_000)),
        "occupied rooms do not expire: the only deadline is the host's heartbeat"
    );
    let left_at = ServerTime(T0.0 + 5_000_000);
    room.handle(
        left_at,
        RoomInput::Leave {
            session: s(1),
            request_id: None,
            reason: LeaveReason::Disconnected,
        },
    );
    drain(&mut room);
    let deadline = ServerTime(left_at.0 + ttl);
    assert_eq!(room.poll_timeout(), Some(deadline));
    room.handle_timeout(ServerTime(deadline.0 - 1));
    assert!(drain(&mut room).is_empty());
    room.handle_timeout(deadline);
    assert_eq!(drain(&mut room), vec![RoomOutput::Expired]);
    assert!(room.is_expired());
    assert_eq!(room.poll_timeout(), None);
    // Anything that still reaches it is answered, not lost.
    let out = join(&mut room, s(2), "late");
    assert_eq!(error_of(&out).1.code, ErrorCode::Internal);
}

#[test]
fn a_returning_member_resets_the_idle_clock() {
    let mut room = room_with(RoomConfig {
        idle_ttl_us: 100,
        ..RoomConfig::default()
    });
    room.handle_timeout(ServerTime(T0.0 + 99));
    join(&mut room, s(1), "ada");
    room.handle_timeout(ServerTime(T0.0 + 1000));
    assert!(!room.is_expired());
}

#[test]
fn late_joiner_gets_full_state_and_sequence() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    set(&mut room, s(1), "b", b"2", None);
    set(&mut room, s(1), "a", b"1", None);
    command(&mut room, s(1), "c", None);
    let out = join(&mut room, s(2), "bo");
    let snap = snapshot_of(&out);
    let keys: Vec<_> = snap
        .state
        .iter()
        .map(|e| (e.key.as_str(), e.version))
        .collect();
    assert_eq!(keys, [("a", 2), ("b", 1)], "sorted by key, with versions");
    assert_eq!(snap.state_version, 2);
    assert_eq!(snap.last_seq, Seq(5));
}

#[test]
fn room_ids_are_validated() {
    assert!(validate_room_id("lobby").is_ok());
    assert!(validate_room_id("gallery/ünïcode room").is_ok());
    assert!(validate_room_id("").is_err());
    assert!(validate_room_id(" lead").is_err());
    assert!(validate_room_id("tab\there").is_err());
    assert!(validate_room_id("nul\0").is_err());
}

/// The one error among `outputs`, owned.
fn err(outputs: Vec<RoomOutput>) -> ErrorFrame {
    error_of(&outputs).1.clone()
}

fn request(room: &mut Room, now: ServerTime, input: RoomInput) -> Vec<RoomOutput> {
    room.handle(now, input);
    drain(room)
}

fn kick(room: &mut Room, now: ServerTime, by: SessionId, member: u32) -> Vec<RoomOutput> {
    request(
        room,
        now,
        RoomInput::Kick {
            session: by,
            request_id: 5,
            member: MemberId(member),
            reason: "spam".into(),
        },
    )
}

fn set_role(room: &mut Room, by: SessionId, member: u32, role: Role) -> Vec<RoomOutput> {
    request(
        room,
        T0,
        RoomInput::SetRole {
            session: by,
            request_id: 6,
            member: MemberId(member),
            role,
        },
    )
}

fn sent(outputs: &[RoomOutput]) -> Vec<(Recipient, &ServerMessage)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RoomOutput::Send { to, message } => Some((to.clone(), message)),
            _ => None,
        })
        .collect()
}

fn audits(outputs: &[RoomOutput]) -> Vec<&'static str> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RoomOutput::Audit(a) => Some(a.name()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_token_role_wins_over_the_first_member_rule() {
    let mut room = room();
    let out = join_with(
        &mut room,
        T0,
        s(1),
        "viewer first",
        JoinAccess {
            role: Some(Role::Viewer),
            ..access(1)
        },
    );
    assert_eq!(snapshot_of(&out).role, Role::Viewer);
    let out = join_with(
        &mut room,
        T0,
        s(2),
        "appointed host",
        JoinAccess {
            role: Some(Role::Host),
            ..access(2)
        },
    );
    assert_eq!(snapshot_of(&out).role, Role::Host);
    assert_eq!(
        snapshot_of(&join(&mut room, s(3), "plain")).role,
        Role::Editor
    );
}

#[test]
fn kicked_members_hear_it_leave_and_stay_out_until_the_ban_ends() {
    let ban = 300 * 1_000_000;
    let mut room = room_with(RoomConfig {
        kick_ban_us: ban,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "pest");
    join(&mut room, s(3), "other");
    let out = kick(&mut room, T0, s(1), 2);
    let messages = sent(&out);
    assert!(matches!(
        messages[0],
        (
            Recipient::Everyone,
            ServerMessage::MemberKicked {
                member: MemberId(2),
                by: MemberId(1),
                ban_ms: 300_000,
                ..
            }
        )
    ));
    assert!(matches!(
        messages[1],
        (
            Recipient::Session(SessionId(1)),
            ServerMessage::Ack { request_id: 5, .. }
        )
    ));
    let removed = out.iter().position(|o| {
        *o == RoomOutput::MemberRemoved {
            session: s(2),
            member: MemberId(2),
        }
    });
    let kicked_event = out
        .iter()
        .position(|o| matches!(o, RoomOutput::Send { .. }))
        .expect("event");
    assert!(
        removed.expect("routing removed") > kicked_event,
        "told before routing ends"
    );
    assert_eq!(audits(&out), ["member_kicked"]);
    assert_eq!(room.stats().members, 2);

    // Same address, new session: refused until the ban ends, with the time left.
    let later = T0.saturating_add_micros(ban - 1_000_000);
    let out = join_with(&mut room, later, s(4), "pest again", access(2));
    let e = err(out);
    assert_eq!(e.code, ErrorCode::Banned);
    assert_eq!(
        e.detail,
        ErrorDetail::RetryAfter {
            retry_after_ms: 1000
        }
    );
    let out = join_with(
        &mut room,
        T0.saturating_add_micros(ban),
        s(4),
        "pest again",
        access(2),
    );
    assert_eq!(snapshot_of(&out).you, MemberId(4));
}

#[test]
fn a_ban_follows_the_token_subject_when_there_is_one() {
    let mut room = room();
    join(&mut room, s(1), "host");
    let with_sub = |ip| JoinAccess {
        identity: ClientIdentity {
            ip: IpAddr::from([10, 0, 0, ip]),
            subject: Some("user-42".into()),
        },
        ..access(ip)
    };
    join_with(&mut room, T0, s(2), "u42", with_sub(2));
    kick(&mut room, T0, s(1), 2);
    // Another address, same subject: still banned.
    let e = err(join_with(&mut room, T0, s(3), "u42", with_sub(9)));
    assert_eq!(e.code, ErrorCode::Banned);
    // The old address without the subject is someone else.
    assert_eq!(
        snapshot_of(&join(&mut room, s(2), "neighbour")).you,
        MemberId(3)
    );
}

#[test]
fn kicks_respect_permission_and_rank() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    join(&mut room, s(3), "editor 2");
    let e = err(kick(&mut room, T0, s(2), 3));
    assert_eq!(
        e.code,
        ErrorCode::Forbidden,
        "editors may not kick by default"
    );
    let e = err(kick(&mut room, T0, s(1), 1));
    assert_eq!(e.code, ErrorCode::Forbidden, "no kicking yourself");
    let e = err(kick(&mut room, T0, s(1), 9));
    assert_eq!(e.code, ErrorCode::NotJoined);

    // With kicking open to editors, an editor still cannot kick the host.
    let mut open = room_with(RoomConfig {
        policy: PermissionPolicy {
            rules: vec![chorus_protocol::PermissionRule {
                action: Action::Kick,
                scope: String::new(),
                roles: vec![Role::Host, Role::Editor],
            }],
        },
        ..RoomConfig::default()
    });
    join(&mut open, s(1), "host");
    join(&mut open, s(2), "editor");
    join(&mut open, s(3), "editor 2");
    let e = err(kick(&mut open, T0, s(2), 1));
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(sent(&kick(&mut open, T0, s(2), 3)).len() == 2);
}

#[test]
fn role_changes_are_events_and_follow_rank_rules() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    let out = set_role(&mut room, s(1), 2, Role::Viewer);
    assert!(matches!(
        sent(&out)[0],
        (
            Recipient::Everyone,
            ServerMessage::RoleChanged {
                member: MemberId(2),
                role: Role::Viewer,
                by: MemberId(1),
                seq: Seq(3),
                ..
            }
        )
    ));
    assert!(out.contains(&RoomOutput::RoleChanged {
        member: MemberId(2)
    }));
    assert_eq!(audits(&out), ["role_changed"]);
    // The demoted member's writes are refused at once.
    let e = err(set(&mut room, s(2), "k", b"v", None));
    assert_eq!(e.code, ErrorCode::Forbidden);
    // A viewer cannot grant.
    let e = err(set_role(&mut room, s(2), 2, Role::Host));
    assert_eq!(e.code, ErrorCode::Forbidden);
    // The last host cannot step down; with a second host it can.
    let e = err(set_role(&mut room, s(1), 1, Role::Editor));
    assert_eq!(e.code, ErrorCode::Forbidden);
    set_role(&mut room, s(1), 2, Role::Host);
    let out = set_role(&mut room, s(1), 1, Role::Editor);
    assert!(matches!(sent(&out)[0].1, ServerMessage::RoleChanged { .. }));
    // Setting the same role again changes nothing and takes no seq.
    let before = room.stats().last_seq;
    let out = set_role(&mut room, s(2), 1, Role::Editor);
    assert!(matches!(sent(&out)[..], [(_, ServerMessage::Ack { .. })]));
    assert_eq!(room.stats().last_seq, before);
}

#[test]
fn granting_is_capped_by_the_granters_own_rank() {
    let mut room = room_with(RoomConfig {
        policy: PermissionPolicy {
            rules: vec![chorus_protocol::PermissionRule {
                action: Action::GrantRoles,
                scope: String::new(),
                roles: vec![Role::Host, Role::Editor],
            }],
        },
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    join(&mut room, s(3), "editor 2");
    let e = err(set_role(&mut room, s(2), 3, Role::Host));
    assert_eq!(e.code, ErrorCode::Forbidden, "an editor cannot make a host");
    let e = err(set_role(&mut room, s(2), 1, Role::Viewer));
    assert_eq!(e.code, ErrorCode::Forbidden, "nor demote one");
    assert!(matches!(
        sent(&set_role(&mut room, s(2), 3, Role::Viewer))[0].1,
        ServerMessage::RoleChanged { .. }
    ));
}

#[test]
fn passwords_are_checked_by_generation() {
    let hash = PasswordHashString(Arc::from("$argon2id$fake"));
    let mut room = room_with(RoomConfig {
        password: Some(hash.clone()),
        ..RoomConfig::default()
    });
    assert_eq!(room.password_generation(), 1);
    let e = err(join(&mut room, s(1), "no password"));
    assert_eq!(e.code, ErrorCode::PasswordRequired);
    let wrong = JoinAccess {
        password_given: true,
        password_verified: None,
        ..access(1)
    };
    let out = join_with(&mut room, T0, s(1), "wrong", wrong);
    assert_eq!(error_of(&out).1.code, ErrorCode::WrongPassword);
    assert_eq!(audits(&out), ["join_refused"]);
    let right = |generation| JoinAccess {
        password_given: true,
        password_verified: Some(generation),
        ..access(1)
    };
    join_with(&mut room, T0, s(1), "host", right(1));

    // The host changes it: a join verified against the old hash is refused.
    let out = request(
        &mut room,
        T0,
        RoomInput::SetPassword {
            session: s(1),
            request_id: 8,
            hash: Some(PasswordHashString(Arc::from("$argon2id$new"))),
        },
    );
    assert!(out.contains(&RoomOutput::PasswordChanged {
        hash: Some(PasswordHashString(Arc::from("$argon2id$new"))),
        generation: 2
    }));
    assert_eq!(audits(&out), ["password_changed"]);
    let e = err(join_with(&mut room, T0, s(2), "late", right(1)));
    assert_eq!(e.code, ErrorCode::WrongPassword);
    assert_eq!(
        snapshot_of(&join_with(&mut room, T0, s(2), "ok", right(2))).you,
        MemberId(2)
    );
    // An editor may not change it.
    let out = request(
        &mut room,
        T0,
        RoomInput::SetPassword {
            session: s(2),
            request_id: 9,
            hash: None,
        },
    );
    assert_eq!(error_of(&out).1.code, ErrorCode::Forbidden);
    assert!(room.password().is_some());
}

#[test]
fn closing_a_room_removes_everyone_and_ends_it() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    let close = |room: &mut Room, session| {
        request(
            room,
            T0,
            RoomInput::CloseRoom {
                session,
                request_id: 4,
                reason: "done".into(),
            },
        )
    };
    assert_eq!(
        error_of(&close(&mut room, s(2))).1.code,
        ErrorCode::Forbidden
    );
    let out = close(&mut room, s(1));
    let messages = sent(&out);
    assert!(matches!(
        messages[0],
        (
            Recipient::Everyone,
            ServerMessage::RoomClosed {
                by: MemberId(1),
                ..
            }
        )
    ));
    assert!(matches!(
        messages[1].1,
        ServerMessage::Ack { request_id: 4, .. }
    ));
    let removed = out
        .iter()
        .filter(|o| matches!(o, RoomOutput::MemberRemoved { .. }))
        .count();
    assert_eq!(removed, 2);
    assert_eq!(out.last(), Some(&RoomOutput::Closed));
    assert!(room.is_ended());
    assert_eq!(room.poll_timeout(), None);
}

#[test]
fn policy_scopes_limit_state_keys_and_command_kinds() {
    let mut room = room_with(RoomConfig {
        default_role: Role::Viewer,
        policy: PermissionPolicy {
            rules: vec![
                chorus_protocol::PermissionRule {
                    action: Action::SetState,
                    scope: "cursor/".into(),
                    roles: vec![Role::Host, Role::Editor, Role::Viewer],
                },
                chorus_protocol::PermissionRule {
                    action: Action::SendCommands,
                    scope: "chat".into(),
                    roles: vec![Role::Host, Role::Editor, Role::Viewer],
                },
            ],
        },
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "viewer");
    assert!(matches!(
        sent(&set(&mut room, s(2), "cursor/2", b"x", None))[1].1,
        ServerMessage::StateAck { .. }
    ));
    assert_eq!(
        error_of(&set(&mut room, s(2), "scene", b"x", None)).1.code,
        ErrorCode::Forbidden
    );
    assert!(matches!(
        sent(&command(&mut room, s(2), "chat", None))[1].1,
        ServerMessage::CommandAck { .. }
    ));
    assert_eq!(
        error_of(&command(&mut room, s(2), "draw", None)).1.code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        snapshot_of(&join(&mut room, s(3), "late")).policy,
        *room.policy()
    );
}

#[test]
fn persistent_rooms_never_expire() {
    let mut room = room_with(RoomConfig {
        persistent: true,
        ..RoomConfig::default()
    });
    assert_eq!(room.poll_timeout(), None);
    room.handle_timeout(ServerTime(u64::MAX));
    assert!(!room.is_ended());
}

mod persist;
mod sync;
