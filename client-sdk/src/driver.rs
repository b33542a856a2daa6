//! The connection driver: the state shared by every handle of one connection and
//! the background tasks that move bytes.
//!
//! Tasks (all end when the connection ends):
//! - **reader**: reads the control stream, splits frames, decodes them and
//!   dispatches: replies complete the matching pending request, room events update
//!   the room's replica and are then broadcast, pongs feed the clock estimator,
//!   errors without a request id go to the client-level error channel.
//! - **writer**: the only writer of the control stream, fed whole frames by a
//!   bounded queue, so concurrent callers never interleave partial frames.
//! - **datagrams**: receives datagrams, decodes ticks and routes them by room slot
//!   to the room's tick broadcast.
//! - **clock**: re-syncs the clock every `clock_sync_interval`.
//!
//! Locking: `Shared::state` (pending requests, rooms, close reason) and each
//! room's own mutexes are never held at the same time, and never across an
//! `.await`.

use crate::clock::{ClockEstimate, ClockEstimator, ClockSample, LocalClock};
use crate::error::{CloseReason, RequestError};
use crate::options::ConnectOptions;
use crate::replica::{Applied, RoomEvent, RoomReplica, event_room};
use crate::room::{CommandAck, StateAck, TickEvent};
use bytes::Bytes;
use chorus_protocol::frame::get_varint_u32;
use chorus_protocol::validate_client_message;
use chorus_protocol::{
    ClientMessage, Datagram, DecodeError, ErrorCode, ErrorFrame, FrameDecoder, Limits, MemberId,
    RequestId, RoomSlot, RoomSnapshot, ServerHello, ServerMessage, decode_datagram,
    decode_server_message, encode_frame,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, trace, warn};
use wtransport::endpoint::endpoint_side;
use wtransport::error::ConnectionError;
use wtransport::{Connection, Endpoint, RecvStream, SendStream, VarInt};

/// Locks a std mutex, ignoring poisoning (no critical section leaves data
/// half-updated in a way a panic elsewhere could expose).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long to wait for the connection's own close reason after a stream error.
const CLOSE_REASON_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from the control stream per read call.
const READ_CHUNK: usize = 64 * 1024;

/// A reply routed to the request that asked for it.
pub(crate) enum Reply {
    Joined(JoinedRoom),
    Left,
    StateAck(StateAck),
    CommandAck(CommandAck),
    Error(ErrorFrame),
}

impl Reply {
    fn name(&self) -> &'static str {
        match self {
            Reply::Joined(_) => "joined",
            Reply::Left => "left",
            Reply::StateAck(_) => "state_ack",
            Reply::CommandAck(_) => "command_ack",
            Reply::Error(_) => "error",
        }
    }

    /// The server's error, or `unexpected` for a reply of another kind.
    pub(crate) fn into_error(self) -> RequestError {
        match self {
            Reply::Error(frame) => RequestError::Server(frame),
            other => RequestError::UnexpectedReply(other.name()),
        }
    }
}

/// A freshly joined room on its way to the `join` caller. If it is dropped before
/// the caller takes it (the caller gave up), the room is left again so that no
/// membership lingers without a handle.
pub(crate) struct JoinedRoom {
    shared: Arc<Shared>,
    room: Option<Arc<RoomShared>>,
}

impl JoinedRoom {
    pub(crate) fn take(mut self) -> Option<Arc<RoomShared>> {
        self.room.take()
    }
}

impl Drop for JoinedRoom {
    fn drop(&mut self) {
        if let Some(room) = self.room.take() {
            debug!(room = room.slot.0, "join reply not taken; leaving the room");
            self.shared.abandon_room(&room);
        }
    }
}

/// The broadcast senders of a joined room; dropped when the room is left, which
/// ends every receiver's stream.
struct RoomChannels {
    events: broadcast::Sender<RoomEvent>,
    commands: broadcast::Sender<crate::replica::CommandEvent>,
}

pub(crate) struct RoomInner {
    pub(crate) replica: RoomReplica,
    channels: Option<RoomChannels>,
}

