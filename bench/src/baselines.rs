//! The Node.js relays Chorus is compared against (`bench/baselines/`), seen
//! from the bench: a client for each, and a launcher for their processes.
//!
//! This module owns:
//!
//! - [`RelayKind`]: which relay (the `ws` one or the Socket.IO 4 one), its
//!   script and its name.
//! - [`RelayClient`]: one connection that has joined one room. It sends ticks
//!   ([`TickSender`]) and yields the ticks the relay forwards from the room's
//!   other members ([`TickStream`]), stamped when they were read off the socket.
//!   It speaks each relay's JSON messages over plain `ws://` (tokio-tungstenite);
//!   for Socket.IO that means Engine.IO v4 / Socket.IO v5 packets on the
//!   WebSocket transport (`/socket.io/?EIO=4&transport=websocket`): the open
//!   packet `0{…}`, namespace connect `40`, events `42[…]`, acks `43N[…]`, and
//!   the server's heartbeat ping `2` answered with pong `3`.
//! - [`RelayProcess`]: a relay started with `node` on a free loopback port,
//!   ready once it printed its ready line, killed on drop; its pid is what to
//!   sample in `/proc`. [`ensure_installed`] runs `npm ci` when the relays'
//!   packages are missing and [`node_version`] says whether `node` is there.
//!
//! Wire shapes (bench/baselines/README.md has them all): ticks travel as the
//! standard base64 of the payload inside JSON, `{"t":"tick","d":"…"}` to the
//! `ws` relay and `42["tick","…"]` to Socket.IO; the relays forward
//! `{"t":"tick","from":N,"d":"…"}` and `42["tick",{"from":"…","d":"…"}]`. The
//! sender's identity is not surfaced: the bench payload header carries it.
//!
//! What it does not own: scheduling, accounting and reporting, which stay in
//! the harness ([`crate::run`], [`crate::report`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::AbortHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

// ---- relays ---------------------------------------------------------------

/// Which Node.js relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayKind {
    /// `ws-relay.mjs`: the `ws` package, JSON messages `{"t":…}`.
    Ws,
    /// `socketio-relay.mjs`: Socket.IO 4, `join` and `tick` events.
    SocketIo,
}

impl RelayKind {
    /// Both, in the order reports list them.
    pub const ALL: [RelayKind; 2] = [RelayKind::Ws, RelayKind::SocketIo];

    /// `"ws"` or `"socketio"` (as in the ready line, the JSON line and `FromStr`).
    pub fn name(self) -> &'static str {
        match self {
            RelayKind::Ws => "ws",
            RelayKind::SocketIo => "socketio",
        }
    }

    /// The script in `bench/baselines/`.
    pub fn script(self) -> &'static str {
        match self {
            RelayKind::Ws => "ws-relay.mjs",
            RelayKind::SocketIo => "socketio-relay.mjs",
        }
    }

    /// The URL a client connects to for a relay listening on `addr`: the root
    /// for `ws`, the Engine.IO endpoint on its WebSocket transport for Socket.IO.
    pub fn url(self, addr: SocketAddr) -> String {
        match self {
            RelayKind::Ws => format!("ws://{addr}/"),
            RelayKind::SocketIo => format!("ws://{addr}/socket.io/?{SOCKETIO_QUERY}"),
        }
    }
}

impl fmt::Display for RelayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RelayKind {
    type Err = BaselineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RelayKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| BaselineError::UnknownRelay(s.to_owned()))
    }
}

/// Engine.IO v4 on the WebSocket transport, without the HTTP long-polling start.
const SOCKETIO_QUERY: &str = "EIO=4&transport=websocket";

// ---- errors ---------------------------------------------------------------

/// What can go wrong with a relay or a connection to one.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("unknown relay {0:?}: expected ws or socketio")]
    UnknownRelay(String),
    #[error("bad relay URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("TCP connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("WebSocket handshake with {url}: {source}")]
    Handshake {
        url: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
    #[error("WebSocket: {0}")]
    WebSocket(#[source] Box<tungstenite::Error>),
    /// The relay sent something this client does not expect.
    #[error("{kind} relay sent {detail}")]
    Protocol { kind: RelayKind, detail: String },
    /// The relay answered a join with an error.
    #[error("the {kind} relay refused to join room {room:?}: {reason}")]
    JoinRefused {
        kind: RelayKind,
        room: String,
        reason: String,
    },
    /// The `ws` relay refused a message other than a join.
    #[error("the ws relay refused a message: {0}")]
    Refused(String),
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// The connection ended (closed by either side, or the reader stopped).
    #[error("the connection to the relay is closed{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed { reason: Option<String> },
    #[error("`{program}` was not found: the baselines need Node.js >= 20 and npm on PATH")]
    NodeMissing { program: String },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`npm ci` in {dir} failed ({status}):\n{output}")]
    NpmInstall {
        dir: PathBuf,
        status: ExitStatus,
        output: String,
    },
    #[error("the {kind} relay exited before it was ready ({status}); its stderr:\n{stderr}")]
    RelayExited {
        kind: RelayKind,
        status: String,
        stderr: String,
    },
    #[error("the {kind} relay printed no ready line within {after:?}; its stderr:\n{stderr}")]
    RelayNotReady {
        kind: RelayKind,
        after: Duration,
        stderr: String,
    },
    #[error("the {kind} relay's ready line is not the expected JSON: {line:?}")]
    BadReadyLine { kind: RelayKind, line: String },
    #[error("waiting for the {kind} relay to exit: {source}")]
    Wait {
        kind: RelayKind,
        #[source]
        source: std::io::Error,
    },
}

impl BaselineError {
    fn protocol(kind: RelayKind, detail: impl Into<String>) -> Self {
        BaselineError::Protocol {
            kind,
            detail: detail.into(),
        }
    }

    fn closed(reason: impl Into<String>) -> Self {
        BaselineError::Closed {
            reason: Some(reason.into()),
        }
    }
}

impl From<tungstenite::Error> for BaselineError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                BaselineError::Closed { reason: None }
            }
            other => BaselineError::WebSocket(Box::new(other)),
        }
    }
}

