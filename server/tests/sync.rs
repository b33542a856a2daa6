//! Sync semantics through the real server at the protocol level: resuming a
//! dropped session (also across transports), idempotent commands across a
//! resume, timelines, direct messages, chat history, host failover and
//! reclaim, relay rooms, ICE servers and packs (WebSocket pack lane and
//! WebTransport streams).

mod common;

use chorus_protocol::*;
use chorus_server::RunningServer;
use common::*;
use std::time::Duration;

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// A small but valid-looking PNG: the 8-byte signature, then filler.
fn png(len: usize, fill: u8) -> Vec<u8> {
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    bytes.resize(len, fill);
    bytes
}

/// The sequence number of a sequenced room event.
fn seq_of(message: &ServerMessage) -> Option<Seq> {
    match message {
        ServerMessage::MemberJoined { seq, .. }
        | ServerMessage::MemberLeft { seq, .. }
        | ServerMessage::StateChanged { seq, .. }
        | ServerMessage::CommandEvent { seq, .. }
        | ServerMessage::RoleChanged { seq, .. }
        | ServerMessage::PresenceChanged { seq, .. }
        | ServerMessage::TimelineChanged { seq, .. }
        | ServerMessage::PackAvailable { seq, .. }
        | ServerMessage::MemberKicked { seq, .. } => Some(*seq),
        _ => None,
    }
}

/// Sets key "k" and returns the acknowledged seq.
async fn set_state(
    client: &mut impl RawProtocol,
    room: RoomSlot,
    request_id: u32,
    value: &[u8],
) -> Seq {
    set_state_acked(client, room, request_id, "k", value)
        .await
        .1
}

fn presence_of(m: ServerMessage) -> Option<(MemberId, Presence)> {
    match m {
        ServerMessage::PresenceChanged {
            member, presence, ..
        } => Some((member, presence)),
        _ => None,
    }
}

#[tokio::test]
async fn a_dropped_session_resumes_over_websocket_with_nothing_missed_or_duplicated() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut member, member_hello) = RawClient::connect_hello(&server).await;
    assert_eq!(member_hello.resume_token.len(), 32);
    assert_eq!(member_hello.resume_window_ms, 60_000);
    let room = host.join("resume", 1).await;
    let me = member.join("resume", 1).await;
    let seen = set_state(&mut member, me.room, 2, b"before").await;

    // The member's connection drops (no Leave): the host sees it reconnecting.
    drop(member);
    let change = host.recv_until(presence_of).await;
    assert_eq!(change, (me.you, Presence::Reconnecting));
    // The room goes on without it.
    set_state(&mut host, room.room, 3, b"while away").await;
    host.send(&ClientMessage::Command {
        request_id: 4,
        room: room.room,
        kind: "chat".into(),
        payload: b"where did you go".to_vec(),
        idempotency_key: None,
    })
    .await;
    host.recv_until(|m| matches!(m, ServerMessage::CommandAck { request_id: 4, .. }).then_some(()))
        .await;

    // It comes back over WebSocket with its token and the last seq it saw.
    let (mut back, hello) = RawWs::connect_with(
        &server,
        resume_hello(
            &member_hello.resume_token,
            vec![ResumeRoom {
                room: me.room,
                last_seq: seen,
            }],
        ),
    )
    .await;
    assert_ne!(hello.resume_token, member_hello.resume_token, "a new token");
    let resumed = back.recv().await;
    assert_eq!(
        resumed,
        ServerMessage::Resumed {
            room: me.room,
            member: me.you,
            snapshot: None
        },
        "same member id, replayed from the log"
    );
    // Exactly the missed events, in order, then its own return.
    let mut replayed = Vec::new();
    loop {
        let message = back.recv().await;
        if let ServerMessage::PresenceChanged {
            member,
            presence: Presence::Online,
            ..
        } = &message
        {
            assert_eq!(*member, me.you);
            break;
        }
        replayed.push(message);
    }
    let seqs: Vec<u64> = replayed.iter().filter_map(seq_of).map(|s| s.0).collect();
    let expected: Vec<u64> = (seen.0 + 1..=seen.0 + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "contiguous, no gaps, no repeats");
    assert!(replayed.iter().any(|m| matches!(m,
        ServerMessage::StateChanged { value: Some(v), .. } if v == b"while away")));
    assert!(replayed.iter().any(|m| matches!(m,
        ServerMessage::CommandEvent { payload, .. } if payload == b"where did you go")));
    // The host sees it back, as the same member.
    assert_eq!(
        host.recv_until(presence_of).await,
        (me.you, Presence::Online)
    );
    // And it is a member again on its new transport: it ticks and writes.
    back.send_tick(me.room, me.you, 1, b"hi again").await;
    let datagram = host.recv_datagram().await;
    let Datagram::Tick(tick) = decode_datagram(&datagram, &Limits::default()).expect("tick");
    assert_eq!((tick.sender, tick.payload), (me.you, &b"hi again"[..]));
    set_state(&mut back, me.room, 9, b"after").await;
}

