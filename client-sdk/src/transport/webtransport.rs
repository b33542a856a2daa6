//! WebTransport (HTTP/3 over QUIC): the session, the control stream with
//! length-prefixed frames (PROTOCOL.md §3), ticks as QUIC datagrams, packs on
//! unidirectional streams (a framed `PackStreamHeader`, then the content to
//! the stream's end; the client opens one per upload, the server one per
//! download).

use super::{
    CLOSE_GRACE, Connected, Inbound, Link, LinkClose, LinkReader, LinkWriter, OutMessage,
    upload_header,
};
use crate::driver::Shared;
use crate::error::{CloseReason, ConnectError, TickError};
use crate::options::ConnectOptions;
use chorus_protocol::{ErrorCode, FrameDecoder};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
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
    let endpoint = match &options.endpoint {
        Some(shared) => WtEndpoint::Shared(shared.0.clone()),
        None => WtEndpoint::Own(Endpoint::client(options.client_config()?)?),
    };
    let conn = match tokio::time::timeout(session_timeout, endpoint.get().connect(url)).await {
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
            streams_open: true,
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

/// The endpoint a connection is open on.
enum WtEndpoint {
    /// This client's own (one UDP socket per client).
    Own(Endpoint<endpoint_side::Client>),
    /// Shared with other clients ([`crate::options::SharedEndpoint`]).
    Shared(std::sync::Arc<Endpoint<endpoint_side::Client>>),
}

impl WtEndpoint {
    fn get(&self) -> &Endpoint<endpoint_side::Client> {
        match self {
            WtEndpoint::Own(endpoint) => endpoint,
            WtEndpoint::Shared(endpoint) => endpoint,
        }
    }
}

/// The connection and its endpoint.
pub(crate) struct WtLink {
    conn: Connection,
    endpoint: WtEndpoint,
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
            SendDatagramError::NotConnected => match shared.close_reason() {
                Some(reason) => TickError::Closed(reason),
                None => TickError::Disconnected,
            },
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

    /// Sends a pack's content from `offset` on a new unidirectional stream and
    /// waits until the server has acknowledged all of it.
    pub(crate) async fn send_pack(
        &self,
        hash: &[u8],
        offset: u64,
        content: &[u8],
    ) -> Result<(), String> {
        let opening = self
            .conn
            .open_uni()
            .await
            .map_err(|e| format!("opening a pack stream: {e}"))?;
        let mut stream = opening
            .await
            .map_err(|e| format!("opening a pack stream: {e}"))?;
        let written = async {
            stream.write_all(&upload_header(hash, offset)).await?;
            stream.write_all(content).await?;
            stream.finish().await
        };
        written.await.map_err(|e| format!("pack stream: {e}"))
    }

    pub(crate) fn abort(&self) {
        self.conn.close(VarInt::from_u32(0), b"handshake failed");
    }

    pub(crate) async fn wait_idle(&self) {
        match &self.endpoint {
            WtEndpoint::Own(endpoint) => {
                let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
            }
            // Other connections live on it: wait for this one's close only.
            WtEndpoint::Shared(_) => {
                let _ = tokio::time::timeout(CLOSE_GRACE, self.conn.closed()).await;
            }
        }
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
    /// False once accepting pack streams failed (likewise).
    streams_open: bool,
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
                stream = self.conn.accept_uni(), if self.streams_open => match stream {
                    Ok(stream) => return Ok(Inbound::PackStream(stream)),
                    Err(_) => self.streams_open = false,
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

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<OutMessage>,
        mut stop: watch::Receiver<Option<CloseReason>>,
    ) -> Result<(), LinkClose> {
        loop {
            let message = tokio::select! {
                message = rx.recv() => message,
                _ = stop.wait_for(Option::is_some) => break,
            };
            let Some(message) = message else { break };
            tokio::select! {
                sent = self.send_control(message) => sent?,
                _ = stop.wait_for(Option::is_some) => break,
            }
        }
        if matches!(&*stop.borrow(), Some(CloseReason::Local)) {
            // A clean close: what is queued (the Leaves of dropped rooms)
            // still goes out, and the control stream is finished, so that
            // the server has read it all before the connection closes.
            let flushed = tokio::time::timeout(CLOSE_GRACE, async {
                while let Ok(message) = rx.try_recv() {
                    self.send_control(message).await?;
                }
                self.send
                    .finish()
                    .await
                    .map_err(|e| LinkClose::transport(e.to_string()))
            });
            if let Ok(Err(e)) = flushed.await {
                tracing::debug!(error = ?e, "could not flush the control stream at close");
            }
        }
        Ok(())
    }
}
