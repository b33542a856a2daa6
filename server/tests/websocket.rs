//! The WebSocket fallback through the real server: the same room core as
//! WebTransport, the tick lane's rules kept on TCP, heartbeats, bad input.

mod common;

use chorus_protocol::*;
use common::*;
use std::time::Duration;

fn decode_tick(bytes: &[u8]) -> (MemberId, u32, Vec<u8>) {
    let Datagram::Tick(tick) = decode_datagram(bytes, &Limits::default()).expect("tick");
    (tick.sender, tick.seq, tick.payload.to_vec())
}

#[tokio::test]
async fn websocket_and_webtransport_members_share_one_room() {
    let server = start_server().await;
    let (mut ws, ws_hello) = RawWs::connect_hello(&server).await;
    assert_eq!(
        ws_hello.max_datagram_size, 0,
        "ticks travel in-band on WebSocket"
    );
    let (mut wt, _) = RawClient::connect_hello(&server).await;

    let ws_room = ws.join("mixed", 1).await;
    let wt_room = wt.join("mixed", 1).await;
    assert_eq!(ws_room.room, wt_room.room);
    // Presence crosses transports.
    let joined = ws
        .recv_until(|m| match m {
            ServerMessage::MemberJoined { member, .. } => Some(member.id),
            _ => None,
        })
        .await;
    assert_eq!(joined, wt_room.you);

    // Ticks both ways, byte for byte the same datagram.
    ws.send_tick(ws_room.room, ws_room.you, 1, b"from ws").await;
    let (sender, seq, payload) = decode_tick(&wt.recv_datagram().await);
    assert_eq!(
        (sender, seq, &payload[..]),
        (ws_room.you, 1, &b"from ws"[..])
    );
    wt.send_tick(wt_room.room, wt_room.you, 9, b"from wt");
    let (sender, seq, payload) = decode_tick(&ws.recv_tick().await);
    assert_eq!(
        (sender, seq, &payload[..]),
        (wt_room.you, 9, &b"from wt"[..])
    );

    // State and commands in one order for both.
    wt.send(&ClientMessage::SetState {
        request_id: 2,
        room: wt_room.room,
        key: "title".into(),
        value: b"hi".to_vec(),
        if_version: None,
    })
    .await;
    let (key, version) = ws
        .recv_until(|m| match m {
            ServerMessage::StateChanged { key, version, .. } => Some((key, version)),
            _ => None,
        })
        .await;
    assert_eq!((key.as_str(), version), ("title", 1));
    ws.send(&ClientMessage::Command {
        request_id: 3,
        room: ws_room.room,
        kind: "chat".into(),
        payload: b"hello wt".to_vec(),
        idempotency_key: None,
    })
    .await;
    let (author, payload) = wt
        .recv_until(|m| match m {
            ServerMessage::CommandEvent {
                author, payload, ..
            } => Some((author, payload)),
            _ => None,
        })
        .await;
    assert_eq!((author, &payload[..]), (ws_room.you, &b"hello wt"[..]));

    // The WebSocket connection drops without a Leave: the WebTransport member
    // sees it reconnecting (it may resume within the window).
    drop(ws);
    let (member, presence) = wt
        .recv_until(|m| match m {
            ServerMessage::PresenceChanged {
                member, presence, ..
            } => Some((member, presence)),
            _ => None,
        })
        .await;
    assert_eq!((member, presence), (ws_room.you, Presence::Reconnecting));
    assert_eq!(server.stats().websocket_opened.get(), 1);
    assert_eq!(server.stats().webtransport_opened.get(), 1);
}

#[tokio::test]
async fn large_messages_are_chunked_and_ticks_pass_between_the_chunks() {
    let server = start_server().await;
    let (mut a, _) = RawWs::connect_hello(&server).await;
    let (mut b, _) = RawWs::connect_hello(&server).await;
    let room_a = a.join("chunks", 1).await;
    b.join("chunks", 1).await;
    a.recv_until(|m| matches!(m, ServerMessage::MemberJoined { .. }).then_some(()))
        .await;

    // A 200 KiB value from a, sent by a in chunks of its own (0x02 pieces).
    let value: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let body = encode_message(&ClientMessage::SetState {
        request_id: 5,
        room: room_a.room,
        key: "big".into(),
        value: value.clone(),
        if_version: None,
    });
    let (first, rest) = body.split_at(body.len() / 2);
    a.send_lane(2, first).await;
    // A tick between the pieces of a's control message is taken as a tick.
    a.send_tick(room_a.room, room_a.you, 1, b"between").await;
    a.send_lane(0, rest).await;

    // b receives the value whole (the server chunked it) and the tick.
    let mut got_tick = false;
    let mut got_value = None;
    while got_value.is_none() || !got_tick {
        match b.next().await {
            WsIn::Tick(bytes) => {
                assert_eq!(decode_tick(&bytes).2, b"between");
                got_tick = true;
            }
            WsIn::Control(ServerMessage::StateChanged { value, .. }) => got_value = value,
            WsIn::Control(_) | WsIn::Pack(_) => {}
            WsIn::Closed(code) => panic!("closed {code:?}"),
        }
    }
    assert_eq!(got_value.expect("value"), value);
}

