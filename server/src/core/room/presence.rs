//! Presence: members whose connection dropped (reconnecting, then resumed or
//! gone), hosts that go silent (away, failover), and hosts that come back
//! (reclaim).

use super::{Member, Recipient, Reclaim, Room, RoomOutput};
use crate::core::SessionId;
use chorus_protocol::{
    ErrorCode, FailoverMode, LeaveReason, MemberId, Presence, Role, Seq, ServerMessage, ServerTime,
    TimelineOp,
};

/// The member server-initiated events name as their author.
pub(crate) const SERVER: MemberId = MemberId(0);

impl Room {
    /// The earliest deadline among reconnecting members' resume windows,
    /// hosts' heartbeats and a pending reclaim.
    pub(super) fn presence_deadline(&self) -> Option<ServerTime> {
        let members = self.members.values().filter_map(|m| {
            let resume = m
                .detached_at
                .map(|at| at.saturating_add_micros(self.config.resume_window_us));
            let heartbeat = (m.role == Role::Host && !m.silent).then(|| {
                m.last_heard
                    .saturating_add_micros(self.config.host_timeout_us)
            });
            [resume, heartbeat].into_iter().flatten().min()
        });
        let reclaim = self.reclaim.map(|r| r.deadline);
        members.chain(reclaim).min()
    }