#[tokio::test]
async fn an_idempotent_command_is_applied_once_across_a_resume() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut member, hello) = RawClient::connect_hello(&server).await;
    host.join("once", 1).await;
    let me = member.join("once", 1).await;
    let command = |request_id| ClientMessage::Command {
        request_id,
        room: me.room,
        kind: "move".into(),
        payload: b"e2-e4".to_vec(),
        idempotency_key: Some("move-1".into()),
    };
    member.send(&command(2)).await;
    // Applied (the host sees it), but the member drops before reading its ack.
    host.recv_until(|m| matches!(m, ServerMessage::CommandEvent { .. }).then_some(()))
        .await;
    drop(member);
    host.recv_until(presence_of).await;

    let (mut back, _) = RawClient::connect_with(
        &server,
        resume_hello(
            &hello.resume_token,
            vec![ResumeRoom {
                room: me.room,
                last_seq: Seq(0),
            }],
        ),
    )
    .await;
    back.send(&command(3)).await;
    let duplicate = back
        .recv_until(|m| match m {
            ServerMessage::CommandAck {
                request_id: 3,
                duplicate,
                ..
            } => Some(duplicate),
            _ => None,
        })
        .await;
    assert!(duplicate, "the server had applied it");
    // The host saw it once: the next thing it gets after a ping marker is the pong.
    host.ping().await;
    host.send(&ClientMessage::Ping { client_time: 7 }).await;
    loop {
        match host.recv().await {
            ServerMessage::CommandEvent { .. } => panic!("applied twice"),
            ServerMessage::Pong { client_time: 7, .. } => break,
            _ => {}
        }
    }
}

#[tokio::test]
async fn an_unknown_token_is_refused_and_the_session_goes_on_fresh() {
    let server = start_server().await;
    let (mut client, _) = RawClient::connect_with(
        &server,
        resume_hello("00112233445566778899aabbccddeeff", vec![]),
    )
    .await;
    let e = client.recv_error().await;
    assert_eq!((e.code, e.request_id), (ErrorCode::ResumeFailed, None));
    client.ping().await;
    client.join("fresh", 1).await;
}

#[tokio::test]
async fn when_the_resume_window_runs_out_the_member_leaves_and_the_token_is_dead() {
    let server = start_server_with(|c| c.session.resume_window = Duration::from_millis(300)).await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut member, hello) = RawClient::connect_hello(&server).await;
    host.join("window", 1).await;
    let me = member.join("window", 1).await;
    drop(member);
    assert_eq!(
        host.recv_until(presence_of).await,
        (me.you, Presence::Reconnecting)
    );
    let (who, reason) = host
        .recv_until(|m| match m {
            ServerMessage::MemberLeft { member, reason, .. } => Some((member, reason)),
            _ => None,
        })
        .await;
    assert_eq!((who, reason), (me.you, LeaveReason::Disconnected));
    let (mut late, _) =
        RawClient::connect_with(&server, resume_hello(&hello.resume_token, vec![])).await;
    assert_eq!(late.recv_error().await.code, ErrorCode::ResumeFailed);
}