#[tokio::test]
async fn server_chunks_large_control_messages_in_16_kib_pieces() {
    let server = start_server().await;
    let (mut a, _) = RawWs::connect_hello(&server).await;
    let room = a.join("pieces", 1).await;
    a.send(&ClientMessage::SetState {
        request_id: 5,
        room: room.room,
        key: "big".into(),
        value: vec![7; 100 * 1024],
        if_version: None,
    })
    .await;
    // Count raw WebSocket messages until the (reassembled) StateChanged.
    use futures_util::StreamExt;
    let mut chunks = 0;
    loop {
        let message = tokio::time::timeout(WAIT, a.socket.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("message");
        let WsMessage::Binary(data) = message else {
            continue;
        };
        assert!(
            data.len() <= 16 * 1024 + 1,
            "a piece is at most 16 KiB + lane byte"
        );
        match data[0] {
            2 => chunks += 1,
            0 if chunks > 0 => break,
            _ => {}
        }
    }
    assert!(
        chunks >= 6,
        "100 KiB came in {chunks} chunks before the last piece"
    );
}

#[tokio::test]
async fn a_slow_websocket_reader_gets_the_newest_ticks_and_the_drops_are_counted() {
    let server = start_server_with(|c| {
        // Room for a large reliable backlog, so this test sees tick drops, not
        // a slow-consumer disconnect.
        c.session.outbox_max_bytes = 256 * 1024 * 1024;
        c.session.outbox_max_frames = 100_000;
        lift_rate_limits(c);
    })
    .await;
    let (mut reader, _) = RawWs::connect_hello(&server).await;
    let (mut sender, _) = RawClient::connect_hello(&server).await;
    reader.join("slow", 1).await;
    let room = sender.join("slow", 1).await;

    // The reader stops reading. Big commands fill the TCP buffers between the
    // server and it; once the server's writer is blocked, ticks for it wait in
    // its newest-wins slot and older ones are replaced (counted as dropped).
    let payload = vec![0u8; 60 * 1024];
    let mut seq = 0u32;
    let stats = server.stats().clone();
    while stats.ticks_dropped.get() < 10 {
        seq += 1;
        assert!(seq < 5_000, "the server's writer never blocked");
        sender
            .send(&ClientMessage::Command {
                request_id: seq,
                room: room.room,
                kind: "bulk".into(),
                payload: payload.clone(),
                idempotency_key: None,
            })
            .await;
        sender
            .recv_until(|m| {
                matches!(m, ServerMessage::CommandAck { request_id, .. } if request_id == seq)
                    .then_some(())
            })
            .await;
        sender.send_tick(room.room, room.you, seq, b"stale");
        // Give the tick time to reach the server before the next round.
        sender.ping().await;
    }
    let last = seq + 1;
    sender.send_tick(room.room, room.you, last, b"newest");
    sender.ping().await;

    // The reader catches up: it gets far fewer ticks than were sent, and the
    // newest one among them.
    let mut ticks = 0;
    loop {
        match reader.next().await {
            WsIn::Tick(bytes) => {
                ticks += 1;
                let (_, tick_seq, payload) = decode_tick(&bytes);
                if tick_seq == last {
                    assert_eq!(payload, b"newest");
                    break;
                }
            }
            WsIn::Control(_) | WsIn::Pack(_) => {}
            WsIn::Closed(code) => panic!("the slow reader was closed ({code:?})"),
        }
    }
    assert!(
        ticks < last,
        "{ticks} of {last} ticks arrived; older ones gave way"
    );
    assert!(stats.ticks_dropped.get() >= 10);
    // It is still a member in good standing.
    reader.ping().await;
}

#[tokio::test]
async fn a_websocket_reader_ignoring_reliable_events_is_disconnected_with_its_reason() {
    let server = start_server_with(|c| {
        c.session.outbox_max_frames = 64;
        c.session.outbox_max_bytes = 256 * 1024;
        lift_rate_limits(c);
    })
    .await;
    let (mut sleeper, _) = RawWs::connect_hello(&server).await;
    let (mut flooder, _) = RawClient::connect_hello(&server).await;
    let sleeper_room = sleeper.join("flood-ws", 1).await;
    let room = flooder.join("flood-ws", 1).await;
    let (_, member, reason) = flood_until_someone_leaves(&mut flooder, room.room).await;
    assert_eq!((member, reason), (sleeper_room.you, LeaveReason::TooSlow));
    // Reading now, the sleeper finds the close with code 4000 + 400.
    assert_eq!(sleeper.closed_code().await, Some(4400));
}

#[tokio::test]
async fn a_silent_websocket_member_is_removed_after_the_heartbeat_timeout() {
    let server = start_server_with(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(500);
        c.session.resume_window = Duration::from_millis(300);
    })
    .await;
    let (mut watcher, _) = RawClient::connect_hello(&server).await;
    let (mut silent, _) = RawWs::connect_hello(&server).await;
    watcher.join("heartbeat", 1).await;
    let silent_room = silent.join("heartbeat", 1).await;
    // The silent client neither reads (so it answers no ping) nor writes:
    // first it is reconnecting, then, the resume window over, timed out.
    let reconnecting = watcher
        .recv_until(|m| match m {
            ServerMessage::PresenceChanged {
                member,
                presence: Presence::Reconnecting,
                ..
            } => Some(member),
            _ => None,
        })
        .await;
    assert_eq!(reconnecting, silent_room.you);
    let (member, reason) = watcher
        .recv_until(|m| match m {
            ServerMessage::MemberLeft { member, reason, .. } => Some((member, reason)),
            _ => None,
        })
        .await;
    assert_eq!((member, reason), (silent_room.you, LeaveReason::TimedOut));
    // The watcher, kept alive by its own QUIC keep-alives, is still served.
    watcher.ping().await;
    drop(silent);
}

