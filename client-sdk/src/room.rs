//! The [`Room`] handle: reads of the live replica (members and presence,
//! state, timelines, packs, chat), reliable requests (state, commands,
//! moderation, timelines, direct and broadcast messages, snapshots, packs,
//! leave), event subscriptions and unreliable ticks.

use crate::client::ClientHandle;
use crate::driver::{Reply, RoomShared, ended_receiver, lock};
use crate::error::{RequestError, TickError};
use crate::pack;
use crate::replica::{CommandEvent, RoomEvent, RoomView, StateValue};
use crate::timeline::{TimelineOptions, op_name, position_at};
use bytes::Bytes;
use chorus_protocol::{
    Action, Audience, ChatEntry, ClientMessage, Datagram, ErrorCode, FailoverMode, IceServer,
    MemberId, MemberInfo, PackInfo, PermissionPolicy, Role, RoomKind, RoomSlot, Seq, ServerTime,
    Tick, TimelineOp, TimelineState, encode_datagram,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::trace;

/// The server's acknowledgement of a state write or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateAck {
    /// The room's state version after the write (the key's new version).
    pub version: u64,
    /// The room sequence number of the resulting `StateChanged` event.
    pub seq: Seq,
}

/// The server's acknowledgement of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandAck {
    /// The command's room sequence number (the original one for a duplicate).
    pub seq: Seq,
    /// The idempotency key had been used before: nothing was broadcast this time.
    pub duplicate: bool,
}

/// A tick from another member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickEvent {
    /// Who sent it.
    pub sender: MemberId,
    /// The sender's tick sequence number (wraps at 2^32; compare with
    /// `a.wrapping_sub(b) as i32`).
    pub seq: u32,
    /// The application payload.
    pub payload: Bytes,
    /// When this client received it.
    pub received_at: Instant,
}

/// Ticks from the room's other members, newest-wins.
///
/// Bounded: a receiver that falls behind loses the *oldest* ticks and keeps going
/// with the newest; [`dropped`](Self::dropped) counts what it lost. The stream
/// ends (`recv` returns `None`) when the room is left or the connection ends.
#[derive(Debug)]
pub struct TickReceiver {
    rx: broadcast::Receiver<TickEvent>,
    dropped: u64,
}