#[tokio::test]
async fn a_resume_while_the_old_connection_lives_takes_it_over() {
    let server = start_server().await;
    let (mut old, hello) = RawClient::connect_hello(&server).await;
    let me = old.join("takeover", 1).await;
    let (mut new, _) = RawWs::connect_with(
        &server,
        resume_hello(
            &hello.resume_token,
            vec![ResumeRoom {
                room: me.room,
                last_seq: me.last_seq,
            }],
        ),
    )
    .await;
    assert!(matches!(
        new.recv().await,
        ServerMessage::Resumed { snapshot: None, .. }
    ));
    // The old connection is told and closed.
    let e = old.recv_error().await;
    assert_eq!(e.code, ErrorCode::ResumeFailed);
    // The member lives on the new connection.
    new.ping().await;
    set_state(&mut new, me.room, 5, b"mine").await;
}

async fn server_now(client: &mut impl RawProtocol) -> ServerTime {
    client.send(&ClientMessage::Ping { client_time: 1 }).await;
    client
        .recv_until(|m| match m {
            ServerMessage::Pong {
                server_send_time, ..
            } => Some(server_send_time),
            _ => None,
        })
        .await
}

fn timeline_msg(
    request_id: u32,
    room: RoomSlot,
    op: TimelineOp,
    at: Option<ServerTime>,
    expected_seq: Option<Seq>,
) -> ClientMessage {
    ClientMessage::Timeline {
        request_id,
        room,
        name: "film".into(),
        op,
        at,
        expected_seq,
    }
}

#[tokio::test]
async fn a_scheduled_play_reaches_every_member_with_its_server_time_and_stale_requests_conflict() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut guest, _) = RawWs::connect_hello(&server).await;
    let room = host.join("watch", 1).await;
    guest.join("watch", 1).await;
    let at = server_now(&mut host).await.saturating_add_micros(300_000);
    let seq = request_ack(
        &mut host,
        timeline_msg(2, room.room, TimelineOp::Play, Some(at), Some(Seq(0))),
    )
    .await
    .expect("host plays");
    let timeline = guest
        .recv_until(|m| match m {
            ServerMessage::TimelineChanged { timeline, .. } => Some(timeline),
            _ => None,
        })
        .await;
    assert_eq!(
        timeline.anchor_time, at,
        "takes effect at the scheduled server time"
    );
    assert!(timeline.playing);
    assert_eq!((timeline.anchor_position_us, timeline.seq), (0, seq));

    // A pause based on the state before the play is stale.
    let e = request_ack(
        &mut host,
        timeline_msg(3, room.room, TimelineOp::Pause, None, Some(Seq(0))),
    )
    .await
    .expect_err("stale");
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(e.detail, ErrorDetail::Sequence { current_seq: seq });
    request_ack(
        &mut host,
        timeline_msg(4, room.room, TimelineOp::Pause, None, Some(seq)),
    )
    .await
    .expect("current");
}

