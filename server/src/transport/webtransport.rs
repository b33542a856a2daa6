//! The WebTransport adapter: turns a wtransport connection into a session.
//!
//! It accepts sessions on one path, waits for the client's control stream, and
//! hands [`run_session`] a reader (control frames, datagrams and pack streams),
//! a writer (framed batches on the control stream), a tick sink (datagrams) and
//! a pack sink (one unidirectional stream per download). Nothing about rooms or
//! messages is decided here.
//!
//! Packs travel on unidirectional streams, never on the control stream. An
//! upload is a stream the client opens: the reader accepts it and a small task
//! pumps its bytes into a bounded channel ([`PACK_STREAM_QUEUE`] chunks of at
//! most [`PACK_READ_BYTES`]), so a session that reads slowly holds the client
//! back through QUIC flow control instead of buffering. How many such streams
//! may be open at once is QUIC's `max_concurrent_uni_streams`
//! ([`MAX_CLIENT_UNI_STREAMS`], set in `server.rs`). A download is a stream the
//! server opens at a priority below the control stream's, so control frames
//! overtake pack bytes already queued.

use crate::origin::OriginPolicy;
use crate::rooms::{OutgoingTick, TickDelivery, TickFraming, TickSink};
use crate::session::{
    Inbound, PackDownload, PackSink, SessionContext, SessionInfo, TransportCloser, TransportError,
    TransportReader, TransportWriter, run_session,
};
use crate::transport::ticks::{Due, PendingTicks, TickWindow};
use bytes::Bytes;
use chorus_protocol::frame::put_varint_u32;
use chorus_protocol::{
    ErrorCode, FrameDecoder, MemberId, PackStreamHeader, RoomSlot, encode_pack_header,
};
use futures_util::FutureExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use wtransport::endpoint::IncomingSession;
use wtransport::error::{ConnectionError, StreamOpeningError, StreamWriteError};
use wtransport::{Connection, RecvStream, SendStream, VarInt};

/// The URL path of the WebTransport endpoint.
pub const WEBTRANSPORT_PATH: &str = "/chorus";

/// The largest piece of the control stream taken from quinn at once.
const CONTROL_READ_BYTES: usize = 64 * 1024;

/// Incoming pack streams a client may have open at once.
pub const MAX_PACK_STREAMS: u32 = 8;

/// The QUIC limit on client-opened unidirectional streams: the pack streams
/// plus the three HTTP/3 streams a client keeps open for the connection's life
/// (control, QPACK encoder and decoder), which count against the same limit.
pub const MAX_CLIENT_UNI_STREAMS: u32 = MAX_PACK_STREAMS + 3;

/// The QUIC limit on client-opened bidirectional streams: the session's
/// CONNECT stream and the control stream, with room to spare. quinn keeps an
/// entry per allowed stream from the start, so its default of 100 cost about
/// 5 KiB per connection for streams Chorus never uses.
pub const MAX_CLIENT_BIDI_STREAMS: u32 = 4;

/// The largest piece of an incoming pack stream handed to the session at once.
pub const PACK_READ_BYTES: usize = 16 * 1024;

/// Pieces of one incoming pack stream waiting for the session, at most; past
/// that the stream is not read and QUIC flow control holds the client back.
pub const PACK_STREAM_QUEUE: usize = 4;

/// The send priority of download streams: below the control stream's (0), so
/// control frames go out before pack bytes queued earlier.
const PACK_STREAM_PRIORITY: i32 = -1;

/// Settings of the WebTransport endpoint.
#[derive(Debug, Clone)]
pub struct WtSettings {
    pub handshake_timeout: Duration,
    pub origins: OriginPolicy,
    /// How long the first pending tick of a receiver waits for others to share
    /// its QUIC packet (see [`crate::transport::ticks`]); zero hands each to
    /// quinn at once.
    pub tick_coalesce: Duration,
}