impl TickReceiver {
    /// The next tick, skipping over any lost to lag; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<TickEvent> {
        loop {
            match self.rx.recv().await {
                Ok(tick) => return Some(tick),
                Err(broadcast::error::RecvError::Lagged(n)) => self.dropped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A tick if one is waiting, without blocking (skipping lost ones); `None` when
    /// none is waiting or the stream has ended.
    pub fn try_recv(&mut self) -> Option<TickEvent> {
        loop {
            match self.rx.try_recv() {
                Ok(tick) => return Some(tick),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.dropped += n,
                Err(_) => return None,
            }
        }
    }

    /// Ticks this receiver lost because it fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// How a [`RoomMessage`] was addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// To this member only ([`Room::send_direct`]).
    Direct,
    /// To several members ([`Room::broadcast`]).
    Broadcast,
}

/// A direct or broadcast message from another member: reliable and in order
/// with the sender's other messages, but not sequenced with the room's events
/// and not stored (a member who joins later never sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    /// Who sent it.
    pub from: MemberId,
    /// Direct or broadcast.
    pub delivery: Delivery,
    /// Application-defined kind (e.g. `"offer"` for WebRTC signalling).
    pub kind: String,
    /// Application-defined payload.
    pub payload: Bytes,
}

/// Direct and broadcast messages to this client in one room
/// ([`Room::messages`]).
///
/// Bounded ([`ConnectOptions::message_capacity`](crate::ConnectOptions::message_capacity)):
/// a receiver that falls behind loses the *oldest* messages and keeps going;
/// [`dropped`](Self::dropped) counts what it lost. The stream ends (`recv`
/// returns `None`) when the room is left or the connection ends.
#[derive(Debug)]
pub struct MessageReceiver {
    rx: broadcast::Receiver<RoomMessage>,
    dropped: u64,
}

impl MessageReceiver {
    /// The next message, skipping over any lost to lag; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<RoomMessage> {
        loop {
            match self.rx.recv().await {
                Ok(message) => return Some(message),
                Err(broadcast::error::RecvError::Lagged(n)) => self.dropped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A message if one is waiting, without blocking; `None` when none is
    /// waiting or the stream has ended.
    pub fn try_recv(&mut self) -> Option<RoomMessage> {
        loop {
            match self.rx.try_recv() {
                Ok(message) => return Some(message),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.dropped += n,
                Err(_) => return None,
            }
        }
    }

    /// Messages this receiver lost because it fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// STUN and TURN servers for WebRTC ([`Room::ice_servers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServers {
    /// The servers, in the shape of `RTCIceServer` (`urls`, `username`,
    /// `credential`).
    pub servers: Vec<IceServer>,
    /// When the TURN credentials stop working (`ServerTime(0)` without TURN).
    pub expires: ServerTime,
}

/// A joined room. Cheap to clone; all clones share one membership.
///
/// Reads ([`members`](Self::members), [`state`](Self::state), …) come from the
/// local replica, which the connection's driver updates from the room's events in
/// sequence order, whether or not anyone reads the event streams.
///
/// When the last clone is dropped without calling [`leave`](Self::leave), the
/// client leaves the room in the background. A room also stops being joined when
/// the server removes this member ([`RoomEvent::MemberLeft`] or
/// [`RoomEvent::MemberKicked`] naming [`me`](Self::me)), the room is closed
/// ([`RoomEvent::RoomClosed`]), a resume cannot bring it back
/// ([`ConnectionEvent::Resumed`](crate::ConnectionEvent::Resumed) says
/// [`RoomResume::Lost`](crate::RoomResume::Lost)) or the connection ends:
/// requests then fail with [`RequestError::NotJoined`] or
/// [`RequestError::Closed`], and the event stream delivers that last event
/// and then ends, as do the tick and message streams.
///
/// A dropped connection that the client resumes does not end the room: the
/// same handle keeps working on the new connection (same slot, same member
/// id), the missed events arrive as usual, and ticks flow again.
#[derive(Clone)]
pub struct Room {
    handle: Arc<RoomHandle>,
}

struct RoomHandle {
    client: Arc<ClientHandle>,
    room: Arc<RoomShared>,
}

impl Drop for RoomHandle {
    fn drop(&mut self) {
        self.client.shared.abandon_room(&self.room);
    }
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("id", &self.handle.room.id)
            .field("slot", &self.handle.room.slot)
            .field("me", &self.handle.room.me())
            .field("joined", &self.is_joined())
            .finish()
    }
}

impl Room {
    pub(crate) fn new(client: Arc<ClientHandle>, room: Arc<RoomShared>) -> Room {
        Room {
            handle: Arc::new(RoomHandle { client, room }),
        }
    }

    fn room(&self) -> &RoomShared {
        &self.handle.room
    }

    /// The client (connection) this room belongs to: its clock
    /// ([`Client::server_time`](crate::Client::server_time)), connection
    /// events, and so on.
    pub fn client(&self) -> crate::Client {
        crate::Client {
            handle: Arc::clone(&self.handle.client),
        }
    }

    /// The room's string id.
    pub fn id(&self) -> &str {
        &self.room().id
    }

    /// The room's numeric slot on this server (used in ticks).
    pub fn slot(&self) -> RoomSlot {
        self.room().slot
    }

    /// This client's member id in the room.
    pub fn me(&self) -> MemberId {
        self.room().me()
    }

    /// What the room keeps: [`RoomKind::Relay`] rooms store no state,
    /// commands, timelines or packs (such requests fail with
    /// [`ErrorCode::NotStored`]) and only relay ticks, direct and broadcast
    /// messages.
    pub fn kind(&self) -> RoomKind {
        lock(&self.room().inner).replica.kind()
    }

    /// What happens when the room's host goes away.
    pub fn failover(&self) -> FailoverMode {
        lock(&self.room().inner).replica.failover()
    }

    /// This client's role in the room (it follows [`RoomEvent::RoleChanged`]).
    pub fn role(&self) -> Role {
        lock(&self.room().inner).replica.role()
    }

    /// The room's own permission rules, as the join snapshot gave them (the
    /// defaults, [`PermissionPolicy::default_rules`], apply where none matches).
    pub fn policy(&self) -> PermissionPolicy {
        lock(&self.room().inner).replica.policy().clone()
    }

