//! Deterministic tests of the sync semantics: resuming members, presence,
//! host failover and reclaim, timelines, direct and broadcast messages, chat
//! history, relay rooms and packs.

use super::*;
use chorus_protocol::{Audience, FailoverMode, PackInfo, RoomKind, TimelineOp, TimelineState};

const SEC: u64 = 1_000_000;

fn at(secs: u64) -> ServerTime {
    T0.saturating_add_micros(secs * SEC)
}

fn input(room: &mut Room, now: ServerTime, input: RoomInput) -> Vec<RoomOutput> {
    room.handle(now, input);
    drain(room)
}

fn messages_to(outputs: &[RoomOutput], session: SessionId) -> Vec<ServerMessage> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RoomOutput::Send {
                to: Recipient::Session(s),
                message,
            } if *s == session => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn events(outputs: &[RoomOutput]) -> Vec<ServerMessage> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RoomOutput::Send {
                to: Recipient::Everyone | Recipient::EveryoneExcept(_),
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn timeout(room: &mut Room, now: ServerTime) -> Vec<RoomOutput> {
    room.handle_timeout(now);
    drain(room)
}

fn seq_of(message: &ServerMessage) -> Option<Seq> {
    match message {
        ServerMessage::MemberJoined { seq, .. }
        | ServerMessage::MemberLeft { seq, .. }
        | ServerMessage::StateChanged { seq, .. }
        | ServerMessage::CommandEvent { seq, .. }
        | ServerMessage::RoleChanged { seq, .. }
        | ServerMessage::PresenceChanged { seq, .. }
        | ServerMessage::TimelineChanged { seq, .. } => Some(*seq),
        _ => None,
    }
}

#[test]
fn a_dropped_member_reconnects_and_resumes_with_exactly_what_it_missed() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "bo");
    set(&mut room, s(2), "k", b"v1", None);
    let seen = room.stats().last_seq;

    // Bo's connection drops: the others see "reconnecting", not a leave.
    let out = input(
        &mut room,
        at(1),
        RoomInput::Detach {
            session: s(2),
            reason: LeaveReason::Disconnected,
        },
    );
    assert!(out.contains(&RoomOutput::MemberRemoved {
        session: s(2),
        member: MemberId(2)
    }));
    assert!(matches!(
        events(&out)[..],
        [ServerMessage::PresenceChanged {
            member: MemberId(2),
            presence: Presence::Reconnecting,
            ..
        }]
    ));
    assert_eq!(room.fanout().len(), 1, "no ticks for a reconnecting member");

    // Meanwhile the room goes on.
    set(&mut room, s(1), "k", b"v2", None);
    command(&mut room, s(1), "chat", None);

    // Bo resumes on a new session with what it saw.
    let out = input(
        &mut room,
        at(5),
        RoomInput::Reattach {
            session: s(3),
            member: MemberId(2),
            last_seq: Some(seen),
            resume_key: None,
        },
    );
    assert!(out.contains(&RoomOutput::MemberAdded {
        session: s(3),
        member: MemberId(2)
    }));
    let to_bo = messages_to(&out, s(3));
    assert!(matches!(
        to_bo[0],
        ServerMessage::Resumed {
            member: MemberId(2),
            snapshot: None,
            ..
        }
    ));
    // Exactly the events after `seen`, in order, once each.
    let replayed: Vec<Seq> = to_bo[1..].iter().filter_map(seq_of).collect();
    let expected: Vec<Seq> = (seen.0 + 1..=seen.0 + 3).map(Seq).collect();
    assert_eq!(replayed, expected);
    assert!(matches!(
        to_bo[2],
        ServerMessage::StateChanged { ref value, .. } if value.as_deref() == Some(&b"v2"[..])
    ));
    // Then everyone (Bo too) sees it back online; id and role kept.
    assert!(events(&out).iter().any(|m| matches!(
        m,
        ServerMessage::PresenceChanged {
            member: MemberId(2),
            presence: Presence::Online,
            ..
        }
    )));
    assert_eq!(room.fanout().len(), 2);
    // The resumed member acts as before.
    let out = set(&mut room, s(3), "k", b"v3", None);
    assert!(matches!(
        messages_to(&out, s(3))[..],
        [ServerMessage::StateAck { .. }]
    ));
    // Its old session is nobody.
    let e = err(set(&mut room, s(2), "k", b"x", None));
    assert_eq!(e.code, ErrorCode::NotJoined);
}

