//! Packs through a session: announcing an upload, receiving its bytes (a
//! WebTransport stream or WebSocket pack-lane chunks), and sending a pack to
//! a member who fetches it.
//!
//! The [`PackStore`](crate::packs::PackStore) keeps the content and checks
//! sizes, hashes and media types; the room announces a pack (and checks the
//! uploader's permission again). This module only moves bytes between them,
//! off the session's control loop, never holding more than one chunk.

use super::{PackDownload, PackStreamRx, Session, SessionContext, SessionShared, TransportReader};
use crate::core::RoomInput;
use crate::packs::{Announce, PackHash, RoomKey, WriteOutcome, parse_hash};
use crate::rooms::RoomRequest;
use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::MAX_PACK_HEADER_BYTES;
use chorus_protocol::{
    Action, ErrorCode, ErrorFrame, PackStreamHeader, RequestId, RoomKind, RoomSlot, ServerMessage,
    split_pack_message,
};
use std::sync::Arc;
use std::time::Instant;

/// Pack downloads one session may have in flight; more wait their turn.
pub(super) const DOWNLOADS_PER_SESSION: usize = 4;

/// An upload this session announced and may now send.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingUpload {
    pub slot: RoomSlot,
    pub request_id: RequestId,
}

impl SessionShared {
    fn uploads(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<PackHash, PendingUpload>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an error to this session's client (from a pack task).
    fn tell(&self, error: ErrorFrame) {
        let _ = self
            .outbox
            .push(Bytes::from(chorus_protocol::encode_message(
                &ServerMessage::Error(error),
            )));
    }
}

/// Stores one chunk of an announced upload; when it completes, the room
/// announces the pack. Errors are for the client (with the upload's request id).
async fn write_upload(
    ctx: &SessionContext,
    shared: &SessionShared,
    hash: PackHash,
    offset: u64,
    chunk: &[u8],
) -> Result<(), ErrorFrame> {
    let Some(upload) = shared.uploads().get(&hash).copied() else {
        return Err(ErrorFrame::new(
            None,
            ErrorCode::PackNotFound,
            "no upload of that pack was announced on this session (send PackUpload first)",
        ));
    };
    let request_id = Some(upload.request_id);
    let key = RoomKey::slot(upload.slot);
    match ctx.packs.write(&key, &hash, offset, chunk, Instant::now()) {
        Ok(WriteOutcome::Partial { .. }) => Ok(()),
        Ok(WriteOutcome::Complete(pack)) => {
            shared.uploads().remove(&hash);
            ctx.stats.pack_bytes_in.add(pack.size);
            let Some(joined) = shared.joined.load().get(&upload.slot).cloned() else {
                // The uploader left meanwhile; the room will not announce it.
                return Ok(());
            };
            // The content goes to disk ahead of the room's listing of it:
            // the store commits in order, so no commit has a room listing
            // content it lacks.
            if let Some(store) = ctx
                .registry
                .store()
                .filter(|s| s.durability().tracks_changes())
                && let Some((content, epoch)) = ctx.packs.content(&hash)
            {
                let _ = store.put_pack(hash, content, epoch).await;
            }
            let _ = joined
                .room
                .send(RoomRequest::Input(RoomInput::PackAdded {
                    session: shared.id,
                    request_id: None,
                    pack,
                }))
                .await;
            Ok(())
        }
        Err(e) => {
            if matches!(
                e.code(),
                ErrorCode::HashMismatch | ErrorCode::MediaTypeRefused
            ) {
                // The store dropped the upload; so does the session.
                shared.uploads().remove(&hash);
            }
            Err(e.to_frame(request_id))
        }
    }
}

/// Reads one incoming pack stream: its header, then its content, chunk by chunk.
async fn receive_stream(
    ctx: Arc<SessionContext>,
    shared: Arc<SessionShared>,
    mut rx: PackStreamRx,
) {
    // The header: at most a varint and MAX_PACK_HEADER_BYTES.
    let mut head = BytesMut::new();
    let (hash, mut offset, rest) = loop {
        match rx.recv().await {
            Some(Ok(bytes)) => head.extend_from_slice(&bytes),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "pack stream failed before its header");
                return;
            }
            None => {
                return shared.tell(ErrorFrame::new(
                    None,
                    ErrorCode::Malformed,
                    "a pack stream ended before its header",
                ));
            }
        }
        match split_pack_message(&head) {
            Ok((PackStreamHeader::Upload { hash, offset }, rest)) => {
                let Ok(hash) = parse_hash(&hash) else {
                    return;
                };
                break (hash, offset, Bytes::copy_from_slice(rest));
            }
            Ok((PackStreamHeader::Download { .. }, _)) => {
                return shared.tell(ErrorFrame::new(
                    None,
                    ErrorCode::ProtocolViolation,
                    "a client's pack stream must start with an Upload header",
                ));
            }
            // Not all of the header is here yet.
            Err(_) if head.len() <= MAX_PACK_HEADER_BYTES + 5 => {}
            Err(e) => {
                return shared.tell(
                    ErrorFrame::new(None, e.code(), format!("bad pack stream header: {e}"))
                        .with_detail(e.detail()),
                );
            }
        }
    };
    let mut next = Some(Ok(rest));
    loop {
        let chunk = match next.take() {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "pack stream failed; the client can resume");
                return;
            }
            None => return,
        };
        if !chunk.is_empty() {
            if let Err(error) = write_upload(&ctx, &shared, hash, offset, &chunk).await {
                return shared.tell(error);
            }
            offset = offset.saturating_add(chunk.len() as u64);
        }
        next = rx.recv().await;
        if next.is_none() {
            return;
        }
    }
}

