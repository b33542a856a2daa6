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

/// Sends a request answered by `Ack` and returns the ack's seq, or the
/// error that answered it instead.
pub async fn request_ack(
    client: &mut impl RawProtocol,
    msg: ClientMessage,
) -> Result<Seq, ErrorFrame> {
    let request_id = msg.request_id().expect("a request");
    client.send(&msg).await;
    client
        .recv_until(|m| match m {
            ServerMessage::Ack {
                request_id: id,
                seq,
                ..
            } if id == request_id => Some(Ok(seq)),
            ServerMessage::Error(e) if e.request_id == Some(request_id) => Some(Err(e)),
            _ => None,
        })
        .await
}

/// Sets `key` and returns the acknowledgement's (version, seq); panics if
/// the write is refused.
pub async fn set_state_acked(
    client: &mut impl RawProtocol,
    room: RoomSlot,
    request_id: RequestId,
    key: &str,
    value: &[u8],
) -> (u64, Seq) {
    client
        .send(&ClientMessage::SetState {
            request_id,
            room,
            key: key.into(),
            value: value.to_vec(),
            if_version: None,
        })
        .await;
    client
        .recv_until(|m| match m {
            ServerMessage::StateAck {
                request_id: id,
                version,
                seq,
                ..
            } if id == request_id => Some((version, seq)),
            ServerMessage::Error(e) if e.request_id == Some(request_id) => {
                panic!("set_state refused: {e}")
            }
            _ => None,
        })
        .await
}