impl RoomInner {
    fn publish(&self, event: RoomEvent) {
        let Some(ch) = &self.channels else { return };
        if let RoomEvent::Command(c) = &event {
            // No receivers is not an error: nobody asked for commands.
            let _ = ch.commands.send(c.clone());
        }
        let _ = ch.events.send(event);
    }

    /// A receiver of future events; an already-ended one when the room is gone.
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<RoomEvent> {
        match &self.channels {
            Some(ch) => ch.events.subscribe(),
            None => ended_receiver(),
        }
    }

    pub(crate) fn subscribe_commands(&self) -> broadcast::Receiver<crate::replica::CommandEvent> {
        match &self.channels {
            Some(ch) => ch.commands.subscribe(),
            None => ended_receiver(),
        }
    }
}

/// A broadcast receiver whose sender is already gone: `recv` returns `Closed`.
pub(crate) fn ended_receiver<T: Clone>() -> broadcast::Receiver<T> {
    let (_tx, rx) = broadcast::channel(1);
    rx
}

/// Everything about one joined room that the driver and the `Room` handles share.
pub(crate) struct RoomShared {
    pub(crate) slot: RoomSlot,
    pub(crate) id: String,
    pub(crate) me: MemberId,
    pub(crate) inner: Mutex<RoomInner>,
    pub(crate) ticks: Mutex<Option<broadcast::Sender<TickEvent>>>,
    /// Next tick seq; the lock also keeps seq order equal to send order.
    pub(crate) tick_seq: Mutex<u32>,
    pub(crate) joined: AtomicBool,
}

impl RoomShared {
    fn new(snapshot: RoomSnapshot, options: &ConnectOptions) -> Self {
        let replica = RoomReplica::from_snapshot(snapshot);
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let (commands, _) = broadcast::channel(options.event_capacity.max(1));
        let (ticks, _) = broadcast::channel(options.tick_capacity.max(1));
        RoomShared {
            slot: replica.slot(),
            id: replica.room_id().to_owned(),
            me: replica.me(),
            inner: Mutex::new(RoomInner {
                replica,
                channels: Some(RoomChannels { events, commands }),
            }),
            ticks: Mutex::new(Some(ticks)),
            tick_seq: Mutex::new(0),
            joined: AtomicBool::new(true),
        }
    }

    /// Marks the room as no longer joined and ends its event and tick streams.
    fn detach(&self) {
        self.joined.store(false, Ordering::SeqCst);
        lock(&self.inner).channels = None;
        *lock(&self.ticks) = None;
    }
}

/// Mutable connection state behind one mutex.
#[derive(Default)]
struct DriverState {
    pending: HashMap<RequestId, oneshot::Sender<Reply>>,
    rooms: HashMap<RoomSlot, Arc<RoomShared>>,
    closed: Option<CloseReason>,
}

/// State shared by the client handles, room handles and driver tasks of one connection.
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    endpoint: Endpoint<endpoint_side::Client>,
    pub(crate) hello: ServerHello,
    pub(crate) options: ConnectOptions,
    pub(crate) clock: LocalClock,
    pub(crate) estimator: Mutex<ClockEstimator>,
    /// Rough offset from the hello's `server_time` (not RTT-corrected), used until
    /// the first ping sample.
    hello_offset_us: i64,
    /// Count of clock samples taken, to wake whoever waits for a pong.
    samples: watch::Sender<u64>,
    writer: mpsc::Sender<Bytes>,
    state: Mutex<DriverState>,
    closed: watch::Sender<Option<CloseReason>>,
    pub(crate) errors: broadcast::Sender<ErrorFrame>,
    next_request_id: AtomicU32,
    /// The last error frame not tied to a request: the likely cause when the server
    /// closes the connection right after.
    last_error: Mutex<Option<ErrorFrame>>,
}

/// The halves of the control stream and the decoder that read the hello, handed
/// to the driver once the handshake is done.
pub(crate) struct ControlStream {
    pub(crate) send: SendStream,
    pub(crate) recv: RecvStream,
    pub(crate) decoder: FrameDecoder,
}

