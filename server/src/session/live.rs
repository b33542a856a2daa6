//! The sessions running now, for the queue-depth gauges of `/metrics`.
//!
//! A session registers when it starts and is forgotten when its guard drops;
//! a scrape walks the table and reads each outbox's depth. Neither touches
//! the tick or reliable paths.

use super::SessionShared;
use crate::core::SessionId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct LiveSessions {
    sessions: Mutex<HashMap<SessionId, Weak<SessionShared>>>,
}

/// Reliable outbox depths over every running session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepths {
    pub sessions: usize,
    /// Frames queued in all outboxes.
    pub frames: usize,
    pub bytes: usize,
    /// The most frames (and, separately, bytes) queued in one outbox.
    pub max_frames: usize,
    pub max_bytes: usize,
}

/// Keeps a session in the table until dropped.
#[derive(Debug)]
pub struct LiveGuard {
    live: Arc<super::SessionContext>,
    id: SessionId,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.live.lock().remove(&self.id);
    }
}

impl LiveSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Weak<SessionShared>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `shared` to the table of `ctx` until the guard drops.
    pub(super) fn register(
        ctx: &Arc<super::SessionContext>,
        shared: &Arc<SessionShared>,
    ) -> LiveGuard {
        ctx.live.lock().insert(shared.id, Arc::downgrade(shared));
        LiveGuard {
            live: ctx.clone(),
            id: shared.id,
        }
    }

    /// Sessions running now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The depth of every running session's outbox, summed and the largest.
    pub fn outbox_depths(&self) -> OutboxDepths {
        let sessions: Vec<Arc<SessionShared>> =
            self.lock().values().filter_map(Weak::upgrade).collect();
        let mut depths = OutboxDepths {
            sessions: sessions.len(),
            ..OutboxDepths::default()
        };
        for session in sessions {
            let (frames, bytes) = session.outbox.depth();
            depths.frames += frames;
            depths.bytes += bytes;
            depths.max_frames = depths.max_frames.max(frames);
            depths.max_bytes = depths.max_bytes.max(bytes);
        }
        depths
    }
}