// ---- client ---------------------------------------------------------------

/// Settings of one [`RelayClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Ticks the [`TickStream`] holds before it loses the oldest (as the
    /// Chorus SDK's `ConnectOptions::tick_capacity`).
    pub tick_capacity: usize,
    /// Bound on connecting (TCP, WebSocket and Socket.IO handshakes) and on
    /// each join or rejoin waiting for the relay's answer.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tick_capacity: 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A tick the relay forwarded from another member of the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTick {
    /// The payload as the sender gave it (decoded from base64).
    pub payload: Bytes,
    /// When the message carrying it was read off the socket, before decoding.
    pub received_at: Instant,
}

/// The relay's answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAck {
    /// The room joined.
    pub room: String,
    /// The relay's id for this connection (a number for `ws`, the socket id for Socket.IO).
    pub id: String,
    /// Members in the room once this one joined, itself included.
    pub members: u32,
}

type Socket = WebSocketStream<TcpStream>;

/// A connection to a relay, joined to one room. Split it with
/// [`into_parts`](Self::into_parts) to send and receive from separate tasks;
/// the connection lives until both parts are dropped (or [`TickSender::close`]).
#[derive(Debug)]
pub struct RelayClient {
    joined: JoinAck,
    sender: TickSender,
    ticks: TickStream,
}

impl RelayClient {
    /// Connects to the relay at `url` (plain `ws://`: [`RelayProcess::url`] or
    /// [`RelayKind::url`]; a Socket.IO URL without a query gets
    /// `?EIO=4&transport=websocket`) and joins `room`, waiting for the relay's
    /// answer. Every step is bounded by `options.timeout`.
    pub async fn connect(
        kind: RelayKind,
        url: &str,
        room: &str,
        options: &ClientOptions,
    ) -> Result<RelayClient, BaselineError> {
        let url = client_url(kind, url);
        let (socket, early) = tokio::time::timeout(options.timeout, open(kind, &url))
            .await
            .map_err(|_| BaselineError::Timeout {
                what: "connecting to the relay",
                after: options.timeout,
            })??;
        let (sink, stream) = socket.split();
        let link = Arc::new(Link {
            kind,
            room: room.to_owned(),
            timeout: options.timeout,
            sink: tokio::sync::Mutex::new(sink),
            pending: Mutex::new(Pending::default()),
        });
        let (ticks_tx, ticks_rx) = broadcast::channel(options.tick_capacity.max(1));
        let end = Arc::new(Mutex::new(None));
        let reader = tokio::spawn(read_loop(
            stream,
            early,
            Arc::clone(&link),
            ticks_tx,
            Arc::clone(&end),
        ));
        let guard = Arc::new(ReaderGuard(reader.abort_handle()));
        let sender = TickSender {
            link,
            _reader: Arc::clone(&guard),
        };
        let ticks = TickStream {
            rx: ticks_rx,
            dropped: 0,
            end,
            _reader: guard,
        };
        let joined = sender.rejoin().await?;
        Ok(RelayClient {
            joined,
            sender,
            ticks,
        })
    }

    /// The relay's answer to the join made by [`connect`](Self::connect).
    pub fn joined(&self) -> &JoinAck {
        &self.joined
    }

    /// Which relay this is connected to.
    pub fn kind(&self) -> RelayKind {
        self.sender.link.kind
    }

    /// Sends one tick to the room's other members; see [`TickSender::send_tick`].
    pub async fn send_tick(&self, payload: &[u8]) -> Result<(), BaselineError> {
        self.sender.send_tick(payload).await
    }

    /// The next tick from another member; see [`TickStream::recv`].
    pub async fn recv(&mut self) -> Option<RelayTick> {
        self.ticks.recv().await
    }

    /// A sender handle (cheap to clone).
    pub fn sender(&self) -> TickSender {
        self.sender.clone()
    }

    /// The sending and receiving halves.
    pub fn into_parts(self) -> (TickSender, TickStream) {
        (self.sender, self.ticks)
    }
}

