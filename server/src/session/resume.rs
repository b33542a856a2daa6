//! Resume tokens: which session a token belongs to, and, once that session's
//! connection has dropped, which rooms it was in and until when it can be
//! resumed.
//!
//! The registry only hands a session's rooms to the connection that presents
//! its token; the rooms themselves decide whether the member is still there
//! (`RoomInput::Reattach`). It holds no room state and does no I/O.

use super::{JoinedRoom, SessionShared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A fresh resume token: 128 random bits as 32 hex characters.
pub fn new_resume_token() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Debug)]
struct Entry {
    session: Arc<SessionShared>,
    /// Set when the session's connection dropped: the rooms it was in and
    /// the end of its resume window.
    ended: Option<(Instant, Vec<JoinedRoom>)>,
}

/// What a resuming connection takes over.
#[derive(Debug)]
pub struct Takeover {
    /// The earlier session; still running if its connection was not yet
    /// noticed dead (the caller then closes it).
    pub previous: Arc<SessionShared>,
    pub still_running: bool,
    pub rooms: Vec<JoinedRoom>,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct ResumeRegistry {
    entries: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
}

impl ResumeRegistry {
    pub fn new(max_entries: usize) -> Self {
        ResumeRegistry {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Every critical section is one map operation; a poisoned lock is consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a running session under a new token; `None` (no resume for
    /// this session) when the registry is full or no randomness is available.
    pub fn register(&self, session: Arc<SessionShared>, now: Instant) -> Option<String> {
        let mut entries = self.entries();
        if entries.len() >= self.max_entries {
            entries.retain(|_, e| e.ended.as_ref().is_none_or(|(until, _)| *until > now));
            if entries.len() >= self.max_entries {
                return None;
            }
        }
        let token = new_resume_token()?;
        entries.insert(
            token.clone(),
            Entry {
                session,
                ended: None,
            },
        );
        Some(token)
    }

    /// The session's connection dropped: keep its rooms until `until`.
    pub fn ended(&self, token: &str, rooms: Vec<JoinedRoom>, until: Instant) {
        if let Some(entry) = self.entries().get_mut(token) {
            entry.ended = Some((until, rooms));
        }
    }

    /// The session ended for good (left, closed by the server, resumed).
    pub fn remove(&self, token: &str) {
        self.entries().remove(token);
    }

    /// Takes over the session behind `token`, if its window has not passed.
    /// The token is used up: the new session gets a token of its own.
    pub fn take(&self, token: &str, now: Instant) -> Option<Takeover> {
        let entry = self.entries().remove(token)?;
        match entry.ended {
            Some((until, _)) if until <= now => None,
            Some((_, rooms)) => Some(Takeover {
                previous: entry.session,
                still_running: false,
                rooms,
            }),
            None => {
                let rooms = entry.session.joined.load().values().cloned().collect();
                Some(Takeover {
                    previous: entry.session,
                    still_running: true,
                    rooms,
                })
            }
        }
    }

    /// Forgets sessions whose resume window has passed.
    pub fn prune(&self, now: Instant) {
        self.entries()
            .retain(|_, e| e.ended.as_ref().is_none_or(|(until, _)| *until > now));
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let a = new_resume_token().expect("random");
        let b = new_resume_token().expect("random");
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
