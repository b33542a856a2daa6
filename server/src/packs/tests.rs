//! Deterministic tests of the pack store: time is an `Instant` the tests move
//! by hand, content is made up with the right magic bytes.

use super::*;
use bytes::Bytes;
use chorus_protocol::{ErrorCode, ErrorDetail, Limits, MemberId, PackInfo, RoomSlot};
use ring::digest::{SHA256, digest};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PNG_MAGIC: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fn sha(content: &[u8]) -> PackHash {
    parse_hash(digest(&SHA256, content).as_ref()).expect("SHA-256 is 32 bytes")
}

/// `len` bytes that start like `kind`; `seed` makes different contents.
fn content(kind: MediaKind, len: usize, seed: u8) -> Vec<u8> {
    let magic: &[u8] = match kind {
        MediaKind::Jpeg => &[0xFF, 0xD8, 0xFF, 0xE0],
        MediaKind::Png => &PNG_MAGIC,
        MediaKind::Webp => b"RIFF\x24\x00\x00\x00WEBPVP8 ",
        MediaKind::Mp4 => b"\x00\x00\x00\x18ftypisom",
        MediaKind::Webm => &[0x1A, 0x45, 0xDF, 0xA3, 0x9F],
    };
    let mut v: Vec<u8> = magic.iter().copied().take(len).collect();
    let mut i = 0u8;
    while v.len() < len {
        v.push(seed.wrapping_mul(31).wrapping_add(i));
        i = i.wrapping_add(1);
    }
    v
}

fn png(len: usize, seed: u8) -> Vec<u8> {
    content(MediaKind::Png, len, seed)
}

/// Small limits, so every edge is cheap to reach.
fn small() -> PackSettings {
    PackSettings {
        max_pack_bytes: 1000,
        max_packs_per_room: 3,
        max_bytes_per_room: 2500,
        max_name_len: 16,
        max_pending_uploads_per_room: 2,
        max_store_bytes: 10_000,
        upload_idle_timeout: Duration::from_secs(60),
        ..PackSettings::default()
    }
}

fn room(id: &str) -> RoomKey {
    RoomKey::id(id)
}

const ALICE: MemberId = MemberId(1);
const BOB: MemberId = MemberId(2);

/// Announces and uploads `bytes` in `chunk`-sized writes; panics unless it
/// completes at the last write.
#[allow(clippy::too_many_arguments)]
fn upload(
    store: &PackStore,
    room: &RoomKey,
    uploader: MemberId,
    bytes: &[u8],
    name: &str,
    media_type: &str,
    chunk: usize,
    now: Instant,
) -> PackInfo {
    let hash = sha(bytes);
    let announced = store
        .announce(
            room,
            uploader,
            &hash,
            name,
            media_type,
            bytes.len() as u64,
            now,
        )
        .expect("announce");
    assert_eq!(announced, Announce::Upload { offset: 0 });
    let mut offset = 0usize;
    loop {
        let end = (offset + chunk).min(bytes.len());
        let outcome = store
            .write(room, &hash, offset as u64, &bytes[offset..end], now)
            .expect("write");
        if end == bytes.len() {
            store.assert_consistent();
            match outcome {
                WriteOutcome::Complete(info) => return info,
                other => panic!("expected Complete, got {other:?}"),
            }
        }
        assert_eq!(
            outcome,
            WriteOutcome::Partial {
                received: end as u64
            }
        );
        offset = end;
    }
}

fn info(bytes: &[u8], name: &str, media_type: &str, uploader: MemberId) -> PackInfo {
    PackInfo {
        hash: sha(bytes).to_vec(),
        name: name.into(),
        media_type: media_type.into(),
        size: bytes.len() as u64,
        uploader,
    }
}

fn limit_err(limit: PackLimit, max: u64, actual: u64) -> PackError {
    PackError::LimitExceeded { limit, max, actual }
}

// ---- uploads ----

#[test]
fn upload_in_chunks_completes_and_is_listed_and_readable() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(950, 1);
    let hash = sha(&bytes);

    assert_eq!(
        store.announce(&r, ALICE, &hash, "cat.png", "image/png", 950, now),
        Ok(Announce::Upload { offset: 0 })
    );
    assert_eq!(store.received(&r, &hash), Some(0));
    assert_eq!(
        store.read(&r, &hash, 0, 10),
        Err(PackError::NotFound),
        "not while pending"
    );
    assert_eq!(store.info(&r, &hash), None);
    assert!(store.list(&r).is_empty());

    for (i, chunk) in bytes.chunks(100).enumerate() {
        let offset = i as u64 * 100;
        let outcome = store.write(&r, &hash, offset, chunk, now).expect("write");
        let end = offset + chunk.len() as u64;
        if end < 950 {
            assert_eq!(outcome, WriteOutcome::Partial { received: end });
            assert_eq!(store.received(&r, &hash), Some(end));
        } else {
            assert_eq!(
                outcome,
                WriteOutcome::Complete(info(&bytes, "cat.png", "image/png", ALICE))
            );
        }
        store.assert_consistent();
    }

    assert_eq!(store.received(&r, &hash), None);
    assert_eq!(
        store.list(&r),
        vec![info(&bytes, "cat.png", "image/png", ALICE)]
    );
    assert_eq!(
        store.info(&r, &hash),
        Some(info(&bytes, "cat.png", "image/png", ALICE))
    );
    assert_eq!(store.read(&r, &hash, 0, usize::MAX).expect("read"), bytes);
    assert_eq!(
        store.stats(),
        PackStats {
            contents: 1,
            content_bytes: 950,
            room_packs: 1,
            rooms: 1,
            pending_uploads: 0,
            pending_received_bytes: 0,
            pending_announced_bytes: 0,
        }
    );
    // A finished upload takes no more bytes.
    assert_eq!(
        store.write(&r, &hash, 950, b"", now),
        Err(PackError::NoUpload)
    );
}

#[test]
fn one_write_completes_and_empty_chunks_change_nothing() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(64, 2);
    let hash = sha(&bytes);
    store
        .announce(&r, ALICE, &hash, "a.png", "image/png", 64, now)
        .expect("announce");
    assert_eq!(
        store.write(&r, &hash, 0, b"", now),
        Ok(WriteOutcome::Partial { received: 0 })
    );
    assert_eq!(
        store.write(&r, &hash, 0, &bytes[..5], now),
        Ok(WriteOutcome::Partial { received: 5 })
    );
    assert_eq!(
        store.write(&r, &hash, 5, b"", now),
        Ok(WriteOutcome::Partial { received: 5 })
    );
    assert!(matches!(
        store.write(&r, &hash, 5, &bytes[5..], now),
        Ok(WriteOutcome::Complete(_))
    ));
    store.assert_consistent();
}

#[test]
fn many_tiny_writes_keep_the_buffer_within_the_announced_size() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(777, 3);
    // assert_consistent checks capacity <= announced size after every write.
    for chunk in [1, 3, 7, 64, 500] {
        store.drop_room(&r);
        let got = upload(&store, &r, ALICE, &bytes, "x.png", "image/png", chunk, now);
        assert_eq!(got.size, 777);
        let hash = sha(&bytes);
        assert_eq!(store.read(&r, &hash, 0, usize::MAX).expect("read"), bytes);
    }
    // And mid-way.
    store.drop_room(&r);
    let hash = sha(&bytes);
    store
        .announce(&r, ALICE, &hash, "x.png", "image/png", 777, now)
        .expect("announce");
    for i in 0..300u64 {
        store
            .write(&r, &hash, i, &bytes[i as usize..i as usize + 1], now)
            .expect("write");
        store.assert_consistent();
    }
}

