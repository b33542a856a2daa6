//! The WebSocket adapter: the fallback for networks that block UDP.
//!
//! One WebSocket carries both lanes (PROTOCOL.md §1.3): every binary message
//! starts with a lane byte, `0x00` a control message (or the last piece of a
//! chunked one), `0x01` a tick, `0x02` a chunk of a control message. This module
//! turns that into the same reader / writer / tick sink the session uses for
//! WebTransport, so no session or room logic is written twice.
//!
//! The writer task owns the socket's sending half and keeps the tick lane's
//! promise on TCP: ticks wait in a newest-wins slot per (room, sender), and are
//! written before every control message or chunk, so a tick waits at most
//! behind one chunk, never behind a backlog. It also sends heartbeat pings; the
//! reader closes a connection that has been silent past the heartbeat timeout.

use crate::rooms::{TickDelivery, TickSink};
use crate::session::{
    Inbound, SessionContext, SessionInfo, TransportCloser, TransportError, TransportReader,
    TransportWriter, run_session,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{Bytes, BytesMut};
use chorus_protocol::{ErrorCode, ErrorFrame, FrameError, MemberId, RoomSlot};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

/// Lane byte: a complete control message, or the last piece of a chunked one.
pub const LANE_CONTROL: u8 = 0x00;
/// Lane byte: one datagram (a tick).
pub const LANE_DATAGRAM: u8 = 0x01;
/// Lane byte: a piece of a control message that continues.
pub const LANE_CHUNK: u8 = 0x02;
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
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            chunk_bytes: 16 * 1024,
        }
    }
}

/// Runs a session over an upgraded WebSocket.
pub async fn run_websocket(
    socket: WebSocket,
    ctx: Arc<SessionContext>,
    remote: SocketAddr,
    settings: WsSettings,
) {
    let (sink, stream) = socket.split();
    let ticks = Arc::new(WsTickSink::default());
    let close = Arc::new(CloseRequest::default());
    // Two batches in flight at most: the session's outbox is the real queue.
    let (out_tx, out_rx) = mpsc::channel(2);
    tokio::spawn(write_loop(
        sink,
        out_rx,
        ticks.clone(),
        close.clone(),
        settings.clone(),
    ));
    let reader = WsReader {
        stream,
        partial: BytesMut::new(),
        max_frame: ctx.config.limits.max_frame_bytes as usize,
        heartbeat_timeout: settings.heartbeat_timeout,
    };
    let info = SessionInfo {
        remote,
        transport: "websocket",
        max_datagram_size: 0,
    };
    let writer = WsWriter { tx: out_tx };
    let closer = WsCloser { close };
    run_session(ctx, info, reader, writer, closer, ticks).await;
}

struct WsReader {
    stream: SplitStream<WebSocket>,
    /// Pieces of a chunked control message received so far.
    partial: BytesMut,
    max_frame: usize,
    heartbeat_timeout: Duration,
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

impl WsReader {
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
                    Ok(Some(Err(e))) => return Err(read_error(e, self.max_frame)),
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
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return Err(TransportError::Closed),
            };
            let Some(&lane) = data.first() else {
                return Ok(refused("empty WebSocket message"));
            };
            let body = data.slice(1..);
            match lane {
                LANE_DATAGRAM => return Ok(Inbound::Datagram(body)),
                LANE_CONTROL if self.partial.is_empty() => {
                    if body.len() > self.max_frame {
                        return Err(TransportError::Frame(FrameError::TooLarge {
                            declared: body.len() as u64,
                            max: self.max_frame as u32,
                        }));
                    }
                    return Ok(Inbound::Control(body));
                }
                LANE_CONTROL => {
                    self.append(&body)?;
                    return Ok(Inbound::Control(self.partial.split().freeze()));
                }
                LANE_CHUNK => self.append(&body)?,
                other => {
                    return Ok(refused(&format!(
                        "unknown WebSocket lane byte {other:#04x}"
                    )));
                }
            }
        }
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

/// The tick lane of one WebSocket receiver: newest tick per (room, sender).
#[derive(Debug, Default)]
struct WsTickSink {
    pending: Mutex<HashMap<(RoomSlot, MemberId), Bytes>>,
    ready: Notify,
    closed: AtomicBool,
}

