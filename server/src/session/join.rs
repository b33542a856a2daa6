//! Joining a room, and changing a room's password: the requests where a
//! session must establish who the client is (token, password, address) before
//! the room core decides.
//!
//! The session verifies what is slow or needs secrets (token signatures,
//! Argon2 password hashes, per-address brute-force blocks) and hands the room
//! a [`JoinAccess`] with the facts; the room core then applies its own rules
//! (bans, the password generation, roles, capacity). Nothing here decides
//! membership by itself.

use super::{Session, TransportReader, duration_ms};
use crate::access::guard::GuardError;
use crate::core::{ClientIdentity, JoinAccess, RoomInput, validate_room_id};
use crate::rooms::{JoinOutcome, RoomCreate, RoomRequest};
use chorus_protocol::{
    Action, DisplayInfo, ErrorCode, ErrorDetail, ErrorFrame, JoinOption, RequestId, Role, RoomSlot,
    ServerTime,
};
use std::time::Instant;
use tokio::sync::oneshot;

/// What a join asked for, from its options.
#[derive(Default)]
struct JoinRequest {
    create: RoomCreate,
    password: Option<String>,
    token: Option<String>,
}

impl<R: TransportReader> Session<R> {
    fn guard_error(&self, request_id: RequestId, error: &GuardError) -> ErrorFrame {
        ErrorFrame::new(Some(request_id), error.code(), error.to_string()).with_detail(
            ErrorDetail::RetryAfter {
                retry_after_ms: duration_ms(error.retry_after()),
            },
        )
    }

    fn refuse_join(&self, request_id: RequestId, event: &'static str, error: ErrorFrame) {
        tracing::info!(target: "chorus::audit", event, ip = %self.info.remote.ip(), transport = self.info.transport, code = error.code.name(), request_id);
        self.reply_error(error);
    }

    fn parse_join_options(
        &self,
        request_id: RequestId,
        options: Vec<JoinOption>,
    ) -> Result<JoinRequest, ErrorFrame> {
        let limits = &self.ctx.config.limits;
        let mut request = JoinRequest::default();
        for option in options {
            match option {
                JoinOption::CreateIfMissing => request.create.create = true,
                JoinOption::MaxMembers(n) => {
                    if n == 0 || n > limits.max_members_per_room {
                        return Err(ErrorFrame::new(
                            Some(request_id),
                            ErrorCode::LimitExceeded,
                            format!("max_members must be 1 to {}", limits.max_members_per_room),
                        )
                        .with_detail(ErrorDetail::Limit {
                            limit: u64::from(limits.max_members_per_room),
                            actual: u64::from(n),
                        }));
                    }
                    request.create.max_members = Some(n);
                }
                // An empty password is no password.
                JoinOption::Password(password) => {
                    request.password = (!password.is_empty()).then_some(password)
                }
                JoinOption::Token(token) => request.token = Some(token),
                JoinOption::Template(name) => request.create.template = Some(name),
                JoinOption::Kind(kind) => request.create.kind = Some(kind),
                JoinOption::Failover(mode) => request.create.failover = Some(mode),
                JoinOption::Policy(policy) => {
                    policy
                        .validate(limits.max_state_key_len as usize)
                        .map_err(|why| {
                            ErrorFrame::new(
                                Some(request_id),
                                ErrorCode::ProtocolViolation,
                                format!("invalid policy: {why}"),
                            )
                        })?;
                    request.create.policy = Some(policy);
                }
            }
        }
        Ok(request)
    }

