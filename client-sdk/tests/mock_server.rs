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
    Client, CloseReason, ConnectError, ConnectOptions, JoinOptions, RequestError, RoomEvent,
    TickError, Transport, TransportChoice,
};
use chorus_protocol::{
    ClientMessage, Datagram, DisplayInfo, ErrorCode, ErrorDetail, ErrorFrame, FrameDecoder,
    LeaveReason, Limits, MemberId, PROTOCOL_VERSION, ProtocolVersion, RateLimits, Role, RoomSlot,
    RoomSnapshot, Seq, ServerHello, ServerMessage, ServerTime, StateEntry, Tick,
    decode_client_message, decode_datagram, encode_datagram, encode_frame,
};
use common::{CERT, KEY, SLOT, member, snapshot_with, unix_us};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
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

/// Handshake from the server's side: the client's hello, then ours.
async fn greet(peer: &mut Peer) {
    match peer.expect_next().await {
        ClientMessage::Hello(h) => {
            assert_eq!(h.version, PROTOCOL_VERSION);
            assert_eq!(h.capabilities, 0);
            assert!(h.client_name.starts_with("chorus-client-rust/"));
            assert_eq!(h.options, vec![], "no API key unless configured");
        }
        other => panic!("expected hello, got {other:?}"),
    }
    peer.send(&ServerMessage::Hello(hello())).await;
}

/// Answers the next message, which must be a join.
async fn answer_join(peer: &mut Peer) -> u32 {
    match peer.expect_next().await {
        ClientMessage::Join {
            request_id,
            room_id,
            display,
            options,
        } => {
            assert_eq!(options, vec![chorus_protocol::JoinOption::CreateIfMissing]);
            peer.send(&ServerMessage::Joined {
                request_id,
                snapshot: snapshot(&room_id, display),
            })
            .await;
            request_id
        }
        other => panic!("expected join, got {other:?}"),
    }
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
