//! WebSocket (RFC 6455) over TCP, plain (`ws://`) or TLS (`wss://`), as
//! PROTOCOL.md §1.3 defines it.
//!
//! Every message is binary and starts with a lane byte:
//!
//! | lane | body |
//! |---|---|
//! | `0x00` | a complete control message, or the last piece of a chunked one |
//! | `0x01` | one `Datagram` (a tick), as on WebTransport |
//! | `0x02` | a piece of a control message continued by the next `0x02`/`0x00` |
//! | `0x03` | a pack message: a framed `PackStreamHeader`, then one chunk of content |
//!
//! Reading: [`Reassembler`] joins chunks (ticks and pack messages may come
//! between them) within `max_frame_bytes`. Text messages, empty messages and
//! unknown lane bytes are skipped. Any message, ping or pong counts as traffic
//! for the idle timeout.
//!
//! Writing: one writer task sends control messages, splitting those over
//! [`CHUNK_BYTES`] into pieces, and before each message or piece writes the
//! pending ticks. [`Room::send_tick`](crate::Room::send_tick) never waits: it
//! puts the tick in its room's slot, replacing (and counting) an older tick that
//! has not been written yet, so a slow socket holds at most one tick per room.
//! Pack uploads wait in a small queue of their own ([`PACK_QUEUE`] messages of
//! at most [`PACK_CHUNK_BYTES`]), taken in turn with control messages, so a
//! pack in flight delays a control message by at most one pack message.
//! The writer also sends a WebSocket Ping every keep-alive interval.
//!
//! Closing: the server closes with code 1000 (normal) or 4000 + a Chorus error
//! code, after an `Error` message where it can; this client closes with 1000,
//! or 4100 (4000 + Malformed) after a protocol error.

use super::{
    CLOSE_GRACE, Connected, Inbound, Link, LinkClose, LinkReader, LinkWriter, OutMessage,
    upload_header,
};
use crate::driver::lock;
use crate::error::{CloseReason, ConnectError};
use crate::options::ConnectOptions;
use crate::url::{Scheme, ServerUrl};
use bytes::Bytes;
use chorus_protocol::{ErrorCode, RoomSlot};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, trace};

/// Lane byte: a complete control message, or the last piece of a chunked one.
pub(crate) const LANE_CONTROL: u8 = 0x00;
/// Lane byte: one tick datagram.
pub(crate) const LANE_TICK: u8 = 0x01;
/// Lane byte: a piece of a control message that continues.
pub(crate) const LANE_CHUNK: u8 = 0x02;
/// Lane byte: a pack message (a framed `PackStreamHeader` and one chunk).
pub(crate) const LANE_PACK: u8 = 0x03;

/// Bytes tungstenite reads from the connection at once.
const READ_BUFFER: usize = 8 * 1024;

/// The largest content chunk of one pack message this client sends.
pub(crate) const PACK_CHUNK_BYTES: usize = 16 * 1024;

/// Pack messages waiting for the writer, at most; an upload waits for room.
pub(crate) const PACK_QUEUE: usize = 4;

/// Control messages with a larger body are sent in pieces of this size.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

/// The subprotocol offered in the upgrade request.
pub(crate) const SUBPROTOCOL: &str = "chorus.v1";

/// The close code this client sends after a protocol error: 4000 + Malformed.
const PROTOCOL_ERROR_CLOSE: u16 = 4000 + ErrorCode::Malformed.as_u16();

/// tungstenite's per-message bound when the options do not fix
/// `max_frame_bytes` (the announced value is not known at connect time). The
/// reassembler applies the exact bound; the server chunks everything over
/// 16 KiB, so a conforming server never gets near this.
const DEFAULT_MESSAGE_BOUND: usize = 64 << 20;

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---- lane encoding ------------------------------------------------------------

/// The WebSocket messages that carry one control message: one `0x00` message,
/// or `0x02` pieces of [`CHUNK_BYTES`] and a final `0x00` piece.
pub(crate) fn lane_messages(message: OutMessage) -> LaneMessages {
    if message.body().len() <= CHUNK_BYTES {
        LaneMessages {
            whole: Some(message.into_lane_message(LANE_CONTROL)),
            body: Bytes::new(),
            next: 0,
        }
    } else {
        let len = message.body().len();
        let all = message.into_lane_message(LANE_CONTROL);
        LaneMessages {
            whole: None,
            body: all.slice(all.len() - len..),
            next: 0,
        }
    }
}

