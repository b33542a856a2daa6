//! The client against a scripted WebTransport peer (not the real server): each
//! test plays the server's side of the protocol message by message, to check the
//! client's handshake, request correlation, event ordering, tick routing, and
//! what happens on errors and closes.
//!
//! The peer uses the long-lived self-signed test certificate in `tests/data`,
//! trusted through `Trust::CaPem`. Its key is for these tests only.

mod common;

use bytes::Bytes;
use chorus_client::{
    Action, Client, CloseReason, ConnectError, ConnectOptions, JoinOptions, RequestError,
    RoomEvent, TickError, Transport, TransportChoice,
};
use chorus_protocol::{
    ClientMessage, Datagram, DisplayInfo, ErrorCode, ErrorDetail, ErrorFrame, FrameDecoder,
    HelloExtension, HelloOption, JoinOption, LeaveReason, Limits, MemberId, PROTOCOL_VERSION,
    PackInfo, PackStreamHeader, PermissionPolicy, PermissionRule, ProtocolVersion, Rate,
    RateLimits, Role, RoomSlot, RoomSnapshot, Seq, ServerHello, ServerMessage, ServerTime,
    StateEntry, Tick, decode_client_message, decode_datagram, encode_datagram, encode_frame,
    encode_pack_header, split_pack_message,
};
use common::{CERT, KEY, SLOT, member, snapshot_with, unix_us};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use wtransport::tls::{CertificateChain, PrivateKey};
use wtransport::{Connection, Endpoint, Identity, RecvStream, SendStream, ServerConfig, VarInt};

/// The mock server's clock runs this far ahead of the client's.
const SERVER_AHEAD_US: u64 = 3_000_000;

/// The server side of one session: the control stream, with pings answered
/// automatically.
struct Peer {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    pings: usize,
}

impl Peer {
    async fn send(&mut self, msg: &ServerMessage) {
        self.send
            .write_all(&encode_frame(msg))
            .await
            .expect("peer write");
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("peer write");
    }

    /// The next client message that is not a ping (pings get a pong); `None` when
    /// the stream or connection ends.
    async fn next(&mut self) -> Option<ClientMessage> {
        let mut buf = [0u8; 4096];
        loop {
            while let Some(body) = self.decoder.next_frame().expect("client framing") {
                let msg = decode_client_message(&body, &Limits::default()).expect("client message");
                if let ClientMessage::Ping { client_time } = msg {
                    self.pings += 1;
                    let t1 = unix_us() + SERVER_AHEAD_US;
                    self.send(&ServerMessage::Pong {
                        client_time,
                        server_receive_time: ServerTime(t1),
                        server_send_time: ServerTime(t1 + 5),
                    })
                    .await;
                    continue;
                }
                return Some(msg);
            }
            match self.recv.read(&mut buf).await {
                Ok(Some(n)) => self.decoder.extend(&buf[..n]),
                _ => return None,
            }
        }
    }

    async fn expect_next(&mut self) -> ClientMessage {
        self.next().await.expect("a client message")
    }
}

fn hello() -> ServerHello {
    ServerHello {
        version: PROTOCOL_VERSION,
        server_name: "mock/0".into(),
        session_id: 77,
        server_time: ServerTime(unix_us() + SERVER_AHEAD_US),
        max_datagram_size: 1200,
        limits: Limits::default(),
        rate_limits: RateLimits::default(),
        // Resuming off, so a drop ends the client (the resume tests turn it on).
        resume_token: String::new(),
        resume_window_ms: 0,
        extensions: vec![],
    }
}

/// The snapshot the mock sends for a join: member 1 ("ada") was there, the
/// client is member 2, one key `title`.
fn snapshot(room_id: &str, display: DisplayInfo) -> RoomSnapshot {
    let title = StateEntry {
        key: "title".into(),
        value: b"Hello".to_vec(),
        version: 3,
        author: MemberId(1),
    };
    snapshot_with(room_id, display, vec![title], 3, Seq(5))
}

/// Reads the client's hello. Answers with `reply` if given.
async fn accept_session(endpoint: &Endpoint<wtransport::endpoint::endpoint_side::Server>) -> Peer {
    let request = endpoint.accept().await.await.expect("session request");
    assert_eq!(request.path(), "/chorus");
    let conn = request.accept().await.expect("session");
    let (send, recv) = conn.accept_bi().await.expect("control stream");
    Peer {
        conn,
        send,
        recv,
        decoder: FrameDecoder::new(Limits::default().max_frame_bytes),
        pings: 0,
    }
}

/// Starts a one-session mock server running `script` and returns its URL.
async fn mock<F, Fut>(script: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let identity = Identity::new(
        CertificateChain::load_pemfile(CERT).await.expect("cert"),
        PrivateKey::load_pemfile(KEY).await.expect("key"),
    );
    let config = ServerConfig::builder()
        .with_bind_address(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_identity(identity)
        .build();
    let endpoint = Endpoint::server(config).expect("server endpoint");
    let port = endpoint.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let peer = accept_session(&endpoint).await;
        script(peer).await;
        // Keep the endpoint alive until the script is done.
        drop(endpoint);
    });
    (format!("https://127.0.0.1:{port}/chorus"), task)
}

fn options() -> ConnectOptions {
    ConnectOptions {
        handshake_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        clock_sync_pings: 4,
        clock_ping_spacing: Duration::ZERO,
        ..ConnectOptions::with_ca_pem(std::fs::read(CERT).expect("cert file"))
    }
}

/// Handshake from the server's side: the client's hello (without options),
/// then ours.
async fn greet(peer: &mut Peer) {
    assert_eq!(read_hello(peer).await, vec![]);
    peer.send(&ServerMessage::Hello(hello())).await;
}

/// Reads the client's hello and returns its options.
async fn read_hello(peer: &mut Peer) -> Vec<HelloOption> {
    match peer.expect_next().await {
        ClientMessage::Hello(h) => {
            assert_eq!(h.version, PROTOCOL_VERSION);
            assert_eq!(h.capabilities, 0);
            assert!(h.client_name.starts_with("chorus-client-rust/"));
            h.options
        }
        other => panic!("expected hello, got {other:?}"),
    }
}