impl Shared {
    /// Builds the shared state and starts the driver tasks.
    pub(crate) fn start(
        endpoint: Endpoint<endpoint_side::Client>,
        conn: Connection,
        control: ControlStream,
        hello: ServerHello,
        options: ConnectOptions,
        clock: LocalClock,
    ) -> Arc<Shared> {
        let (writer, writer_rx) = mpsc::channel(options.write_queue.max(1));
        let (errors, _) = broadcast::channel(options.error_capacity.max(1));
        let hello_offset_us = saturating_offset(hello.server_time.0, clock.now_us());
        let shared = Arc::new(Shared {
            hello_offset_us,
            conn,
            endpoint,
            hello,
            estimator: Mutex::new(ClockEstimator::new(options.clock_window)),
            options,
            clock,
            samples: watch::Sender::new(0),
            writer,
            state: Mutex::new(DriverState::default()),
            closed: watch::Sender::new(None),
            errors,
            next_request_id: AtomicU32::new(1),
            last_error: Mutex::new(None),
        });
        let ControlStream {
            send,
            recv,
            decoder,
        } = control;
        tokio::spawn(Arc::clone(&shared).run_writer(send, writer_rx));
        tokio::spawn(Arc::clone(&shared).run_reader(recv, decoder));
        tokio::spawn(Arc::clone(&shared).run_datagrams());
        if !shared.options.clock_sync_interval.is_zero() {
            tokio::spawn(Arc::clone(&shared).run_clock());
        }
        shared
    }

    /// The clock estimate; before the first sample, the rough offset from the hello.
    pub(crate) fn clock_estimate(&self) -> ClockEstimate {
        let estimate = lock(&self.estimator).estimate();
        if estimate.is_synced() {
            estimate
        } else {
            ClockEstimate {
                offset_us: self.hello_offset_us,
                ..estimate
            }
        }
    }

    // ---- closing -------------------------------------------------------------

