//! The client against a scripted WebSocket peer (not the real server), as
//! PROTOCOL.md §1.3 describes the wire: lane bytes, chunked control messages,
//! ticks in-band, close codes 4000 + error code. Each test plays the server's
//! side message by message; `wss://` peers use the test certificate in
//! `tests/data` (trusted through `Trust::CaPem`) or a fresh 14-day certificate
//! (trusted by hash).

// tungstenite's upgrade callback returns `Result<Response, ErrorResponse>`.
#![allow(clippy::result_large_err)]

mod common;

use bytes::Bytes;
use chorus_client::{
    Client, CloseReason, ConnectError, ConnectOptions, JoinOptions, RequestError, Transport,
    TransportChoice, Trust,
};
use chorus_protocol::{
    ClientMessage, Datagram, DisplayInfo, ErrorCode, ErrorFrame, Limits, MemberId,
    PROTOCOL_VERSION, RateLimits, RoomSnapshot, Seq, ServerHello, ServerMessage, ServerTime, Tick,
    decode_client_message, decode_datagram, encode_datagram,
};
use common::{CERT, KEY, SLOT, snapshot_with, unix_us};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wtransport::tls::rustls;
use wtransport::tls::rustls::pki_types::pem::PemObject;
use wtransport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the upgrade request carried.
#[derive(Debug, Default, Clone)]
struct Upgrade {
    path: String,
    subprotocol: Option<String>,
    origin: Option<String>,
}

/// The server side of one WebSocket session: client control messages
/// reassembled from their lanes, pings answered automatically, ticks collected.
struct Peer<S> {
    ws: WebSocketStream<S>,
    upgrade: Upgrade,
    /// Tick datagrams received (lane 0x01 bodies).
    ticks: Vec<Vec<u8>>,
    /// Lane 0x02 chunks received.
    chunks: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
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

    /// Sends `msg` in `pieces` chunks, with `tick` between each two.
    async fn send_chunked(&mut self, msg: &ServerMessage, pieces: usize, tick: Option<&[u8]>) {
        let body = chorus_protocol::codec::encode_message(msg);
        let size = body.len().div_ceil(pieces);
        let parts: Vec<&[u8]> = body.chunks(size).collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            self.send_lane(if last { 0x00 } else { 0x02 }, part).await;
            if let (false, Some(tick)) = (last, tick) {
                self.send_lane(0x01, tick).await;
            }
        }
    }

    /// The next client control message that is not a ping (pings get a pong);
    /// `None` when the connection ends or the client closes.
    async fn next(&mut self) -> Option<ClientMessage> {
        let mut partial: Option<Vec<u8>> = None;
        loop {
            let message = match self.ws.next().await? {
                Ok(m) => m,
                Err(_) => return None,
            };
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => return None,
                _ => continue,
            };
            let (lane, body) = data
                .split_first()
                .expect("no empty messages from the client");
            let body = match *lane {
                0x01 => {
                    self.ticks.push(body.to_vec());
                    continue;
                }
                0x02 => {
                    self.chunks += 1;
                    partial.get_or_insert_with(Vec::new).extend_from_slice(body);
                    continue;
                }
                0x00 => match partial.take() {
                    Some(mut start) => {
                        start.extend_from_slice(body);
                        start
                    }
                    None => body.to_vec(),
                },
                other => panic!("client sent lane {other}"),
            };
            let msg = decode_client_message(&body, &Limits::default()).expect("client message");
            if let ClientMessage::Ping { client_time } = msg {
                let t = unix_us();
                self.send(&ServerMessage::Pong {
                    client_time,
                    server_receive_time: ServerTime(t),
                    server_send_time: ServerTime(t + 5),
                })
                .await;
                continue;
            }
            return Some(msg);
        }
    }

    async fn expect_next(&mut self) -> ClientMessage {
        self.next().await.expect("a client message")
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

    /// Reads (answering pings) until the client's close frame or the end of the
    /// connection.
    async fn wait_gone(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.next().await.is_some() {}
        })
        .await;
    }
}

fn hello() -> ServerHello {
    ServerHello {
        version: PROTOCOL_VERSION,
        server_name: "mock-ws/0".into(),
        session_id: 88,
        server_time: ServerTime(unix_us()),
        // No datagrams on WebSocket: ticks travel in-band.
        max_datagram_size: 0,
        limits: Limits::default(),
        rate_limits: RateLimits::default(),
        // Resuming off, so a drop ends the client (the resume tests turn it on).
        resume_token: String::new(),
        resume_window_ms: 0,
        extensions: vec![],
    }
}