/// Iterator over the WebSocket messages of one control message.
#[derive(Debug)]
pub(crate) struct LaneMessages {
    whole: Option<Bytes>,
    body: Bytes,
    next: usize,
}

impl Iterator for LaneMessages {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if let Some(whole) = self.whole.take() {
            return Some(whole);
        }
        if self.next >= self.body.len() {
            return None;
        }
        let end = (self.next + CHUNK_BYTES).min(self.body.len());
        let lane = if end == self.body.len() {
            LANE_CONTROL
        } else {
            LANE_CHUNK
        };
        let mut piece = Vec::with_capacity(1 + end - self.next);
        piece.push(lane);
        piece.extend_from_slice(&self.body[self.next..end]);
        self.next = end;
        Some(Bytes::from(piece))
    }
}

/// The WebSocket message carrying one encoded tick datagram.
pub(crate) fn tick_message(datagram: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(1 + datagram.len());
    message.push(LANE_TICK);
    message.extend_from_slice(datagram);
    Bytes::from(message)
}

/// The pack-lane messages carrying `content`, a pack's bytes from `offset`:
/// each is the lane byte, a framed `Upload { hash, offset }` with that chunk's
/// own offset, and at most [`PACK_CHUNK_BYTES`] of content. At least one
/// message, even for no content.
pub(crate) fn pack_messages(hash: &[u8], offset: u64, content: &Bytes) -> Vec<Bytes> {
    let mut messages = Vec::with_capacity(content.len().div_ceil(PACK_CHUNK_BYTES).max(1));
    let mut at = 0usize;
    loop {
        let end = (at + PACK_CHUNK_BYTES).min(content.len());
        let header = upload_header(hash, offset.saturating_add(at as u64));
        let mut message = Vec::with_capacity(1 + header.len() + end - at);
        message.push(LANE_PACK);
        message.extend_from_slice(&header);
        message.extend_from_slice(&content[at..end]);
        messages.push(Bytes::from(message));
        at = end;
        if at >= content.len() {
            return messages;
        }
    }
}

/// Joins the control lane's chunks into whole control messages.
#[derive(Debug)]
pub(crate) struct Reassembler {
    max_frame_bytes: u32,
    /// The pieces so far of a chunked control message.
    buf: Vec<u8>,
    /// A chunked control message is in progress (even if its pieces were empty).
    chunking: bool,
}

impl Reassembler {
    pub(crate) fn new(max_frame_bytes: u32) -> Self {
        Reassembler {
            max_frame_bytes,
            buf: Vec::new(),
            chunking: false,
        }
    }

    pub(crate) fn set_max_frame_bytes(&mut self, max: u32) {
        self.max_frame_bytes = max;
    }

    /// Takes one binary WebSocket message. Returns a complete control message
    /// or a tick; `None` when the message was a chunk (or was skipped: empty, or
    /// an unknown lane). A control message over `max_frame_bytes` is fatal.
    pub(crate) fn push(&mut self, message: Bytes) -> Result<Option<Inbound>, LinkClose> {
        let Some(&lane) = message.first() else {
            debug!("skipping an empty WebSocket message");
            return Ok(None);
        };
        let body_len = message.len() - 1;
        match lane {
            LANE_TICK => Ok(Some(Inbound::Datagram(message.slice(1..)))),
            LANE_CONTROL if !self.chunking => {
                self.check(body_len)?;
                Ok(Some(Inbound::Control(message.slice(1..))))
            }
            LANE_CONTROL => {
                self.check(self.buf.len() + body_len)?;
                self.buf.extend_from_slice(&message[1..]);
                self.chunking = false;
                Ok(Some(Inbound::Control(Bytes::from(std::mem::take(
                    &mut self.buf,
                )))))
            }
            LANE_CHUNK => {
                self.check(self.buf.len() + body_len)?;
                self.buf.extend_from_slice(&message[1..]);
                self.chunking = true;
                Ok(None)
            }
            // Self-contained: it may come between the chunks of a control message.
            LANE_PACK => Ok(Some(Inbound::Pack(message.slice(1..)))),
            other => {
                debug!(
                    lane = other,
                    len = message.len(),
                    "skipping a WebSocket message with an unknown lane byte"
                );
                Ok(None)
            }
        }
    }