    /// Why the connection ended, once it has.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.state).closed.clone()
    }

    /// The close reason, for callers that saw a channel end (it is set before any
    /// channel is dropped, so `Local` is only a fallback).
    pub(crate) fn closed_error(&self) -> CloseReason {
        self.close_reason().unwrap_or(CloseReason::Local)
    }

    /// Waits until the connection has ended.
    pub(crate) async fn wait_closed(&self) -> CloseReason {
        let mut rx = self.closed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(CloseReason::Local),
            Err(_) => self.closed_error(),
        }
    }

    /// Ends the connection once (later calls do nothing): records the reason, fails
    /// pending requests, ends every room's streams and closes the QUIC connection.
    pub(crate) fn shutdown(&self, reason: CloseReason) {
        let (pending, rooms) = {
            let mut st = lock(&self.state);
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason.clone());
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.rooms),
            )
        };
        match &reason {
            CloseReason::Local => debug!("connection closed locally"),
            CloseReason::ServerClosed { .. } => info!(reason = %reason, "connection ended"),
            other => warn!(reason = %other, "connection ended"),
        }
        self.closed.send_replace(Some(reason.clone()));
        // Dropping the senders fails every waiting request with `Closed`.
        drop(pending);
        for room in rooms.values() {
            room.detach();
        }
        let (code, text): (u32, &[u8]) = match &reason {
            CloseReason::Protocol(_) => (
                u32::from(ErrorCode::Malformed.as_u16()),
                b"protocol error".as_slice(),
            ),
            _ => (0, b"closed".as_slice()),
        };
        // A no-op when the connection is already closed.
        self.conn.close(VarInt::from_u32(code), text);
    }

    /// Closes the connection and waits (briefly) until the close has been sent.
    pub(crate) async fn close_gracefully(&self) {
        self.shutdown(CloseReason::Local);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// The close reason after a stream failed: the connection's own reason if it
    /// closes within a short grace period, else `fallback` as a transport error.
    async fn reason_after_failure(&self, fallback: String) -> CloseReason {
        match tokio::time::timeout(CLOSE_REASON_GRACE, self.conn.closed()).await {
            Ok(err) => self.reason_from_connection(err),
            Err(_) => CloseReason::Transport(fallback),
        }
    }

    fn reason_from_connection(&self, err: ConnectionError) -> CloseReason {
        reason_from_connection(err, lock(&self.last_error).take())
    }

    // ---- requests ------------------------------------------------------------

    /// Sends a request and waits for its reply.
    ///
    /// Checks the message against the server's limits first; registers the pending
    /// reply before sending so a fast reply cannot be missed; unregisters it if the
    /// caller gives up (timeout or dropped future).
    pub(crate) async fn request(
        self: &Arc<Self>,
        build: impl FnOnce(RequestId) -> ClientMessage,
    ) -> Result<Reply, RequestError> {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = lock(&self.state);
            if let Some(reason) = &st.closed {
                return Err(RequestError::Closed(reason.clone()));
            }
            let mut id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
            while st.pending.contains_key(&id) {
                id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
            }
            st.pending.insert(id, tx);
            id
        };
        let _guard = PendingGuard { shared: self, id };
        let frame = self.encode_request(&build(id))?;
        match tokio::time::timeout_at(deadline, self.writer.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(RequestError::Closed(self.closed_error())),
            Err(_) => return Err(RequestError::Timeout),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(RequestError::Closed(self.closed_error())),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// Encodes a client message after checking it against the server's limits.
    fn encode_request(&self, msg: &ClientMessage) -> Result<Bytes, RequestError> {
        let limits = &self.hello.limits;
        validate_client_message(msg, limits)?;
        let frame = encode_frame(msg);
        if let Ok(Some((body_len, _))) = get_varint_u32(&frame) {
            Limits::check("frame", body_len as usize, limits.max_frame_bytes)?;
        }
        Ok(frame)
    }

    /// Queues a frame without waiting (used from `Drop`, where nothing can wait).
    fn send_nowait(&self, msg: &ClientMessage) {
        match self.encode_request(msg) {
            Ok(frame) => {
                if let Err(e) = self.writer.try_send(frame) {
                    debug!(message = msg.name(), error = %e, "could not queue frame");
                }
            }
            Err(e) => debug!(message = msg.name(), error = %e, "not sending"),
        }
    }

    fn next_id(&self) -> RequestId {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    // ---- rooms ---------------------------------------------------------------

    pub(crate) fn room(&self, slot: RoomSlot) -> Option<Arc<RoomShared>> {
        lock(&self.state).rooms.get(&slot).cloned()
    }

    /// Forgets a room locally (removes it from the routing table and ends its
    /// streams). Does not tell the server.
    pub(crate) fn detach_room(&self, room: &Arc<RoomShared>) {
        {
            let mut st = lock(&self.state);
            if st
                .rooms
                .get(&room.slot)
                .is_some_and(|r| Arc::ptr_eq(r, room))
            {
                st.rooms.remove(&room.slot);
            }
        }
        room.detach();
    }

    /// Leaves a room without waiting for the reply (handle dropped, join abandoned).
    pub(crate) fn abandon_room(&self, room: &Arc<RoomShared>) {
        if !room.joined.load(Ordering::SeqCst) {
            return;
        }
        self.detach_room(room);
        if self.close_reason().is_none() {
            self.send_nowait(&ClientMessage::Leave {
                request_id: self.next_id(),
                room: room.slot,
            });
        }
    }

    // ---- reader --------------------------------------------------------------

    async fn run_reader(self: Arc<Self>, mut recv: RecvStream, mut decoder: FrameDecoder) {
        let mut closed = self.closed.subscribe();
        let mut buf = vec![0u8; READ_CHUNK];
        // Frames that arrived together with the hello.
        if let Err(reason) = self.drain_frames(&mut decoder) {
            self.shutdown(reason);
            return;
        }
        loop {
            let read = tokio::select! {
                read = recv.read(&mut buf) => read,
                _ = closed.wait_for(Option::is_some) => return,
            };
            match read {
                Ok(Some(n)) => {
                    decoder.extend(&buf[..n]);
                    if let Err(reason) = self.drain_frames(&mut decoder) {
                        self.shutdown(reason);
                        return;
                    }
                }
                Ok(None) => {
                    let reason = self
                        .reason_after_failure("the server ended the control stream".into())
                        .await;
                    self.shutdown(reason);
                    return;
                }
                Err(e) => {
                    let reason = self
                        .reason_after_failure(format!("control stream read failed: {e}"))
                        .await;
                    self.shutdown(reason);
                    return;
                }
            }
        }
    }

    /// Handles every complete frame in the decoder.
    fn drain_frames(self: &Arc<Self>, decoder: &mut FrameDecoder) -> Result<(), CloseReason> {
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => match decode_server_message(&body) {
                    Ok(msg) => self.dispatch(msg),
                    Err(DecodeError::UnknownTag { tag }) => {
                        debug!(tag, "skipping server frame with unknown tag");
                    }
                    Err(e) => {
                        return Err(CloseReason::Protocol(format!(
                            "undecodable frame from the server: {e}"
                        )));
                    }
                },
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(CloseReason::Protocol(format!(
                        "bad frame from the server: {e}"
                    )));
                }
            }
        }
    }

    /// Routes one decoded server message.
    fn dispatch(self: &Arc<Self>, msg: ServerMessage) {
        trace!(?msg, "server message");
        match msg {
            ServerMessage::Hello(_) => warn!("ignoring a second hello from the server"),
            ServerMessage::Joined {
                request_id,
                snapshot,
            } => self.on_joined(request_id, snapshot),
            ServerMessage::Left { request_id, room } => {
                if let Some(r) = self.room(room) {
                    self.detach_room(&r);
                }
                self.reply(request_id, Reply::Left);
            }
            ServerMessage::StateAck {
                request_id,
                room: _,
                version,
                seq,
            } => self.reply(request_id, Reply::StateAck(StateAck { version, seq })),
            ServerMessage::CommandAck {
                request_id,
                room: _,
                seq,
                duplicate,
            } => self.reply(request_id, Reply::CommandAck(CommandAck { seq, duplicate })),
            ServerMessage::Pong {
                client_time,
                server_receive_time,
                server_send_time,
            } => self.on_pong(client_time, server_receive_time.0, server_send_time.0),
            ServerMessage::Error(frame) => self.on_error(frame),
            event @ (ServerMessage::MemberJoined { .. }
            | ServerMessage::MemberLeft { .. }
            | ServerMessage::StateChanged { .. }
            | ServerMessage::CommandEvent { .. }) => self.on_room_event(event),
        }
    }

    fn on_joined(self: &Arc<Self>, request_id: RequestId, snapshot: RoomSnapshot) {
        let room = Arc::new(RoomShared::new(snapshot, &self.options));
        let previous = lock(&self.state).rooms.insert(room.slot, Arc::clone(&room));
        if let Some(previous) = previous {
            warn!(room = room.slot.0, "server reused a joined room slot");
            previous.detach();
        }
        // Dropping the JoinedRoom (no waiter) leaves the room again.
        self.reply(
            request_id,
            Reply::Joined(JoinedRoom {
                shared: Arc::clone(self),
                room: Some(room),
            }),
        );
    }

    fn on_room_event(&self, msg: ServerMessage) {
        let Some(slot) = event_room(&msg) else { return };
        let Some(room) = self.room(slot) else {
            debug!(room = slot.0, "event for a room not joined (any more)");
            return;
        };
        let removed = {
            let mut inner = lock(&room.inner);
            match inner.replica.apply(msg) {
                Applied::Event(event) => {
                    inner.publish(event);
                    false
                }
                Applied::Removed(event) => {
                    inner.publish(event);
                    true
                }
                Applied::Stale { seq, last } => {
                    debug!(room = slot.0, seq = seq.0, last = last.0, "stale event");
                    false
                }
                Applied::NotRoomEvent => false,
            }
        };
        if removed {
            warn!(
                room = slot.0,
                "the server removed this client from the room"
            );
            self.detach_room(&room);
        }
    }

    fn on_pong(&self, t0: u64, t1: u64, t2: u64) {
        let t3 = self.clock.now_us();
        match ClockSample::new(t0, t1, t2, t3) {
            Some(sample) => {
                lock(&self.estimator).add(sample);
                self.samples.send_modify(|n| *n += 1);
            }
            None => debug!(t0, t1, t2, t3, "discarding impossible pong"),
        }
    }

    fn on_error(&self, frame: ErrorFrame) {
        match frame.request_id {
            Some(id) => self.reply(id, Reply::Error(frame)),
            None => {
                warn!(error = %frame, "server error");
                *lock(&self.last_error) = Some(frame.clone());
                let _ = self.errors.send(frame);
            }
        }
    }

    /// Completes a pending request; a reply nobody waits for is dropped.
    fn reply(&self, id: RequestId, reply: Reply) {
        let tx = lock(&self.state).pending.remove(&id);
        match tx {
            Some(tx) => {
                // If the caller just gave up, the reply (and a JoinedRoom in it) drops here.
                let _ = tx.send(reply);
            }
            None => debug!(
                request_id = id,
                reply = reply.name(),
                "reply to no pending request"
            ),
        }
    }

    // ---- writer --------------------------------------------------------------

    async fn run_writer(self: Arc<Self>, mut send: SendStream, mut rx: mpsc::Receiver<Bytes>) {
        let mut closed = self.closed.subscribe();
        loop {
            let frame = tokio::select! {
                frame = rx.recv() => frame,
                _ = closed.wait_for(Option::is_some) => return,
            };
            let Some(frame) = frame else { return };
            let write = tokio::select! {
                write = send.write_all(&frame) => write,
                _ = closed.wait_for(Option::is_some) => return,
            };
            if let Err(e) = write {
                let reason = self
                    .reason_after_failure(format!("control stream write failed: {e}"))
                    .await;
                self.shutdown(reason);
                return;
            }
        }
    }

    // ---- datagrams -----------------------------------------------------------

    async fn run_datagrams(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        loop {
            let datagram = tokio::select! {
                d = self.conn.receive_datagram() => d,
                _ = closed.wait_for(Option::is_some) => return,
            };
            match datagram {
                Ok(datagram) => self.on_datagram(datagram.payload()),
                // The reader sees the same failure and records the reason.
                Err(_) => return,
            }
        }
    }

    fn on_datagram(&self, bytes: Bytes) {
        let received_at = Instant::now();
        let tick = match decode_datagram(&bytes, &self.hello.limits) {
            Ok(Datagram::Tick(tick)) => tick,
            Err(e) => {
                debug!(error = %e, len = bytes.len(), "dropping undecodable datagram");
                return;
            }
        };
        let Some(room) = self.room(tick.room) else {
            trace!(room = tick.room.0, "tick for a room not joined");
            return;
        };
        // Ticks can overtake the control stream: ignore ticks from members this
        // client does not know (yet, or any more), and echoes of its own.
        if tick.sender == room.me || lock(&room.inner).replica.member(tick.sender).is_none() {
            trace!(
                room = tick.room.0,
                sender = tick.sender.0,
                "tick from an unknown member"
            );
            return;
        }
        let event = TickEvent {
            sender: tick.sender,
            seq: tick.seq,
            payload: bytes.slice_ref(tick.payload),
            received_at,
        };
        if let Some(tx) = &*lock(&room.ticks) {
            let _ = tx.send(event);
        }
    }

    // ---- clock ---------------------------------------------------------------

    /// Sends `pings` pings one after another, each waiting up to `per_ping` for a
    /// usable pong. Returns the number of samples gained; stops early if the
    /// connection ends.
    pub(crate) async fn sync_clock(&self, pings: u32, per_ping: Duration) -> u32 {
        let mut rx = self.samples.subscribe();
        let mut gained = 0;
        for i in 0..pings {
            if i > 0 && !self.options.clock_ping_spacing.is_zero() {
                tokio::time::sleep(self.options.clock_ping_spacing).await;
            }
            let before = *rx.borrow_and_update();
            let ping = encode_frame(&ClientMessage::Ping {
                client_time: self.clock.now_us(),
            });
            match tokio::time::timeout(per_ping, self.writer.send(ping)).await {
                Ok(Ok(())) => {}
                _ => return gained,
            }
            match tokio::time::timeout(per_ping, rx.wait_for(|n| *n > before)).await {
                Ok(Ok(_)) => gained += 1,
                Ok(Err(_)) => return gained,
                Err(_) => debug!("no pong in time"),
            }
            if self.close_reason().is_some() {
                return gained;
            }
        }
        gained
    }

    async fn run_clock(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        let interval = self.options.clock_sync_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = closed.wait_for(Option::is_some) => return,
            }
            let pings = self.options.clock_refresh_pings;
            let per_ping = self.options.request_timeout;
            tokio::select! {
                gained = self.sync_clock(pings, per_ping) => {
                    trace!(gained, estimate = ?self.clock_estimate(), "clock re-sync");
                }
                _ = closed.wait_for(Option::is_some) => return,
            }
        }
    }
}

