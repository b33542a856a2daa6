//! The WebSocket adapter: the fallback for networks that block UDP.
//!
//! One WebSocket carries every lane (PROTOCOL.md §1.3): every binary message
//! starts with a lane byte, `0x00` a control message (or the last piece of a
//! chunked one), `0x01` a tick, `0x02` a chunk of a control message, `0x03` a
//! pack message (a framed `PackStreamHeader` and one chunk of content). This
//! module turns that into the same reader / writer / tick sink / pack sink the
//! session uses for WebTransport, so no session or room logic is written twice.
//!
//! The writer task owns the socket's sending half and keeps the tick lane's
//! promise on TCP: ticks wait in a newest-wins slot per (room, sender), and are
//! written before every control message, chunk or pack message, so a tick waits
//! at most behind one chunk, never behind a backlog. Pack messages come last:
//! they wait in a small bounded queue ([`PACK_QUEUE_MESSAGES`]; a download
//! waits for room, so a pack is never buffered whole a second time), and the
//! writer takes one of them when nothing else is waiting, or one after each
//! round of ticks or control messages, so a big pack in flight delays control
//! messages by at most one pack message and still makes progress on a busy
//! connection. Pack messages are never written between the chunks of one
//! control message. The writer also sends heartbeat pings; the reader closes a
//! connection that has been silent past the heartbeat timeout.

use crate::rooms::{OutgoingTick, TickDelivery, TickFraming, TickSink};
use crate::session::{
    Inbound, PackDownload, PackSink, SessionContext, SessionInfo, TransportCloser, TransportError,
    TransportReader, TransportWriter, run_session,
};
use crate::transport::ticks::{Due, PendingTicks, TickWindow};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::MAX_PACK_HEADER_BYTES;
use chorus_protocol::{
    ErrorCode, ErrorFrame, FrameError, MemberId, PackStreamHeader, RoomSlot, encode_pack_header,
};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

/// Lane byte: a complete control message, or the last piece of a chunked one.
pub const LANE_CONTROL: u8 = 0x00;
/// Lane byte: one datagram (a tick).
pub const LANE_DATAGRAM: u8 = 0x01;
/// Lane byte: a piece of a control message that continues.
pub const LANE_CHUNK: u8 = 0x02;
/// Lane byte: a pack message, a framed `PackStreamHeader` (`Upload` from the
/// client, `Download` from the server) followed by one chunk of content.
pub const LANE_PACK: u8 = 0x03;
/// The largest content chunk of a pack message a client may send, whatever
/// the server's own chunk size (a larger configured chunk size raises it).
pub const PACK_CHUNK_BYTES: usize = 16 * 1024;
/// Pack messages waiting for the writer, at most (over every download of the
/// connection); a download waits for room.
pub const PACK_QUEUE_MESSAGES: usize = 4;
/// The subprotocol a client may offer.
pub const SUBPROTOCOL: &str = "chorus.v1";
/// WebSocket close codes for Chorus errors are this plus the error code.
pub const CLOSE_CODE_BASE: u16 = 4000;

/// WebSocket settings.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// How often the server pings.
    pub heartbeat_interval: Duration,
    /// A connection silent this long is closed.
    pub heartbeat_timeout: Duration,
    /// Control messages longer than this are sent in chunks.
    pub chunk_bytes: usize,
    /// How long the first pending tick waits for others to share its write
    /// (see [`crate::transport::ticks`]); zero writes ticks as they come.
    pub tick_coalesce: Duration,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            chunk_bytes: 16 * 1024,
            tick_coalesce: Duration::ZERO,
        }
    }
}

/// The largest pack-message body (after the lane byte) the server accepts: a
/// framed header (length prefix of at most 5 bytes plus
/// [`MAX_PACK_HEADER_BYTES`]) and a chunk of at most the larger of
/// [`PACK_CHUNK_BYTES`] and the configured chunk size.
pub fn max_pack_message_bytes(chunk_bytes: usize) -> usize {
    5 + MAX_PACK_HEADER_BYTES + chunk_bytes.max(PACK_CHUNK_BYTES)
}