/// Upgrades `stream`, checking the path and recording the request headers, and
/// selects the `chorus.v1` subprotocol when offered.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Peer<S> {
    let seen = Arc::new(Mutex::new(Upgrade::default()));
    let record = Arc::clone(&seen);
    let callback = move |request: &Request, mut response: Response| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut up = record.lock().expect("lock");
        up.path = request.uri().path().to_owned();
        up.subprotocol = header("sec-websocket-protocol");
        up.origin = header("origin");
        if up.subprotocol.as_deref() == Some("chorus.v1") {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("chorus.v1"),
            );
        }
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .expect("upgrade");
    let upgrade = seen.lock().expect("lock").clone();
    Peer {
        ws,
        upgrade,
        ticks: Vec::new(),
        chunks: 0,
    }
}

/// Reads the client's hello and answers with ours.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(peer: &mut Peer<S>) {
    match peer.expect_next().await {
        ClientMessage::Hello(h) => {
            assert_eq!(h.version, PROTOCOL_VERSION);
            assert_eq!(h.options, vec![], "no API key unless configured");
        }
        other => panic!("expected hello, got {other:?}"),
    }
    peer.send(&ServerMessage::Hello(hello())).await;
}

/// An empty room but for its host, member 1 ("ada").
fn snapshot(room_id: &str, display: DisplayInfo) -> RoomSnapshot {
    snapshot_with(room_id, display, vec![], 0, Seq(1))
}

async fn answer_join<S: AsyncRead + AsyncWrite + Unpin>(peer: &mut Peer<S>) {
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

/// A one-session plain `ws://` peer running `script`; returns its URL.
async fn mock_ws<F, Fut>(script: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(Peer<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        script(upgrade(tcp).await).await;
    });
    (format!("ws://127.0.0.1:{port}/chorus"), task)
}

/// A TLS acceptor with this certificate chain and key, ALPN `http/1.1`.
fn acceptor(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

fn test_acceptor() -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(CERT)
        .expect("cert file")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(KEY).expect("key");
    acceptor(certs, key)
}

/// A one-session TLS peer on a fresh port; returns the port.
async fn mock_wss<F, Fut>(acceptor: TlsAcceptor, script: F) -> (u16, JoinHandle<()>)
where
    F: FnOnce(Peer<tokio_rustls::server::TlsStream<TcpStream>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let Ok(tls) = acceptor.accept(tcp).await else {
            return; // the client refused our certificate
        };
        script(upgrade(tls).await).await;
    });
    (port, task)
}

fn options() -> ConnectOptions {
    ConnectOptions {
        handshake_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        clock_sync_pings: 2,
        clock_ping_spacing: Duration::ZERO,
        ..ConnectOptions::with_ca_pem(std::fs::read(CERT).expect("cert file"))
    }
}

