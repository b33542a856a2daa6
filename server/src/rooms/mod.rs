//! The async shell around the room core: one task per room, and the registry
//! that finds or creates rooms by id.
//!
//! A room task owns its [`Room`](crate::core::Room) and is the only code that
//! touches it. Sessions talk to it through a [`RoomHandle`] (a bounded queue), and
//! read its tick fan-out table directly. The task encodes each outgoing message
//! once and pushes the shared bytes to every recipient's outbox without waiting;
//! a recipient whose outbox is full is disconnected as too slow.

mod fanout;
mod registry;
mod task;

pub use fanout::{Fanout, FanoutTarget, OutgoingTick, TickDelivery, TickFraming, TickSink};
pub use registry::{RoomCreate, RoomRegistry, RoomSettings, RoomSummary, RoomTemplate};

use crate::core::{JoinAccess, PasswordHashString, RoomInput, SessionId};
use crate::session::SessionShared;
use arc_swap::{ArcSwap, ArcSwapOption};
use chorus_protocol::{DisplayInfo, MemberId, RequestId, RoomSlot, ServerTime};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::{mpsc, oneshot};

/// What a room shares with the sessions in it.
#[derive(Debug)]
pub struct RoomShared {
    pub id: String,
    pub slot: RoomSlot,
    /// Current tick fan-out table, replaced whole on every membership change.
    pub fanout: ArcSwap<Fanout>,
    pub created_at: ServerTime,
    /// Server time (µs) of the last request the room handled.
    pub last_activity: AtomicU64,
    /// The room's password, for sessions to verify a join against before
    /// asking the room (verification is slow on purpose, so it stays off the
    /// room task). The room core checks the generation again.
    pub password: ArcSwapOption<RoomPassword>,
    /// The room's permission rules (fixed at creation).
    pub policy: chorus_protocol::PermissionPolicy,
    pub kind: chorus_protocol::RoomKind,
}

/// A room's current password hash and its generation.
#[derive(Debug, Clone)]
pub struct RoomPassword {
    pub hash: PasswordHashString,
    pub generation: u64,
}

/// How a join ended, as the joining session needs to know it. The client has
/// already been told (the room queued `Joined` or an error to its outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined(MemberId),
    /// The room refused (full, already joined); the error is queued to the client.
    Refused,
    /// The room expired before it saw the request; look it up again and retry.
    RoomClosed,
}

/// A request to a room task.
#[derive(Debug)]
pub enum RoomRequest {
    Join {
        session: Arc<SessionShared>,
        request_id: RequestId,
        display: DisplayInfo,
        access: JoinAccess,
        reply: oneshot::Sender<JoinOutcome>,
    },
    /// A resumed session takes `member` back (see `RoomInput::Reattach`).
    Reattach {
        session: Arc<SessionShared>,
        member: MemberId,
        last_seq: Option<chorus_protocol::Seq>,
        resume_key: Option<crate::core::ResumeKey>,
        reply: oneshot::Sender<JoinOutcome>,
    },
    /// Hand what the room keeps to the store now (at shutdown). In the
    /// store's `None` mode the room answers its whole image for the caller
    /// to write; otherwise it writes its last changes itself and answers
    /// `None` once they are queued.
    Persist {
        reply: oneshot::Sender<Option<crate::core::RoomChanges>>,
    },
    /// Any other input; the session inside it is set by the session task.
    Input(RoomInput),
}

/// A handle to a running room. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    pub shared: Arc<RoomShared>,
    inbox: mpsc::Sender<RoomRequest>,
}

/// The room task has ended (the room expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room has closed")]
pub struct RoomClosed;

impl RoomHandle {
    pub fn slot(&self) -> RoomSlot {
        self.shared.slot
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Requests waiting in the room's inbox now.
    pub fn inbox_depth(&self) -> usize {
        self.inbox.max_capacity() - self.inbox.capacity()
    }

    /// Queues a request, waiting while the room's inbox is full.
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, the request was not queued.
    pub async fn send(&self, request: RoomRequest) -> Result<(), RoomClosed> {
        self.inbox.send(request).await.map_err(|_| RoomClosed)
    }

    /// Queues a request if the inbox has room now; drops it otherwise (for
    /// hints such as `Alive` that must never make a session wait).
    pub fn try_send(&self, request: RoomRequest) -> Result<(), RoomClosed> {
        match self.inbox.try_send(request) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RoomClosed),
        }
    }

    /// The session's connection dropped but may resume: its member stays,
    /// reconnecting, for the room's resume window.
    pub async fn detach(&self, session: SessionId, reason: chorus_protocol::LeaveReason) {
        let _ = self
            .send(RoomRequest::Input(RoomInput::Detach { session, reason }))
            .await;
    }

    /// Removes `session` from the room without a reply (disconnects).
    pub async fn remove(&self, session: SessionId, reason: chorus_protocol::LeaveReason) {
        // A closed room has no members left to tell.
        let _ = self
            .send(RoomRequest::Input(RoomInput::Leave {
                session,
                request_id: None,
                reason,
            }))
            .await;
    }
}
