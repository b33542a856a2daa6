//! The WebTransport adapter: turns a wtransport connection into a session.
//!
//! It accepts sessions on one path, waits for the client's control stream, and
//! hands [`run_session`] a reader (control frames + datagrams), a writer (framed
//! batches on the control stream) and a tick sink (datagrams). Nothing about
//! rooms or messages is decided here.

use crate::origin::OriginPolicy;
use crate::rooms::{TickDelivery, TickSink};
use crate::session::{
    Inbound, SessionContext, SessionInfo, TransportCloser, TransportError, TransportReader,
    TransportWriter, run_session,
};
use bytes::Bytes;
use chorus_protocol::frame::put_varint_u32;
use chorus_protocol::{ErrorCode, FrameDecoder, MemberId, RoomSlot};
use std::sync::Arc;
use std::time::Duration;
use wtransport::endpoint::IncomingSession;
use wtransport::error::{ConnectionError, SendDatagramError, StreamReadError};
use wtransport::{Connection, RecvStream, SendStream, VarInt};

/// The URL path of the WebTransport endpoint.
pub const WEBTRANSPORT_PATH: &str = "/chorus";

/// Settings of the WebTransport endpoint.
#[derive(Debug, Clone)]
pub struct WtSettings {
    pub handshake_timeout: Duration,
    pub origins: OriginPolicy,
}

/// Handles one incoming WebTransport session from QUIC handshake to close.
pub async fn handle_incoming(
    incoming: IncomingSession,
    ctx: Arc<SessionContext>,
    settings: Arc<WtSettings>,
) {
    let handshake_timeout = settings.handshake_timeout;
    let remote = incoming.remote_address();
    let request = match tokio::time::timeout(handshake_timeout, incoming).await {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "WebTransport handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "WebTransport handshake timed out");
            return;
        }
    };
    if request.path() != WEBTRANSPORT_PATH {
        tracing::debug!(%remote, path = request.path(), "WebTransport request for an unknown path");
        request.not_found().await;
        return;
    }
    if !settings
        .origins
        .allows(request.origin(), Some(request.authority()))
    {
        tracing::info!(%remote, origin = request.origin().unwrap_or(""), "WebTransport session from a disallowed origin refused");
        request.forbidden().await;
        return;
    }
    let connection = match request.accept().await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "WebTransport session not established");
            return;
        }
    };
    let (send, recv) = match tokio::time::timeout(handshake_timeout, connection.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "no control stream");
            return;
        }
        Err(_) => {
            connection.close(
                VarInt::from_u32(u32::from(ErrorCode::HandshakeTimeout.as_u16())),
                b"no control stream opened in time",
            );
            return;
        }
    };
    let info = SessionInfo {
        remote,
        transport: "webtransport",
        max_datagram_size: connection
            .max_datagram_size()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
    };
    let max_frame = ctx.config.limits.max_frame_bytes;
    let reader = WtReader {
        connection: connection.clone(),
        recv,
        decoder: FrameDecoder::new(max_frame),
        buf: vec![0; 16 * 1024],
    };
    let writer = WtWriter { send };
    let closer = WtCloser {
        connection: connection.clone(),
    };
    let sink = Arc::new(WtTickSink { connection });
    run_session(ctx, info, reader, writer, closer, sink).await;
}

fn connection_ended(error: ConnectionError) -> TransportError {
    match error {
        ConnectionError::ApplicationClosed(_)
        | ConnectionError::ConnectionClosed(_)
        | ConnectionError::LocallyClosed => TransportError::Closed,
        ConnectionError::TimedOut => TransportError::TimedOut,
        other => TransportError::Failed(other.to_string()),
    }
}

struct WtReader {
    connection: Connection,
    recv: RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl WtReader {
    /// Why the connection under a failed stream ended (e.g. the idle timeout).
    fn why_closed(&self) -> TransportError {
        match self.connection.quic_connection().close_reason() {
            Some(wtransport::quinn::ConnectionError::TimedOut) => TransportError::TimedOut,
            _ => TransportError::Closed,
        }
    }
}

impl TransportReader for WtReader {
    /// # Cancel safety
    /// Cancel safe: a datagram is taken only when returned, and stream bytes go
    /// into the frame decoder (kept across calls) in the same step they are read.
    async fn recv(&mut self) -> Result<Inbound, TransportError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Inbound::Control(frame));
            }
            tokio::select! {
                datagram = self.connection.receive_datagram() => {
                    return datagram
                        .map(|d| Inbound::Datagram(d.payload()))
                        .map_err(connection_ended);
                }
                read = self.recv.read(&mut self.buf) => match read {
                    Ok(Some(n)) => self.decoder.extend(&self.buf[..n]),
                    Ok(None) => return Err(TransportError::Closed),
                    Err(StreamReadError::NotConnected) => return Err(self.why_closed()),
                    Err(e) => return Err(TransportError::Failed(e.to_string())),
                },
            }
        }
    }
}

struct WtWriter {
    send: SendStream,
}

impl TransportWriter for WtWriter {
    async fn write_frames(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        // One gathered write per batch: each body keeps its own (shared) buffer,
        // only the short length prefixes are new.
        let mut chunks = Vec::with_capacity(frames.len() * 2);
        for frame in frames {
            let mut prefix = Vec::with_capacity(5);
            put_varint_u32(&mut prefix, frame.len() as u32);
            chunks.push(Bytes::from(prefix));
            chunks.push(frame.clone());
        }
        self.send
            .quic_stream_mut()
            .write_all_chunks(&mut chunks)
            .await
            .map_err(|e| TransportError::Failed(e.to_string()))
    }

    async fn finish(&mut self) {
        let stream = self.send.quic_stream_mut();
        if stream.finish().is_ok() {
            // Resolves once the client has acknowledged everything we wrote.
            let _ = stream.stopped().await;
        }
    }
}

struct WtCloser {
    connection: Connection,
}

impl TransportCloser for WtCloser {
    fn close(&self, code: u16, reason: &str) {
        self.connection
            .close(VarInt::from_u32(u32::from(code)), reason.as_bytes());
    }
}

#[derive(Debug)]
struct WtTickSink {
    connection: Connection,
}

impl std::fmt::Debug for WtReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtReader").finish_non_exhaustive()
    }
}

impl TickSink for WtTickSink {
    fn send_tick(&self, _room: RoomSlot, _sender: MemberId, datagram: &Bytes) -> TickDelivery {
        // quinn keeps a bounded datagram send buffer and drops the oldest
        // datagrams when it is full: newest wins for a slow receiver.
        match self.connection.send_datagram(datagram) {
            Ok(()) => TickDelivery::Queued,
            Err(SendDatagramError::TooLarge) => TickDelivery::TooLarge,
            Err(SendDatagramError::NotConnected | SendDatagramError::UnsupportedByPeer) => {
                TickDelivery::Closed
            }
        }
    }
}