/// Answers the next message, which must be a default join.
async fn answer_join(peer: &mut Peer) -> u32 {
    answer_join_with(peer, vec![JoinOption::CreateIfMissing], snapshot).await
}

/// Answers the next message, which must be a join with these options, with
/// `make(room_id, display)`.
async fn answer_join_with(
    peer: &mut Peer,
    expected: Vec<JoinOption>,
    make: impl FnOnce(&str, DisplayInfo) -> RoomSnapshot,
) -> u32 {
    match peer.expect_next().await {
        ClientMessage::Join {
            request_id,
            room_id,
            display,
            options,
        } => {
            assert_eq!(options, expected);
            peer.send(&ServerMessage::Joined {
                request_id,
                snapshot: make(&room_id, display),
            })
            .await;
            request_id
        }
        other => panic!("expected join, got {other:?}"),
    }
}

/// [`snapshot`], but the client (member 2) hosts too and member 3 ("cy")
/// edits.
fn host_snapshot(room_id: &str, display: DisplayInfo) -> RoomSnapshot {
    let mut s = snapshot(room_id, display);
    s.role = Role::Host;
    s.members[1].role = Role::Host;
    s.members.push(member(3, "cy"));
    s
}

/// An error answering request `request_id` that asks to wait `ms`.
fn retry_error(request_id: Option<u32>, code: ErrorCode, ms: u64) -> ServerMessage {
    ServerMessage::Error(
        ErrorFrame::new(request_id, code, "not now")
            .with_detail(ErrorDetail::RetryAfter { retry_after_ms: ms }),
    )
}

/// The request id of the next message, which must match `expected` once its
/// request id is set to 0.
async fn expect_request(peer: &mut Peer, expected: ClientMessage) -> u32 {
    let mut msg = peer.expect_next().await;
    let id = msg.request_id().expect("a request");
    match &mut msg {
        ClientMessage::Join { request_id, .. }
        | ClientMessage::Leave { request_id, .. }
        | ClientMessage::SetState { request_id, .. }
        | ClientMessage::DeleteState { request_id, .. }
        | ClientMessage::Command { request_id, .. }
        | ClientMessage::Kick { request_id, .. }
        | ClientMessage::SetRole { request_id, .. }
        | ClientMessage::SetPassword { request_id, .. }
        | ClientMessage::CloseRoom { request_id, .. }
        | ClientMessage::Timeline { request_id, .. }
        | ClientMessage::Direct { request_id, .. }
        | ClientMessage::Broadcast { request_id, .. }
        | ClientMessage::RequestSnapshot { request_id, .. }
        | ClientMessage::GetIceServers { request_id, .. }
        | ClientMessage::SetDelegate { request_id, .. }
        | ClientMessage::PackUpload { request_id, .. }
        | ClientMessage::PackFetch { request_id, .. } => *request_id = 0,
        ClientMessage::Hello(_) | ClientMessage::Ping { .. } => {}
    }
    assert_eq!(msg, expected);
    id
}

/// Answers the `Leave`s a closing client sends for its rooms until it has
/// closed; returns the rooms left.
async fn answer_leaves_until_gone(peer: &mut Peer) -> Vec<RoomSlot> {
    let mut left = Vec::new();
    while let Some(msg) = peer.next().await {
        match msg {
            ClientMessage::Leave { request_id, room } => {
                left.push(room);
                peer.send(&ServerMessage::Left { request_id, room }).await;
            }
            other => panic!("expected a leave or the end, got {other:?}"),
        }
    }
    left
}

/// Waits for the client to close (or give up on) the connection.
async fn wait_gone(peer: Peer) {
    let _ = tokio::time::timeout(Duration::from_secs(5), peer.conn.closed()).await;
}

#[tokio::test]
async fn handshake_and_clock_sync() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        // Nothing else but pings until the client closes.
        assert!(peer.next().await.is_none());
        assert!(peer.pings >= 6, "sync pings: {}", peer.pings);
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            clock_sync_interval: Duration::from_millis(100),
            clock_refresh_pings: 2,
            ..options()
        },
    )
    .await
    .expect("connect");
    assert_eq!(client.session_id(), 77);
    assert_eq!(client.transport(), Transport::WebTransport);
    assert_eq!(client.server_hello().server_name, "mock/0");
    assert_eq!(client.limits(), &Limits::default());
    let clock = client.clock();
    assert_eq!(clock.samples, 4);
    let error = clock.offset_us - SERVER_AHEAD_US as i64;
    assert!(
        error.unsigned_abs() < 50_000,
        "offset {} µs, expected about {SERVER_AHEAD_US}",
        clock.offset_us
    );
    let server_now = client.server_time().0;
    assert!(server_now.abs_diff(unix_us() + SERVER_AHEAD_US) < 100_000);
    // The background re-sync adds samples.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(client.clock().samples >= 6, "{:?}", client.clock());
    client.close().await;
    assert_eq!(client.closed().await, CloseReason::Local);
    server.await.expect("server script");
}

