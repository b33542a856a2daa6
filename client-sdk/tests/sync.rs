//! The sync semantics against a scripted WebSocket peer (not the real
//! server): resuming after a dropped connection (replay, snapshot, a room
//! lost, the whole session lost, the window passing), the keep-alive, direct
//! and broadcast messages, snapshots, ICE servers, the delegate, timelines,
//! and packs (upload from an offset, fetch with hash verification, a fetch
//! resumed after a drop). Each test plays the server's side message by
//! message, over plain `ws://` on loopback; one listener serves every
//! connection of a test, so a client can reconnect to it.
//!
//! No test asserts a duration: waits are bounded, and reconnect delays are
//! made small through the options.

mod common;

use bytes::Bytes;
use chorus_client::reconnect::next_delay;
use chorus_client::timeline::TimelineSchedule;
use chorus_client::{
    Audience, Client, CloseReason, CommandAck, ConnectOptions, ConnectionEvent, Delivery,
    ErrorCode, JoinOptions, MemberId, Presence, ReconnectOptions, RequestError, Room, RoomEvent,
    RoomResume, Seq, ServerTime, TickError, TimelineOptions, Transport, pack_hash,
};
use chorus_protocol::{
    ClientMessage, Datagram, DisplayInfo, ErrorDetail, ErrorFrame, HelloOption, IceServer, Limits,
    PROTOCOL_VERSION, PackInfo, PackStreamHeader, RateLimits, ResumeRoom, RoomSlot, RoomSnapshot,
    ServerHello, ServerMessage, StateEntry, TimelineOp, TimelineState, decode_client_message,
    decode_datagram, encode_pack_header, split_pack_message,
};
use common::{SLOT, member, snapshot_with, unix_us};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// The server side of one WebSocket connection: control messages decoded,
/// pings answered, ticks and pack-lane messages collected.
struct Peer {
    ws: WebSocketStream<TcpStream>,
    /// Tick datagrams received (lane 0x01 bodies).
    ticks: Vec<Vec<u8>>,
    /// Pack-lane messages received (lane 0x03 bodies), not yet taken.
    packs: Vec<Bytes>,
    /// Pings answered.
    pings: usize,
}

impl Peer {
    async fn send_lane(&mut self, lane: u8, body: &[u8]) {
        let mut m = vec![lane];
        m.extend_from_slice(body);
        self.ws
            .send(Message::Binary(Bytes::from(m)))
            .await
            .expect("peer write");
    }

    async fn send(&mut self, msg: &ServerMessage) {
        let body = chorus_protocol::codec::encode_message(msg);
        self.send_lane(0x00, &body).await;
    }

    /// Reads one WebSocket message: `Some(control message)`, or `None` for
    /// anything else (collected); `Err(())` when the connection ends.
    async fn read_one(&mut self) -> Result<Option<ClientMessage>, ()> {
        let message = match self.ws.next().await {
            Some(Ok(m)) => m,
            _ => return Err(()),
        };
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => return Err(()),
            _ => return Ok(None),
        };
        let (lane, body) = data.split_first().expect("no empty messages");
        match *lane {
            0x00 => {}
            0x01 => {
                self.ticks.push(body.to_vec());
                return Ok(None);
            }
            0x03 => {
                self.packs.push(data.slice(1..));
                return Ok(None);
            }
            other => panic!("client sent lane {other}"),
        }
        let msg = decode_client_message(body, &Limits::default()).expect("client message");
        if let ClientMessage::Ping { client_time } = msg {
            self.pings += 1;
            let t = unix_us();
            self.send(&ServerMessage::Pong {
                client_time,
                server_receive_time: ServerTime(t),
                server_send_time: ServerTime(t + 5),
            })
            .await;
            return Ok(None);
        }
        Ok(Some(msg))
    }

    /// The next control message that is not a ping; `None` when the
    /// connection ends.
    async fn next(&mut self) -> Option<ClientMessage> {
        loop {
            match self.read_one().await {
                Ok(Some(msg)) => return Some(msg),
                Ok(None) => {}
                Err(()) => return None,
            }
        }
    }

    async fn expect_next(&mut self) -> ClientMessage {
        tokio::time::timeout(WAIT, self.next())
            .await
            .expect("a client message in time")
            .expect("a client message")
    }

    /// Reads until `len` bytes of pack content for `hash` have come from
    /// `offset` on; checks each message's header (its own offset) and size.
    async fn read_pack_upload(&mut self, hash: &[u8], offset: u64, len: usize) -> Vec<u8> {
        let mut content = Vec::new();
        while content.len() < len {
            while self.packs.is_empty() {
                match tokio::time::timeout(WAIT, self.read_one()).await {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(other))) => panic!("expected pack content, got {other:?}"),
                    _ => panic!("the connection ended during the upload"),
                }
            }
            let message = self.packs.remove(0);
            let (header, chunk) = split_pack_message(&message).expect("pack message");
            assert_eq!(
                header,
                PackStreamHeader::Upload {
                    hash: hash.to_vec(),
                    offset: offset + content.len() as u64
                }
            );
            assert!(chunk.len() <= 16 * 1024, "chunk of {} bytes", chunk.len());
            content.extend_from_slice(chunk);
        }
        content
    }

    /// Sends `content` (pack `hash`, `size` bytes in all, from `offset`) as
    /// download messages of `chunk` bytes for fetch `request_id`.
    async fn send_download(
        &mut self,
        request_id: u32,
        hash: &[u8],
        offset: u64,
        size: u64,
        content: &[u8],
        chunk: usize,
    ) {
        let mut at = 0;
        loop {
            let end = (at + chunk).min(content.len());
            let mut message = encode_pack_header(&PackStreamHeader::Download {
                request_id,
                hash: hash.to_vec(),
                offset: offset + at as u64,
                size,
            });
            message.extend_from_slice(&content[at..end]);
            self.send_lane(0x03, &message).await;
            at = end;
            if at >= content.len() {
                return;
            }
        }
    }

    /// Answers the `Leave`s of a closing client until it has closed; returns
    /// the rooms left.
    async fn answer_leaves_until_gone(&mut self) -> Vec<RoomSlot> {
        let mut left = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout(WAIT, self.next()).await {
            match msg {
                ClientMessage::Leave { request_id, room } => {
                    left.push(room);
                    self.send(&ServerMessage::Left { request_id, room }).await;
                }
                other => panic!("expected a leave or the end, got {other:?}"),
            }
        }
        left
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self
            .ws
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            })))
            .await;
    }
}

