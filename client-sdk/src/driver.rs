//! The connection driver: the state shared by every handle of one client and
//! the background tasks that move messages. It is the same for both
//! transports: it sees control message bodies, datagrams and pack transfers,
//! and the transport ([`crate::transport`]) turns them into bytes.
//!
//! A client goes through one or more *connections* (a [`Conn`] each: a link
//! and its writer queue). Tasks:
//! - **supervisor** (one per client): runs the current connection (it reads:
//!   replies complete the matching pending request, room events update the
//!   room's replica and are then broadcast, pongs feed the clock estimator,
//!   errors without a request id go to the client-level error channel, ticks
//!   are routed by room slot to the room's tick broadcast, pack content to the
//!   fetch that asked for it); when the connection drops in a resumable way,
//!   it reconnects with backoff and resumes the session (see
//!   [`crate::reconnect`]); when the client closes, it closes the connection.
//! - **writer** (one per connection): the transport's only writer, fed whole
//!   control messages by a bounded queue, so concurrent callers never
//!   interleave partial messages.
//! - **keep-alive** and **clock** (one each per client): a ping every
//!   `ping_interval`, and a burst re-sync every `clock_sync_interval`.
//!
//! Requests: each registers a pending entry (reply channel, the connection it
//! went out on) before it is queued; while reconnecting, new requests wait for
//! the next connection. When a connection drops, pending requests fail with
//! [`RequestError::ConnectionLost`], except commands with an idempotency key,
//! which are queued again on the next connection.
//!
//! Locking: `Shared::state` (connection, pending requests, rooms, close
//! reason) and each room's own mutexes are never held at the same time, and
//! never across an `.await`.

