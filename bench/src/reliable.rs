//! The reliable-lane load: state updates (`SetState`) and commands sent at a
//! fixed rate per room, round-robin over the room's clients, beside the tick
//! load (or alone); and the receivers that count each change's fan-out to the
//! room's other members. The counts go into [`LaneTotals`].
//!
//! Every request carries the bench [`Header`] as its state value or command
//! payload (sender's global index, send time, the sender's own sequence for
//! this lane), so a receiver can attribute it, find duplicates and measure
//! fan-out latency without a side channel. State keys cycle over
//! [`STATE_KEYS`] keys `k0`.. so the room's state stays small.
//!
//! The load is open-loop: a room's sender issues each request on schedule
//! without waiting for earlier answers (each waits in a task of its own), so
//! a slow server shows as ack latency and unanswered requests, not as a lower
//! send rate.

use crate::payload::{HEADER_LEN, Header, RoomSenders};
use crate::report::LaneTotals;
use crate::run::{Timeline, ns_since};
use chorus_client::{CommandEvent, RequestError, Room, RoomEvent};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// Distinct state keys a room's writes cycle over (`k0` .. `k15`).
pub const STATE_KEYS: u64 = 16;

/// Command kind of the bench's commands.
pub const COMMAND_KIND: &str = "bench";

/// Which reliable lane a load uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// `SetState`, answered by `StateAck`, seen by the others as `StateChanged`.
    State,
    /// `Command` (no idempotency key), answered by `CommandAck`, seen by
    /// everyone as a command event.
    Commands,
}

impl Lane {
    /// `"state"` or `"commands"`, as in the table and the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Lane::State => "state",
            Lane::Commands => "commands",
        }
    }

    /// Sends one request of this lane; `Ok` once the server acked it.
    async fn request(self, room: &Room, write: u64, value: &[u8]) -> Result<(), RequestError> {
        match self {
            Lane::State => {
                let key = format!("k{}", write % STATE_KEYS);
                room.set_state(&key, value).await.map(drop)
            }
            Lane::Commands => room.send_command(COMMAND_KIND, value, None).await.map(drop),
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One member of a room, as a sender of the room's reliable load.
#[derive(Debug, Clone)]
pub(crate) struct LaneSender {
    /// Global client index (the header's `sender`).
    pub index: u32,
    pub room: Room,
}

/// How a request ended.
#[derive(Debug)]
enum Answer {
    Acked,
    Refused(&'static str),
    Failed(&'static str),
}

impl Answer {
    fn of(result: Result<(), RequestError>) -> Answer {
        let e = match result {
            Ok(()) => return Answer::Acked,
            Err(e) => e,
        };
        if let Some(code) = e.code() {
            return Answer::Refused(code.name());
        }
        Answer::Failed(match e {
            RequestError::Timeout => "timeout",
            RequestError::ConnectionLost => "connection_lost",
            RequestError::Closed(_) => "closed",
            RequestError::Limit(_) => "limit",
            RequestError::NotJoined => "not_joined",
            RequestError::UnexpectedReply(_) => "unexpected_reply",
            _ => "other",
        })
    }
}

/// A finished request: whether it counts, when it was sent, how it ended.
#[derive(Debug)]
struct Finished {
    in_window: bool,
    sent_at: Instant,
    answered_at: Instant,
    answer: Answer,
}

/// Sends one room's load of `lane`, one request every `period` from
/// `tl.start + offset` until the window ends, round-robin over `members`;
/// then waits for answers until the drain deadline. Returns the request side
/// of the lane's totals.
pub(crate) async fn send_loop(
    lane: Lane,
    members: Vec<LaneSender>,
    tl: Timeline,
    offset: Duration,
    period: Duration,
) -> LaneTotals {
    let mut totals = LaneTotals::default();
    if members.is_empty() {
        return totals;
    }
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::from_std(tl.start + offset), period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut in_flight: JoinSet<Finished> = JoinSet::new();
    let mut seqs = vec![0u32; members.len()];
    let mut writes = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let sent_at = Instant::now();
                if sent_at >= tl.window_end {
                    break;
                }
                let k = (writes % members.len() as u64) as usize;
                let (member, seq) = (&members[k], &mut seqs[k]);
                let send_ns = ns_since(tl.epoch, sent_at);
                let header = Header { sender: member.index, send_ns, seq: *seq };
                *seq = seq.wrapping_add(1);
                let mut value = [0u8; HEADER_LEN];
                if header.write(&mut value).is_err() {
                    // Unreachable: the buffer is exactly the header's length.
                    continue;
                }
                let in_window = send_ns >= tl.window_start_ns;
                if in_window {
                    totals.sent += 1;
                }
                let room = member.room.clone();
                let write = writes;
                writes += 1;
                in_flight.spawn(async move {
                    let result = lane.request(&room, write, &value).await;
                    Finished {
                        in_window,
                        sent_at,
                        answered_at: Instant::now(),
                        answer: Answer::of(result),
                    }
                });
            }
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                count_answer(&mut totals, joined);
            }
        }
    }
    let drain = tokio::time::Instant::from_std(tl.recv_deadline);
    while let Ok(Some(joined)) = tokio::time::timeout_at(drain, in_flight.join_next()).await {
        count_answer(&mut totals, joined);
    }
    // Whatever is still waiting was sent but not answered in time; those sent
    // in the window are what `sent` has beyond the answers counted.
    in_flight.abort_all();
    let answered =
        totals.acked + totals.refused.values().sum::<u64>() + totals.failed.values().sum::<u64>();
    totals.unanswered = totals.sent.saturating_sub(answered);
    totals
}

