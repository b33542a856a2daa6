//! The two transports behind one small interface, so the driver (replicas,
//! pending requests, events, clock, errors) is written once.
//!
//! A transport gives the driver three things:
//! - a [`LinkReader`]: the next inbound control message body, tick datagram or
//!   pack transfer, or why the connection ended ([`LinkClose`]);
//! - a [`LinkWriter`]: sends control message bodies, and runs as the single
//!   writer task of the connection until told to stop;
//! - a [`Link`]: what the handles need at any time: send a tick without
//!   blocking, send a pack's content, the tick size bound, close.
//!
//! What differs: WebTransport frames control messages on a QUIC stream with a
//! varint length prefix, sends ticks as QUIC datagrams and packs on
//! unidirectional streams; WebSocket puts a lane byte in front of each binary
//! message, chunks large control messages, carries ticks in-band with a
//! newest-wins slot per room, and packs in lane `0x03` messages
//! (PROTOCOL.md §1.3).
//!
//! A client may go through several connections (reconnects): each has its own
//! link, reader and writer; the driver owns the choice of the current one.

pub(crate) mod websocket;
pub(crate) mod webtransport;

use crate::driver::Shared;
use crate::error::{CloseReason, TickError};
use bytes::Bytes;
use chorus_protocol::frame::{MAX_VARINT_LEN, put_varint_u32};
use chorus_protocol::{ErrorCode, ErrorFrame, PackStreamHeader, RoomSlot, encode_pack_header};
use serde::Serialize;
use std::fmt;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long to wait for the connection's own close reason after a failure, and
/// for a close to reach the network.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The transport a [`Client`](crate::Client) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebTransport over HTTP/3 (QUIC, UDP): ticks are QUIC datagrams.
    WebTransport,
    /// WebSocket over TCP (`ws://` or `wss://`): ticks travel in-band, newest-wins.
    WebSocket,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::WebTransport => "WebTransport",
            Transport::WebSocket => "WebSocket",
        })
    }
}

/// What a transport delivers to the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// One complete control message body (a `ServerMessage`, not yet decoded).
    Control(Bytes),
    /// One datagram body (a `Datagram`, not yet decoded).
    Datagram(Bytes),
    /// One WebSocket pack-lane message body: a framed `PackStreamHeader` and
    /// one chunk of content.
    Pack(Bytes),
    /// A pack stream the server opened (WebTransport): a framed
    /// `PackStreamHeader`, then content to the stream's end.
    PackStream(wtransport::RecvStream),
}

#[cfg(test)]
impl PartialEq for Inbound {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Inbound::Control(a), Inbound::Control(b))
            | (Inbound::Datagram(a), Inbound::Datagram(b))
            | (Inbound::Pack(a), Inbound::Pack(b)) => a == b,
            _ => false,
        }
    }
}

/// How a transport saw the connection end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkClose {
    /// The reason is already known.
    Reason(CloseReason),
    /// The server closed the connection with an application close code: the
    /// Chorus error code, 0 for a normal close (WebTransport: the QUIC
    /// application code; WebSocket: the close code minus 4000, or 0 for 1000).
    Application {
        /// The code.
        code: u64,
        /// The close reason text.
        reason: String,
    },
}

impl LinkClose {
    /// The close reason, preferring `last_error` (the error frame the server sent
    /// just before closing) when it carries the same code.
    pub(crate) fn into_reason(self, last_error: Option<ErrorFrame>) -> CloseReason {
        match self {
            LinkClose::Reason(reason) => reason,
            LinkClose::Application { code, reason } => {
                application_close_reason(code, reason, last_error)
            }
        }
    }

    pub(crate) fn transport(text: impl Into<String>) -> Self {
        LinkClose::Reason(CloseReason::Transport(text.into()))
    }

    pub(crate) fn protocol(text: impl Into<String>) -> Self {
        LinkClose::Reason(CloseReason::Protocol(text.into()))
    }
}