#[test]
fn hash_mismatch_drops_the_upload() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(500, 4);
    let hash = sha(&bytes);
    let mut forged = bytes.clone();
    forged[499] ^= 1;

    store
        .announce(&r, ALICE, &hash, "a.png", "image/png", 500, now)
        .expect("announce");
    store
        .write(&r, &hash, 0, &forged[..250], now)
        .expect("first half");
    let err = store
        .write(&r, &hash, 250, &forged[250..], now)
        .expect_err("forged content");
    assert_eq!(err, PackError::HashMismatch);
    assert_eq!(err.code(), ErrorCode::HashMismatch);
    store.assert_consistent();

    assert_eq!(store.received(&r, &hash), None, "partial data dropped");
    assert_eq!(store.read(&r, &hash, 0, 1), Err(PackError::NotFound));
    assert!(store.list(&r).is_empty());
    assert_eq!(
        store.stats(),
        PackStats::default(),
        "nothing held, empty room forgotten"
    );

    // Announcing again starts from scratch, and the right bytes succeed.
    let got = upload(&store, &r, ALICE, &bytes, "a.png", "image/png", 100, now);
    assert_eq!(got, info(&bytes, "a.png", "image/png", ALICE));
}

#[test]
fn interrupted_upload_resumes_from_the_received_offset() {
    let store = PackStore::new(small());
    let t0 = Instant::now();
    let r = room("a");
    let bytes = png(900, 5);
    let hash = sha(&bytes);

    store
        .announce(&r, ALICE, &hash, "first.png", "image/png", 900, t0)
        .expect("announce");
    store.write(&r, &hash, 0, &bytes[..300], t0).expect("write");
    store
        .write(&r, &hash, 300, &bytes[300..420], t0)
        .expect("write");
    // The connection drops; the client comes back as a new member and
    // announces again.
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(
        store.announce(&r, BOB, &hash, "second.png", "IMAGE/PNG", 900, t1),
        Ok(Announce::Upload { offset: 420 })
    );
    assert_eq!(store.received(&r, &hash), Some(420));
    store.assert_consistent();
    let done = store
        .write(&r, &hash, 420, &bytes[420..], t1)
        .expect("rest");
    assert_eq!(
        done,
        WriteOutcome::Complete(info(&bytes, "second.png", "image/png", BOB)),
        "the latest announcement names the pack"
    );
    assert_eq!(store.stats().pending_uploads, 0);
    store.assert_consistent();
}

#[test]
fn announcing_another_size_or_type_for_a_pending_hash_starts_over() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(600, 6);
    let hash = sha(&bytes);
    store
        .announce(&r, ALICE, &hash, "a", "image/png", 600, now)
        .expect("announce");
    store
        .write(&r, &hash, 0, &bytes[..100], now)
        .expect("write");

    assert_eq!(
        store.announce(&r, ALICE, &hash, "a", "image/png", 599, now),
        Ok(Announce::Upload { offset: 0 })
    );
    assert_eq!(store.stats().pending_announced_bytes, 599);
    assert_eq!(store.stats().pending_uploads, 1);
    store.assert_consistent();

    store
        .write(&r, &hash, 0, &bytes[..100], now)
        .expect("write");
    assert_eq!(
        store.announce(&r, ALICE, &hash, "a", "image/jpeg", 599, now),
        Ok(Announce::Upload { offset: 0 })
    );
    store.assert_consistent();

    // Back to the truth: restart once more and finish.
    assert_eq!(
        store.announce(&r, ALICE, &hash, "a", "image/png", 600, now),
        Ok(Announce::Upload { offset: 0 })
    );
    store.write(&r, &hash, 0, &bytes, now).expect("all");
    assert_eq!(store.list(&r).len(), 1);
    store.assert_consistent();
}

#[test]
fn a_wrong_offset_is_refused_with_the_offset_to_resume_from() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(400, 7);
    let hash = sha(&bytes);
    store
        .announce(&r, ALICE, &hash, "a.png", "image/png", 400, now)
        .expect("announce");
    store
        .write(&r, &hash, 0, &bytes[..100], now)
        .expect("write");

    for offset in [0, 99, 101, 400, u64::MAX] {
        let err = store
            .write(&r, &hash, offset, &bytes[100..110], now)
            .expect_err("wrong offset");
        assert_eq!(
            err,
            PackError::WrongOffset {
                expected: 100,
                offset
            }
        );
        assert_eq!(err.code(), ErrorCode::Conflict);
        assert_eq!(
            err.detail(),
            ErrorDetail::Conflict {
                current_version: 100
            }
        );
    }
    assert_eq!(store.received(&r, &hash), Some(100), "nothing changed");
    assert!(matches!(
        store.write(&r, &hash, 100, &bytes[100..], now),
        Ok(WriteOutcome::Complete(_))
    ));
    store.assert_consistent();
}

#[test]
fn a_write_past_the_announced_size_is_refused_and_changes_nothing() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(200, 8);
    let hash = sha(&bytes);
    store
        .announce(&r, ALICE, &hash, "a.png", "image/png", 200, now)
        .expect("announce");
    store
        .write(&r, &hash, 0, &bytes[..150], now)
        .expect("write");

    let mut too_long = bytes[150..].to_vec();
    too_long.push(0);
    let err = store
        .write(&r, &hash, 150, &too_long, now)
        .expect_err("past the end");
    assert_eq!(
        err,
        PackError::PastEnd {
            size: 200,
            end: 201
        }
    );
    assert_eq!(err.code(), ErrorCode::LimitExceeded);
    assert_eq!(
        err.detail(),
        ErrorDetail::Limit {
            limit: 200,
            actual: 201
        }
    );
    assert_eq!(store.received(&r, &hash), Some(150));
    assert!(matches!(
        store.write(&r, &hash, 150, &bytes[150..], now),
        Ok(WriteOutcome::Complete(_))
    ));
    store.assert_consistent();
}

#[test]
fn writes_without_a_pending_upload_are_refused() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let bytes = png(100, 9);
    let hash = sha(&bytes);
    assert_eq!(
        store.write(&room("nowhere"), &hash, 0, &bytes, now),
        Err(PackError::NoUpload)
    );
    store
        .announce(&room("a"), ALICE, &hash, "a.png", "image/png", 100, now)
        .expect("announce");
    // Pending in room a, not in room b.
    assert_eq!(
        store.write(&room("b"), &hash, 0, &bytes, now),
        Err(PackError::NoUpload)
    );
    assert_eq!(PackError::NoUpload.code(), ErrorCode::PackNotFound);
    store.assert_consistent();
}

// ---- dedupe ----