/// The fake server: one listener, one connection after another.
struct Server {
    listener: TcpListener,
}

impl Server {
    async fn accept(&self) -> Peer {
        let (tcp, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("a connection in time")
            .expect("accept");
        // Selects the `chorus.v1` subprotocol the client offers.
        #[allow(clippy::result_large_err)] // tungstenite's callback signature
        let select = |_: &Request, mut response: Response| {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("chorus.v1"),
            );
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async(tcp, select)
            .await
            .expect("upgrade");
        Peer {
            ws,
            ticks: Vec::new(),
            packs: Vec::new(),
            pings: 0,
        }
    }
}

/// Starts the fake server running `script`; returns its URL.
async fn serve<F, Fut>(script: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(Server) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(script(Server { listener }));
    (format!("ws://127.0.0.1:{port}/chorus"), task)
}

/// A hello offering resumes with `token` for `window_ms`.
fn hello(session_id: u64, token: &str, window_ms: u64) -> ServerHello {
    ServerHello {
        version: PROTOCOL_VERSION,
        server_name: "mock-sync/0".into(),
        session_id,
        server_time: ServerTime(unix_us()),
        max_datagram_size: 0,
        limits: Limits::default(),
        rate_limits: RateLimits::default(),
        resume_token: token.into(),
        resume_window_ms: window_ms,
        extensions: vec![],
    }
}

/// Reads the client's hello and returns its options.
async fn read_hello(peer: &mut Peer) -> Vec<HelloOption> {
    match peer.expect_next().await {
        ClientMessage::Hello(h) => h.options,
        other => panic!("expected hello, got {other:?}"),
    }
}

/// The first connection's handshake: a hello without options, then ours.
async fn greet(peer: &mut Peer, token: &str, window_ms: u64) {
    assert_eq!(read_hello(peer).await, vec![]);
    peer.send(&ServerMessage::Hello(hello(1, token, window_ms)))
        .await;
}

/// A resumed connection's handshake: the hello must resume `token` listing
/// `rooms`; ours gives the next token.
async fn greet_resume(peer: &mut Peer, token: &str, rooms: Vec<ResumeRoom>, next: &str) {
    assert_eq!(
        read_hello(peer).await,
        vec![HelloOption::Resume {
            token: token.into(),
            rooms
        }]
    );
    peer.send(&ServerMessage::Hello(hello(2, next, 60_000)))
        .await;
}

/// Subscribes to the client's connection events, then joins "lobby" as "bo".
async fn watch_and_join_lobby(client: &Client) -> (broadcast::Receiver<ConnectionEvent>, Room) {
    let connection = client.connection_events();
    let room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    (connection, room)
}

/// The usual second connection: the client resumes session "token-1" with
/// the one room, seen up to seq 5; the server hands out "token-2".
async fn greet_lobby_resume(peer: &mut Peer) {
    greet_resume(
        peer,
        "token-1",
        vec![ResumeRoom {
            room: SLOT,
            last_seq: Seq(5),
        }],
        "token-2",
    )
    .await;
}

/// The room: member 1 ("ada") hosts, the client is member 2; `title` is
/// "Hello"; last seq 5.
fn snapshot(room_id: &str, display: DisplayInfo) -> RoomSnapshot {
    let title = StateEntry {
        key: "title".into(),
        value: b"Hello".to_vec(),
        version: 3,
        author: MemberId(1),
    };
    snapshot_with(room_id, display, vec![title], 3, Seq(5))
}

async fn answer_join(peer: &mut Peer) {
    match peer.expect_next().await {
        ClientMessage::Join {
            request_id,
            room_id,
            display,
            ..
        } => {
            peer.send(&ServerMessage::Joined {
                request_id,
                snapshot: snapshot(&room_id, display),
            })
            .await
        }
        other => panic!("expected join, got {other:?}"),
    }
}

fn options() -> ConnectOptions {
    ConnectOptions {
        handshake_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        clock_sync_pings: 2,
        clock_ping_spacing: Duration::ZERO,
        reconnect: ReconnectOptions {
            enabled: true,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        },
        ..ConnectOptions::default()
    }
}

/// The next connection event (bounded).
async fn next_event(events: &mut broadcast::Receiver<ConnectionEvent>) -> ConnectionEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a connection event in time")
        .expect("a connection event")
}

/// The next connection event that is not a reconnect attempt.
async fn next_outcome(events: &mut broadcast::Receiver<ConnectionEvent>) -> ConnectionEvent {
    loop {
        match next_event(events).await {
            ConnectionEvent::Reconnecting { .. } => {}
            other => return other,
        }
    }
}

/// The next room event (bounded).
async fn next_room_event(events: &mut broadcast::Receiver<RoomEvent>) -> RoomEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a room event in time")
        .expect("a room event")
}

