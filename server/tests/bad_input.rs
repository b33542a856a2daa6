//! Bad input through the real server over WebTransport: each is answered with
//! its typed error, and other sessions (and the offender's own session, where the
//! stream is still in step) carry on.

mod common;

use chorus_protocol::frame::put_varint_u32;
use chorus_protocol::*;
use common::*;

/// A bystander in the same room, checked after each offence.
async fn bystander_still_served(
    bystander: &mut RawClient,
    friend: &RawClient,
    room: RoomSlot,
    friend_id: MemberId,
) {
    bystander.ping().await;
    friend.send_tick(room, friend_id, 1, b"still here");
    let bytes = bystander.recv_datagram().await;
    let Datagram::Tick(tick) = decode_datagram(&bytes, &Limits::default()).expect("tick");
    assert_eq!(tick.payload, b"still here");
}

#[tokio::test]
async fn wrong_protocol_version_is_refused_naming_both_versions() {
    let server = start_server().await;
    let mut client = RawClient::connect(&server).await;
    let theirs = ProtocolVersion { major: 3, minor: 3 };
    client.send(&hello(theirs)).await;
    let error = client.recv_error().await;
    assert_eq!(error.code, ErrorCode::VersionMismatch);
    assert_eq!(
        error.detail,
        ErrorDetail::Version {
            server: PROTOCOL_VERSION,
            client: theirs
        }
    );
    assert!(error.message.contains("3.3") && error.message.contains("2.0"));
    assert_eq!(client.closed_code().await, Some(103));
}

#[tokio::test]
async fn a_1_0_hello_of_the_old_shape_gets_version_mismatch_not_malformed() {
    let server = start_server().await;
    let mut client = RawClient::connect(&server).await;
    // A 1.0 hello: version, client name, capabilities, and no options list.
    let old = ProtocolVersion { major: 1, minor: 0 };
    let mut body = encode_message(&hello(old));
    body.pop();
    client.send_body(&body).await;
    let error = client.recv_error().await;
    assert_eq!(error.code, ErrorCode::VersionMismatch);
    assert_eq!(
        error.detail,
        ErrorDetail::Version {
            server: PROTOCOL_VERSION,
            client: old
        }
    );
}

#[tokio::test]
async fn a_request_before_hello_is_a_protocol_violation() {
    let server = start_server().await;
    let mut client = RawClient::connect(&server).await;
    client.send(&join_msg("lobby", 5, vec![])).await;
    let error = client.recv_error().await;
    assert_eq!(error.code, ErrorCode::ProtocolViolation);
    assert_eq!(error.request_id, Some(5));
    assert_eq!(client.closed_code().await, Some(104));
}

#[tokio::test]
async fn a_silent_client_times_out_in_the_handshake() {
    let server = start_server_with(|c| {
        c.session.handshake_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let mut client = RawClient::connect(&server).await;
    // Opening a stream sends nothing until data is written; write one byte of
    // a frame so the server sees the stream, then stall.
    client.send_raw(&[5]).await;
    assert_eq!(client.closed_code().await, Some(106));
}

#[tokio::test]
async fn malformed_and_unknown_frames_get_errors_and_the_session_goes_on() {
    let server = start_server().await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let (mut b, _) = RawClient::connect_hello(&server).await;
    let room = a.join("bad-input", 1).await;
    let b_room = b.join("bad-input", 1).await;

    // Garbage: tag 1 (Join) with a truncated body.
    a.send_body(&[1, 7, 200]).await;
    let error = a.recv_error().await;
    assert_eq!((error.code, error.request_id), (ErrorCode::Malformed, None));

    // A tag this server does not know.
    a.send_body(&[99, 0, 0]).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::UnknownMessage);

    // Trailing bytes after a valid message.
    let mut body = encode_message(&ClientMessage::Ping { client_time: 1 });
    body.push(0);
    a.send_body(&body).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::Malformed);

    // A second hello.
    a.send(&hello(PROTOCOL_VERSION)).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::ProtocolViolation);

    // The offender's session still works, and so does everyone else's.
    a.ping().await;
    bystander_still_served(&mut b, &a, room.room, room.you).await;
    assert_eq!(b_room.members.len(), 2);
}