#[test]
fn two_rooms_uploading_the_same_bytes_store_them_once() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let (a, b) = (room("a"), RoomKey::slot(RoomSlot(7)));
    let bytes = png(800, 10);
    let hash = sha(&bytes);
    upload(&store, &a, ALICE, &bytes, "cat.png", "image/png", 256, now);
    let before = store.stats();
    assert_eq!((before.contents, before.content_bytes), (1, 800));

    // Room b uploads the very same bytes: the whole upload is asked for...
    let got = upload(&store, &b, BOB, &bytes, "kitty.png", "image/png", 300, now);
    assert_eq!(got, info(&bytes, "kitty.png", "image/png", BOB));
    store.assert_consistent();
    assert_eq!(store.received(&b, &hash), None);
    assert_eq!(
        store.list(&b),
        vec![info(&bytes, "kitty.png", "image/png", BOB)]
    );
    assert_eq!(
        store.list(&a),
        vec![info(&bytes, "cat.png", "image/png", ALICE)]
    );

    // ...and then stored once: b's upload buffer is gone.
    let after = store.stats();
    assert_eq!(after.contents, 1, "one content");
    assert_eq!(after.content_bytes, 800, "its bytes once");
    assert_eq!(after.room_packs, 2);
    assert_eq!(after.rooms, 2);
    assert_eq!(
        (after.pending_uploads, after.pending_received_bytes),
        (0, 0)
    );
    assert_eq!(after.pending_announced_bytes, 0);

    // Both rooms read the very same memory.
    let from_a = store.read(&a, &hash, 0, usize::MAX).expect("read a");
    let from_b = store.read(&b, &hash, 0, usize::MAX).expect("read b");
    assert_eq!(from_a, bytes);
    assert_eq!(from_a.as_ptr(), from_b.as_ptr());

    // Each room keeps the content alive for the other.
    store.drop_room(&a);
    assert_eq!(store.read(&b, &hash, 0, usize::MAX).expect("read b"), bytes);
    assert_eq!(store.stats().contents, 1);
    store.assert_consistent();
}

#[test]
fn a_room_that_only_knows_the_hash_gets_an_upload_not_the_content() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let a = room("a");
    let bytes = png(300, 12);
    let hash = sha(&bytes);
    upload(&store, &a, ALICE, &bytes, "cat.png", "image/png", 300, now);
    let b = room("b");

    // The same answer as for content the server has never seen: upload it
    // (whatever size or type is declared: nothing is compared with, so
    // nothing is told about, the stored content).
    for (name, media_type, size) in [
        ("cat.png", "image/png", 300),
        ("cat.png", "image/png", 299),
        ("cat.jpg", "image/jpeg", 300),
        ("cat.png", "image/png", 300),
    ] {
        assert_eq!(
            store.announce(&b, BOB, &hash, name, media_type, size, now),
            Ok(Announce::Upload { offset: 0 }),
            "{name} {media_type} {size}"
        );
    }
    assert_eq!(
        store.read(&b, &hash, 0, usize::MAX),
        Err(PackError::NotFound)
    );
    assert_eq!(store.info(&b, &hash), None);
    assert!(store.list(&b).is_empty());
    store.assert_consistent();

    // Sending something else under that hash gets b nothing either.
    let other = png(300, 99);
    assert_eq!(
        store.write(&b, &hash, 0, &other, now),
        Err(PackError::HashMismatch)
    );
    assert_eq!(store.read(&b, &hash, 0, 1), Err(PackError::NotFound));

    // Declared as another type, the stored content's own bytes are refused
    // as soon as they arrive, like any upload's.
    store
        .announce(&b, BOB, &hash, "cat.jpg", "image/jpeg", 300, now)
        .expect("announce");
    assert_eq!(
        store.write(&b, &hash, 0, &bytes[..20], now),
        Err(PackError::ContentMismatch {
            declared: MediaKind::Jpeg
        })
    );
    assert!(store.list(&b).is_empty());
    let stats = store.stats();
    assert_eq!(
        (
            stats.contents,
            stats.content_bytes,
            stats.room_packs,
            stats.rooms
        ),
        (1, 300, 1, 1),
        "a's pack untouched, no entry left for b"
    );
    assert_eq!(
        store.read(&a, &hash, 0, usize::MAX).expect("a still reads"),
        bytes
    );
    store.assert_consistent();
}

#[test]
fn announcing_a_pack_the_room_has_returns_its_entry_unchanged() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(300, 11);
    let hash = sha(&bytes);
    upload(&store, &r, ALICE, &bytes, "cat.png", "image/png", 300, now);
    for _ in 0..5 {
        assert_eq!(
            store.announce(&r, BOB, &hash, "other.png", "image/png", 300, now),
            Ok(Announce::AlreadyAvailable {
                pack: info(&bytes, "cat.png", "image/png", ALICE),
            })
        );
    }
    assert_eq!(store.list(&r).len(), 1);
    assert_eq!(store.stats().room_packs, 1);
    store.assert_consistent();
}

#[test]
fn the_same_content_uploaded_by_two_rooms_at_once_is_stored_once() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let (a, b) = (room("a"), room("b"));
    let bytes = png(700, 13);
    let hash = sha(&bytes);
    for r in [&a, &b] {
        assert_eq!(
            store.announce(r, ALICE, &hash, "x.png", "image/png", 700, now),
            Ok(Announce::Upload { offset: 0 })
        );
    }
    store.write(&a, &hash, 0, &bytes[..10], now).expect("a");
    store
        .write(&b, &hash, 0, &bytes, now)
        .expect("b completes first");
    let first = store.read(&b, &hash, 0, usize::MAX).expect("read b");
    store
        .write(&a, &hash, 10, &bytes[10..], now)
        .expect("a completes");
    store.assert_consistent();
    let stats = store.stats();
    assert_eq!(
        (stats.contents, stats.content_bytes, stats.room_packs),
        (1, 700, 2)
    );
    let second = store.read(&a, &hash, 0, usize::MAX).expect("read a");
    assert_eq!(first.as_ptr(), second.as_ptr(), "a's copy was not kept");

    // The content outlives one of the rooms.
    store.drop_room(&b);
    assert_eq!(store.stats().contents, 1);
    assert_eq!(store.read(&a, &hash, 0, usize::MAX).expect("read a"), bytes);
    store.assert_consistent();
}

#[test]
fn content_stored_meanwhile_leaves_a_pending_upload_to_finish() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let (a, b) = (room("a"), room("b"));
    let bytes = png(700, 14);
    let hash = sha(&bytes);
    store
        .announce(&a, ALICE, &hash, "x.png", "image/png", 700, now)
        .expect("announce a");
    store.write(&a, &hash, 0, &bytes[..200], now).expect("a");
    upload(&store, &b, BOB, &bytes, "y.png", "image/png", 700, now);

    // Room a's client comes back: it resumes where it stopped, as if the
    // store did not have the content.
    assert_eq!(
        store.announce(&a, ALICE, &hash, "x.png", "image/png", 700, now),
        Ok(Announce::Upload { offset: 200 })
    );
    assert_eq!(store.read(&a, &hash, 0, 1), Err(PackError::NotFound));
    assert_eq!(
        store.write(&a, &hash, 200, &bytes[200..], now),
        Ok(WriteOutcome::Complete(info(
            &bytes,
            "x.png",
            "image/png",
            ALICE
        )))
    );
    let stats = store.stats();
    assert_eq!(
        (
            stats.pending_uploads,
            stats.pending_announced_bytes,
            stats.contents,
            stats.content_bytes
        ),
        (0, 0, 1, 700)
    );
    let from_a = store.read(&a, &hash, 0, usize::MAX).expect("read a");
    let from_b = store.read(&b, &hash, 0, usize::MAX).expect("read b");
    assert_eq!(from_a.as_ptr(), from_b.as_ptr(), "a's copy was not kept");
    store.assert_consistent();
}