fn count_answer(totals: &mut LaneTotals, joined: Result<Finished, tokio::task::JoinError>) {
    let done = match joined {
        Ok(done) => done,
        Err(e) => {
            // A request task that panicked or was cancelled: its window is
            // unknown, so it is counted (as a failure) to stay visible.
            tracing::warn!(error = %e, "reliable-lane request task failed");
            totals.record_failed("task_failed");
            return;
        }
    };
    if !done.in_window {
        return;
    }
    match done.answer {
        Answer::Acked => {
            let us = done.answered_at.saturating_duration_since(done.sent_at);
            totals.record_ack(u64::try_from(us.as_micros()).unwrap_or(u64::MAX));
        }
        Answer::Refused(code) => totals.record_refused(code),
        Answer::Failed(why) => totals.record_failed(why),
    }
}

/// Who receives a lane's events, and where its room's senders are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneReceiver {
    /// This member's global index: its own changes are not fan-out.
    pub me: u32,
    pub room_index: u32,
    pub clients_per_room: u32,
}

/// The bench header bytes of a state change, `None` for other events.
pub fn state_value(event: &RoomEvent) -> Option<&[u8]> {
    match event {
        RoomEvent::StateChanged {
            value: Some(value), ..
        } => Some(value),
        _ => None,
    }
}

/// The bench header bytes of a command of the bench's kind, `None` for others.
pub fn command_payload(event: &CommandEvent) -> Option<&[u8]> {
    (event.kind == COMMAND_KIND).then_some(&event.payload[..])
}

/// Counts the changes other members made, as `payload_of` finds them in the
/// events of `events`, until the drain deadline. Returns the fan-out side of
/// the lane's totals.
pub(crate) async fn fanout_loop<E: Clone>(
    mut events: broadcast::Receiver<E>,
    payload_of: fn(&E) -> Option<&[u8]>,
    me: LaneReceiver,
    tl: Timeline,
) -> LaneTotals {
    let mut totals = LaneTotals::default();
    let mut senders = RoomSenders::new(me.room_index, me.clients_per_room);
    let deadline = tokio::time::Instant::from_std(tl.recv_deadline);
    loop {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break,
            Ok(Err(RecvError::Closed)) => {
                totals.streams_ended_early += 1;
                break;
            }
            Ok(Err(RecvError::Lagged(skipped))) => {
                totals.sdk_lagged += skipped;
                continue;
            }
            Ok(Ok(event)) => event,
        };
        // Read the time first: the event waited in the SDK's channel for
        // this task, and that wait is part of what a member experiences.
        let received_at = Instant::now();
        let Some(bytes) = payload_of(&event) else {
            continue;
        };
        let Some((_, h)) = senders.receive(bytes, tl.window_ns(), &mut totals.anomalies) else {
            continue;
        };
        // The SDK hands a member its own changes too; they are not fan-out.
        if h.sender != me.me {
            totals.record_delivery(tl.us_since_sent(h.send_ns, received_at));
        }
    }
    totals
}
