//! The task that owns one room.
//!
//! It takes the requests queued at once (up to [`BATCH`]) through the core,
//! hands the room's changes to the store, and only then delivers what the
//! core said: nothing is acknowledged or broadcast before it is kept as the
//! durability mode says. In `sync` durability it waits for the commit of
//! each batch's changes; in `interval` durability it hands changes over
//! every half interval (the writer commits every half interval too, so a
//! change is on disk within one interval).

use super::RoomPassword;
use super::registry::RoomRegistry;
use super::{Fanout, FanoutTarget, JoinOutcome, RoomHandle, RoomRequest, RoomShared};
use crate::clock::ServerClock;
use crate::core::{AuditEvent, Failover, Recipient, Room, RoomInput, RoomOutput, SessionId};
use crate::session::{JoinedRoom, SessionShared};
use crate::stats::{FailoverKind, Outcome, ServerStats};
use crate::store::{Durability, StoreHandle};
use arc_swap::ArcSwap;
use bytes::Bytes;
use chorus_protocol::{
    ErrorCode, ErrorFrame, LeaveReason, MemberId, RequestId, ServerMessage, encode_message,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

/// Requests taken through the core before the outputs are delivered (and,
/// with a store, before one write of the changes).
const BATCH: usize = 64;

/// Starts the task for `room` and returns its handle.
pub(super) fn spawn(
    room: Room,
    inbox_capacity: usize,
    registry: Weak<RoomRegistry>,
    clock: ServerClock,
    stats: Arc<ServerStats>,
    store: Option<StoreHandle>,
) -> RoomHandle {
    let (tx, rx) = mpsc::channel(inbox_capacity.max(1));
    let shared = Arc::new(RoomShared {
        id: room.id().to_owned(),
        slot: room.slot(),
        fanout: ArcSwap::from_pointee(Fanout::default()),
        created_at: room.stats().created_at,
        last_activity: AtomicU64::new(room.stats().last_activity.as_micros()),
        password: arc_swap::ArcSwapOption::from(room.password().map(|hash| {
            Arc::new(RoomPassword {
                hash: hash.clone(),
                generation: room.password_generation(),
            })
        })),
        policy: room.policy().clone(),
        kind: room.kind(),
    });
    let handle = RoomHandle { shared, inbox: tx };
    let task = RoomTask {
        core: room,
        handle: handle.clone(),
        links: HashMap::new(),
        pending: HashMap::new(),
        joins: Vec::new(),
        registry,
        clock,
        stats,
        watches: Vec::new(),
        store,
    };
    // Every line the room task logs (audit events included) names its room.
    let span = tracing::info_span!("room", id = %handle.id(), slot = handle.slot().0);
    tokio::spawn(tracing::Instrument::instrument(task.run(rx), span));
    handle
}

struct RoomTask {
    core: Room,
    /// Our own handle, given to sessions as they join.
    handle: RoomHandle,
    /// Member sessions.
    links: HashMap<SessionId, Arc<SessionShared>>,
    /// Sessions whose join (or reattach) is being handled.
    pending: HashMap<SessionId, Arc<SessionShared>>,
    /// Their replies, answered once the outputs are delivered.
    joins: Vec<(SessionId, oneshot::Sender<JoinOutcome>)>,
    registry: Weak<RoomRegistry>,
    clock: ServerClock,
    stats: Arc<ServerStats>,
    /// Requests handled whose outcome is still to be counted.
    watches: Vec<Watch>,
    /// Where the room's changes go; `None`: kept in memory only.
    store: Option<StoreHandle>,
}

/// A state write or command whose outcome the task counts from the reply
/// the core sends back for it (the core itself counts nothing).
#[derive(Debug, Clone, Copy)]
struct Watch {
    session: SessionId,
    request_id: RequestId,
    what: Watched,
    /// When the room took the request off its inbox.
    received: std::time::Instant,
}

#[derive(Debug, Clone, Copy)]
enum Watched {
    State,
    /// A command of the kind in this slot (see `CommandKinds`).
    Command(usize),
}

impl Watch {
    fn of(input: &RoomInput, stats: &ServerStats) -> Option<Watch> {
        let (session, request_id, what) = match input {
            RoomInput::SetState {
                session,
                request_id,
                ..
            }
            | RoomInput::DeleteState {
                session,
                request_id,
                ..
            } => (*session, *request_id, Watched::State),
            RoomInput::Command {
                session,
                request_id,
                kind,
                ..
            } => (
                *session,
                *request_id,
                Watched::Command(stats.commands.kinds.slot(kind)),
            ),
            _ => return None,
        };
        Some(Watch {
            session,
            request_id,
            what,
            received: std::time::Instant::now(),
        })
    }

    /// The outcome `message` to `to` reports, if it answers this request.
    fn outcome(&self, to: &Recipient, message: &ServerMessage) -> Option<Outcome> {
        if *to != Recipient::Session(self.session) {
            return None;
        }
        match (message, self.what) {
            (ServerMessage::StateAck { request_id, .. }, Watched::State)
                if *request_id == self.request_id =>
            {
                Some(Outcome::Applied)
            }
            (
                ServerMessage::CommandAck {
                    request_id,
                    duplicate,
                    ..
                },
                Watched::Command(_),
            ) if *request_id == self.request_id => Some(if *duplicate {
                Outcome::Duplicate
            } else {
                Outcome::Applied
            }),
            (ServerMessage::Error(e), _) if e.request_id == Some(self.request_id) => {
                Some(Outcome::Refused(e.code))
            }
            _ => None,
        }
    }
}

impl RoomTask {
    async fn run(mut self, mut inbox: mpsc::Receiver<RoomRequest>) {
        let mut batch = Vec::with_capacity(BATCH);
        // In `interval` durability the room hands its changes over on a
        // timer, not after every request: one write then carries many
        // requests (a key written ten times is written once).
        let hand_over_every = self
            .store
            .as_ref()
            .and_then(|s| (s.durability() == Durability::Interval).then(|| s.interval() / 2));
        let mut hand_over_at: Option<Instant> = None;
        loop {
            let deadline = self.core.poll_timeout().map(|t| self.clock.instant_of(t));
            // Whether the core may have changed (not after a mere hand-over).
            let mut touched = true;
            tokio::select! {
                count = inbox.recv_many(&mut batch, BATCH) => {
                    // Unreachable while we hold our own handle; end quietly anyway.
                    if count == 0 {
                        return;
                    }
                    let now = self.clock.now();
                    self.handle
                        .shared
                        .last_activity
                        .store(now.as_micros(), Ordering::Relaxed);
                    for request in batch.drain(..) {
                        self.apply(now, request).await;
                    }
                },
                () = sleep_until(deadline.map_or_else(Instant::now, Instant::from_std)), if deadline.is_some() => {
                    self.core.handle_timeout(self.clock.now());
                }
                () = sleep_until(hand_over_at.unwrap_or_else(Instant::now)), if hand_over_at.is_some() => {
                    hand_over_at = None;
                    touched = false;
                    self.persist().await;
                }
            }
            if touched {
                match hand_over_every {
                    Some(every) if !self.core.is_ended() => {
                        hand_over_at.get_or_insert_with(|| Instant::now() + every);
                    }
                    _ => self.persist().await,
                }
            }
            self.flush();
            if self.core.is_ended() {
                break;
            }
        }
        // Ended: leave the registry at once so new joins create a fresh room
        // (they are not kept waiting on the store), then drop what the store
        // keeps of this one (the delete names this room's slot, and pack
        // deletes their epoch, so a new room's writes win whatever the
        // order), then answer what was queued.
        let last = self.core.take_changes();
        let freed = self
            .registry
            .upgrade()
            .map(|registry| registry.forget(&self.handle))
            .unwrap_or_default();
        if let Some(store) = &self.store {
            if let Some(last) = last {
                let _ = store.write_room(last).await;
            }
            let _ = store.delete_packs(freed).await;
        }
        inbox.close();
        while let Some(request) = inbox.recv().await {
            match request {
                RoomRequest::Join { reply, .. } | RoomRequest::Reattach { reply, .. } => {
                    let _ = reply.send(JoinOutcome::RoomClosed);
                }
                RoomRequest::Persist { reply } => {
                    let _ = reply.send(None);
                }
                RoomRequest::Input(_) => {}
            }
        }
        tracing::debug!(room = %self.handle.id(), slot = self.handle.slot().0, "room ended");
    }

    /// Hands the room's changes to the store; in `sync` durability returns
    /// once they are committed.
    async fn persist(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let Some(changes) = self.core.take_changes() else {
            return;
        };
        if store.write_room(changes).await.is_err() {
            // Only at shutdown, after the last persist; nothing to keep then.
            tracing::debug!("store closed; room changes not kept");
        }
    }

    /// Links a joining or reattaching session until the flush, which
    /// answers `reply` with the outcome.
    fn expect_member(
        &mut self,
        session: Arc<SessionShared>,
        reply: oneshot::Sender<JoinOutcome>,
    ) -> SessionId {
        let id = session.id;
        self.pending.insert(id, session);
        self.joins.push((id, reply));
        id
    }

    /// Takes one request through the core; its outputs wait for [`flush`](Self::flush).
    async fn apply(&mut self, now: chorus_protocol::ServerTime, request: RoomRequest) {
        match request {
            RoomRequest::Join {
                session,
                request_id,
                display,
                access,
                reply,
            } => {
                let id = self.expect_member(session, reply);
                self.core.handle(
                    now,
                    RoomInput::Join {
                        session: id,
                        request_id,
                        display,
                        access,
                    },
                );
            }
            RoomRequest::Reattach {
                session,
                member,
                last_seq,
                resume_key,
                reply,
            } => {
                let id = self.expect_member(session, reply);
                self.core.handle(
                    now,
                    RoomInput::Reattach {
                        session: id,
                        member,
                        last_seq,
                        resume_key,
                    },
                );
            }
            RoomRequest::Input(input) => {
                if let Some(watch) = Watch::of(&input, &self.stats) {
                    self.watches.push(watch);
                }
                self.core.handle(now, input);
            }
            RoomRequest::Persist { reply } => {
                let image = match &self.store {
                    Some(store) if store.durability().tracks_changes() => {
                        self.persist().await;
                        None
                    }
                    _ => self.core.image(),
                };
                let _ = reply.send(image);
            }
        }
    }

    fn link(&self, session: SessionId) -> Option<&Arc<SessionShared>> {
        self.links
            .get(&session)
            .or_else(|| self.pending.get(&session))
    }

    /// Carries out everything the core queued. Returns the members added.
    fn flush(&mut self) -> Vec<(SessionId, MemberId)> {
        let mut added = Vec::new();
        let mut membership_changed = false;
        loop {
            let mut too_slow: Vec<SessionId> = Vec::new();
            while let Some(output) = self.core.poll_output() {
                match output {
                    RoomOutput::Send { to, message } => {
                        // Encoded once; every recipient shares the bytes.
                        let bytes = Bytes::from(encode_message(&message));
                        let reply = self
                            .watches
                            .iter()
                            .enumerate()
                            .find_map(|(i, w)| Some((i, w.outcome(&to, &message)?)));
                        if let ServerMessage::Error(error) = &message {
                            self.stats.error_sent(error.code);
                        }
                        self.deliver(to, &bytes, &mut too_slow);
                        if let Some((i, outcome)) = reply {
                            let watch = self.watches.swap_remove(i);
                            self.count(watch, outcome);
                        }
                    }
                    RoomOutput::MemberAdded { session, member } => {
                        if let Some(link) = self.pending.get(&session).cloned() {
                            // Register the membership with the session before the
                            // client can learn of it, so its first tick is accepted.
                            link.insert_joined(JoinedRoom {
                                room: self.handle.clone(),
                                member,
                            });
                            self.links.insert(session, link);
                        }
                        added.push((session, member));
                        membership_changed = true;
                    }
                    RoomOutput::MemberRemoved { session, member } => {
                        if let Some(link) = self.links.remove(&session) {
                            link.remove_joined(self.handle.slot(), member);
                        }
                        membership_changed = true;
                    }
                    RoomOutput::Expired => self.stats.rooms_expired.inc(),
                    RoomOutput::Closed => self.stats.rooms_closed.inc(),
                    RoomOutput::Failover(failover) => {
                        self.stats
                            .failovers
                            .get(match failover {
                                Failover::HostAway => FailoverKind::HostAway,
                                Failover::HostLeft => FailoverKind::HostLeft,
                                Failover::Paused => FailoverKind::Paused,
                                Failover::Reclaimed => FailoverKind::Reclaimed,
                            })
                            .inc();
                    }
                    RoomOutput::RoleChanged { .. } => membership_changed = true,
                    RoomOutput::PasswordChanged { hash, generation } => {
                        self.handle
                            .shared
                            .password
                            .store(hash.map(|hash| Arc::new(RoomPassword { hash, generation })));
                    }
                    RoomOutput::Audit(event) => self.audit(&event),
                }
            }
            if too_slow.is_empty() {
                break;
            }
            let now = self.clock.now();
            for session in too_slow {
                if let Some(link) = self.links.get(&session) {
                    self.stats.slow_consumer_disconnects.inc();
                    link.close_with(ErrorFrame::new(
                        None,
                        ErrorCode::SlowConsumer,
                        format!(
                            "reliable events for room {} were not read fast enough",
                            self.handle.id()
                        ),
                    ));
                }
                self.core.handle(
                    now,
                    RoomInput::Leave {
                        session,
                        request_id: None,
                        reason: LeaveReason::TooSlow,
                    },
                );
            }
        }
        if membership_changed {
            self.publish_fanout();
        }
        // Requests that got no reply we count (the member left meanwhile).
        self.watches.clear();
        for (session, reply) in self.joins.drain(..) {
            let outcome = added
                .iter()
                .find(|(s, _)| *s == session)
                .map_or(JoinOutcome::Refused, |(_, m)| JoinOutcome::Joined(*m));
            // The session may have gone meanwhile; then it will send a Leave.
            let _ = reply.send(outcome);
        }
        self.pending.clear();
        added
    }

    /// Counts how a watched request came out. An applied command's reply
    /// comes after its event went to every member, so its fan-out time ends
    /// here.
    fn count(&self, watch: Watch, outcome: Outcome) {
        match watch.what {
            Watched::State => self.stats.state_updates.inc(outcome),
            Watched::Command(kind) => {
                self.stats.commands.count(kind, outcome);
                if outcome == Outcome::Applied {
                    self.stats.command_fanout.observe(watch.received.elapsed());
                }
            }
        }
    }

    fn deliver(&self, to: Recipient, bytes: &Bytes, too_slow: &mut Vec<SessionId>) {
        let mut push = |session: SessionId, link: &Arc<SessionShared>| {
            match link.outbox.push(bytes.clone()) {
                Ok(()) => self.stats.reliable_out.inc(),
                Err(crate::session::PushError::Full) => {
                    if !too_slow.contains(&session) {
                        too_slow.push(session);
                    }
                }
                // The session is closing and will leave by itself.
                Err(crate::session::PushError::Closed) => {}
            }
        };
        match to {
            Recipient::Session(session) => {
                if let Some(link) = self.link(session) {
                    push(session, link);
                }
            }
            Recipient::Everyone => {
                for (session, link) in &self.links {
                    push(*session, link);
                }
            }
            Recipient::EveryoneExcept(except) => {
                for (session, link) in &self.links {
                    if *session != except {
                        push(*session, link);
                    }
                }
            }
            Recipient::Sessions(sessions) => {
                for session in sessions {
                    if let Some(link) = self.links.get(&session) {
                        push(session, link);
                    }
                }
            }
        }
    }

    fn audit(&self, event: &AuditEvent) {
        let room = self.handle.id();
        let name = event.name();
        match event {
            AuditEvent::JoinRefused { session, ip, code } => {
                tracing::info!(target: "chorus::audit", event = name, room, session = %session, %ip, code = code.name());
            }
            AuditEvent::Kicked {
                by,
                member,
                ip,
                subject,
                ban_us,
            } => {
                tracing::info!(target: "chorus::audit", event = name, room, by = by.0, member = member.0, %ip, subject = subject.as_deref().unwrap_or(""), ban_secs = ban_us / 1_000_000);
            }
            AuditEvent::RoleChanged {
                by,
                member,
                from,
                to,
            } => {
                tracing::info!(target: "chorus::audit", event = name, room, by = by.0, member = member.0, from = from.name(), to = to.name());
            }
            AuditEvent::PasswordChanged { by, set } => {
                tracing::info!(target: "chorus::audit", event = name, room, by = by.0, set);
            }
            AuditEvent::RoomClosed { by } => {
                tracing::info!(target: "chorus::audit", event = name, room, by = by.0);
            }
            AuditEvent::Forbidden { member, action } => {
                // Debug, not info: a misbehaving client can cause many of these,
                // and the rate limiter (which is audited) deals with floods.
                tracing::debug!(target: "chorus::audit", event = name, room, member = member.0, action = action.name());
            }
        }
    }

    fn publish_fanout(&self) {
        let targets = self
            .core
            .fanout()
            .into_iter()
            .filter_map(|entry| {
                self.links.get(&entry.session).map(|link| FanoutTarget {
                    session: entry.session,
                    member: entry.member,
                    role: entry.role,
                    may_send_ticks: entry.may_send_ticks,
                    sink: link.ticks.clone(),
                })
            })
            .collect();
        self.handle
            .shared
            .fanout
            .store(Arc::new(Fanout { targets }));
    }
}