/// Handles one incoming WebTransport session from QUIC handshake to close.
pub async fn handle_incoming(
    incoming: IncomingSession,
    ctx: Arc<SessionContext>,
    settings: Arc<WtSettings>,
) {
    let accepted_at = std::time::Instant::now();
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
        accepted_at,
    };
    let max_frame = ctx.config.limits.max_frame_bytes;
    let reader = WtReader {
        connection: connection.clone(),
        recv,
        decoder: FrameDecoder::new(max_frame),
        ended: None,
    };
    let writer = WtWriter { send };
    let closer = WtCloser {
        connection: connection.clone(),
    };
    let sink = Arc::new(WtTickSink::new(&connection, settings.tick_coalesce));
    let packs = Arc::new(WtPackSink { connection });
    run_session(ctx, info, reader, writer, closer, sink.clone(), packs).await;
    sink.close();
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
    /// How the connection ended, when the datagram or pack side saw it first:
    /// reported once the control frames read before it are handed out.
    ended: Option<TransportError>,
}

impl WtReader {
    /// Why the connection under a failed stream ended (e.g. the idle timeout).
    fn why_closed(&self) -> TransportError {
        match self.connection.quic_connection().close_reason() {
            Some(wtransport::quinn::ConnectionError::TimedOut) => TransportError::TimedOut,
            _ => TransportError::Closed,
        }
    }

    /// The connection ended, seen on the datagram or pack side. A client
    /// that leaves sends `Leave` and closes at once, so its last control
    /// bytes may still sit unread in quinn's buffer: read them (quinn hands
    /// out buffered bytes before the loss, and no read waits once the
    /// connection is gone), so their frames are handled before the end is
    /// reported. Without this a `Leave` could be lost to the race, and the
    /// member kept as reconnecting for the resume window.
    fn end_after_control_bytes(&mut self, end: TransportError) {
        while let Some(Ok(Some(chunk))) = self
            .recv
            .quic_stream_mut()
            .read_chunk(CONTROL_READ_BYTES, true)
            .now_or_never()
        {
            self.decoder.extend(&chunk.bytes);
        }
        self.ended = Some(end);
    }
}

impl TransportReader for WtReader {
    /// # Cancel safety
    /// Cancel safe: a datagram or a pack stream is taken only when returned
    /// (`accept_uni` is cancel safe, and the stream's pump task is spawned in
    /// the same step), and control stream bytes go into the frame decoder (kept
    /// across calls) in the same step they are read, the bytes drained when
    /// the connection ends included.
    async fn recv(&mut self) -> Result<Inbound, TransportError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Inbound::Control(frame));
            }
            if let Some(end) = self.ended.take() {
                return Err(end);
            }
            tokio::select! {
                datagram = self.connection.receive_datagram() => match datagram {
                    Ok(datagram) => return Ok(Inbound::Datagram(datagram.payload())),
                    Err(e) => self.end_after_control_bytes(connection_ended(e)),
                },
                stream = self.connection.accept_uni() => match stream {
                    Ok(stream) => {
                        let (tx, rx) = mpsc::channel(PACK_STREAM_QUEUE);
                        tokio::spawn(pump_pack_stream(stream, tx));
                        return Ok(Inbound::PackStream(rx));
                    }
                    Err(e) => self.end_after_control_bytes(connection_ended(e)),
                },
                // quinn's own buffers, not a read buffer per connection
                // (16 KiB each when idle, most of it never used).
                read = self.recv.quic_stream_mut().read_chunk(CONTROL_READ_BYTES, true) => match read {
                    Ok(Some(chunk)) => self.decoder.extend(&chunk.bytes),
                    Ok(None) => return Err(TransportError::Closed),
                    Err(wtransport::quinn::ReadError::ConnectionLost(_)) => {
                        return Err(self.why_closed());
                    }
                    Err(e) => return Err(TransportError::Failed(e.to_string())),
                },
            }
        }
    }

    /// quinn's smoothed RTT estimate for the connection.
    fn rtt(&self) -> Option<Duration> {
        Some(self.connection.rtt())
    }
}

