//! The [`Room`] handle: reads of the live replica, reliable requests (state,
//! commands, moderation, leave), event subscriptions and unreliable ticks.

use crate::client::ClientHandle;
use crate::driver::{Reply, RoomShared, ended_receiver, lock};
use crate::error::{RequestError, TickError};
use crate::replica::{CommandEvent, RoomEvent, RoomView, StateValue};
use bytes::Bytes;
use chorus_protocol::{
    Action, ClientMessage, Datagram, ErrorCode, MemberId, MemberInfo, PermissionPolicy, Role,
    RoomSlot, Seq, Tick, encode_datagram,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::broadcast;

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
/// ([`RoomEvent::RoomClosed`]) or the connection ends: requests then fail with
/// [`RequestError::NotJoined`] or [`RequestError::Closed`], and the event
/// stream delivers that last event and then ends, as does the tick stream.
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
            .field("me", &self.handle.room.me)
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
        self.room().me
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

    /// Members in join order, this client included.
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

    /// A consistent copy of members and state at one sequence number.
    pub fn view(&self) -> RoomView {
        lock(&self.room().inner).replica.view()
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
        shared.link.max_tick_payload(limit)
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
            sender: room.me,
            seq: *seq,
            payload,
        }));
        shared.link.send_tick(shared, room.slot, bytes)?;
        let sent = *seq;
        *seq = seq.wrapping_add(1);
        Ok(sent)
    }

    /// Sends a request for this room, failing fast when it is no longer joined.
    async fn request(
        &self,
        build: impl FnOnce(chorus_protocol::RequestId) -> ClientMessage,
    ) -> Result<Reply, RequestError> {
        if !self.is_joined() {
            if let Some(reason) = self.handle.client.shared.close_reason() {
                return Err(RequestError::Closed(reason));
            }
            return Err(RequestError::NotJoined);
        }
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

    /// Sends a request answered by `Ack` (kick, roles, password, close).
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