#[tokio::test]
async fn resume_replays_missed_events_and_sends_idempotent_commands_again() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "token-1", 60_000).await;
        answer_join(&mut peer).await;
        // A command with a key and a state write, both in flight...
        let mut command = None;
        for _ in 0..2 {
            match peer.expect_next().await {
                c @ ClientMessage::Command { .. } => command = Some(c),
                ClientMessage::SetState { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // ...when the connection drops (no close frame, no error).
        drop(peer);

        let mut peer = server.accept().await;
        greet_lobby_resume(&mut peer).await;
        peer.send(&ServerMessage::Resumed {
            room: SLOT,
            member: MemberId(2),
            snapshot: None,
        })
        .await;
        // The missed events: the command had been applied; cy joined; ada's
        // connection dropped meanwhile.
        let Some(ClientMessage::Command {
            kind,
            payload,
            idempotency_key,
            ..
        }) = command
        else {
            panic!("no command");
        };
        peer.send(&ServerMessage::CommandEvent {
            room: SLOT,
            seq: Seq(6),
            author: MemberId(2),
            kind: kind.clone(),
            payload: payload.clone(),
            idempotency_key: idempotency_key.clone(),
        })
        .await;
        peer.send(&ServerMessage::MemberJoined {
            room: SLOT,
            seq: Seq(7),
            member: member(3, "cy"),
        })
        .await;
        peer.send(&ServerMessage::PresenceChanged {
            room: SLOT,
            seq: Seq(8),
            member: MemberId(1),
            presence: Presence::Reconnecting,
        })
        .await;
        // The command comes again, with its key: a duplicate.
        match peer.expect_next().await {
            ClientMessage::Command {
                request_id,
                room,
                kind: k,
                idempotency_key: key,
                ..
            } => {
                assert_eq!((room, k, key), (SLOT, kind, idempotency_key));
                peer.send(&ServerMessage::CommandAck {
                    request_id,
                    room,
                    seq: Seq(6),
                    duplicate: true,
                })
                .await;
            }
            other => panic!("expected the command again, got {other:?}"),
        }
        // Requests work on the new connection.
        match peer.expect_next().await {
            ClientMessage::SetState {
                request_id,
                room,
                key,
                value,
                ..
            } => {
                peer.send(&ServerMessage::StateChanged {
                    room,
                    seq: Seq(9),
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
                    seq: Seq(9),
                })
                .await;
            }
            other => panic!("expected set_state, got {other:?}"),
        }
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
        // A tick went out on the new connection.
        let Datagram::Tick(tick) = decode_datagram(
            peer.ticks.first().expect("a tick after the resume"),
            &Limits::default(),
        )
        .expect("tick");
        assert_eq!((tick.room, tick.sender), (SLOT, MemberId(2)));
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let (mut connection, room) = watch_and_join_lobby(&client).await;
    let mut events = room.events();
    let (command, state) = tokio::join!(
        room.send_command("chat", b"hi", Some("bo-1")),
        room.set_state("title", b"lost")
    );
    assert!(
        matches!(state, Err(RequestError::ConnectionLost)),
        "{state:?}"
    );
    assert!(state.expect_err("lost").is_connection_lost());
    // Exactly once: the server had it, the repeat is a duplicate.
    assert_eq!(
        command.expect("the command survives the drop"),
        CommandAck {
            seq: Seq(6),
            duplicate: true
        }
    );
    match next_event(&mut connection).await {
        ConnectionEvent::Reconnecting {
            attempt, reason, ..
        } => {
            assert_eq!(attempt, 1);
            assert!(matches!(reason, CloseReason::Transport(_)), "{reason:?}");
        }
        other => panic!("expected reconnecting, got {other:?}"),
    }
    match next_outcome(&mut connection).await {
        ConnectionEvent::Resumed {
            transport,
            session_resumed,
            rooms,
        } => {
            assert_eq!(transport, Transport::WebSocket);
            assert!(session_resumed);
            assert_eq!(rooms.len(), 1);
            assert_eq!((rooms[0].room_id.as_str(), rooms[0].slot), ("lobby", SLOT));
            assert_eq!(
                rooms[0].outcome,
                RoomResume::Replayed {
                    since: Seq(5),
                    until: Seq(8)
                }
            );
        }
        other => panic!("expected resumed, got {other:?}"),
    }
    // The same room handle: the replayed events, in order.
    match next_room_event(&mut events).await {
        RoomEvent::Command(c) => {
            assert_eq!(
                (c.seq, c.idempotency_key.as_deref()),
                (Seq(6), Some("bo-1"))
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        next_room_event(&mut events).await,
        RoomEvent::MemberJoined { seq: Seq(7), .. }
    ));
    assert_eq!(
        next_room_event(&mut events).await,
        RoomEvent::PresenceChanged {
            member: MemberId(1),
            presence: Presence::Reconnecting,
            seq: Seq(8)
        }
    );
    assert!(room.is_joined());
    assert!(client.is_connected());
    assert_eq!(client.session_id(), 2);
    assert_eq!(room.slot(), SLOT);
    assert_eq!(
        room.member(MemberId(1)).map(|m| m.presence),
        Some(Presence::Reconnecting)
    );
    assert_eq!(room.members().len(), 3);
    let ack = room.set_state("title", b"back").await.expect("set_state");
    assert_eq!(ack.seq, Seq(9));
    assert_eq!(room.last_seq(), Seq(9));
    room.send_tick(b"t").expect("ticks flow again");
    client.close().await;
    assert_eq!(client.closed().await, CloseReason::Local);
    server.await.expect("server script");
}

#[tokio::test]
async fn resume_with_a_snapshot_replaces_the_replica_and_leaves_unknown_rooms() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "token-1", 60_000).await;
        answer_join(&mut peer).await;
        drop(peer);

        let mut peer = server.accept().await;
        greet_lobby_resume(&mut peer).await;
        // A room this client does not know (a join lost in the drop): it
        // leaves it.
        peer.send(&ServerMessage::Resumed {
            room: RoomSlot(9),
            member: MemberId(4),
            snapshot: None,
        })
        .await;
        let mut fresh = snapshot(
            "lobby",
            DisplayInfo {
                name: "bo".into(),
                meta: vec![],
            },
        );
        fresh.state = vec![StateEntry {
            key: "title".into(),
            value: b"Much later".to_vec(),
            version: 40,
            author: MemberId(1),
        }];
        fresh.state_version = 40;
        fresh.last_seq = Seq(90);
        peer.send(&ServerMessage::Resumed {
            room: SLOT,
            member: MemberId(2),
            snapshot: Some(fresh),
        })
        .await;
        match peer.expect_next().await {
            ClientMessage::Leave { request_id, room } => {
                assert_eq!(room, RoomSlot(9));
                peer.send(&ServerMessage::Left { request_id, room }).await;
            }
            other => panic!("expected a leave of room 9, got {other:?}"),
        }
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let (mut connection, room) = watch_and_join_lobby(&client).await;
    let mut events = room.events();
    match next_outcome(&mut connection).await {
        ConnectionEvent::Resumed { rooms, .. } => {
            assert_eq!(rooms.len(), 1);
            assert_eq!(rooms[0].outcome, RoomResume::Snapshot);
        }
        other => panic!("expected resumed, got {other:?}"),
    }
    assert_eq!(
        next_room_event(&mut events).await,
        RoomEvent::Resynced { seq: Seq(90) }
    );
    assert_eq!(room.last_seq(), Seq(90));
    assert_eq!(
        room.state("title").map(|v| v.value),
        Some(Bytes::from_static(b"Much later"))
    );
    assert!(room.is_joined());
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn a_room_lost_in_the_resume_ends_but_the_client_goes_on() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "token-1", 60_000).await;
        answer_join(&mut peer).await;
        drop(peer);

        let mut peer = server.accept().await;
        greet_lobby_resume(&mut peer).await;
        peer.send(&ServerMessage::ResumeLost {
            room: SLOT,
            code: ErrorCode::NotJoined,
        })
        .await;
        // The client joins again.
        answer_join(&mut peer).await;
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let (mut connection, room) = watch_and_join_lobby(&client).await;
    let mut events = room.events();
    match next_outcome(&mut connection).await {
        ConnectionEvent::Resumed {
            session_resumed,
            rooms,
            ..
        } => {
            assert!(session_resumed);
            assert_eq!(rooms[0].outcome, RoomResume::Lost(ErrorCode::NotJoined));
        }
        other => panic!("expected resumed, got {other:?}"),
    }
    assert!(!room.is_joined());
    assert!(matches!(
        tokio::time::timeout(WAIT, events.recv()).await,
        Ok(Err(broadcast::error::RecvError::Closed))
    ));
    assert!(matches!(
        room.set_state("a", b"b").await,
        Err(RequestError::NotJoined)
    ));
    assert!(matches!(room.send_tick(b"x"), Err(TickError::NotJoined)));
    assert!(client.is_connected());
    let again = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join again");
    assert!(again.is_joined());
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn resume_failed_loses_every_room_on_a_working_connection() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "token-1", 60_000).await;
        answer_join(&mut peer).await;
        drop(peer);

        let mut peer = server.accept().await;
        greet_lobby_resume(&mut peer).await;
        peer.send(&ServerMessage::Error(ErrorFrame::new(
            None,
            ErrorCode::ResumeFailed,
            "unknown token",
        )))
        .await;
        // Nothing to leave.
        assert_eq!(peer.answer_leaves_until_gone().await, []);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let mut connection = client.connection_events();
    let mut errors = client.errors();
    let room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    match next_outcome(&mut connection).await {
        ConnectionEvent::Resumed {
            session_resumed,
            rooms,
            ..
        } => {
            assert!(!session_resumed);
            assert_eq!(rooms[0].outcome, RoomResume::Lost(ErrorCode::ResumeFailed));
        }
        other => panic!("expected resumed, got {other:?}"),
    }
    let error = tokio::time::timeout(WAIT, errors.recv())
        .await
        .expect("in time")
        .expect("the error");
    assert_eq!(error.code, ErrorCode::ResumeFailed);
    assert!(!room.is_joined());
    assert!(client.is_connected());
    assert!(!client.is_closed());
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn the_client_ends_when_the_resume_window_passes() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "token-1", 300).await;
        answer_join(&mut peer).await;
        drop(peer);
        // Nobody listens any more: every attempt is refused.
        drop(server);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let (mut connection, room) = watch_and_join_lobby(&client).await;
    let mut attempts = 0;
    let reason = loop {
        match next_event(&mut connection).await {
            ConnectionEvent::Reconnecting { attempt, .. } => {
                attempts += 1;
                assert_eq!(attempt, attempts);
            }
            ConnectionEvent::Lost { reason } => break reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(attempts >= 1);
    assert!(matches!(reason, CloseReason::Transport(_)), "{reason:?}");
    assert_eq!(
        tokio::time::timeout(WAIT, client.closed())
            .await
            .expect("ended"),
        reason
    );
    assert!(!client.is_connected());
    assert!(!room.is_joined());
    server.await.expect("server script");
}

#[tokio::test]
async fn a_silent_connection_is_taken_for_dropped_and_resumed() {
    let (url, server) = serve(|server| async move {
        let mut silent = server.accept().await;
        greet(&mut silent, "token-1", 60_000).await;
        answer_join(&mut silent).await;
        // From now on this connection reads nothing and answers nothing,
        // though it stays open: the client must notice by itself.
        let mut peer = server.accept().await;
        greet_lobby_resume(&mut peer).await;
        peer.send(&ServerMessage::Resumed {
            room: SLOT,
            member: MemberId(2),
            snapshot: None,
        })
        .await;
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
        drop(silent);
    })
    .await;

    let client = Client::connect(
        &url,
        ConnectOptions {
            ping_interval: Duration::from_millis(100),
            ..options()
        },
    )
    .await
    .expect("connect");
    let (mut connection, room) = watch_and_join_lobby(&client).await;
    match next_event(&mut connection).await {
        ConnectionEvent::Reconnecting { reason, .. } => match reason {
            CloseReason::Transport(text) => assert!(text.contains("nothing heard"), "{text}"),
            other => panic!("unexpected reason {other:?}"),
        },
        other => panic!("expected reconnecting, got {other:?}"),
    }
    assert!(matches!(
        next_outcome(&mut connection).await,
        ConnectionEvent::Resumed { .. }
    ));
    assert!(room.is_joined());
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn a_room_the_server_never_answers_on_resume_is_left_after_the_request_timeout() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "token-1", 60_000).await;
        answer_join(&mut peer).await;
        drop(peer);

        let mut peer = server.accept().await;
        greet_lobby_resume(&mut peer).await;
        // No `Resumed` for the room: the client gives up on it once its
        // request timeout has passed, and leaves it.
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
    })
    .await;

    let client = Client::connect(
        &url,
        ConnectOptions {
            // Short, as the test waits it out once; long enough that the join
            // itself is answered in time on a loaded machine.
            request_timeout: Duration::from_secs(1),
            ..options()
        },
    )
    .await
    .expect("connect");
    let (mut connection, room) = watch_and_join_lobby(&client).await;
    match next_outcome(&mut connection).await {
        ConnectionEvent::Resumed { rooms, .. } => {
            let outcomes: Vec<_> = rooms.iter().map(|r| r.outcome.clone()).collect();
            assert_eq!(outcomes, [RoomResume::Unanswered]);
        }
        other => panic!("expected resumed, got {other:?}"),
    }
    assert!(!room.is_joined());
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn a_close_with_an_error_is_not_resumed() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "token-1", 60_000).await;
        answer_join(&mut peer).await;
        peer.send(&ServerMessage::Error(ErrorFrame::new(
            None,
            ErrorCode::SlowConsumer,
            "too slow",
        )))
        .await;
        peer.close(4400, "slow consumer").await;
        while peer.next().await.is_some() {}
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let mut connection = client.connection_events();
    let _room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    let reason = tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("ended");
    assert_eq!(reason.code(), Some(ErrorCode::SlowConsumer));
    // No reconnect attempt: the end at once.
    assert_eq!(
        next_event(&mut connection).await,
        ConnectionEvent::Lost { reason }
    );
    server.await.expect("server script");
}