/// What ended one step of a pack stream's pump.
enum PumpStep {
    Read(Result<Option<wtransport::quinn::Chunk>, wtransport::quinn::ReadError>),
    /// The session dropped the receiving end.
    Abandoned,
}

/// Reads one incoming pack stream into `tx` until its end: `Ok` pieces in
/// order, then the channel closes (FIN), or one `Err` if the stream fails. A
/// piece is read only once the channel has room for it, so a slow session
/// holds the client back by flow control. If the session drops the receiver
/// the stream is stopped, and the client's writes fail.
async fn pump_pack_stream(mut stream: RecvStream, tx: mpsc::Sender<Result<Bytes, TransportError>>) {
    loop {
        let Ok(permit) = tx.reserve().await else {
            stream.stop(VarInt::from_u32(0));
            return;
        };
        let step = tokio::select! {
            read = stream.quic_stream_mut().read_chunk(PACK_READ_BYTES, true) => PumpStep::Read(read),
            () = tx.closed() => PumpStep::Abandoned,
        };
        match step {
            PumpStep::Read(Ok(Some(chunk))) => permit.send(Ok(chunk.bytes)),
            PumpStep::Read(Ok(None)) => return,
            PumpStep::Read(Err(e)) => {
                permit.send(Err(pack_read_error(e)));
                return;
            }
            PumpStep::Abandoned => {
                drop(permit);
                stream.stop(VarInt::from_u32(0));
                return;
            }
        }
    }
}

fn pack_read_error(error: wtransport::quinn::ReadError) -> TransportError {
    use wtransport::quinn::{ConnectionError as QuicError, ReadError};
    match error {
        ReadError::ConnectionLost(QuicError::TimedOut) => TransportError::TimedOut,
        ReadError::ConnectionLost(_) => TransportError::Closed,
        ReadError::Reset(code) => {
            TransportError::Failed(format!("the client reset the pack stream (code {code})"))
        }
        other => TransportError::Failed(format!("pack stream failed: {other}")),
    }
}

fn pack_write_error(error: StreamWriteError) -> TransportError {
    match error {
        StreamWriteError::NotConnected => TransportError::Closed,
        StreamWriteError::Stopped(code) => {
            TransportError::Failed(format!("the client stopped the pack stream (code {code})"))
        }
        other => TransportError::Failed(format!("pack stream failed: {other}")),
    }
}

fn quinn_write_error(error: wtransport::quinn::WriteError) -> TransportError {
    use wtransport::quinn::WriteError;
    match error {
        WriteError::ConnectionLost(_) => TransportError::Closed,
        WriteError::Stopped(code) => {
            TransportError::Failed(format!("the client stopped the pack stream (code {code})"))
        }
        other => TransportError::Failed(format!("pack stream failed: {other}")),
    }
}

/// The pack lane toward one client: a unidirectional stream per download.
#[derive(Debug)]
struct WtPackSink {
    connection: Connection,
}

impl WtPackSink {
    async fn send(&self, download: PackDownload) -> Result<(), TransportError> {
        let mut stream = self
            .connection
            .open_uni()
            .await
            .map_err(connection_ended)?
            .await
            .map_err(|e| match e {
                StreamOpeningError::NotConnected => TransportError::Closed,
                StreamOpeningError::Refused => {
                    TransportError::Failed("the client refused the pack stream".into())
                }
            })?;
        // Below the control stream: pack bytes never hold up control frames.
        let _ = stream.quic_stream().set_priority(PACK_STREAM_PRIORITY);
        let header = encode_pack_header(&PackStreamHeader::Download {
            request_id: download.request_id,
            hash: download.hash.to_vec(),
            offset: download.offset,
            size: download.size,
        });
        let mut chunks = [Bytes::from(header), download.content];
        stream
            .quic_stream_mut()
            .write_all_chunks(&mut chunks)
            .await
            .map_err(quinn_write_error)?;
        stream.finish().await.map_err(pack_write_error)
    }
}