#[tokio::test]
async fn a_webtransport_client_that_vanishes_is_removed_after_the_heartbeat_timeout() {
    let server = start_server_with(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(500);
        c.session.resume_window = Duration::from_millis(300);
    })
    .await;
    let (mut watcher, _) = RawWs::connect_hello(&server).await;
    watcher.join("vanish", 1).await;
    // A client on its own runtime, which is then torn down without closing:
    // its packets simply stop, as when a laptop lid closes.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let url_server = server.url();
    let hash = server.cert_hash();
    let mut tx = Some(tx);
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let config = wtransport::ClientConfig::builder()
                .with_bind_default()
                .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
                .build();
            let endpoint = wtransport::Endpoint::client(config).expect("endpoint");
            let connection = endpoint.connect(url_server).await.expect("connects");
            let (mut send, mut recv) = connection.open_bi().await.expect("bi").await.expect("bi");
            send.write_all(&encode_frame(&hello(PROTOCOL_VERSION)))
                .await
                .expect("hello");
            send.write_all(&encode_frame(&join_msg(
                "vanish",
                1,
                vec![JoinOption::CreateIfMissing],
            )))
            .await
            .expect("join");
            // Wait for the Joined reply so the membership exists.
            let mut buf = vec![0u8; 64 * 1024];
            let mut decoder = FrameDecoder::new(1 << 24);
            let mut joined = false;
            while !joined {
                let n = recv.read(&mut buf).await.expect("read").expect("open");
                decoder.extend(&buf[..n]);
                while let Some(body) = decoder.next_frame().expect("frame") {
                    if let ServerMessage::Joined { snapshot, .. } =
                        decode_server_message(&body).expect("decodes")
                    {
                        joined = true;
                        let _ = tx.take().map(|tx| tx.send(snapshot.you));
                    }
                }
            }
            // Keep everything alive, un-dropped, while the runtime goes away.
            std::mem::forget((endpoint, connection, send, recv));
        });
        runtime.shutdown_background();
    });
    let vanished = tokio::time::timeout(WAIT, rx)
        .await
        .expect("the client joined in time")
        .expect("the client reported");
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join task")
        .expect("client thread");
    let (member, reason) = watcher
        .recv_until(|m| match m {
            ServerMessage::MemberLeft { member, reason, .. } => Some((member, reason)),
            _ => None,
        })
        .await;
    assert_eq!((member, reason), (vanished, LeaveReason::TimedOut));
}

