//! The connection driver: the state shared by every handle of one connection and
//! the background tasks that move messages. It is the same for both transports:
//! it sees control message bodies and datagrams, and the transport
//! ([`crate::transport`]) turns them into bytes on a QUIC stream and datagrams,
//! or into WebSocket messages.
//!
//! Tasks (all end when the connection ends):
//! - **reader**: takes control messages and datagrams from the transport and
//!   dispatches: replies complete the matching pending request, room events update
//!   the room's replica and are then broadcast, pongs feed the clock estimator,
//!   errors without a request id go to the client-level error channel, ticks are
//!   routed by room slot to the room's tick broadcast.
//! - **writer**: the transport's only writer, fed whole control messages by a
//!   bounded queue, so concurrent callers never interleave partial messages.
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
use crate::transport::{Inbound, Link, LinkClose, LinkReader, LinkWriter, OutMessage};
use bytes::Bytes;
use chorus_protocol::validate_client_message;
use chorus_protocol::{
    ClientMessage, Datagram, DecodeError, ErrorFrame, Limits, MemberId, RequestId, RoomSlot,
    RoomSnapshot, Seq, ServerHello, ServerMessage, decode_datagram, decode_server_message,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, trace, warn};

/// Locks a std mutex, ignoring poisoning (no critical section leaves data
/// half-updated in a way a panic elsewhere could expose).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A reply routed to the request that asked for it.
pub(crate) enum Reply {
    Joined(JoinedRoom),
    Left,
    StateAck(StateAck),
    CommandAck(CommandAck),
    /// `Ack` to `Kick`, `SetRole`, `SetPassword`, `CloseRoom`: the seq of the
    /// event it caused (or the room's last seq).
    Ack(Seq),
    Error(ErrorFrame),
}