/// `server - local` in µs, saturating.
fn saturating_offset(server_us: u64, local_us: u64) -> i64 {
    let d = i128::from(server_us) - i128::from(local_us);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

/// Removes a pending request when its caller stops waiting (reply received,
/// timeout, or the future dropped), so the table only holds live waiters.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: RequestId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.state).pending.remove(&self.id);
    }
}

/// Maps the transport's close error to a [`CloseReason`].
pub(crate) fn reason_from_connection(
    err: ConnectionError,
    last_error: Option<ErrorFrame>,
) -> CloseReason {
    match err {
        ConnectionError::ApplicationClosed(close) => {
            application_close_reason(close.code().into_inner(), close.reason(), last_error)
        }
        ConnectionError::LocallyClosed => CloseReason::Local,
        ConnectionError::TimedOut => CloseReason::Transport("idle timeout".into()),
        other => CloseReason::Transport(other.to_string()),
    }
}

/// The reason for a WebTransport close by the server with `code` and `reason`
/// text. A non-zero code is the Chorus error code; the error frame sent just
/// before (same code) carries the full message and detail.
pub(crate) fn application_close_reason(
    code: u64,
    reason: &[u8],
    last_error: Option<ErrorFrame>,
) -> CloseReason {
    let text = String::from_utf8_lossy(reason).into_owned();
    if code == 0 {
        return CloseReason::ServerClosed { reason: text };
    }
    match u16::try_from(code) {
        Ok(code) => {
            let code = ErrorCode::from_u16(code);
            match last_error {
                Some(frame) if frame.code == code => CloseReason::Server(frame),
                _ => CloseReason::Server(ErrorFrame::new(None, code, text)),
            }
        }
        Err(_) => CloseReason::Transport(format!("closed with code {code}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::ErrorDetail;

    #[test]
    fn close_code_zero_is_a_normal_close() {
        assert_eq!(
            application_close_reason(0, b"bye", None),
            CloseReason::ServerClosed {
                reason: "bye".into()
            }
        );
    }

    #[test]
    fn close_code_is_the_error_code_and_prefers_the_error_frame() {
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
            application_close_reason(400, b"slow", Some(frame.clone())),
            CloseReason::Server(frame.clone())
        );
        // A frame with another code is not the cause.
        assert_eq!(
            application_close_reason(501, b"shutting down", Some(frame)),
            CloseReason::Server(ErrorFrame::new(
                None,
                ErrorCode::ShuttingDown,
                "shutting down"
            ))
        );
        let r = application_close_reason(777, b"\xffnew", None);
        assert_eq!(r.code(), Some(ErrorCode::Unknown(777)));
        assert!(matches!(
            application_close_reason(70_000, b"", None),
            CloseReason::Transport(_)
        ));
    }
}