    /// Whether this client may do `action` on `target` now: the room's
    /// [`policy`](Self::policy) applied to this client's current
    /// [`role`](Self::role), by the same rule as the server
    /// ([`PermissionPolicy::allows`]). `target` is the state key for
    /// [`Action::SetState`], the command kind for [`Action::SendCommands`], and
    /// `""` for other actions. `false` once the room is no longer joined.
    ///
    /// A prediction for the user interface, not a guarantee: [`kick`](Self::kick)
    /// and [`set_role`](Self::set_role) also depend on the other member's rank
    /// ([`Role::rank`]), and a role can change before a request arrives.
    ///
    /// ```no_run
    /// # fn demo(room: &chorus_client::Room) {
    /// use chorus_client::Action;
    /// let may_edit_title = room.can(Action::SetState, "title");
    /// let may_moderate = room.can(Action::Kick, "");
    /// # }
    /// ```
    pub fn can(&self, action: Action, target: &str) -> bool {
        self.is_joined() && lock(&self.room().inner).replica.can(action, target)
    }

    /// Whether the room is still joined (not left, removed, kicked or closed,
    /// connection alive).
    pub fn is_joined(&self) -> bool {
        self.room().joined.load(Ordering::SeqCst)
    }

    /// Members in join order, this client included, each with its role and
    /// presence ([`Presence`](crate::Presence): online, reconnecting, away).
    pub fn members(&self) -> Vec<MemberInfo> {
        lock(&self.room().inner).replica.members().to_vec()
    }

    /// One member, if currently in the room.
    pub fn member(&self, id: MemberId) -> Option<MemberInfo> {
        lock(&self.room().inner).replica.member(id).cloned()
    }

    /// One state key's current value.
    pub fn state(&self, key: &str) -> Option<StateValue> {
        lock(&self.room().inner).replica.state(key).cloned()
    }

    /// All state, by key.
    pub fn state_snapshot(&self) -> BTreeMap<String, StateValue> {
        lock(&self.room().inner).replica.state_map().clone()
    }

    /// The state map's version (the highest key version written).
    pub fn state_version(&self) -> u64 {
        lock(&self.room().inner).replica.state_version()
    }

    /// The sequence number of the last event applied to the replica.
    pub fn last_seq(&self) -> Seq {
        lock(&self.room().inner).replica.last_seq()
    }

    /// A consistent copy of members, state, timelines, packs and chat at one
    /// sequence number.
    pub fn view(&self) -> RoomView {
        lock(&self.room().inner).replica.view()
    }

    /// Packs available in the room, oldest first.
    pub fn packs(&self) -> Vec<PackInfo> {
        lock(&self.room().inner).replica.packs().to_vec()
    }

    /// The pack with this SHA-256, if available in the room.
    pub fn pack(&self, hash: &[u8]) -> Option<PackInfo> {
        lock(&self.room().inner).replica.pack(hash).cloned()
    }

    /// The last chat messages (commands of kind `"chat"`), oldest first: the
    /// history the join snapshot held, then those received since (see
    /// [`RoomReplica::chat`](crate::replica::RoomReplica::chat)).
    pub fn chat(&self) -> Vec<ChatEntry> {
        lock(&self.room().inner).replica.chat().cloned().collect()
    }

    // ---- timelines -----------------------------------------------------------

    /// The server time now, by the client's clock estimate.
    fn now(&self) -> ServerTime {
        self.handle.client.shared.server_time()
    }

    /// The state of timeline `name` in force now (by
    /// [`Client::server_time`](crate::Client::server_time)): a change
    /// scheduled for later is not in force before its `anchor_time` (see
    /// [`crate::timeline`]). `None` when the room has no such timeline.
    pub fn timeline(&self, name: &str) -> Option<TimelineState> {
        self.timeline_at(name, self.now())
    }

    /// The state of timeline `name` in force at server time `at`.
    pub fn timeline_at(&self, name: &str, at: ServerTime) -> Option<TimelineState> {
        lock(&self.room().inner)
            .replica
            .timeline_at(name, at)
            .cloned()
    }

    /// Every timeline's state in force now, by name.
    pub fn timelines(&self) -> BTreeMap<String, TimelineState> {
        let now = self.now();
        let inner = lock(&self.room().inner);
        let replica = &inner.replica;
        replica
            .timeline_names()
            .filter_map(|name| {
                replica
                    .timeline_at(name, now)
                    .map(|t| (name.to_owned(), t.clone()))
            })
            .collect()
    }