/// Raises every per-session rate budget out of reach, for tests that flood on
/// purpose to test something else (slow consumers, backpressure).
pub fn lift_rate_limits(config: &mut ServerConfig) {
    let unlimited = Rate {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    config.session.rate_limits = RateLimits {
        messages: unlimited,
        state_updates: unlimited,
        commands: unlimited,
        ticks: unlimited,
        joins: unlimited,
        direct: unlimited,
    };
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
        Self::connect_with(server, hello(PROTOCOL_VERSION)).await
    }

    /// Connects and completes the handshake with the given hello.
    pub async fn connect_with(
        server: &RunningServer,
        hello: ClientMessage,
    ) -> (RawClient, ServerHello) {
        let mut client = Self::connect(server).await;
        client.send(&hello).await;
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
}

/// What both raw clients can do, written once over their `send` and `recv`.
#[allow(async_fn_in_trait)] // test-only, used with concrete types
pub trait RawProtocol {
    async fn send(&mut self, msg: &ClientMessage);

    /// The next control message; panics after [`WAIT`] or if the connection ends.
    async fn recv(&mut self) -> ServerMessage;

    /// Skips messages until one matches.
    async fn recv_until<T>(&mut self, mut pick: impl FnMut(ServerMessage) -> Option<T>) -> T {
        loop {
            if let Some(found) = pick(self.recv().await) {
                return found;
            }
        }
    }

    /// The next error message, skipping others.
    async fn recv_error(&mut self) -> ErrorFrame {
        self.recv_until(|m| match m {
            ServerMessage::Error(e) => Some(e),
            _ => None,
        })
        .await
    }

    /// Joins (creating if needed) and returns the snapshot.
    async fn join(&mut self, room_id: &str, request_id: RequestId) -> RoomSnapshot {
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

    /// A ping round trip: proves the session still serves this client.
    async fn ping(&mut self) {
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

impl RawProtocol for RawClient {
    async fn send(&mut self, msg: &ClientMessage) {
        self.send_raw(&encode_frame(msg)).await;
    }

    async fn recv(&mut self) -> ServerMessage {
        self.try_recv()
            .await
            .unwrap_or_else(|e| panic!("no message: {e}"))
    }
}

impl RawProtocol for RawWs {
    async fn send(&mut self, msg: &ClientMessage) {
        self.send_lane(0, &encode_message(msg)).await;
    }

    /// The next control message, skipping ticks.
    async fn recv(&mut self) -> ServerMessage {
        loop {
            match self.next().await {
                WsIn::Control(msg) => return msg,
                WsIn::Tick(_) | WsIn::Pack(_) => {}
                WsIn::Closed(code) => panic!("closed ({code:?}) while waiting for a message"),
            }
        }
    }
}

/// Sends 32 KiB commands, one at a time (each acknowledged), until the room
/// reports a member leaving; returns the last request id sent and who left
/// why. Used to overflow a member that does not read.
pub async fn flood_until_someone_leaves(
    flooder: &mut impl RawProtocol,
    room: RoomSlot,
) -> (RequestId, MemberId, LeaveReason) {
    let payload = vec![0u8; 32 * 1024];
    let mut request_id = 0;
    loop {
        request_id += 1;
        assert!(request_id < 10_000, "nobody was ever cut off");
        flooder
            .send(&ClientMessage::Command {
                request_id,
                room,
                kind: "bulk".into(),
                payload: payload.clone(),
                idempotency_key: None,
            })
            .await;
        let left = flooder
            .recv_until(|m| match m {
                ServerMessage::CommandAck { request_id: id, .. } if id == request_id => Some(None),
                ServerMessage::MemberLeft { member, reason, .. } => Some(Some((member, reason))),
                _ => None,
            })
            .await;
        if let Some((member, reason)) = left {
            return (request_id, member, reason);
        }
    }
}

pub fn hello(version: ProtocolVersion) -> ClientMessage {
    ClientMessage::Hello(ClientHello {
        version,
        client_name: "raw-test".into(),
        capabilities: 0,
        options: vec![],
    })
}

/// A hello that resumes the session behind `token`, having seen `rooms`.
pub fn resume_hello(token: &str, rooms: Vec<ResumeRoom>) -> ClientMessage {
    ClientMessage::Hello(ClientHello {
        version: PROTOCOL_VERSION,
        client_name: "raw-test".into(),
        capabilities: 0,
        options: vec![HelloOption::Resume {
            token: token.into(),
            rooms,
        }],
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

/// A protocol-level WebSocket client (PROTOCOL.md §1.3).
pub struct RawWs {
    pub socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Chunks of a control message received so far.
    partial: Vec<u8>,
}

pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// What a raw WebSocket client received.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // test-only, one message at a time
pub enum WsIn {
    Control(ServerMessage),
    Tick(Vec<u8>),
    /// A pack-lane message (framed header, then a chunk).
    Pack(Vec<u8>),
    /// The server closed with this code.
    Closed(Option<u16>),
}

impl RawWs {
    pub async fn connect(server: &RunningServer) -> RawWs {
        Self::connect_url(&server.ws_url()).await
    }

    pub async fn connect_url(url: &str) -> RawWs {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connects");
        RawWs {
            socket,
            partial: Vec::new(),
        }
    }

    /// Connects and completes the handshake.
    pub async fn connect_hello(server: &RunningServer) -> (RawWs, ServerHello) {
        Self::connect_with(server, hello(PROTOCOL_VERSION)).await
    }

    /// Connects and completes the handshake with the given hello.
    pub async fn connect_with(
        server: &RunningServer,
        hello: ClientMessage,
    ) -> (RawWs, ServerHello) {
        let mut ws = Self::connect(server).await;
        ws.send(&hello).await;
        match ws.recv().await {
            ServerMessage::Hello(hello) => (ws, hello),
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    pub async fn send_raw(&mut self, message: WsMessage) {
        use futures_util::SinkExt;
        self.socket.send(message).await.expect("ws send");
    }

    pub async fn send_lane(&mut self, lane: u8, body: &[u8]) {
        let mut data = vec![lane];
        data.extend_from_slice(body);
        self.send_raw(WsMessage::Binary(data.into())).await;
    }

    pub async fn send_tick(&mut self, room: RoomSlot, sender: MemberId, seq: u32, payload: &[u8]) {
        let datagram = encode_datagram(&Datagram::Tick(Tick {
            room,
            sender,
            seq,
            payload,
        }));
        self.send_lane(1, &datagram).await;
    }

    /// The next control message, tick or close, within [`WAIT`].
    pub async fn next(&mut self) -> WsIn {
        use futures_util::StreamExt;
        tokio::time::timeout(WAIT, async {
            loop {
                let message = match self.socket.next().await {
                    None => return WsIn::Closed(None),
                    Some(Err(_)) => return WsIn::Closed(None),
                    Some(Ok(message)) => message,
                };
                match message {
                    WsMessage::Binary(data) => match data.first() {
                        Some(0) => {
                            self.partial.extend_from_slice(&data[1..]);
                            let body = std::mem::take(&mut self.partial);
                            return WsIn::Control(
                                decode_server_message(&body).expect("server message decodes"),
                            );
                        }
                        Some(1) => return WsIn::Tick(data[1..].to_vec()),
                        Some(3) => return WsIn::Pack(data[1..].to_vec()),
                        Some(2) => self.partial.extend_from_slice(&data[1..]),
                        other => panic!("unknown lane {other:?}"),
                    },
                    WsMessage::Close(frame) => {
                        return WsIn::Closed(frame.map(|f| u16::from(f.code)));
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("a WebSocket message in time")
    }

    /// The next tick, skipping control messages.
    pub async fn recv_tick(&mut self) -> Vec<u8> {
        loop {
            match self.next().await {
                WsIn::Tick(tick) => return tick,
                WsIn::Control(_) | WsIn::Pack(_) => {}
                WsIn::Closed(code) => panic!("closed ({code:?}) while waiting for a tick"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed_code(&mut self) -> Option<u16> {
        loop {
            if let WsIn::Closed(code) = self.next().await {
                return code;
            }
        }
    }
}

/// A plain HTTP/1.1 GET through hyper: status, content type, body.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    http_get_over(stream, &addr.to_string(), path, headers).await
}

/// The response headers of a plain HTTP GET, lowercase names.
pub async fn http_headers(
    addr: std::net::SocketAddr,
    path: &str,
) -> std::collections::HashMap<String, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("http handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect()
}

/// An HTTP/1.1 GET through hyper over any stream (plain or TLS).
pub async fn http_get_over<S>(
    stream: S,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Empty};
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("http handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A TCP forwarder in front of the server, to break connections the way a
/// network does (both directions cut at once, no close handshake from the
/// client), while new connections still get through.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    upstream: std::sync::Arc<std::sync::Mutex<std::net::SocketAddr>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listens");
        let addr = listener.local_addr().expect("proxy address");
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept_links = links.clone();
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(upstream));
        let accept_upstream = upstream.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = *accept_upstream.lock().expect("upstream");
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accept_links.lock().expect("links").push(link);
            }
        });
        TcpProxy {
            addr,
            links,
            upstream,
            accept,
        }
    }

    /// New connections go to `upstream` from now on (a server restarted
    /// elsewhere behind the same address).
    pub fn redirect(&self, upstream: std::net::SocketAddr) {
        *self.upstream.lock().expect("upstream") = upstream;
    }

    /// Cuts every connection through the proxy now.
    pub fn sever(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}

/// A UDP forwarder in front of the server's QUIC endpoint that can go silent
/// (a network that stops carrying packets), for one client at a time.
pub struct UdpProxy {
    pub addr: std::net::SocketAddr,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> UdpProxy {
        use std::sync::atomic::Ordering;
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("proxy binds");
        let addr = front.local_addr().expect("proxy address");
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("proxy binds");
        back.connect(upstream).await.expect("proxy connects");
        let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let quiet = silent.clone();
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    got = front.recv_from(&mut a) => {
                        let Ok((n, from)) = got else { return };
                        client = Some(from);
                        if !quiet.load(Ordering::Relaxed) {
                            let _ = back.send(&a[..n]).await;
                        }
                    }
                    got = back.recv(&mut b) => {
                        let Ok(n) = got else { return };
                        if let (Some(to), false) = (client, quiet.load(Ordering::Relaxed)) {
                            let _ = front.send_to(&b[..n], to).await;
                        }
                    }
                }
            }
        });
        UdpProxy { addr, silent, task }
    }

    /// From now on, no packet passes either way.
    pub fn go_silent(&self) {
        self.silent
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh, empty directory for one test (a data directory, say).
pub fn fresh_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir =
        std::env::temp_dir().join(format!("chorus-test-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a test directory");
    dir
}

/// The real `chorus` binary, running on ephemeral loopback ports. Killed
/// (SIGKILL) when dropped.
pub struct ChorusProcess {
    pub child: std::process::Child,
    /// Where its WebSocket listener is.
    pub tcp: std::net::SocketAddr,
}

impl Drop for ChorusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chorus_command(args: &[&std::ffi::OsStr]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_chorus"));
    command
        .args(["--listen", "127.0.0.1:0", "--no-demo", "--cert-dir"])
        .arg(cert_dir())
        .args(args);
    command
}

impl ChorusProcess {
    /// Starts the binary with these extra arguments and reads where it listens.
    pub fn start(args: &[&std::ffi::OsStr]) -> ChorusProcess {
        use std::io::{BufRead, BufReader};
        let mut child = chorus_command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chorus starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut tcp = None;
        for line in lines.by_ref() {
            let line = line.expect("a line");
            // "  WebSocket     ws:// and wss://127.0.0.1:PORT/chorus"
            if let Some(rest) = line.trim().strip_prefix("WebSocket") {
                let addr = rest
                    .rsplit("://")
                    .next()
                    .and_then(|s| s.strip_suffix("/chorus"))
                    .expect("an address");
                tcp = Some(addr.parse().expect("a socket address"));
            }
            if line.starts_with("certificate sha256:") {
                break;
            }
        }
        // Keep reading, so the server never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ChorusProcess {
            child,
            tcp: tcp.expect("chorus printed its WebSocket address"),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/chorus", self.tcp)
    }

    /// Sends `signal` (e.g. "-TERM", "-KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Waits (at most 20 s, then fails) for the process to exit.
    pub async fn wait_exit(mut self) -> std::process::ExitStatus {
        let mut child = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = self.child.try_wait().expect("wait") {
                    return status;
                }
                assert!(std::time::Instant::now() < deadline, "chorus did not exit");
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (&mut child).await.expect("wait task")
    }

    /// SIGKILL, and wait until the process is gone (so its files are free).
    pub async fn kill9(self) {
        self.signal("-KILL");
        let _ = self.wait_exit().await;
    }
}

/// Runs the binary expecting it to refuse to start: its exit status and
/// what it wrote to stderr. Fails if it is still running after 20 s.
pub async fn chorus_refusal(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = chorus_command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chorus starts");
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                panic!("chorus kept running; it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    })
    .await
    .expect("wait task")
}
