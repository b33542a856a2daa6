//! WebTransport (HTTP/3 over QUIC): the session, the control stream with
//! length-prefixed frames (PROTOCOL.md §3), ticks as QUIC datagrams.

use super::{CLOSE_GRACE, Connected, Inbound, Link, LinkClose, LinkReader, LinkWriter, OutMessage};
use crate::driver::Shared;
use crate::error::{CloseReason, ConnectError, TickError};
use crate::options::ConnectOptions;
use chorus_protocol::{ErrorCode, FrameDecoder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use wtransport::endpoint::endpoint_side;
use wtransport::error::{ConnectionError, SendDatagramError};
use wtransport::{Connection, Endpoint, RecvStream, SendStream, VarInt};

/// Bytes read from the control stream per read call.
const READ_CHUNK: usize = 64 * 1024;

/// Establishes the WebTransport session to `url` (giving up after
/// `session_timeout`) and opens the control stream.
pub(crate) async fn connect(
    url: &str,
    options: &ConnectOptions,
    max_frame_bytes: u32,
    session_timeout: Duration,
) -> Result<Connected, ConnectError> {
    let config = options.client_config()?;
    let endpoint = Endpoint::client(config)?;
    let conn = match tokio::time::timeout(session_timeout, endpoint.connect(url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(ConnectError::Connecting(format!("WebTransport: {e}"))),
        Err(_) => return Err(ConnectError::HandshakeTimeout(session_timeout)),
    };
    let (send, recv) = match conn.open_bi().await {
        Ok(opening) => match opening.await {
            Ok(streams) => streams,
            Err(e) => return Err(failed_during_handshake(&conn, e.to_string()).await),
        },
        Err(e) => return Err(failed_during_handshake(&conn, e.to_string()).await),
    };
    Ok(Connected {
        link: Link::WebTransport(WtLink {
            conn: conn.clone(),
            endpoint,
        }),
        reader: LinkReader::WebTransport(WtReader {
            conn: conn.clone(),
            recv,
            decoder: FrameDecoder::new(max_frame_bytes),
            buf: vec![0u8; READ_CHUNK],
            datagrams_open: true,
        }),
        writer: LinkWriter::WebTransport(WtWriter { conn, send }),
    })
}

async fn failed_during_handshake(conn: &Connection, text: String) -> ConnectError {
    ConnectError::Closed(failure(conn, text).await.into_reason(None))
}

/// How the connection ended after a stream failed: its own close reason if it
/// closes within a short grace period, else `text` as a transport error.
async fn failure(conn: &Connection, text: String) -> LinkClose {
    match tokio::time::timeout(CLOSE_GRACE, conn.closed()).await {
        Ok(err) => link_close(err),
        Err(_) => LinkClose::transport(text),
    }
}

/// Maps the connection's close error.
pub(crate) fn link_close(err: ConnectionError) -> LinkClose {
    match err {
        ConnectionError::ApplicationClosed(close) => LinkClose::Application {
            code: close.code().into_inner(),
            reason: String::from_utf8_lossy(close.reason()).into_owned(),
        },
        ConnectionError::LocallyClosed => LinkClose::Reason(CloseReason::Local),
        ConnectionError::TimedOut => LinkClose::transport("idle timeout"),
        other => LinkClose::transport(other.to_string()),
    }
}

/// The connection and its endpoint.
pub(crate) struct WtLink {
    conn: Connection,
    endpoint: Endpoint<endpoint_side::Client>,
}

impl WtLink {
    pub(crate) fn max_datagram_size(&self) -> Option<usize> {
        self.conn.max_datagram_size()
    }

    pub(crate) fn send_tick(&self, shared: &Shared, datagram: &[u8]) -> Result<(), TickError> {
        let max = self
            .conn
            .max_datagram_size()
            .ok_or(TickError::DatagramsUnsupported)?;
        if datagram.len() > max {
            return Err(TickError::DatagramTooLarge {
                len: datagram.len(),
                max,
            });
        }
        self.conn.send_datagram(datagram).map_err(|e| match e {
            SendDatagramError::NotConnected => TickError::Closed(shared.closed_error()),
            SendDatagramError::UnsupportedByPeer => TickError::DatagramsUnsupported,
            SendDatagramError::TooLarge => TickError::DatagramTooLarge {
                len: datagram.len(),
                max,
            },
        })
    }

    /// Closes the connection: code 0, or Malformed (100) after a protocol error.
    /// A no-op when it is already closed.
    pub(crate) fn close(&self, reason: &CloseReason) {
        let (code, text): (u32, &[u8]) = match reason {
            CloseReason::Protocol(_) => (
                u32::from(ErrorCode::Malformed.as_u16()),
                b"protocol error".as_slice(),
            ),
            _ => (0, b"closed".as_slice()),
        };
        self.conn.close(VarInt::from_u32(code), text);
    }

    pub(crate) fn abort(&self) {
        self.conn.close(VarInt::from_u32(0), b"handshake failed");
    }

    pub(crate) async fn wait_idle(&self) {
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }
}

/// The control stream's receiving half, split into frames, and the datagrams.
pub(crate) struct WtReader {
    conn: Connection,
    recv: RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    /// False once datagram reception failed (the connection is going away; the
    /// control stream read reports why).
    datagrams_open: bool,
}

impl WtReader {
    pub(crate) async fn recv(&mut self) -> Result<Inbound, LinkClose> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(body)) => return Ok(Inbound::Control(body)),
                Ok(None) => {}
                Err(e) => {
                    return Err(LinkClose::protocol(format!(
                        "bad frame from the server: {e}"
                    )));
                }
            }
            tokio::select! {
                read = self.recv.read(&mut self.buf) => match read {
                    Ok(Some(n)) => self.decoder.extend(&self.buf[..n]),
                    Ok(None) => {
                        return Err(
                            failure(&self.conn, "the server ended the control stream".into()).await,
                        );
                    }
                    Err(e) => {
                        return Err(
                            failure(&self.conn, format!("control stream read failed: {e}")).await,
                        );
                    }
                },
                datagram = self.conn.receive_datagram(), if self.datagrams_open => match datagram {
                    Ok(datagram) => return Ok(Inbound::Datagram(datagram.payload())),
                    Err(_) => self.datagrams_open = false,
                },
            }
        }
    }

    pub(crate) fn set_max_frame_bytes(&mut self, max: u32) {
        self.decoder.set_max_frame_bytes(max);
    }
}

/// The control stream's sending half.
pub(crate) struct WtWriter {
    conn: Connection,
    send: SendStream,
}

impl WtWriter {
    pub(crate) async fn send_control(&mut self, message: OutMessage) -> Result<(), LinkClose> {
        match self.send.write_all(&message.into_frame()).await {
            Ok(()) => Ok(()),
            Err(e) => Err(failure(&self.conn, format!("control stream write failed: {e}")).await),
        }
    }

    pub(crate) async fn run(mut self, shared: Arc<Shared>, mut rx: mpsc::Receiver<OutMessage>) {
        let mut closed = shared.closed_watch();
        loop {
            let message = tokio::select! {
                message = rx.recv() => message,
                _ = closed.wait_for(Option::is_some) => return,
            };
            let Some(message) = message else { return };
            let sent = tokio::select! {
                sent = self.send_control(message) => sent,
                _ = closed.wait_for(Option::is_some) => return,
            };
            if let Err(close) = sent {
                shared.link_failed(close);
                return;
            }
        }
    }
}