    fn check(&self, len: usize) -> Result<(), LinkClose> {
        if len > self.max_frame_bytes as usize {
            return Err(LinkClose::protocol(format!(
                "control message from the server exceeds max_frame_bytes: \
                 {len} > {} (FrameTooLarge)",
                self.max_frame_bytes
            )));
        }
        Ok(())
    }
}

/// How a close frame from the server ends the connection: 1000 (and 1001, going
/// away) is a normal close, 4000-4999 carry a Chorus error code, anything else
/// is a transport failure.
pub(crate) fn close_from_frame(frame: Option<&CloseFrame>) -> LinkClose {
    let Some(frame) = frame else {
        return LinkClose::Application {
            code: 0,
            reason: String::new(),
        };
    };
    let code = u16::from(frame.code);
    let reason = frame.reason.as_str().to_owned();
    match code {
        1000 | 1001 => LinkClose::Application { code: 0, reason },
        4000..=4999 => LinkClose::Application {
            code: u64::from(code - 4000),
            reason,
        },
        _ => LinkClose::transport(format!("closed with WebSocket code {code}: {reason}")),
    }
}

/// The close frame this client sends when it ends the connection for `reason`;
/// `None` when the server ended it (its close is answered automatically) or it
/// failed.
fn close_frame_for(reason: &CloseReason) -> Option<CloseFrame> {
    match reason {
        CloseReason::Local => Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "closed".into(),
        }),
        CloseReason::Protocol(_) => Some(CloseFrame {
            code: CloseCode::from(PROTOCOL_ERROR_CLOSE),
            reason: "protocol error".into(),
        }),
        _ => None,
    }
}

fn read_error(e: WsError) -> LinkClose {
    match e {
        WsError::Capacity(e) => LinkClose::protocol(format!("message from the server: {e}")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            LinkClose::transport("the connection was reset without a close frame")
        }
        WsError::Protocol(e) => LinkClose::protocol(format!("WebSocket: {e}")),
        other => LinkClose::transport(format!("WebSocket read failed: {other}")),
    }
}

// ---- connecting ---------------------------------------------------------------

/// The upgrade request: the URL, the `chorus.v1` subprotocol, and no `Origin`
/// (a native client has none).
pub(crate) fn upgrade_request(
    url: &ServerUrl,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, ConnectError> {
    let mut request = url
        .to_string()
        .into_client_request()
        .map_err(|e| ConnectError::Connecting(format!("WebSocket request for {url}: {e}")))?;
    request.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(request)
}

/// Connects the TCP socket, does TLS for `wss://`, and upgrades to WebSocket.
pub(crate) async fn connect(
    url: &ServerUrl,
    options: &ConnectOptions,
    max_frame_bytes: u32,
) -> Result<Connected, ConnectError> {
    let connector = match url.scheme {
        Scheme::Wss => Connector::Rustls(options.websocket_tls_config()?),
        Scheme::Ws => Connector::Plain,
        Scheme::Https => {
            return Err(ConnectError::Url(crate::url::UrlError::UnsupportedScheme(
                "https".into(),
            )));
        }
    };
    let request = upgrade_request(url)?;
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| ConnectError::Connecting(format!("WebSocket: TCP connect to {url}: {e}")))?;
    tcp.set_nodelay(true)?;
    let bound = match options.max_frame_bytes {
        Some(max) => max as usize + 1,
        None => DEFAULT_MESSAGE_BOUND,
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(bound))
        .max_frame_size(Some(bound))
        // tungstenite zero-fills up to this much of its buffer before every
        // read; its 128 KiB default costs more than the messages with many
        // small ones. Big messages still grow the buffer.
        .read_buffer_size(READ_BUFFER);
    let (ws, response) = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        Some(config),
        Some(connector),
    )
    .await
    .map_err(|e| match e {
        WsError::Http(response) => ConnectError::HttpStatus(response.status().as_u16()),
        other => ConnectError::Connecting(format!("WebSocket: {other}")),
    })?;
    debug!(
        subprotocol = ?response.headers().get(SEC_WEBSOCKET_PROTOCOL),
        "WebSocket upgraded"
    );
    let (sink, stream) = ws.split();
    let (packs, packs_rx) = mpsc::channel(PACK_QUEUE);
    let shared = Arc::new(WsShared {
        ticks: Mutex::new(Vec::new()),
        notify: Notify::new(),
        dropped: AtomicU64::new(0),
        finished: watch::Sender::new(false),
    });
    Ok(Connected {
        link: Link::WebSocket(WsLink {
            shared: Arc::clone(&shared),
            packs,
        }),
        reader: LinkReader::WebSocket(WsReader {
            stream,
            reassembler: Reassembler::new(max_frame_bytes),
            idle_timeout: (!options.max_idle_timeout.is_zero()).then_some(options.max_idle_timeout),
            shared: Arc::clone(&shared),
        }),
        writer: LinkWriter::WebSocket(WsWriter {
            sink,
            keep_alive: options.keep_alive_interval.filter(|d| !d.is_zero()),
            shared,
            packs: packs_rx,
        }),
    })
}