use crate::clock::{ClockEstimate, ClockEstimator, ClockSample, LocalClock};
use crate::error::{CloseReason, ConnectError, RequestError, TickError};
use crate::options::ConnectOptions;
use crate::reconnect::{ConnectionEvent, ResumedRoom, RoomResume, next_delay, random_u64};
use crate::replica::{Applied, CommandEvent, RoomEvent, RoomReplica, RoomView, event_room};
use crate::room::{CommandAck, Delivery, IceServers, RoomMessage, StateAck, TickEvent};
use crate::transport::{
    CLOSE_GRACE, Connected, Inbound, Link, LinkClose, LinkReader, LinkWriter, OutMessage, Transport,
};
use bytes::Bytes;
use chorus_protocol::codec::MAX_PACK_HEADER_BYTES;
use chorus_protocol::frame::MAX_VARINT_LEN;
use chorus_protocol::{
    ClientMessage, Datagram, DecodeError, ErrorCode, ErrorFrame, HelloOption, Limits, MemberId,
    PackStreamHeader, RequestId, ResumeRoom, RoomSlot, RoomSnapshot, Seq, ServerHello,
    ServerMessage, ServerTime, decode_datagram, decode_server_message, split_pack_message,
    validate_client_message,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant as Deadline;
use tracing::{debug, info, trace, warn};

/// Locks a std mutex, ignoring poisoning (no critical section leaves data
/// half-updated in a way a panic elsewhere could expose).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Capacity of the client-level connection event broadcast.
const CONNECTION_EVENT_CAPACITY: usize = 64;

/// How long [`Shared::close_gracefully`] waits for the `Left` replies.
const LEAVE_GRACE: Duration = Duration::from_secs(2);

/// A reply routed to the request that asked for it.
pub(crate) enum Reply {
    Joined(JoinedRoom),
    Left,
    StateAck(StateAck),
    CommandAck(CommandAck),
    /// `Ack` to `Kick`, `SetRole`, `SetPassword`, `CloseRoom`, `Timeline`,
    /// `Direct`, `Broadcast`, `SetDelegate`, `PackUpload`: the seq of the event
    /// it caused (or the room's last seq).
    Ack(Seq),
    /// `Snapshot`: the replica was already replaced; a view of it.
    Snapshot(Box<RoomView>),
    IceServers(IceServers),
    /// Send the pack's content from `offset`.
    PackUploadReady {
        hash: Vec<u8>,
        offset: u64,
    },
    Error(ErrorFrame),
    /// The connection dropped while the request was in flight.
    Lost,
}

impl Reply {
    fn name(&self) -> &'static str {
        match self {
            Reply::Joined(_) => "joined",
            Reply::Left => "left",
            Reply::StateAck(_) => "state_ack",
            Reply::CommandAck(_) => "command_ack",
            Reply::Ack(_) => "ack",
            Reply::Snapshot(_) => "snapshot",
            Reply::IceServers(_) => "ice_servers",
            Reply::PackUploadReady { .. } => "pack_upload_ready",
            Reply::Error(_) => "error",
            Reply::Lost => "lost",
        }
    }

    /// The server's error, or `unexpected` for a reply of another kind.
    pub(crate) fn into_error(self) -> RequestError {
        match self {
            Reply::Error(frame) => RequestError::Server(frame),
            Reply::Lost => RequestError::ConnectionLost,
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
    commands: broadcast::Sender<CommandEvent>,
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

    pub(crate) fn subscribe_commands(&self) -> broadcast::Receiver<CommandEvent> {
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
    /// This client's member id (a resume keeps it; stored atomically all the same).
    me: AtomicU32,
    pub(crate) inner: Mutex<RoomInner>,
    pub(crate) ticks: Mutex<Option<broadcast::Sender<TickEvent>>>,
    pub(crate) messages: Mutex<Option<broadcast::Sender<RoomMessage>>>,
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
        let (messages, _) = broadcast::channel(options.message_capacity.max(1));
        RoomShared {
            slot: replica.slot(),
            id: replica.room_id().to_owned(),
            me: AtomicU32::new(replica.me().0),
            inner: Mutex::new(RoomInner {
                replica,
                channels: Some(RoomChannels { events, commands }),
            }),
            ticks: Mutex::new(Some(ticks)),
            messages: Mutex::new(Some(messages)),
            tick_seq: Mutex::new(0),
            joined: AtomicBool::new(true),
        }
    }

    /// This client's member id in the room.
    pub(crate) fn me(&self) -> MemberId {
        MemberId(self.me.load(Ordering::Relaxed))
    }

    /// Marks the room as no longer joined and ends its streams.
    fn detach(&self) {
        self.joined.store(false, Ordering::SeqCst);
        lock(&self.inner).channels = None;
        *lock(&self.ticks) = None;
        *lock(&self.messages) = None;
    }
}

/// One piece of a pack download, routed to the fetch that asked for it.
#[derive(Debug)]
pub(crate) enum PackPiece {
    /// Content of pack `hash` (`size` bytes in all) from `offset`.
    Data {
        hash: Vec<u8>,
        offset: u64,
        size: u64,
        bytes: Bytes,
    },
    /// The pack stream ended (WebTransport): no more content comes for this request.
    End,
    /// The pack stream failed.
    Failed(String),
}

/// One transport connection of the client.
pub(crate) struct Conn {
    /// Counts connections from 1.
    pub(crate) generation: u64,
    pub(crate) link: Link,
    writer: mpsc::Sender<OutMessage>,
    /// Tells the writer to stop, and why (a clean close flushes first).
    stop: watch::Sender<Option<CloseReason>>,
}

/// A connection with its reader and writer, ready to be served.
struct Live {
    conn: Arc<Conn>,
    reader: LinkReader,
    writer: LinkWriter,
    rx: mpsc::Receiver<OutMessage>,
    stop: watch::Receiver<Option<CloseReason>>,
    /// Commands to send again (an idempotency key each) once it runs.
    resend: Vec<OutMessage>,
}

fn make_live(generation: u64, connected: Connected, write_queue: usize) -> Live {
    let Connected {
        link,
        reader,
        writer,
    } = connected;
    let (writer_tx, rx) = mpsc::channel(write_queue.max(1));
    let (stop_tx, stop) = watch::channel(None);
    Live {
        conn: Arc::new(Conn {
            generation,
            link,
            writer: writer_tx,
            stop: stop_tx,
        }),
        reader,
        writer,
        rx,
        stop,
        resend: Vec::new(),
    }
}

/// A request waiting for its reply.
struct PendingEntry {
    tx: mpsc::UnboundedSender<Reply>,
    /// The connection it went out on.
    generation: u64,
    /// A command with an idempotency key: sent again on the next connection
    /// if this one drops.
    resend: Option<OutMessage>,
}

/// The rooms a resume still waits on, and what happened to the others.
struct ResumeProgress {
    waiting: Vec<(RoomSlot, String)>,
    outcomes: Vec<ResumedRoom>,
    session_resumed: bool,
    /// The `client_time` of the ping sent right after the hello: the server
    /// answers it only after its resume is done.
    barrier: u64,
    barrier_seen: bool,
    /// When rooms still unanswered are given up.
    deadline: Deadline,
    transport: Transport,
}

/// Mutable client state behind one mutex.
struct DriverState {
    /// The current (or, while reconnecting, the last) connection.
    conn: Arc<Conn>,
    /// Whether `conn` is usable (false while reconnecting).
    up: bool,
    /// The latest server hello (its resume token and window, session id).
    hello: ServerHello,
    pending: HashMap<RequestId, PendingEntry>,
    /// Where the content of each pack fetch goes.
    downloads: HashMap<RequestId, mpsc::UnboundedSender<PackPiece>>,
    rooms: HashMap<RoomSlot, Arc<RoomShared>>,
    resume: Option<ResumeProgress>,
    closed: Option<CloseReason>,
}

/// How serving one connection ended.
enum End {
    /// The client closed (the reason is recorded).
    Shutdown,
    /// The connection failed with this reason; the client may reconnect.
    Dropped(CloseReason),
}

/// State shared by the client handles, room handles and driver tasks of one client.
pub(crate) struct Shared {
    /// The URL given to `connect`, for reconnecting.
    url: String,
    /// The first connection's hello (limits, rate limits; they do not change).
    pub(crate) hello: ServerHello,
    pub(crate) options: ConnectOptions,
    pub(crate) clock: LocalClock,
    pub(crate) estimator: Mutex<ClockEstimator>,
    /// Rough offset from the hello's `server_time` (not RTT-corrected), used until
    /// the first ping sample.
    hello_offset_us: i64,
    /// Count of clock samples taken, to wake whoever waits for a pong.
    samples: watch::Sender<u64>,
    state: Mutex<DriverState>,
    /// Bumped whenever the connection goes up or down or the client closes.
    conn_changes: watch::Sender<u64>,
    closed: watch::Sender<Option<CloseReason>>,
    /// Set once the last connection's close has been carried out.
    finished: watch::Sender<bool>,
    pub(crate) errors: broadcast::Sender<ErrorFrame>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    next_request_id: AtomicU32,
    next_generation: AtomicU64,
    /// The last error frame not tied to a request: the likely cause when the server
    /// closes the connection right after.
    last_error: Mutex<Option<ErrorFrame>>,
    /// Outgoing ticks dropped by earlier connections.
    ticks_dropped_before: AtomicU64,
}

impl Shared {
    /// Builds the shared state and starts the driver tasks on a transport whose
    /// handshake is done.
    pub(crate) fn start(
        url: String,
        connected: Connected,
        hello: ServerHello,
        options: ConnectOptions,
        clock: LocalClock,
    ) -> Arc<Shared> {
        let (errors, _) = broadcast::channel(options.error_capacity.max(1));
        let (events, _) = broadcast::channel(CONNECTION_EVENT_CAPACITY);
        let hello_offset_us = saturating_offset(hello.server_time.0, clock.now_us());
        let live = make_live(1, connected, options.write_queue);
        let shared = Arc::new(Shared {
            url,
            hello_offset_us,
            state: Mutex::new(DriverState {
                conn: Arc::clone(&live.conn),
                up: true,
                hello: hello.clone(),
                pending: HashMap::new(),
                downloads: HashMap::new(),
                rooms: HashMap::new(),
                resume: None,
                closed: None,
            }),
            hello,
            estimator: Mutex::new(ClockEstimator::new(options.clock_window)),
            options,
            clock,
            samples: watch::Sender::new(0),
            conn_changes: watch::Sender::new(0),
            closed: watch::Sender::new(None),
            finished: watch::Sender::new(false),
            errors,
            events,
            next_request_id: AtomicU32::new(1),
            next_generation: AtomicU64::new(2),
            last_error: Mutex::new(None),
            ticks_dropped_before: AtomicU64::new(0),
        });
        tokio::spawn(Arc::clone(&shared).supervise(live));
        if !shared.options.ping_interval.is_zero() {
            tokio::spawn(Arc::clone(&shared).run_keepalive());
        }
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

    /// The server's clock now, by the current estimate.
    pub(crate) fn server_time(&self) -> ServerTime {
        self.server_time_at(Instant::now())
    }

    /// The server's clock at a local instant, by the current estimate.
    pub(crate) fn server_time_at(&self, instant: Instant) -> ServerTime {
        self.clock_estimate()
            .to_server_time(self.clock.at_us(instant))
    }

    // ---- the connection ------------------------------------------------------

    /// The current connection, whether or not it is up.
    fn conn(&self) -> Arc<Conn> {
        Arc::clone(&lock(&self.state).conn)
    }

    /// The current connection if it is up.
    fn up_conn(&self) -> Option<Arc<Conn>> {
        let st = lock(&self.state);
        st.up.then(|| Arc::clone(&st.conn))
    }

    /// Whether a connection is up (not reconnecting, not closed).
    pub(crate) fn is_up(&self) -> bool {
        let st = lock(&self.state);
        st.up && st.closed.is_none()
    }

    /// The transport of the current (or last) connection.
    pub(crate) fn transport(&self) -> Transport {
        self.conn().link.kind()
    }

    /// The latest server hello's session id.
    pub(crate) fn session_id(&self) -> u64 {
        lock(&self.state).hello.session_id
    }

    pub(crate) fn max_datagram_size(&self) -> Option<usize> {
        self.conn().link.max_datagram_size()
    }

    pub(crate) fn max_tick_payload(&self, limit: usize) -> usize {
        self.conn().link.max_tick_payload(limit)
    }

    pub(crate) fn outgoing_ticks_dropped(&self) -> u64 {
        self.ticks_dropped_before.load(Ordering::Relaxed)
            + self.conn().link.outgoing_ticks_dropped()
    }

    /// Sends one encoded tick datagram for `room` on the current connection.
    pub(crate) fn send_tick(&self, room: RoomSlot, datagram: Vec<u8>) -> Result<(), TickError> {
        let conn = {
            let st = lock(&self.state);
            if let Some(reason) = &st.closed {
                return Err(TickError::Closed(reason.clone()));
            }
            if !st.up {
                return Err(TickError::Disconnected);
            }
            Arc::clone(&st.conn)
        };
        conn.link.send_tick(self, room, datagram)
    }

    /// A receiver of connection events from now on.
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }

    // ---- closing -------------------------------------------------------------

    /// Why the client ended, once it has.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.state).closed.clone()
    }

    /// The close reason, for callers that saw a channel end (it is set before any
    /// channel is dropped, so `Local` is only a fallback).
    pub(crate) fn closed_error(&self) -> CloseReason {
        self.close_reason().unwrap_or(CloseReason::Local)
    }

    /// `Closed` once the client has ended, else `ConnectionLost`.
    pub(crate) fn lost_or_closed(&self) -> RequestError {
        match self.close_reason() {
            Some(reason) => RequestError::Closed(reason),
            None => RequestError::ConnectionLost,
        }
    }

    /// Waits until the client has ended.
    pub(crate) async fn wait_closed(&self) -> CloseReason {
        let mut rx = self.closed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(CloseReason::Local),
            Err(_) => self.closed_error(),
        }
    }

    /// Ends the client once (later calls do nothing): records the reason, fails
    /// pending requests, ends every room's streams, and has the supervisor
    /// close the connection. Reports [`ConnectionEvent::Lost`] unless this
    /// client closed it.
    pub(crate) fn shutdown(&self, reason: CloseReason) {
        let (pending, downloads, rooms) = {
            let mut st = lock(&self.state);
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason.clone());
            st.up = false;
            st.resume = None;
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.downloads),
                std::mem::take(&mut st.rooms),
            )
        };
        match &reason {
            CloseReason::Local => debug!("connection closed locally"),
            CloseReason::ServerClosed { .. } => info!(reason = %reason, "connection ended"),
            other => warn!(reason = %other, "connection ended"),
        }
        self.closed.send_replace(Some(reason.clone()));
        self.conn_changes.send_modify(|n| *n += 1);
        // Dropping the senders fails every waiting request with `Closed`.
        drop(pending);
        drop(downloads);
        for room in rooms.values() {
            room.detach();
        }
        if reason != CloseReason::Local {
            let _ = self.events.send(ConnectionEvent::Lost { reason });
        }
    }

    /// Leaves every joined room (so the others see a leave, not a member
    /// reconnecting), closes the connection and waits (briefly) until the
    /// close has been sent.
    pub(crate) async fn close_gracefully(self: &Arc<Self>) {
        let rooms: Vec<Arc<RoomShared>> = {
            let st = lock(&self.state);
            if st.up && st.closed.is_none() {
                st.rooms.values().cloned().collect()
            } else {
                Vec::new()
            }
        };
        if !rooms.is_empty() {
            let deadline = Deadline::now() + self.options.request_timeout.min(LEAVE_GRACE);
            let leaves = rooms.iter().map(|room| {
                let slot = room.slot;
                async move {
                    let left = self
                        .request_by(
                            |request_id| ClientMessage::Leave {
                                request_id,
                                room: slot,
                            },
                            deadline,
                        )
                        .await;
                    if let Err(e) = left {
                        debug!(room = slot.0, error = %e, "no Left before closing");
                    }
                    self.detach_room(room);
                }
            });
            futures_util::future::join_all(leaves).await;
        }
        self.shutdown(CloseReason::Local);
        let mut finished = self.finished.subscribe();
        let _ = tokio::time::timeout(4 * CLOSE_GRACE, finished.wait_for(|done| *done)).await;
    }

    // ---- requests ------------------------------------------------------------

    /// Sends a request and waits for its reply, within the request timeout.
    pub(crate) async fn request(
        self: &Arc<Self>,
        build: impl FnOnce(RequestId) -> ClientMessage,
    ) -> Result<Reply, RequestError> {
        self.request_by(build, Deadline::now() + self.options.request_timeout)
            .await
    }

    /// Sends a request and waits for its reply until `deadline`.
    pub(crate) async fn request_by(
        self: &Arc<Self>,
        build: impl FnOnce(RequestId) -> ClientMessage,
        deadline: Deadline,
    ) -> Result<Reply, RequestError> {
        let mut pending = self.start_request(build, None, deadline).await?;
        pending.recv(deadline).await
    }

    /// Registers and queues a request; its replies then come through the
    /// returned [`Pending`] (more than one for a pack upload), and the pack
    /// content of a fetch through `download`.
    ///
    /// Checks the message against the server's limits first. While the client
    /// is reconnecting, waits for the next connection (until `deadline`).
    /// Registers the reply before queueing so a fast reply cannot be missed;
    /// dropping the `Pending` unregisters it.
    pub(crate) async fn start_request(
        self: &Arc<Self>,
        build: impl FnOnce(RequestId) -> ClientMessage,
        download: Option<mpsc::UnboundedSender<PackPiece>>,
        deadline: Deadline,
    ) -> Result<Pending, RequestError> {
        let id = self.next_id();
        let msg = build(id);
        let message = self.encode_request(&msg)?;
        let resend = matches!(
            &msg,
            ClientMessage::Command {
                idempotency_key: Some(_),
                ..
            }
        )
        .then(|| message.clone());
        let resendable = resend.is_some();
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = self.register(id, tx, resend, download, deadline).await?;
        let pending = Pending {
            shared: Arc::clone(self),
            id,
            rx,
            conn: Arc::clone(&conn),
        };
        match tokio::time::timeout_at(deadline, conn.writer.send(message)).await {
            Ok(Ok(())) => Ok(pending),
            // The connection is gone; an idempotent command goes out again on
            // the next one, so it waits for its reply there.
            Ok(Err(_)) if resendable => {
                self.resend_if_missed(id);
                Ok(pending)
            }
            Ok(Err(_)) => Err(self.lost_or_closed()),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// An idempotent command whose connection failed while it was being
    /// queued: if the next connection is already up (and so did not send it
    /// again), queue it there.
    fn resend_if_missed(&self, id: RequestId) {
        let mut st = lock(&self.state);
        if !st.up {
            return; // the next connection sends it
        }
        let generation = st.conn.generation;
        let writer = st.conn.writer.clone();
        if let Some(entry) = st.pending.get_mut(&id)
            && entry.generation < generation
            && let Some(message) = entry.resend.clone()
        {
            entry.generation = generation;
            if writer.try_send(message).is_err() {
                debug!(request_id = id, "could not queue the command again");
            }
        }
    }

    /// Registers a pending request on the current connection, waiting while
    /// the client reconnects.
    async fn register(
        &self,
        id: RequestId,
        tx: mpsc::UnboundedSender<Reply>,
        resend: Option<OutMessage>,
        download: Option<mpsc::UnboundedSender<PackPiece>>,
        deadline: Deadline,
    ) -> Result<Arc<Conn>, RequestError> {
        let mut changes = self.conn_changes.subscribe();
        let mut entry = Some((tx, resend, download));
        loop {
            {
                let mut st = lock(&self.state);
                if let Some(reason) = &st.closed {
                    return Err(RequestError::Closed(reason.clone()));
                }
                if st.up
                    && let Some((tx, resend, download)) = entry.take()
                {
                    let generation = st.conn.generation;
                    st.pending.insert(
                        id,
                        PendingEntry {
                            tx,
                            generation,
                            resend,
                        },
                    );
                    if let Some(download) = download {
                        st.downloads.insert(id, download);
                    }
                    return Ok(Arc::clone(&st.conn));
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(RequestError::Closed(self.closed_error())),
                Err(_) => return Err(RequestError::Timeout),
            }
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

    /// Queues a message on the current connection without waiting (used from
    /// `Drop`, where nothing can wait); dropped while reconnecting. Returns
    /// whether it was queued.
    fn send_nowait(&self, msg: &ClientMessage) -> bool {
        let Some(conn) = self.up_conn() else {
            debug!(message = msg.name(), "not connected; not sending");
            return false;
        };
        match self.encode_request(msg) {
            Ok(message) => match conn.writer.try_send(message) {
                Ok(()) => true,
                Err(e) => {
                    debug!(message = msg.name(), error = %e, "could not queue message");
                    false
                }
            },
            Err(e) => {
                debug!(message = msg.name(), error = %e, "not sending");
                false
            }
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
            // While reconnecting this goes nowhere; the resume then names a
            // room this client does not list, and it is left then.
            self.send_nowait(&ClientMessage::Leave {
                request_id: self.next_id(),
                room: room.slot,
            });
        }
    }

    // ---- supervisor ----------------------------------------------------------

    /// Runs connection after connection until the client ends.
    async fn supervise(self: Arc<Self>, mut live: Live) {
        loop {
            let Live {
                conn,
                mut reader,
                writer,
                rx,
                stop,
                resend,
            } = live;
            let (writer_done_tx, writer_done) = oneshot::channel();
            let writer_task = tokio::spawn(async move {
                let _ = writer_done_tx.send(writer.run(rx, stop).await);
            });
            if !resend.is_empty() {
                let writer = conn.writer.clone();
                tokio::spawn(async move {
                    for message in resend {
                        if writer.send(message).await.is_err() {
                            return;
                        }
                    }
                });
            }
            let end = self.serve(&conn, &mut reader, writer_done).await;
            // Decided at once, so that requests made from now on wait for the
            // next connection (or fail, when there is none) rather than
            // queueing on this one.
            let (reason, resume) = match end {
                End::Shutdown => (self.closed_error(), None),
                End::Dropped(reason) => match self.resume_window(&reason) {
                    Some(window) => {
                        info!(reason = %reason, "connection dropped; reconnecting");
                        self.connection_down();
                        (reason, Some(window))
                    }
                    None => {
                        self.shutdown(reason.clone());
                        (reason, None)
                    }
                },
            };
            conn.stop.send_replace(Some(reason.clone()));
            let _ = tokio::time::timeout(2 * CLOSE_GRACE, writer_task).await;
            conn.link.close(&reason);
            let Some(window) = resume else {
                reader.finish().await;
                conn.link.wait_closed().await;
                break;
            };
            tokio::spawn(reader.finish());
            match self.reconnect(reason, window).await {
                Some(next) => live = next,
                None => break,
            }
        }
        self.finished.send_replace(true);
    }

    /// Reads one connection until it drops or the client closes.
    async fn serve(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        reader: &mut LinkReader,
        mut writer_done: oneshot::Receiver<Result<(), LinkClose>>,
    ) -> End {
        trace!(generation = conn.generation, transport = %conn.link.kind(), "serving a connection");
        let mut closed = self.closed.subscribe();
        let mut writer_running = true;
        // A failed write: how, and until when the reader may tell better.
        let mut writer_failure: Option<(LinkClose, Deadline)> = None;
        // Nothing at all (not even the keep-alive's pongs) for this long: the
        // connection is dead, though the transport has not noticed yet.
        let silence = self.silence_limit();
        let mut last_heard = Deadline::now();
        // The timers and the close watch are made once per connection, not
        // once per message: rebuilding them on every pass of the loop cost a
        // timer registration and cancellation and a lock per received tick.
        // The silence timer is moved on only when it fires early.
        let silent_timer = tokio::time::sleep_until(last_heard + silence.unwrap_or(Duration::ZERO));
        tokio::pin!(silent_timer);
        // A resume's deadline is set before this connection is served (see
        // `install`) and only cleared while it is; `resume_timed_out` does
        // nothing once the resume is over.
        let resume_deadline = lock(&self.state).resume.as_ref().map(|r| r.deadline);
        let mut resume_pending = resume_deadline.is_some();
        let resume_timer = sleep_until(resume_deadline);
        tokio::pin!(resume_timer);
        let client_closed = closed.wait_for(Option::is_some);
        tokio::pin!(client_closed);
        loop {
            let failure_deadline = writer_failure.as_ref().map(|(_, d)| *d);
            tokio::select! {
                inbound = reader.recv() => match inbound {
                    Ok(inbound) => {
                        last_heard = Deadline::now();
                        if let Err(reason) = self.on_inbound(inbound) {
                            self.shutdown(reason);
                            return End::Shutdown;
                        }
                    }
                    Err(close) => return End::Dropped(self.reason_for(close)),
                },
                () = &mut silent_timer, if silence.is_some() => {
                    let limit = silence.unwrap_or_default();
                    let silent_at = last_heard + limit;
                    if silent_at > Deadline::now() {
                        silent_timer.as_mut().reset(silent_at);
                        continue;
                    }
                    warn!(?limit, "nothing heard from the server; taking the connection for dropped");
                    return End::Dropped(CloseReason::Transport(format!(
                        "nothing heard from the server for {} ms",
                        limit.as_millis()
                    )));
                }
                result = &mut writer_done, if writer_running => {
                    writer_running = false;
                    if let Ok(Err(close)) = result {
                        // The reader usually knows better why (the server's
                        // close frame): give it a moment.
                        writer_failure = Some((close, Deadline::now() + CLOSE_GRACE));
                    }
                }
                () = sleep_until(failure_deadline), if failure_deadline.is_some() => {
                    if let Some((close, _)) = writer_failure.take() {
                        return End::Dropped(self.reason_for(close));
                    }
                }
                _ = &mut client_closed => return End::Shutdown,
                () = &mut resume_timer, if resume_pending => {
                    resume_pending = false;
                    self.resume_timed_out();
                }
            }
        }
    }

    /// Handles one thing the connection delivered; an error ends the client
    /// (the server broke the protocol).
    fn on_inbound(self: &Arc<Self>, inbound: Inbound) -> Result<(), CloseReason> {
        match inbound {
            Inbound::Control(body) => return self.on_control(&body),
            Inbound::Datagram(bytes) => self.on_datagram(bytes),
            Inbound::Pack(message) => self.on_pack_message(message),
            Inbound::PackStream(stream) => {
                tokio::spawn(Arc::clone(self).receive_pack_stream(stream));
            }
        }
        Ok(())
    }

    /// How long a connection may stay silent before it is taken for dead:
    /// three keep-alive intervals, at least a second (none without keep-alive).
    fn silence_limit(&self) -> Option<Duration> {
        let interval = self.options.ping_interval;
        (!interval.is_zero()).then(|| (3 * interval).max(Duration::from_secs(1)))
    }

    /// The close reason for a connection that ended this way: with the
    /// server's error frame sent just before, when the close code names the
    /// same error.
    fn reason_for(&self, close: LinkClose) -> CloseReason {
        let last_error = lock(&self.last_error).take();
        close.into_reason(last_error)
    }

    /// The resume window, if a connection that ended for `reason` is to be
    /// resumed: the server closed it without an error (or it failed below
    /// Chorus), reconnecting is on, and the server offered a resume token.
    fn resume_window(&self, reason: &CloseReason) -> Option<Duration> {
        if !self.options.reconnect.enabled {
            return None;
        }
        // A server going away (ShuttingDown with a time to come back) is
        // reconnected to after that time, like a dropped connection.
        let going_away = matches!(
            reason,
            CloseReason::Server(frame) if frame.code == ErrorCode::ShuttingDown
                && matches!(frame.detail, chorus_protocol::ErrorDetail::RetryAfter { .. })
        );
        if !going_away
            && !matches!(
                reason,
                CloseReason::Transport(_) | CloseReason::ServerClosed { .. }
            )
        {
            return None;
        }
        let st = lock(&self.state);
        if st.closed.is_some() || st.hello.resume_token.is_empty() || st.hello.resume_window_ms == 0
        {
            return None;
        }
        Some(Duration::from_millis(st.hello.resume_window_ms))
    }

    /// The connection dropped: requests in flight fail with `ConnectionLost`
    /// (idempotent commands wait to be sent again), new ones wait.
    fn connection_down(&self) {
        let lost: Vec<mpsc::UnboundedSender<Reply>> = {
            let mut st = lock(&self.state);
            st.up = false;
            st.resume = None;
            st.downloads.clear();
            let mut lost = Vec::new();
            st.pending.retain(|_, entry| {
                if entry.resend.is_some() {
                    true
                } else {
                    lost.push(entry.tx.clone());
                    false
                }
            });
            lost
        };
        for tx in lost {
            let _ = tx.send(Reply::Lost);
        }
        self.conn_changes.send_modify(|n| *n += 1);
    }

    /// Reconnects with backoff until a new connection resumes the session (its
    /// [`Live`]) or the window passes or the client closes (`None`; the client
    /// has ended then).
    async fn reconnect(self: &Arc<Self>, reason: CloseReason, window: Duration) -> Option<Live> {
        let dropped_at = Deadline::now();
        let mut closed = self.closed.subscribe();
        // A server that said when to come back is not tried before then.
        let mut at_least = reason.retry_after().unwrap_or(Duration::ZERO);
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let Some(delay) = next_delay(
                &self.options.reconnect,
                attempt,
                dropped_at.elapsed(),
                window,
                at_least,
                random_u64(),
            ) else {
                warn!(attempts = attempt - 1, "the resume window has passed");
                self.shutdown(reason);
                return None;
            };
            let _ = self.events.send(ConnectionEvent::Reconnecting {
                attempt,
                delay,
                reason: reason.clone(),
            });
            debug!(attempt, ?delay, "reconnecting");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = closed.wait_for(Option::is_some) => return None,
            }
            let left = window.saturating_sub(dropped_at.elapsed());
            if left.is_zero() {
                continue; // `next_delay` ends it
            }
            let (resume, listed) = self.resume_option();
            let mut options = self.options.clone();
            options.handshake_timeout = options.handshake_timeout.min(left);
            let opened = tokio::select! {
                opened = crate::client::open(&self.url, &options, Some(resume)) => opened,
                _ = closed.wait_for(Option::is_some) => return None,
            };
            match opened {
                Ok((connected, hello, _)) => return Some(self.install(connected, hello, listed)),
                Err(e) => {
                    debug!(attempt, error = %e, "reconnect attempt failed");
                    if let Some(final_reason) = refused_for_good(&e) {
                        warn!(error = %e, "the server refused the reconnect");
                        self.shutdown(final_reason);
                        return None;
                    }
                    at_least = e.retry_after().unwrap_or(Duration::ZERO);
                }
            }
        }
    }

    /// The hello option that resumes this session: the token and, per joined
    /// room, the last sequence number applied.
    fn resume_option(&self) -> (HelloOption, Vec<(RoomSlot, String)>) {
        let (token, rooms) = {
            let st = lock(&self.state);
            (
                st.hello.resume_token.clone(),
                st.rooms.values().cloned().collect::<Vec<_>>(),
            )
        };
        let max = self.hello.limits.max_rooms_per_session as usize;
        let listed: Vec<(ResumeRoom, String)> = rooms
            .iter()
            .take(max)
            .map(|r| {
                let last_seq = lock(&r.inner).replica.last_seq();
                (
                    ResumeRoom {
                        room: r.slot,
                        last_seq,
                    },
                    r.id.clone(),
                )
            })
            .collect();
        let names = listed.iter().map(|(r, id)| (r.room, id.clone())).collect();
        let rooms = listed.into_iter().map(|(r, _)| r).collect();
        (HelloOption::Resume { token, rooms }, names)
    }

    /// Makes a freshly resumed connection the current one.
    fn install(
        &self,
        connected: Connected,
        hello: ServerHello,
        listed: Vec<(RoomSlot, String)>,
    ) -> Live {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut live = make_live(generation, connected, self.options.write_queue);
        let transport = live.conn.link.kind();
        // A barrier: the server answers it only after the resume is done.
        let barrier = self.clock.now_us();
        let _ = live
            .conn
            .writer
            .try_send(OutMessage::encode(&ClientMessage::Ping {
                client_time: barrier,
            }));
        {
            let mut st = lock(&self.state);
            self.ticks_dropped_before
                .fetch_add(st.conn.link.outgoing_ticks_dropped(), Ordering::Relaxed);
            info!(
                session_id = hello.session_id,
                transport = %transport,
                rooms = listed.len(),
                "reconnected; resuming"
            );
            st.hello = hello;
            st.conn = Arc::clone(&live.conn);
            st.up = true;
            // Rooms dropped while reconnecting are not waited for.
            let waiting: Vec<(RoomSlot, String)> = listed
                .into_iter()
                .filter(|(slot, _)| st.rooms.contains_key(slot))
                .collect();
            st.resume = Some(ResumeProgress {
                waiting,
                outcomes: Vec::new(),
                session_resumed: true,
                barrier,
                barrier_seen: false,
                deadline: Deadline::now() + self.options.request_timeout,
                transport,
            });
            for entry in st.pending.values_mut() {
                if let Some(message) = &entry.resend
                    && entry.generation < generation
                {
                    entry.generation = generation;
                    live.resend.push(message.clone());
                }
            }
        }
        self.conn_changes.send_modify(|n| *n += 1);
        live
    }

    // ---- resume outcomes -----------------------------------------------------

    fn on_resumed(&self, slot: RoomSlot, member: MemberId, snapshot: Option<RoomSnapshot>) {
        let Some(room) = self.room(slot) else {
            // A room this client left (or gave up) while reconnecting, or
            // joined by a request lost in the drop: leave it.
            debug!(
                room = slot.0,
                "resumed a room this client does not have; leaving it"
            );
            self.send_nowait(&ClientMessage::Leave {
                request_id: self.next_id(),
                room: slot,
            });
            return;
        };
        if room.me() != member {
            warn!(
                room = slot.0,
                was = room.me().0,
                now = member.0,
                "resumed as another member"
            );
            room.me.store(member.0, Ordering::Relaxed);
        }
        let outcome = {
            let mut inner = lock(&room.inner);
            match snapshot {
                Some(snapshot) => {
                    let event = inner.replica.replace(snapshot);
                    inner.publish(event);
                    RoomResume::Snapshot
                }
                None => {
                    let since = inner.replica.last_seq();
                    RoomResume::Replayed {
                        since,
                        until: since,
                    }
                }
            }
        };
        debug!(room = slot.0, ?outcome, "room resumed");
        self.resume_answered(slot, outcome);
    }

    fn on_resume_lost(&self, slot: RoomSlot, code: ErrorCode) {
        if let Some(room) = self.room(slot) {
            warn!(room = slot.0, code = %code, "the room could not be resumed");
            self.detach_room(&room);
        }
        self.resume_answered(slot, RoomResume::Lost(code));
    }

    /// Records one room's outcome; completes the resume when nothing is left
    /// and the barrier pong has come (every replay is in by then).
    fn resume_answered(&self, slot: RoomSlot, outcome: RoomResume) {
        let done = {
            let mut st = lock(&self.state);
            let Some(progress) = st.resume.as_mut() else {
                return;
            };
            let Some(i) = progress.waiting.iter().position(|(s, _)| *s == slot) else {
                return;
            };
            let (slot, room_id) = progress.waiting.remove(i);
            progress.outcomes.push(ResumedRoom {
                room_id,
                slot,
                outcome,
            });
            if progress.waiting.is_empty() && progress.barrier_seen {
                st.resume.take()
            } else {
                None
            }
        };
        if let Some(progress) = done {
            self.resume_complete(progress);
        }
    }

    /// `ResumeFailed`: the server no longer knows the session; every room is lost.
    fn on_resume_failed(&self) {
        let (progress, rooms) = {
            let mut st = lock(&self.state);
            let Some(mut progress) = st.resume.take() else {
                return;
            };
            progress.session_resumed = false;
            let mut rooms = Vec::new();
            for (slot, room_id) in progress.waiting.drain(..) {
                if let Some(room) = st.rooms.remove(&slot) {
                    rooms.push(room);
                }
                progress.outcomes.push(ResumedRoom {
                    room_id,
                    slot,
                    outcome: RoomResume::Lost(ErrorCode::ResumeFailed),
                });
            }
            (progress, rooms)
        };
        warn!("the server could not resume the session; every room is lost");
        for room in rooms {
            room.detach();
        }
        self.resume_complete(progress);
    }

    /// The barrier pong: the server's resume is done.
    fn on_barrier(&self, t0: u64) {
        let done = {
            let mut st = lock(&self.state);
            match st.resume.as_mut() {
                Some(progress) if progress.barrier == t0 => {
                    progress.barrier_seen = true;
                    if progress.waiting.is_empty() {
                        st.resume.take()
                    } else {
                        None
                    }
                }
                _ => None,
            }
        };
        if let Some(progress) = done {
            self.resume_complete(progress);
        }
    }

    /// No answer for some rooms in time: leave them.
    fn resume_timed_out(&self) {
        let (progress, rooms) = {
            let mut st = lock(&self.state);
            let Some(mut progress) = st.resume.take() else {
                return;
            };
            let mut rooms = Vec::new();
            for (slot, room_id) in progress.waiting.drain(..) {
                if let Some(room) = st.rooms.get(&slot) {
                    rooms.push(Arc::clone(room));
                }
                progress.outcomes.push(ResumedRoom {
                    room_id,
                    slot,
                    outcome: RoomResume::Unanswered,
                });
            }
            (progress, rooms)
        };
        for room in rooms {
            warn!(
                room = room.slot.0,
                "no resume answer for the room; leaving it"
            );
            self.abandon_room(&room);
        }
        self.resume_complete(progress);
    }

    fn resume_complete(&self, mut progress: ResumeProgress) {
        // How far each replay went: the server sent it whole before its
        // answer to the barrier.
        for room in &mut progress.outcomes {
            if let RoomResume::Replayed { until, .. } = &mut room.outcome
                && let Some(shared) = self.room(room.slot)
            {
                *until = lock(&shared.inner).replica.last_seq();
            }
        }
        info!(
            session_resumed = progress.session_resumed,
            rooms = progress.outcomes.len(),
            "resumed"
        );
        let _ = self.events.send(ConnectionEvent::Resumed {
            transport: progress.transport,
            session_resumed: progress.session_resumed,
            rooms: progress.outcomes,
        });
    }

    // ---- reader --------------------------------------------------------------

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
            ServerMessage::DirectMessage {
                room,
                from,
                kind,
                payload,
            } => self.on_message(room, from, Delivery::Direct, kind, payload),
            ServerMessage::BroadcastMessage {
                room,
                from,
                kind,
                payload,
            } => self.on_message(room, from, Delivery::Broadcast, kind, payload),
            ServerMessage::Snapshot {
                request_id,
                snapshot,
            } => self.on_snapshot(request_id, snapshot),
            ServerMessage::IceServers {
                request_id,
                servers,
                expires,
            } => self.reply(
                request_id,
                Reply::IceServers(IceServers { servers, expires }),
            ),
            ServerMessage::Resumed {
                room,
                member,
                snapshot,
            } => self.on_resumed(room, member, snapshot),
            ServerMessage::ResumeLost { room, code } => self.on_resume_lost(room, code),
            ServerMessage::PackUploadReady {
                request_id,
                hash,
                offset,
            } => self.reply(request_id, Reply::PackUploadReady { hash, offset }),
            event @ (ServerMessage::MemberJoined { .. }
            | ServerMessage::MemberLeft { .. }
            | ServerMessage::StateChanged { .. }
            | ServerMessage::CommandEvent { .. }
            | ServerMessage::RoleChanged { .. }
            | ServerMessage::MemberKicked { .. }
            | ServerMessage::RoomClosed { .. }
            | ServerMessage::PresenceChanged { .. }
            | ServerMessage::TimelineChanged { .. }
            | ServerMessage::PackAvailable { .. }) => self.on_room_event(event),
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

    /// A requested snapshot replaces the replica here, in stream order, so no
    /// event after it is lost; the requester gets a view.
    fn on_snapshot(&self, request_id: RequestId, snapshot: RoomSnapshot) {
        let view = match self.room(snapshot.room) {
            Some(room) => {
                let mut inner = lock(&room.inner);
                if snapshot.last_seq < inner.replica.last_seq() {
                    debug!(
                        room = room.slot.0,
                        "ignoring a snapshot older than the replica"
                    );
                } else {
                    let event = inner.replica.replace(snapshot);
                    inner.publish(event);
                }
                inner.replica.view()
            }
            None => RoomReplica::from_snapshot(snapshot).view(),
        };
        self.reply(request_id, Reply::Snapshot(Box::new(view)));
    }

    fn on_room_event(&self, msg: ServerMessage) {
        let Some(slot) = event_room(&msg) else { return };
        let Some(room) = self.room(slot) else {
            debug!(room = slot.0, "event for a room not joined (any more)");
            return;
        };
        let now = self.server_time();
        let removed = {
            let mut inner = lock(&room.inner);
            match inner.replica.apply(msg, now) {
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

    fn on_message(
        &self,
        slot: RoomSlot,
        from: MemberId,
        delivery: Delivery,
        kind: String,
        payload: Vec<u8>,
    ) {
        let Some(room) = self.room(slot) else {
            debug!(room = slot.0, "message for a room not joined");
            return;
        };
        if let Some(tx) = &*lock(&room.messages) {
            let _ = tx.send(RoomMessage {
                from,
                delivery,
                kind,
                payload: Bytes::from(payload),
            });
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
        self.on_barrier(t0);
    }

    fn on_error(&self, frame: ErrorFrame) {
        match frame.request_id {
            Some(id) => self.reply(id, Reply::Error(frame)),
            None => {
                if frame.code == ErrorCode::ResumeFailed {
                    self.on_resume_failed();
                }
                warn!(error = %frame, "server error");
                *lock(&self.last_error) = Some(frame.clone());
                let _ = self.errors.send(frame);
            }
        }
    }

    /// Hands a reply to the pending request; a reply nobody waits for is dropped.
    fn reply(&self, id: RequestId, reply: Reply) {
        let tx = lock(&self.state).pending.get(&id).map(|e| e.tx.clone());
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
        if tick.sender == room.me() || lock(&room.inner).replica.member(tick.sender).is_none() {
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

    // ---- packs ---------------------------------------------------------------

    /// Where the content of fetch `request_id` goes, if it still waits.
    fn download_sink(&self, request_id: RequestId) -> Option<mpsc::UnboundedSender<PackPiece>> {
        lock(&self.state).downloads.get(&request_id).cloned()
    }

    /// One WebSocket pack-lane message: a `Download` header and a chunk.
    fn on_pack_message(&self, message: Bytes) {
        match split_pack_message(&message) {
            Ok((
                PackStreamHeader::Download {
                    request_id,
                    hash,
                    offset,
                    size,
                },
                chunk,
            )) => match self.download_sink(request_id) {
                Some(sink) => {
                    let _ = sink.send(PackPiece::Data {
                        hash,
                        offset,
                        size,
                        bytes: message.slice_ref(chunk),
                    });
                }
                None => trace!(request_id, "pack content for no fetch"),
            },
            Ok((PackStreamHeader::Upload { .. }, _)) => {
                debug!("ignoring an upload header from the server");
            }
            Err(e) => debug!(error = %e, "ignoring a bad pack message"),
        }
    }

    /// A pack stream the server opened (WebTransport): its `Download` header,
    /// then the content to the stream's end, to the fetch that asked for it.
    async fn receive_pack_stream(self: Arc<Self>, mut stream: wtransport::RecvStream) {
        const STOP: wtransport::VarInt = wtransport::VarInt::from_u32(0);
        let mut buf = vec![0u8; 16 * 1024];
        let mut head = Vec::new();
        let (request_id, hash, mut offset, size, rest) = loop {
            match stream.read(&mut buf).await {
                Ok(Some(n)) => head.extend_from_slice(&buf[..n]),
                Ok(None) => return debug!("a pack stream ended before its header"),
                Err(e) => return debug!(error = %e, "a pack stream failed before its header"),
            }
            match split_pack_message(&head) {
                Ok((
                    PackStreamHeader::Download {
                        request_id,
                        hash,
                        offset,
                        size,
                    },
                    rest,
                )) => break (request_id, hash, offset, size, rest.to_vec()),
                Ok((PackStreamHeader::Upload { .. }, _)) => {
                    debug!("ignoring a pack stream with an upload header");
                    return stream.stop(STOP);
                }
                // Not all of the header is here yet.
                Err(_) if head.len() <= MAX_PACK_HEADER_BYTES + MAX_VARINT_LEN => {}
                Err(e) => {
                    debug!(error = %e, "ignoring a pack stream with a bad header");
                    return stream.stop(STOP);
                }
            }
        };
        let Some(sink) = self.download_sink(request_id) else {
            trace!(request_id, "pack stream for no fetch");
            return stream.stop(STOP);
        };
        // The first piece may be empty (nothing left from `offset`): it still
        // tells the fetch the size, so it can complete.
        let mut piece = Bytes::from(rest);
        loop {
            let len = piece.len() as u64;
            let data = PackPiece::Data {
                hash: hash.clone(),
                offset,
                size,
                bytes: piece,
            };
            if sink.send(data).is_err() {
                return stream.stop(STOP);
            }
            offset = offset.saturating_add(len);
            match stream.read(&mut buf).await {
                Ok(Some(n)) => piece = Bytes::copy_from_slice(&buf[..n]),
                Ok(None) => {
                    let _ = sink.send(PackPiece::End);
                    return;
                }
                Err(e) => {
                    let _ = sink.send(PackPiece::Failed(e.to_string()));
                    return;
                }
            }
        }
    }

    // ---- keep-alive and clock --------------------------------------------------

    /// Queues a message on the current connection, waiting for room in the
    /// queue; false when not connected.
    async fn send_queued(&self, msg: &ClientMessage) -> bool {
        let Some(conn) = self.up_conn() else {
            return false;
        };
        conn.writer.send(OutMessage::encode(msg)).await.is_ok()
    }

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
            let ping = ClientMessage::Ping {
                client_time: self.clock.now_us(),
            };
            match tokio::time::timeout(per_ping, self.send_queued(&ping)).await {
                Ok(true) => {}
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

    /// One ping every `ping_interval` while connected: the server hears this
    /// client (hosts are not seen as away), and each pong is a clock sample.
    async fn run_keepalive(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        let period = self.options.ping_interval;
        let mut ticker = tokio::time::interval_at(Deadline::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = closed.wait_for(Option::is_some) => return,
            }
            self.send_nowait(&ClientMessage::Ping {
                client_time: self.clock.now_us(),
            });
        }
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

/// A request in flight: its replies, until dropped (which unregisters it).
pub(crate) struct Pending {
    shared: Arc<Shared>,
    pub(crate) id: RequestId,
    rx: mpsc::UnboundedReceiver<Reply>,
    /// The connection the request went out on.
    pub(crate) conn: Arc<Conn>,
}

impl Pending {
    /// The next reply, until `deadline`. [`Reply::Lost`] comes out as
    /// [`RequestError::ConnectionLost`].
    pub(crate) async fn recv(&mut self, deadline: Deadline) -> Result<Reply, RequestError> {
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Ok(Some(Reply::Lost)) => Err(RequestError::ConnectionLost),
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(RequestError::Closed(self.shared.closed_error())),
            Err(_) => Err(RequestError::Timeout),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.pending.remove(&self.id);
        st.downloads.remove(&self.id);
    }
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until(deadline: Option<Deadline>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// When a reconnect attempt failed in a way that trying again cannot fix
/// (the server refuses this client or its version), the reason to end with.
fn refused_for_good(error: &ConnectError) -> Option<CloseReason> {
    match error {
        ConnectError::VersionMismatch { .. } | ConnectError::Url(_) | ConnectError::Tls(_) => {
            Some(CloseReason::Protocol(error.to_string()))
        }
        ConnectError::Server(frame) if frame.code == ErrorCode::Unauthorized => {
            Some(CloseReason::Server(frame.clone()))
        }
        ConnectError::AllTransportsFailed {
            webtransport,
            websocket,
        } => refused_for_good(websocket).or_else(|| refused_for_good(webtransport)),
        _ => None,
    }
}

/// `server - local` in µs, saturating.
fn saturating_offset(server_us: u64, local_us: u64) -> i64 {
    let d = i128::from(server_us) - i128::from(local_us);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}
