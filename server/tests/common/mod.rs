//! Shared helpers for integration tests: start a real server on an ephemeral
//! port, and a raw protocol client that can send anything (including bytes no
//! SDK would send) over a real WebTransport connection.
#![allow(dead_code)] // each test binary uses a different part of this module

use bytes::Bytes;
use chorus_protocol::frame::put_varint_u32;
use chorus_protocol::*;
use chorus_server::{RunningServer, Server, ServerConfig};
use std::path::PathBuf;
use std::time::Duration;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A certificate directory shared by the tests of one binary.
pub fn cert_dir() -> PathBuf {
    std::env::temp_dir().join(format!("chorus-test-certs-{}", std::process::id()))
}

pub async fn start_server_with(adjust: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig::ephemeral(cert_dir());
    adjust(&mut config);
    Server::start(config).await.expect("server starts")
}

pub async fn start_server() -> RunningServer {
    start_server_with(|_| {}).await
}

/// A protocol-level client: frames and datagrams by hand.
pub struct RawClient {
    pub connection: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    pub limits: Limits,
}

impl RawClient {
    /// Connects and opens the control stream, without a hello.
    pub async fn connect(server: &RunningServer) -> RawClient {
        let config = ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([Sha256Digest::new(server.cert_hash())])
            .build();
        let endpoint = Endpoint::client(config).expect("client endpoint");
        let connection = endpoint.connect(server.url()).await.expect("connects");
        let (send, recv) = connection
            .open_bi()
            .await
            .expect("open bi")
            .await
            .expect("bi stream");
        RawClient {
            connection,
            send,
            recv,
            decoder: FrameDecoder::new(64 * 1024 * 1024),
            buf: vec![0; 64 * 1024],
            limits: Limits::default(),
        }
    }

    /// Connects and completes the handshake.
    pub async fn connect_hello(server: &RunningServer) -> (RawClient, ServerHello) {
        let mut client = Self::connect(server).await;
        client.send(&hello(PROTOCOL_VERSION)).await;
        match client.recv().await {
            ServerMessage::Hello(hello) => {
                client.limits = hello.limits.clone();
                (client, hello)
            }
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    /// Sends one frame with `body` as it is.
    pub async fn send_body(&mut self, body: &[u8]) {
        let mut frame = Vec::new();
        put_varint_u32(&mut frame, body.len() as u32);
        frame.extend_from_slice(body);
        self.send_raw(&frame).await;
    }

    pub async fn send(&mut self, msg: &ClientMessage) {
        self.send_raw(&encode_frame(msg)).await;
    }

    /// The next server message; panics after [`WAIT`] or if the stream ends.
    pub async fn recv(&mut self) -> ServerMessage {
        self.try_recv()
            .await
            .unwrap_or_else(|e| panic!("no message: {e}"))
    }

    /// The next server message, or why there is none.
    pub async fn try_recv(&mut self) -> Result<ServerMessage, String> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(body) = self.decoder.next_frame().map_err(|e| e.to_string())? {
                    return decode_server_message(&body).map_err(|e| e.to_string());
                }
                match self.recv.read(&mut self.buf).await {
                    Ok(Some(n)) => self.decoder.extend(&self.buf[..n]),
                    Ok(None) => return Err("stream finished".to_owned()),
                    Err(e) => return Err(format!("stream error: {e}")),
                }
            }
        })
        .await
        .map_err(|_| "timed out".to_owned())?
    }

    /// Skips messages until one matches.
    pub async fn recv_until<T>(&mut self, mut pick: impl FnMut(ServerMessage) -> Option<T>) -> T {
        loop {
            if let Some(found) = pick(self.recv().await) {
                return found;
            }
        }
    }

    /// The next error message, skipping others.
    pub async fn recv_error(&mut self) -> ErrorFrame {
        self.recv_until(|m| match m {
            ServerMessage::Error(e) => Some(e),
            _ => None,
        })
        .await
    }

    pub async fn join(&mut self, room_id: &str, request_id: RequestId) -> RoomSnapshot {
        self.send(&join_msg(
            room_id,
            request_id,
            vec![JoinOption::CreateIfMissing],
        ))
        .await;
        self.recv_until(|m| match m {
            ServerMessage::Joined {
                request_id: id,
                snapshot,
            } if id == request_id => Some(snapshot),
            ServerMessage::Error(e) => panic!("join failed: {e}"),
            _ => None,
        })
        .await
    }

    pub fn send_datagram(&self, bytes: &[u8]) {
        self.connection.send_datagram(bytes).expect("datagram sent");
    }

    pub fn send_tick(&self, room: RoomSlot, sender: MemberId, seq: u32, payload: &[u8]) {
        self.send_datagram(&encode_datagram(&Datagram::Tick(Tick {
            room,
            sender,
            seq,
            payload,
        })));
    }

    pub async fn recv_datagram(&self) -> Bytes {
        tokio::time::timeout(WAIT, self.connection.receive_datagram())
            .await
            .expect("a datagram in time")
            .expect("connection open")
            .payload()
    }

    /// Waits for the connection to close; returns the application close code.
    pub async fn closed_code(&self) -> Option<u64> {
        let error = tokio::time::timeout(WAIT, self.connection.closed())
            .await
            .expect("closed in time");
        match error {
            wtransport::error::ConnectionError::ApplicationClosed(close) => {
                Some(close.code().into_inner())
            }
            _ => None,
        }
    }

    /// A ping round trip: proves the session still serves this client.
    pub async fn ping(&mut self) {
        self.send(&ClientMessage::Ping { client_time: 42 }).await;
        self.recv_until(|m| match m {
            ServerMessage::Pong {
                client_time: 42, ..
            } => Some(()),
            _ => None,
        })
        .await;
    }
}

pub fn hello(version: ProtocolVersion) -> ClientMessage {
    ClientMessage::Hello(ClientHello {
        version,
        client_name: "raw-test".into(),
        capabilities: 0,
    })
}

pub fn join_msg(room_id: &str, request_id: RequestId, options: Vec<JoinOption>) -> ClientMessage {
    ClientMessage::Join {
        request_id,
        room_id: room_id.into(),
        display: DisplayInfo {
            name: format!("member-{request_id}"),
            meta: vec![],
        },
        options,
    }
}