#[test]
fn list_is_in_upload_order() {
    let store = PackStore::new(PackSettings::default());
    let now = Instant::now();
    let (a, b) = (room("a"), room("b"));
    let p1 = png(100, 1);
    let p2 = content(MediaKind::Jpeg, 100, 2);
    let p3 = content(MediaKind::Webm, 100, 3);
    upload(&store, &b, BOB, &p3, "3.webm", "video/webm", 100, now);
    upload(&store, &a, ALICE, &p1, "1.png", "image/png", 100, now);
    upload(&store, &a, ALICE, &p2, "2.jpg", "image/jpeg", 100, now);
    upload(&store, &a, ALICE, &p3, "3.webm", "video/webm", 100, now);
    let names: Vec<String> = store.list(&a).into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["1.png", "2.jpg", "3.webm"]);
}

// ---- limits, each at its edge ----

#[test]
fn pack_size_limit_at_the_edge() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let at = png(1000, 15);
    let past = png(1001, 15);
    upload(&store, &r, ALICE, &at, "a.png", "image/png", 333, now);

    let err = store
        .announce(&r, ALICE, &sha(&past), "b.png", "image/png", 1001, now)
        .expect_err("one byte too many");
    assert_eq!(err, limit_err(PackLimit::PackBytes, 1000, 1001));
    assert_eq!(err.code(), ErrorCode::LimitExceeded);
    assert_eq!(
        err.detail(),
        ErrorDetail::Limit {
            limit: 1000,
            actual: 1001
        }
    );
    assert_eq!(
        store.announce(&r, ALICE, &sha(&past), "b.png", "image/png", u64::MAX, now),
        Err(limit_err(PackLimit::PackBytes, 1000, u64::MAX))
    );
    store.assert_consistent();
}

#[test]
fn pack_count_limit_at_the_edge_counts_pending_uploads() {
    let store = PackStore::new(PackSettings {
        max_pending_uploads_per_room: 10,
        ..small()
    });
    let now = Instant::now();
    let r = room("a");
    upload(
        &store,
        &r,
        ALICE,
        &png(100, 1),
        "1.png",
        "image/png",
        100,
        now,
    );
    upload(
        &store,
        &r,
        ALICE,
        &png(100, 2),
        "2.png",
        "image/png",
        100,
        now,
    );
    // The third, pending, reaches the limit of 3.
    let third = png(100, 3);
    assert_eq!(
        store.announce(&r, ALICE, &sha(&third), "3.png", "image/png", 100, now),
        Ok(Announce::Upload { offset: 0 })
    );
    let fourth = png(100, 4);
    let err = store
        .announce(&r, ALICE, &sha(&fourth), "4.png", "image/png", 100, now)
        .expect_err("fourth pack");
    assert_eq!(err, limit_err(PackLimit::PacksPerRoom, 3, 4));
    assert_eq!(
        err.detail(),
        ErrorDetail::Limit {
            limit: 3,
            actual: 4
        }
    );

    // The same answer when the store holds the fourth for another room.
    upload(
        &store,
        &room("b"),
        BOB,
        &fourth,
        "4.png",
        "image/png",
        100,
        now,
    );
    assert_eq!(
        store.announce(&r, ALICE, &sha(&fourth), "4.png", "image/png", 100, now),
        Err(limit_err(PackLimit::PacksPerRoom, 3, 4))
    );
    // Resuming the third is not a new pack.
    assert_eq!(
        store.announce(&r, ALICE, &sha(&third), "3.png", "image/png", 100, now),
        Ok(Announce::Upload { offset: 0 })
    );
    store
        .write(&r, &sha(&third), 0, &third, now)
        .expect("third");
    assert_eq!(store.list(&r).len(), 3);
    store.assert_consistent();
}

#[test]
fn room_bytes_limit_at_the_edge_counts_pending_uploads() {
    let store = PackStore::new(PackSettings {
        max_packs_per_room: 10,
        ..small()
    });
    let now = Instant::now();
    let r = room("a");
    upload(
        &store,
        &r,
        ALICE,
        &png(1000, 1),
        "1.png",
        "image/png",
        500,
        now,
    );
    let pending = png(1000, 2);
    store
        .announce(&r, ALICE, &sha(&pending), "2.png", "image/png", 1000, now)
        .expect("pending, 2000 of 2500");
    let past = png(501, 3);
    assert_eq!(
        store.announce(&r, ALICE, &sha(&past), "3.png", "image/png", 501, now),
        Err(limit_err(PackLimit::BytesPerRoom, 2500, 2501))
    );
    // Dedupe counts the shared content in full too.
    upload(
        &store,
        &room("b"),
        BOB,
        &past,
        "3.png",
        "image/png",
        501,
        now,
    );
    assert_eq!(
        store.announce(&r, ALICE, &sha(&past), "3.png", "image/png", 501, now),
        Err(limit_err(PackLimit::BytesPerRoom, 2500, 2501))
    );
    let at = png(500, 4);
    assert_eq!(
        store.announce(&r, ALICE, &sha(&at), "4.png", "image/png", 500, now),
        Ok(Announce::Upload { offset: 0 })
    );
    store
        .write(&r, &sha(&at), 0, &at, now)
        .expect("fills the room exactly");
    store
        .write(&r, &sha(&pending), 0, &pending, now)
        .expect("the pending one completes");
    assert_eq!(
        store.list(&r).iter().map(|p| p.size).sum::<u64>(),
        2500,
        "exactly at the limit"
    );
    store.assert_consistent();
}

#[test]
fn pending_uploads_per_room_are_capped() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let (one, two, three) = (png(100, 1), png(100, 2), png(100, 3));
    store
        .announce(&r, ALICE, &sha(&one), "1.png", "image/png", 100, now)
        .expect("1");
    store
        .announce(&r, ALICE, &sha(&two), "2.png", "image/png", 100, now)
        .expect("2");
    assert_eq!(
        store.announce(&r, ALICE, &sha(&three), "3.png", "image/png", 100, now),
        Err(limit_err(PackLimit::PendingUploads, 2, 3))
    );
    // Other rooms have their own cap.
    store
        .announce(
            &room("b"),
            ALICE,
            &sha(&three),
            "3.png",
            "image/png",
            100,
            now,
        )
        .expect("room b");
    // When one completes, another may start.
    store
        .write(&r, &sha(&one), 0, &one, now)
        .expect("complete 1");
    assert_eq!(
        store.announce(&r, ALICE, &sha(&three), "3.png", "image/png", 100, now),
        Ok(Announce::Upload { offset: 0 })
    );
    store.assert_consistent();
}