impl PackSink for WtPackSink {
    /// Opens a stream, writes the framed `Download` header and the content,
    /// and finishes it; resolves once the client has acknowledged it all.
    fn send_pack(
        &self,
        download: PackDownload,
    ) -> Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send + '_>> {
        Box::pin(self.send(download))
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

/// How long a connection closed for an error waits for the client to close
/// it first. Closing the QUIC connection at once can make a browser drop the
/// error frame it has received but not yet read; a client that read it closes
/// by itself, well within this.
const ERROR_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

impl TransportCloser for WtCloser {
    fn close(&self, code: u16, reason: &str) {
        let code = VarInt::from_u32(u32::from(code));
        if code.into_inner() == 0 {
            return self.connection.close(code, reason.as_bytes());
        }
        let connection = self.connection.clone();
        let reason = reason.as_bytes().to_vec();
        tokio::spawn(async move {
            if tokio::time::timeout(ERROR_CLOSE_GRACE, connection.closed())
                .await
                .is_err()
            {
                connection.close(code, &reason);
            }
        });
    }
}

/// The tick lane of one WebTransport receiver. Each tick is framed as an
/// HTTP/3 datagram of the receiver's session once, for every recipient with
/// that session id (all of them in practice), and given to quinn: at once, or
/// after the coalescing window by [`send_coalesced_ticks`].
#[derive(Debug)]
struct WtTickSink {
    quic: wtransport::quinn::Connection,
    session: wtransport::SessionId,
    /// With a coalescing window: the ticks waiting for it.
    pending: Option<Arc<PendingTicks>>,
}

impl WtTickSink {
    fn new(connection: &Connection, window: Duration) -> Self {
        let pending = (!window.is_zero()).then(|| {
            let pending = Arc::new(PendingTicks::default());
            tokio::spawn(send_coalesced_ticks(
                connection.quic_connection().clone(),
                pending.clone(),
                window,
            ));
            pending
        });
        WtTickSink {
            quic: connection.quic_connection().clone(),
            session: connection.session_id(),
            pending,
        }
    }

    /// Ends the coalescing task, if any, when the session is over.
    fn close(&self) {
        if let Some(pending) = &self.pending {
            pending.close();
        }
    }
}

/// `payload` as an HTTP/3 datagram of `session` (RFC 9297: the quarter stream
/// id of the session's CONNECT stream in front), as wtransport frames it.
fn h3_datagram(session: wtransport::SessionId, payload: &[u8]) -> Bytes {
    use wtransport::proto::datagram::Datagram;
    use wtransport::proto::ids::QStreamId;
    let datagram = Datagram::new(QStreamId::from_session_id(session), payload);
    let mut buf = vec![0; datagram.write_size()];
    match datagram.write(&mut buf) {
        Ok(n) => buf.truncate(n),
        // The buffer is write_size() long.
        Err(_) => buf.clear(),
    }
    Bytes::from(buf)
}

fn tick_delivery(result: Result<(), wtransport::quinn::SendDatagramError>) -> TickDelivery {
    use wtransport::quinn::SendDatagramError as E;
    match result {
        Ok(()) => TickDelivery::Queued,
        Err(E::TooLarge) => TickDelivery::TooLarge,
        Err(E::UnsupportedByPeer | E::Disabled | E::ConnectionLost(_)) => TickDelivery::Closed,
    }
}

/// Hands a receiver's pending ticks to quinn each time their coalescing window
/// ends, back to back, so that quinn packs them into as few packets as fit;
/// ends with the connection or when the lane is closed.
async fn send_coalesced_ticks(
    quic: wtransport::quinn::Connection,
    pending: Arc<PendingTicks>,
    window: Duration,
) {
    let mut tick_window = TickWindow::new(window);
    let mut batch = Vec::new();
    'lane: loop {
        let due = tokio::select! {
            due = tick_window.due(&pending) => due,
            _ = quic.closed() => Due::Closed,
        };
        if due == Due::Closed {
            break;
        }
        pending.take_into(&mut batch);
        for datagram in batch.drain(..) {
            // Too large was checked when the tick was put; one that no longer
            // fits (the path's MTU shrank since) is dropped. Only the
            // connection's end stops the lane.
            if tick_delivery(quic.send_datagram(datagram)) == TickDelivery::Closed {
                break 'lane;
            }
        }
    }
    pending.close();
}

