//! Resume tokens: which session a token belongs to, and, once that session's
//! connection has dropped, which rooms it was in and until when it can be
//! resumed.
//!
//! The registry only hands a session's rooms to the connection that presents
//! its token; the rooms themselves decide whether the member is still there
//! (`RoomInput::Reattach`). It holds no room state and does no I/O.
//!
//! Tokens are looked up by their SHA-256 ([`ResumeKey`]), the form rooms keep
//! with their members: after a restart the registry is filled again from the
//! rooms read back ([`ResumeRegistry::restore`]), and the token itself was
//! never written anywhere.

use super::{JoinedRoom, SessionShared};
use crate::core::ResumeKey;
use chorus_protocol::RoomSlot;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The key rooms keep for a resume token.
pub fn resume_key(token: &str) -> ResumeKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    ResumeKey(key)
}

/// A fresh resume token: 128 random bits as 32 hex characters.
pub fn new_resume_token() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Debug)]
struct Entry {
    /// `None` for a session of before a restart.
    session: Option<Arc<SessionShared>>,
    /// Set when the session's connection dropped: the rooms it was in and
    /// the end of its resume window.
    ended: Option<(Instant, Vec<JoinedRoom>)>,
    /// A session of before a restart: when the join token of each room runs out.
    token_deadlines: HashMap<RoomSlot, Instant>,
}

/// What a resuming connection takes over.
#[derive(Debug)]
pub struct Takeover {
    /// The earlier session, if it ran in this process; still running if its
    /// connection was not yet noticed dead (the caller then closes it).
    pub previous: Option<Arc<SessionShared>>,
    pub still_running: bool,
    pub rooms: Vec<JoinedRoom>,
    /// When the join token of each room runs out.
    pub token_deadlines: HashMap<RoomSlot, Instant>,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct ResumeRegistry {
    entries: Mutex<HashMap<ResumeKey, Entry>>,
    max_entries: usize,
}

impl ResumeRegistry {
    pub fn new(max_entries: usize) -> Self {
        ResumeRegistry {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ResumeKey, Entry>> {
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
            resume_key(&token),
            Entry {
                session: Some(session),
                ended: None,
                token_deadlines: HashMap::new(),
            },
        );
        Some(token)
    }

    /// A member of a room read back after a restart, whose session (behind
    /// `key`) can be resumed until `until`.
    pub fn restore(
        &self,
        key: ResumeKey,
        room: JoinedRoom,
        token_deadline: Option<Instant>,
        until: Instant,
    ) {
        let mut entries = self.entries();
        if entries.len() >= self.max_entries && !entries.contains_key(&key) {
            return;
        }
        let entry = entries.entry(key).or_insert_with(|| Entry {
            session: None,
            ended: Some((until, Vec::new())),
            token_deadlines: HashMap::new(),
        });
        if let Some(deadline) = token_deadline {
            entry.token_deadlines.insert(room.room.slot(), deadline);
        }
        if let Some((_, rooms)) = &mut entry.ended {
            rooms.push(room);
        }
    }

    /// The session's connection dropped: keep its rooms until `until`.
    pub fn ended(&self, token: &str, rooms: Vec<JoinedRoom>, until: Instant) {
        if let Some(entry) = self.entries().get_mut(&resume_key(token)) {
            entry.ended = Some((until, rooms));
        }
    }

    /// The session ended for good (left, closed by the server, resumed).
    pub fn remove(&self, token: &str) {
        self.entries().remove(&resume_key(token));
    }

    /// Takes over the session behind `token`, if its window has not passed.
    /// The token is used up: the new session gets a token of its own.
    pub fn take(&self, token: &str, now: Instant) -> Option<Takeover> {
        let entry = self.entries().remove(&resume_key(token))?;
        let mut token_deadlines = entry.token_deadlines;
        if let Some(previous) = &entry.session {
            token_deadlines.extend(previous.token_deadlines().iter().map(|(k, v)| (*k, *v)));
        }
        match (entry.ended, entry.session) {
            (Some((until, _)), _) if until <= now => None,
            (Some((_, rooms)), previous) => Some(Takeover {
                previous,
                still_running: false,
                rooms,
                token_deadlines,
            }),
            (None, Some(session)) => {
                let rooms = session.joined.load().values().cloned().collect();
                Some(Takeover {
                    previous: Some(session),
                    still_running: true,
                    rooms,
                    token_deadlines,
                })
            }
            // A live entry always has its session.
            (None, None) => None,
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

    #[test]
    fn resume_keys_are_the_sha256_of_the_token() {
        // `printf abc | sha256sum`
        let key = resume_key("abc");
        assert_eq!(
            key.0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
        assert_ne!(resume_key("abc"), resume_key("abd"));
    }
}