#[test]
fn store_bytes_limit_at_the_edge_spans_rooms_and_counts_content_once() {
    let store = PackStore::new(PackSettings {
        max_store_bytes: 2000,
        ..small()
    });
    let now = Instant::now();
    let shared = png(1000, 1);
    upload(
        &store,
        &room("a"),
        ALICE,
        &shared,
        "s.png",
        "image/png",
        1000,
        now,
    );
    // Another room uploading the same content counts while its bytes are in
    // flight (they are held)...
    assert_eq!(
        store.announce(
            &room("b"),
            BOB,
            &sha(&shared),
            "s.png",
            "image/png",
            1000,
            now
        ),
        Ok(Announce::Upload { offset: 0 })
    );
    let small_one = png(10, 4);
    assert_eq!(
        store.announce(
            &room("c"),
            BOB,
            &sha(&small_one),
            "c.png",
            "image/png",
            10,
            now
        ),
        Err(limit_err(PackLimit::StoreBytes, 2000, 2010))
    );
    // ...and nothing more once complete: the stored copy is shared.
    store
        .write(&room("b"), &sha(&shared), 0, &shared, now)
        .expect("b completes");
    assert_eq!(store.stats().content_bytes, 1000);
    let at = png(1000, 2);
    store
        .announce(&room("c"), BOB, &sha(&at), "c.png", "image/png", 1000, now)
        .expect("2000 of 2000");
    let past = png(10, 3);
    let err = store
        .announce(&room("d"), BOB, &sha(&past), "d.png", "image/png", 10, now)
        .expect_err("2010 of 2000");
    assert_eq!(err, limit_err(PackLimit::StoreBytes, 2000, 2010));
    // Restarting the pending one with its own size is not counted twice.
    assert_eq!(
        store.announce(&room("c"), BOB, &sha(&at), "c.png", "image/png", 999, now),
        Ok(Announce::Upload { offset: 0 })
    );
    // Freeing content makes room.
    store.drop_room(&room("a"));
    store
        .announce(&room("d"), BOB, &sha(&past), "d.png", "image/png", 10, now)
        .expect_err("b still holds the shared content");
    store.drop_room(&room("b"));
    store
        .announce(&room("d"), BOB, &sha(&past), "d.png", "image/png", 10, now)
        .expect("freed");
    store.assert_consistent();
}

#[test]
fn name_and_media_type_lengths_at_the_edge() {
    let store = PackStore::new(PackSettings {
        allowed_media_types: vec!["image/png".into(), "application/x-sixteen-bytes".into()],
        ..small()
    });
    let now = Instant::now();
    let r = room("a");
    let bytes = png(100, 1);
    let hash = sha(&bytes);
    let at = "0123456789ab.png"; // 16 bytes
    let past = "0123456789abc.png";
    assert_eq!(
        store.announce(&r, ALICE, &hash, past, "image/png", 100, now),
        Err(limit_err(PackLimit::NameLen, 16, 17))
    );
    let long_type = "application/x-sixteen-bytes";
    assert_eq!(
        store.announce(&r, ALICE, &hash, "a", long_type, 100, now),
        Err(limit_err(
            PackLimit::MediaTypeLen,
            16,
            long_type.len() as u64
        ))
    );
    // Multi-byte characters count in UTF-8 bytes.
    assert_eq!(
        store.announce(&r, ALICE, &hash, "ééééééééé", "image/png", 100, now),
        Err(limit_err(PackLimit::NameLen, 16, 18))
    );
    assert_eq!(
        store.announce(&r, ALICE, &hash, at, "image/png", 100, now),
        Ok(Announce::Upload { offset: 0 })
    );
    store.assert_consistent();
}

// ---- media types ----

#[test]
fn media_types_off_the_allow_list_are_refused_at_announce() {
    let store = PackStore::new(PackSettings::default());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(100, 1);
    let hash = sha(&bytes);
    for media_type in [
        "image/gif",
        "text/plain",
        "application/octet-stream",
        "text/html",
        "image/svg+xml",
        "image/png; charset=binary",
        " image/png",
        "image/png\0",
        "image",
        "",
    ] {
        let err = store
            .announce(&r, ALICE, &hash, "a", media_type, 100, now)
            .expect_err(media_type);
        assert_eq!(err, PackError::MediaTypeNotAllowed, "{media_type:?}");
        assert_eq!(err.code(), ErrorCode::MediaTypeRefused);
    }
    assert_eq!(store.stats(), PackStats::default());
}