// ---- link ---------------------------------------------------------------------

/// What the link, the reader and the writer of one WebSocket share.
struct WsShared {
    /// The newest unwritten tick per room, in the order rooms first got one.
    ticks: Mutex<Vec<(RoomSlot, Bytes)>>,
    /// Wakes the writer when a tick is waiting.
    notify: Notify,
    /// Ticks replaced by a newer one of the same room before they were written.
    dropped: AtomicU64,
    /// Set once the reader has finished (the close handshake is over).
    finished: watch::Sender<bool>,
}

pub(crate) struct WsLink {
    shared: Arc<WsShared>,
    /// Pack-lane messages for the writer.
    packs: mpsc::Sender<Bytes>,
}

impl WsLink {
    /// Puts the tick in its room's slot (newest wins) and wakes the writer.
    pub(crate) fn send_tick(&self, room: RoomSlot, datagram: &[u8]) {
        let message = tick_message(datagram);
        let replaced = {
            let mut ticks = lock(&self.shared.ticks);
            match ticks.iter_mut().find(|(r, _)| *r == room) {
                Some(slot) => {
                    slot.1 = message;
                    true
                }
                None => {
                    ticks.push((room, message));
                    false
                }
            }
        };
        if replaced {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            trace!(room = room.0, "replaced an unsent tick");
        }
        self.shared.notify.notify_one();
    }

    /// Queues a pack's content as pack-lane messages, waiting while the pack
    /// queue is full.
    pub(crate) async fn send_pack(
        &self,
        hash: &[u8],
        offset: u64,
        content: Bytes,
    ) -> Result<(), String> {
        for message in pack_messages(hash, offset, &content) {
            self.packs
                .send(message)
                .await
                .map_err(|_| "the WebSocket writer has ended".to_owned())?;
        }
        Ok(())
    }

    pub(crate) fn ticks_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    pub(crate) async fn wait_finished(&self) {
        let mut rx = self.shared.finished.subscribe();
        let _ = tokio::time::timeout(CLOSE_GRACE, rx.wait_for(|done| *done)).await;
    }
}

// ---- reader -------------------------------------------------------------------

pub(crate) struct WsReader {
    stream: SplitStream<WsStream>,
    reassembler: Reassembler,
    idle_timeout: Option<Duration>,
    shared: Arc<WsShared>,
}

impl WsReader {
    pub(crate) async fn recv(&mut self) -> Result<Inbound, LinkClose> {
        loop {
            let next = match self.idle_timeout {
                Some(idle) => match tokio::time::timeout(idle, self.stream.next()).await {
                    Ok(next) => next,
                    Err(_) => return Err(LinkClose::transport("idle timeout")),
                },
                None => self.stream.next().await,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(read_error(e)),
                None => {
                    return Err(LinkClose::transport(
                        "the server closed the connection without a close frame",
                    ));
                }
            };
            match message {
                Message::Binary(data) => {
                    if let Some(inbound) = self.reassembler.push(data)? {
                        return Ok(inbound);
                    }
                }
                Message::Text(text) => {
                    debug!(len = text.len(), "skipping a text message from the server");
                }
                // tungstenite answers pings itself, on the next read or write.
                Message::Ping(_) | Message::Pong(_) => trace!("WebSocket ping/pong"),
                Message::Close(frame) => return Err(close_from_frame(frame.as_ref())),
                Message::Frame(_) => {}
            }
        }
    }

