//! Packs: files shared through a room (images, short videos, asset
//! bundles), stored by the server under their SHA-256 and fetched by any
//! member. [`Room::upload_pack`](crate::Room::upload_pack) and
//! [`Room::fetch_pack`](crate::Room::fetch_pack) use this module.
//!
//! Upload: the client announces the pack (`PackUpload`: hash, name, media
//! type, size). The server answers `Ack` when the room already has it, or
//! `PackUploadReady` with the offset to send from (non-zero when an upload cut
//! short resumes); the content then goes on a unidirectional stream of its own
//! (WebTransport) or in pack-lane messages of at most 16 KiB (WebSocket). When
//! the last byte is in, the server checks the hash and the media type, and
//! every member (the uploader too) gets [`RoomEvent::PackAvailable`]: that is
//! when the upload resolves.
//!
//! Fetch: `PackFetch` with the hash and the offset to start from; the content
//! comes on a server-opened stream (WebTransport) or in pack-lane messages
//! (WebSocket). The client checks it against the hash.
//!
//! Both survive a dropped connection: after the resume, an upload announces
//! the pack again and goes on from the offset the server reports (so it does
//! after a `Conflict` about its offset), a fetch asks for the rest from the
//! offset it reached.

use crate::driver::{PackPiece, Reply, RoomShared, Shared, lock};
use crate::error::RequestError;
use crate::replica::RoomEvent;
use bytes::Bytes;
use chorus_protocol::{ClientMessage, ErrorCode, LimitViolation, PackInfo};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant as Deadline;
use tracing::debug;

/// How many times one upload or fetch starts over after a dropped connection.
const MAX_ATTEMPTS: u32 = 16;

/// The SHA-256 of `content`: a pack's hash.
///
/// ```
/// let hash = chorus_client::pack_hash(b"abc");
/// assert_eq!(hash[..4], [0xba, 0x78, 0x16, 0xbf]);
/// ```
pub fn pack_hash(content: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

fn not_joined_or_closed(shared: &Shared) -> RequestError {
    match shared.close_reason() {
        Some(reason) => RequestError::Closed(reason),
        None => RequestError::NotJoined,
    }
}

/// Whether an interrupted transfer should start over: the connection
/// dropped, or (an upload) the server expected its content from another
/// offset (`Conflict`, PROTOCOL.md §22.5), which announcing again tells.
fn retry(error: &RequestError, attempt: u32, room: &RoomShared) -> bool {
    let interrupted = error.is_connection_lost() || error.code() == Some(ErrorCode::Conflict);
    interrupted && attempt < MAX_ATTEMPTS && room.joined.load(Ordering::SeqCst)
}

/// Uploads `content` to `room` (see the [module docs](self)).
pub(crate) async fn upload(
    shared: &Arc<Shared>,
    room: &Arc<RoomShared>,
    name: &str,
    media_type: &str,
    content: Bytes,
) -> Result<PackInfo, RequestError> {
    let max = u64::from(shared.hello.limits.max_pack_bytes);
    let size = content.len() as u64;
    if size > max {
        return Err(RequestError::Limit(LimitViolation {
            field: "pack size",
            limit: max,
            actual: size,
        }));
    }
    let hash = pack_hash(&content);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match upload_once(shared, room, &hash, name, media_type, &content).await {
            Err(e) if retry(&e, attempt, room) => {
                debug!(attempt, "pack upload interrupted; resuming it");
            }
            other => return other,
        }
    }
}

async fn upload_once(
    shared: &Arc<Shared>,
    room: &Arc<RoomShared>,
    hash: &[u8; 32],
    name: &str,
    media_type: &str,
    content: &Bytes,
) -> Result<PackInfo, RequestError> {
    let timeout = shared.options.request_timeout;
    // Subscribed before the announcement, so `PackAvailable` cannot slip by.
    let mut events = lock(&room.inner).subscribe_events();
    let slot = room.slot;
    let mut pending = shared
        .start_request(
            |request_id| ClientMessage::PackUpload {
                request_id,
                room: slot,
                hash: hash.to_vec(),
                name: name.to_owned(),
                media_type: media_type.to_owned(),
                size: content.len() as u64,
            },
            None,
            Deadline::now() + timeout,
        )
        .await?;
    let offset = match pending.recv(Deadline::now() + timeout).await? {
        // The room has it already (its `PackAvailable` came before the Ack).
        Reply::Ack(_) => return Ok(known_pack(room, hash, name, media_type, content)),
        Reply::PackUploadReady {
            hash: ready,
            offset,
        } if ready == hash => offset,
        Reply::PackUploadReady { .. } => {
            return Err(RequestError::UnexpectedReply("pack_upload_ready"));
        }
        other => return Err(other.into_error()),
    };
    let Some(rest) = usize::try_from(offset)
        .ok()
        .and_then(|start| content.get(start..))
    else {
        return Err(RequestError::PackTransfer(format!(
            "the server asked for content from offset {offset} of {} bytes",
            content.len()
        )));
    };
    debug!(offset, len = rest.len(), "sending pack content");
    // On the connection the announcement went out on: after a drop, the
    // upload is announced again on the next one.
    if let Err(e) = pending
        .conn
        .link
        .send_pack(hash, offset, content.slice_ref(rest))
        .await
    {
        // The connection dropped (the request's `Lost` follows), or the
        // server stopped the stream after an error (which follows, with the
        // request's id): either way the answer comes below.
        debug!(error = %e, "pack content not sent whole");
    }
    let deadline = Deadline::now() + timeout;
    loop {
        if let Some(pack) = lock(&room.inner).replica.pack(hash) {
            return Ok(pack.clone());
        }
        tokio::select! {
            reply = pending.recv(deadline) => {
                return Err(match reply {
                    Ok(reply) => reply.into_error(),
                    Err(e) => e,
                });
            }
            event = events.recv() => match event {
                Ok(RoomEvent::PackAvailable { pack, .. }) if pack.hash == hash => return Ok(pack),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(not_joined_or_closed(shared));
                }
            },
        }
    }
}