#[test]
fn a_resume_window_that_runs_out_is_a_leave() {
    let mut room = room_with(RoomConfig {
        resume_window_us: 60 * SEC,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "bo");
    input(
        &mut room,
        at(0),
        RoomInput::Detach {
            session: s(2),
            reason: LeaveReason::Disconnected,
        },
    );
    assert_eq!(
        room.poll_timeout(),
        Some(at(15)),
        "the host heartbeat comes first"
    );
    room.handle(at(10), RoomInput::Alive { session: s(1) });
    drain(&mut room);
    assert_eq!(room.poll_timeout(), Some(at(25)));
    room.handle(at(24), RoomInput::Alive { session: s(1) });
    room.handle(at(38), RoomInput::Alive { session: s(1) });
    room.handle(at(52), RoomInput::Alive { session: s(1) });
    drain(&mut room);
    assert!(timeout(&mut room, at(59)).is_empty());
    let out = timeout(&mut room, at(60));
    assert!(matches!(
        events(&out)[..],
        [ServerMessage::MemberLeft {
            member: MemberId(2),
            reason: LeaveReason::Disconnected,
            ..
        }]
    ));
    // Too late to resume.
    let out = input(
        &mut room,
        at(61),
        RoomInput::Reattach {
            session: s(3),
            member: MemberId(2),
            last_seq: Some(Seq(0)),
            resume_key: None,
        },
    );
    assert!(matches!(
        messages_to(&out, s(3))[..],
        [ServerMessage::ResumeLost {
            code: ErrorCode::NotJoined,
            ..
        }]
    ));
}

#[test]
fn a_gap_older_than_the_log_resumes_with_a_snapshot() {
    let mut room = room_with(RoomConfig {
        event_log_len: 2,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "bo");
    let seen = room.stats().last_seq;
    input(
        &mut room,
        at(0),
        RoomInput::Detach {
            session: s(2),
            reason: LeaveReason::Disconnected,
        },
    );
    for n in 0..5u8 {
        set(&mut room, s(1), "k", &[n], None);
    }
    let out = input(
        &mut room,
        at(1),
        RoomInput::Reattach {
            session: s(3),
            member: MemberId(2),
            last_seq: Some(seen),
            resume_key: None,
        },
    );
    let to_bo = messages_to(&out, s(3));
    let ServerMessage::Resumed {
        snapshot: Some(snapshot),
        ..
    } = &to_bo[0]
    else {
        panic!("expected a snapshot, got {to_bo:?}");
    };
    assert_eq!(snapshot.state[0].value, [4]);
    assert_eq!(snapshot.you, MemberId(2));
    assert_eq!(to_bo.len(), 1, "nothing replayed after a snapshot");
}

#[test]
fn an_idempotent_command_sent_again_after_a_resume_is_applied_once() {
    let mut room = room();
    join(&mut room, s(1), "ada");
    let first = command(&mut room, s(1), "move", Some("k-1"));
    assert_eq!(events(&first).len(), 1);
    input(
        &mut room,
        at(1),
        RoomInput::Detach {
            session: s(1),
            reason: LeaveReason::Disconnected,
        },
    );
    input(
        &mut room,
        at(2),
        RoomInput::Reattach {
            session: s(2),
            member: MemberId(1),
            last_seq: None,
            resume_key: None,
        },
    );
    let again = command(&mut room, s(2), "move", Some("k-1"));
    assert!(events(&again).is_empty(), "not broadcast twice");
    assert!(matches!(
        messages_to(&again, s(2))[..],
        [ServerMessage::CommandAck {
            duplicate: true,
            ..
        }]
    ));
}

fn timeline_op(
    room: &mut Room,
    now: ServerTime,
    session: SessionId,
    op: TimelineOp,
    at: Option<ServerTime>,
    expected_seq: Option<Seq>,
) -> Vec<RoomOutput> {
    input(
        room,
        now,
        RoomInput::Timeline {
            session,
            request_id: 50,
            name: "main".into(),
            op,
            at,
            expected_seq,
        },
    )
}

fn timeline_of(outputs: &[RoomOutput]) -> TimelineState {
    events(outputs)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::TimelineChanged { timeline, .. } => Some(timeline),
            _ => None,
        })
        .expect("a TimelineChanged")
}