    pub(crate) fn set_max_frame_bytes(&mut self, max: u32) {
        self.reassembler.set_max_frame_bytes(max);
    }

    /// Reads on until the server's close frame or the end of the stream (at most
    /// [`CLOSE_GRACE`]), so that a close handshake completes and the server's
    /// close is answered; then marks the link finished.
    pub(crate) async fn finish(mut self) {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
        self.shared.finished.send_replace(true);
    }
}

// ---- writer -------------------------------------------------------------------

pub(crate) struct WsWriter {
    sink: SplitSink<WsStream, Message>,
    keep_alive: Option<Duration>,
    shared: Arc<WsShared>,
    /// Pack-lane messages to send.
    packs: mpsc::Receiver<Bytes>,
}

impl WsWriter {
    pub(crate) async fn send_control(&mut self, message: OutMessage) -> Result<(), LinkClose> {
        self.write_control(message)
            .await
            .map_err(|e| LinkClose::transport(format!("WebSocket write failed: {e}")))
    }

    /// Writes the pending ticks, then each piece of the control message, with
    /// the ticks that arrive meanwhile written before the next piece.
    async fn write_control(&mut self, message: OutMessage) -> Result<(), WsError> {
        for piece in lane_messages(message) {
            self.feed_ticks().await?;
            self.sink.send(Message::Binary(piece)).await?;
        }
        Ok(())
    }

    /// Queues every pending tick on the socket (without flushing).
    async fn feed_ticks(&mut self) -> Result<bool, WsError> {
        let ticks = std::mem::take(&mut *lock(&self.shared.ticks));
        let any = !ticks.is_empty();
        for (_, message) in ticks {
            self.sink.feed(Message::Binary(message)).await?;
        }
        Ok(any)
    }

