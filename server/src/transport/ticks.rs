//! A receiver's tick lane between the room fan-out and its transport: the
//! newest tick per (room, sender) waiting to be sent, and the coalescing
//! window that lets the transport send several of them in one write.
//!
//! Both transports keep pending ticks here when they wait before sending
//! (WebSocket always: its writer task drains them; WebTransport when a
//! coalescing window is set). Putting a tick never blocks a sender (a short
//! mutex, no await) and the lane never holds more than one tick per sender of
//! the receiver's rooms. This module owns no socket and decides no framing:
//! the transport frames a tick before putting it and drains the lane into its
//! own writer.
//!
//! Coalescing: with a window `w`, the first tick put into an empty lane makes
//! it due `w` later, and everything put until then leaves together (one
//! WebSocket write, or datagrams handed to quinn back to back so that it packs
//! them into as few QUIC packets as fit). A tick waits at most `w` plus 1 ms
//! (tokio's timer counts whole milliseconds); `w = 0` sends each as soon as
//! the writer is free.

use crate::rooms::TickDelivery;
use bytes::Bytes;
use chorus_protocol::{MemberId, RoomSlot};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The ticks waiting for one receiver: newest per (room, sender).
#[derive(Debug, Default)]
pub struct PendingTicks {
    pending: Mutex<HashMap<(RoomSlot, MemberId), Bytes>>,
    ready: Notify,
    closed: AtomicBool,
}

impl PendingTicks {
    /// Queues `tick` (already framed for the transport) from `sender` in
    /// `room`, in place of that sender's tick not sent yet, if any.
    pub fn put(&self, room: RoomSlot, sender: MemberId, tick: Bytes) -> TickDelivery {
        if self.is_closed() {
            return TickDelivery::Closed;
        }
        let replaced = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((room, sender), tick)
            .is_some();
        self.ready.notify_one();
        if replaced {
            TickDelivery::Replaced
        } else {
            TickDelivery::Queued
        }
    }

    /// Moves every pending tick into `out` (which keeps its allocation from
    /// one batch to the next).
    pub fn take_into(&self, out: &mut Vec<Bytes>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(pending.drain().map(|(_, tick)| tick));
    }

    /// Ends the lane: ticks put from now on are refused as `Closed`, and the
    /// transport's [`TickWindow::due`] returns [`Due::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// What [`TickWindow::due`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Ticks are waiting and their window is over: take them now.
    Send,
    /// The lane was closed.
    Closed,
}

/// When a receiver's pending ticks are due, given the coalescing window.
#[derive(Debug)]
pub struct TickWindow {
    window: Duration,
    /// When the ticks waiting now are due; `None` while nothing waits.
    deadline: Option<Instant>,
}

impl TickWindow {
    pub fn new(window: Duration) -> Self {
        TickWindow {
            window,
            deadline: None,
        }
    }

    /// Waits until ticks were put into `ticks` and the window that the first
    /// of them opened is over (at once with a zero window).
    ///
    /// # Cancel safety
    /// Cancel safe: an open window is kept in `self`, and a wake-up taken by a
    /// dropped wait is handed back to the lane by tokio's `Notify`.
    pub async fn due(&mut self, ticks: &PendingTicks) -> Due {
        loop {
            if ticks.is_closed() {
                return Due::Closed;
            }
            match self.deadline {
                None => {
                    ticks.ready.notified().await;
                    if ticks.is_closed() {
                        return Due::Closed;
                    }
                    if self.window.is_zero() {
                        return Due::Send;
                    }
                    self.deadline = Some(Instant::now() + self.window);
                }
                Some(deadline) => {
                    tokio::time::sleep_until(deadline).await;
                    self.deadline = None;
                    return Due::Send;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(ticks: &PendingTicks, sender: u32, body: &'static [u8]) -> TickDelivery {
        ticks.put(RoomSlot(1), MemberId(sender), Bytes::from_static(body))
    }

    fn taken(ticks: &PendingTicks) -> Vec<Bytes> {
        let mut out = Vec::new();
        ticks.take_into(&mut out);
        out.sort();
        out
    }

    #[test]
    fn the_lane_keeps_the_newest_tick_per_sender_until_closed() {
        let ticks = PendingTicks::default();
        assert_eq!(put(&ticks, 1, b"a1"), TickDelivery::Queued);
        assert_eq!(put(&ticks, 2, b"b1"), TickDelivery::Queued);
        assert_eq!(put(&ticks, 1, b"a2"), TickDelivery::Replaced);
        assert_eq!(taken(&ticks), [&b"a2"[..], &b"b1"[..]]);
        assert!(taken(&ticks).is_empty());
        ticks.close();
        assert_eq!(put(&ticks, 1, b"a3"), TickDelivery::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_window_ticks_wait_for_the_first_ones_window_then_leave_together() {
        let ticks = PendingTicks::default();
        let mut window = TickWindow::new(Duration::from_millis(5));
        let start = Instant::now();
        put(&ticks, 1, b"a");
        // A second tick during the window does not extend it.
        let (due, ()) = tokio::join!(window.due(&ticks), async {
            tokio::time::sleep(Duration::from_millis(3)).await;
            put(&ticks, 2, b"b");
        });
        assert_eq!(due, Due::Send);
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        assert_eq!(taken(&ticks), [&b"a"[..], &b"b"[..]]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_window_ticks_are_due_at_once() {
        let ticks = PendingTicks::default();
        let mut window = TickWindow::new(Duration::ZERO);
        let start = Instant::now();
        put(&ticks, 1, b"a");
        assert_eq!(window.due(&ticks).await, Due::Send);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_cancelled_inside_the_window_keeps_the_window() {
        let ticks = PendingTicks::default();
        let mut window = TickWindow::new(Duration::from_millis(5));
        let start = Instant::now();
        put(&ticks, 1, b"a");
        let cancelled = tokio::time::timeout(Duration::from_millis(2), window.due(&ticks)).await;
        assert!(cancelled.is_err(), "not due after 2 ms");
        // The same window, not a new one from now.
        assert_eq!(window.due(&ticks).await, Due::Send);
        assert_eq!(start.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_the_lane_ends_a_wait() {
        let ticks = PendingTicks::default();
        let mut window = TickWindow::new(Duration::from_millis(5));
        let (due, ()) = tokio::join!(window.due(&ticks), async { ticks.close() });
        assert_eq!(due, Due::Closed);
    }
}