/// What the senders and the reader of one connection share.
struct Link {
    kind: RelayKind,
    room: String,
    timeout: Duration,
    /// Writes: ticks and joins from senders, pongs from the reader.
    sink: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    /// Joins waiting for the relay's answer, in the order they were written.
    pending: Mutex<Pending>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("kind", &self.kind)
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

type JoinReply = Result<JoinAck, BaselineError>;

#[derive(Debug, Default)]
struct Pending {
    /// Socket.IO ack ids; the `ws` relay answers joins in order, without ids.
    next_ack_id: u64,
    waiting: VecDeque<(u64, oneshot::Sender<JoinReply>)>,
    /// Set by the reader when it stops: no answer will come.
    closed: bool,
}

impl Link {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A poisoned lock only means a panic elsewhere; the queue is still whole.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a join answer to the oldest waiting join (checking the Socket.IO
    /// ack id); an error if no join was waiting for it.
    fn answer(&self, ack_id: Option<u64>, reply: JoinReply) -> Result<(), BaselineError> {
        let waiter = {
            let mut pending = self.pending();
            match (pending.waiting.front(), ack_id) {
                (Some((id, _)), Some(got)) if *id != got => {
                    return Err(BaselineError::protocol(
                        self.kind,
                        format!("an ack for id {got} while waiting for {id}"),
                    ));
                }
                (None, _) => {
                    return Err(BaselineError::protocol(
                        self.kind,
                        "a join answer nobody asked for",
                    ));
                }
                _ => pending.waiting.pop_front().map(|(_, tx)| tx),
            }
        };
        if let Some(tx) = waiter {
            // The joiner may have given up (timeout): nothing to do then.
            let _ = tx.send(reply);
        }
        Ok(())
    }

    fn has_pending_join(&self) -> bool {
        !self.pending().waiting.is_empty()
    }
}

/// Aborts the reader task when the last [`TickSender`] and the [`TickStream`]
/// of a connection are gone, which drops the socket.
#[derive(Debug)]
struct ReaderGuard(AbortHandle);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends on one connection. Clones share it; writes are serialised.
#[derive(Debug, Clone)]
pub struct TickSender {
    link: Arc<Link>,
    _reader: Arc<ReaderGuard>,
}

impl TickSender {
    /// Sends one tick to the room's other members, as the relay's JSON message
    /// with the payload in base64. Returns once the message is written to the
    /// socket (not when the relay has it): a relay that reads slowly makes
    /// this wait, which the harness sees as send lateness.
    pub async fn send_tick(&self, payload: &[u8]) -> Result<(), BaselineError> {
        let text = encode_tick(self.link.kind, payload);
        self.link
            .sink
            .lock()
            .await
            .send(Message::text(text))
            .await?;
        Ok(())
    }

    /// Joins the same room again and waits for the relay's answer. Membership
    /// does not change, but the answer is a barrier: the relay handles one
    /// connection's messages in order and writes to one connection in order,
    /// so when this returns the relay has handled every tick sent before it on
    /// this connection, and every tick it forwarded to this connection before
    /// its answer is already in the [`TickStream`]. (Also how
    /// [`RelayClient::connect`] joins.)
    pub async fn rejoin(&self) -> Result<JoinAck, BaselineError> {
        let link = &self.link;
        let (tx, rx) = oneshot::channel();
        {
            let mut sink = link.sink.lock().await;
            // Queued under the sink lock, so the queue order is the write order.
            let ack_id = {
                let mut pending = link.pending();
                if pending.closed {
                    return Err(BaselineError::Closed { reason: None });
                }
                let id = pending.next_ack_id;
                pending.next_ack_id += 1;
                pending.waiting.push_back((id, tx));
                id
            };
            sink.send(Message::text(encode_join(link.kind, &link.room, ack_id)))
                .await?;
        }
        match tokio::time::timeout(link.timeout, rx).await {
            Err(_) => Err(BaselineError::Timeout {
                what: "waiting for the relay's answer to a join",
                after: link.timeout,
            }),
            // The reader stopped before the answer came.
            Ok(Err(_)) => Err(BaselineError::Closed { reason: None }),
            Ok(Ok(reply)) => reply,
        }
    }