#[tokio::test]
async fn version_mismatch_is_typed() {
    let (url, server) = mock(|mut peer| async move {
        let _ = peer.expect_next().await;
        let server = ProtocolVersion { major: 3, minor: 0 };
        peer.send(&ServerMessage::Error(
            ErrorFrame::new(None, ErrorCode::VersionMismatch, "server speaks 3.0").with_detail(
                ErrorDetail::Version {
                    server,
                    client: PROTOCOL_VERSION,
                },
            ),
        ))
        .await;
        // A server must let the error frame reach the client before closing.
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.conn.close(VarInt::from_u32(103), b"version mismatch");
        wait_gone(peer).await;
    })
    .await;
    match Client::connect(&url, options()).await {
        Err(ConnectError::VersionMismatch { server, client }) => {
            assert_eq!(server.major, 3);
            assert_eq!(client, PROTOCOL_VERSION);
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    server.await.expect("server script");
}

#[tokio::test]
async fn close_code_alone_still_names_the_error() {
    let (url, server) = mock(|mut peer| async move {
        let _ = peer.expect_next().await;
        // Close at once: the client only sees the close code and reason.
        peer.conn.close(VarInt::from_u32(103), b"version mismatch");
        wait_gone(peer).await;
    })
    .await;
    match Client::connect(&url, options()).await {
        Err(ConnectError::Closed(CloseReason::Server(frame))) => {
            assert_eq!(frame.code, ErrorCode::VersionMismatch);
            assert_eq!(frame.message, "version mismatch");
        }
        other => panic!("expected the close code, got {other:?}"),
    }
    server.await.expect("server script");
}

#[tokio::test]
async fn join_state_and_commands_apply_before_acks() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        answer_join(&mut peer).await;
        // A frame from a newer server (unknown tag) is skipped by the client.
        peer.send_raw(&[2, 200, 0]).await;
        match peer.expect_next().await {
            ClientMessage::SetState {
                request_id,
                room,
                key,
                value,
                if_version,
            } => {
                assert_eq!((room, key.as_str(), if_version), (SLOT, "title", None));
                peer.send(&ServerMessage::StateChanged {
                    room,
                    seq: Seq(6),
                    key,
                    value: Some(value),
                    version: 4,
                    author: MemberId(2),
                })
                .await;
                peer.send(&ServerMessage::StateAck {
                    request_id,
                    room,
                    version: 4,
                    seq: Seq(6),
                })
                .await;
            }
            other => panic!("expected set_state, got {other:?}"),
        }
        match peer.expect_next().await {
            ClientMessage::SetState {
                request_id,
                if_version,
                ..
            } => {
                assert_eq!(if_version, Some(1));
                peer.send(&ServerMessage::Error(
                    ErrorFrame::new(Some(request_id), ErrorCode::Conflict, "at version 4")
                        .with_detail(ErrorDetail::Conflict { current_version: 4 }),
                ))
                .await;
            }
            other => panic!("expected set_state_if, got {other:?}"),
        }
        match peer.expect_next().await {
            ClientMessage::Command {
                request_id,
                room,
                kind,
                payload,
                idempotency_key,
            } => {
                assert_eq!(idempotency_key.as_deref(), Some("k1"));
                // Another member's event first, then the sender's own, then the ack.
                peer.send(&ServerMessage::MemberJoined {
                    room,
                    seq: Seq(7),
                    member: member(3, "cy"),
                })
                .await;
                peer.send(&ServerMessage::CommandEvent {
                    room,
                    seq: Seq(8),
                    author: MemberId(2),
                    kind,
                    payload,
                    idempotency_key,
                })
                .await;
                peer.send(&ServerMessage::CommandAck {
                    request_id,
                    room,
                    seq: Seq(8),
                    duplicate: false,
                })
                .await;
            }
            other => panic!("expected a command, got {other:?}"),
        }
        match peer.expect_next().await {
            ClientMessage::DeleteState {
                request_id, room, ..
            } => {
                peer.send(&ServerMessage::StateChanged {
                    room,
                    seq: Seq(9),
                    key: "title".into(),
                    value: None,
                    version: 5,
                    author: MemberId(2),
                })
                .await;
                peer.send(&ServerMessage::MemberLeft {
                    room,
                    seq: Seq(10),
                    member: MemberId(1),
                    reason: LeaveReason::Disconnected,
                })
                .await;
                peer.send(&ServerMessage::StateAck {
                    request_id,
                    room,
                    version: 5,
                    seq: Seq(9),
                })
                .await;
            }
            other => panic!("expected delete_state, got {other:?}"),
        }
        match peer.expect_next().await {
            ClientMessage::Leave { request_id, room } => {
                assert_eq!(room, SLOT);
                peer.send(&ServerMessage::Left { request_id, room }).await;
            }
            other => panic!("expected leave, got {other:?}"),
        }
        assert!(peer.next().await.is_none());
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::named("bob"))
        .await
        .expect("join");
    assert_eq!(room.id(), "lobby");
    assert_eq!(room.slot(), SLOT);
    assert_eq!(room.me(), MemberId(2));
    assert_eq!(room.role(), Role::Editor);
    assert_eq!(room.last_seq(), Seq(5));
    assert_eq!(room.members().len(), 2);
    assert_eq!(room.members()[1].display.name, "bob");
    assert_eq!(
        room.state("title").map(|v| v.value),
        Some(Bytes::from_static(b"Hello"))
    );
    let mut events = room.events();
    let mut commands = room.commands();

    let ack = room.set_state("title", b"Hi").await.expect("set_state");
    assert_eq!((ack.version, ack.seq), (4, Seq(6)));
    // The replica already holds the write when the ack resolves.
    let title = room.state("title").expect("title");
    assert_eq!((title.value.as_ref(), title.version), (&b"Hi"[..], 4));
    assert_eq!(room.state_version(), 4);

    let err = room
        .set_state_if("title", b"x", 1)
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert_eq!(err.conflict_version(), Some(4));

    let ack = room
        .send_command("chat", b"hi all", Some("k1"))
        .await
        .expect("command");
    assert_eq!((ack.seq, ack.duplicate), (Seq(8), false));
    assert_eq!(room.members().len(), 3);

    room.delete_state("title").await.expect("delete");
    assert_eq!(room.state("title"), None);
    assert_eq!(room.last_seq(), Seq(10));
    assert_eq!(
        room.members().iter().map(|m| m.id.0).collect::<Vec<_>>(),
        [2, 3]
    );

    // Every event, in order, on the events channel.
    let mut seqs = Vec::new();
    while let Ok(event) = events.try_recv() {
        seqs.push(event.seq().0);
        if let RoomEvent::MemberLeft { info, reason, .. } = &event {
            assert_eq!(info.as_ref().map(|m| m.display.name.as_str()), Some("ada"));
            assert_eq!(*reason, LeaveReason::Disconnected);
        }
    }
    assert_eq!(seqs, [6, 7, 8, 9, 10]);
    let command = commands.try_recv().expect("command event");
    assert_eq!(
        (command.kind.as_str(), command.payload.as_ref()),
        ("chat", &b"hi all"[..])
    );
    assert!(commands.try_recv().is_err());

    let room2 = room.clone();
    room.leave().await.expect("leave");
    assert!(!room2.is_joined());
    assert!(matches!(
        room2.set_state("a", b"b").await,
        Err(RequestError::NotJoined)
    ));
    // The streams of a left room end.
    assert!(matches!(
        events.recv().await,
        Err(tokio::sync::broadcast::error::RecvError::Closed)
    ));
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn ticks_both_ways() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        answer_join(&mut peer).await;
        // The client's tick arrives with its own member id as sender.
        let datagram = tokio::time::timeout(Duration::from_secs(5), peer.conn.receive_datagram())
            .await
            .expect("a tick in time")
            .expect("datagram");
        let payload = datagram.payload();
        match decode_datagram(&payload, &Limits::default()).expect("tick") {
            Datagram::Tick(tick) => {
                assert_eq!((tick.room, tick.sender, tick.seq), (SLOT, MemberId(2), 0));
                assert_eq!(tick.payload, b"xy");
            }
        }
        // Ticks to the client: from member 1 (routed), from an unknown member and
        // for an unknown room (both dropped).
        for (room, sender, seq) in [(SLOT, 9, 1), (RoomSlot(99), 1, 2), (SLOT, 1, 3)] {
            let bytes = encode_datagram(&Datagram::Tick(Tick {
                room,
                sender: MemberId(sender),
                seq,
                payload: b"pos",
            }));
            peer.conn.send_datagram(&bytes).expect("send datagram");
        }
        // The client closes once it has the tick.
        wait_gone(peer).await;
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let mut ticks = room.ticks();
    assert_eq!(room.send_tick(b"xy").expect("tick"), 0);
    let max = client.limits().max_tick_payload_bytes as usize;
    assert!(matches!(
        room.send_tick(&vec![0; max + 1]),
        Err(TickError::PayloadTooLarge { .. })
    ));
    let tick = tokio::time::timeout(Duration::from_secs(5), ticks.recv())
        .await
        .expect("tick in time")
        .expect("tick");
    assert_eq!((tick.sender, tick.seq), (MemberId(1), 3));
    assert_eq!(tick.payload.as_ref(), b"pos");
    assert!(ticks.try_recv().is_none());
    // A refused tick did not use a sequence number.
    assert_eq!(room.send_tick(b"z").expect("tick"), 1);
    client.close().await;
    assert!(matches!(
        room.send_tick(b"z"),
        Err(TickError::Closed(CloseReason::Local))
    ));
    assert!(ticks.recv().await.is_none());
    server.await.expect("server script");
}