#[tokio::test]
async fn handshake_chunks_and_ticks_over_plain_websocket() {
    let (url, server) = mock_ws(|mut peer| async move {
        assert_eq!(peer.upgrade.path, "/chorus");
        assert_eq!(peer.upgrade.subprotocol.as_deref(), Some("chorus.v1"));
        assert_eq!(peer.upgrade.origin, None, "a native client sends no Origin");
        greet(&mut peer).await;
        // Text and unknown-lane messages are skipped by the client.
        peer.ws
            .send(Message::Text("hello?".into()))
            .await
            .expect("text");
        peer.send_lane(0x07, b"future lane").await;
        answer_join(&mut peer).await;

        // A state write the client sends chunked (> 16 KiB), with the client's
        // ticks allowed between its pieces.
        match peer.expect_next().await {
            ClientMessage::SetState {
                request_id,
                room,
                key,
                value,
                ..
            } => {
                assert_eq!(value.len(), 40_000);
                assert!(value.iter().enumerate().all(|(i, b)| *b == i as u8));
                // Answer with a server message chunked into 5 pieces, a tick from
                // member 1 between each two.
                let tick = encode_datagram(&Datagram::Tick(Tick {
                    room: SLOT,
                    sender: MemberId(1),
                    seq: 7,
                    payload: b"cursor",
                }));
                peer.send_chunked(
                    &ServerMessage::StateChanged {
                        room,
                        seq: Seq(2),
                        key,
                        value: Some(value),
                        version: 1,
                        author: MemberId(2),
                    },
                    5,
                    Some(&tick),
                )
                .await;
                peer.send(&ServerMessage::StateAck {
                    request_id,
                    room,
                    version: 1,
                    seq: Seq(2),
                })
                .await;
            }
            other => panic!("expected set_state, got {other:?}"),
        }
        assert_eq!(peer.chunks, 40_000 / (16 * 1024), "client chunks");
        // A WebSocket ping from the server is answered.
        peer.ws
            .send(Message::Ping(Bytes::from_static(b"hb")))
            .await
            .expect("ping");
        // The client's ticks arrive as lane 0x01 messages, before its next
        // control message.
        match peer.expect_next().await {
            ClientMessage::Command { request_id, .. } => {
                peer.send(&ServerMessage::Error(ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::Forbidden,
                    "no chat here",
                )))
                .await
            }
            other => panic!("expected a command, got {other:?}"),
        }
        let ticks: Vec<(u32, Vec<u8>)> = peer
            .ticks
            .iter()
            .map(
                |t| match decode_datagram(t, &Limits::default()).expect("tick") {
                    Datagram::Tick(t) => {
                        assert_eq!((t.room, t.sender), (SLOT, MemberId(2)));
                        (t.seq, t.payload.to_vec())
                    }
                },
            )
            .collect();
        assert_eq!(ticks.last(), Some(&(1, b"b".to_vec())), "{ticks:?}");
        peer.wait_gone().await;
    })
    .await;

    let client = Client::connect(&url, options()).await.expect("connect");
    assert_eq!(client.transport(), Transport::WebSocket);
    assert_eq!(client.session_id(), 88);
    assert_eq!(client.max_datagram_size(), None);
    assert_eq!(client.clock().samples, 2);
    let room = client
        .join("lobby", JoinOptions::named("bo"))
        .await
        .expect("join");
    assert_eq!(
        room.max_tick_payload(),
        client.limits().max_tick_payload_bytes as usize
    );
    let mut ticks = room.ticks();
    let value: Vec<u8> = (0..40_000).map(|i| i as u8).collect();
    let ack = room.set_state("big", &value).await.expect("set_state");
    assert_eq!((ack.version, ack.seq), (1, Seq(2)));
    // The chunked StateChanged was reassembled and applied before the ack.
    assert_eq!(room.state("big").map(|v| v.value), Some(Bytes::from(value)));
    // The ticks between its chunks were routed (newest wins in the broadcast).
    let tick = tokio::time::timeout(Duration::from_secs(5), ticks.recv())
        .await
        .expect("tick in time")
        .expect("tick");
    assert_eq!((tick.sender, tick.seq), (MemberId(1), 7));
    assert_eq!(tick.payload.as_ref(), b"cursor");

    // Ticks: a payload at the server's limit is fine (no datagram size on WS).
    let max = client.limits().max_tick_payload_bytes as usize;
    assert_eq!(room.send_tick(&vec![0; max]).expect("max tick"), 0);
    assert_eq!(room.send_tick(b"b").expect("tick"), 1);
    let err = room
        .send_command("chat", b"after ticks", None)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    client.close().await;
    assert_eq!(client.closed().await, CloseReason::Local);
    server.await.expect("server script");
}

#[tokio::test]
async fn client_answers_server_pings() {
    let (url, server) = mock_ws(|mut peer| async move {
        greet(&mut peer).await;
        for _ in 0..3 {
            peer.ws
                .send(Message::Ping(Bytes::from_static(b"hb")))
                .await
                .expect("ping");
        }
        // The pongs come back although the client has nothing else to say.
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            let mut pongs = 0;
            while pongs < 3 {
                match peer.ws.next().await {
                    Some(Ok(Message::Pong(data))) => {
                        assert_eq!(data.as_ref(), b"hb");
                        pongs += 1;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("connection ended: {other:?}"),
                }
            }
        })
        .await;
        assert!(got.is_ok(), "no pongs in time");
        peer.close(1000, "done").await;
        peer.wait_gone().await;
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            clock_sync_pings: 0,
            clock_sync_interval: Duration::ZERO,
            // Only the server pings in this test.
            keep_alive_interval: None,
            ..options()
        },
    )
    .await
    .expect("connect");
    assert_eq!(
        client.closed().await,
        CloseReason::ServerClosed {
            reason: "done".into()
        }
    );
    server.await.expect("server script");
}