#[tokio::test]
async fn a_direct_message_reaches_only_its_target() {
    let server = start_server().await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let (mut b, _) = RawClient::connect_hello(&server).await;
    let (mut c, _) = RawWs::connect_hello(&server).await;
    let room = a.join("dm", 1).await;
    b.join("dm", 1).await;
    let c_snap = c.join("dm", 1).await;
    request_ack(
        &mut a,
        ClientMessage::Direct {
            request_id: 2,
            room: room.room,
            to: c_snap.you,
            kind: "rtc-offer".into(),
            payload: b"v=0".to_vec(),
        },
    )
    .await
    .expect("sent");
    let got = c
        .recv_until(|m| match m {
            ServerMessage::DirectMessage {
                from,
                kind,
                payload,
                ..
            } => Some((from, kind, payload)),
            _ => None,
        })
        .await;
    assert_eq!(got, (room.you, "rtc-offer".to_owned(), b"v=0".to_vec()));
    // B got nothing of it: its next message after a ping is the pong.
    b.send(&ClientMessage::Ping { client_time: 5 }).await;
    loop {
        match b.recv().await {
            ServerMessage::DirectMessage { .. } => panic!("a direct message reached a bystander"),
            ServerMessage::Pong { client_time: 5, .. } => break,
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_joining_member_gets_the_chat_history() {
    let server = start_server_with(|c| c.rooms.room.chat_history_len = 2).await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let room = a.join("chatty", 1).await;
    for (n, text) in ["one", "two", "three"].iter().enumerate() {
        a.send(&ClientMessage::Command {
            request_id: 10 + n as u32,
            room: room.room,
            kind: "chat".into(),
            payload: text.as_bytes().to_vec(),
            idempotency_key: None,
        })
        .await;
    }
    a.recv_until(|m| matches!(m, ServerMessage::CommandAck { request_id: 12, .. }).then_some(()))
        .await;
    let (mut late, _) = RawWs::connect_hello(&server).await;
    let snap = late.join("chatty", 1).await;
    let texts: Vec<&[u8]> = snap.chat.iter().map(|c| c.payload.as_slice()).collect();
    assert_eq!(texts, [&b"two"[..], b"three"]);
}

#[tokio::test]
async fn a_silent_host_hands_over_and_reclaims_the_role_when_back() {
    let server = start_server_with(|c| c.rooms.room.host_timeout_us = 500_000).await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut editor, _) = RawClient::connect_hello(&server).await;
    let room = host.join("failover", 1).await;
    let me = editor.join("failover", 1).await;
    // The host says nothing more; the editor is told of the handover.
    let promoted = editor
        .recv_until(|m| match m {
            ServerMessage::RoleChanged {
                member,
                role: Role::Host,
                by: MemberId(0),
                ..
            } => Some(member),
            _ => None,
        })
        .await;
    assert_eq!(promoted, me.you);
    // The host speaks again within the reclaim window: it is host again.
    host.ping().await;
    editor
        .recv_until(|m| match m {
            ServerMessage::RoleChanged {
                member,
                role: Role::Host,
                ..
            } if member == room.you => Some(()),
            _ => None,
        })
        .await;
    let demoted = editor
        .recv_until(|m| match m {
            ServerMessage::RoleChanged { member, role, .. } if member == me.you => Some(role),
            _ => None,
        })
        .await;
    assert_eq!(demoted, Role::Editor);
}

#[tokio::test]
async fn relay_rooms_relay_broadcasts_and_ticks_but_store_nothing() {
    let server = start_server().await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let (mut b, _) = RawWs::connect_hello(&server).await;
    a.send(&join_msg(
        "p2p",
        1,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Kind(RoomKind::Relay),
        ],
    ))
    .await;
    let room = a
        .recv_until(|m| match m {
            ServerMessage::Joined { snapshot, .. } => Some(snapshot),
            _ => None,
        })
        .await;
    assert_eq!(room.kind, RoomKind::Relay);
    let b_snap = b.join("p2p", 1).await;
    let e = request_ack(
        &mut a,
        ClientMessage::SetDelegate {
            request_id: 2,
            room: room.room,
            member: None,
        },
    )
    .await;
    assert!(e.is_ok());
    a.send(&ClientMessage::SetState {
        request_id: 3,
        room: room.room,
        key: "k".into(),
        value: vec![],
        if_version: None,
    })
    .await;
    assert_eq!(a.recv_error().await.code, ErrorCode::NotStored);
    request_ack(
        &mut a,
        ClientMessage::Broadcast {
            request_id: 4,
            room: room.room,
            audience: Audience::Others,
            kind: "sync".into(),
            payload: b"delta".to_vec(),
        },
    )
    .await
    .expect("relayed");
    let got = b
        .recv_until(|m| match m {
            ServerMessage::BroadcastMessage { payload, .. } => Some(payload),
            _ => None,
        })
        .await;
    assert_eq!(got, b"delta");
    b.send_tick(b_snap.room, b_snap.you, 1, b"tick").await;
    let datagram = a.recv_datagram().await;
    let Datagram::Tick(t) = decode_datagram(&datagram, &Limits::default()).expect("tick");
    assert_eq!(t.payload, b"tick");
}

#[tokio::test]
async fn ice_servers_come_with_turn_rest_credentials() {
    let server = start_server_with(|c| {
        c.session.ice = chorus_server::session::IceSettings {
            stun_urls: vec!["stun:stun.example.org:3478".into()],
            turn_urls: vec!["turn:turn.example.org:3478".into()],
            turn_secret: Some("coturn-secret".into()),
            turn_ttl: Duration::from_secs(600),
        };
    })
    .await;
    let (mut a, _) = RawClient::connect_hello(&server).await;
    let room = a.join("call", 1).await;
    let now = server_now(&mut a).await;
    a.send(&ClientMessage::GetIceServers {
        request_id: 2,
        room: room.room,
    })
    .await;
    let (servers, expires) = a
        .recv_until(|m| match m {
            ServerMessage::IceServers {
                request_id: 2,
                servers,
                expires,
            } => Some((servers, expires)),
            _ => None,
        })
        .await;
    assert_eq!(servers[0].urls, ["stun:stun.example.org:3478"]);
    let turn = &servers[1];
    let username = turn.username.clone().expect("username");
    let (expiry, member) = username.split_once(':').expect("expiry:member");
    assert_eq!(member, room.you.0.to_string());
    let expiry: u64 = expiry.parse().expect("unix seconds");
    let now_secs = now.as_micros() / 1_000_000;
    assert!((now_secs + 599..=now_secs + 601).contains(&expiry));
    assert_eq!(expires.as_micros() / 1_000_000, expiry);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"coturn-secret");
    let expected = ring::hmac::sign(&key, username.as_bytes());
    use base64::Engine;
    assert_eq!(
        turn.credential.as_deref(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(expected.as_ref())
                .as_str()
        )
    );
}