#[test]
fn timeline_changes_take_effect_at_their_server_time() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "viewer-ish");
    // Play, scheduled 500 ms ahead: anchored at that time, from position 0.
    let out = timeline_op(
        &mut room,
        at(10),
        s(1),
        TimelineOp::Play,
        Some(at(10).saturating_add_micros(500_000)),
        None,
    );
    let play = timeline_of(&out);
    assert!(play.playing);
    assert_eq!(play.anchor_time, at(10).saturating_add_micros(500_000));
    assert_eq!(play.anchor_position_us, 0);
    assert!(matches!(
        messages_to(&out, s(1))[..],
        [ServerMessage::Ack { request_id: 50, .. }]
    ));
    // Seek 3 s later (now): position set; still playing.
    let out = timeline_op(
        &mut room,
        at(13),
        s(1),
        TimelineOp::Seek {
            position_us: 60 * SEC,
        },
        None,
        Some(play.seq),
    );
    let seek = timeline_of(&out);
    assert_eq!(
        (seek.anchor_time, seek.anchor_position_us, seek.playing),
        (at(13), 60 * SEC, true)
    );
    // Half speed from 2 s later: the anchor is where playback got to.
    let out = timeline_op(
        &mut room,
        at(15),
        s(1),
        TimelineOp::SetRate { rate_ppm: 500_000 },
        None,
        None,
    );
    let slow = timeline_of(&out);
    assert_eq!(slow.anchor_position_us, 62 * SEC);
    assert_eq!(slow.rate_ppm, 500_000);
    // Pause 4 s later: 2 s of progress at half speed.
    let out = timeline_op(&mut room, at(19), s(1), TimelineOp::Pause, None, None);
    let paused = timeline_of(&out);
    assert!(!paused.playing);
    assert_eq!(paused.anchor_position_us, 64 * SEC);
    // A late joiner gets the timeline in its snapshot.
    let snap = snapshot_of(&join(&mut room, s(3), "late")).clone();
    assert_eq!(snap.timelines, vec![paused]);
}

#[test]
fn a_stale_timeline_request_is_a_conflict_with_the_current_sequence() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    let first = timeline_of(&timeline_op(
        &mut room,
        at(1),
        s(1),
        TimelineOp::Play,
        None,
        Some(Seq(0)),
    ));
    // The editor acts on what it saw before the host's play.
    let e = err(timeline_op(
        &mut room,
        at(2),
        s(2),
        TimelineOp::Pause,
        None,
        Some(Seq(0)),
    ));
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(
        e.detail,
        ErrorDetail::Sequence {
            current_seq: first.seq
        }
    );
    assert_eq!(e.request_id, Some(50));
    // With the current sequence it passes.
    timeline_of(&timeline_op(
        &mut room,
        at(3),
        s(2),
        TimelineOp::Pause,
        None,
        Some(first.seq),
    ));
}