    /// Timeline `name`'s position now, computed locally from the synced clock
    /// (no request): `anchor_position + (now − anchor_time) × rate` while
    /// playing. Its accuracy is the clock's (see
    /// [`Client::server_time`](crate::Client::server_time)).
    ///
    /// ```no_run
    /// # async fn demo(room: chorus_client::Room) -> Result<(), chorus_client::RequestError> {
    /// use chorus_client::TimelineOptions;
    /// use std::time::Duration;
    ///
    /// room.seek("song", Duration::from_secs(30), TimelineOptions::now()).await?;
    /// room.play("song", TimelineOptions::now()).await?;
    /// if let Some(position) = room.timeline_position("song") {
    ///     println!("{:.3} s in", position.as_secs_f64());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn timeline_position(&self, name: &str) -> Option<Duration> {
        self.timeline_position_at(name, self.now())
    }

    /// Timeline `name`'s position at server time `at`.
    pub fn timeline_position_at(&self, name: &str, at: ServerTime) -> Option<Duration> {
        self.timeline_at(name, at)
            .map(|state| position_at(&state, at))
    }

    /// The sequence number of timeline `name`'s last change (a scheduled one
    /// included), or `Seq(0)` when it was never changed: the value for
    /// [`TimelineOptions::expected_seq`].
    pub fn timeline_seq(&self, name: &str) -> Seq {
        lock(&self.room().inner)
            .replica
            .timeline_schedule(name)
            .map_or(Seq(0), |t| t.latest().seq)
    }

    /// Applies `op` to timeline `name` (created on first use), at once or at
    /// `options.at`, only if `options.expected_seq` matches. Every member
    /// receives [`RoomEvent::TimelineChanged`] (this client before this
    /// resolves); resolves with its sequence number.
    ///
    /// Needs [`Action::ControlTimeline`] (hosts and editors, by default).
    /// Refusals: [`ErrorCode::Forbidden`]; [`ErrorCode::Conflict`] when
    /// `expected_seq` is not the last change ([`RequestError::conflict_seq`]
    /// gives it); [`ErrorCode::LimitExceeded`] for a time too far ahead or one
    /// timeline too many; [`ErrorCode::NotStored`] in a relay room.
    pub async fn timeline_op(
        &self,
        name: &str,
        op: TimelineOp,
        options: TimelineOptions,
    ) -> Result<Seq, RequestError> {
        let room = self.slot();
        trace!(room = room.0, name, op = op_name(&op), "timeline");
        self.ack_request(|request_id| ClientMessage::Timeline {
            request_id,
            room,
            name: name.to_owned(),
            op,
            at: options.at,
            expected_seq: options.expected_seq,
        })
        .await
    }

    /// Starts (or resumes) playing timeline `name` from its position. See
    /// [`timeline_op`](Self::timeline_op).
    pub async fn play(&self, name: &str, options: TimelineOptions) -> Result<Seq, RequestError> {
        self.timeline_op(name, TimelineOp::Play, options).await
    }

    /// Pauses timeline `name` at its position. See [`timeline_op`](Self::timeline_op).
    pub async fn pause(&self, name: &str, options: TimelineOptions) -> Result<Seq, RequestError> {
        self.timeline_op(name, TimelineOp::Pause, options).await
    }

    /// Moves timeline `name` to `position` (playing or not, as it was). See
    /// [`timeline_op`](Self::timeline_op).
    pub async fn seek(
        &self,
        name: &str,
        position: Duration,
        options: TimelineOptions,
    ) -> Result<Seq, RequestError> {
        let position_us = u64::try_from(position.as_micros()).unwrap_or(u64::MAX);
        self.timeline_op(name, TimelineOp::Seek { position_us }, options)
            .await
    }

    /// Sets timeline `name`'s playback rate in parts per million
    /// (`1_000_000` = normal speed, [`NORMAL_RATE_PPM`](crate::timeline::NORMAL_RATE_PPM);
    /// 0 is refused: pause instead). See [`timeline_op`](Self::timeline_op).
    pub async fn set_rate(
        &self,
        name: &str,
        rate_ppm: u32,
        options: TimelineOptions,
    ) -> Result<Seq, RequestError> {
        self.timeline_op(name, TimelineOp::SetRate { rate_ppm }, options)
            .await
    }

    /// Sets (or clears) timeline `name`'s tempo in milli-beats per minute
    /// (`120_000` = 120 BPM); the position is unaffected. See
    /// [`timeline_op`](Self::timeline_op).
    pub async fn set_tempo(
        &self,
        name: &str,
        tempo_mbpm: Option<u32>,
        options: TimelineOptions,
    ) -> Result<Seq, RequestError> {
        self.timeline_op(name, TimelineOp::SetTempo { tempo_mbpm }, options)
            .await
    }

