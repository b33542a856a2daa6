//! Room flow at the protocol level over real WebTransport: ticks are forwarded
//! byte for byte, and a client that stops reading is cut off without harming
//! anyone else.

mod common;

use chorus_protocol::*;
use common::*;

#[tokio::test]
async fn ticks_reach_every_other_member_byte_for_byte_and_not_the_sender() {
    let server = start_server().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (mut c, hello) = RawClient::connect_hello(&server).await;
        assert!(hello.max_datagram_size >= 1200, "datagrams are enabled");
        let snapshot = c.join("fanout", 1).await;
        clients.push((c, snapshot));
    }
    let (sender, snap) = &clients[0];
    let bytes = encode_datagram(&Datagram::Tick(Tick {
        room: snap.room,
        sender: snap.you,
        seq: 7,
        payload: b"pose",
    }));
    sender.send_datagram(&bytes);
    for (receiver, _) in &clients[1..] {
        assert_eq!(receiver.recv_datagram().await, &bytes[..]);
    }
    // The sender gets nothing back: its next datagram is someone else's.
    let (other, other_snap) = &clients[1];
    other.send_tick(other_snap.room, other_snap.you, 1, b"reply");
    let echoed = sender.recv_datagram().await;
    let Datagram::Tick(tick) = decode_datagram(&echoed, &Limits::default()).expect("tick");
    assert_eq!(tick.sender, other_snap.you);
    assert_eq!(server.stats().ticks_in.get(), 2);
    assert_eq!(server.stats().ticks_out.get(), 4);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_as_too_slow() {
    let server = start_server_with(|c| {
        c.session.outbox_max_frames = 64;
        c.session.outbox_max_bytes = 256 * 1024;
        lift_rate_limits(c);
    })
    .await;
    let (mut flooder, _) = RawClient::connect_hello(&server).await;
    let (mut watcher, _) = RawClient::connect_hello(&server).await;
    let (mut sleeper, _) = RawClient::connect_hello(&server).await;
    let room = flooder.join("flood", 1).await;
    watcher.join("flood", 1).await;
    let sleeper_snap = sleeper.join("flood", 1).await;

    // The watcher keeps reading, counting the commands it sees, until it sees
    // the sleeper leave.
    let sleeper_id = sleeper_snap.you;
    let watcher_task = tokio::spawn(async move {
        let mut commands = 0u32;
        let reason = watcher
            .recv_until(|m| match m {
                ServerMessage::CommandEvent { .. } => {
                    commands += 1;
                    None
                }
                ServerMessage::MemberLeft { member, reason, .. } if member == sleeper_id => {
                    Some(reason)
                }
                _ => None,
            })
            .await;
        watcher.ping().await;
        (reason, commands)
    });

    // The sleeper never reads again. Commands of 32 KiB fill its QUIC receive
    // window, then its outbox; the server must cut it off rather than buffer.
    let (request_id, member, reason) = flood_until_someone_leaves(&mut flooder, room.room).await;
    let left = (member, reason);
    assert_eq!(left, (sleeper_id, LeaveReason::TooSlow));
    assert_eq!(sleeper.closed_code().await, Some(400));
    assert_eq!(server.stats().slow_consumer_disconnects.get(), 1);
    // The watcher, who read all along, saw every command and is still served.
    let (reason, commands) = watcher_task.await.expect("watcher");
    assert_eq!(reason, LeaveReason::TooSlow);
    // Commands 1..=request_id were sent; the last one went out after the ack
    // that the room queued just before the MemberLeft, so the watcher sees it
    // after the leave. Every earlier one it saw before.
    assert_eq!(commands, request_id - 1);
}

#[tokio::test]
async fn an_empty_room_is_removed_after_its_idle_ttl_and_can_be_created_again() {
    let server = start_server_with(|c| c.rooms.room.idle_ttl_us = 200_000).await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let first = a.join("short-lived", 1).await;
    a.send(&ClientMessage::SetState {
        request_id: 2,
        room: first.room,
        key: "k".into(),
        value: b"v".to_vec(),
        if_version: None,
    })
    .await;
    a.send(&ClientMessage::Leave {
        request_id: 3,
        room: first.room,
    })
    .await;
    a.recv_until(|m| matches!(m, ServerMessage::Left { request_id: 3, .. }).then_some(()))
        .await;
    assert_eq!(server.rooms().len(), 1, "kept while within its TTL");

    // The room task's own timer removes it; wait for that, bounded.
    let rooms = server.rooms().clone();
    tokio::time::timeout(WAIT, async {
        while !rooms.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the room expired");

    a.send(&join_msg("short-lived", 4, vec![])).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::RoomNotFound);
    let again = a.join("short-lived", 5).await;
    assert_ne!(again.room, first.room, "a new room gets a new slot");
    assert!(again.state.is_empty(), "an expired room's state is gone");
    assert_eq!(again.role, Role::Host);
}