/// The reason for a close by the server with an application `code` and `reason`
/// text. A non-zero code is the Chorus error code; the error frame sent just
/// before (same code) carries the full message and detail.
pub(crate) fn application_close_reason(
    code: u64,
    reason: String,
    last_error: Option<ErrorFrame>,
) -> CloseReason {
    if code == 0 {
        return CloseReason::ServerClosed { reason };
    }
    match u16::try_from(code) {
        Ok(code) => {
            let code = ErrorCode::from_u16(code);
            match last_error {
                Some(frame) if frame.code == code => CloseReason::Server(frame),
                _ => CloseReason::Server(ErrorFrame::new(None, code, reason)),
            }
        }
        Err(_) => CloseReason::Transport(format!("closed with code {code}: {reason}")),
    }
}

/// One encoded control message body with [`HEADROOM`] spare bytes in front, so
/// each transport puts its header there (a length prefix, a lane byte) without
/// copying the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutMessage {
    buf: Vec<u8>,
}

/// Spare bytes before an [`OutMessage`] body: the longest frame length prefix.
pub(crate) const HEADROOM: usize = MAX_VARINT_LEN;

impl OutMessage {
    /// Encodes `message` (postcard, no prefix).
    pub(crate) fn encode<T: Serialize>(message: &T) -> Self {
        OutMessage {
            buf: postcard_to_extend(message, vec![0u8; HEADROOM]),
        }
    }

    /// A message holding exactly these body bytes.
    #[cfg(test)]
    pub(crate) fn from_body(body: &[u8]) -> Self {
        let mut buf = vec![0u8; HEADROOM];
        buf.extend_from_slice(body);
        OutMessage { buf }
    }

    /// The body.
    pub(crate) fn body(&self) -> &[u8] {
        &self.buf[HEADROOM..]
    }

    /// The body after a length prefix: one frame of the WebTransport control stream.
    pub(crate) fn into_frame(self) -> Bytes {
        let body_len = self.buf.len() - HEADROOM;
        let mut prefix = Vec::with_capacity(MAX_VARINT_LEN);
        // A body over u32::MAX cannot pass the max_frame_bytes check before this.
        put_varint_u32(&mut prefix, u32::try_from(body_len).unwrap_or(u32::MAX));
        let start = HEADROOM - prefix.len();
        let mut buf = self.buf;
        buf[start..HEADROOM].copy_from_slice(&prefix);
        Bytes::from(buf).slice(start..)
    }

    /// The body after one header byte (a WebSocket lane byte).
    pub(crate) fn into_lane_message(self, lane: u8) -> Bytes {
        let mut buf = self.buf;
        buf[HEADROOM - 1] = lane;
        Bytes::from(buf).slice(HEADROOM - 1..)
    }
}

fn postcard_to_extend<T: Serialize>(message: &T, buf: Vec<u8>) -> Vec<u8> {
    match postcard::to_extend(message, buf) {
        Ok(buf) => buf,
        // As in the protocol crate's encoders: its types cannot fail to encode
        // into a growable Vec.
        Err(e) => unreachable!("postcard cannot fail to encode a protocol message: {e}"),
    }
}

/// The part of a transport that the handles use at any time.
pub(crate) enum Link {
    WebTransport(webtransport::WtLink),
    WebSocket(websocket::WsLink),
}

impl Link {
    pub(crate) fn kind(&self) -> Transport {
        match self {
            Link::WebTransport(_) => Transport::WebTransport,
            Link::WebSocket(_) => Transport::WebSocket,
        }
    }

    /// The largest datagram the connection can send now; `None` without
    /// datagrams (always on WebSocket).
    pub(crate) fn max_datagram_size(&self) -> Option<usize> {
        match self {
            Link::WebTransport(l) => l.max_datagram_size(),
            Link::WebSocket(_) => None,
        }
    }