#[tokio::test]
async fn the_keep_alive_pings_on_its_own() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "", 0).await;
        // Two sync pings at connect, then keep-alives; nothing else.
        while peer.pings < 6 {
            match tokio::time::timeout(WAIT, peer.read_one()).await {
                Ok(Ok(None)) => {}
                other => panic!("expected pings, got {other:?}"),
            }
        }
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            ping_interval: Duration::from_millis(20),
            clock_sync_interval: Duration::ZERO,
            ..options()
        },
    )
    .await
    .expect("connect");
    server.await.expect("server script");
    // Each keep-alive pong was a clock sample.
    assert!(client.clock().samples >= 3, "{:?}", client.clock());
}

#[tokio::test]
async fn direct_broadcast_snapshot_ice_and_delegate() {
    let (url, server) = serve(|server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "", 0).await;
        answer_join(&mut peer).await;
        match peer.expect_next().await {
            ClientMessage::Direct {
                request_id,
                room,
                to,
                kind,
                payload,
            } => {
                assert_eq!(
                    (room, to, kind.as_str(), payload.as_slice()),
                    (SLOT, MemberId(1), "offer", &b"sdp"[..])
                );
                peer.send(&ServerMessage::Ack {
                    request_id,
                    room,
                    seq: Seq(5),
                })
                .await;
            }
            other => panic!("expected direct, got {other:?}"),
        }
        match peer.expect_next().await {
            ClientMessage::Broadcast {
                request_id,
                room,
                audience,
                kind,
                ..
            } => {
                assert_eq!((audience, kind.as_str()), (Audience::Others, "wave"));
                peer.send(&ServerMessage::Ack {
                    request_id,
                    room,
                    seq: Seq(5),
                })
                .await;
            }
            other => panic!("expected broadcast, got {other:?}"),
        }
        // Messages to the client.
        peer.send(&ServerMessage::DirectMessage {
            room: SLOT,
            from: MemberId(1),
            kind: "answer".into(),
            payload: b"sdp2".to_vec(),
        })
        .await;
        peer.send(&ServerMessage::BroadcastMessage {
            room: SLOT,
            from: MemberId(1),
            kind: "wave".into(),
            payload: vec![],
        })
        .await;
        match peer.expect_next().await {
            ClientMessage::RequestSnapshot { request_id, room } => {
                assert_eq!(room, SLOT);
                let mut s = snapshot(
                    "lobby",
                    DisplayInfo {
                        name: "bo".into(),
                        meta: vec![],
                    },
                );
                s.last_seq = Seq(30);
                s.members.push(member(3, "cy"));
                peer.send(&ServerMessage::Snapshot {
                    request_id,
                    snapshot: s,
                })
                .await;
            }
            other => panic!("expected request_snapshot, got {other:?}"),
        }
        // An event after the snapshot is applied on top of it.
        peer.send(&ServerMessage::MemberLeft {
            room: SLOT,
            seq: Seq(31),
            member: MemberId(3),
            reason: chorus_protocol::LeaveReason::Left,
        })
        .await;
        match peer.expect_next().await {
            ClientMessage::GetIceServers { request_id, room } => {
                assert_eq!(room, SLOT);
                peer.send(&ServerMessage::IceServers {
                    request_id,
                    servers: vec![IceServer {
                        urls: vec!["turn:turn.example:3478".into()],
                        username: Some("u".into()),
                        credential: Some("c".into()),
                    }],
                    expires: ServerTime(77),
                })
                .await;
            }
            other => panic!("expected get_ice_servers, got {other:?}"),
        }
        match peer.expect_next().await {
            ClientMessage::SetDelegate {
                request_id,
                room,
                member,
            } => {
                assert_eq!(member, Some(MemberId(1)));
                peer.send(&ServerMessage::Ack {
                    request_id,
                    room,
                    seq: Seq(31),
                })
                .await;
            }
            other => panic!("expected set_delegate, got {other:?}"),
        }
        match peer.expect_next().await {
            ClientMessage::Direct { request_id, .. } => {
                peer.send(&ServerMessage::Error(ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::NotJoined,
                    "member 9 is not here",
                )))
                .await;
            }
            other => panic!("expected direct, got {other:?}"),
        }
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    let mut messages = room.messages();
    let mut events = room.events();
    room.send_direct(MemberId(1), "offer", b"sdp")
        .await
        .expect("direct");
    room.broadcast(Audience::Others, "wave", b"")
        .await
        .expect("broadcast");
    let first = tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(
        (first.from, first.delivery, first.kind.as_str()),
        (MemberId(1), Delivery::Direct, "answer")
    );
    assert_eq!(first.payload, Bytes::from_static(b"sdp2"));
    let second = tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(second.delivery, Delivery::Broadcast);
    assert_eq!(messages.dropped(), 0);
    // Messages are not room events.
    assert!(events.try_recv().is_err());

    let view = room.request_snapshot().await.expect("snapshot");
    assert_eq!((view.last_seq, view.members.len()), (Seq(30), 3));
    assert_eq!(
        next_room_event(&mut events).await,
        RoomEvent::Resynced { seq: Seq(30) }
    );
    let ice = room.ice_servers().await.expect("ice servers");
    assert_eq!(ice.expires, ServerTime(77));
    assert_eq!(ice.servers[0].username.as_deref(), Some("u"));
    // The leave after the snapshot came in order.
    assert!(matches!(
        next_room_event(&mut events).await,
        RoomEvent::MemberLeft { seq: Seq(31), .. }
    ));
    assert_eq!(room.members().len(), 2);
    assert_eq!(
        room.set_delegate(Some(MemberId(1)))
            .await
            .expect("delegate"),
        Seq(31)
    );
    let refused = room
        .send_direct(MemberId(9), "offer", b"")
        .await
        .expect_err("absent member");
    assert_eq!(refused.code(), Some(ErrorCode::NotJoined));
    client.close().await;
    server.await.expect("server script");
}

