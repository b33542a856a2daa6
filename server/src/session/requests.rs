//! Session-side parts of the sync features: resuming a dropped session,
//! telling rooms the client is alive, and handing out ICE servers.
//!
//! The rooms decide everything about membership (a resumed member is
//! reattached by its room, which replays what it missed); this module only
//! finds the rooms and carries the requests.

use super::{JoinedRoom, Session, TransportReader};
use crate::core::RoomInput;
use crate::rooms::{JoinOutcome, RoomRequest};
use chorus_protocol::{
    ErrorCode, ErrorFrame, IceServer, RequestId, ResumeRoom, RoomSlot, ServerMessage, ServerTime,
};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often, at most, a session tells one room that its client is active.
const ALIVE_EVERY: Duration = Duration::from_secs(1);

/// STUN/TURN servers for WebRTC beside Chorus.
#[derive(Clone, Default)]
pub struct IceSettings {
    /// `stun:` URLs handed out as they are.
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs; handed out only with a `turn_secret`.
    pub turn_urls: Vec<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret`).
    pub turn_secret: Option<String>,
    /// How long TURN credentials are valid.
    pub turn_ttl: Duration,
}

impl std::fmt::Debug for IceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceSettings")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field(
                "turn_secret",
                &self.turn_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("turn_ttl", &self.turn_ttl)
            .finish()
    }
}

/// TURN REST API credentials (the scheme coturn's `use-auth-secret` checks):
/// username `expiry:member`, password base64(HMAC-SHA1(secret, username)).
pub fn turn_credentials(secret: &str, expiry_unix_secs: u64, member: u32) -> (String, String) {
    use base64::Engine;
    let username = format!("{expiry_unix_secs}:{member}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, credential)
}

impl<R: TransportReader> Session<R> {
    /// Takes over the session behind `token` and asks each of its rooms to
    /// take the member back; a room that cannot is answered `ResumeLost`.
    pub(super) async fn resume(&mut self, token: &str, seen: Vec<ResumeRoom>) {
        let Some(takeover) = self.ctx.resumes.take(token, Instant::now()) else {
            tracing::debug!("resume token unknown or expired");
            self.ctx.stats.resumes_failed.inc();
            return self.reply_error(ErrorFrame::new(
                None,
                ErrorCode::ResumeFailed,
                "the session cannot be resumed (unknown token, or its window has passed); join afresh",
            ));
        };
        if let Some(previous) = takeover
            .previous
            .as_ref()
            .filter(|_| takeover.still_running)
        {
            // Its connection was not yet noticed dead: it lets go of its
            // members (detaching only) and closes.
            previous.replaced.store(true, Ordering::Release);
            previous.close_with(ErrorFrame::new(
                None,
                ErrorCode::ResumeFailed,
                "this session was resumed on another connection",
            ));
        }
        self.shared
            .token_deadlines()
            .extend(takeover.token_deadlines);
        self.ctx.stats.sessions_resumed.inc();
        let resume_key = self.resume_token.as_deref().map(super::resume::resume_key);
        for JoinedRoom { room, member } in takeover.rooms {
            let slot = room.slot();
            let last_seq = seen.iter().find(|r| r.room == slot).map(|r| r.last_seq);
            let (reply, outcome) = oneshot::channel();
            let request = RoomRequest::Reattach {
                session: self.shared.clone(),
                member,
                last_seq,
                resume_key,
                reply,
            };
            let outcome = match room.send(request).await {
                Ok(()) => outcome.await.unwrap_or(JoinOutcome::RoomClosed),
                Err(_) => JoinOutcome::RoomClosed,
            };
            match outcome {
                // Refused: the room has answered `ResumeLost` itself.
                JoinOutcome::Joined(_) | JoinOutcome::Refused => {}
                JoinOutcome::RoomClosed => self.reply(ServerMessage::ResumeLost {
                    room: slot,
                    code: ErrorCode::RoomNotFound,
                }),
            }
        }
        // Rooms the client remembers but the session was no longer in.
        let joined = self.shared.joined.load();
        for room in seen {
            if !joined.contains_key(&room.room) {
                self.reply(ServerMessage::ResumeLost {
                    room: room.room,
                    code: ErrorCode::NotJoined,
                });
            }
        }
    }

    /// Tells every joined room the client is active (at most once a second each).
    pub(super) fn alive_in_every_room(&mut self) {
        let slots: Vec<RoomSlot> = self.shared.joined.load().keys().copied().collect();
        for slot in slots {
            self.alive(slot);
        }
    }

    /// Tells one room the client is active, at most once a second, never waiting.
    pub(super) fn alive(&mut self, slot: RoomSlot) {
        let now = Instant::now();
        if self
            .alive_sent
            .get(&slot)
            .is_some_and(|at| now.duration_since(*at) < ALIVE_EVERY)
        {
            return;
        }
        let Some(joined) = self.joined(slot) else {
            return;
        };
        self.alive_sent.insert(slot, now);
        let _ = joined.room.try_send(RoomRequest::Input(RoomInput::Alive {
            session: self.shared.id,
        }));
    }

    pub(super) fn ice_servers(&self, request_id: RequestId, slot: RoomSlot) {
        let Some(joined) = self.joined(slot) else {
            return self.reply_error(super::not_joined(Some(request_id), slot));
        };
        let ice = &self.ctx.config.ice;
        let mut servers = Vec::new();
        if !ice.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: ice.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        let mut expires = ServerTime(0);
        if let Some(secret) = &ice.turn_secret
            && !ice.turn_urls.is_empty()
        {
            let now_secs = self.ctx.clock.now().as_micros() / 1_000_000;
            let expiry = now_secs.saturating_add(ice.turn_ttl.as_secs());
            let (username, credential) = turn_credentials(secret, expiry, joined.member.0);
            servers.push(IceServer {
                urls: ice.turn_urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
            expires = ServerTime(expiry.saturating_mul(1_000_000));
        }
        self.reply(ServerMessage::IceServers {
            request_id,
            servers,
            expires,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_turn_rest_api() {
        // Checked against coturn's scheme: base64(HMAC-SHA1(secret, "expiry:user")),
        // value computed independently with
        // `printf '1700000000:7' | openssl dgst -sha1 -hmac s3cret -binary | base64`.
        let (user, pass) = turn_credentials("s3cret", 1_700_000_000, 7);
        assert_eq!(user, "1700000000:7");
        assert_eq!(pass, "S5FYRd8b/uBnAZtdCPz+MSG7UiM=");
    }
}