    /// The largest tick payload sendable now, given the server's `limit`.
    pub(crate) fn max_tick_payload(&self, limit: usize) -> usize {
        match self {
            Link::WebTransport(l) => match l.max_datagram_size() {
                Some(max) => limit.min(max.saturating_sub(chorus_protocol::TICK_MAX_OVERHEAD)),
                None => 0,
            },
            // Ticks travel in-band: only the server's limit applies.
            Link::WebSocket(_) => limit,
        }
    }

    /// Sends one encoded tick datagram for `room` without waiting.
    pub(crate) fn send_tick(
        &self,
        shared: &Shared,
        room: RoomSlot,
        datagram: Vec<u8>,
    ) -> Result<(), TickError> {
        match self {
            Link::WebTransport(l) => l.send_tick(shared, &datagram),
            Link::WebSocket(l) => {
                l.send_tick(room, &datagram);
                Ok(())
            }
        }
    }

    /// Outgoing ticks dropped before they reached the network because a newer
    /// one for the same room replaced them (WebSocket only).
    pub(crate) fn outgoing_ticks_dropped(&self) -> u64 {
        match self {
            Link::WebTransport(_) => 0,
            Link::WebSocket(l) => l.ticks_dropped(),
        }
    }

    /// Sends a pack's content from `offset` (`content` is what follows it):
    /// WebTransport, on a unidirectional stream of its own (resolves once the
    /// server has acknowledged every byte); WebSocket, as pack-lane messages
    /// of at most 16 KiB through the writer (resolves once the last one is
    /// queued). The error text says what failed.
    pub(crate) async fn send_pack(
        &self,
        hash: &[u8],
        offset: u64,
        content: Bytes,
    ) -> Result<(), String> {
        match self {
            Link::WebTransport(l) => l.send_pack(hash, offset, &content).await,
            Link::WebSocket(l) => l.send_pack(hash, offset, content).await,
        }
    }

    /// Closes the connection for `reason` (called when it is done with; never
    /// blocks; a no-op when already closed).
    pub(crate) fn close(&self, reason: &CloseReason) {
        match self {
            Link::WebTransport(l) => l.close(reason),
            // The WebSocket writer task sends the close frame itself.
            Link::WebSocket(_) => {}
        }
    }

    /// Waits (up to [`CLOSE_GRACE`]) until the close has reached the network.
    pub(crate) async fn wait_closed(&self) {
        match self {
            Link::WebTransport(l) => l.wait_idle().await,
            Link::WebSocket(l) => l.wait_finished().await,
        }
    }
}

/// The start of a pack transfer from this client: the framed
/// `PackStreamHeader::Upload`.
pub(crate) fn upload_header(hash: &[u8], offset: u64) -> Vec<u8> {
    encode_pack_header(&PackStreamHeader::Upload {
        hash: hash.to_vec(),
        offset,
    })
}

/// The inbound half of a transport.
pub(crate) enum LinkReader {
    WebTransport(webtransport::WtReader),
    WebSocket(websocket::WsReader),
}

impl LinkReader {
    /// The next control message body or datagram, or how the connection ended.
    /// Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Result<Inbound, LinkClose> {
        match self {
            LinkReader::WebTransport(r) => r.recv().await,
            LinkReader::WebSocket(r) => r.recv().await,
        }
    }

    /// Sets the largest control message body accepted from now on.
    pub(crate) fn set_max_frame_bytes(&mut self, max: u32) {
        match self {
            LinkReader::WebTransport(r) => r.set_max_frame_bytes(max),
            LinkReader::WebSocket(r) => r.set_max_frame_bytes(max),
        }
    }

    /// After the connection has ended: lets the transport finish its close
    /// (WebSocket: read until the server's close frame, bounded).
    pub(crate) async fn finish(self) {
        match self {
            LinkReader::WebTransport(_) => {}
            LinkReader::WebSocket(r) => r.finish().await,
        }
    }
}

/// The outbound half of a transport.
pub(crate) enum LinkWriter {
    WebTransport(webtransport::WtWriter),
    WebSocket(websocket::WsWriter),
}