#[test]
fn media_types_match_case_insensitively_and_take_the_list_spelling() {
    let store = PackStore::new(PackSettings::default());
    let now = Instant::now();
    let r = room("a");
    let bytes = content(MediaKind::Webp, 100, 1);
    store
        .announce(&r, ALICE, &sha(&bytes), "a.WebP", "Image/WEBP", 100, now)
        .expect("announce");
    match store.write(&r, &sha(&bytes), 0, &bytes, now) {
        Ok(WriteOutcome::Complete(info)) => assert_eq!(info.media_type, "image/webp"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_default_type_is_accepted_with_its_magic_bytes() {
    let store = PackStore::new(PackSettings::default());
    let now = Instant::now();
    let r = room("a");
    let cases = [
        (MediaKind::Jpeg, "photo.jpg"),
        (MediaKind::Jpeg, "photo2.JPEG"),
        (MediaKind::Png, "image.png"),
        (MediaKind::Webp, "image.webp"),
        (MediaKind::Mp4, "clip.mp4"),
        (MediaKind::Webm, "clip.webm"),
        (MediaKind::Png, "no-extension"),
        (MediaKind::Png, "archive.tar.bin"),
    ];
    for (seed, (kind, name)) in cases.into_iter().enumerate() {
        let bytes = content(kind, 64, seed as u8);
        let got = upload(&store, &r, ALICE, &bytes, name, kind.media_type(), 10, now);
        assert_eq!(got.media_type, kind.media_type());
    }
    assert_eq!(store.list(&r).len(), cases.len());
    assert_eq!(
        PackSettings::default().allowed_media_types,
        DEFAULT_MEDIA_TYPES.map(String::from).to_vec()
    );
}

#[test]
fn content_of_another_type_is_refused_as_soon_as_its_first_bytes_arrive() {
    let store = PackStore::new(PackSettings::default());
    let now = Instant::now();
    let r = room("a");
    // A JPEG declared (and named) as PNG.
    let jpeg = content(MediaKind::Jpeg, 1000, 1);
    let hash = sha(&jpeg);
    store
        .announce(&r, ALICE, &hash, "cat.png", "image/png", 1000, now)
        .expect("announce");
    assert_eq!(
        store.write(&r, &hash, 0, &jpeg[..5], now),
        Ok(WriteOutcome::Partial { received: 5 }),
        "too few bytes to tell"
    );
    let err = store
        .write(&r, &hash, 5, &jpeg[5..100], now)
        .expect_err("the PNG signature is missing");
    assert_eq!(
        err,
        PackError::ContentMismatch {
            declared: MediaKind::Png
        }
    );
    assert_eq!(err.code(), ErrorCode::MediaTypeRefused);
    assert_eq!(store.received(&r, &hash), None, "upload dropped");
    assert_eq!(store.stats(), PackStats::default());

    // A PNG declared as video/mp4 (no extension to contradict it).
    let bytes = png(100, 2);
    store
        .announce(&r, ALICE, &sha(&bytes), "clip", "video/mp4", 100, now)
        .expect("announce");
    assert_eq!(
        store.write(&r, &sha(&bytes), 0, &bytes, now),
        Err(PackError::ContentMismatch {
            declared: MediaKind::Mp4
        })
    );
    store.assert_consistent();
}

#[test]
fn a_text_file_named_and_declared_png_is_refused() {
    let store = PackStore::new(PackSettings::default());
    let now = Instant::now();
    let r = room("a");
    let text = b"hello, I am definitely a cat picture\n".to_vec();
    let hash = sha(&text);
    store
        .announce(
            &r,
            ALICE,
            &hash,
            "cat.png",
            "image/png",
            text.len() as u64,
            now,
        )
        .expect("announce");
    assert_eq!(
        store.write(&r, &hash, 0, &text, now),
        Err(PackError::ContentMismatch {
            declared: MediaKind::Png
        })
    );
    assert!(store.list(&r).is_empty());
    store.assert_consistent();
}

#[test]
fn a_name_whose_extension_contradicts_the_media_type_is_refused_at_announce() {
    let store = PackStore::new(PackSettings::default());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(100, 1);
    let hash = sha(&bytes);
    for (name, media_type, extension_kind) in [
        ("cat.png", "video/mp4", MediaKind::Png),
        ("cat.jpg", "image/png", MediaKind::Jpeg),
        ("cat.JPEG", "image/png", MediaKind::Jpeg),
        ("clip.webm", "video/mp4", MediaKind::Webm),
        (".mp4", "image/png", MediaKind::Mp4),
    ] {
        let err = store
            .announce(&r, ALICE, &hash, name, media_type, 100, now)
            .expect_err(name);
        assert_eq!(err, PackError::NameMismatch { extension_kind }, "{name}");
        assert_eq!(err.code(), ErrorCode::MediaTypeRefused);
    }
    assert_eq!(store.stats(), PackStats::default());
}

#[test]
fn content_shorter_than_its_type_signature_is_refused_at_announce() {
    let store = PackStore::new(PackSettings::default());
    let now = Instant::now();
    let r = room("a");
    for kind in MediaKind::ALL {
        let short = kind.magic_len() as u64 - 1;
        assert_eq!(
            store.announce(&r, ALICE, &[0; 32], "x", kind.media_type(), short, now),
            Err(PackError::ContentMismatch { declared: kind })
        );
        assert_eq!(
            store.announce(&r, ALICE, &[kind as u8; 32], "x", kind.media_type(), 0, now),
            Err(PackError::ContentMismatch { declared: kind })
        );
    }
    // At the magic length exactly, the magic alone is a (tiny) valid upload.
    let magic = content(MediaKind::Jpeg, 3, 0);
    let got = upload(&store, &r, ALICE, &magic, "x.jpg", "image/jpeg", 1, now);
    assert_eq!(got.size, 3);
}

#[test]
fn an_operator_added_type_is_stored_without_a_content_check() {
    let store = PackStore::new(PackSettings {
        allowed_media_types: vec!["model/gltf-binary".into(), "image/png".into()],
        ..PackSettings::default()
    });
    let now = Instant::now();
    let r = room("a");
    let bytes = b"glTF\x02\x00\x00\x00 whatever".to_vec();
    let got = upload(
        &store,
        &r,
        ALICE,
        &bytes,
        "ship.glb",
        "model/gltf-binary",
        4,
        now,
    );
    assert_eq!(got.media_type, "model/gltf-binary");
    // Not on this server's list any more.
    assert_eq!(
        store.announce(&r, ALICE, &[1; 32], "a.jpg", "image/jpeg", 100, now),
        Err(PackError::MediaTypeNotAllowed)
    );
    // A known extension still has to agree with the type.
    assert_eq!(
        store.announce(
            &r,
            ALICE,
            &[1; 32],
            "ship.png",
            "model/gltf-binary",
            100,
            now
        ),
        Err(PackError::NameMismatch {
            extension_kind: MediaKind::Png
        })
    );
    // Empty content is fine for a type without a signature.
    let got = upload(&store, &r, ALICE, b"", "empty", "model/gltf-binary", 1, now);
    assert_eq!(got.size, 0);
    assert_eq!(
        store.read(&r, &sha(b""), 0, 10).expect("read"),
        Bytes::new()
    );
}

// ---- reads ----

#[test]
fn reads_return_the_requested_range() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let r = room("a");
    let bytes = png(1000, 16);
    let hash = sha(&bytes);
    upload(&store, &r, ALICE, &bytes, "a.png", "image/png", 1000, now);

    let read = |offset: u64, max_len: usize| store.read(&r, &hash, offset, max_len);
    assert_eq!(read(0, 10).expect("head"), bytes[..10]);
    assert_eq!(read(500, 100).expect("middle"), bytes[500..600]);
    assert_eq!(read(990, 100).expect("tail, short"), bytes[990..]);
    assert_eq!(read(0, usize::MAX).expect("all"), bytes);
    assert_eq!(read(999, 1).expect("last byte"), bytes[999..]);
    assert_eq!(read(1000, 10).expect("at the end"), Bytes::new());
    assert_eq!(read(10, 0).expect("zero length"), Bytes::new());
    for offset in [1001, u64::MAX] {
        let err = read(offset, 10).expect_err("past the end");
        assert_eq!(err, PackError::OffsetPastEnd { offset, size: 1000 });
        assert_eq!(err.code(), ErrorCode::LimitExceeded);
        assert_eq!(
            err.detail(),
            ErrorDetail::Limit {
                limit: 1000,
                actual: offset
            }
        );
    }
    // Slices of the one copy.
    let whole = read(0, usize::MAX).expect("all");
    assert_eq!(read(500, 1).expect("one").as_ptr(), whole[500..].as_ptr());
}

#[test]
fn reads_need_the_pack_in_that_room() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let bytes = png(100, 17);
    let hash = sha(&bytes);
    upload(
        &store,
        &room("a"),
        ALICE,
        &bytes,
        "a.png",
        "image/png",
        100,
        now,
    );
    for r in [room("b"), RoomKey::slot(RoomSlot(0)), room("")] {
        let err = store.read(&r, &hash, 0, 10).expect_err("other room");
        assert_eq!(err, PackError::NotFound);
        assert_eq!(err.code(), ErrorCode::PackNotFound);
        assert_eq!(store.info(&r, &hash), None);
        assert!(store.list(&r).is_empty());
    }
    assert_eq!(
        store.read(&room("a"), &[0; 32], 0, 10),
        Err(PackError::NotFound)
    );
}

#[test]
fn id_and_slot_keys_are_different_rooms() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let bytes = png(100, 18);
    upload(
        &store,
        &room("7"),
        ALICE,
        &bytes,
        "a.png",
        "image/png",
        100,
        now,
    );
    assert!(store.list(&RoomKey::slot(RoomSlot(7))).is_empty());
    assert_eq!(RoomKey::from("7"), RoomKey::id("7"));
    assert_eq!(RoomKey::from(String::from("7")), RoomKey::id("7"));
    assert_eq!(RoomKey::from(RoomSlot(7)), RoomKey::slot(RoomSlot(7)));
    assert_ne!(RoomKey::id("7"), RoomKey::slot(RoomSlot(7)));
    assert_eq!(RoomKey::id("lobby").to_string(), "room \"lobby\"");
    assert_eq!(RoomKey::slot(RoomSlot(3)).to_string(), "room slot 3");
}