/// The largest WebSocket message the server accepts: a lane byte plus the
/// largest control frame or pack message body.
pub fn max_message_bytes(max_frame_bytes: u32, chunk_bytes: usize) -> usize {
    1 + (max_frame_bytes as usize).max(max_pack_message_bytes(chunk_bytes))
}

/// Runs a session over an upgraded WebSocket.
pub async fn run_websocket(
    socket: WebSocket,
    ctx: Arc<SessionContext>,
    remote: SocketAddr,
    settings: WsSettings,
) {
    let accepted_at = std::time::Instant::now();
    let (sink, stream) = socket.split();
    let ticks = Arc::new(WsTickSink::default());
    let close = Arc::new(CloseRequest::default());
    // Two batches in flight at most: the session's outbox is the real queue.
    let (out_tx, out_rx) = mpsc::channel(2);
    let (pack_tx, pack_rx) = mpsc::channel(PACK_QUEUE_MESSAGES);
    let chunk_bytes = settings.chunk_bytes.max(1);
    tokio::spawn(write_loop(
        sink,
        out_rx,
        pack_rx,
        ticks.clone(),
        close.clone(),
        settings.clone(),
    ));
    let reader = WsReader {
        stream,
        lanes: Lanes::new(
            ctx.config.limits.max_frame_bytes as usize,
            max_pack_message_bytes(chunk_bytes),
        ),
        heartbeat_timeout: settings.heartbeat_timeout,
        rtt: None,
    };
    let info = SessionInfo {
        remote,
        transport: "websocket",
        max_datagram_size: 0,
        accepted_at,
    };
    let writer = WsWriter { tx: out_tx };
    let closer = WsCloser { close };
    let packs = Arc::new(WsPackSink {
        tx: pack_tx,
        chunk_bytes,
    });
    run_session(ctx, info, reader, writer, closer, ticks, packs).await;
}

struct WsReader {
    stream: SplitStream<WebSocket>,
    lanes: Lanes,
    heartbeat_timeout: Duration,
    /// The round trip of the last heartbeat ping answered.
    rtt: Option<Duration>,
}

/// Time on the heartbeat clock: a heartbeat ping carries it (8 bytes, little
/// endian µs) and the pong echoes it back, so the reader measures the round
/// trip without sharing state with the writer.
fn heartbeat_clock() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = EPOCH.get_or_init(std::time::Instant::now).elapsed();
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// The round trip a pong reports, if it answers one of our heartbeat pings.
fn heartbeat_rtt(pong: &[u8]) -> Option<Duration> {
    let sent = u64::from_le_bytes(pong.try_into().ok()?);
    let rtt = heartbeat_clock().checked_sub(sent)?;
    Some(Duration::from_micros(rtt))
}

/// The receiving side's lane rules: what each binary message means.
struct Lanes {
    /// Pieces of a chunked control message received so far.
    partial: BytesMut,
    max_frame: usize,
    /// The largest pack-message body accepted.
    max_pack: usize,
}

fn refused(message: &str) -> Inbound {
    Inbound::Refused(ErrorFrame::new(None, ErrorCode::Malformed, message))
}

fn read_error(error: axum::Error, max_frame: usize) -> TransportError {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size,
            ..
        })) => TransportError::Frame(FrameError::TooLarge {
            declared: size.saturating_sub(1) as u64,
            max: max_frame as u32,
        }),
        Some(
            tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ),
        ) => TransportError::Closed,
        _ => TransportError::Failed(inner.to_string()),
    }
}

impl Lanes {
    fn new(max_frame: usize, max_pack: usize) -> Self {
        Lanes {
            partial: BytesMut::new(),
            max_frame,
            max_pack,
        }
    }

    fn append(&mut self, piece: &[u8]) -> Result<(), TransportError> {
        let total = self.partial.len() + piece.len();
        if total > self.max_frame {
            return Err(TransportError::Frame(FrameError::TooLarge {
                declared: total as u64,
                max: self.max_frame as u32,
            }));
        }
        self.partial.extend_from_slice(piece);
        Ok(())
    }