impl LinkWriter {
    /// Sends one control message (used for the hello, before the writer task).
    pub(crate) async fn send_control(&mut self, message: OutMessage) -> Result<(), LinkClose> {
        match self {
            LinkWriter::WebTransport(w) => w.send_control(message).await,
            LinkWriter::WebSocket(w) => w.send_control(message).await,
        }
    }

    /// Runs as the connection's only writer: sends what `rx` delivers (and, on
    /// WebSocket, pending ticks, pack messages and pings) until `stop` holds a
    /// reason. For [`CloseReason::Local`] it first sends what is still queued
    /// (e.g. the `Leave`s of dropped rooms) and makes sure it arrived, within
    /// [`CLOSE_GRACE`]; on WebSocket it then sends the close frame. Returns
    /// how the connection failed, if a write failed.
    pub(crate) async fn run(
        self,
        rx: mpsc::Receiver<OutMessage>,
        stop: watch::Receiver<Option<CloseReason>>,
    ) -> Result<(), LinkClose> {
        match self {
            LinkWriter::WebTransport(w) => w.run(rx, stop).await,
            LinkWriter::WebSocket(w) => w.run(rx, stop).await,
        }
    }

    /// Gives up on a connection whose handshake failed: a best-effort close.
    pub(crate) async fn abort(self, link: &Link) {
        match (self, link) {
            (LinkWriter::WebSocket(w), _) => w.abort().await,
            (LinkWriter::WebTransport(_), Link::WebTransport(l)) => l.abort(),
            (LinkWriter::WebTransport(_), Link::WebSocket(_)) => {}
        }
    }
}

/// A freshly connected transport, before the Chorus handshake.
pub(crate) struct Connected {
    pub(crate) link: Link,
    pub(crate) reader: LinkReader,
    pub(crate) writer: LinkWriter,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::{ClientMessage, FrameDecoder, encode_frame};

    #[test]
    fn out_message_frames_like_encode_frame() {
        let msg = ClientMessage::Leave {
            request_id: 2,
            room: RoomSlot(1),
        };
        let out = OutMessage::encode(&msg);
        assert_eq!(out.body(), [2, 2, 1]);
        assert_eq!(out.clone().into_frame(), encode_frame(&msg));
        assert_eq!(out.into_lane_message(0).as_ref(), [0, 2, 2, 1]);
        // A body whose prefix takes two bytes.
        let big = OutMessage::from_body(&[7u8; 300]);
        let frame = big.into_frame();
        assert_eq!(&frame[..2], [0xac, 0x02]);
        let mut d = FrameDecoder::new(1000);
        d.extend(&frame);
        assert_eq!(d.next_frame().expect("frame").map(|b| b.len()), Some(300));
    }

    #[test]
    fn close_code_zero_is_a_normal_close() {
        assert_eq!(
            application_close_reason(0, "bye".into(), None),
            CloseReason::ServerClosed {
                reason: "bye".into()
            }
        );
    }

    #[test]
    fn close_code_is_the_error_code_and_prefers_the_error_frame() {
        use chorus_protocol::ErrorDetail;
        let frame = ErrorFrame::new(
            None,
            ErrorCode::SlowConsumer,
            "too slow: 1000 events queued",
        )
        .with_detail(ErrorDetail::Limit {
            limit: 1000,
            actual: 1001,
        });
        assert_eq!(
            application_close_reason(400, "slow".into(), Some(frame.clone())),
            CloseReason::Server(frame.clone())
        );
        // A frame with another code is not the cause.
        assert_eq!(
            application_close_reason(501, "shutting down".into(), Some(frame)),
            CloseReason::Server(ErrorFrame::new(
                None,
                ErrorCode::ShuttingDown,
                "shutting down"
            ))
        );
        let r = application_close_reason(777, "new".into(), None);
        assert_eq!(r.code(), Some(ErrorCode::Unknown(777)));
        assert!(matches!(
            application_close_reason(70_000, String::new(), None),
            CloseReason::Transport(_)
        ));
    }
}