#[tokio::test]
async fn bad_websocket_input_is_answered_and_the_connection_goes_on() {
    let server = start_server().await;
    let (mut a, _) = RawWs::connect_hello(&server).await;
    let (mut b, _) = RawWs::connect_hello(&server).await;
    let room = a.join("bad-ws", 1).await;
    b.join("bad-ws", 1).await;

    a.send_raw(WsMessage::Text("{\"hello\":1}".into())).await;
    let error = a.recv_error().await;
    assert_eq!((error.code, error.request_id), (ErrorCode::Malformed, None));
    assert!(error.message.contains("text"));

    a.send_raw(WsMessage::Binary(Vec::new().into())).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::Malformed);

    a.send_lane(7, b"?").await;
    let error = a.recv_error().await;
    assert_eq!(error.code, ErrorCode::Malformed);
    assert!(error.message.contains("lane"));

    a.send_lane(0, &[99]).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::UnknownMessage);
    // A truncated varint is no tag at all.
    a.send_lane(0, &[0xff, 0xff, 0xff]).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::Malformed);

    a.send_lane(0, &[1, 200]).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::Malformed);

    a.send_lane(1, &[0, 5]).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::Malformed);

    // Still in the room, still ticking.
    a.ping().await;
    a.send_tick(room.room, room.you, 3, b"ok").await;
    assert_eq!(decode_tick(&b.recv_tick().await).2, b"ok");
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_that_connection_only() {
    let server = start_server_with(|c| c.session.limits.max_frame_bytes = 4096).await;
    let (mut a, _) = RawWs::connect_hello(&server).await;
    let (mut b, _) = RawWs::connect_hello(&server).await;
    a.join("big-ws", 1).await;
    b.join("big-ws", 1).await;
    // The limit itself passes the size check: 4096 bytes of body (garbage,
    // so it is answered as Malformed, and the connection stays).
    a.send_lane(0, &vec![0u8; 4096]).await;
    assert_eq!(a.recv_error().await.code, ErrorCode::Malformed);

    a.send_lane(0, &vec![0u8; 4097]).await;
    assert_eq!(a.closed_code().await, Some(4102));
    let (_, reason) = b
        .recv_until(|m| match m {
            ServerMessage::MemberLeft { member, reason, .. } => Some((member, reason)),
            _ => None,
        })
        .await;
    assert_eq!(reason, LeaveReason::Disconnected);
    b.ping().await;
}

#[tokio::test]
async fn chunks_past_the_frame_limit_are_refused() {
    let server = start_server_with(|c| c.session.limits.max_frame_bytes = 4096).await;
    let (mut a, _) = RawWs::connect_hello(&server).await;
    a.send_lane(2, &vec![0u8; 3000]).await;
    a.send_lane(2, &vec![0u8; 1097]).await;
    let error = a.recv_error().await;
    assert_eq!(error.code, ErrorCode::FrameTooLarge);
    assert_eq!(a.closed_code().await, Some(4102));
}

#[tokio::test]
async fn upgrades_from_disallowed_origins_are_refused_with_403() {
    let server =
        start_server_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let addr = server.tcp_addrs()[0];
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let with_origin = |origin: &'static str| {
        let mut headers = upgrade.to_vec();
        headers.push(("origin", origin));
        headers
    };
    let (status, content_type, body) =
        http_get(addr, "/chorus", &with_origin("https://evil.example")).await;
    assert_eq!(status, 403);
    assert_eq!(content_type, "application/json");
    assert!(body.contains("origin"));
    assert_eq!(
        server.stats().sessions_opened.get(),
        0,
        "a refused upgrade opens no session"
    );
    for allowed in ["https://app.example.com", "http://localhost:3000"] {
        let (status, _, _) = http_get(addr, "/chorus", &with_origin(allowed)).await;
        assert_eq!(status, 101, "{allowed} may upgrade");
    }
    // Native clients send no Origin.
    let (status, _, _) = http_get(addr, "/chorus", &upgrade).await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn with_a_coalescing_window_every_tick_still_reaches_both_transports() {
    let server = start_server_with(|c| c.tick_coalesce = Duration::from_millis(20)).await;
    let (mut ws, _) = RawWs::connect_hello(&server).await;
    let (mut wt, _) = RawClient::connect_hello(&server).await;
    let (mut sender, _) = RawClient::connect_hello(&server).await;
    ws.join("window", 1).await;
    wt.join("window", 1).await;
    let room = sender.join("window", 1).await;
    let (mut other, _) = RawWs::connect_hello(&server).await;
    let other_room = other.join("window", 1).await;

    // Two senders, one tick each, inside one window: both reach every other
    // member, each the newest of its sender, byte for byte.
    sender.send_tick(room.room, room.you, 1, b"from wt");
    other
        .send_tick(other_room.room, other_room.you, 2, b"from ws")
        .await;
    let mut at_ws = vec![
        decode_tick(&ws.recv_tick().await),
        decode_tick(&ws.recv_tick().await),
    ];
    let mut at_wt = vec![
        decode_tick(&wt.recv_datagram().await),
        decode_tick(&wt.recv_datagram().await),
    ];
    let mut want = vec![
        (room.you, 1, b"from wt".to_vec()),
        (other_room.you, 2, b"from ws".to_vec()),
    ];
    for got in [&mut at_ws, &mut at_wt] {
        got.sort();
    }
    want.sort();
    assert_eq!(at_ws, want);
    assert_eq!(at_wt, want);
}