#[test]
fn timeline_limits_and_permissions() {
    let mut room = room_with(RoomConfig {
        default_role: Role::Viewer,
        max_schedule_ahead_us: 10 * SEC,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "viewer");
    let e = err(timeline_op(
        &mut room,
        at(1),
        s(2),
        TimelineOp::Play,
        None,
        None,
    ));
    assert_eq!(
        e.code,
        ErrorCode::Forbidden,
        "a viewer cannot start the timeline"
    );
    // Exactly 10 s ahead passes; 10 s and 1 µs is refused.
    timeline_of(&timeline_op(
        &mut room,
        at(1),
        s(1),
        TimelineOp::Play,
        Some(at(11)),
        None,
    ));
    let e = err(timeline_op(
        &mut room,
        at(1),
        s(1),
        TimelineOp::Pause,
        Some(at(11).saturating_add_micros(1)),
        None,
    ));
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    let e = err(timeline_op(
        &mut room,
        at(1),
        s(1),
        TimelineOp::SetRate { rate_ppm: 0 },
        None,
        None,
    ));
    assert_eq!(e.code, ErrorCode::ProtocolViolation);
    // A time in the past means now.
    let now_play = timeline_of(&timeline_op(
        &mut room,
        at(20),
        s(1),
        TimelineOp::Seek { position_us: 1 },
        Some(at(2)),
        None,
    ));
    assert_eq!(now_play.anchor_time, at(20));
}

#[test]
fn direct_messages_reach_only_their_target() {
    let mut room = room();
    join(&mut room, s(1), "a");
    join(&mut room, s(2), "b");
    join(&mut room, s(3), "c");
    let out = input(
        &mut room,
        at(1),
        RoomInput::Direct {
            session: s(1),
            request_id: 9,
            to: MemberId(3),
            kind: "rtc-offer".into(),
            payload: b"sdp".to_vec(),
        },
    );
    assert_eq!(
        messages_to(&out, s(3)),
        [ServerMessage::DirectMessage {
            room: RoomSlot(7),
            from: MemberId(1),
            kind: "rtc-offer".into(),
            payload: b"sdp".to_vec(),
        }]
    );
    assert!(messages_to(&out, s(2)).is_empty());
    assert!(events(&out).is_empty());
    assert!(matches!(
        messages_to(&out, s(1))[..],
        [ServerMessage::Ack { request_id: 9, .. }]
    ));
    let e = err(input(
        &mut room,
        at(1),
        RoomInput::Direct {
            session: s(1),
            request_id: 10,
            to: MemberId(9),
            kind: "x".into(),
            payload: vec![],
        },
    ));
    assert_eq!(e.code, ErrorCode::NotJoined);
}

#[test]
fn broadcasts_go_to_everyone_the_others_or_a_role() {
    let mut room = room_with(RoomConfig {
        default_role: Role::Editor,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    join(&mut room, s(3), "editor 2");
    let broadcast = |room: &mut Room, audience| {
        input(
            room,
            at(1),
            RoomInput::Broadcast {
                session: s(2),
                request_id: 11,
                audience,
                kind: "note".into(),
                payload: vec![1],
            },
        )
    };
    let out = broadcast(&mut room, Audience::Role(Role::Host));
    assert!(out.iter().any(
        |o| matches!(o, RoomOutput::Send { to: Recipient::Sessions(list), .. } if *list == [s(1)])
    ));
    let out = broadcast(&mut room, Audience::Others);
    assert!(out.iter().any(|o| matches!(o, RoomOutput::Send { to: Recipient::EveryoneExcept(x), message: ServerMessage::BroadcastMessage { .. } } if *x == s(2))));
    let out = broadcast(&mut room, Audience::Everyone);
    assert!(out.iter().any(|o| matches!(
        o,
        RoomOutput::Send {
            to: Recipient::Everyone,
            message: ServerMessage::BroadcastMessage { .. }
        }
    )));
    assert_eq!(
        room.stats().last_seq,
        Seq(3),
        "broadcasts are not sequenced"
    );
}

#[test]
fn chat_history_is_in_the_snapshot_up_to_its_length() {
    let mut room = room_with(RoomConfig {
        chat_history_len: 2,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "ada");
    for _ in 0..3 {
        command(&mut room, s(1), "chat", None);
    }
    command(&mut room, s(1), "draw", None);
    let snap = snapshot_of(&join(&mut room, s(2), "bo")).clone();
    let seqs: Vec<Seq> = snap.chat.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        [Seq(3), Seq(4)],
        "the last two chat commands, not the draw"
    );
}

#[test]
fn a_silent_host_goes_away_hands_over_and_reclaims_when_back() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    join(&mut room, s(3), "editor 2");
    // Everyone but the host keeps talking.
    room.handle(at(14), RoomInput::Alive { session: s(2) });
    drain(&mut room);
    assert!(timeout(&mut room, at(14)).is_empty());
    let out = timeout(&mut room, at(15));
    let changes: Vec<_> = events(&out)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::PresenceChanged {
                member, presence, ..
            } => Some(format!("{}:{}", member.0, presence.name())),
            ServerMessage::RoleChanged {
                member, role, by, ..
            } => Some(format!("{}:{}:by{}", member.0, role, by.0)),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        ["1:away", "1:editor:by0", "2:host:by0"],
        "the earliest editor takes over"
    );
    // The host comes back within the reclaim window: roles swap back.
    let out = input(&mut room, at(30), RoomInput::Alive { session: s(1) });
    let changes: Vec<_> = events(&out)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::PresenceChanged {
                member, presence, ..
            } => Some(format!("{}:{}", member.0, presence.name())),
            ServerMessage::RoleChanged { member, role, .. } => {
                Some(format!("{}:{}", member.0, role))
            }
            _ => None,
        })
        .collect();
    assert_eq!(changes, ["1:online", "1:host", "2:editor"]);
}

#[test]
fn a_host_back_after_the_reclaim_window_stays_an_editor_and_a_delegate_goes_first() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    join(&mut room, s(3), "delegate");
    input(
        &mut room,
        at(1),
        RoomInput::SetDelegate {
            session: s(1),
            request_id: 3,
            member: Some(MemberId(3)),
        },
    );
    for t in [10, 20, 30, 40, 50, 60, 70, 80] {
        room.handle(at(t), RoomInput::Alive { session: s(2) });
        room.handle(at(t), RoomInput::Alive { session: s(3) });
        timeout(&mut room, at(t));
    }
    let roles: Vec<Role> = room.fanout().iter().map(|f| f.role).collect();
    assert_eq!(
        roles,
        [Role::Editor, Role::Editor, Role::Host],
        "the delegate took over"
    );
    // Back at 80 s: the 60 s reclaim window (from 16 s) has passed.
    let out = input(&mut room, at(80), RoomInput::Alive { session: s(1) });
    assert!(
        !events(&out)
            .iter()
            .any(|m| matches!(m, ServerMessage::RoleChanged { .. }))
    );
}