// ---- dropping rooms, sweeping uploads ----

#[test]
fn drop_room_frees_only_content_no_other_room_uses() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let (a, b) = (room("a"), room("b"));
    let shared = png(400, 1);
    let own = png(300, 2);
    upload(&store, &a, ALICE, &shared, "s.png", "image/png", 100, now);
    upload(&store, &a, ALICE, &own, "o.png", "image/png", 100, now);
    upload(&store, &b, BOB, &shared, "s.png", "image/png", 400, now);
    assert_eq!(store.stats().content_bytes, 700);

    store.drop_room(&a);
    store.assert_consistent();
    let stats = store.stats();
    assert_eq!(
        (stats.contents, stats.content_bytes, stats.rooms),
        (1, 400, 1)
    );
    assert!(store.list(&a).is_empty());
    assert_eq!(
        store.read(&a, &sha(&shared), 0, 1),
        Err(PackError::NotFound)
    );
    assert_eq!(
        store
            .read(&b, &sha(&shared), 0, usize::MAX)
            .expect("b keeps it"),
        shared
    );
    // The freed content must be uploaded again.
    assert_eq!(
        store.announce(&b, BOB, &sha(&own), "o.png", "image/png", 300, now),
        Ok(Announce::Upload { offset: 0 })
    );

    store.drop_room(&b);
    store.drop_room(&b);
    store.drop_room(&room("never"));
    store.assert_consistent();
    assert_eq!(store.stats(), PackStats::default());
}

#[test]
fn drop_room_drops_its_pending_uploads() {
    let store = PackStore::new(small());
    let now = Instant::now();
    let (a, b) = (room("a"), room("b"));
    let bytes = png(500, 3);
    let hash = sha(&bytes);
    for r in [&a, &b] {
        store
            .announce(r, ALICE, &hash, "x.png", "image/png", 500, now)
            .expect("announce");
        store.write(r, &hash, 0, &bytes[..100], now).expect("write");
    }
    store.drop_room(&a);
    store.assert_consistent();
    assert_eq!(store.received(&a, &hash), None);
    assert_eq!(store.received(&b, &hash), Some(100));
    let stats = store.stats();
    assert_eq!(
        (
            stats.pending_uploads,
            stats.pending_received_bytes,
            stats.pending_announced_bytes
        ),
        (1, 100, 500)
    );
    assert_eq!(
        store.write(&a, &hash, 100, &bytes[100..], now),
        Err(PackError::NoUpload)
    );
}

#[test]
fn idle_uploads_are_swept_at_the_timeout() {
    let store = PackStore::new(small()); // 60 s
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let (a, b) = (room("a"), room("b"));
    let (x, y) = (png(500, 1), png(500, 2));
    let done = png(100, 3);
    upload(&store, &a, ALICE, &done, "d.png", "image/png", 100, t0);
    store
        .announce(&a, ALICE, &sha(&x), "x.png", "image/png", 500, t0)
        .expect("x");
    store
        .write(&a, &sha(&x), 0, &x[..100], t0)
        .expect("x write");
    store
        .announce(&b, BOB, &sha(&y), "y.png", "image/png", 500, t0)
        .expect("y");

    // A write touches x at t0 + 30 s; y is untouched since t0.
    store
        .write(&a, &sha(&x), 100, &x[100..200], t0 + 30 * s)
        .expect("x write");
    assert_eq!(store.sweep(t0 + 60 * s - Duration::from_nanos(1)), 0);
    assert_eq!(
        store.sweep(t0 + 60 * s),
        1,
        "y idle for exactly the timeout"
    );
    store.assert_consistent();
    assert_eq!(store.received(&b, &sha(&y)), None);
    assert_eq!(store.stats().rooms, 1, "room b held nothing else");

    // Resuming (announce) touches too.
    assert_eq!(
        store.announce(&a, ALICE, &sha(&x), "x.png", "image/png", 500, t0 + 80 * s),
        Ok(Announce::Upload { offset: 200 })
    );
    assert_eq!(store.sweep(t0 + 139 * s), 0);
    assert_eq!(store.sweep(t0 + 140 * s), 1);
    store.assert_consistent();
    assert_eq!(
        store.write(&a, &sha(&x), 200, &x[200..], t0 + 140 * s),
        Err(PackError::NoUpload)
    );
    // Available packs are never swept.
    assert_eq!(store.sweep(t0 + 1_000_000 * s), 0);
    assert_eq!(store.list(&a).len(), 1);
    let stats = store.stats();
    assert_eq!(
        (stats.pending_uploads, stats.pending_announced_bytes),
        (0, 0)
    );
    // A clock that went backwards sweeps nothing.
    store
        .announce(&a, ALICE, &sha(&x), "x.png", "image/png", 500, t0 + 200 * s)
        .expect("x again");
    assert_eq!(store.sweep(t0), 0);
}

// ---- errors, hashes, hostile input ----

#[test]
fn error_codes_and_details() {
    let cases = [
        (
            PackError::InvalidHash { len: 3 },
            ErrorCode::Malformed,
            ErrorDetail::None,
        ),
        (
            limit_err(PackLimit::PacksPerRoom, 300, 301),
            ErrorCode::LimitExceeded,
            ErrorDetail::Limit {
                limit: 300,
                actual: 301,
            },
        ),
        (
            PackError::MediaTypeNotAllowed,
            ErrorCode::MediaTypeRefused,
            ErrorDetail::None,
        ),
        (
            PackError::NameMismatch {
                extension_kind: MediaKind::Png,
            },
            ErrorCode::MediaTypeRefused,
            ErrorDetail::None,
        ),
        (
            PackError::ContentMismatch {
                declared: MediaKind::Mp4,
            },
            ErrorCode::MediaTypeRefused,
            ErrorDetail::None,
        ),
        (
            PackError::NotFound,
            ErrorCode::PackNotFound,
            ErrorDetail::None,
        ),
        (
            PackError::NoUpload,
            ErrorCode::PackNotFound,
            ErrorDetail::None,
        ),
        (
            PackError::WrongOffset {
                expected: 5,
                offset: 9,
            },
            ErrorCode::Conflict,
            ErrorDetail::Conflict { current_version: 5 },
        ),
        (
            PackError::PastEnd { size: 5, end: 9 },
            ErrorCode::LimitExceeded,
            ErrorDetail::Limit {
                limit: 5,
                actual: 9,
            },
        ),
        (
            PackError::HashMismatch,
            ErrorCode::HashMismatch,
            ErrorDetail::None,
        ),
        (
            PackError::OffsetPastEnd { offset: 9, size: 5 },
            ErrorCode::LimitExceeded,
            ErrorDetail::Limit {
                limit: 5,
                actual: 9,
            },
        ),
    ];
    for (err, code, detail) in cases {
        assert_eq!(err.code(), code, "{err}");
        assert_eq!(err.detail(), detail, "{err}");
        let frame = err.to_frame(Some(42));
        assert_eq!(frame.request_id, Some(42));
        assert_eq!(frame.code, code);
        assert_eq!(frame.detail, detail);
        assert_eq!(frame.message, err.to_string());
        assert!(!frame.message.is_empty());
    }
    assert_eq!(
        limit_err(PackLimit::PacksPerRoom, 300, 301).to_string(),
        "packs_per_room would be 301, over the limit of 300"
    );
    assert_eq!(
        PackError::ContentMismatch {
            declared: MediaKind::Png
        }
        .to_string(),
        "the content is not image/png"
    );
}