    /// One binary message: what to hand the session, or `None` when it was a
    /// chunk that waits for the rest of its control message.
    fn on_binary(&mut self, data: Bytes) -> Result<Option<Inbound>, TransportError> {
        let Some(&lane) = data.first() else {
            return Ok(Some(refused("empty WebSocket message")));
        };
        let body = data.slice(1..);
        match lane {
            LANE_DATAGRAM => Ok(Some(Inbound::Datagram(body))),
            LANE_CONTROL if self.partial.is_empty() => {
                if body.len() > self.max_frame {
                    return Err(TransportError::Frame(FrameError::TooLarge {
                        declared: body.len() as u64,
                        max: self.max_frame as u32,
                    }));
                }
                Ok(Some(Inbound::Control(body)))
            }
            LANE_CONTROL => {
                self.append(&body)?;
                Ok(Some(Inbound::Control(self.partial.split().freeze())))
            }
            LANE_CHUNK => {
                self.append(&body)?;
                Ok(None)
            }
            // Self-contained, so it may arrive between the chunks of a
            // control message (which stay in `partial`).
            LANE_PACK => {
                if body.len() > self.max_pack {
                    return Err(TransportError::Frame(FrameError::TooLarge {
                        declared: body.len() as u64,
                        max: u32::try_from(self.max_pack).unwrap_or(u32::MAX),
                    }));
                }
                Ok(Some(Inbound::PackChunk(body)))
            }
            other => Ok(Some(refused(&format!(
                "unknown WebSocket lane byte {other:#04x}"
            )))),
        }
    }
}

impl TransportReader for WsReader {
    /// # Cancel safety
    /// Cancel safe: a message is taken from the socket only when it is handled
    /// in full, and chunk pieces are kept in `self` across calls.
    async fn recv(&mut self) -> Result<Inbound, TransportError> {
        loop {
            let message =
                match tokio::time::timeout(self.heartbeat_timeout, self.stream.next()).await {
                    Err(_) => return Err(TransportError::TimedOut),
                    Ok(None) => return Err(TransportError::Closed),
                    Ok(Some(Err(e))) => return Err(read_error(e, self.lanes.max_frame)),
                    Ok(Some(Ok(message))) => message,
                };
            let data = match message {
                Message::Binary(data) => data,
                Message::Text(_) => {
                    return Ok(refused(
                        "text WebSocket messages are not part of the protocol; send binary",
                    ));
                }
                // Any traffic proves the peer alive; tungstenite answers pings.
                Message::Ping(_) => continue,
                Message::Pong(payload) => {
                    if let Some(rtt) = heartbeat_rtt(&payload) {
                        self.rtt = Some(rtt);
                    }
                    continue;
                }
                Message::Close(_) => return Err(TransportError::Closed),
            };
            if let Some(inbound) = self.lanes.on_binary(data)? {
                return Ok(inbound);
            }
        }
    }

    /// The round trip of the last heartbeat (none before the first answer).
    fn rtt(&self) -> Option<Duration> {
        self.rtt
    }
}

/// What the session's writer asks of the socket's writer task.
enum WsOut {
    Frames(Vec<Bytes>),
    /// Answered once everything before it has been written and flushed.
    Flush(oneshot::Sender<()>),
}

struct WsWriter {
    tx: mpsc::Sender<WsOut>,
}

impl TransportWriter for WsWriter {
    async fn write_frames(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        self.tx
            .send(WsOut::Frames(frames.to_vec()))
            .await
            .map_err(|_| TransportError::Failed("WebSocket writer ended".into()))
    }