impl Reply {
    fn name(&self) -> &'static str {
        match self {
            Reply::Joined(_) => "joined",
            Reply::Left => "left",
            Reply::StateAck(_) => "state_ack",
            Reply::CommandAck(_) => "command_ack",
            Reply::Ack(_) => "ack",
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
    /// The transport: ticks, close, datagram size.
    pub(crate) link: Link,
    pub(crate) hello: ServerHello,
    pub(crate) options: ConnectOptions,
    pub(crate) clock: LocalClock,
    pub(crate) estimator: Mutex<ClockEstimator>,
    /// Rough offset from the hello's `server_time` (not RTT-corrected), used until
    /// the first ping sample.
    hello_offset_us: i64,
    /// Count of clock samples taken, to wake whoever waits for a pong.
    samples: watch::Sender<u64>,
    writer: mpsc::Sender<OutMessage>,
    state: Mutex<DriverState>,
    closed: watch::Sender<Option<CloseReason>>,
    pub(crate) errors: broadcast::Sender<ErrorFrame>,
    next_request_id: AtomicU32,
    /// The last error frame not tied to a request: the likely cause when the server
    /// closes the connection right after.
    last_error: Mutex<Option<ErrorFrame>>,
}

impl Shared {
    /// Builds the shared state and starts the driver tasks on a transport whose
    /// handshake is done.
    pub(crate) fn start(
        link: Link,
        reader: LinkReader,
        writer: LinkWriter,
        hello: ServerHello,
        options: ConnectOptions,
        clock: LocalClock,
    ) -> Arc<Shared> {
        let (writer_tx, writer_rx) = mpsc::channel(options.write_queue.max(1));
        let (errors, _) = broadcast::channel(options.error_capacity.max(1));
        let hello_offset_us = saturating_offset(hello.server_time.0, clock.now_us());
        let shared = Arc::new(Shared {
            hello_offset_us,
            link,
            hello,
            estimator: Mutex::new(ClockEstimator::new(options.clock_window)),
            options,
            clock,
            samples: watch::Sender::new(0),
            writer: writer_tx,
            state: Mutex::new(DriverState::default()),
            closed: watch::Sender::new(None),
            errors,
            next_request_id: AtomicU32::new(1),
            last_error: Mutex::new(None),
        });
        tokio::spawn(writer.run(Arc::clone(&shared), writer_rx));
        tokio::spawn(Arc::clone(&shared).run_reader(reader));
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

    /// A receiver of the close reason (set once, when the connection ends).
    pub(crate) fn closed_watch(&self) -> watch::Receiver<Option<CloseReason>> {
        self.closed.subscribe()
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
    /// pending requests, ends every room's streams and closes the transport.
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
        self.link.close(&reason);
    }

    /// Closes the connection and waits (briefly) until the close has been sent.
    pub(crate) async fn close_gracefully(&self) {
        self.shutdown(CloseReason::Local);
        self.link.wait_closed().await;
    }

    /// Ends the connection because the transport saw it end: with the server's
    /// error frame sent just before, when the close code names the same error.
    pub(crate) fn link_failed(&self, close: LinkClose) {
        let last_error = lock(&self.last_error).take();
        self.shutdown(close.into_reason(last_error));
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
        let message = self.encode_request(&build(id))?;
        match tokio::time::timeout_at(deadline, self.writer.send(message)).await {
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
    fn encode_request(&self, msg: &ClientMessage) -> Result<OutMessage, RequestError> {
        let limits = &self.hello.limits;
        validate_client_message(msg, limits)?;
        let message = OutMessage::encode(msg);
        Limits::check("frame", message.body().len(), limits.max_frame_bytes)?;
        Ok(message)
    }

    /// Queues a message without waiting (used from `Drop`, where nothing can wait).
    fn send_nowait(&self, msg: &ClientMessage) {
        match self.encode_request(msg) {
            Ok(message) => {
                if let Err(e) = self.writer.try_send(message) {
                    debug!(message = msg.name(), error = %e, "could not queue message");
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

    async fn run_reader(self: Arc<Self>, mut reader: LinkReader) {
        let mut closed = self.closed.subscribe();
        loop {
            let inbound = tokio::select! {
                inbound = reader.recv() => inbound,
                _ = closed.wait_for(Option::is_some) => break,
            };
            match inbound {
                Ok(Inbound::Control(body)) => {
                    if let Err(reason) = self.on_control(&body) {
                        self.shutdown(reason);
                        break;
                    }
                }
                Ok(Inbound::Datagram(bytes)) => self.on_datagram(bytes),
                Err(close) => {
                    self.link_failed(close);
                    break;
                }
            }
        }
        reader.finish().await;
    }

    /// Handles one control message body from the server.
    fn on_control(self: &Arc<Self>, body: &[u8]) -> Result<(), CloseReason> {
        match decode_server_message(body) {
            Ok(msg) => self.dispatch(msg),
            Err(DecodeError::UnknownTag { tag }) => {
                debug!(tag, "skipping server message with unknown tag");
            }
            Err(e) => {
                return Err(CloseReason::Protocol(format!(
                    "undecodable message from the server: {e}"
                )));
            }
        }
        Ok(())
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
            ServerMessage::Ack {
                request_id,
                room: _,
                seq,
            } => self.reply(request_id, Reply::Ack(seq)),
            ServerMessage::Error(frame) => self.on_error(frame),
            event @ (ServerMessage::MemberJoined { .. }
            | ServerMessage::MemberLeft { .. }
            | ServerMessage::StateChanged { .. }
            | ServerMessage::CommandEvent { .. }
            | ServerMessage::RoleChanged { .. }
            | ServerMessage::MemberKicked { .. }
            | ServerMessage::RoomClosed { .. }) => self.on_room_event(event),
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
                    None
                }
                Applied::Removed(event) => {
                    let why = match &event {
                        RoomEvent::MemberKicked { reason, by, .. } => {
                            format!("kicked by member {}: {reason:?}", by.0)
                        }
                        RoomEvent::RoomClosed { reason, by, .. } => {
                            format!("room closed by member {}: {reason:?}", by.0)
                        }
                        RoomEvent::MemberLeft { reason, .. } => {
                            format!("removed by the server ({reason})")
                        }
                        other => format!("removed by the server (event {})", other.seq().0),
                    };
                    inner.publish(event);
                    Some(why)
                }
                Applied::Stale { seq, last } => {
                    debug!(room = slot.0, seq = seq.0, last = last.0, "stale event");
                    None
                }
                Applied::NotRoomEvent => None,
            }
        };
        if let Some(why) = removed {
            // Published before this: receivers see the event, then the end.
            warn!(room = slot.0, "no longer in the room: {why}");
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

    // ---- ticks ---------------------------------------------------------------

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
            let ping = OutMessage::encode(&ClientMessage::Ping {
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