/// Uploads `content` over the WebSocket pack lane in 16 KiB chunks from `offset`.
async fn ws_send_pack(ws: &mut RawWs, hash: &[u8], content: &[u8], offset: usize) {
    for (n, chunk) in content[offset..].chunks(16 * 1024).enumerate() {
        let mut message = encode_pack_header(&PackStreamHeader::Upload {
            hash: hash.to_vec(),
            offset: (offset + n * 16 * 1024) as u64,
        });
        message.extend_from_slice(chunk);
        ws.send_lane(3, &message).await;
    }
}

fn pack_upload(request_id: u32, room: RoomSlot, content: &[u8], media_type: &str) -> ClientMessage {
    ClientMessage::PackUpload {
        request_id,
        room,
        hash: sha256(content),
        name: "picture.png".into(),
        media_type: media_type.into(),
        size: content.len() as u64,
    }
}

async fn upload_ready(ws: &mut impl RawProtocol, msg: ClientMessage) -> Result<u64, ErrorFrame> {
    let request_id = msg.request_id().expect("request");
    ws.send(&msg).await;
    ws.recv_until(|m| match m {
        ServerMessage::PackUploadReady {
            request_id: id,
            offset,
            ..
        } if id == request_id => Some(Ok(offset)),
        ServerMessage::Error(e) if e.request_id == Some(request_id) => Some(Err(e)),
        _ => None,
    })
    .await
}

async fn pack_available(client: &mut impl RawProtocol) -> PackInfo {
    client
        .recv_until(|m| match m {
            ServerMessage::PackAvailable { pack, .. } => Some(pack),
            ServerMessage::Error(e) => panic!("pack refused: {e}"),
            _ => None,
        })
        .await
}