#[test]
fn hashes_from_the_wire_are_32_bytes() {
    assert_eq!(parse_hash(&[7; 32]), Ok([7; 32]));
    for len in [0, 1, 31, 33, 64] {
        assert_eq!(
            parse_hash(&vec![0; len]),
            Err(PackError::InvalidHash { len })
        );
    }
}

#[test]
fn hostile_inputs_are_refused_without_panicking() {
    let store = PackStore::new(PackSettings {
        max_pack_bytes: u64::MAX,
        max_bytes_per_room: u64::MAX,
        max_store_bytes: u64::MAX,
        ..small()
    });
    let now = Instant::now();
    let r = room("a");
    // A huge announced size is accepted by these limits (and 64-bit usize)
    // but reserves no memory: the buffer grows with what arrives.
    let big = u64::MAX / 2;
    let expected = if usize::try_from(big).is_ok() {
        Ok(Announce::Upload { offset: 0 })
    } else {
        Err(limit_err(PackLimit::PackBytes, usize::MAX as u64, big))
    };
    assert_eq!(
        store.announce(&r, ALICE, &[9; 32], "x.png", "image/png", big, now),
        expected
    );
    store
        .write(&r, &[9; 32], 0, &PNG_MAGIC, now)
        .expect("some bytes");
    assert_eq!(store.received(&r, &[9; 32]), Some(8));
    assert_eq!(
        store.write(&r, &[9; 32], u64::MAX, &[0; 4], now),
        Err(PackError::WrongOffset {
            expected: 8,
            offset: u64::MAX
        })
    );
    assert_eq!(
        store.announce(&r, ALICE, &[8; 32], "x.png", "image/png", u64::MAX, now),
        if usize::try_from(u64::MAX).is_ok() {
            Ok(Announce::Upload { offset: 0 })
        } else {
            Err(limit_err(PackLimit::PackBytes, usize::MAX as u64, u64::MAX))
        }
    );
    // Counters saturate rather than overflow.
    assert!(matches!(
        store.announce(&r, ALICE, &[7; 32], "x.png", "image/png", 100, now),
        Err(PackError::LimitExceeded { .. })
    ));
    store.assert_consistent();
    assert_eq!(
        store.read(&r, &[9; 32], u64::MAX, usize::MAX),
        Err(PackError::NotFound)
    );
    store.sweep(now + Duration::from_secs(3600));
    assert_eq!(store.stats(), PackStats::default());
}

#[test]
fn the_store_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PackStore>();

    let store = Arc::new(PackStore::new(PackSettings::default()));
    let now = Instant::now();
    let bytes = Arc::new(png(4096, 19));
    std::thread::scope(|scope| {
        for i in 0..4u32 {
            let store = Arc::clone(&store);
            let bytes = Arc::clone(&bytes);
            scope.spawn(move || {
                let r = RoomKey::slot(RoomSlot(i));
                let hash = sha(&bytes);
                // Every room uploads: none gets another's content for free.
                assert_eq!(
                    store.announce(&r, MemberId(i), &hash, "x.png", "image/png", 4096, now),
                    Ok(Announce::Upload { offset: 0 })
                );
                for (j, chunk) in bytes.chunks(1000).enumerate() {
                    store
                        .write(&r, &hash, j as u64 * 1000, chunk, now)
                        .expect("write");
                }
            });
        }
    });
    store.assert_consistent();
    let stats = store.stats();
    assert_eq!(
        (stats.contents, stats.content_bytes, stats.room_packs),
        (1, 4096, 4)
    );
    assert!(format!("{store:?}").contains("contents: 1"));
}

// ---- media kinds and settings ----

#[test]
fn media_kinds_sniff_and_map_extensions() {
    for kind in MediaKind::ALL {
        let bytes = content(kind, 64, 1);
        assert_eq!(MediaKind::sniff(&bytes), Some(kind));
        assert!(kind.matches(&bytes[..kind.magic_len()]));
        assert!(!kind.matches(&bytes[..kind.magic_len() - 1]));
        assert_eq!(MediaKind::from_media_type(kind.media_type()), Some(kind));
        assert_eq!(kind.to_string(), kind.media_type());
    }
    assert_eq!(MediaKind::sniff(b""), None);
    assert_eq!(MediaKind::sniff(b"hello world, plain text"), None);
    assert_eq!(
        MediaKind::sniff(b"RIFF\0\0\0\0WAVEfmt "),
        None,
        "RIFF but not WebP"
    );
    assert_eq!(MediaKind::sniff(b"\0\0\0\x18moov"), None);
    assert_eq!(
        MediaKind::from_media_type("VIDEO/MP4"),
        Some(MediaKind::Mp4)
    );
    assert_eq!(MediaKind::from_media_type("video/mp4 "), None);
    assert_eq!(MediaKind::from_extension("JPG"), Some(MediaKind::Jpeg));
    assert_eq!(MediaKind::from_extension("jpeg"), Some(MediaKind::Jpeg));
    assert_eq!(MediaKind::from_extension("gif"), None);
    assert_eq!(MediaKind::from_file_name("a.b.WEBM"), Some(MediaKind::Webm));
    assert_eq!(MediaKind::from_file_name("png"), None);
    assert_eq!(MediaKind::from_file_name("cat.png.exe"), None);
    assert_eq!(MediaKind::from_file_name("cat."), None);
}

#[test]
fn default_settings_follow_the_announced_limits() {
    let limits = Limits::default();
    let s = PackSettings::default();
    assert_eq!(s.max_pack_bytes, 2 * 1024 * 1024);
    assert_eq!(s.max_pack_bytes, u64::from(limits.max_pack_bytes));
    assert_eq!(s.max_packs_per_room, 300);
    assert_eq!(s.max_bytes_per_room, 256 * 1024 * 1024);
    assert_eq!(s.max_name_len, limits.max_pack_name_len);
    assert_eq!(s.max_pending_uploads_per_room, 8);
    assert_eq!(s.upload_idle_timeout, Duration::from_secs(300));
    assert!(s.max_store_bytes >= s.max_bytes_per_room);

    let custom = Limits {
        max_pack_bytes: 10,
        max_packs_per_room: 2,
        max_pack_bytes_per_room: 20,
        max_pack_name_len: 5,
        ..Limits::default()
    };
    let s = PackSettings::from_limits(&custom);
    assert_eq!(
        (
            s.max_pack_bytes,
            s.max_packs_per_room,
            s.max_bytes_per_room,
            s.max_name_len
        ),
        (10, 2, 20, 5)
    );
}