    /// Room events from now on, in sequence order.
    ///
    /// Bounded ([`ConnectOptions::event_capacity`](crate::ConnectOptions::event_capacity)):
    /// a receiver that falls behind gets `RecvError::Lagged(n)` and continues after
    /// the lost events. The replica (members, state) stays correct regardless, since
    /// the driver maintains it. The stream ends (`RecvError::Closed`) when the room
    /// is left or the connection ends. Use [`subscribe`](Self::subscribe) to get a
    /// view and the events that follow it without a gap.
    pub fn events(&self) -> broadcast::Receiver<RoomEvent> {
        lock(&self.room().inner).subscribe_events()
    }

    /// A view of the replica and a receiver of exactly the events after it.
    pub fn subscribe(&self) -> (RoomView, broadcast::Receiver<RoomEvent>) {
        let inner = lock(&self.room().inner);
        (inner.replica.view(), inner.subscribe_events())
    }

    /// Only the command events (the sender's own included), same rules as
    /// [`events`](Self::events) but with a channel of their own, so `Lagged` counts
    /// commands only.
    pub fn commands(&self) -> broadcast::Receiver<CommandEvent> {
        lock(&self.room().inner).subscribe_commands()
    }

    /// Direct and broadcast messages to this client from now on (see
    /// [`MessageReceiver`]). They are not room events: they have no sequence
    /// number and a flood of them never makes [`events`](Self::events) lag.
    pub fn messages(&self) -> MessageReceiver {
        let rx = match &*lock(&self.room().messages) {
            Some(tx) => tx.subscribe(),
            None => ended_receiver(),
        };
        MessageReceiver { rx, dropped: 0 }
    }

    /// Ticks from the other members from now on (see [`TickReceiver`]).
    pub fn ticks(&self) -> TickReceiver {
        let rx = match &*lock(&self.room().ticks) {
            Some(tx) => tx.subscribe(),
            None => ended_receiver(),
        };
        TickReceiver { rx, dropped: 0 }
    }

    /// The largest tick payload that can be sent now: the server's
    /// `max_tick_payload_bytes`, or less if this connection's datagrams are smaller
    /// (WebTransport; on WebSocket ticks travel in-band and only the server's
    /// limit applies).
    pub fn max_tick_payload(&self) -> usize {
        let shared = &self.handle.client.shared;
        let limit = shared.hello.limits.max_tick_payload_bytes as usize;
        shared.max_tick_payload(limit)
    }

