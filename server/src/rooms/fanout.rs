//! The tick lane's view of a room: who gets a sender's ticks.
//!
//! The room task publishes a new [`Fanout`] whenever membership or roles change;
//! sessions read it on every tick without a lock (`ArcSwap`) and without a trip
//! through the room task, so ticks never wait behind reliable events. The room
//! core decides who may send ticks; this table only carries its answer.

use crate::core::SessionId;
use bytes::Bytes;
use chorus_protocol::{MemberId, Role, RoomSlot};
use std::fmt;
use std::sync::Arc;

/// What happened to one tick handed to a receiver's tick lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickDelivery {
    /// Queued for sending (it may still be lost: the lane is unreliable).
    Queued,
    /// Queued in place of an older tick of the same sender that had not been
    /// sent yet; that older one is dropped.
    Replaced,
    /// Larger than this receiver's transport carries; dropped.
    TooLarge,
    /// The receiver's connection is gone; dropped.
    Closed,
}

/// One tick on its way to a room's members: the datagram as received (the
/// same bytes go to every recipient), and its framing for each transport, made
/// once by the first recipient on that transport and shared by the others
/// (WebSocket's lane byte in front; WebTransport's HTTP/3 datagram header,
/// which names the recipient's session and is the same for all of them in
/// practice). No recipient allocates or copies.
#[derive(Debug)]
pub struct OutgoingTick {
    datagram: Bytes,
    framed: [std::sync::OnceLock<(u64, Bytes)>; 2],
}

/// Which transport a framing of an [`OutgoingTick`] is for: one shared copy
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickFraming {
    WebSocket = 0,
    WebTransport = 1,
}

impl OutgoingTick {
    pub fn new(datagram: Bytes) -> Self {
        OutgoingTick {
            datagram,
            framed: Default::default(),
        }
    }

    /// The datagram as received.
    pub fn datagram(&self) -> &Bytes {
        &self.datagram
    }

    /// The tick framed by `frame` for `framing` with `key` (what the framing
    /// depends on, e.g. the recipient's session id): made on the first call
    /// and shared by every later one with the same key; a recipient with
    /// another key gets its own copy.
    pub fn framed(&self, framing: TickFraming, key: u64, frame: impl Fn(&Bytes) -> Bytes) -> Bytes {
        let slot = &self.framed[framing as usize];
        let (shared_key, shared) = slot.get_or_init(|| (key, frame(&self.datagram)));
        if *shared_key == key {
            shared.clone()
        } else {
            frame(&self.datagram)
        }
    }
}

/// A receiver's tick lane. Implementations never block and never queue without
/// bound: when the receiver is slow, older ticks give way to newer ones.
pub trait TickSink: Send + Sync + fmt::Debug {
    /// Hands over one tick (encoded once, shared by every recipient) from
    /// `sender` in room `room`.
    fn send_tick(&self, room: RoomSlot, sender: MemberId, tick: &OutgoingTick) -> TickDelivery;
}

/// One receiver in a room's fan-out.
#[derive(Debug, Clone)]
pub struct FanoutTarget {
    pub session: SessionId,
    pub member: MemberId,
    /// The member's role now (sessions use it to refuse early what the room
    /// would refuse anyway; the room core still decides).
    pub role: Role,
    pub may_send_ticks: bool,
    pub sink: Arc<dyn TickSink>,
}

/// The room's members as the tick lane sees them.
#[derive(Debug, Default)]
pub struct Fanout {
    pub targets: Vec<FanoutTarget>,
}

impl Fanout {
    /// Whether `member` is in the room and may send ticks.
    pub fn may_send(&self, member: MemberId) -> bool {
        self.targets
            .iter()
            .any(|t| t.member == member && t.may_send_ticks)
    }

    /// `member`'s role, if it is in the room.
    pub fn role_of(&self, member: MemberId) -> Option<Role> {
        self.targets
            .iter()
            .find(|t| t.member == member)
            .map(|t| t.role)
    }
}
