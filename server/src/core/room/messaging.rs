//! Messages that are not room state: direct messages, broadcasts, snapshots
//! on request, the failover delegate, and packs becoming available.

use super::{Recipient, Room};
use crate::core::SessionId;
use chorus_protocol::{
    Action, Audience, ErrorCode, ErrorFrame, MemberId, PackInfo, Presence, RequestId, ServerMessage,
};

impl Room {
    pub(super) fn direct(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        to: MemberId,
        kind: String,
        payload: Vec<u8>,
    ) {
        let Some((from, _)) = self.authorize(
            session,
            request_id,
            (Action::DirectMessages, ""),
            None,
            || "send direct messages".to_owned(),
        ) else {
            return;
        };
        let target = match self.members.get(&to) {
            Some(m) if m.presence != Presence::Reconnecting => m.session,
            Some(_) => {
                return self.error(
                    session,
                    ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::NotJoined,
                        format!("member {} is reconnecting; try again", to.0),
                    ),
                );
            }
            None => {
                return self.error(
                    session,
                    ErrorFrame::new(
                        Some(request_id),
                        ErrorCode::NotJoined,
                        format!("member {} is not in room {}", to.0, self.id),
                    ),
                );
            }
        };
        self.send(
            Recipient::Session(target),
            ServerMessage::DirectMessage {
                room: self.slot,
                from,
                kind,
                payload,
            },
        );
        let seq = self.last_seq;
        self.ack(session, request_id, seq);
    }

    pub(super) fn broadcast(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        audience: Audience,
        kind: String,
        payload: Vec<u8>,
    ) {
        let Some((from, _)) = self.authorize(
            session,
            request_id,
            (Action::SendCommands, &kind),
            None,
            || format!("send {kind:?} messages"),
        ) else {
            return;
        };
        let to = match audience {
            Audience::Everyone => Recipient::Everyone,
            Audience::Others => Recipient::EveryoneExcept(session),
            Audience::Role(wanted) => Recipient::Sessions(
                self.members
                    .values()
                    .filter(|m| m.role == wanted && m.presence != Presence::Reconnecting)
                    .map(|m| m.session)
                    .collect(),
            ),
        };
        self.send(
            to,
            ServerMessage::BroadcastMessage {
                room: self.slot,
                from,
                kind,
                payload,
            },
        );
        let seq = self.last_seq;
        self.ack(session, request_id, seq);
    }

    pub(super) fn send_snapshot(&mut self, session: SessionId, request_id: RequestId) {
        let Some((member, role)) = self.member_of(session, request_id) else {
            return;
        };
        let snapshot = self.snapshot(member, role);
        self.send(
            Recipient::Session(session),
            ServerMessage::Snapshot {
                request_id,
                snapshot,
            },
        );
    }

    pub(super) fn set_delegate(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        delegate: Option<MemberId>,
    ) {
        let Some(_) = self.authorize(session, request_id, (Action::GrantRoles, ""), None, || {
            "name a delegate".to_owned()
        }) else {
            return;
        };
        if let Some(member) = delegate
            && !self.members.contains_key(&member)
        {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::NotJoined,
                    format!("member {} is not in room {}", member.0, self.id),
                ),
            );
        }
        self.delegate = delegate;
        let seq = self.last_seq;
        self.ack(session, request_id, seq);
    }

    /// A pack's content is stored for this room: announce it, once. With a
    /// request (the content was already stored), the uploader's permission is
    /// checked here; a completed upload was checked when it was announced.
    pub(super) fn pack_added(
        &mut self,
        session: SessionId,
        request_id: Option<RequestId>,
        pack: PackInfo,
    ) {
        if let Some(request_id) = request_id {
            let Some((member, role)) = self.member_of(session, request_id) else {
                return;
            };
            if self.refuse_in_relay_room(session, request_id, "packs") {
                return;
            }
            if !self.allows(role, Action::UploadPacks, "") {
                return self.forbidden(
                    session,
                    request_id,
                    (member, role),
                    Action::UploadPacks,
                    "upload packs",
                );
            }
        } else if self.config.kind == chorus_protocol::RoomKind::Relay {
            return;
        }
        if self.packs.iter().any(|p| p.hash == pack.hash) {
            // Already announced: the uploader just gets its answer.
            if let Some(request_id) = request_id {
                let seq = self.last_seq;
                self.ack(session, request_id, seq);
            }
            return;
        }
        let seq = self.next_seq();
        self.packs.push(pack.clone());
        self.event(
            Recipient::Everyone,
            seq,
            ServerMessage::PackAvailable {
                room: self.slot,
                seq,
                pack,
            },
        );
        if let Some(request_id) = request_id {
            self.ack(session, request_id, seq);
        }
    }
}