/// Fetches a pack over the WebSocket pack lane and returns its bytes.
async fn ws_fetch(ws: &mut RawWs, room: RoomSlot, hash: &[u8], offset: u64) -> Vec<u8> {
    ws.send(&ClientMessage::PackFetch {
        request_id: 77,
        room,
        hash: hash.to_vec(),
        offset,
    })
    .await;
    let mut content = Vec::new();
    loop {
        match ws.next().await {
            WsIn::Pack(message) => {
                let (header, chunk) = split_pack_message(&message).expect("pack message");
                let PackStreamHeader::Download {
                    request_id: 77,
                    offset: chunk_offset,
                    size,
                    ..
                } = header
                else {
                    panic!("unexpected header {header:?}");
                };
                assert_eq!(
                    chunk_offset,
                    offset + content.len() as u64,
                    "chunks in order"
                );
                content.extend_from_slice(chunk);
                if offset + content.len() as u64 == size {
                    return content;
                }
            }
            WsIn::Control(ServerMessage::Error(e)) => panic!("fetch refused: {e}"),
            WsIn::Closed(code) => panic!("closed {code:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn packs_upload_verify_announce_dedupe_and_download_over_websocket() {
    let server = start_server().await;
    let (mut up, _) = RawWs::connect_hello(&server).await;
    let (mut watcher, _) = RawClient::connect_hello(&server).await;
    let room = up.join("gallery", 1).await;
    watcher.join("gallery", 1).await;
    let content = png(100_000, 7);
    let hash = sha256(&content);
    assert_eq!(
        upload_ready(&mut up, pack_upload(2, room.room, &content, "image/png")).await,
        Ok(0)
    );
    ws_send_pack(&mut up, &hash, &content, 0).await;
    let pack = pack_available(&mut watcher).await;
    assert_eq!(
        (pack.hash.clone(), pack.size, pack.uploader),
        (hash.clone(), 100_000, room.you)
    );
    assert_eq!(
        pack_available(&mut up).await,
        pack,
        "the uploader hears it too"
    );

    // Download: the same bytes, and from an offset (a resumed download).
    assert_eq!(ws_fetch(&mut up, room.room, &hash, 0).await, content);
    assert_eq!(
        ws_fetch(&mut up, room.room, &hash, 60_000).await,
        content[60_000..]
    );

    // A second room uploads the same content: the server keeps it once.
    let other = up.join("gallery-2", 3).await;
    assert_eq!(
        upload_ready(&mut up, pack_upload(4, other.room, &content, "image/png")).await,
        Ok(0)
    );
    ws_send_pack(&mut up, &hash, &content, 0).await;
    pack_available(&mut up).await;
    let stats = server.pack_stats();
    assert_eq!((stats.contents, stats.content_bytes), (1, 100_000));
    // Offering it again to a room that has it is just acknowledged.
    request_ack(&mut up, pack_upload(5, other.room, &content, "image/png"))
        .await
        .expect("already there");
}

#[tokio::test]
async fn a_pack_whose_bytes_do_not_match_its_hash_is_refused() {
    let server = start_server().await;
    let (mut up, _) = RawWs::connect_hello(&server).await;
    let room = up.join("gallery", 1).await;
    let announced = png(5000, 1);
    let hash = sha256(&announced);
    upload_ready(&mut up, pack_upload(2, room.room, &announced, "image/png"))
        .await
        .expect("ready");
    ws_send_pack(&mut up, &hash, &png(5000, 2), 0).await;
    let e = up.recv_error().await;
    assert_eq!((e.code, e.request_id), (ErrorCode::HashMismatch, Some(2)));
    assert_eq!(server.pack_stats().contents, 0);
}

#[tokio::test]
async fn an_interrupted_upload_resumes_from_the_offset_the_server_has() {
    let server = start_server().await;
    let (mut up, hello) = RawWs::connect_hello(&server).await;
    let room = up.join("gallery", 1).await;
    let content = png(64 * 1024, 3);
    let hash = sha256(&content);
    upload_ready(&mut up, pack_upload(2, room.room, &content, "image/png"))
        .await
        .expect("ready");
    // Half of it, then the connection drops.
    ws_send_pack(&mut up, &hash, &content[..32 * 1024], 0).await;
    up.ping().await;
    drop(up);
    let (mut back, _) = RawClient::connect_with(
        &server,
        resume_hello(
            &hello.resume_token,
            vec![ResumeRoom {
                room: room.room,
                last_seq: room.last_seq,
            }],
        ),
    )
    .await;
    let offset = upload_ready(&mut back, pack_upload(3, room.room, &content, "image/png"))
        .await
        .expect("ready again");
    assert_eq!(offset, 32 * 1024, "the server kept what it had");
    // The rest, this time on a WebTransport stream.
    let mut stream = back
        .connection
        .open_uni()
        .await
        .expect("uni")
        .await
        .expect("uni stream");
    stream
        .write_all(&encode_pack_header(&PackStreamHeader::Upload {
            hash: hash.clone(),
            offset,
        }))
        .await
        .expect("header");
    stream
        .write_all(&content[offset as usize..])
        .await
        .expect("content");
    stream.finish().await.expect("finish");
    assert_eq!(pack_available(&mut back).await.hash, hash);

    // And download it on a WebTransport stream.
    back.send(&ClientMessage::PackFetch {
        request_id: 9,
        room: room.room,
        hash: hash.clone(),
        offset: 0,
    })
    .await;
    let mut incoming = tokio::time::timeout(WAIT, back.connection.accept_uni())
        .await
        .expect("a stream in time")
        .expect("uni stream");
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(n) = incoming.read(&mut buf).await.expect("read") {
        bytes.extend_from_slice(&buf[..n]);
    }
    let (header, body) = split_pack_message(&bytes).expect("header");
    assert!(
        matches!(header, PackStreamHeader::Download { request_id: 9, offset: 0, size, .. } if size == content.len() as u64)
    );
    assert_eq!(body, content);
}

#[tokio::test]
async fn pack_limits_and_media_types_are_enforced() {
    let server = start_server_with(|c| {
        c.session.limits.max_pack_bytes = 10_000;
        c.session.limits.max_packs_per_room = 2;
    })
    .await;
    let (mut up, _) = RawWs::connect_hello(&server).await;
    let room = up.join("limits", 1).await;
    // Size: at the limit passes, one byte over is refused at announce.
    let at_limit = png(10_000, 1);
    assert_eq!(
        upload_ready(&mut up, pack_upload(2, room.room, &at_limit, "image/png")).await,
        Ok(0)
    );
    let e = upload_ready(
        &mut up,
        pack_upload(3, room.room, &png(10_001, 1), "image/png"),
    )
    .await
    .expect_err("too big");
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    // A media type off the allow-list.
    let e = upload_ready(
        &mut up,
        pack_upload(4, room.room, &png(100, 1), "text/html"),
    )
    .await
    .expect_err("not allowed");
    assert_eq!(e.code, ErrorCode::MediaTypeRefused);
    // Spoofing: declared PNG, content is a JPEG.
    let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0];
    jpeg.resize(2000, 9);
    upload_ready(&mut up, pack_upload(5, room.room, &jpeg, "image/png"))
        .await
        .expect("announce passes");
    ws_send_pack(&mut up, &sha256(&jpeg), &jpeg, 0).await;
    let e = up.recv_error().await;
    assert_eq!(
        (e.code, e.request_id),
        (ErrorCode::MediaTypeRefused, Some(5))
    );
    // Count: two packs fit, the third is refused.
    ws_send_pack(&mut up, &sha256(&at_limit), &at_limit, 0).await;
    pack_available(&mut up).await;
    let second = png(500, 2);
    upload_ready(&mut up, pack_upload(6, room.room, &second, "image/png"))
        .await
        .expect("second");
    ws_send_pack(&mut up, &sha256(&second), &second, 0).await;
    pack_available(&mut up).await;
    let e = upload_ready(
        &mut up,
        pack_upload(7, room.room, &png(600, 3), "image/png"),
    )
    .await
    .expect_err("third");
    assert_eq!(e.code, ErrorCode::LimitExceeded);
}

#[tokio::test]
async fn a_viewer_cannot_upload_packs_or_control_the_timeline() {
    let mut templates = std::collections::HashMap::new();
    templates.insert(
        "show".to_owned(),
        chorus_server::rooms::RoomTemplate {
            default_role: Some(Role::Viewer),
            ..Default::default()
        },
    );
    let server: RunningServer = start_server_with(|c| c.rooms.templates = templates).await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    host.send(&join_msg(
        "show",
        1,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Template("show".into()),
        ],
    ))
    .await;
    host.recv_until(|m| matches!(m, ServerMessage::Joined { .. }).then_some(()))
        .await;
    let (mut viewer, _) = RawWs::connect_hello(&server).await;
    let snap = viewer.join("show", 1).await;
    assert_eq!(snap.role, Role::Viewer);
    let e = request_ack(
        &mut viewer,
        timeline_msg(2, snap.room, TimelineOp::Play, None, None),
    )
    .await
    .expect_err("viewer");
    assert_eq!(e.code, ErrorCode::Forbidden);
    let e = upload_ready(
        &mut viewer,
        pack_upload(3, snap.room, &png(100, 1), "image/png"),
    )
    .await
    .expect_err("viewer");
    assert_eq!(e.code, ErrorCode::Forbidden);
}

#[tokio::test]
async fn a_rooms_packs_go_with_it_and_unused_content_is_freed() {
    let server = start_server().await;
    let (mut up, _) = RawWs::connect_hello(&server).await;
    let a = up.join("short-lived", 1).await;
    let b = up.join("long-lived", 2).await;
    let shared = png(20_000, 4);
    let only_a = png(30_000, 5);
    for (request_id, room, content) in [
        (3, a.room, &shared),
        (4, a.room, &only_a),
        (5, b.room, &shared),
    ] {
        upload_ready(&mut up, pack_upload(request_id, room, content, "image/png"))
            .await
            .expect("ready");
        ws_send_pack(&mut up, &sha256(content), content, 0).await;
        pack_available(&mut up).await;
    }
    assert_eq!(server.pack_stats().contents, 2);
    request_ack(
        &mut up,
        ClientMessage::CloseRoom {
            request_id: 6,
            room: a.room,
            reason: String::new(),
        },
    )
    .await
    .expect("closed");
    // The closed room's own content is freed; what the other room uses stays.
    // (The room task forgets its packs as it ends, right after the Ack.)
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.pack_stats().contents != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            server.pack_stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.pack_stats().content_bytes, 20_000);
    assert_eq!(ws_fetch(&mut up, b.room, &sha256(&shared), 0).await, shared);
}

#[tokio::test]
async fn a_rooms_total_pack_bytes_are_capped() {
    let server = start_server_with(|c| c.session.limits.max_pack_bytes_per_room = 25_000).await;
    let (mut up, _) = RawWs::connect_hello(&server).await;
    let room = up.join("budget", 1).await;
    let first = png(20_000, 1);
    upload_ready(&mut up, pack_upload(2, room.room, &first, "image/png"))
        .await
        .expect("ready");
    ws_send_pack(&mut up, &sha256(&first), &first, 0).await;
    pack_available(&mut up).await;
    // 20 000 + 5 000 is exactly the budget; one byte more is refused.
    let e = upload_ready(
        &mut up,
        pack_upload(3, room.room, &png(5_001, 2), "image/png"),
    )
    .await
    .expect_err("over the room's budget");
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    upload_ready(
        &mut up,
        pack_upload(4, room.room, &png(5_000, 2), "image/png"),
    )
    .await
    .expect("at the budget");
}