#[tokio::test]
async fn an_oversized_frame_closes_only_the_offending_session() {
    let server = start_server_with(|c| c.session.limits.max_frame_bytes = 4096).await;
    let (mut a, hello_a) = RawClient::connect_hello(&server).await;
    assert_eq!(hello_a.limits.max_frame_bytes, 4096);
    let (mut b, _) = RawClient::connect_hello(&server).await;
    let (mut c, _) = RawClient::connect_hello(&server).await;
    a.join("big", 1).await;
    b.join("big", 1).await;
    let c_room = c.join("big", 1).await;

    // Declare 4097 bytes: refused from the prefix alone.
    let mut prefix = Vec::new();
    put_varint_u32(&mut prefix, 4097);
    a.send_raw(&prefix).await;
    let error = a.recv_error().await;
    assert_eq!(error.code, ErrorCode::FrameTooLarge);
    assert_eq!(
        error.detail,
        ErrorDetail::Limit {
            limit: 4096,
            actual: 4097
        }
    );
    assert_eq!(a.closed_code().await, Some(102));

    // The others see it leave and carry on.
    let left = b
        .recv_until(|m| match m {
            ServerMessage::MemberLeft { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(left, LeaveReason::Disconnected);
    bystander_still_served(&mut b, &c, c_room.room, c_room.you).await;
}

#[tokio::test]
async fn a_frame_at_the_limit_passes() {
    let server = start_server_with(|c| c.session.limits.max_frame_bytes = 4096).await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let room = a.join("limit", 1).await;
    // Find the payload size that makes the command body exactly 4096 bytes.
    let mut size = 4000;
    let body = loop {
        let body = encode_message(&ClientMessage::Command {
            request_id: 2,
            room: room.room,
            kind: "k".into(),
            payload: vec![0; size],
            idempotency_key: None,
        });
        if body.len() == 4096 {
            break body;
        }
        size = size + 4096 - body.len();
    };
    a.send_body(&body).await;
    a.recv_until(|m| match m {
        ServerMessage::CommandAck { request_id: 2, .. } => Some(()),
        ServerMessage::Error(e) => panic!("refused: {e}"),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn over_long_and_invalid_room_ids_are_refused_with_the_request_id() {
    let server = start_server().await;
    let (mut a, hello) = RawClient::connect_hello(&server).await;
    let max = hello.limits.max_room_id_len as usize;

    a.send(&join_msg(
        &"r".repeat(max + 1),
        7,
        vec![JoinOption::CreateIfMissing],
    ))
    .await;
    let error = a.recv_error().await;
    assert_eq!(
        (error.code, error.request_id),
        (ErrorCode::LimitExceeded, Some(7))
    );
    assert_eq!(
        error.detail,
        ErrorDetail::Limit {
            limit: max as u64,
            actual: max as u64 + 1
        }
    );

    a.send(&join_msg("tab\there", 8, vec![JoinOption::CreateIfMissing]))
        .await;
    let error = a.recv_error().await;
    assert_eq!(
        (error.code, error.request_id),
        (ErrorCode::InvalidRoomId, Some(8))
    );

    // The longest allowed id works.
    let snapshot = a.join(&"r".repeat(max), 9).await;
    assert_eq!(snapshot.room_id.len(), max);
}

#[tokio::test]
async fn datagrams_for_rooms_not_joined_or_with_a_forged_sender_are_refused() {
    let server = start_server().await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let (mut b, _) = RawClient::connect_hello(&server).await;
    let (mut c, _) = RawClient::connect_hello(&server).await;
    let room_a = a.join("ticks", 1).await;
    let room_b = b.join("ticks", 1).await;
    let other = c.join("elsewhere", 1).await;

    // C ticks into a room it has not joined.
    c.send_tick(room_a.room, other.you, 1, b"intruder");
    let error = c.recv_error().await;
    assert_eq!((error.code, error.request_id), (ErrorCode::NotJoined, None));

    // B names A as the sender.
    b.send_tick(room_b.room, room_a.you, 1, b"forged");
    let error = b.recv_error().await;
    assert_eq!(error.code, ErrorCode::InvalidSender);

    // An undecodable datagram.
    b.send_datagram(&[0, 1]);
    assert_eq!(b.recv_error().await.code, ErrorCode::Malformed);

    // None of those reached A; a genuine tick does, byte for byte.
    b.send_tick(room_b.room, room_b.you, 2, b"genuine");
    let bytes = a.recv_datagram().await;
    let Datagram::Tick(tick) = decode_datagram(&bytes, &Limits::default()).expect("tick");
    assert_eq!(
        (tick.sender, tick.seq, tick.payload),
        (room_b.you, 2, &b"genuine"[..])
    );
    assert!(server.stats().ticks_rejected.get() >= 3);
}

#[tokio::test]
async fn an_oversized_tick_payload_is_refused() {
    let server = start_server().await;
    let (mut a, hello) = RawClient::connect_hello(&server).await;
    let room = a.join("big-ticks", 1).await;
    let payload = vec![0u8; hello.limits.max_tick_payload_bytes as usize + 1];
    a.send_tick(room.room, room.you, 1, &payload);
    let error = a.recv_error().await;
    assert_eq!(error.code, ErrorCode::LimitExceeded);
}

#[tokio::test]
async fn bad_datagram_errors_are_rate_limited() {
    let server = start_server_with(|c| c.session.datagram_errors_per_second = 3).await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let started = std::time::Instant::now();
    for _ in 0..50 {
        a.send_datagram(&[0xff]);
    }
    // Wait until the server has seen them all, then count the errors that came.
    let stats = server.stats().clone();
    tokio::time::timeout(WAIT, async {
        while stats.ticks_rejected.get() < 50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("all 50 datagrams reached the server");
    let seconds = started.elapsed().as_secs() + 1;
    a.ping().await;
    // The pong came after every error the server queued for those datagrams.
    let errors = stats.errors_sent.get();
    assert!(errors >= 1, "bad datagrams are reported");
    assert!(
        errors <= 3 * seconds,
        "{errors} errors in {seconds} s windows, at most 3 per second"
    );
}

#[tokio::test]
async fn join_errors_room_not_found_too_many_joined_room_full_already_joined() {
    let server = start_server_with(|c| {
        c.session.limits.max_rooms_per_session = 2;
        c.session.limits.max_members_per_room = 2;
    })
    .await;
    let (mut a, _) = RawClient::connect_hello(&server).await;

    a.send(&join_msg("nowhere", 1, vec![])).await;
    let error = a.recv_error().await;
    assert_eq!(
        (error.code, error.request_id),
        (ErrorCode::RoomNotFound, Some(1))
    );

    a.join("one", 2).await;
    a.send(&join_msg("one", 3, vec![JoinOption::CreateIfMissing]))
        .await;
    assert_eq!(a.recv_error().await.code, ErrorCode::AlreadyJoined);

    a.join("two", 4).await;
    a.send(&join_msg("three", 5, vec![JoinOption::CreateIfMissing]))
        .await;
    let error = a.recv_error().await;
    assert_eq!(
        (error.code, error.request_id),
        (ErrorCode::TooManyJoined, Some(5))
    );

    let (mut b, _) = RawClient::connect_hello(&server).await;
    let (mut c, _) = RawClient::connect_hello(&server).await;
    b.join("one", 1).await;
    c.send(&join_msg("one", 6, vec![JoinOption::CreateIfMissing]))
        .await;
    let error = c.recv_error().await;
    assert_eq!(
        (error.code, error.request_id),
        (ErrorCode::RoomFull, Some(6))
    );

    c.send(&join_msg(
        "four",
        7,
        vec![JoinOption::CreateIfMissing, JoinOption::MaxMembers(3)],
    ))
    .await;
    let error = c.recv_error().await;
    assert_eq!(
        (error.code, error.request_id),
        (ErrorCode::LimitExceeded, Some(7))
    );
}

#[tokio::test]
async fn the_server_room_cap_is_enforced() {
    let server = start_server_with(|c| c.rooms.max_rooms = 2).await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    a.join("r1", 1).await;
    a.join("r2", 2).await;
    a.send(&join_msg("r3", 3, vec![JoinOption::CreateIfMissing]))
        .await;
    let error = a.recv_error().await;
    assert_eq!(
        (error.code, error.request_id),
        (ErrorCode::TooManyRooms, Some(3))
    );
    // Joining an existing room is still fine at the cap.
    let (mut b, _) = RawClient::connect_hello(&server).await;
    b.join("r1", 1).await;
}

#[tokio::test]
async fn requests_for_a_room_slot_not_joined_are_refused() {
    let server = start_server().await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    a.send(&ClientMessage::SetState {
        request_id: 11,
        room: RoomSlot(999),
        key: "k".into(),
        value: vec![],
        if_version: None,
    })
    .await;
    let error = a.recv_error().await;
    assert_eq!(
        (error.code, error.request_id),
        (ErrorCode::NotJoined, Some(11))
    );
}

#[tokio::test]
async fn webtransport_sessions_from_disallowed_origins_are_refused() {
    use wtransport::endpoint::ConnectOptions;
    use wtransport::error::ConnectingError;
    let server =
        start_server_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let connect = |origin: &'static str| {
        let config = wtransport::ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(
                server.cert_hash(),
            )])
            .build();
        let url = server.url();
        async move {
            let endpoint = wtransport::Endpoint::client(config).expect("endpoint");
            endpoint
                .connect(
                    ConnectOptions::builder(url)
                        .add_header("origin", origin)
                        .build(),
                )
                .await
        }
    };
    match connect("https://evil.example").await {
        Err(ConnectingError::SessionRejected) => {}
        other => panic!("expected a refused session, got {other:?}"),
    }
    for allowed in ["https://app.example.com", "http://127.0.0.1:8080"] {
        assert!(connect(allowed).await.is_ok(), "{allowed} may connect");
    }
    assert_eq!(
        server.stats().sessions_opened.get(),
        0,
        "no session for any of them yet"
    );
}