/// The room's record of a pack it already had, or one made from what was
/// announced (the replica should always have it: the event precedes the Ack).
fn known_pack(
    room: &RoomShared,
    hash: &[u8; 32],
    name: &str,
    media_type: &str,
    content: &Bytes,
) -> PackInfo {
    lock(&room.inner)
        .replica
        .pack(hash)
        .cloned()
        .unwrap_or_else(|| PackInfo {
            hash: hash.to_vec(),
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            size: content.len() as u64,
            uploader: room.me(),
        })
}

/// How one fetch attempt ended.
enum Fetched {
    Complete,
    /// Cut short; the next attempt goes on from where this one got.
    Interrupted,
}

/// Fetches the pack `hash` from `room` and checks its SHA-256.
pub(crate) async fn fetch(
    shared: &Arc<Shared>,
    room: &Arc<RoomShared>,
    hash: &[u8],
) -> Result<Bytes, RequestError> {
    if hash.len() != 32 {
        return Err(RequestError::Limit(LimitViolation {
            field: "pack hash",
            limit: 32,
            actual: hash.len() as u64,
        }));
    }
    let mut content = Vec::new();
    let mut size = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = match fetch_once(shared, room, hash, &mut content, &mut size).await {
            Ok(Fetched::Complete) => break,
            Ok(Fetched::Interrupted) => RequestError::ConnectionLost,
            Err(e) => e,
        };
        if !retry(&outcome, attempt, room) {
            return Err(outcome);
        }
        debug!(
            attempt,
            have = content.len(),
            "pack fetch interrupted; resuming it"
        );
    }
    if pack_hash(&content) != hash {
        return Err(RequestError::PackHashMismatch);
    }
    Ok(Bytes::from(content))
}

async fn fetch_once(
    shared: &Arc<Shared>,
    room: &Arc<RoomShared>,
    hash: &[u8],
    content: &mut Vec<u8>,
    size: &mut Option<u64>,
) -> Result<Fetched, RequestError> {
    let timeout = shared.options.request_timeout;
    let max = u64::from(shared.hello.limits.max_pack_bytes);
    let (tx, mut pieces) = mpsc::unbounded_channel();
    let slot = room.slot;
    let offset = content.len() as u64;
    let mut deadline = Deadline::now() + timeout;
    let mut pending = shared
        .start_request(
            |request_id| ClientMessage::PackFetch {
                request_id,
                room: slot,
                hash: hash.to_vec(),
                offset,
            },
            Some(tx),
            deadline,
        )
        .await?;
    let mut pieces_open = true;
    loop {
        tokio::select! {
            reply = pending.recv(deadline) => {
                return match reply {
                    Err(RequestError::ConnectionLost) => Ok(Fetched::Interrupted),
                    Err(e) => Err(e),
                    Ok(reply) => Err(reply.into_error()),
                };
            }
            piece = pieces.recv(), if pieces_open => match piece {
                Some(PackPiece::Data { hash: of, offset, size: total, bytes }) => {
                    if of != hash {
                        return Err(RequestError::PackTransfer("content of another pack".into()));
                    }
                    if total > max || size.is_some_and(|known| known != total) {
                        return Err(RequestError::PackTransfer(format!(
                            "the pack's size changed or exceeds the limit: {total} bytes"
                        )));
                    }
                    *size = Some(total);
                    if offset != content.len() as u64 {
                        return Err(RequestError::PackTransfer(format!(
                            "content from offset {offset}, expected {}",
                            content.len()
                        )));
                    }
                    if content.len() as u64 + bytes.len() as u64 > total {
                        return Err(RequestError::PackTransfer(
                            "more content than the pack's size".into(),
                        ));
                    }
                    content.extend_from_slice(&bytes);
                    if content.len() as u64 == total {
                        return Ok(Fetched::Complete);
                    }
                    // Progress: the timeout counts from the last piece.
                    deadline = Deadline::now() + timeout;
                }
                Some(PackPiece::End) => {
                    debug!(have = content.len(), "the pack stream ended early");
                    return Ok(Fetched::Interrupted);
                }
                Some(PackPiece::Failed(error)) => {
                    debug!(have = content.len(), %error, "the pack stream failed");
                    return Ok(Fetched::Interrupted);
                }
                // The connection dropped (its downloads were let go): the
                // request's own `Lost` follows.
                None => pieces_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256() {
        // FIPS 180-2 test vectors.
        let hex = |h: [u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(pack_hash(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(pack_hash(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