    /// Sends control messages, ticks and pings until `rx` ends or a write fails.
    async fn pump(
        &mut self,
        rx: &mut mpsc::Receiver<OutMessage>,
        ping: &mut Option<Interval>,
    ) -> Result<(), WsError> {
        let shared = Arc::clone(&self.shared);
        loop {
            // Unbiased: a steady stream of ticks must not starve control
            // messages (ticks also go out before each control message piece).
            tokio::select! {
                _ = shared.notify.notified() => {
                    if self.feed_ticks().await? {
                        self.sink.flush().await?;
                    }
                }
                message = rx.recv() => match message {
                    Some(message) => self.write_control(message).await?,
                    None => return Ok(()),
                },
                Some(pack) = self.packs.recv() => {
                    self.feed_ticks().await?;
                    self.sink.send(Message::Binary(pack)).await?;
                }
                _ = next_ping(ping) => {
                    self.sink.send(Message::Ping(Bytes::new())).await?;
                }
            }
        }
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<OutMessage>,
        mut stop: watch::Receiver<Option<CloseReason>>,
    ) -> Result<(), LinkClose> {
        let mut ping = self.keep_alive.map(|period| {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        let outcome = tokio::select! {
            outcome = self.pump(&mut rx, &mut ping) => outcome,
            _ = stop.wait_for(Option::is_some) => Ok(()),
        };
        if let Err(e) = outcome {
            return Err(LinkClose::transport(format!("WebSocket write failed: {e}")));
        }
        let reason = stop.borrow().clone().unwrap_or(CloseReason::Local);
        if reason == CloseReason::Local {
            // A clean close: what is queued (the Leaves of dropped rooms)
            // still goes out before the close frame.
            let flushed = tokio::time::timeout(CLOSE_GRACE, async {
                while let Ok(message) = rx.try_recv() {
                    self.write_control(message).await?;
                }
                self.sink.flush().await
            });
            if let Ok(Err(e)) = flushed.await {
                debug!(error = %e, "could not flush at close");
            }
        }
        if let Some(frame) = close_frame_for(&reason) {
            let sent =
                tokio::time::timeout(CLOSE_GRACE, self.sink.send(Message::Close(Some(frame))));
            if let Ok(Err(e)) = sent.await {
                debug!(error = %e, "could not send the close frame");
            }
        }
        Ok(())
    }

    /// Sends a close frame (best effort, briefly) after a failed handshake.
    pub(crate) async fn abort(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "handshake failed".into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            self.sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

async fn next_ping(ping: &mut Option<Interval>) {
    match ping {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::{
        Datagram, Limits, MemberId, ServerMessage, Tick, decode_datagram, decode_server_message,
        encode_datagram,
    };

    fn msg(lane: u8, body: &[u8]) -> Bytes {
        let mut m = vec![lane];
        m.extend_from_slice(body);
        Bytes::from(m)
    }

    fn pieces(body: &[u8]) -> Vec<Bytes> {
        lane_messages(OutMessage::from_body(body)).collect()
    }

    #[test]
    fn small_control_messages_are_one_lane_zero_message() {
        let leave = OutMessage::encode(&chorus_protocol::ClientMessage::Leave {
            request_id: 2,
            room: RoomSlot(1),
        });
        let out: Vec<Bytes> = lane_messages(leave).collect();
        assert_eq!(out, [Bytes::from_static(&[0x00, 0x02, 0x02, 0x01])]);
        // Exactly 16 KiB is not chunked.
        let out = pieces(&vec![9u8; CHUNK_BYTES]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0][0], LANE_CONTROL);
        assert_eq!(out[0].len(), CHUNK_BYTES + 1);
    }

    #[test]
    fn large_control_messages_are_chunked_at_16_kib() {
        let body: Vec<u8> = (0..(2 * CHUNK_BYTES + 10)).map(|i| i as u8).collect();
        let out = pieces(&body);
        assert_eq!(
            out.iter().map(|m| (m[0], m.len() - 1)).collect::<Vec<_>>(),
            [
                (LANE_CHUNK, CHUNK_BYTES),
                (LANE_CHUNK, CHUNK_BYTES),
                (LANE_CONTROL, 10)
            ]
        );
        let joined: Vec<u8> = out.iter().flat_map(|m| m[1..].to_vec()).collect();
        assert_eq!(joined, body);
        // A multiple of the chunk size ends with a full 0x00 piece.
        let out = pieces(&vec![1u8; 2 * CHUNK_BYTES]);
        assert_eq!(
            out.iter().map(|m| (m[0], m.len() - 1)).collect::<Vec<_>>(),
            [(LANE_CHUNK, CHUNK_BYTES), (LANE_CONTROL, CHUNK_BYTES)]
        );
    }

    #[test]
    fn chunked_messages_round_trip_through_the_reassembler() {
        let body: Vec<u8> = (0..(3 * CHUNK_BYTES + 1)).map(|i| (i * 7) as u8).collect();
        let mut r = Reassembler::new(4 << 20);
        let mut got = Vec::new();
        for piece in pieces(&body) {
            if let Some(inbound) = r.push(piece).expect("within bounds") {
                got.push(inbound);
            }
        }
        assert_eq!(got, [Inbound::Control(Bytes::from(body))]);
    }

    #[test]
    fn tick_lane_carries_the_datagram_bytes() {
        let datagram = encode_datagram(&Datagram::Tick(Tick {
            room: RoomSlot(1),
            sender: MemberId(2),
            seq: 1000,
            payload: b"xy",
        }));
        let message = tick_message(&datagram);
        assert_eq!(message[0], LANE_TICK);
        assert_eq!(&message[1..], datagram.as_slice());
        let mut r = Reassembler::new(100);
        let Some(Inbound::Datagram(bytes)) = r.push(message).expect("tick") else {
            panic!("expected a datagram");
        };
        let Datagram::Tick(tick) = decode_datagram(&bytes, &Limits::default()).expect("decodes");
        assert_eq!((tick.seq, tick.payload), (1000, &b"xy"[..]));
    }

    #[test]
    fn ticks_may_come_between_chunks() {
        let pong = chorus_protocol::codec::encode_message(&ServerMessage::Pong {
            client_time: 1,
            server_receive_time: chorus_protocol::ServerTime(2),
            server_send_time: chorus_protocol::ServerTime(3),
        });
        let (a, b) = pong.split_at(3);
        let mut r = Reassembler::new(1000);
        assert_eq!(r.push(msg(LANE_CHUNK, a)).expect("chunk"), None);
        assert_eq!(
            r.push(msg(LANE_TICK, b"t1")).expect("tick"),
            Some(Inbound::Datagram(Bytes::from_static(b"t1")))
        );
        assert_eq!(r.push(msg(LANE_CHUNK, &[])).expect("empty chunk"), None);
        assert_eq!(
            r.push(msg(LANE_TICK, b"t2")).expect("tick"),
            Some(Inbound::Datagram(Bytes::from_static(b"t2")))
        );
        let Some(Inbound::Control(body)) = r.push(msg(LANE_CONTROL, b)).expect("last piece") else {
            panic!("expected the control message");
        };
        assert!(matches!(
            decode_server_message(&body),
            Ok(ServerMessage::Pong { client_time: 1, .. })
        ));
        // The next control message starts afresh.
        assert_eq!(
            r.push(msg(LANE_CONTROL, &[9])).expect("whole"),
            Some(Inbound::Control(Bytes::from_static(&[9])))
        );
    }

    #[test]
    fn oversize_control_messages_are_fatal() {
        let mut r = Reassembler::new(10);
        // Exactly at the bound is fine, whole or chunked.
        assert!(r.push(msg(LANE_CONTROL, &[1; 10])).is_ok());
        assert_eq!(r.push(msg(LANE_CHUNK, &[1; 6])).expect("chunk"), None);
        assert!(matches!(
            r.push(msg(LANE_CONTROL, &[1; 4])),
            Ok(Some(Inbound::Control(b))) if b.len() == 10
        ));
        // Over it: one message, or pieces adding up.
        assert!(matches!(
            r.push(msg(LANE_CONTROL, &[1; 11])),
            Err(LinkClose::Reason(CloseReason::Protocol(m))) if m.contains("FrameTooLarge")
        ));
        let mut r = Reassembler::new(10);
        assert_eq!(r.push(msg(LANE_CHUNK, &[1; 6])).expect("chunk"), None);
        assert!(r.push(msg(LANE_CHUNK, &[1; 5])).is_err());
        let mut r = Reassembler::new(10);
        assert_eq!(r.push(msg(LANE_CHUNK, &[1; 6])).expect("chunk"), None);
        assert!(r.push(msg(LANE_CONTROL, &[1; 5])).is_err());
        // The bound can change (the server's announced max_frame_bytes).
        let mut r = Reassembler::new(10);
        r.set_max_frame_bytes(11);
        assert!(r.push(msg(LANE_CONTROL, &[1; 11])).is_ok());
    }

    #[test]
    fn empty_messages_and_unknown_lanes_are_skipped() {
        let mut r = Reassembler::new(100);
        assert_eq!(r.push(Bytes::new()).expect("empty"), None);
        assert_eq!(r.push(msg(0x04, b"future")).expect("unknown"), None);
        assert_eq!(r.push(msg(0xff, b"")).expect("unknown"), None);
        // Also between chunks, without breaking the message.
        assert_eq!(r.push(msg(LANE_CHUNK, b"ab")).expect("chunk"), None);
        assert_eq!(r.push(msg(0x07, b"zz")).expect("unknown"), None);
        assert_eq!(
            r.push(msg(LANE_CONTROL, b"c")).expect("last"),
            Some(Inbound::Control(Bytes::from_static(b"abc")))
        );
    }

    #[test]
    fn pack_messages_carry_their_own_offsets_in_16_kib_chunks() {
        let hash = [5u8; 32];
        let content = Bytes::from(
            (0..(2 * PACK_CHUNK_BYTES + 3))
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let messages = pack_messages(&hash, 100, &content);
        assert_eq!(messages.len(), 3);
        let mut joined = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(m[0], LANE_PACK);
            let (header, chunk) = chorus_protocol::split_pack_message(&m[1..]).expect("header");
            assert_eq!(
                header,
                chorus_protocol::PackStreamHeader::Upload {
                    hash: hash.to_vec(),
                    offset: 100 + (i * PACK_CHUNK_BYTES) as u64
                }
            );
            assert!(chunk.len() <= PACK_CHUNK_BYTES);
            joined.extend_from_slice(chunk);
        }
        assert_eq!(joined, content);
        // No content is still one message (the server answers it).
        let empty = pack_messages(&hash, 7, &Bytes::new());
        assert_eq!(empty.len(), 1);
        // Incoming pack messages pass the reassembler whole, even mid-chunks.
        let mut r = Reassembler::new(10);
        assert_eq!(r.push(msg(LANE_CHUNK, b"ab")).expect("chunk"), None);
        assert_eq!(
            r.push(msg(LANE_PACK, &[1; 40])).expect("pack"),
            Some(Inbound::Pack(Bytes::from(vec![1; 40])))
        );
        assert_eq!(
            r.push(msg(LANE_CONTROL, b"c")).expect("last"),
            Some(Inbound::Control(Bytes::from_static(b"abc")))
        );
    }

    #[test]
    fn close_codes_map_to_close_reasons() {
        let frame = |code: u16, reason: &str| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        assert_eq!(
            close_from_frame(Some(&frame(1000, "bye"))).into_reason(None),
            CloseReason::ServerClosed {
                reason: "bye".into()
            }
        );
        assert_eq!(
            close_from_frame(None).into_reason(None),
            CloseReason::ServerClosed {
                reason: String::new()
            }
        );
        let slow = close_from_frame(Some(&frame(4400, "slow consumer"))).into_reason(None);
        assert_eq!(slow.code(), Some(ErrorCode::SlowConsumer));
        let shutting = close_from_frame(Some(&frame(4501, "bye"))).into_reason(None);
        assert_eq!(shutting.code(), Some(ErrorCode::ShuttingDown));
        // The error message sent just before the close wins when its code matches.
        let sent = chorus_protocol::ErrorFrame::new(None, ErrorCode::SlowConsumer, "queue full");
        assert_eq!(
            close_from_frame(Some(&frame(4400, "slow"))).into_reason(Some(sent.clone())),
            CloseReason::Server(sent)
        );
        assert!(matches!(
            close_from_frame(Some(&frame(1011, "oops"))).into_reason(None),
            CloseReason::Transport(m) if m.contains("1011")
        ));
    }

    #[test]
    fn this_client_closes_with_1000_or_4100() {
        assert_eq!(
            close_frame_for(&CloseReason::Local).map(|f| u16::from(f.code)),
            Some(1000)
        );
        assert_eq!(
            close_frame_for(&CloseReason::Protocol("x".into())).map(|f| u16::from(f.code)),
            Some(4100)
        );
        assert!(close_frame_for(&CloseReason::ServerClosed { reason: "".into() }).is_none());
    }

    #[tokio::test]
    async fn unsent_ticks_are_newest_wins_per_room() {
        let link = WsLink {
            shared: Arc::new(WsShared {
                ticks: Mutex::new(Vec::new()),
                notify: Notify::new(),
                dropped: AtomicU64::new(0),
                finished: watch::Sender::new(false),
            }),
            packs: mpsc::channel(1).0,
        };
        // Nobody writes: a stuck socket.
        for seq in 0..100u8 {
            link.send_tick(RoomSlot(1), &[seq]);
        }
        link.send_tick(RoomSlot(2), b"a");
        link.send_tick(RoomSlot(1), b"last");
        let pending = lock(&link.shared.ticks).clone();
        assert_eq!(
            pending,
            [
                (RoomSlot(1), tick_message(b"last")),
                (RoomSlot(2), tick_message(b"a"))
            ]
        );
        assert_eq!(link.ticks_dropped(), 100);
        // The writer is woken (a permit is stored for it).
        tokio::time::timeout(Duration::from_secs(1), link.shared.notify.notified())
            .await
            .expect("writer woken");
    }

    #[test]
    fn upgrade_request_offers_the_subprotocol_without_origin() {
        let url = ServerUrl::parse("wss://[::1]:4433/chorus?x=1").expect("url");
        let request = upgrade_request(&url).expect("request");
        assert_eq!(request.uri().to_string(), "wss://[::1]:4433/chorus?x=1");
        assert_eq!(
            request.headers().get(SEC_WEBSOCKET_PROTOCOL),
            Some(&HeaderValue::from_static("chorus.v1"))
        );
        assert!(request.headers().get("origin").is_none());
    }
}