#[test]
fn with_pause_failover_a_silent_host_pauses_the_timelines() {
    let mut room = room_with(RoomConfig {
        failover: FailoverMode::PauseTimeline,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    timeline_of(&timeline_op(
        &mut room,
        at(0),
        s(1),
        TimelineOp::Play,
        None,
        None,
    ));
    room.handle(at(14), RoomInput::Alive { session: s(2) });
    drain(&mut room);
    let out = timeout(&mut room, at(15));
    let paused = timeline_of(&out);
    assert!(!paused.playing);
    assert_eq!(paused.anchor_position_us, 15 * SEC);
    assert!(events(&out).iter().any(|m| matches!(
        m,
        ServerMessage::TimelineChanged {
            by: MemberId(0),
            ..
        }
    )));
    assert!(
        !events(&out)
            .iter()
            .any(|m| matches!(m, ServerMessage::RoleChanged { .. }))
    );
}

#[test]
fn when_the_last_host_leaves_the_next_member_hosts() {
    let mut room = room();
    join(&mut room, s(1), "host");
    join(&mut room, s(2), "editor");
    let out = input(
        &mut room,
        at(1),
        RoomInput::Leave {
            session: s(1),
            request_id: Some(4),
            reason: LeaveReason::Left,
        },
    );
    assert!(events(&out).iter().any(|m| matches!(
        m,
        ServerMessage::RoleChanged {
            member: MemberId(2),
            role: Role::Host,
            ..
        }
    )));
}

#[test]
fn relay_rooms_store_nothing_and_relay_broadcasts() {
    let mut room = room_with(RoomConfig {
        kind: RoomKind::Relay,
        event_log_len: 0,
        ..RoomConfig::default()
    });
    join(&mut room, s(1), "a");
    join(&mut room, s(2), "b");
    assert_eq!(
        err(set(&mut room, s(1), "k", b"v", None)).code,
        ErrorCode::NotStored
    );
    assert_eq!(
        err(command(&mut room, s(1), "chat", None)).code,
        ErrorCode::NotStored
    );
    assert_eq!(
        err(timeline_op(
            &mut room,
            at(1),
            s(1),
            TimelineOp::Play,
            None,
            None
        ))
        .code,
        ErrorCode::NotStored
    );
    let out = input(
        &mut room,
        at(1),
        RoomInput::Broadcast {
            session: s(1),
            request_id: 5,
            audience: Audience::Others,
            kind: "sync".into(),
            payload: vec![7],
        },
    );
    assert!(out.iter().any(|o| matches!(
        o,
        RoomOutput::Send {
            message: ServerMessage::BroadcastMessage { .. },
            ..
        }
    )));
    assert!(
        room.events_after(Seq(0)).is_none_or(|e| e.is_empty()),
        "no history kept"
    );
    let snap = snapshot_of(&join(&mut room, s(3), "c")).clone();
    assert_eq!(snap.kind, RoomKind::Relay);
}

#[test]
fn a_pack_is_announced_once() {
    let mut room = room();
    join(&mut room, s(1), "host");
    let pack = PackInfo {
        hash: vec![1; 32],
        name: "a.png".into(),
        media_type: "image/png".into(),
        size: 10,
        uploader: MemberId(1),
    };
    let added = |room: &mut Room, request_id| {
        input(
            room,
            at(1),
            RoomInput::PackAdded {
                session: s(1),
                request_id,
                pack: pack.clone(),
            },
        )
    };
    let out = added(&mut room, None);
    assert!(matches!(
        events(&out)[..],
        [ServerMessage::PackAvailable { .. }]
    ));
    let out = added(&mut room, Some(8));
    assert!(events(&out).is_empty());
    assert!(matches!(
        messages_to(&out, s(1))[..],
        [ServerMessage::Ack { request_id: 8, .. }]
    ));
    assert_eq!(snapshot_of(&join(&mut room, s(2), "b")).packs, vec![pack]);
}

#[test]
fn a_snapshot_on_request_matches_the_room() {
    let mut room = room();
    join(&mut room, s(1), "host");
    set(&mut room, s(1), "k", b"v", None);
    let out = input(
        &mut room,
        at(1),
        RoomInput::Snapshot {
            session: s(1),
            request_id: 12,
        },
    );
    let [
        ServerMessage::Snapshot {
            request_id: 12,
            snapshot,
        },
    ] = &messages_to(&out, s(1))[..]
    else {
        panic!("expected a snapshot: {out:?}");
    };
    assert_eq!(snapshot.last_seq, room.stats().last_seq);
    assert_eq!(snapshot.state.len(), 1);
}