    pub(super) fn presence_timeouts(&mut self, now: ServerTime) {
        // Resume windows that ran out: those members leave for good.
        let gone: Vec<(MemberId, LeaveReason)> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.detached_at
                    .is_some_and(|at| now >= at.saturating_add_micros(self.config.resume_window_us))
            })
            .map(|(id, m)| (*id, m.detach_reason))
            .collect();
        for (member, reason) in gone {
            self.remove_member(now, member, reason);
        }
        if self.reclaim.is_some_and(|r| now >= r.deadline) {
            self.reclaim = None;
        }
        // Hosts silent past the heartbeat timeout.
        let silent: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.role == Role::Host
                    && !m.silent
                    && now
                        >= m.last_heard
                            .saturating_add_micros(self.config.host_timeout_us)
            })
            .map(|(id, _)| *id)
            .collect();
        for host in silent {
            self.host_went_silent(now, host);
        }
    }

    fn set_presence(&mut self, member: MemberId, presence: Presence) {
        let Some(m) = self.members.get_mut(&member) else {
            return;
        };
        if m.presence == presence {
            return;
        }
        m.presence = presence;
        let seq = self.next_seq();
        self.event(
            Recipient::Everyone,
            seq,
            ServerMessage::PresenceChanged {
                room: self.slot,
                seq,
                member,
                presence,
            },
        );
    }

    fn host_went_silent(&mut self, now: ServerTime, host: MemberId) {
        let Some(m) = self.members.get_mut(&host) else {
            return;
        };
        m.silent = true;
        // A dropped connection already shows as reconnecting.
        if m.presence == Presence::Online {
            self.set_presence(host, Presence::Away);
        }
        let other_host_here = self
            .members
            .iter()
            .any(|(id, m)| *id != host && m.role == Role::Host && is_reachable(m));
        if other_host_here {
            return;
        }
        match self.config.failover {
            FailoverMode::NextMember => self.promote_substitute(now, Some(host)),
            FailoverMode::PauseTimeline => {
                self.pause_timelines(now);
                self.outputs
                    .push_back(RoomOutput::Failover(super::Failover::Paused));
            }
            FailoverMode::Nothing => {}
        }
    }

    /// Makes the delegate, or else the earliest-joined reachable editor, or
    /// else viewer, host. With `away_host`, that host steps down to editor and
    /// may reclaim the role within the reclaim window.
    pub(super) fn promote_substitute(&mut self, now: ServerTime, away_host: Option<MemberId>) {
        if self.config.failover != FailoverMode::NextMember {
            return;
        }
        let eligible = |id: &MemberId, m: &Member| Some(*id) != away_host && is_reachable(m);
        let delegate = self
            .delegate
            .filter(|d| self.members.get(d).is_some_and(|m| eligible(d, m)));
        let by_role = |role: Role| {
            self.members
                .iter()
                .find(|(id, m)| m.role == role && eligible(id, m))
                .map(|(id, _)| *id)
        };
        let Some(substitute) = delegate
            .or_else(|| by_role(Role::Editor))
            .or_else(|| by_role(Role::Viewer))
        else {
            return;
        };
        let Some(substitute_role) = self.members.get(&substitute).map(|m| m.role) else {
            return;
        };
        if let Some(host) = away_host {
            self.change_role(host, Role::Editor, SERVER);
            self.reclaim = Some(Reclaim {
                host,
                substitute,
                substitute_role,
                deadline: now.saturating_add_micros(self.config.reclaim_window_us),
            });
        }
        self.change_role(substitute, Role::Host, SERVER);
        self.outputs
            .push_back(RoomOutput::Failover(if away_host.is_some() {
                super::Failover::HostAway
            } else {
                super::Failover::HostLeft
            }));
    }

    /// Sets a role and tells everyone (no permission checks: the caller
    /// decided); returns the event's seq, or `None` when nothing changed.
    pub(super) fn change_role(
        &mut self,
        member: MemberId,
        role: Role,
        by: MemberId,
    ) -> Option<Seq> {
        let m = self.members.get_mut(&member)?;
        if m.role == role {
            return None;
        }
        let from = m.role;
        m.role = role;
        let seq = self.next_seq();
        self.event(
            Recipient::Everyone,
            seq,
            ServerMessage::RoleChanged {
                room: self.slot,
                seq,
                member,
                role,
                by,
            },
        );
        self.outputs.push_back(RoomOutput::RoleChanged { member });
        self.audit(super::AuditEvent::RoleChanged {
            by,
            member,
            from,
            to: role,
        });
        Some(seq)
    }

    fn pause_timelines(&mut self, now: ServerTime) {
        let playing: Vec<String> = self
            .timelines
            .values()
            .filter(|t| t.playing)
            .map(|t| t.name.clone())
            .collect();
        for name in playing {
            self.apply_timeline(now, &name, &TimelineOp::Pause, now, SERVER);
        }
    }

    /// The member behind `session` was heard from: it is not away, and a
    /// host returning within its reclaim window gets its role back.
    pub(super) fn heard_from(&mut self, now: ServerTime, session: SessionId) {
        let Some(member) = self.by_session.get(&session).copied() else {
            return;
        };
        let Some(m) = self.members.get_mut(&member) else {
            return;
        };
        m.last_heard = now;
        let was_silent = std::mem::replace(&mut m.silent, false);
        if m.presence == Presence::Away {
            self.set_presence(member, Presence::Online);
        }
        if was_silent {
            self.try_reclaim(now, member);
        }
    }

    fn try_reclaim(&mut self, now: ServerTime, member: MemberId) {
        let Some(reclaim) = self
            .reclaim
            .filter(|r| r.host == member && now < r.deadline)
        else {
            return;
        };
        self.reclaim = None;
        self.change_role(member, Role::Host, SERVER);
        self.outputs
            .push_back(RoomOutput::Failover(super::Failover::Reclaimed));
        if self
            .members
            .get(&reclaim.substitute)
            .is_some_and(|m| m.role == Role::Host)
        {
            self.change_role(reclaim.substitute, reclaim.substitute_role, SERVER);
        }
    }

    /// The session's connection dropped. With a resume window its member
    /// stays, reconnecting; without one it leaves.
    pub(super) fn detach(&mut self, now: ServerTime, session: SessionId, reason: LeaveReason) {
        let Some(member) = self.by_session.get(&session).copied() else {
            return;
        };
        if self.config.resume_window_us == 0 {
            return self.remove_member(now, member, reason);
        }
        self.by_session.remove(&session);
        self.outputs
            .push_back(RoomOutput::MemberRemoved { session, member });
        if let Some(m) = self.members.get_mut(&member) {
            m.detached_at = Some(now);
            m.detach_reason = reason;
        }
        self.set_presence(member, Presence::Reconnecting);
    }

    /// A resumed session takes its member back, and gets what it missed.
    pub(super) fn reattach(
        &mut self,
        now: ServerTime,
        session: SessionId,
        member: MemberId,
        last_seq: Option<Seq>,
        resume_key: Option<super::ResumeKey>,
    ) {
        let Some(m) = self.members.get(&member) else {
            return self.send(
                Recipient::Session(session),
                ServerMessage::ResumeLost {
                    room: self.slot,
                    code: ErrorCode::NotJoined,
                },
            );
        };
        let old_session = m.session;
        // The old connection may not have been noticed dead yet: cut its routing.
        if self.by_session.get(&old_session) == Some(&member) {
            self.by_session.remove(&old_session);
            self.outputs.push_back(RoomOutput::MemberRemoved {
                session: old_session,
                member,
            });
        }
        let role = m.role;
        if let Some(m) = self.members.get_mut(&member) {
            m.session = session;
            m.detached_at = None;
            m.last_heard = now;
            m.resume_key = resume_key;
        }
        self.by_session.insert(session, member);
        self.outputs
            .push_back(RoomOutput::MemberAdded { session, member });
        let missed = last_seq.and_then(|seq| self.events_after(seq));
        match missed {
            Some(missed) => {
                let missed: Vec<ServerMessage> = missed.into_iter().cloned().collect();
                self.send(
                    Recipient::Session(session),
                    ServerMessage::Resumed {
                        room: self.slot,
                        member,
                        snapshot: None,
                    },
                );
                for message in missed {
                    self.send(Recipient::Session(session), message);
                }
            }
            None => {
                let snapshot = self.snapshot(member, role);
                self.send(
                    Recipient::Session(session),
                    ServerMessage::Resumed {
                        room: self.slot,
                        member,
                        snapshot: Some(snapshot),
                    },
                );
            }
        }
        self.set_presence(member, Presence::Online);
        if self.members.get(&member).is_some_and(|m| m.silent) {
            if let Some(m) = self.members.get_mut(&member) {
                m.silent = false;
            }
            self.try_reclaim(now, member);
        }
    }
}

/// Whether a member can act now (connected and not silent).
fn is_reachable(m: &Member) -> bool {
    m.presence == Presence::Online && !m.silent
}