    async fn finish(&mut self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(WsOut::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// The close the session asked for, read by the writer task.
#[derive(Debug, Default)]
struct CloseRequest {
    frame: Mutex<Option<CloseFrame>>,
    notify: Notify,
}

struct WsCloser {
    close: Arc<CloseRequest>,
}

impl TransportCloser for WsCloser {
    fn close(&self, code: u16, reason: &str) {
        let code = if code == 0 {
            1000
        } else {
            CLOSE_CODE_BASE.saturating_add(code)
        };
        // A close reason is limited to 123 bytes by RFC 6455.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        *self.close.frame.lock().unwrap_or_else(|e| e.into_inner()) = Some(CloseFrame {
            code,
            reason: reason[..end].into(),
        });
        self.close.notify.notify_one();
    }
}

/// The tick lane of one WebSocket receiver: its pending ticks, drained by the
/// writer task.
#[derive(Debug, Default)]
struct WsTickSink {
    pending: PendingTicks,
}

impl TickSink for WsTickSink {
    fn send_tick(&self, room: RoomSlot, sender: MemberId, tick: &OutgoingTick) -> TickDelivery {
        if self.pending.is_closed() {
            return TickDelivery::Closed;
        }
        // The lane byte is put in front once per tick, for every WebSocket
        // recipient of it.
        let message = tick.framed(TickFraming::WebSocket, 0, |datagram| {
            lane_bytes(LANE_DATAGRAM, datagram)
        });
        self.pending.put(room, sender, message)
    }
}

/// The pack lane toward one WebSocket client: downloads become pack messages
/// in the writer's bounded pack queue.
#[derive(Debug)]
struct WsPackSink {
    tx: mpsc::Sender<Message>,
    chunk_bytes: usize,
}

/// One pack message: lane byte, framed header, chunk.
fn pack_message(header: &PackStreamHeader, chunk: &[u8]) -> Message {
    let header = encode_pack_header(header);
    let mut data = Vec::with_capacity(1 + header.len() + chunk.len());
    data.push(LANE_PACK);
    data.extend_from_slice(&header);
    data.extend_from_slice(chunk);
    Message::Binary(Bytes::from(data))
}

impl WsPackSink {
    async fn send(&self, download: PackDownload) -> Result<(), TransportError> {
        let PackDownload {
            request_id,
            hash,
            mut offset,
            size,
            content: mut rest,
        } = download;
        // At least one message, so an empty download (nothing from `offset`
        // on) is still answered.
        loop {
            let chunk = rest.split_to(rest.len().min(self.chunk_bytes));
            let message = pack_message(
                &PackStreamHeader::Download {
                    request_id,
                    hash: hash.to_vec(),
                    offset,
                    size,
                },
                &chunk,
            );
            self.tx
                .send(message)
                .await
                .map_err(|_| TransportError::Closed)?;
            offset = offset.saturating_add(chunk.len() as u64);
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

impl PackSink for WsPackSink {
    /// Queues the download as pack messages of at most the chunk size, each
    /// with its own `Download` header (that chunk's offset); waits while the
    /// pack queue is full. Resolves when the last message is queued.
    fn send_pack(
        &self,
        download: PackDownload,
    ) -> Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send + '_>> {
        Box::pin(self.send(download))
    }
}

/// The socket's sending half (generic so tests can watch what is written).
trait MessageSink: futures_util::Sink<Message, Error = axum::Error> + Unpin + Send {}

impl<S: futures_util::Sink<Message, Error = axum::Error> + Unpin + Send> MessageSink for S {}

/// `lane` followed by `body`.
fn lane_bytes(lane: u8, body: &[u8]) -> Bytes {
    let mut data = Vec::with_capacity(body.len() + 1);
    data.push(lane);
    data.extend_from_slice(body);
    Bytes::from(data)
}

fn lane_message(lane: u8, body: &[u8]) -> Message {
    Message::Binary(lane_bytes(lane, body))
}

/// The writer's view of the tick lane: the pending ticks and a batch buffer
/// reused from one write to the next.
struct TickBatch {
    ticks: Arc<WsTickSink>,
    batch: Vec<Bytes>,
}

/// Writes the pending ticks, each already framed with its lane byte.
async fn write_ticks(
    sink: &mut impl MessageSink,
    ticks: &mut TickBatch,
) -> Result<(), axum::Error> {
    ticks.ticks.pending.take_into(&mut ticks.batch);
    for tick in ticks.batch.drain(..) {
        sink.feed(Message::Binary(tick)).await?;
    }
    Ok(())
}

async fn write_control(
    sink: &mut impl MessageSink,
    ticks: &mut TickBatch,
    frame: &[u8],
    chunk_bytes: usize,
) -> Result<(), axum::Error> {
    let mut rest = frame;
    loop {
        write_ticks(sink, ticks).await?;
        if rest.len() <= chunk_bytes {
            return sink.feed(lane_message(LANE_CONTROL, rest)).await;
        }
        let (piece, tail) = rest.split_at(chunk_bytes);
        sink.feed(lane_message(LANE_CHUNK, piece)).await?;
        rest = tail;
    }
}

/// Writes one pack message, after the pending ticks.
async fn write_pack(
    sink: &mut impl MessageSink,
    ticks: &mut TickBatch,
    message: Message,
) -> Result<(), axum::Error> {
    write_ticks(sink, ticks).await?;
    sink.feed(message).await
}

/// What one round of the writer did.
enum Round {
    /// Wrote ticks or control messages: a queued pack message may follow.
    Wrote,
    /// Nothing that makes a pack message wait.
    Other,
}

async fn write_loop(
    mut sink: impl MessageSink,
    mut rx: mpsc::Receiver<WsOut>,
    mut packs: mpsc::Receiver<Message>,
    ticks: Arc<WsTickSink>,
    close: Arc<CloseRequest>,
    settings: WsSettings,
) {
    let mut ping = tokio::time::interval(settings.heartbeat_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let chunk_bytes = settings.chunk_bytes.max(1);
    let mut session_done = false;
    let mut packs_done = false;
    let mut tick_window = TickWindow::new(settings.tick_coalesce);
    let lane = ticks.clone();
    let mut ticks = TickBatch {
        ticks,
        batch: Vec::new(),
    };
    let result: Result<(), axum::Error> = async {
        loop {
            // Lanes by priority: close, ticks, control, then packs, which are
            // taken here only when nothing else is waiting...
            let round = tokio::select! {
                biased;
                () = close.notify.notified() => break,
                due = tick_window.due(&lane.pending) => match due {
                    Due::Send => {
                        write_ticks(&mut sink, &mut ticks).await?;
                        Round::Wrote
                    }
                    // Only this task closes the lane, after the loop.
                    Due::Closed => break,
                },
                out = rx.recv(), if !session_done => match out {
                    Some(WsOut::Frames(frames)) => {
                        for frame in &frames {
                            write_control(&mut sink, &mut ticks, frame, chunk_bytes).await?;
                        }
                        Round::Wrote
                    }
                    Some(WsOut::Flush(ack)) => {
                        sink.flush().await?;
                        let _ = ack.send(());
                        Round::Other
                    }
                    None => {
                        session_done = true;
                        Round::Other
                    }
                },
                message = packs.recv(), if !packs_done => {
                    match message {
                        Some(message) => write_pack(&mut sink, &mut ticks, message).await?,
                        None => packs_done = true,
                    }
                    Round::Other
                }
                _ = ping.tick() => {
                    let sent = heartbeat_clock().to_le_bytes();
                    sink.send(Message::Ping(Bytes::copy_from_slice(&sent))).await?;
                    Round::Other
                }
            };
            // ...and one after every round that wrote something else, so a
            // pack still moves while the other lanes keep the writer busy.
            if matches!(round, Round::Wrote)
                && let Ok(message) = packs.try_recv()
            {
                write_pack(&mut sink, &mut ticks, message).await?;
            }
            sink.flush().await?;
        }
        let frame = close.frame.lock().unwrap_or_else(|e| e.into_inner()).take();
        sink.send(Message::Close(frame)).await
    }
    .await;
    lane.pending.close();
    if let Err(e) = result {
        tracing::debug!(error = %e, "WebSocket write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(bytes: &'static [u8]) -> OutgoingTick {
        OutgoingTick::new(Bytes::from_static(bytes))
    }

    fn take(sink: &WsTickSink) -> Vec<Bytes> {
        let mut out = Vec::new();
        sink.pending.take_into(&mut out);
        out.sort();
        out
    }

    #[test]
    fn the_tick_sink_frames_ticks_with_the_datagram_lane_byte() {
        let sink = WsTickSink::default();
        let a = (RoomSlot(1), MemberId(1));
        let b = (RoomSlot(1), MemberId(2));
        assert_eq!(sink.send_tick(a.0, a.1, &tick(b"a1")), TickDelivery::Queued);
        assert_eq!(sink.send_tick(b.0, b.1, &tick(b"b1")), TickDelivery::Queued);
        assert_eq!(
            sink.send_tick(a.0, a.1, &tick(b"a2")),
            TickDelivery::Replaced
        );
        assert_eq!(
            take(&sink),
            [
                &[LANE_DATAGRAM, b'a', b'2'][..],
                &[LANE_DATAGRAM, b'b', b'1']
            ]
        );
        sink.pending.close();
        assert_eq!(sink.send_tick(a.0, a.1, &tick(b"a3")), TickDelivery::Closed);
    }

    #[test]
    fn every_websocket_recipient_shares_one_framed_copy_of_a_tick() {
        let one = WsTickSink::default();
        let other = WsTickSink::default();
        let outgoing = tick(b"pose");
        one.send_tick(RoomSlot(1), MemberId(1), &outgoing);
        other.send_tick(RoomSlot(1), MemberId(1), &outgoing);
        let (a, b) = (take(&one), take(&other));
        assert_eq!(a[0], b[0]);
        assert_eq!(a[0].as_ptr(), b[0].as_ptr(), "the same bytes, not a copy");
    }

    #[test]
    fn a_pong_echoing_a_heartbeat_gives_its_round_trip() {
        let sent = heartbeat_clock().to_le_bytes();
        std::thread::sleep(Duration::from_millis(5));
        let rtt = heartbeat_rtt(&sent).expect("one of our pings");
        assert!(rtt >= Duration::from_millis(5) && rtt < Duration::from_secs(5));
        assert_eq!(heartbeat_rtt(b""), None, "not one of ours");
        assert_eq!(
            heartbeat_rtt(&u64::MAX.to_le_bytes()),
            None,
            "from the future"
        );
    }

    #[test]
    fn lane_messages_prefix_the_body() {
        let Message::Binary(data) = lane_message(LANE_CHUNK, b"xyz") else {
            panic!("binary");
        };
        assert_eq!(&data[..], b"\x02xyz");
    }

    fn binary(lane: u8, body: &[u8]) -> Bytes {
        let Message::Binary(data) = lane_message(lane, body) else {
            unreachable!()
        };
        data
    }

    fn upload_message(content: &[u8]) -> Vec<u8> {
        let mut body = encode_pack_header(&PackStreamHeader::Upload {
            hash: vec![7; 32],
            offset: 0,
        });
        body.extend_from_slice(content);
        body
    }

    #[test]
    fn pack_messages_reach_the_session_as_pack_chunks() {
        let mut lanes = Lanes::new(1024, max_pack_message_bytes(16 * 1024));
        let body = upload_message(b"content");
        let Ok(Some(Inbound::PackChunk(got))) = lanes.on_binary(binary(LANE_PACK, &body)) else {
            panic!("a pack chunk");
        };
        assert_eq!(got, body);
        let (header, content) = chorus_protocol::split_pack_message(&got).expect("splits");
        assert!(matches!(header, PackStreamHeader::Upload { offset: 0, .. }));
        assert_eq!(content, b"content");

        // Between the pieces of a chunked control message: the message is
        // still put together.
        assert!(matches!(
            lanes.on_binary(binary(LANE_CHUNK, b"ab")),
            Ok(None)
        ));
        assert!(matches!(
            lanes.on_binary(binary(LANE_PACK, &body)),
            Ok(Some(Inbound::PackChunk(_)))
        ));
        let Ok(Some(Inbound::Control(control))) = lanes.on_binary(binary(LANE_CONTROL, b"cd"))
        else {
            panic!("the control message");
        };
        assert_eq!(&control[..], b"abcd");
    }

    #[test]
    fn oversized_pack_messages_are_frame_too_large() {
        let max = max_pack_message_bytes(16 * 1024);
        assert_eq!(max, 5 + MAX_PACK_HEADER_BYTES + 16 * 1024);
        // A smaller configured chunk size does not shrink what clients may send.
        assert_eq!(max_pack_message_bytes(1024), max);
        assert_eq!(
            max_pack_message_bytes(64 * 1024),
            5 + MAX_PACK_HEADER_BYTES + 64 * 1024
        );
        // The WebSocket message limit makes room for them even with tiny frames.
        assert_eq!(max_message_bytes(1024, 16 * 1024), 1 + max);
        assert_eq!(max_message_bytes(4 << 20, 16 * 1024), 1 + (4 << 20));

        let mut lanes = Lanes::new(1024, max);
        let fits = vec![0; max];
        assert!(matches!(
            lanes.on_binary(binary(LANE_PACK, &fits)),
            Ok(Some(Inbound::PackChunk(_)))
        ));
        let too_big = vec![0; max + 1];
        let Err(TransportError::Frame(FrameError::TooLarge {
            declared,
            max: limit,
        })) = lanes.on_binary(binary(LANE_PACK, &too_big))
        else {
            panic!("FrameTooLarge");
        };
        assert_eq!(declared, max as u64 + 1);
        assert_eq!(limit as usize, max);
    }

    #[test]
    fn unknown_lanes_are_still_refused() {
        let mut lanes = Lanes::new(1024, 1024);
        assert!(matches!(
            lanes.on_binary(binary(0x04, b"x")),
            Ok(Some(Inbound::Refused(_)))
        ));
        assert!(matches!(
            lanes.on_binary(Bytes::new()),
            Ok(Some(Inbound::Refused(_)))
        ));
    }

    /// A pack message as (request id, offset, size, chunk).
    fn download_parts(message: &Message) -> (u64, u64, u64, Vec<u8>) {
        let Message::Binary(data) = message else {
            panic!("binary: {message:?}");
        };
        assert_eq!(data[0], LANE_PACK);
        let (header, chunk) = chorus_protocol::split_pack_message(&data[1..]).expect("splits");
        let PackStreamHeader::Download {
            request_id,
            hash,
            offset,
            size,
        } = header
        else {
            panic!("a download header");
        };
        assert_eq!(hash, [9; 32]);
        (u64::from(request_id), offset, size, chunk.to_vec())
    }

    fn download(content: &'static [u8], offset: u64) -> PackDownload {
        PackDownload {
            request_id: 5,
            hash: [9; 32],
            offset,
            size: offset + content.len() as u64,
            content: Bytes::from_static(content),
        }
    }

    #[tokio::test]
    async fn downloads_become_chunks_with_their_own_offsets() {
        let (tx, mut rx) = mpsc::channel(16);
        let sink = WsPackSink { tx, chunk_bytes: 4 };
        sink.send_pack(download(b"0123456789", 100))
            .await
            .expect("queued");
        let mut parts = Vec::new();
        while let Ok(message) = rx.try_recv() {
            parts.push(download_parts(&message));
        }
        assert_eq!(
            parts,
            [
                (5, 100, 110, b"0123".to_vec()),
                (5, 104, 110, b"4567".to_vec()),
                (5, 108, 110, b"89".to_vec()),
            ]
        );

        // Nothing left to send is still answered, with one empty chunk.
        sink.send_pack(download(b"", 110)).await.expect("queued");
        assert_eq!(
            download_parts(&rx.try_recv().expect("one")),
            (5, 110, 110, vec![])
        );
        assert!(rx.try_recv().is_err());

        // The writer gone: the download fails.
        drop(rx);
        assert!(matches!(
            sink.send_pack(download(b"x", 0)).await,
            Err(TransportError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_full_pack_queue_holds_the_download_back() {
        let (tx, mut rx) = mpsc::channel(2);
        let sink = Arc::new(WsPackSink { tx, chunk_bytes: 1 });
        let sending = tokio::spawn({
            let sink = sink.clone();
            async move { sink.send_pack(download(b"abcdef", 0)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !sending.is_finished(),
            "six chunks do not fit a queue of two"
        );
        assert_eq!(rx.len(), 2);
        let mut chunks = Vec::new();
        while chunks.len() < 6 {
            let message = rx.recv().await.expect("a chunk");
            chunks.extend(download_parts(&message).3);
        }
        sending.await.expect("joins").expect("sent");
        assert_eq!(chunks, b"abcdef");
    }

    /// Records what the writer writes.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Message>>>);

    impl futures_util::Sink<Message> for Recorder {
        type Error = axum::Error;

        fn poll_ready(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.0.lock().expect("lock").push(item);
            Ok(())
        }

        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Starts a writer task that writes into a new [`Recorder`].
    fn spawn_writer(
        out_rx: mpsc::Receiver<WsOut>,
        pack_rx: mpsc::Receiver<Message>,
        ticks: &Arc<WsTickSink>,
        close: &Arc<CloseRequest>,
        settings: WsSettings,
    ) -> (Recorder, tokio::task::JoinHandle<()>) {
        let recorder = Recorder::default();
        let writer = tokio::spawn(write_loop(
            recorder.clone(),
            out_rx,
            pack_rx,
            ticks.clone(),
            close.clone(),
            settings,
        ));
        (recorder, writer)
    }

    /// A written message as a short label: `T` tick, `C` control, `c` control
    /// chunk, `P` pack (with its first content byte), `X` close.
    fn label(message: &Message) -> String {
        match message {
            Message::Binary(data) => match data[0] {
                LANE_DATAGRAM => format!("T{}", data[1] as char),
                LANE_CONTROL => format!("C{}", data[1] as char),
                LANE_CHUNK => format!("c{}", data[1] as char),
                LANE_PACK => format!("P{}", download_parts(message).3[0] as char),
                other => panic!("lane {other}"),
            },
            Message::Close(_) => "X".into(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_writer_sends_pack_messages_below_ticks_and_control_messages() {
        let (out_tx, out_rx) = mpsc::channel(2);
        let (pack_tx, pack_rx) = mpsc::channel(8);
        let ticks = Arc::new(WsTickSink::default());
        let close = Arc::new(CloseRequest::default());
        let packs = WsPackSink {
            tx: pack_tx,
            chunk_bytes: 1,
        };
        // Everything is waiting before the writer starts: a tick, two control
        // batches (the first one message in three chunks) and four pack chunks.
        ticks.send_tick(RoomSlot(1), MemberId(1), &tick(b"t"));
        out_tx
            .send(WsOut::Frames(vec![Bytes::from_static(b"aaaaaaaaa")]))
            .await
            .expect("queued");
        out_tx
            .send(WsOut::Frames(vec![Bytes::from_static(b"b")]))
            .await
            .expect("queued");
        packs.send_pack(download(b"1234", 0)).await.expect("queued");

        let settings = WsSettings {
            chunk_bytes: 4,
            ..WsSettings::default()
        };
        let (recorder, writer) = spawn_writer(out_rx, pack_rx, &ticks, &close, settings);
        let expected = ["Tt", "P1", "ca", "ca", "Ca", "P2", "Cb", "P3", "P4"];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while recorder.0.lock().expect("lock").len() < expected.len() {
            assert!(tokio::time::Instant::now() < deadline, "the writer stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // One pack message per round while ticks or control messages wait,
        // never inside a chunked control message, the rest once idle.
        WsCloser { close }.close(0, "");
        writer.await.expect("the writer ends");
        let labels: Vec<String> = recorder.0.lock().expect("lock").iter().map(label).collect();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.push("X".into());
        assert_eq!(labels, want);
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_coalescing_window_ticks_wait_for_it_and_leave_in_one_round() {
        let (_out_tx, out_rx) = mpsc::channel(2);
        let (_pack_tx, pack_rx) = mpsc::channel(8);
        let ticks = Arc::new(WsTickSink::default());
        let close = Arc::new(CloseRequest::default());
        let settings = WsSettings {
            tick_coalesce: Duration::from_millis(5),
            ..WsSettings::default()
        };
        let (recorder, writer) = spawn_writer(out_rx, pack_rx, &ticks, &close, settings);
        let written = || {
            recorder
                .0
                .lock()
                .expect("lock")
                .iter()
                .map(label)
                .collect::<Vec<_>>()
        };
        ticks.send_tick(RoomSlot(1), MemberId(1), &tick(b"a"));
        tokio::time::sleep(Duration::from_millis(3)).await;
        ticks.send_tick(RoomSlot(1), MemberId(2), &tick(b"b"));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(written().is_empty(), "4 ms into a 5 ms window");
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut labels = written();
        labels.sort();
        assert_eq!(
            labels,
            ["Ta", "Tb"],
            "both when the first one's window ends"
        );
        WsCloser { close }.close(0, "");
        writer.await.expect("the writer ends");
        assert_eq!(
            ticks.send_tick(RoomSlot(1), MemberId(1), &tick(b"c")),
            TickDelivery::Closed
        );
    }
}
