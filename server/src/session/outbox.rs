//! A session's outbound reliable queue.
//!
//! Rooms push encoded message bodies without waiting; the transport's writer
//! drains everything queued in one batch (so many small events become one write).
//! The queue is bounded in frames and in bytes. A push that would pass either
//! bound fails, and the pusher disconnects the session as too slow: reliable
//! events are never dropped silently and memory never grows without bound.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the session's reliable queue is full")]
    Full,
    #[error("the session's reliable queue is closed")]
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    max_frames: usize,
    max_bytes: usize,
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            max_frames,
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a single push or drain), so recover it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one message body. Never waits.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(PushError::Closed);
        }
        // An empty queue takes any single frame, so a frame as large as the
        // frame limit can always be sent to a reader that keeps up.
        if !inner.frames.is_empty()
            && (inner.frames.len() >= self.max_frames || inner.bytes + frame.len() > self.max_bytes)
        {
            return Err(PushError::Full);
        }
        inner.bytes += frame.len();
        inner.frames.push_back(frame);
        drop(inner);
        self.notify.notify_one();
        Ok(())
    }

    /// Queues a last message past the bounds (a close reason must reach even a
    /// slow client), then closes the queue.
    pub fn push_final(&self, frame: Bytes) {
        let mut inner = self.lock();
        if !inner.closed {
            inner.bytes += frame.len();
            inner.frames.push_back(frame);
            inner.closed = true;
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Stops accepting pushes; what is queued can still be drained.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// Closes the queue and drops whatever is still in it (a session that
    /// ended, kept only so that it can be resumed, holds no frames).
    pub fn discard(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.frames.clear();
        inner.bytes = 0;
        drop(inner);
        self.notify.notify_one();
    }

    /// Frames and bytes queued now.
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.frames.len(), inner.bytes)
    }

    /// Waits until something is queued, then moves everything queued into `out`.
    /// Returns `false` once the queue is closed and empty.
    ///
    /// # Cancel safety
    /// Cancel safe: frames move into `out` only in the synchronous part after the
    /// wait, so a cancelled call loses nothing.
    pub async fn drain(&self, out: &mut Vec<Bytes>) -> bool {
        loop {
            {
                let mut inner = self.lock();
                if !inner.frames.is_empty() {
                    out.extend(inner.frames.drain(..));
                    inner.bytes = 0;
                    return true;
                }
                if inner.closed {
                    return false;
                }
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds_frames_and_bytes_and_drains_in_order() {
        let outbox = Outbox::new(3, 10);
        outbox.push(Bytes::from_static(b"aaaa")).expect("fits");
        outbox.push(Bytes::from_static(b"bbbb")).expect("fits");
        assert_eq!(
            outbox.push(Bytes::from_static(b"ccc")),
            Err(PushError::Full)
        );
        outbox
            .push(Bytes::from_static(b"cc"))
            .expect("exactly 10 bytes fits");
        assert_eq!(outbox.push(Bytes::from_static(b"")), Err(PushError::Full));
        assert_eq!(outbox.depth(), (3, 10));
        let mut out = Vec::new();
        assert!(outbox.drain(&mut out).await);
        assert_eq!(out, [&b"aaaa"[..], b"bbbb", b"cc"]);
        assert_eq!(outbox.depth(), (0, 0));
    }

    #[tokio::test]
    async fn an_empty_queue_takes_one_oversized_frame() {
        let outbox = Outbox::new(3, 10);
        outbox
            .push(Bytes::from(vec![0; 100]))
            .expect("first frame always fits");
        assert_eq!(outbox.push(Bytes::from_static(b"x")), Err(PushError::Full));
    }

    #[tokio::test]
    async fn close_lets_the_writer_finish_what_is_queued() {
        let outbox = Outbox::new(8, 100);
        outbox.push(Bytes::from_static(b"last")).expect("fits");
        outbox.close();
        assert_eq!(
            outbox.push(Bytes::from_static(b"x")),
            Err(PushError::Closed)
        );
        let mut out = Vec::new();
        assert!(outbox.drain(&mut out).await);
        assert_eq!(out.len(), 1);
        assert!(!outbox.drain(&mut out).await);
    }
}