/// A timeline state of "song".
fn song(seq: u64, playing: bool, anchor: ServerTime, position_us: u64) -> TimelineState {
    TimelineState {
        name: "song".into(),
        playing,
        rate_ppm: 1_000_000,
        anchor_time: anchor,
        anchor_position_us: position_us,
        tempo_mbpm: Some(96_000),
        seq: Seq(seq),
    }
}

#[tokio::test]
async fn timelines_follow_the_server_clock_and_apply_scheduled_changes_at_their_anchor() {
    // Playing since a second ago; a pause at 100 s scheduled 99 s from now.
    let start = ServerTime(unix_us() - 1_000_000);
    let pause_at = ServerTime(start.0 + 100_000_000);
    let (url, server) = serve(move |server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "", 0).await;
        answer_join(&mut peer).await;
        match peer.expect_next().await {
            ClientMessage::Timeline {
                request_id,
                room,
                name,
                op,
                at,
                expected_seq,
            } => {
                assert_eq!(
                    (name.as_str(), op, at, expected_seq),
                    ("song", TimelineOp::Play, Some(start), Some(Seq(0)))
                );
                peer.send(&ServerMessage::TimelineChanged {
                    room,
                    seq: Seq(6),
                    timeline: song(6, true, start, 0),
                    by: MemberId(2),
                })
                .await;
                peer.send(&ServerMessage::Ack {
                    request_id,
                    room,
                    seq: Seq(6),
                })
                .await;
            }
            other => panic!("expected timeline, got {other:?}"),
        }
        // Someone else schedules the pause.
        peer.send(&ServerMessage::TimelineChanged {
            room: SLOT,
            seq: Seq(7),
            timeline: song(7, false, pause_at, 100_000_000),
            by: MemberId(1),
        })
        .await;
        // A seek that expected the play's seq: too late.
        match peer.expect_next().await {
            ClientMessage::Timeline {
                request_id,
                op,
                expected_seq,
                ..
            } => {
                assert_eq!(
                    op,
                    TimelineOp::Seek {
                        position_us: 5_000_000
                    }
                );
                assert_eq!(expected_seq, Some(Seq(6)));
                peer.send(&ServerMessage::Error(
                    ErrorFrame::new(Some(request_id), ErrorCode::Conflict, "changed at 7")
                        .with_detail(ErrorDetail::Sequence {
                            current_seq: Seq(7),
                        }),
                ))
                .await;
            }
            other => panic!("expected timeline, got {other:?}"),
        }
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    let mut events = room.events();
    assert_eq!(room.timeline("song"), None);
    assert_eq!(room.timeline_seq("song"), Seq(0));
    let seq = room
        .play("song", TimelineOptions::at(start).if_seq(Seq(0)))
        .await
        .expect("play");
    assert_eq!(seq, Seq(6));
    assert!(matches!(
        next_room_event(&mut events).await,
        RoomEvent::TimelineChanged { seq: Seq(6), .. }
    ));
    match next_room_event(&mut events).await {
        RoomEvent::TimelineChanged { timeline, by, seq } => {
            assert_eq!((timeline.playing, by, seq), (false, MemberId(1), Seq(7)));
        }
        other => panic!("unexpected {other:?}"),
    }
    // The pause is known but not in force: still playing, about a second in.
    assert_eq!(room.timeline_seq("song"), Seq(7));
    let now = room.timeline("song").expect("in force now");
    assert!(now.playing);
    assert_eq!(now.seq, Seq(6));
    let position = room.timeline_position("song").expect("a position");
    assert!(
        position >= Duration::from_millis(900) && position < Duration::from_secs(100),
        "{position:?}"
    );
    // The position at given server times, across the scheduled pause.
    let at = |us: u64| room.timeline_position_at("song", ServerTime(start.0 + us));
    assert_eq!(at(50_000_000), Some(Duration::from_secs(50)));
    assert_eq!(at(99_999_999), Some(Duration::from_micros(99_999_999)));
    assert_eq!(at(100_000_000), Some(Duration::from_secs(100)));
    assert_eq!(at(500_000_000), Some(Duration::from_secs(100)));
    assert!(!room.timeline_at("song", pause_at).expect("state").playing);
    assert_eq!(room.timelines().len(), 1);
    assert_eq!(
        room.view().timelines.get("song").map(|t| t.seq),
        Some(Seq(7))
    );
    let conflict = room
        .seek(
            "song",
            Duration::from_secs(5),
            TimelineOptions::now().if_seq(Seq(6)),
        )
        .await
        .expect_err("conflict");
    assert_eq!(conflict.code(), Some(ErrorCode::Conflict));
    assert_eq!(conflict.conflict_seq(), Some(Seq(7)));
    client.close().await;
    server.await.expect("server script");
}