impl<R: TransportReader> Session<R> {
    fn pack_room(
        &self,
        request_id: RequestId,
        slot: RoomSlot,
    ) -> Result<super::JoinedRoom, ErrorFrame> {
        let joined = self
            .joined(slot)
            .ok_or_else(|| super::not_joined(Some(request_id), slot))?;
        if joined.room.shared.kind == RoomKind::Relay {
            return Err(ErrorFrame::new(
                Some(request_id),
                ErrorCode::NotStored,
                format!(
                    "room {} is a relay room: it keeps no packs",
                    joined.room.id()
                ),
            ));
        }
        Ok(joined)
    }

    pub(super) async fn pack_upload(
        &mut self,
        request_id: RequestId,
        slot: RoomSlot,
        hash: Vec<u8>,
        name: String,
        media_type: String,
        size: u64,
    ) {
        let joined = match self.pack_room(request_id, slot) {
            Ok(joined) => joined,
            Err(error) => return self.reply_error(error),
        };
        // Refuse early what the room would refuse (it checks again).
        if !joined.may(Action::UploadPacks) {
            return self.reply_error(ErrorFrame::new(
                Some(request_id),
                ErrorCode::Forbidden,
                format!(
                    "your role may not upload packs in room {}",
                    joined.room.id()
                ),
            ));
        }
        let hash = match parse_hash(&hash) {
            Ok(hash) => hash,
            Err(e) => return self.reply_error(e.to_frame(Some(request_id))),
        };
        let key = RoomKey::slot(slot);
        let announced = self.ctx.packs.announce(
            &key,
            joined.member,
            &hash,
            &name,
            &media_type,
            size,
            Instant::now(),
        );
        match announced {
            Ok(Announce::AlreadyAvailable { pack, .. }) => {
                let request = RoomRequest::Input(RoomInput::PackAdded {
                    session: self.shared.id,
                    request_id: Some(request_id),
                    pack,
                });
                if joined.room.send(request).await.is_err() {
                    self.reply_error(super::not_joined(Some(request_id), slot));
                }
            }
            Ok(Announce::Upload { offset }) => {
                self.shared
                    .uploads()
                    .insert(hash, PendingUpload { slot, request_id });
                self.reply(ServerMessage::PackUploadReady {
                    request_id,
                    hash: hash.to_vec(),
                    offset,
                });
            }
            Err(e) => self.reply_error(e.to_frame(Some(request_id))),
        }
    }

    /// One WebSocket pack-lane message: an upload header and a chunk.
    pub(super) async fn on_pack_chunk(&mut self, message: Bytes) {
        let (header, chunk) = match split_pack_message(&message) {
            Ok(split) => split,
            Err(e) => {
                return self.reply_error(
                    ErrorFrame::new(None, e.code(), format!("bad pack chunk: {e}"))
                        .with_detail(e.detail()),
                );
            }
        };
        let PackStreamHeader::Upload { hash, offset } = header else {
            return self.reply_error(ErrorFrame::new(
                None,
                ErrorCode::ProtocolViolation,
                "a client's pack chunk must carry an Upload header",
            ));
        };
        let hash = match parse_hash(&hash) {
            Ok(hash) => hash,
            Err(e) => return self.reply_error(e.to_frame(None)),
        };
        if let Err(error) = write_upload(&self.ctx, &self.shared, hash, offset, chunk).await {
            self.reply_error(error);
        }
    }

    /// A WebTransport pack stream: read off the control loop.
    pub(super) fn on_pack_stream(&mut self, rx: PackStreamRx) {
        tokio::spawn(receive_stream(self.ctx.clone(), self.shared.clone(), rx));
    }

    pub(super) async fn pack_fetch(
        &mut self,
        request_id: RequestId,
        slot: RoomSlot,
        hash: Vec<u8>,
        offset: u64,
    ) {
        if let Err(error) = self.pack_room(request_id, slot) {
            return self.reply_error(error);
        }
        let hash = match parse_hash(&hash) {
            Ok(hash) => hash,
            Err(e) => return self.reply_error(e.to_frame(Some(request_id))),
        };
        let key = RoomKey::slot(slot);
        let Some(info) = self.ctx.packs.info(&key, &hash) else {
            return self.reply_error(ErrorFrame::new(
                Some(request_id),
                ErrorCode::PackNotFound,
                "no pack with that hash in this room",
            ));
        };
        if offset > info.size {
            return self.reply_error(ErrorFrame::new(
                Some(request_id),
                ErrorCode::LimitExceeded,
                format!("offset {offset} is past the pack's {} bytes", info.size),
            ));
        }
        let ctx = self.ctx.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let Ok(_turn) = shared.downloads.acquire().await else {
                return;
            };
            // One read of the whole rest: the store hands out a slice of the
            // shared content, not a copy.
            let content = match ctx.packs.read(
                &key,
                &hash,
                offset,
                usize::try_from(info.size).unwrap_or(usize::MAX),
            ) {
                Ok(content) => content,
                Err(e) => return shared.tell(e.to_frame(Some(request_id))),
            };
            let sent = content.len() as u64;
            let download = PackDownload {
                request_id,
                hash,
                offset,
                size: info.size,
                content,
            };
            match shared.packs.send_pack(download).await {
                Ok(()) => ctx.stats.pack_bytes_out.add(sent),
                Err(e) => {
                    tracing::debug!(error = %e, "pack download cut short; the client can resume")
                }
            }
        });
    }
}