#[tokio::test]
async fn fatal_error_fails_pending_requests_and_ends_streams() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        answer_join(&mut peer).await;
        // A non-fatal error without request id, then the fatal one and the close.
        peer.send(&ServerMessage::Error(ErrorFrame::new(
            None,
            ErrorCode::InvalidSender,
            "bad tick",
        )))
        .await;
        // Wait for a command, then disconnect the client instead of answering.
        assert!(matches!(
            peer.expect_next().await,
            ClientMessage::Command { .. }
        ));
        peer.send(&ServerMessage::Error(ErrorFrame::new(
            None,
            ErrorCode::SlowConsumer,
            "control stream queue full",
        )))
        .await;
        // Give the frame time to reach the client before the close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.conn.close(VarInt::from_u32(400), b"slow consumer");
        wait_gone(peer).await;
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let mut errors = client.errors();
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let mut events = room.events();
    let err = room
        .send_command("chat", b"?", None)
        .await
        .expect_err("connection closes");
    let reason = match err {
        RequestError::Closed(reason) => reason,
        other => panic!("expected Closed, got {other:?}"),
    };
    assert_eq!(reason.code(), Some(ErrorCode::SlowConsumer));
    match &reason {
        CloseReason::Server(frame) => assert_eq!(frame.message, "control stream queue full"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(client.closed().await, reason);
    assert_eq!(
        errors.recv().await.expect("error").code,
        ErrorCode::InvalidSender
    );
    assert_eq!(
        errors.recv().await.expect("error").code,
        ErrorCode::SlowConsumer
    );
    assert!(matches!(
        events.recv().await,
        Err(tokio::sync::broadcast::error::RecvError::Closed)
    ));
    assert!(!room.is_joined());
    assert!(matches!(
        client.join("other", JoinOptions::default()).await,
        Err(RequestError::Closed(_))
    ));
    server.await.expect("server script");
}

#[tokio::test]
async fn abandoned_join_is_left_and_limits_are_checked_locally() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        // Answer the join only after the client has stopped waiting for it.
        let request_id = match peer.expect_next().await {
            ClientMessage::Join { request_id, .. } => request_id,
            other => panic!("expected join, got {other:?}"),
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        peer.send(&ServerMessage::Joined {
            request_id,
            snapshot: snapshot("slow", DisplayInfo::default()),
        })
        .await;
        // The client must not keep a membership nobody holds: it leaves.
        match peer.expect_next().await {
            ClientMessage::Leave { room, .. } => assert_eq!(room, SLOT),
            other => panic!("expected the abandoned room to be left, got {other:?}"),
        }
        assert!(peer.next().await.is_none());
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    // Over the announced limit: refused locally, never sent.
    let long = "r".repeat(client.limits().max_room_id_len as usize + 1);
    assert!(matches!(
        client.join(&long, JoinOptions::default()).await,
        Err(RequestError::Limit(_))
    ));
    let join = client.join("slow", JoinOptions::default());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), join)
            .await
            .is_err(),
        "the join is abandoned before its reply"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn request_timeout_without_reply() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        let _join = peer.expect_next().await;
        assert!(peer.next().await.is_none());
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            request_timeout: Duration::from_millis(200),
            ..options()
        },
    )
    .await
    .expect("connect");
    assert!(matches!(
        client.join("lobby", JoinOptions::default()).await,
        Err(RequestError::Timeout)
    ));
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn undecodable_frame_is_a_protocol_error() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        let _join = peer.expect_next().await;
        // A known tag with a truncated body.
        peer.send_raw(&[2, 1, 0xff]).await;
        wait_gone(peer).await;
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    assert!(matches!(
        client.join("lobby", JoinOptions::default()).await,
        Err(RequestError::Closed(CloseReason::Protocol(_)))
    ));
    match client.closed().await {
        CloseReason::Protocol(msg) => assert!(msg.contains("undecodable"), "{msg}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    server.await.expect("server script");
}

#[tokio::test]
async fn bad_urls_and_trust_fail_before_connecting() {
    assert!(matches!(
        Client::connect("http://127.0.0.1:4433/chorus", options()).await,
        Err(ConnectError::Url(_))
    ));
    assert!(matches!(
        Client::connect(
            "https://127.0.0.1:4433/chorus",
            ConnectOptions::with_cert_hashes([])
        )
        .await,
        Err(ConnectError::Tls(_))
    ));
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let (url, server) = mock(|peer| async move {
        drop(peer);
    })
    .await;
    // Trust a different hash than the mock's certificate.
    let options = ConnectOptions {
        handshake_timeout: Duration::from_secs(5),
        ..ConnectOptions::with_cert_hashes([[0u8; 32]])
    };
    let result = Client::connect(
        &url,
        ConnectOptions {
            transport: TransportChoice::WebTransport,
            ..options.clone()
        },
    )
    .await;
    assert!(
        matches!(result, Err(ConnectError::Connecting(_))),
        "{result:?}"
    );
    server.abort();
    // With the default fallback, WebSocket is tried too (nothing listens on TCP
    // there) and the error says what each attempt met.
    let (url, server) = mock(|peer| async move {
        drop(peer);
    })
    .await;
    match Client::connect(&url, options).await {
        Err(ConnectError::AllTransportsFailed {
            webtransport,
            websocket,
        }) => {
            assert!(
                matches!(*webtransport, ConnectError::Connecting(ref m) if m.contains("certificate")),
                "{webtransport:?}"
            );
            assert!(
                matches!(*websocket, ConnectError::Connecting(_)),
                "{websocket:?}"
            );
        }
        other => panic!("expected both attempts to fail, got {other:?}"),
    }
    server.abort();
}

#[tokio::test]
async fn local_close_fails_pending_requests() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        answer_join(&mut peer).await;
        // Read the command and never answer it.
        assert!(matches!(
            peer.expect_next().await,
            ClientMessage::Command { .. }
        ));
        let reason = tokio::time::timeout(Duration::from_secs(5), peer.conn.closed())
            .await
            .expect("client closes");
        match reason {
            wtransport::error::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.code().into_inner(), 0)
            }
            other => panic!("expected a clean close, got {other:?}"),
        }
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let mut commands = room.commands();
    let pending = tokio::spawn({
        let room = room.clone();
        async move { room.send_command("chat", b"never acked", None).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.close().await;
    assert!(matches!(
        pending.await.expect("task"),
        Err(RequestError::Closed(CloseReason::Local))
    ));
    assert!(matches!(
        commands.recv().await,
        Err(tokio::sync::broadcast::error::RecvError::Closed)
    ));
    assert!(matches!(
        room.delete_state("x").await,
        Err(RequestError::Closed(CloseReason::Local))
    ));
    server.await.expect("server script");
}

#[tokio::test]
async fn api_key_rate_limits_and_unknown_hello_extensions() {
    let rates = RateLimits {
        commands: Rate {
            per_second: 3,
            burst: 6,
        },
        ..RateLimits::default()
    };
    let announced = rates.clone();
    let (url, server) = mock(|mut peer| async move {
        assert_eq!(
            read_hello(&mut peer).await,
            vec![HelloOption::ApiKey("key-1".into())]
        );
        peer.send(&ServerMessage::Hello(ServerHello {
            rate_limits: announced,
            // A kind from a later 2.x server: the client skips it.
            extensions: vec![HelloExtension {
                kind: 900,
                data: vec![1, 2, 3],
            }],
            ..hello()
        }))
        .await;
        assert!(peer.next().await.is_none());
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            api_key: Some("key-1".into()),
            ..options()
        },
    )
    .await
    .expect("connect");
    assert_eq!(client.rate_limits(), &rates);
    assert_eq!(client.server_hello().extensions.len(), 1);
    assert_eq!(
        client.clock().samples,
        4,
        "the session works after the hello"
    );
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn refused_handshake_says_when_to_retry() {
    let (url, server) = mock(|mut peer| async move {
        assert_eq!(
            read_hello(&mut peer).await,
            vec![HelloOption::ApiKey("key-2".into())]
        );
        peer.send(&retry_error(None, ErrorCode::TooManyConnections, 2500))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.conn
            .close(VarInt::from_u32(403), b"too many connections");
        wait_gone(peer).await;
    })
    .await;
    let options = ConnectOptions {
        api_key: Some("key-2".into()),
        ..options()
    };
    match Client::connect(&url, options).await {
        Err(e @ ConnectError::Server(_)) => {
            assert_eq!(e.retry_after(), Some(Duration::from_millis(2500)));
            let ConnectError::Server(frame) = e else {
                unreachable!()
            };
            assert_eq!(frame.code, ErrorCode::TooManyConnections);
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    server.await.expect("server script");
}

#[tokio::test]
async fn join_options_invite_codes_and_bans() {
    let policy = PermissionPolicy {
        rules: vec![PermissionRule {
            action: Action::SetState,
            scope: "board/".into(),
            roles: vec![Role::Host],
        }],
    };
    let room_policy = policy.clone();
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        let expected = vec![
            JoinOption::CreateIfMissing,
            JoinOption::MaxMembers(4),
            JoinOption::Password("pw".into()),
            JoinOption::Token("tok".into()),
            JoinOption::Policy(room_policy.clone()),
            JoinOption::Template("quiz".into()),
        ];
        // An empty id with create: the server picks the room's id.
        answer_join_with(&mut peer, expected, |room_id, display| {
            assert_eq!(room_id, "");
            RoomSnapshot {
                policy: room_policy,
                ..snapshot("K7QX2MNP", display)
            }
        })
        .await;
        // A second join, refused: this client was kicked from there.
        match peer.expect_next().await {
            ClientMessage::Join {
                request_id,
                room_id,
                options,
                ..
            } => {
                assert_eq!(room_id, "stage");
                assert_eq!(options, vec![JoinOption::CreateIfMissing]);
                peer.send(&retry_error(Some(request_id), ErrorCode::Banned, 59_000))
                    .await;
            }
            other => panic!("expected join, got {other:?}"),
        }
        // Closing leaves the joined room first.
        assert_eq!(answer_leaves_until_gone(&mut peer).await, [SLOT]);
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let join = JoinOptions {
        max_members: Some(4),
        ..JoinOptions::named("bob")
            .with_password("pw")
            .with_token("tok")
            .with_policy(policy.clone())
            .with_template("quiz")
    };
    let room = client.join("", join).await.expect("join");
    assert_eq!(room.id(), "K7QX2MNP");
    assert_eq!(room.policy(), policy);
    // An editor here: the room's rule keeps `board/` for hosts, the defaults
    // give the rest.
    assert_eq!(room.role(), Role::Editor);
    assert!(!room.can(Action::SetState, "board/1"));
    assert!(room.can(Action::SetState, "title"));
    assert!(room.can(Action::SendTicks, ""));
    assert!(!room.can(Action::Kick, ""));
    let err = client
        .join("stage", JoinOptions::default())
        .await
        .expect_err("banned");
    assert_eq!(err.code(), Some(ErrorCode::Banned));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(59)));
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn roles_kicks_and_passwords_resolve_by_ack_after_their_events() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        answer_join_with(&mut peer, vec![JoinOption::CreateIfMissing], host_snapshot).await;
        let request_id = expect_request(
            &mut peer,
            ClientMessage::SetRole {
                request_id: 0,
                room: SLOT,
                member: MemberId(3),
                role: Role::Viewer,
            },
        )
        .await;
        peer.send(&ServerMessage::RoleChanged {
            room: SLOT,
            seq: Seq(6),
            member: MemberId(3),
            role: Role::Viewer,
            by: MemberId(2),
        })
        .await;
        peer.send(&ServerMessage::Ack {
            request_id,
            room: SLOT,
            seq: Seq(6),
        })
        .await;
        let request_id = expect_request(
            &mut peer,
            ClientMessage::Kick {
                request_id: 0,
                room: SLOT,
                member: MemberId(3),
                reason: "spam".into(),
            },
        )
        .await;
        peer.send(&ServerMessage::MemberKicked {
            room: SLOT,
            seq: Seq(7),
            member: MemberId(3),
            by: MemberId(2),
            reason: "spam".into(),
            ban_ms: 60_000,
        })
        .await;
        peer.send(&ServerMessage::Ack {
            request_id,
            room: SLOT,
            seq: Seq(7),
        })
        .await;
        // Kicking the other host: refused, nothing happens.
        let request_id = expect_request(
            &mut peer,
            ClientMessage::Kick {
                request_id: 0,
                room: SLOT,
                member: MemberId(1),
                reason: String::new(),
            },
        )
        .await;
        peer.send(&ServerMessage::Error(ErrorFrame::new(
            Some(request_id),
            ErrorCode::Forbidden,
            "member 1 outranks you",
        )))
        .await;
        // A password: first over the budget, then removed.
        let request_id = expect_request(
            &mut peer,
            ClientMessage::SetPassword {
                request_id: 0,
                room: SLOT,
                password: Some("pw".into()),
            },
        )
        .await;
        peer.send(&retry_error(Some(request_id), ErrorCode::RateLimited, 1200))
            .await;
        let request_id = expect_request(
            &mut peer,
            ClientMessage::SetPassword {
                request_id: 0,
                room: SLOT,
                password: None,
            },
        )
        .await;
        // No event: the ack carries the room's last seq.
        peer.send(&ServerMessage::Ack {
            request_id,
            room: SLOT,
            seq: Seq(7),
        })
        .await;
        // This client steps down; seq 8 went to a room event it missed.
        let request_id = expect_request(
            &mut peer,
            ClientMessage::SetRole {
                request_id: 0,
                room: SLOT,
                member: MemberId(2),
                role: Role::Editor,
            },
        )
        .await;
        peer.send(&ServerMessage::RoleChanged {
            room: SLOT,
            seq: Seq(9),
            member: MemberId(2),
            role: Role::Editor,
            by: MemberId(2),
        })
        .await;
        peer.send(&ServerMessage::Ack {
            request_id,
            room: SLOT,
            seq: Seq(9),
        })
        .await;
        // Closing leaves the joined room first.
        assert_eq!(answer_leaves_until_gone(&mut peer).await, [SLOT]);
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let mut events = room.events();
    assert_eq!(room.role(), Role::Host);
    assert!(room.can(Action::Kick, "") && room.can(Action::GrantRoles, ""));

    let seq = room
        .set_role(MemberId(3), Role::Viewer)
        .await
        .expect("set_role");
    assert_eq!(seq, Seq(6));
    assert_eq!(room.member(MemberId(3)).map(|m| m.role), Some(Role::Viewer));

    assert_eq!(room.kick(MemberId(3), "spam").await.expect("kick"), Seq(7));
    assert_eq!(room.member(MemberId(3)), None);
    assert_eq!(room.last_seq(), Seq(7));

    let err = room.kick(MemberId(1), "").await.expect_err("forbidden");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    assert_eq!(err.retry_after(), None);
    assert_eq!(room.members().len(), 2);

    let err = room
        .set_password(Some("pw"))
        .await
        .expect_err("rate limited");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1200)));
    assert_eq!(room.set_password(None).await.expect("password"), Seq(7));

    assert_eq!(
        room.set_role(MemberId(2), Role::Editor)
            .await
            .expect("step down"),
        Seq(9)
    );
    assert_eq!(room.role(), Role::Editor);
    assert!(!room.can(Action::Kick, ""));
    assert!(room.can(Action::SetState, "title"));
    assert!(room.is_joined());

    // The events, in order; the kick tells who it was.
    match events.try_recv().expect("role event") {
        RoomEvent::RoleChanged {
            member, role, by, ..
        } => assert_eq!((member, role, by), (MemberId(3), Role::Viewer, MemberId(2))),
        other => panic!("unexpected {other:?}"),
    }
    match events.try_recv().expect("kick event") {
        RoomEvent::MemberKicked {
            member,
            info,
            by,
            reason,
            ban,
            seq,
        } => {
            assert_eq!((member, by, seq), (MemberId(3), MemberId(2), Seq(7)));
            assert_eq!(info.map(|m| m.display.name), Some("cy".into()));
            assert_eq!((reason.as_str(), ban), ("spam", Duration::from_secs(60)));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        events.try_recv(),
        Ok(RoomEvent::RoleChanged {
            member: MemberId(2),
            role: Role::Editor,
            seq: Seq(9),
            ..
        })
    ));
    assert!(events.try_recv().is_err());
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn closing_the_room_ends_it_but_not_the_connection() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        answer_join_with(&mut peer, vec![JoinOption::CreateIfMissing], host_snapshot).await;
        let request_id = expect_request(
            &mut peer,
            ClientMessage::CloseRoom {
                request_id: 0,
                room: SLOT,
                reason: "done".into(),
            },
        )
        .await;
        peer.send(&ServerMessage::RoomClosed {
            room: SLOT,
            seq: Seq(6),
            by: MemberId(2),
            reason: "done".into(),
        })
        .await;
        peer.send(&ServerMessage::Ack {
            request_id,
            room: SLOT,
            seq: Seq(6),
        })
        .await;
        // The connection goes on: another room.
        answer_join(&mut peer).await;
        // No Leave for the closed room, even when its handle is dropped.
        // Closing leaves the joined room first.
        assert_eq!(answer_leaves_until_gone(&mut peer).await, [SLOT]);
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let mut events = room.events();
    let mut ticks = room.ticks();
    assert_eq!(room.close_room("done").await.expect("close"), Seq(6));
    assert!(!room.is_joined());
    match events.recv().await {
        Ok(RoomEvent::RoomClosed { by, reason, seq }) => {
            assert_eq!((by, reason.as_str(), seq), (MemberId(2), "done", Seq(6)))
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(matches!(events.recv().await, Err(RecvError::Closed)));
    assert!(ticks.recv().await.is_none());
    assert!(room.members().is_empty());
    assert!(!room.can(Action::SendTicks, ""));
    assert!(matches!(
        room.set_state("a", b"b").await,
        Err(RequestError::NotJoined)
    ));
    assert!(matches!(
        room.close_room("again").await,
        Err(RequestError::NotJoined)
    ));
    assert!(matches!(room.send_tick(b"x"), Err(TickError::NotJoined)));
    drop(room);
    let next = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join again");
    assert!(next.is_joined());
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn being_kicked_ends_the_room_with_the_kick_as_last_event() {
    let (url, server) = mock(|mut peer| async move {
        greet(&mut peer).await;
        answer_join(&mut peer).await;
        match peer.expect_next().await {
            ClientMessage::Command {
                request_id,
                room,
                kind,
                payload,
                idempotency_key,
            } => {
                peer.send(&ServerMessage::CommandEvent {
                    room,
                    seq: Seq(6),
                    author: MemberId(2),
                    kind,
                    payload,
                    idempotency_key,
                })
                .await;
                peer.send(&ServerMessage::CommandAck {
                    request_id,
                    room,
                    seq: Seq(6),
                    duplicate: false,
                })
                .await;
            }
            other => panic!("expected a command, got {other:?}"),
        }
        // The host kicks this client.
        peer.send(&ServerMessage::MemberKicked {
            room: SLOT,
            seq: Seq(7),
            member: MemberId(2),
            by: MemberId(1),
            reason: "flooding".into(),
            ban_ms: 300_000,
        })
        .await;
        // Late events of that room are not applied any more.
        peer.send(&ServerMessage::MemberJoined {
            room: SLOT,
            seq: Seq(8),
            member: member(5, "eve"),
        })
        .await;
        // Nothing more from the client: no Leave for a room it was kicked from.
        assert!(peer.next().await.is_none());
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let mut events = room.events();
    room.send_command("chat", b"spam spam", None)
        .await
        .expect("command");
    assert!(matches!(
        events.recv().await,
        Ok(RoomEvent::Command(c)) if c.seq == Seq(6)
    ));
    match events.recv().await {
        Ok(RoomEvent::MemberKicked {
            member,
            by,
            reason,
            ban,
            seq,
            ..
        }) => {
            assert_eq!((member, by, seq), (room.me(), MemberId(1), Seq(7)));
            assert_eq!(reason, "flooding");
            assert_eq!(ban, Duration::from_secs(300));
        }
        other => panic!("expected the kick, got {other:?}"),
    }
    assert!(matches!(events.recv().await, Err(RecvError::Closed)));
    assert!(!room.is_joined());
    assert_eq!(room.last_seq(), Seq(7));
    assert_eq!(room.member(MemberId(5)), None);
    assert!(room.member(room.me()).is_none());
    assert!(!room.can(Action::SendTicks, ""));
    assert!(matches!(
        room.kick(MemberId(1), "revenge").await,
        Err(RequestError::NotJoined)
    ));
    assert!(matches!(
        room.send_command("chat", b"?", None).await,
        Err(RequestError::NotJoined)
    ));
    // The connection itself is fine.
    assert!(!client.is_closed());
    drop(room);
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.close().await;
    server.await.expect("server script");
}

/// Starts a mock server whose script accepts sessions itself (for a client
/// that reconnects); returns its URL.
async fn mock_endpoint<F, Fut>(script: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(Endpoint<wtransport::endpoint::endpoint_side::Server>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let identity = Identity::new(
        CertificateChain::load_pemfile(CERT).await.expect("cert"),
        PrivateKey::load_pemfile(KEY).await.expect("key"),
    );
    let config = ServerConfig::builder()
        .with_bind_address(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_identity(identity)
        .build();
    let endpoint = Endpoint::server(config).expect("server endpoint");
    let port = endpoint.local_addr().expect("addr").port();
    let task = tokio::spawn(script(endpoint));
    (format!("https://127.0.0.1:{port}/chorus"), task)
}

/// Reads one whole unidirectional stream the client opened.
async fn read_uni(peer: &Peer) -> Vec<u8> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), peer.conn.accept_uni())
        .await
        .expect("a pack stream in time")
        .expect("pack stream");
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    while let Some(n) = stream.read(&mut buf).await.expect("pack stream read") {
        all.extend_from_slice(&buf[..n]);
    }
    all
}

#[tokio::test]
async fn packs_travel_on_streams_of_their_own() {
    let content: Vec<u8> = b"\x89PNG\r\n\x1a\n"
        .iter()
        .copied()
        .chain((0..70_000u32).map(|i| (i % 253) as u8))
        .collect();
    let hash = chorus_client::pack_hash(&content);
    let expected = content.clone();
    let (url, server) = mock(move |mut peer| async move {
        greet(&mut peer).await;
        answer_join(&mut peer).await;
        let info = match peer.expect_next().await {
            ClientMessage::PackUpload {
                request_id,
                room,
                hash: announced,
                name,
                media_type,
                size,
            } => {
                assert_eq!((room, announced.as_slice()), (SLOT, &hash[..]));
                peer.send(&ServerMessage::PackUploadReady {
                    request_id,
                    hash: hash.to_vec(),
                    offset: 0,
                })
                .await;
                PackInfo {
                    hash: hash.to_vec(),
                    name,
                    media_type,
                    size,
                    uploader: MemberId(2),
                }
            }
            other => panic!("expected pack_upload, got {other:?}"),
        };
        // The content: a stream with the upload header, then every byte.
        let stream = read_uni(&peer).await;
        let (header, rest) = split_pack_message(&stream).expect("header");
        assert_eq!(
            header,
            PackStreamHeader::Upload {
                hash: hash.to_vec(),
                offset: 0
            }
        );
        assert_eq!(rest, expected);
        peer.send(&ServerMessage::PackAvailable {
            room: SLOT,
            seq: Seq(6),
            pack: info.clone(),
        })
        .await;
        // The fetch: a stream the server opens.
        match peer.expect_next().await {
            ClientMessage::PackFetch {
                request_id, offset, ..
            } => {
                assert_eq!(offset, 0);
                let mut stream = peer
                    .conn
                    .open_uni()
                    .await
                    .expect("open")
                    .await
                    .expect("opened");
                let header = encode_pack_header(&PackStreamHeader::Download {
                    request_id,
                    hash: hash.to_vec(),
                    offset: 0,
                    size: info.size,
                });
                stream.write_all(&header).await.expect("header");
                stream.write_all(&expected).await.expect("content");
                stream.finish().await.expect("finish");
            }
            other => panic!("expected pack_fetch, got {other:?}"),
        }
        assert_eq!(answer_leaves_until_gone(&mut peer).await, [SLOT]);
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let pack = room
        .upload_pack("cover.png", "image/png", content.clone())
        .await
        .expect("upload");
    assert_eq!(
        (pack.size, pack.uploader),
        (content.len() as u64, MemberId(2))
    );
    let fetched = room.fetch_pack(&pack.hash).await.expect("fetch");
    assert_eq!(fetched, content);
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn a_webtransport_session_resumes_on_a_new_session() {
    let (url, server) = mock_endpoint(|endpoint| async move {
        let mut peer = accept_session(&endpoint).await;
        assert_eq!(read_hello(&mut peer).await, vec![]);
        peer.send(&ServerMessage::Hello(ServerHello {
            resume_token: "wt-token".into(),
            resume_window_ms: 60_000,
            ..hello()
        }))
        .await;
        answer_join(&mut peer).await;
        // A request, unanswered: a close without an error interrupts it; the
        // client comes back.
        assert!(matches!(
            peer.expect_next().await,
            ClientMessage::SetState { .. }
        ));
        peer.conn.close(VarInt::from_u32(0), b"restarting the edge");
        drop(peer);

        let mut peer = accept_session(&endpoint).await;
        match read_hello(&mut peer).await.as_slice() {
            [HelloOption::Resume { token, rooms }] => {
                assert_eq!(token, "wt-token");
                assert_eq!(rooms.len(), 1);
                assert_eq!((rooms[0].room, rooms[0].last_seq), (SLOT, Seq(5)));
            }
            other => panic!("expected a resume, got {other:?}"),
        }
        peer.send(&ServerMessage::Hello(ServerHello {
            session_id: 78,
            resume_token: "wt-token-2".into(),
            resume_window_ms: 60_000,
            ..hello()
        }))
        .await;
        peer.send(&ServerMessage::Resumed {
            room: SLOT,
            member: MemberId(2),
            snapshot: None,
        })
        .await;
        peer.send(&ServerMessage::StateChanged {
            room: SLOT,
            seq: Seq(6),
            key: "title".into(),
            value: Some(b"while away".to_vec()),
            version: 4,
            author: MemberId(1),
        })
        .await;
        assert_eq!(answer_leaves_until_gone(&mut peer).await, [SLOT]);
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            reconnect: chorus_client::ReconnectOptions {
                enabled: true,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(40),
            },
            ..options()
        },
    )
    .await
    .expect("connect");
    let mut connection = client.connection_events();
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let mut events = room.events();
    assert!(matches!(
        room.set_state("title", b"mine").await,
        Err(RequestError::ConnectionLost)
    ));
    let resumed = loop {
        match tokio::time::timeout(Duration::from_secs(10), connection.recv())
            .await
            .expect("in time")
            .expect("an event")
        {
            chorus_client::ConnectionEvent::Reconnecting { reason, .. } => {
                assert!(
                    matches!(reason, CloseReason::ServerClosed { .. }),
                    "{reason:?}"
                );
            }
            other => break other,
        }
    };
    match resumed {
        chorus_client::ConnectionEvent::Resumed {
            transport, rooms, ..
        } => {
            assert_eq!(transport, Transport::WebTransport);
            assert_eq!(
                rooms[0].outcome,
                chorus_client::RoomResume::Replayed {
                    since: Seq(5),
                    until: Seq(6)
                }
            );
        }
        other => panic!("expected resumed, got {other:?}"),
    }
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), events.recv()).await,
        Ok(Ok(RoomEvent::StateChanged { seq: Seq(6), .. }))
    ));
    assert_eq!(client.session_id(), 78);
    assert_eq!(
        room.state("title").map(|v| v.value),
        Some(Bytes::from_static(b"while away"))
    );
    client.close().await;
    server.await.expect("server script");
}