    pub(super) async fn join(
        &mut self,
        request_id: RequestId,
        room_id: String,
        mut display: DisplayInfo,
        options: Vec<JoinOption>,
    ) {
        let mut request = match self.parse_join_options(request_id, options) {
            Ok(request) => request,
            Err(error) => return self.reply_error(error),
        };
        if room_id.is_empty() && !request.create.create {
            return self.reply_error(ErrorFrame::new(
                Some(request_id),
                ErrorCode::InvalidRoomId,
                "room id is empty; join with CreateIfMissing to get an invite code",
            ));
        }
        if !room_id.is_empty()
            && let Err(why) = validate_room_id(&room_id)
        {
            return self.reply_error(ErrorFrame::new(
                Some(request_id),
                ErrorCode::InvalidRoomId,
                why,
            ));
        }
        let limits = &self.ctx.config.limits;
        {
            let joined = self.shared.joined.load();
            if !room_id.is_empty() && joined.values().any(|j| j.room.id() == room_id) {
                return self.reply_error(ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::AlreadyJoined,
                    format!("already a member of room {room_id:?}"),
                ));
            }
            if joined.len() as u64 >= u64::from(limits.max_rooms_per_session) {
                return self.reply_error(
                    ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::TooManyJoined,
                        "this session has joined its maximum number of rooms",
                    )
                    .with_detail(ErrorDetail::Limit {
                        limit: u64::from(limits.max_rooms_per_session),
                        actual: joined.len() as u64 + 1,
                    }),
                );
            }
        }
        let ip = self.info.remote.ip();
        let access = &self.ctx.access;
        if let Err(e) = access.guard.check_join(ip, Instant::now()) {
            let error = self.guard_error(request_id, &e);
            return self.refuse_join(request_id, "join_refused", error);
        }

        // The token, if any: who the member is and which role it gets.
        let now = self.ctx.clock.now();
        let claims = match &request.token {
            Some(token) => match access
                .tokens
                .verify(token, &room_id, now.as_micros() / 1_000_000)
            {
                Ok(claims) => Some(claims),
                Err(e) => {
                    // The error names what is wrong, never the token.
                    let error = ErrorFrame::new(Some(request_id), e.code(), e.to_string());
                    return self.refuse_join(request_id, "token_rejected", error);
                }
            },
            None if access.require_join_token => {
                let error = ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::Unauthorized,
                    "this server admits joins with a join token only",
                );
                return self.refuse_join(request_id, "join_refused", error);
            }
            None => None,
        };
        if let Some(claims) = &claims
            && let Some(name) = &claims.name
        {
            display.name = name.clone();
        }

        if request.password.is_some()
            && let Err(e) = access
                .guard
                .check_password_block(ip, &room_id, Instant::now())
        {
            let error = self.guard_error(request_id, &e);
            return self.refuse_join(request_id, "join_refused", error);
        }
        // A room this join may create gets its password hashed first: hashing
        // is slow, and must not happen under the registry's lock.
        if request.create.create
            && let Some(password) = &request.password
            && (room_id.is_empty() || self.ctx.registry.get(&room_id).is_none())
        {
            match access.hash(password.clone()).await {
                Some(hash) => request.create.password = Some(hash),
                None => {
                    return self.reply_error(ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::Internal,
                        "could not hash the password; retry",
                    ));
                }
            }
        }

        // A room may end between lookup and join; then look it up again.
        for _ in 0..3 {
            let (handle, created) =
                match self
                    .ctx
                    .registry
                    .get_or_create(request_id, &room_id, &request.create)
                {
                    Ok(found) => found,
                    Err(error) => {
                        if error.code == ErrorCode::RoomNotFound {
                            self.ctx
                                .access
                                .guard
                                .record_unknown_room(ip, Instant::now());
                        }
                        return self.reply_error(error);
                    }
                };
            let room_password = handle.shared.password.load_full();
            let password_verified = match (&room_password, &request.password) {
                (Some(current), Some(_)) if created && request.create.password.is_some() => {
                    // This join set the password a moment ago.
                    Some(current.generation)
                }
                (Some(current), Some(candidate)) => {
                    if self
                        .ctx
                        .access
                        .verify(&current.hash, candidate.clone())
                        .await
                    {
                        Some(current.generation)
                    } else {
                        self.ctx.access.guard.record_wrong_password(
                            ip,
                            handle.id(),
                            Instant::now(),
                        );
                        let error = ErrorFrame::new(
                            Some(request_id),
                            ErrorCode::WrongPassword,
                            format!("wrong password for room {}", handle.id()),
                        );
                        return self.refuse_join(request_id, "join_refused", error);
                    }
                }
                _ => None,
            };
            let join_access = JoinAccess {
                identity: ClientIdentity {
                    ip,
                    subject: claims.as_ref().and_then(|c| c.sub.clone()),
                },
                role: claims.as_ref().map(|c| c.role),
                password_given: request.password.is_some(),
                password_verified,
                resume_key: self.resume_token.as_deref().map(super::resume::resume_key),
                token_expires: claims
                    .as_ref()
                    .map(|c| ServerTime::from_micros(c.exp.saturating_mul(1_000_000))),
            };
            let (reply, outcome) = oneshot::channel();
            let room_request = RoomRequest::Join {
                session: self.shared.clone(),
                request_id,
                display: display.clone(),
                access: join_access,
                reply,
            };
            if handle.send(room_request).await.is_err() {
                continue;
            }
            match outcome.await {
                Ok(JoinOutcome::Joined(member)) => {
                    tracing::debug!(room = %handle.id(), member = member.0, "joined");
                    if let Some(claims) = &claims {
                        self.watch_token_expiry(claims.exp, handle.slot());
                    }
                    return;
                }
                Ok(JoinOutcome::Refused) => return,
                Ok(JoinOutcome::RoomClosed) | Err(_) => continue,
            }
        }
        self.reply_error(ErrorFrame::new(
            Some(request_id),
            ErrorCode::Internal,
            "the room closed while joining; retry",
        ));
    }

    /// Closes the session when the token it joined `slot` with expires, if
    /// it is still in that room then.
    fn watch_token_expiry(&mut self, exp_unix_secs: u64, slot: RoomSlot) {
        let at = self.ctx.clock.instant_of(ServerTime::from_micros(
            exp_unix_secs.saturating_mul(1_000_000),
        ));
        self.shared.token_deadlines().insert(slot, at);
    }

    pub(super) async fn set_password(
        &mut self,
        request_id: RequestId,
        slot: RoomSlot,
        password: Option<String>,
    ) {
        let Some(joined) = self.joined(slot) else {
            return self.reply_error(super::not_joined(Some(request_id), slot));
        };
        // Hashing costs real CPU: refuse early what the room would refuse
        // anyway (the room core checks the permission again).
        if !joined.may(Action::SetPassword) {
            let role = joined.room.shared.fanout.load().role_of(joined.member);
            return self.reply_error(ErrorFrame::new(
                Some(request_id),
                ErrorCode::Forbidden,
                format!(
                    "role {} may not set the password in room {}",
                    role.map_or("none", Role::name),
                    joined.room.id()
                ),
            ));
        }
        let hash = match password {
            Some(password) if !password.is_empty() => match self.ctx.access.hash(password).await {
                Some(hash) => Some(hash),
                None => {
                    return self.reply_error(ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::Internal,
                        "could not hash the password; retry",
                    ));
                }
            },
            _ => None,
        };
        self.to_room(request_id, slot, |session| RoomInput::SetPassword {
            session,
            request_id,
            hash,
        })
        .await;
    }
}