#[tokio::test]
async fn close_code_4400_after_the_error_is_a_typed_close_reason() {
    let (url, server) = mock_ws(|mut peer| async move {
        greet(&mut peer).await;
        answer_join(&mut peer).await;
        assert!(matches!(
            peer.expect_next().await,
            ClientMessage::Command { .. }
        ));
        peer.send(&ServerMessage::Error(ErrorFrame::new(
            None,
            ErrorCode::SlowConsumer,
            "control queue full",
        )))
        .await;
        peer.close(4400, "slow consumer").await;
        peer.wait_gone().await;
    })
    .await;
    let client = Client::connect(&url, options()).await.expect("connect");
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join");
    let err = room
        .send_command("chat", b"?", None)
        .await
        .expect_err("the server closes");
    let RequestError::Closed(reason) = err else {
        panic!("expected Closed, got {err:?}");
    };
    assert_eq!(reason.code(), Some(ErrorCode::SlowConsumer));
    match &reason {
        CloseReason::Server(frame) => assert_eq!(frame.message, "control queue full"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(client.closed().await, reason);
    assert!(!room.is_joined());
    server.await.expect("server script");
}

#[tokio::test]
async fn close_code_alone_names_the_error() {
    let (url, server) = mock_ws(|mut peer| async move {
        greet(&mut peer).await;
        peer.close(4501, "shutting down").await;
        peer.wait_gone().await;
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            clock_sync_pings: 0,
            ..options()
        },
    )
    .await
    .expect("connect");
    match client.closed().await {
        CloseReason::Server(frame) => {
            assert_eq!(frame.code, ErrorCode::ShuttingDown);
            assert_eq!(frame.message, "shutting down");
        }
        other => panic!("expected the close code, got {other:?}"),
    }
    server.await.expect("server script");
}

#[tokio::test]
async fn oversize_chunked_message_is_a_protocol_error() {
    let (url, server) = mock_ws(|mut peer| async move {
        greet(&mut peer).await;
        // Pieces adding up to more than the client's max_frame_bytes (1000).
        peer.send_lane(0x02, &[0u8; 600]).await;
        peer.send_lane(0x02, &[0u8; 600]).await;
        // The client closes with 4000 + Malformed.
        let close = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match peer.ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        })
        .await
        .expect("close in time");
        assert_eq!(close.map(|f| u16::from(f.code)), Some(4100));
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            max_frame_bytes: Some(1000),
            clock_sync_pings: 0,
            ..options()
        },
    )
    .await
    .expect("connect");
    match client.closed().await {
        CloseReason::Protocol(msg) => assert!(msg.contains("FrameTooLarge"), "{msg}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    server.await.expect("server script");
}

#[tokio::test]
async fn silent_connection_hits_the_idle_timeout() {
    let (url, server) = mock_ws(|mut peer| async move {
        greet(&mut peer).await;
        // Stop reading: the client's pings get no pongs, nothing arrives.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(peer);
    })
    .await;
    let client = Client::connect(
        &url,
        ConnectOptions {
            clock_sync_pings: 0,
            clock_sync_interval: Duration::ZERO,
            keep_alive_interval: Some(Duration::from_millis(100)),
            max_idle_timeout: Duration::from_millis(400),
            ..options()
        },
    )
    .await
    .expect("connect");
    let reason = tokio::time::timeout(Duration::from_secs(3), client.closed())
        .await
        .expect("closes in time");
    assert_eq!(reason, CloseReason::Transport("idle timeout".into()));
    server.await.expect("server script");
}

#[tokio::test]
async fn upgrade_refused_with_403_is_typed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let refuse = |_: &Request, _: Response| {
            let mut response =
                tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(Some(
                    "origin not allowed".into(),
                ));
            *response.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
            Err(response)
        };
        let _ = tokio_tungstenite::accept_hdr_async(tcp, refuse).await;
    });
    let result = Client::connect(&format!("ws://127.0.0.1:{port}/chorus"), options()).await;
    assert!(
        matches!(result, Err(ConnectError::HttpStatus(403))),
        "{result:?}"
    );
    server.await.expect("server task");
}

#[tokio::test]
async fn wss_with_a_private_ca() {
    let (port, server) = mock_wss(test_acceptor(), |mut peer| async move {
        greet(&mut peer).await;
        peer.wait_gone().await;
    })
    .await;
    let client = Client::connect(&format!("wss://127.0.0.1:{port}/chorus"), options())
        .await
        .expect("connect");
    assert_eq!(client.transport(), Transport::WebSocket);
    client.close().await;
    server.await.expect("server script");
}

/// A certificate browsers (and `Trust::CertificateHashes`) accept by hash:
/// ECDSA P-256, valid for 14 days from a minute ago.
fn hash_pinnable_identity() -> (CertificateDer<'static>, PrivateKeyDer<'static>, [u8; 32]) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = params.not_before + time::Duration::days(14);
    let cert = params.self_signed(&key).expect("certificate");
    let der = cert.der().clone();
    let hash = *wtransport::tls::Certificate::from_der(der.to_vec())
        .expect("parses")
        .hash()
        .as_ref();
    let key = PrivateKeyDer::try_from(key.serialize_der()).expect("pkcs8");
    (der, key, hash)
}