    /// Starts the WebSocket close handshake; the reader ends when the relay
    /// answers (or the connection drops).
    pub async fn close(&self) -> Result<(), BaselineError> {
        self.link.sink.lock().await.close().await?;
        Ok(())
    }
}

/// The ticks the relay forwards from the room's other members.
///
/// Bounded like the Chorus SDK's tick receiver: one that falls behind loses
/// the *oldest* ticks and goes on with the newest; [`dropped`](Self::dropped)
/// counts what it lost. Ends (`recv` returns `None`) when the connection does;
/// [`take_end_reason`](Self::take_end_reason) then says why.
#[derive(Debug)]
pub struct TickStream {
    rx: broadcast::Receiver<RelayTick>,
    dropped: u64,
    end: Arc<Mutex<Option<BaselineError>>>,
    _reader: Arc<ReaderGuard>,
}

impl TickStream {
    /// The next tick, skipping over any lost to lag; `None` once the
    /// connection has ended.
    pub async fn recv(&mut self) -> Option<RelayTick> {
        loop {
            match self.rx.recv().await {
                Ok(tick) => return Some(tick),
                Err(broadcast::error::RecvError::Lagged(n)) => self.dropped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A tick already received, if any (`None` when there is none yet or the
    /// connection has ended).
    pub fn try_recv(&mut self) -> Option<RelayTick> {
        loop {
            match self.rx.try_recv() {
                Ok(tick) => return Some(tick),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.dropped += n,
                Err(_) => return None,
            }
        }
    }

    /// Ticks lost because this stream fell more than its capacity behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Why the connection ended, once it has (taken: later calls give `None`).
    pub fn take_end_reason(&mut self) -> Option<BaselineError> {
        self.end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// `url` as the client connects to it: a Socket.IO URL without a query gets
/// the Engine.IO one.
fn client_url(kind: RelayKind, url: &str) -> String {
    match kind {
        RelayKind::SocketIo if !url.contains('?') => format!("{url}?{SOCKETIO_QUERY}"),
        _ => url.to_owned(),
    }
}

/// TCP (no Nagle delay, as the relays set on their side), the WebSocket
/// upgrade, and for Socket.IO the Engine.IO open and namespace connect.
/// Returns the socket and any ticks that came before the handshake finished.
async fn open(kind: RelayKind, url: &str) -> Result<(Socket, Vec<Incoming>), BaselineError> {
    let bad_url = |reason: &str| BaselineError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let request = url
        .into_client_request()
        .map_err(|e| bad_url(&e.to_string()))?;
    if request.uri().scheme_str() != Some("ws") {
        return Err(bad_url("only plain ws:// is supported"));
    }
    let host = request
        .uri()
        .host()
        .ok_or_else(|| bad_url("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| BaselineError::Connect {
            url: url.to_owned(),
            source,
        })?;
    tcp.set_nodelay(true)
        .map_err(|source| BaselineError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let (mut socket, _response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(|source| BaselineError::Handshake {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    let early = match kind {
        RelayKind::Ws => Vec::new(),
        RelayKind::SocketIo => socketio_handshake(&mut socket).await?,
    };
    Ok((socket, early))
}

/// Engine.IO open packet, then the Socket.IO connect to the main namespace.
async fn socketio_handshake(socket: &mut Socket) -> Result<Vec<Incoming>, BaselineError> {
    let kind = RelayKind::SocketIo;
    match next_text(socket, kind).await? {
        text if text.starts_with('0') => {
            let open: EngineOpen = serde_json::from_str(&text[1..]).map_err(|e| {
                BaselineError::protocol(kind, format!("a bad Engine.IO open packet ({e}): {text}"))
            })?;
            if open.sid.is_empty() {
                return Err(BaselineError::protocol(kind, "an open packet without sid"));
            }
        }
        text => {
            return Err(BaselineError::protocol(
                kind,
                format!("{text:?} instead of the Engine.IO open packet"),
            ));
        }
    }
    socket.send(Message::text("40")).await?;
    let mut early = Vec::new();
    loop {
        let text = next_text(socket, kind).await?;
        match decode_socketio(&text).map_err(|detail| BaselineError::protocol(kind, detail))? {
            Incoming::Connected => return Ok(early),
            Incoming::ConnectError(message) => {
                return Err(BaselineError::protocol(
                    kind,
                    format!("a connect error: {message}"),
                ));
            }
            Incoming::Ping => socket.send(Message::text("3")).await?,
            Incoming::Nothing => {}
            tick @ Incoming::Tick(_) => early.push(tick),
            other => {
                return Err(BaselineError::protocol(
                    kind,
                    format!("{other:?} before the namespace connect"),
                ));
            }
        }
    }
}

/// The next text message (WebSocket pings are answered by tungstenite).
async fn next_text(socket: &mut Socket, kind: RelayKind) -> Result<String, BaselineError> {
    loop {
        match socket.next().await {
            None => return Err(BaselineError::closed("during the handshake")),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                return Err(BaselineError::closed(format!(
                    "the relay closed during the handshake: {frame:?}"
                )));
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(BaselineError::protocol(kind, "a binary message"));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Reads until the connection ends: forwards ticks (stamped on arrival),
/// answers joins and Engine.IO pings. Records why it stopped, then drops the
/// tick sender, which ends the [`TickStream`].
async fn read_loop(
    mut stream: SplitStream<Socket>,
    early: Vec<Incoming>,
    link: Arc<Link>,
    ticks: broadcast::Sender<RelayTick>,
    end: Arc<Mutex<Option<BaselineError>>>,
) {
    let kind = link.kind;
    for incoming in early {
        if let Incoming::Tick(payload) = incoming {
            let _ = ticks.send(RelayTick {
                payload,
                received_at: Instant::now(),
            });
        }
    }
    let reason = loop {
        let text = match stream.next().await {
            None => break BaselineError::Closed { reason: None },
            Some(Err(e)) => break e.into(),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                break BaselineError::Closed {
                    reason: frame.map(|f| format!("closed by the relay: {} {}", f.code, f.reason)),
                };
            }
            Some(Ok(Message::Binary(_))) => {
                break BaselineError::protocol(kind, "a binary message");
            }
            // WebSocket pings are answered by tungstenite itself.
            Some(Ok(_)) => continue,
        };
        let received_at = Instant::now();
        let decoded = match kind {
            RelayKind::Ws => decode_ws(&text),
            RelayKind::SocketIo => decode_socketio(&text),
        };
        let incoming = match decoded {
            Ok(incoming) => incoming,
            Err(detail) => break BaselineError::protocol(kind, detail),
        };
        match incoming {
            Incoming::Tick(payload) => {
                // No receiver (the stream was dropped) is fine: the sender
                // half still works, and the reader still answers pings.
                let _ = ticks.send(RelayTick {
                    payload,
                    received_at,
                });
            }
            Incoming::Joined { ack_id, result } => {
                let reply = result.map_err(|reason| BaselineError::JoinRefused {
                    kind,
                    room: link.room.clone(),
                    reason,
                });
                if let Err(e) = link.answer(ack_id, reply) {
                    break e;
                }
            }
            Incoming::RelayError(reason) if link.has_pending_join() => {
                // The ws relay answers a refused join with an error message.
                let reply = Err(BaselineError::JoinRefused {
                    kind,
                    room: link.room.clone(),
                    reason,
                });
                if let Err(e) = link.answer(None, reply) {
                    break e;
                }
            }
            Incoming::RelayError(reason) => break BaselineError::Refused(reason),
            Incoming::Ping => {
                if let Err(e) = link.sink.lock().await.send(Message::text("3")).await {
                    break e.into();
                }
            }
            Incoming::Nothing => {}
            Incoming::Disconnected(why) => break BaselineError::closed(why),
            other @ (Incoming::Connected | Incoming::ConnectError(_)) => {
                break BaselineError::protocol(kind, format!("{other:?} after the handshake"));
            }
        }
    };
    {
        let mut pending = link.pending();
        pending.closed = true;
        // Dropping the waiting senders tells the joiners the connection is gone.
        pending.waiting.clear();
    }
    *end.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
}

// ---- wire -----------------------------------------------------------------

/// One message from a relay, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Incoming {
    /// A tick from another member: its payload.
    Tick(Bytes),
    /// The answer to a join: Socket.IO gives the ack id, `ws` answers in order.
    Joined {
        ack_id: Option<u64>,
        result: Result<JoinAck, String>,
    },
    /// The `ws` relay refused a message.
    RelayError(String),
    /// Engine.IO heartbeat: answer with a pong.
    Ping,
    /// Socket.IO namespace connect accepted.
    Connected,
    /// Socket.IO namespace connect refused.
    ConnectError(String),
    /// Engine.IO close or Socket.IO disconnect.
    Disconnected(String),
    /// Nothing to do (Engine.IO noop or pong).
    Nothing,
}

/// A tick as the client sends it: `{"t":"tick","d":"<base64>"}` or
/// `42["tick","<base64>"]`. Standard base64 needs no JSON escaping.
pub fn encode_tick(kind: RelayKind, payload: &[u8]) -> String {
    let (head, tail) = match kind {
        RelayKind::Ws => (r#"{"t":"tick","d":""#, r#""}"#),
        RelayKind::SocketIo => (r#"42["tick",""#, r#""]"#),
    };
    let mut text = String::with_capacity(head.len() + payload.len().div_ceil(3) * 4 + tail.len());
    text.push_str(head);
    BASE64.encode_string(payload, &mut text);
    text.push_str(tail);
    text
}

/// A join as the client sends it: `{"t":"join","room":"…"}` or, with the
/// ack id Socket.IO answers with, `42N["join","…"]`.
fn encode_join(kind: RelayKind, room: &str, ack_id: u64) -> String {
    // A JSON string of a Rust string always serialises.
    let room = serde_json::Value::from(room).to_string();
    match kind {
        RelayKind::Ws => format!(r#"{{"t":"join","room":{room}}}"#),
        RelayKind::SocketIo => format!(r#"42{ack_id}["join",{room}]"#),
    }
}

fn decode_payload(d: &str) -> Result<Bytes, String> {
    BASE64
        .decode(d)
        .map(Bytes::from)
        .map_err(|e| format!("a tick whose payload is not base64 ({e})"))
}

/// Every message of the `ws` relay, with the fields each type uses.
#[derive(Debug, Deserialize)]
struct WsMessage<'a> {
    #[serde(borrow)]
    t: Cow<'a, str>,
    #[serde(borrow, default)]
    d: Option<Cow<'a, str>>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    members: Option<u32>,
    #[serde(default)]
    error: Option<String>,
}

fn decode_ws(text: &str) -> Result<Incoming, String> {
    let message: WsMessage<'_> = serde_json::from_str(text)
        .map_err(|e| format!("a message that is not ours ({e}): {text}"))?;
    match &*message.t {
        "tick" => {
            let d = message
                .d
                .ok_or_else(|| format!("a tick without d: {text}"))?;
            decode_payload(&d).map(Incoming::Tick)
        }
        "joined" => {
            let ack = join_ack(message.room, message.id, message.members)
                .ok_or_else(|| format!("a join answer without room, id or members: {text}"))?;
            Ok(Incoming::Joined {
                ack_id: None,
                result: Ok(ack),
            })
        }
        "error" => Ok(Incoming::RelayError(
            message.error.unwrap_or_else(|| text.to_owned()),
        )),
        other => Err(format!("a message of unknown type {other:?}: {text}")),
    }
}

fn join_ack(
    room: Option<String>,
    id: Option<serde_json::Value>,
    members: Option<u32>,
) -> Option<JoinAck> {
    let id = match id? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(JoinAck {
        room: room?,
        id,
        members: members?,
    })
}

/// The Engine.IO open packet's fields this client checks.
#[derive(Debug, Deserialize)]
struct EngineOpen {
    sid: String,
}

/// The arguments of a forwarded tick event: `["tick",{"from":…,"d":…}]`.
#[derive(Debug, Deserialize)]
struct TickEventArgs<'a>(#[serde(borrow)] Cow<'a, str>, #[serde(borrow)] TickBody<'a>);

#[derive(Debug, Deserialize)]
struct TickBody<'a> {
    #[serde(borrow)]
    d: Cow<'a, str>,
}

/// The Socket.IO relay's join answer (the ack's single argument).
#[derive(Debug, Deserialize)]
struct SocketIoJoinAck {
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    members: Option<u32>,
    #[serde(default)]
    error: Option<String>,
}

/// One Engine.IO v4 packet (one WebSocket text message) carrying, for type
/// `4`, a Socket.IO v5 packet: type digit, `/nsp,` if not the main namespace,
/// ack id digits, JSON.
fn decode_socketio(text: &str) -> Result<Incoming, String> {
    let mut chars = text.chars();
    match chars.next() {
        Some('4') => {}
        Some('2') => return Ok(Incoming::Ping),
        Some('3' | '6') => return Ok(Incoming::Nothing),
        Some('1') => return Ok(Incoming::Disconnected("Engine.IO close".into())),
        _ => {
            return Err(format!(
                "an Engine.IO packet this client does not expect: {text:?}"
            ));
        }
    }
    let packet = &text[1..];
    let Some(packet_type) = packet.chars().next() else {
        return Err("an empty Socket.IO packet".into());
    };
    let mut rest = &packet[packet_type.len_utf8()..];
    if rest.starts_with('/') {
        return Err(format!("a packet for another namespace: {text:?}"));
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack_id = if digits > 0 {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|e| format!("a bad ack id ({e}): {text:?}"))?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    match packet_type {
        '0' => Ok(Incoming::Connected),
        '1' => Ok(Incoming::Disconnected("Socket.IO disconnect".into())),
        '4' => Ok(Incoming::ConnectError(rest.to_owned())),
        '2' => {
            let TickEventArgs(event, body) = serde_json::from_str(rest)
                .map_err(|e| format!("an event that is not a tick ({e}): {text}"))?;
            if event != "tick" {
                return Err(format!("an event this client does not expect: {text}"));
            }
            decode_payload(&body.d).map(Incoming::Tick)
        }
        '3' => {
            let (answer,): (SocketIoJoinAck,) = serde_json::from_str(rest)
                .map_err(|e| format!("an ack that is not a join answer ({e}): {text}"))?;
            let result = match answer.error {
                Some(error) => Err(error),
                None => join_ack(answer.room, answer.id, answer.members)
                    .ok_or_else(|| format!("a join answer without room, id or members: {text}")),
            };
            Ok(Incoming::Joined { ack_id, result })
        }
        _ => Err(format!(
            "a Socket.IO packet this client does not expect: {text:?}"
        )),
    }
}

// ---- processes ------------------------------------------------------------

/// Where the relays and their `package.json` live: `bench/baselines/` in this
/// source tree.
pub fn baselines_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines")
}

/// `node --version` (e.g. `v20.20.2`); [`BaselineError::NodeMissing`] when
/// there is no such program.
pub fn node_version(node: &OsStr) -> Result<String, BaselineError> {
    let program = node.to_string_lossy().into_owned();
    let output = Command::new(node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BaselineError::NodeMissing {
                program: program.clone(),
            },
            _ => BaselineError::Spawn {
                program: program.clone(),
                source,
            },
        })?;
    if !output.status.success() {
        return Err(BaselineError::Spawn {
            program,
            source: std::io::Error::other(format!("--version exited with {}", output.status)),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs `npm ci` in `dir` unless its `node_modules` is already installed
/// (npm's `node_modules/.package-lock.json` is there). Returns whether it ran.
/// A `package-lock.json` changed since the install is not noticed: delete
/// `node_modules` then.
pub fn ensure_installed(dir: &Path) -> Result<bool, BaselineError> {
    if dir
        .join("node_modules")
        .join(".package-lock.json")
        .is_file()
    {
        return Ok(false);
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BaselineError::NodeMissing {
                program: "npm".into(),
            },
            _ => BaselineError::Spawn {
                program: "npm".into(),
                source,
            },
        })?;
    if !output.status.success() {
        return Err(BaselineError::NpmInstall {
            dir: dir.to_owned(),
            status: output.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(true)
}

/// How to start a relay.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The Node.js program.
    pub node: OsString,
    /// Where the scripts and their `node_modules` are.
    pub dir: PathBuf,
    /// Address to listen on.
    pub host: IpAddr,
    /// Port; 0: a free one chosen by the system (read back from the ready line).
    pub port: u16,
    /// How long to wait for the ready line.
    pub ready_timeout: Duration,
    /// How long [`RelayProcess::stop`] waits for a clean exit before killing.
    pub stop_timeout: Duration,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            node: "node".into(),
            dir: baselines_dir(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            ready_timeout: Duration::from_secs(15),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// The ready line both relays print on stdout.
#[derive(Debug, Deserialize)]
struct ReadyLine {
    event: String,
    relay: String,
    url: String,
    port: u16,
    pid: u32,
}

/// Lines a relay printed on stderr, the last [`STDERR_LINES`] of them.
type StderrTail = Arc<Mutex<VecDeque<String>>>;
pub(crate) const STDERR_LINES: usize = 50;

/// A running relay process. Dropping it kills the process; [`stop`](Self::stop)
/// asks it to exit cleanly first.
#[derive(Debug)]
pub struct RelayProcess {
    kind: RelayKind,
    child: Child,
    /// Held open: the relay runs with `--exit-with-stdin`, so closing it is a
    /// clean stop, and a launcher that dies takes the relay with it.
    stdin: Option<ChildStdin>,
    pid: u32,
    addr: SocketAddr,
    url: String,
    stderr: StderrTail,
    stop_timeout: Duration,
    /// Keeps [`Self::stderr`]; joined when the relay exits before it is
    /// ready, so the error has all it said. (Another thread drains stdout so
    /// the relay never blocks on a full pipe; it ends with the process.)
    stderr_reader: Option<JoinHandle<()>>,
}

impl RelayProcess {
    /// Starts `node <script> --port P --host H --exit-with-stdin` in
    /// `options.dir` and waits for its ready line. Blocks the calling thread
    /// (at most `options.ready_timeout`); call it outside async code or in
    /// `spawn_blocking`. The packages must be installed ([`ensure_installed`]).
    pub fn start(kind: RelayKind, options: &LaunchOptions) -> Result<RelayProcess, BaselineError> {
        let program = options.node.to_string_lossy().into_owned();
        let mut child = Command::new(&options.node)
            .arg(kind.script())
            .args(["--port", &options.port.to_string()])
            .args(["--host", &options.host.to_string()])
            .arg("--exit-with-stdin")
            .current_dir(&options.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => BaselineError::NodeMissing {
                    program: program.clone(),
                },
                _ => BaselineError::Spawn {
                    program: program.clone(),
                    source,
                },
            })?;
        let stdin = child.stdin.take();
        let stderr: StderrTail = Arc::new(Mutex::new(VecDeque::new()));
        let (line_tx, line_rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || forward_first_line(out, line_tx));
        }
        let stderr_reader = child.stderr.take().map(|err| {
            let tail = Arc::clone(&stderr);
            std::thread::spawn(move || keep_tail(err, &tail))
        });
        let mut process = RelayProcess {
            kind,
            child,
            stdin,
            pid: 0,
            addr: SocketAddr::new(options.host, options.port),
            url: String::new(),
            stderr,
            stop_timeout: options.stop_timeout,
            stderr_reader,
        };
        let line = match line_rx.recv_timeout(options.ready_timeout) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                process.kill_and_reap();
                return Err(BaselineError::RelayNotReady {
                    kind,
                    after: options.ready_timeout,
                    stderr: process.stderr_tail(),
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stdout closed without a line: the relay is exiting.
                let status = process
                    .wait_for_exit(Duration::from_secs(5))
                    .map_or_else(|| "still running".to_owned(), |s| s.to_string());
                process.kill_and_reap();
                // The process is gone, so its stderr is at its end.
                if let Some(reader) = process.stderr_reader.take() {
                    let _ = reader.join();
                }
                return Err(BaselineError::RelayExited {
                    kind,
                    status,
                    stderr: process.stderr_tail(),
                });
            }
        };
        let ready = serde_json::from_str::<ReadyLine>(&line)
            .ok()
            .filter(|r| r.event == "ready" && r.relay == kind.name());
        let Some(ready) = ready else {
            process.kill_and_reap();
            return Err(BaselineError::BadReadyLine { kind, line });
        };
        process.pid = ready.pid;
        process.addr = SocketAddr::new(options.host, ready.port);
        process.url = match kind {
            RelayKind::Ws => ready.url,
            RelayKind::SocketIo => format!("{}?{SOCKETIO_QUERY}", ready.url),
        };
        Ok(process)
    }

    pub fn kind(&self) -> RelayKind {
        self.kind
    }

    /// The relay's own pid, as it printed it: the process to sample in
    /// `/proc` (the spawned process, unless `node` is a wrapper).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL [`RelayClient::connect`] takes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The last lines the relay wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        tail_text(&self.stderr)
    }

    /// Asks the relay to exit (closes its standard input: the relay then
    /// shuts down as on SIGTERM) and waits up to `stop_timeout`; kills it if
    /// it is still running then. Returns how it exited.
    pub fn stop(mut self) -> Result<ExitStatus, BaselineError> {
        drop(self.stdin.take());
        if let Some(status) = self.wait_for_exit(self.stop_timeout) {
            return Ok(status);
        }
        let _ = self.child.kill();
        self.child.wait().map_err(|source| BaselineError::Wait {
            kind: self.kind,
            source,
        })
    }

    /// Polls for the exit status, at most `limit`.
    fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return None,
            }
        }
    }

    fn kill_and_reap(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Sends the first stdout line, then reads the rest so the pipe never fills.
fn forward_first_line(out: impl Read, first: mpsc::Sender<String>) {
    let mut lines = BufReader::new(out).lines();
    if let Some(Ok(line)) = lines.next() {
        let _ = first.send(line);
    }
    drop(first);
    for line in lines {
        match line {
            Ok(line) => tracing::debug!(%line, "relay stdout"),
            Err(_) => break,
        }
    }
}

/// The lines [`keep_tail`] kept, one text.
pub(crate) fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tail.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn keep_tail(err: impl Read, tail: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(err).lines() {
        let Ok(line) = line else { break };
        let mut tail = tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tail.len() == STDERR_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_json_with_base64_payloads() {
        assert_eq!(
            encode_tick(RelayKind::Ws, &[0, 1, 2, 255]),
            r#"{"t":"tick","d":"AAEC/w=="}"#
        );
        assert_eq!(
            encode_tick(RelayKind::SocketIo, &[0, 1, 2, 255]),
            r#"42["tick","AAEC/w=="]"#
        );
        // A 48-byte pose is 64 characters of base64.
        let text = encode_tick(RelayKind::Ws, &[7; 48]);
        assert_eq!(text.len(), r#"{"t":"tick","d":""}"#.len() + 64);
    }

    #[test]
    fn joins_escape_the_room_name() {
        assert_eq!(
            encode_join(RelayKind::Ws, "a\"b", 0),
            r#"{"t":"join","room":"a\"b"}"#
        );
        assert_eq!(
            encode_join(RelayKind::SocketIo, "bench-0", 12),
            r#"4212["join","bench-0"]"#
        );
    }

    #[test]
    fn ws_messages_decode() {
        assert_eq!(
            decode_ws(r#"{"t":"tick","from":7,"d":"AAEC/w=="}"#),
            Ok(Incoming::Tick(Bytes::from_static(&[0, 1, 2, 255])))
        );
        assert_eq!(
            decode_ws(r#"{"t":"joined","room":"r","id":3,"members":2}"#),
            Ok(Incoming::Joined {
                ack_id: None,
                result: Ok(JoinAck {
                    room: "r".into(),
                    id: "3".into(),
                    members: 2
                })
            })
        );
        assert_eq!(
            decode_ws(r#"{"t":"error","error":"tick before join"}"#),
            Ok(Incoming::RelayError("tick before join".into()))
        );
        assert!(decode_ws(r#"{"t":"tick","d":"not base64!"}"#).is_err());
        assert!(decode_ws(r#"{"t":"tick"}"#).is_err());
        assert!(decode_ws(r#"{"t":"what"}"#).is_err());
        assert!(decode_ws("[1,2]").is_err());
        assert!(decode_ws(r#"{"t":"joined","room":"r"}"#).is_err());
    }

    #[test]
    fn socketio_packets_decode() {
        assert_eq!(decode_socketio("2"), Ok(Incoming::Ping));
        assert_eq!(decode_socketio("3"), Ok(Incoming::Nothing));
        assert_eq!(decode_socketio(r#"40{"sid":"x"}"#), Ok(Incoming::Connected));
        assert_eq!(
            decode_socketio(r#"44{"message":"no"}"#),
            Ok(Incoming::ConnectError(r#"{"message":"no"}"#.into()))
        );
        assert_eq!(
            decode_socketio(r#"42["tick",{"from":"abc","d":"AAEC/w=="}]"#),
            Ok(Incoming::Tick(Bytes::from_static(&[0, 1, 2, 255])))
        );
        assert_eq!(
            decode_socketio(r#"4307[{"room":"r","id":"abc","members":3}]"#),
            Ok(Incoming::Joined {
                ack_id: Some(7),
                result: Ok(JoinAck {
                    room: "r".into(),
                    id: "abc".into(),
                    members: 3
                })
            })
        );
        assert_eq!(
            decode_socketio(r#"430[{"error":"bad room"}]"#),
            Ok(Incoming::Joined {
                ack_id: Some(0),
                result: Err("bad room".into())
            })
        );
        assert!(matches!(
            decode_socketio("41"),
            Ok(Incoming::Disconnected(_))
        ));
        assert!(matches!(
            decode_socketio("1"),
            Ok(Incoming::Disconnected(_))
        ));
        assert!(decode_socketio(r#"42["chat","hi"]"#).is_err());
        assert!(decode_socketio(r#"42/admin,["tick",{"d":""}]"#).is_err());
        assert!(decode_socketio("4").is_err());
        assert!(decode_socketio("").is_err());
        assert!(decode_socketio("x").is_err());
        assert!(decode_socketio(r#"451-["tick",{"_placeholder":true,"num":0}]"#).is_err());
    }

    #[test]
    fn relay_kinds_by_name_and_url() {
        assert_eq!("ws".parse::<RelayKind>().ok(), Some(RelayKind::Ws));
        assert_eq!(
            "socketio".parse::<RelayKind>().ok(),
            Some(RelayKind::SocketIo)
        );
        assert!("colyseus".parse::<RelayKind>().is_err());
        let addr = SocketAddr::from(([127, 0, 0, 1], 4000));
        assert_eq!(RelayKind::Ws.url(addr), "ws://127.0.0.1:4000/");
        assert_eq!(
            RelayKind::SocketIo.url(addr),
            "ws://127.0.0.1:4000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            client_url(RelayKind::SocketIo, "ws://127.0.0.1:4000/socket.io/"),
            "ws://127.0.0.1:4000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            client_url(RelayKind::Ws, "ws://127.0.0.1:4000/"),
            "ws://127.0.0.1:4000/"
        );
        assert_eq!(
            serde_json::to_string(&RelayKind::SocketIo).ok().as_deref(),
            Some("\"socketio\"")
        );
    }
}