/// Bytes that look like a PNG, `len` long.
fn png(len: usize) -> Vec<u8> {
    let mut content = b"\x89PNG\r\n\x1a\n".to_vec();
    content.extend((0..len - 8).map(|i| (i * 31 % 251) as u8));
    content
}

#[tokio::test]
async fn pack_upload_from_an_offset_and_fetch_with_hash_verification() {
    let content = png(40_000);
    let hash = pack_hash(&content);
    let expected = content.clone();
    let (url, server) = serve(move |server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "", 0).await;
        answer_join(&mut peer).await;
        // The upload: announced, then resumed from what the server has.
        let info = match peer.expect_next().await {
            ClientMessage::PackUpload {
                request_id,
                room,
                hash: announced,
                name,
                media_type,
                size,
            } => {
                assert_eq!(announced, hash);
                assert_eq!(
                    (name.as_str(), media_type.as_str()),
                    ("cover.png", "image/png")
                );
                assert_eq!(size, expected.len() as u64);
                peer.send(&ServerMessage::PackUploadReady {
                    request_id,
                    hash: hash.to_vec(),
                    offset: 10_000,
                })
                .await;
                let rest = peer
                    .read_pack_upload(&hash, 10_000, expected.len() - 10_000)
                    .await;
                assert_eq!(rest, expected[10_000..]);
                let info = PackInfo {
                    hash: hash.to_vec(),
                    name,
                    media_type,
                    size,
                    uploader: MemberId(2),
                };
                peer.send(&ServerMessage::PackAvailable {
                    room,
                    seq: Seq(6),
                    pack: info.clone(),
                })
                .await;
                info
            }
            other => panic!("expected pack_upload, got {other:?}"),
        };
        // The same again: the room has it.
        match peer.expect_next().await {
            ClientMessage::PackUpload {
                request_id, room, ..
            } => {
                peer.send(&ServerMessage::Ack {
                    request_id,
                    room,
                    seq: Seq(6),
                })
                .await;
            }
            other => panic!("expected pack_upload, got {other:?}"),
        }
        // The fetch, in chunks.
        match peer.expect_next().await {
            ClientMessage::PackFetch {
                request_id,
                hash: wanted,
                offset,
                ..
            } => {
                assert_eq!((wanted.as_slice(), offset), (&hash[..], 0));
                peer.send_download(request_id, &hash, 0, info.size, &expected, 16 * 1024)
                    .await;
            }
            other => panic!("expected pack_fetch, got {other:?}"),
        }
        // A fetch whose content is corrupt.
        match peer.expect_next().await {
            ClientMessage::PackFetch { request_id, .. } => {
                let mut bad = expected.clone();
                bad[20_000] ^= 1;
                peer.send_download(request_id, &hash, 0, info.size, &bad, 30_000)
                    .await;
            }
            other => panic!("expected pack_fetch, got {other:?}"),
        }
        // A pack the room does not have.
        match peer.expect_next().await {
            ClientMessage::PackFetch { request_id, .. } => {
                peer.send(&ServerMessage::Error(ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::PackNotFound,
                    "no such pack",
                )))
                .await;
            }
            other => panic!("expected pack_fetch, got {other:?}"),
        }
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    let pack = room
        .upload_pack("cover.png", "image/png", content.clone())
        .await
        .expect("upload");
    assert_eq!((pack.hash.as_slice(), pack.size), (&hash[..], 40_000));
    assert_eq!(room.packs(), std::slice::from_ref(&pack));
    assert_eq!(room.pack(&hash), Some(pack.clone()));
    let again = room
        .upload_pack("cover.png", "image/png", content.clone())
        .await
        .expect("already there");
    assert_eq!(again, pack);
    let fetched = room.fetch_pack(&hash).await.expect("fetch");
    assert_eq!(fetched, content);
    assert!(matches!(
        room.fetch_pack(&hash).await,
        Err(RequestError::PackHashMismatch)
    ));
    let missing = room.fetch_pack(&[7; 32]).await.expect_err("not found");
    assert_eq!(missing.code(), Some(ErrorCode::PackNotFound));
    // Checked before sending: a hash of the wrong length, a pack too large.
    assert!(matches!(
        room.fetch_pack(&[7; 31]).await,
        Err(RequestError::Limit(_))
    ));
    let too_big = vec![0u8; Limits::default().max_pack_bytes as usize + 1];
    assert!(matches!(
        room.upload_pack("big.png", "image/png", too_big).await,
        Err(RequestError::Limit(_))
    ));
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn an_upload_goes_on_after_an_offset_conflict_and_reports_refusals() {
    let content = png(20_000);
    let hash = pack_hash(&content);
    let expected = content.clone();
    let (url, server) = serve(move |server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "", 0).await;
        answer_join(&mut peer).await;
        let ClientMessage::PackUpload { request_id, .. } = peer.expect_next().await else {
            panic!("expected pack_upload");
        };
        peer.send(&ServerMessage::PackUploadReady {
            request_id,
            hash: hash.to_vec(),
            offset: 0,
        })
        .await;
        peer.read_pack_upload(&hash, 0, expected.len()).await;
        // Say the second piece did not start where the server was.
        peer.send(&ServerMessage::Error(
            ErrorFrame::new(Some(request_id), ErrorCode::Conflict, "expected 16384").with_detail(
                ErrorDetail::Conflict {
                    current_version: 16_384,
                },
            ),
        ))
        .await;
        // Announced again, it goes on from there.
        let ClientMessage::PackUpload {
            request_id, size, ..
        } = peer.expect_next().await
        else {
            panic!("expected pack_upload again");
        };
        peer.send(&ServerMessage::PackUploadReady {
            request_id,
            hash: hash.to_vec(),
            offset: 16_384,
        })
        .await;
        let rest = peer
            .read_pack_upload(&hash, 16_384, expected.len() - 16_384)
            .await;
        assert_eq!(rest, expected[16_384..]);
        peer.send(&ServerMessage::PackAvailable {
            room: SLOT,
            seq: Seq(6),
            pack: PackInfo {
                hash: hash.to_vec(),
                name: "a.png".into(),
                media_type: "image/png".into(),
                size,
                uploader: MemberId(2),
            },
        })
        .await;
        // Another upload, whose content the server refuses.
        let ClientMessage::PackUpload {
            request_id,
            hash: other,
            size,
            ..
        } = peer.expect_next().await
        else {
            panic!("expected pack_upload");
        };
        peer.send(&ServerMessage::PackUploadReady {
            request_id,
            hash: other.clone(),
            offset: 0,
        })
        .await;
        peer.read_pack_upload(&other, 0, usize::try_from(size).expect("size"))
            .await;
        peer.send(&ServerMessage::Error(ErrorFrame::new(
            Some(request_id),
            ErrorCode::MediaTypeRefused,
            "not a PNG",
        )))
        .await;
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    let pack = room
        .upload_pack("a.png", "image/png", content)
        .await
        .expect("upload after the conflict");
    assert_eq!(pack.hash, hash);
    let refused = room
        .upload_pack("b.png", "image/png", b"GIF89a, not a PNG".to_vec())
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Some(ErrorCode::MediaTypeRefused));
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn a_fetch_cut_by_a_drop_resumes_from_the_offset_reached() {
    let content = png(50_000);
    let hash = pack_hash(&content);
    let expected = content.clone();
    let (url, server) = serve(move |server| async move {
        let mut peer = server.accept().await;
        greet(&mut peer, "token-1", 60_000).await;
        answer_join(&mut peer).await;
        match peer.expect_next().await {
            ClientMessage::PackFetch {
                request_id, offset, ..
            } => {
                assert_eq!(offset, 0);
                // Two chunks out of four, then the connection drops.
                peer.send_download(request_id, &hash, 0, 50_000, &expected[..20_000], 10_000)
                    .await;
            }
            other => panic!("expected pack_fetch, got {other:?}"),
        }
        // Let the client read what was sent before the drop.
        match tokio::time::timeout(Duration::from_millis(200), peer.next()).await {
            Err(_) => {}
            Ok(other) => panic!("unexpected {other:?}"),
        }
        drop(peer);

        let mut peer = server.accept().await;
        greet_lobby_resume(&mut peer).await;
        peer.send(&ServerMessage::Resumed {
            room: SLOT,
            member: MemberId(2),
            snapshot: None,
        })
        .await;
        match peer.expect_next().await {
            ClientMessage::PackFetch {
                request_id, offset, ..
            } => {
                let from = usize::try_from(offset).expect("offset");
                assert!(from <= 20_000 && from % 10_000 == 0, "resumed from {from}");
                peer.send_download(request_id, &hash, offset, 50_000, &expected[from..], 16_000)
                    .await;
            }
            other => panic!("expected pack_fetch, got {other:?}"),
        }
        assert_eq!(peer.answer_leaves_until_gone().await, [SLOT]);
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    let fetched = room.fetch_pack(&hash).await.expect("fetch across the drop");
    assert_eq!(fetched, content);
    client.close().await;
    server.await.expect("server script");
}

/// The public schedule functions, as an application would check them.
#[test]
fn backoff_is_exponential_with_full_jitter_within_the_window() {
    let o = ReconnectOptions::default();
    let window = Duration::from_secs(60);
    // A fixed sequence of "random" values (an injected RNG).
    let randoms = [0u64, u64::MAX, 123_456_789, 42, 7_777_777_777, 1 << 40];
    let mut elapsed = Duration::ZERO;
    for (i, random) in randoms.iter().cycle().take(40).enumerate() {
        let attempt = i as u32 + 1;
        let Some(delay) = next_delay(&o, attempt, elapsed, window, Duration::ZERO, *random) else {
            assert!(elapsed >= window);
            return;
        };
        assert!(delay <= o.ceiling(attempt));
        assert!(delay <= window - elapsed);
        assert_eq!(delay, o.delay(attempt, *random).min(window - elapsed));
        elapsed += delay.max(Duration::from_secs(2));
    }
    panic!("the window never passed");
}

#[test]
fn a_scheduled_timeline_change_waits_for_its_anchor() {
    let mut schedule = TimelineSchedule::new(song(1, true, ServerTime(1_000_000), 0));
    // Arriving at t = 2 s.
    schedule.push(
        song(2, false, ServerTime(5_000_000), 4_000_000),
        ServerTime(2_000_000),
    );
    assert_eq!(schedule.at(ServerTime(4_999_999)).seq, Seq(1));
    assert_eq!(schedule.position_us_at(ServerTime(4_000_000)), 3_000_000);
    assert_eq!(schedule.at(ServerTime(5_000_000)).seq, Seq(2));
    assert_eq!(schedule.position_us_at(ServerTime(9_000_000)), 4_000_000);
}