#[tokio::test]
async fn wss_trusts_a_pinned_certificate_hash() {
    let (cert, key, hash) = hash_pinnable_identity();
    let acceptor = acceptor(vec![cert], key);
    let (port, server) = mock_wss(acceptor.clone(), |mut peer| async move {
        greet(&mut peer).await;
        peer.wait_gone().await;
    })
    .await;
    let url = format!("wss://127.0.0.1:{port}/chorus");
    let pinned = ConnectOptions {
        trust: Trust::CertificateHashes(vec![hash]),
        ..options()
    };
    let client = Client::connect(&url, pinned.clone())
        .await
        .expect("connect");
    client.close().await;
    server.await.expect("server script");

    // Another hash: the TLS handshake fails.
    let (port, server) = mock_wss(acceptor, |_| async {}).await;
    let wrong = ConnectOptions {
        trust: Trust::CertificateHashes(vec![[0u8; 32]]),
        ..pinned
    };
    let result = Client::connect(&format!("wss://127.0.0.1:{port}/chorus"), wrong).await;
    assert!(
        matches!(&result, Err(ConnectError::Connecting(m)) if m.contains("certificate")),
        "{result:?}"
    );
    server.await.expect("server task");
}

#[tokio::test]
async fn https_falls_back_to_websocket_when_nothing_listens_on_udp() {
    // TCP (TLS) on this port, nothing on UDP.
    let (port, server) = mock_wss(test_acceptor(), |mut peer| async move {
        assert_eq!(peer.upgrade.path, "/chorus");
        greet(&mut peer).await;
        answer_join(&mut peer).await;
        peer.wait_gone().await;
    })
    .await;
    let started = std::time::Instant::now();
    let client = Client::connect(
        &format!("https://127.0.0.1:{port}/chorus"),
        ConnectOptions {
            fallback_after: Duration::from_millis(300),
            ..options()
        },
    )
    .await
    .expect("connect through the fallback");
    assert_eq!(client.transport(), Transport::WebSocket);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let room = client
        .join("lobby", JoinOptions::default())
        .await
        .expect("join over WebSocket");
    assert_eq!(room.me(), MemberId(2));
    client.close().await;
    server.await.expect("server script");
}

#[tokio::test]
async fn fallback_uses_websocket_url_and_reports_both_failures() {
    // Nothing at all on this port; the WebSocket server elsewhere, plain.
    let nothing = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = nothing.local_addr().expect("addr").port();
    drop(nothing);
    let (ws_url, server) = mock_ws(|mut peer| async move {
        greet(&mut peer).await;
        peer.wait_gone().await;
    })
    .await;
    let options = ConnectOptions {
        fallback_after: Duration::from_millis(200),
        ..options()
    };
    let client = Client::connect(
        &format!("https://127.0.0.1:{dead}/chorus"),
        ConnectOptions {
            websocket_url: Some(ws_url),
            ..options.clone()
        },
    )
    .await
    .expect("connect to websocket_url");
    assert_eq!(client.transport(), Transport::WebSocket);
    client.close().await;
    server.await.expect("server script");

    // Without it, wss:// on the dead port fails too: both reasons are kept.
    match Client::connect(&format!("https://127.0.0.1:{dead}/chorus"), options.clone()).await {
        Err(ConnectError::AllTransportsFailed {
            webtransport,
            websocket,
        }) => {
            assert!(
                matches!(
                    *webtransport,
                    ConnectError::HandshakeTimeout(_) | ConnectError::Connecting(_)
                ),
                "{webtransport:?}"
            );
            assert!(
                matches!(*websocket, ConnectError::Connecting(_)),
                "{websocket:?}"
            );
        }
        other => panic!("expected both attempts to fail, got {other:?}"),
    }
    // Choices that do not fit the URL are refused before connecting.
    let ws_only = ConnectOptions {
        transport: TransportChoice::WebTransport,
        ..options.clone()
    };
    assert!(matches!(
        Client::connect("ws://127.0.0.1:1/chorus", ws_only).await,
        Err(ConnectError::Url(_))
    ));
    let bad_target = ConnectOptions {
        websocket_url: Some("https://127.0.0.1:1/chorus".into()),
        transport: TransportChoice::WebSocket,
        ..options
    };
    assert!(matches!(
        Client::connect(&format!("https://127.0.0.1:{dead}/chorus"), bad_target).await,
        Err(ConnectError::Url(_))
    ));
}