    /// Sends a tick to the room's other members: unreliable, unordered, never
    /// blocks. Returns the tick's sequence number: per room and client, starting at
    /// 0 and wrapping; a refused tick does not use one.
    ///
    /// On WebTransport the tick is a QUIC datagram. On WebSocket it waits in a
    /// one-tick slot per room until the socket can take it; a newer tick replaces
    /// one still waiting there (newest wins, counted by
    /// [`Client::outgoing_ticks_dropped`](crate::Client::outgoing_ticks_dropped)),
    /// so a slow socket never queues stale ticks.
    ///
    /// While the client reconnects the tick is not sent:
    /// [`TickError::Disconnected`].
    pub fn send_tick(&self, payload: &[u8]) -> Result<u32, TickError> {
        let shared = &self.handle.client.shared;
        if let Some(reason) = shared.close_reason() {
            return Err(TickError::Closed(reason));
        }
        if !self.is_joined() {
            return Err(TickError::NotJoined);
        }
        let max = shared.hello.limits.max_tick_payload_bytes as usize;
        if payload.len() > max {
            return Err(TickError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        let room = self.room();
        let mut seq = lock(&room.tick_seq);
        let bytes = encode_datagram(&Datagram::Tick(Tick {
            room: room.slot,
            sender: room.me(),
            seq: *seq,
            payload,
        }));
        shared.send_tick(room.slot, bytes)?;
        let sent = *seq;
        *seq = seq.wrapping_add(1);
        Ok(sent)
    }

    /// Sends a request for this room, failing fast when it is no longer joined.
    async fn request(
        &self,
        build: impl FnOnce(chorus_protocol::RequestId) -> ClientMessage,
    ) -> Result<Reply, RequestError> {
        self.check_joined()?;
        self.handle.client.shared.request(build).await
    }

    async fn state_request(
        &self,
        build: impl FnOnce(chorus_protocol::RequestId) -> ClientMessage,
    ) -> Result<StateAck, RequestError> {
        match self.request(build).await? {
            Reply::StateAck(ack) => Ok(ack),
            other => Err(other.into_error()),
        }
    }

    /// Sets a state key. When this resolves, the replica already holds the value
    /// (the server sends the requester its `StateChanged` before the ack).
    pub async fn set_state(
        &self,
        key: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<StateAck, RequestError> {
        self.write_state(key, value.as_ref(), None).await
    }

    /// Sets a state key only if its version is `if_version` (0: only if the key
    /// does not exist). On mismatch the error has code [`ErrorCode::Conflict`] and
    /// [`RequestError::conflict_version`] gives the current version.
    pub async fn set_state_if(
        &self,
        key: &str,
        value: impl AsRef<[u8]>,
        if_version: u64,
    ) -> Result<StateAck, RequestError> {
        self.write_state(key, value.as_ref(), Some(if_version))
            .await
    }

    async fn write_state(
        &self,
        key: &str,
        value: &[u8],
        if_version: Option<u64>,
    ) -> Result<StateAck, RequestError> {
        let room = self.slot();
        self.state_request(|request_id| ClientMessage::SetState {
            request_id,
            room,
            key: key.to_owned(),
            value: value.to_vec(),
            if_version,
        })
        .await
    }

    /// Deletes a state key.
    pub async fn delete_state(&self, key: &str) -> Result<StateAck, RequestError> {
        self.remove_state(key, None).await
    }

    /// Deletes a state key only if its version is `if_version`.
    pub async fn delete_state_if(
        &self,
        key: &str,
        if_version: u64,
    ) -> Result<StateAck, RequestError> {
        self.remove_state(key, Some(if_version)).await
    }

    async fn remove_state(
        &self,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<StateAck, RequestError> {
        let room = self.slot();
        self.state_request(|request_id| ClientMessage::DeleteState {
            request_id,
            room,
            key: key.to_owned(),
            if_version,
        })
        .await
    }

    /// Sends an application command; every member receives it as a
    /// [`CommandEvent`], this client included (before this resolves). With an
    /// idempotency key, a repeat returns the first result with `duplicate: true`
    /// and is not broadcast again.
    ///
    /// With an idempotency key a dropped connection does not fail the
    /// command: it is sent again once the session is resumed, and applied
    /// exactly once (the ack says `duplicate: true` if the first one had
    /// arrived). Without one it fails with [`RequestError::ConnectionLost`]:
    /// it may or may not have been applied. Commands of kind `"chat"` are the
    /// room's chat, kept as history ([`chat`](Self::chat)).
    pub async fn send_command(
        &self,
        kind: &str,
        payload: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<CommandAck, RequestError> {
        let room = self.slot();
        match self
            .request(|request_id| ClientMessage::Command {
                request_id,
                room,
                kind: kind.to_owned(),
                payload: payload.to_vec(),
                idempotency_key: idempotency_key.map(str::to_owned),
            })
            .await?
        {
            Reply::CommandAck(ack) => Ok(ack),
            other => Err(other.into_error()),
        }
    }

    /// Sends a request answered by `Ack` (kick, roles, password, close,
    /// timeline, direct, broadcast, delegate).
    async fn ack_request(
        &self,
        build: impl FnOnce(chorus_protocol::RequestId) -> ClientMessage,
    ) -> Result<Seq, RequestError> {
        match self.request(build).await? {
            Reply::Ack(seq) => Ok(seq),
            other => Err(other.into_error()),
        }
    }

    /// Removes `member` from the room; it cannot rejoin during the server's ban
    /// time (its joins fail with [`ErrorCode::Banned`], the detail saying how
    /// long: [`RequestError::retry_after`]). Every member, `member` included,
    /// receives [`RoomEvent::MemberKicked`] with `reason`.
    ///
    /// Resolves with the event's sequence number. The server sends an event
    /// before the `Ack` it causes (as for state writes and commands), so by then
    /// the replica no longer lists `member`.
    ///
    /// Needs [`Action::Kick`] (hosts, by default); nobody can kick itself or a
    /// member ranked above it ([`Role::rank`]). Otherwise the error is
    /// [`ErrorCode::Forbidden`].
    pub async fn kick(&self, member: MemberId, reason: &str) -> Result<Seq, RequestError> {
        let room = self.slot();
        self.ack_request(|request_id| ClientMessage::Kick {
            request_id,
            room,
            member,
            reason: reason.to_owned(),
        })
        .await
    }

    /// Gives `member` (this client too) a role. Every member receives
    /// [`RoomEvent::RoleChanged`]; resolves with its sequence number, the
    /// replica already showing the new role (the event comes before the `Ack`).
    ///
    /// Needs [`Action::GrantRoles`] (hosts, by default); nobody may grant a
    /// role ranked above its own or change the role of a member ranked above
    /// it ([`Role::rank`]), and the room's last host cannot be demoted.
    /// Otherwise the error is [`ErrorCode::Forbidden`].
    pub async fn set_role(&self, member: MemberId, role: Role) -> Result<Seq, RequestError> {
        let room = self.slot();
        self.ack_request(|request_id| ClientMessage::SetRole {
            request_id,
            room,
            member,
            role,
        })
        .await
    }

    /// Sets (`Some`) or removes (`None`) the room's password, for later joins
    /// ([`JoinOptions::password`](crate::JoinOptions::password)); members
    /// already in the room stay. No room event follows: resolves with the
    /// room's last sequence number.
    ///
    /// Needs [`Action::SetPassword`] (hosts, by default).
    pub async fn set_password(&self, password: Option<&str>) -> Result<Seq, RequestError> {
        let room = self.slot();
        self.ack_request(|request_id| ClientMessage::SetPassword {
            request_id,
            room,
            password: password.map(str::to_owned),
        })
        .await
    }

    /// Ends the room for everyone. Every member, this client included, receives
    /// [`RoomEvent::RoomClosed`] with `reason` as the room's last event; then
    /// the room is no longer joined and its streams end. Resolves with that
    /// event's sequence number.
    ///
    /// Needs [`Action::CloseRoom`] (hosts, by default).
    pub async fn close_room(&self, reason: &str) -> Result<Seq, RequestError> {
        let room = self.slot();
        self.ack_request(|request_id| ClientMessage::CloseRoom {
            request_id,
            room,
            reason: reason.to_owned(),
        })
        .await
    }

    /// Sends a message to member `to` only: it receives a [`RoomMessage`]
    /// ([`Delivery::Direct`]) on [`messages`](Self::messages). Not sequenced,
    /// not stored; resolves once the server has passed it on.
    ///
    /// Needs [`Action::DirectMessages`] (everyone, by default). `to` must be
    /// in the room and connected, else [`ErrorCode::NotJoined`]; the payload
    /// is bounded by the server's `max_direct_payload_bytes`, and the rate by
    /// [`RateLimits::direct`](crate::RateLimits).
    pub async fn send_direct(
        &self,
        to: MemberId,
        kind: &str,
        payload: &[u8],
    ) -> Result<(), RequestError> {
        let room = self.slot();
        self.ack_request(|request_id| ClientMessage::Direct {
            request_id,
            room,
            to,
            kind: kind.to_owned(),
            payload: payload.to_vec(),
        })
        .await
        .map(drop)
    }

    /// Sends a message to `audience` (everyone, everyone else, or the members
    /// of one role): each receives a [`RoomMessage`] ([`Delivery::Broadcast`])
    /// on [`messages`](Self::messages), this client too when it is in the
    /// audience. Not sequenced, not stored (unlike
    /// [`send_command`](Self::send_command)); works in relay rooms.
    ///
    /// Needs [`Action::SendCommands`] for `kind`. Bounded like
    /// [`send_direct`](Self::send_direct).
    pub async fn broadcast(
        &self,
        audience: Audience,
        kind: &str,
        payload: &[u8],
    ) -> Result<(), RequestError> {
        let room = self.slot();
        self.ack_request(|request_id| ClientMessage::Broadcast {
            request_id,
            room,
            audience,
            kind: kind.to_owned(),
            payload: payload.to_vec(),
        })
        .await
        .map(drop)
    }

    /// Asks the server for a fresh snapshot of the room. It replaces the
    /// replica as soon as it arrives (in order with the room's events, so none
    /// is lost), [`RoomEvent::Resynced`] is published, and the result is a
    /// view of the new replica.
    pub async fn request_snapshot(&self) -> Result<RoomView, RequestError> {
        let room = self.slot();
        match self
            .request(|request_id| ClientMessage::RequestSnapshot { request_id, room })
            .await?
        {
            Reply::Snapshot(view) => Ok(*view),
            other => Err(other.into_error()),
        }
    }

    /// STUN and TURN servers for WebRTC between members (with time-limited
    /// TURN credentials when the server has a TURN secret).
    pub async fn ice_servers(&self) -> Result<IceServers, RequestError> {
        let room = self.slot();
        match self
            .request(|request_id| ClientMessage::GetIceServers { request_id, room })
            .await?
        {
            Reply::IceServers(servers) => Ok(servers),
            other => Err(other.into_error()),
        }
    }

    /// Names the member who becomes host if the host goes away (with the
    /// default [`FailoverMode::NextMember`]), or nobody (`None`: the
    /// earliest-joined online member then). Resolves with the room's last
    /// sequence number.
    ///
    /// Needs [`Action::GrantRoles`] (hosts, by default).
    pub async fn set_delegate(&self, member: Option<MemberId>) -> Result<Seq, RequestError> {
        let room = self.slot();
        self.ack_request(|request_id| ClientMessage::SetDelegate {
            request_id,
            room,
            member,
        })
        .await
    }

    /// Uploads a pack (see [`crate::pack`]): computes its SHA-256, announces
    /// it, sends the content (on WebTransport a stream of its own, on
    /// WebSocket 16 KiB pack-lane messages), and resolves with the pack once
    /// every member has been told it is available
    /// ([`RoomEvent::PackAvailable`], already in this client's replica). A
    /// pack the room already has resolves at once. A dropped connection does
    /// not fail the upload: once resumed (within the request timeout), it
    /// goes on from where the server got to.
    ///
    /// Needs [`Action::UploadPacks`] (hosts and editors, by default).
    /// Refusals: [`ErrorCode::LimitExceeded`] (over `max_pack_bytes` — checked
    /// here first —, too many packs or bytes in the room),
    /// [`ErrorCode::MediaTypeRefused`] (a type the server does not allow, or
    /// content that is not of that type), [`ErrorCode::HashMismatch`],
    /// [`ErrorCode::NotStored`] (relay rooms), [`ErrorCode::Forbidden`].
    ///
    /// ```no_run
    /// # async fn demo(room: chorus_client::Room) -> Result<(), chorus_client::RequestError> {
    /// let png = std::fs::read("cover.png").expect("file");
    /// let pack = room.upload_pack("cover.png", "image/png", png).await?;
    /// // Any member, later:
    /// let bytes = room.fetch_pack(&pack.hash).await?;
    /// assert_eq!(bytes.len() as u64, pack.size);
    /// # Ok(()) }
    /// ```
    pub async fn upload_pack(
        &self,
        name: &str,
        media_type: &str,
        content: impl Into<Bytes>,
    ) -> Result<PackInfo, RequestError> {
        self.check_joined()?;
        pack::upload(
            &self.handle.client.shared,
            &self.handle.room,
            name,
            media_type,
            content.into(),
        )
        .await
    }

    /// Downloads the pack with this SHA-256 (see [`crate::pack`]) and checks
    /// the content against it ([`RequestError::PackHashMismatch`] otherwise).
    /// A dropped connection does not fail the fetch: once resumed (within the
    /// request timeout), it asks for the rest. [`ErrorCode::PackNotFound`] when the room has no such
    /// pack.
    pub async fn fetch_pack(&self, hash: &[u8]) -> Result<Bytes, RequestError> {
        self.check_joined()?;
        pack::fetch(&self.handle.client.shared, &self.handle.room, hash).await
    }

    /// Fails fast when the room is no longer joined.
    fn check_joined(&self) -> Result<(), RequestError> {
        if self.is_joined() {
            return Ok(());
        }
        match self.handle.client.shared.close_reason() {
            Some(reason) => Err(RequestError::Closed(reason)),
            None => Err(RequestError::NotJoined),
        }
    }

    /// Leaves the room. Whatever the outcome, this handle and its clones stop
    /// being joined and their streams end.
    pub async fn leave(self) -> Result<(), RequestError> {
        let room = self.slot();
        let result = self
            .request(|request_id| ClientMessage::Leave { request_id, room })
            .await;
        self.handle.client.shared.detach_room(&self.handle.room);
        match result? {
            Reply::Left => Ok(()),
            // Already out (e.g. removed by the server): the goal is reached.
            Reply::Error(frame) if frame.code == ErrorCode::NotJoined => Ok(()),
            other => Err(other.into_error()),
        }
    }
}