impl TickSink for WsTickSink {
    fn send_tick(&self, room: RoomSlot, sender: MemberId, datagram: &Bytes) -> TickDelivery {
        if self.closed.load(Ordering::Relaxed) {
            return TickDelivery::Closed;
        }
        let replaced = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((room, sender), datagram.clone())
            .is_some();
        self.ready.notify_one();
        if replaced {
            TickDelivery::Replaced
        } else {
            TickDelivery::Queued
        }
    }
}

impl WsTickSink {
    fn take(&self) -> Vec<Bytes> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain().map(|(_, bytes)| bytes).collect()
    }
}

type Sink = SplitSink<WebSocket, Message>;

fn lane_message(lane: u8, body: &[u8]) -> Message {
    let mut data = Vec::with_capacity(body.len() + 1);
    data.push(lane);
    data.extend_from_slice(body);
    Message::Binary(Bytes::from(data))
}

async fn write_ticks(sink: &mut Sink, ticks: &WsTickSink) -> Result<(), axum::Error> {
    for tick in ticks.take() {
        sink.feed(lane_message(LANE_DATAGRAM, &tick)).await?;
    }
    Ok(())
}

async fn write_control(
    sink: &mut Sink,
    ticks: &WsTickSink,
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

async fn write_loop(
    mut sink: Sink,
    mut rx: mpsc::Receiver<WsOut>,
    ticks: Arc<WsTickSink>,
    close: Arc<CloseRequest>,
    settings: WsSettings,
) {
    let mut ping = tokio::time::interval(settings.heartbeat_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let chunk_bytes = settings.chunk_bytes.max(1);
    let mut session_done = false;
    let result: Result<(), axum::Error> = async {
        loop {
            tokio::select! {
                biased;
                () = close.notify.notified() => break,
                () = ticks.ready.notified() => {
                    write_ticks(&mut sink, &ticks).await?;
                    sink.flush().await?;
                }
                out = rx.recv(), if !session_done => match out {
                    Some(WsOut::Frames(frames)) => {
                        for frame in &frames {
                            write_control(&mut sink, &ticks, frame, chunk_bytes).await?;
                        }
                        sink.flush().await?;
                    }
                    Some(WsOut::Flush(ack)) => {
                        sink.flush().await?;
                        let _ = ack.send(());
                    }
                    None => session_done = true,
                },
                _ = ping.tick() => {
                    sink.send(Message::Ping(Bytes::new())).await?;
                }
            }
        }
        let frame = close.frame.lock().unwrap_or_else(|e| e.into_inner()).take();
        sink.send(Message::Close(frame)).await
    }
    .await;
    ticks.closed.store(true, Ordering::Relaxed);
    if let Err(e) = result {
        tracing::debug!(error = %e, "WebSocket write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_sink_keeps_the_newest_tick_per_sender() {
        let sink = WsTickSink::default();
        let a = (RoomSlot(1), MemberId(1));
        let b = (RoomSlot(1), MemberId(2));
        assert_eq!(
            sink.send_tick(a.0, a.1, &Bytes::from_static(b"a1")),
            TickDelivery::Queued
        );
        assert_eq!(
            sink.send_tick(b.0, b.1, &Bytes::from_static(b"b1")),
            TickDelivery::Queued
        );
        assert_eq!(
            sink.send_tick(a.0, a.1, &Bytes::from_static(b"a2")),
            TickDelivery::Replaced
        );
        let mut taken = sink.take();
        taken.sort();
        assert_eq!(taken, [&b"a2"[..], b"b1"]);
        assert!(sink.take().is_empty());
        sink.closed.store(true, Ordering::Relaxed);
        assert_eq!(
            sink.send_tick(a.0, a.1, &Bytes::from_static(b"a3")),
            TickDelivery::Closed
        );
    }

    #[test]
    fn lane_messages_prefix_the_body() {
        let Message::Binary(data) = lane_message(LANE_CHUNK, b"xyz") else {
            panic!("binary");
        };
        assert_eq!(&data[..], b"\x02xyz");
    }
}