impl std::fmt::Debug for WtReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtReader").finish_non_exhaustive()
    }
}

impl TickSink for WtTickSink {
    fn send_tick(&self, room: RoomSlot, sender: MemberId, tick: &OutgoingTick) -> TickDelivery {
        let session = self.session;
        let datagram = tick.framed(TickFraming::WebTransport, session.into_u64(), |payload| {
            h3_datagram(session, payload)
        });
        match &self.pending {
            // quinn keeps a bounded datagram send buffer and drops the oldest
            // datagrams when it is full: newest wins for a slow receiver.
            None => tick_delivery(self.quic.send_datagram(datagram)),
            // Refused now as quinn would refuse it at the window's end, so the
            // drop is counted the same way on both paths.
            Some(pending) => match self.quic.max_datagram_size() {
                None => TickDelivery::Closed,
                Some(max) if datagram.len() > max => TickDelivery::TooLarge,
                Some(_) => pending.put(room, sender, datagram),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::message::ClientMessage;
    use chorus_protocol::{encode_frame, split_pack_message};
    use std::net::{Ipv4Addr, SocketAddr};
    use wtransport::tls::Sha256Digest;
    use wtransport::{ClientConfig, Endpoint, ServerConfig};

    /// A client connection and the server's side of it, with the server's
    /// reader (on the control stream the client opened) and pack sink.
    struct Pair {
        client: Connection,
        reader: WtReader,
        packs: WtPackSink,
        _endpoints: (
            Endpoint<wtransport::endpoint::endpoint_side::Server>,
            Endpoint<wtransport::endpoint::endpoint_side::Client>,
        ),
        control: SendStream,
    }

    /// A WebTransport server endpoint on loopback with a development
    /// certificate, and a client configuration that trusts it.
    fn server_and_client_config(
        name: &str,
    ) -> (
        Endpoint<wtransport::endpoint::endpoint_side::Server>,
        ClientConfig,
    ) {
        let dir = std::env::temp_dir().join(format!("chorus-wt-{name}-{}", std::process::id()));
        let certificate =
            crate::cert::load_or_make_dev(&dir, std::time::SystemTime::now()).expect("certificate");
        let config = ServerConfig::builder()
            .with_bind_address(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .with_custom_tls_and_transport(
                certificate.quic_config(),
                wtransport::quinn::TransportConfig::default(),
            )
            .build();
        let server = Endpoint::server(config).expect("server endpoint");
        let client_config = ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([Sha256Digest::new(certificate.sha256)])
            .build();
        (server, client_config)
    }

    async fn pair(name: &str) -> Pair {
        let (server, client_config) = server_and_client_config(name);
        let port = server.local_addr().expect("address").port();
        let client_endpoint = Endpoint::client(client_config).expect("client endpoint");
        let url = format!("https://127.0.0.1:{port}{WEBTRANSPORT_PATH}");
        let (accepted, client) = tokio::join!(
            async {
                let request = server.accept().await.await.expect("session request");
                request.accept().await.expect("session")
            },
            async { client_endpoint.connect(url).await.expect("connects") }
        );
        let (mut control, _) = client
            .open_bi()
            .await
            .expect("opens")
            .await
            .expect("opened");
        control.write_all(b"\x00").await.expect("writes");
        let (_, recv) = accepted.accept_bi().await.expect("control stream");
        Pair {
            client,
            reader: WtReader {
                connection: accepted.clone(),
                recv,
                decoder: FrameDecoder::new(1 << 20),
                ended: None,
            },
            packs: WtPackSink {
                connection: accepted,
            },
            _endpoints: (server, client_endpoint),
            control,
        }
    }

    /// The next inbound that is not a control frame.
    async fn next_pack_stream(reader: &mut WtReader) -> crate::session::PackStreamRx {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), reader.recv())
                .await
                .expect("in time")
                .expect("inbound")
            {
                Inbound::PackStream(rx) => return rx,
                Inbound::Control(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn client_streams_reach_the_session_in_order_and_end_at_fin() {
        let mut pair = pair("upload").await;
        let mut upload = encode_pack_header(&PackStreamHeader::Upload {
            hash: vec![3; 32],
            offset: 0,
        });
        let content: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        upload.extend_from_slice(&content);
        let mut stream = pair
            .client
            .open_uni()
            .await
            .expect("opens")
            .await
            .expect("opened");
        let writing = tokio::spawn({
            let upload = upload.clone();
            async move {
                stream.write_all(&upload).await.expect("writes");
                stream.finish().await.expect("finishes");
            }
        });
        let mut rx = next_pack_stream(&mut pair.reader).await;
        let mut got = Vec::new();
        while let Some(piece) = rx.recv().await {
            let piece = piece.expect("no error");
            assert!(piece.len() <= PACK_READ_BYTES);
            got.extend_from_slice(&piece);
        }
        writing.await.expect("written");
        assert_eq!(got, upload);
        let (header, rest) = split_pack_message(&got).expect("splits");
        assert!(matches!(header, PackStreamHeader::Upload { offset: 0, .. }));
        assert_eq!(rest, content);
    }

    /// A client that leaves sends its last control frames (its `Leave`) and
    /// closes at once. When the close is known before the session reads
    /// again (the datagram and pack sides report it too), those frames still
    /// come first, then the end. Several rounds: the reader's wait is a
    /// `select!` in random order, so one round could pass by luck.
    #[tokio::test]
    async fn control_frames_sent_before_a_close_come_before_the_end() {
        for round in 0..12 {
            let mut pair = pair(&format!("close-{round}")).await;
            let leave = encode_frame(&ClientMessage::Leave {
                request_id: 7,
                room: RoomSlot(1),
            });
            let ping = encode_frame(&ClientMessage::Ping { client_time: 8 });
            pair.control.write_all(&leave).await.expect("writes");
            pair.control.write_all(&ping).await.expect("writes");
            // Acknowledged: the bytes are in the server's buffer, unread.
            pair.control.finish().await.expect("finishes");
            pair.client.close(VarInt::from_u32(0), b"bye");
            pair.reader.connection.closed().await;

            let mut frames = Vec::new();
            let end = loop {
                match tokio::time::timeout(Duration::from_secs(5), pair.reader.recv())
                    .await
                    .expect("in time")
                {
                    Ok(Inbound::Control(body)) => frames.push(body),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(end) => break end,
                }
            };
            assert!(matches!(end, TransportError::Closed), "{end:?}");
            // The set-up frame (empty), then the two, in order.
            assert_eq!(frames.len(), 3, "round {round}: {frames:?}");
            assert_eq!(frames[1], leave[1..], "round {round}");
            assert_eq!(frames[2], ping[1..], "round {round}");
        }
    }

    /// A client whose HTTP/3 SETTINGS frame reaches the server in two parts,
    /// with a new stream (its CONNECT request) arriving in between, still
    /// gets its session. wtransport 0.7.2 lost the first part (its driver
    /// dropped the half-done read when the stream arrived) and closed the
    /// connection as a protocol error; the patched copy in `vendor/` reads
    /// that stream in a task of its own. The pauses only order the packets
    /// as the failure needs them; the session must come whatever the timing.
    #[tokio::test]
    async fn a_settings_frame_split_around_a_new_stream_still_gives_a_session() {
        use wtransport::proto::frame::Frame;
        use wtransport::proto::session::SessionRequest;
        use wtransport::proto::settings::Settings;
        use wtransport::proto::stream_header::StreamHeader;

        let (server, client_config) = server_and_client_config("split");
        let addr = server.local_addr().expect("address");
        let accepting = tokio::spawn(async move {
            let request = server.accept().await.await.expect("session request");
            let connection = request.accept().await.expect("session");
            (server, connection)
        });

        // A bare QUIC connection with the trust and ALPN of a WebTransport client.
        let client =
            wtransport::quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .expect("client endpoint");
        let quic = client
            .connect_with(client_config.quic_config().clone(), addr, "localhost")
            .expect("connects")
            .await
            .expect("connected");

        let mut control = Vec::new();
        StreamHeader::new_control()
            .write(&mut control)
            .expect("fits");
        let settings = Settings::builder()
            .qpack_max_table_capacity(VarInt::from_u32(0))
            .qpack_blocked_streams(VarInt::from_u32(0))
            .enable_webtransport()
            .enable_h3_datagrams()
            .webtransport_max_sessions(VarInt::from_u32(1))
            .build();
        let mut settings_frame = Vec::new();
        settings
            .generate_frame()
            .write(&mut settings_frame)
            .expect("fits");
        let url = format!("https://127.0.0.1:{}{WEBTRANSPORT_PATH}", addr.port());
        let request = SessionRequest::new(url).expect("a request");
        let mut connect = Vec::new();
        request
            .headers()
            .generate_frame()
            .write(&mut connect)
            .expect("fits");

        // The stream type and the frame's first byte; the server starts reading the frame.
        let (first, rest) = settings_frame.split_at(1);
        control.extend_from_slice(first);
        let mut control_stream = quic.open_uni().await.expect("opens");
        control_stream.write_all(&control).await.expect("writes");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A new stream: the server's driver turns to it mid-frame.
        let (mut send, mut recv) = quic.open_bi().await.expect("opens");
        send.write_all(&connect).await.expect("writes");
        tokio::time::sleep(Duration::from_millis(50)).await;
        control_stream.write_all(rest).await.expect("writes");

        let (_server, _connection) = tokio::time::timeout(Duration::from_secs(5), accepting)
            .await
            .expect("a session in time")
            .expect("the server accepted it");
        // The response: a HEADERS frame with status 200, and the connection still open.
        let mut response = Vec::new();
        let headers = loop {
            let mut chunk = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut chunk))
                .await
                .expect("a response in time")
                .expect("reads")
                .expect("not finished");
            response.extend_from_slice(&chunk[..n]);
            let mut reader = wtransport::proto::bytes::BufferReader::new(&response);
            if let Some(frame) = Frame::read(&mut reader).expect("a frame") {
                break wtransport::proto::headers::Headers::with_frame(&frame).expect("headers");
            }
        };
        assert_eq!(headers.get(":status"), Some("200"));
        assert!(quic.close_reason().is_none(), "{:?}", quic.close_reason());
    }

    #[tokio::test]
    async fn a_reset_stream_ends_with_an_error() {
        let mut pair = pair("reset").await;
        let mut stream = pair
            .client
            .open_uni()
            .await
            .expect("opens")
            .await
            .expect("opened");
        stream.write_all(b"partial").await.expect("writes");
        let mut rx = next_pack_stream(&mut pair.reader).await;
        let first = rx.recv().await.expect("a piece").expect("ok");
        assert_eq!(&first[..], b"partial");
        stream.reset(VarInt::from_u32(7)).expect("resets");
        let last = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time");
        assert!(
            matches!(last, Some(Err(TransportError::Failed(_)))),
            "{last:?}"
        );
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_the_session_drops_is_stopped() {
        let mut pair = pair("abandon").await;
        let mut stream = pair
            .client
            .open_uni()
            .await
            .expect("opens")
            .await
            .expect("opened");
        stream.write_all(b"first").await.expect("writes");
        let rx = next_pack_stream(&mut pair.reader).await;
        drop(rx);
        let stopped = tokio::time::timeout(Duration::from_secs(5), stream.stopped())
            .await
            .expect("stopped in time");
        assert!(
            matches!(stopped, StreamWriteError::Stopped(_)),
            "{stopped:?}"
        );
    }

    #[tokio::test]
    async fn downloads_are_one_stream_each_with_the_header_first() {
        let pair = pair("download").await;
        let content: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        let download = PackDownload {
            request_id: 42,
            hash: [5; 32],
            offset: 10,
            size: 10 + content.len() as u64,
            content: Bytes::from(content.clone()),
        };
        let (sent, received) = tokio::join!(pair.packs.send_pack(download), async {
            let mut stream = pair.client.accept_uni().await.expect("a stream");
            let mut all = Vec::new();
            let mut buf = vec![0; 8192];
            while let Some(n) = stream.read(&mut buf).await.expect("reads") {
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        sent.expect("sent");
        let (header, rest) = split_pack_message(&received).expect("splits");
        assert_eq!(
            header,
            PackStreamHeader::Download {
                request_id: 42,
                hash: vec![5; 32],
                offset: 10,
                size: 10 + content.len() as u64,
            }
        );
        assert_eq!(rest, content);
    }

    /// The payloads of the next `n` datagrams the client receives.
    async fn received(client: &Connection, n: usize) -> Vec<Bytes> {
        let mut got = Vec::new();
        while got.len() < n {
            let datagram = tokio::time::timeout(Duration::from_secs(5), client.receive_datagram())
                .await
                .expect("in time")
                .expect("a datagram");
            got.push(Bytes::copy_from_slice(&datagram));
        }
        got.sort();
        got
    }

    #[tokio::test]
    async fn ticks_reach_the_client_as_its_sessions_datagrams_with_and_without_a_window() {
        let pair = pair("ticks").await;
        let direct = WtTickSink::new(&pair.packs.connection, Duration::ZERO);
        let coalesced = WtTickSink::new(&pair.packs.connection, Duration::from_millis(2));
        let one = OutgoingTick::new(Bytes::from_static(b"pose one"));
        let two = OutgoingTick::new(Bytes::from_static(b"pose two"));
        let room = RoomSlot(1);
        assert_eq!(
            direct.send_tick(room, MemberId(1), &one),
            TickDelivery::Queued
        );
        assert_eq!(received(&pair.client, 1).await, [&b"pose one"[..]]);
        assert_eq!(
            coalesced.send_tick(room, MemberId(1), &one),
            TickDelivery::Queued
        );
        assert_eq!(
            coalesced.send_tick(room, MemberId(2), &two),
            TickDelivery::Queued
        );
        assert_eq!(
            received(&pair.client, 2).await,
            [&b"pose one"[..], &b"pose two"[..]]
        );
        // A second recipient with the same session id shares the framed bytes.
        let framed = one.framed(TickFraming::WebTransport, direct.session.into_u64(), |_| {
            unreachable!("framed once already")
        });
        assert_eq!(&framed[framed.len() - 8..], b"pose one");
        let huge = OutgoingTick::new(Bytes::from(vec![7; 4000]));
        for sink in [&direct, &coalesced] {
            assert_eq!(
                sink.send_tick(room, MemberId(3), &huge),
                TickDelivery::TooLarge,
                "larger than any QUIC datagram on this path"
            );
        }
        coalesced.close();
        assert_eq!(
            coalesced.send_tick(room, MemberId(1), &one),
            TickDelivery::Closed
        );
    }

    #[test]
    fn h3_datagrams_carry_the_quarter_stream_id_of_the_session() {
        let session = |id: u32| {
            wtransport::SessionId::try_from_session_stream(wtransport::StreamId::new(
                VarInt::from_u32(id),
            ))
            .expect("client bidirectional stream")
        };
        assert_eq!(&h3_datagram(session(0), b"xy")[..], b"\x00xy");
        assert_eq!(&h3_datagram(session(8), b"xy")[..], b"\x02xy");
    }
}
