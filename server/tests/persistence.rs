//! Rooms survive restarts of the real `chorus` binary: `kill -9` or a
//! graceful stop, then a start on the same data directory; clients resume
//! with the tokens they hold. Also: `sync` durability loses nothing that was
//! acknowledged, relay rooms are never kept, and a damaged store stops the
//! server from starting unless it is told to go on.

mod common;

use chorus_protocol::*;
use common::*;
use std::ffi::OsStr;
use std::path::Path;

fn store_args<'a>(data_dir: &'a Path, durability: &'a str) -> Vec<&'a OsStr> {
    vec![
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
        "--durability".as_ref(),
        durability.as_ref(),
        // Bursts below are far past the default budget, on purpose.
        "--rate-state-updates".as_ref(),
        "100000".as_ref(),
        "--rate-messages".as_ref(),
        "100000".as_ref(),
    ]
}

async fn snapshot(client: &mut RawWs, room: RoomSlot, request_id: RequestId) -> RoomSnapshot {
    client
        .send(&ClientMessage::RequestSnapshot { request_id, room })
        .await;
    client
        .recv_until(|m| match m {
            ServerMessage::Snapshot {
                request_id: id,
                snapshot,
            } if id == request_id => Some(snapshot),
            _ => None,
        })
        .await
}

fn value_of<'s>(snapshot: &'s RoomSnapshot, key: &str) -> Option<&'s StateEntry> {
    snapshot.state.iter().find(|e| e.key == key)
}

/// Connects with a resume hello and returns the hello and the room's `Resumed`.
async fn resume(
    chorus: &ChorusProcess,
    token: &str,
    room: RoomSlot,
    last_seq: Seq,
) -> (RawWs, MemberId) {
    let mut client = RawWs::connect_url(&chorus.ws_url()).await;
    client
        .send(&resume_hello(token, vec![ResumeRoom { room, last_seq }]))
        .await;
    let hello = client
        .recv_until(|m| match m {
            ServerMessage::Hello(hello) => Some(hello),
            ServerMessage::Error(e) => panic!("resume refused: {e}"),
            _ => None,
        })
        .await;
    assert!(!hello.resume_token.is_empty());
    let member = client
        .recv_until(|m| match m {
            ServerMessage::Resumed {
                room: r, member, ..
            } if r == room => Some(member),
            ServerMessage::ResumeLost { room: r, code } if r == room => {
                panic!("room lost on resume: {code:?}")
            }
            _ => None,
        })
        .await;
    (client, member)
}

async fn hello_client(chorus: &ChorusProcess) -> (RawWs, ServerHello) {
    let mut client = RawWs::connect_url(&chorus.ws_url()).await;
    client.send(&hello(PROTOCOL_VERSION)).await;
    let hello = client
        .recv_until(|m| match m {
            ServerMessage::Hello(hello) => Some(hello),
            _ => None,
        })
        .await;
    (client, hello)
}

#[tokio::test]
async fn a_room_comes_back_after_kill_9_and_its_member_resumes() {
    // Sync mode: an acknowledged update is on disk, so the kill may come
    // right after the last acknowledgement.
    let durability = "sync";
    let data = fresh_dir("kill9");
    let chorus = ChorusProcess::start(&store_args(&data, durability));
    let (mut client, hello) = hello_client(&chorus).await;
    let joined = client.join("kept", 1).await;
    let room = joined.room;
    let me = joined.you;
    let (version_a, _) = set_state_acked(&mut client, room, 2, "a", b"one").await;
    let (version_b, seq_b) = set_state_acked(&mut client, room, 3, "b", b"two").await;
    chorus.kill9().await;

    let chorus = ChorusProcess::start(&store_args(&data, durability));
    let (mut client, member) = resume(&chorus, &hello.resume_token, room, seq_b).await;
    assert_eq!(member, me, "the same member is back");
    let snap = snapshot(&mut client, room, 10).await;
    assert_eq!(snap.room_id, "kept");
    let a = value_of(&snap, "a").expect("key a kept");
    assert_eq!((a.value.as_slice(), a.version), (&b"one"[..], version_a));
    let b = value_of(&snap, "b").expect("key b kept");
    assert_eq!((b.value.as_slice(), b.version), (&b"two"[..], version_b));
    assert_eq!(snap.state_version, version_b);
    // Sequence numbers go on from where they were: the restart's own events
    // (this member reconnecting, then back) follow the last one acknowledged.
    assert!(snap.last_seq > seq_b, "{:?} after {seq_b:?}", snap.last_seq);
    let me_now = snap
        .members
        .iter()
        .find(|m| m.id == me)
        .expect("still a member");
    assert_eq!(me_now.presence, Presence::Online);
    // And the room goes on: the next update continues the versions.
    let (version_c, seq_c) = set_state_acked(&mut client, room, 11, "c", b"three").await;
    assert_eq!(version_c, version_b + 1);
    assert!(seq_c > snap.last_seq);
}

#[tokio::test]
async fn sync_mode_keeps_every_acknowledged_update_of_a_burst() {
    let data = fresh_dir("sync-burst");
    let chorus = ChorusProcess::start(&store_args(&data, "sync"));
    let (mut client, _) = hello_client(&chorus).await;
    let room = client.join("burst", 1).await.room;
    // 300 updates sent at once (pipelined), then every acknowledgement read.
    const N: u32 = 300;
    for i in 0..N {
        client
            .send(&ClientMessage::SetState {
                request_id: 100 + i,
                room,
                key: format!("k{}", i % 100),
                value: i.to_le_bytes().to_vec(),
                if_version: None,
            })
            .await;
    }
    let mut acked = std::collections::BTreeMap::new();
    while acked.len() < N as usize {
        let (request_id, version) = client
            .recv_until(|m| match m {
                ServerMessage::StateAck {
                    request_id,
                    version,
                    ..
                } => Some((request_id, version)),
                ServerMessage::Error(e) => panic!("refused: {e}"),
                _ => None,
            })
            .await;
        acked.insert(request_id, version);
    }
    chorus.kill9().await;

    let chorus = ChorusProcess::start(&store_args(&data, "sync"));
    let (mut client, _) = hello_client(&chorus).await;
    let snap = client.join("burst", 1).await;
    // Each key holds the last value written to it, at the version acked for it.
    for k in 0..100u32 {
        let last = (0..N).filter(|i| i % 100 == k).max().expect("writes");
        let entry = value_of(&snap, &format!("k{k}")).expect("key kept");
        assert_eq!(entry.value, last.to_le_bytes().to_vec(), "key k{k}");
        assert_eq!(Some(&entry.version), acked.get(&(100 + last)), "key k{k}");
    }
    assert_eq!(snap.state_version, u64::from(N));
}

#[tokio::test]
async fn a_graceful_stop_keeps_rooms_in_every_durability_mode() {
    for durability in ["interval", "none"] {
        let data = fresh_dir(&format!("graceful-{durability}"));
        let chorus = ChorusProcess::start(&store_args(&data, durability));
        let (mut client, hello) = hello_client(&chorus).await;
        let joined = client.join("graceful", 1).await;
        let room = joined.room;
        let (version, seq) = set_state_acked(&mut client, room, 2, "k", b"v").await;
        chorus.signal("-TERM");
        let error = client.recv_error().await;
        assert_eq!(error.code, ErrorCode::ShuttingDown);
        assert!(chorus.wait_exit().await.success());

        let chorus = ChorusProcess::start(&store_args(&data, durability));
        let (mut client, member) = resume(&chorus, &hello.resume_token, room, seq).await;
        assert_eq!(member, joined.you, "{durability}");
        let snap = snapshot(&mut client, room, 3).await;
        let entry = value_of(&snap, "k").expect("kept");
        assert_eq!(
            (entry.value.as_slice(), entry.version),
            (&b"v"[..], version),
            "{durability}"
        );
    }
}

#[tokio::test]
async fn none_mode_comes_back_empty_after_a_crash() {
    let data = fresh_dir("none-crash");
    let chorus = ChorusProcess::start(&store_args(&data, "none"));
    let (mut client, _) = hello_client(&chorus).await;
    let room = client.join("fleeting", 1).await.room;
    set_state_acked(&mut client, room, 2, "k", b"v").await;
    chorus.kill9().await;

    let chorus = ChorusProcess::start(&store_args(&data, "none"));
    let (mut client, _) = hello_client(&chorus).await;
    client.send(&join_msg("fleeting", 5, Vec::new())).await;
    assert_eq!(client.recv_error().await.code, ErrorCode::RoomNotFound);
}

#[tokio::test]
async fn relay_rooms_are_never_kept() {
    let data = fresh_dir("relay");
    let chorus = ChorusProcess::start(&store_args(&data, "sync"));
    let (mut client, _) = hello_client(&chorus).await;
    client
        .send(&join_msg(
            "relay",
            1,
            vec![
                JoinOption::CreateIfMissing,
                JoinOption::Kind(RoomKind::Relay),
            ],
        ))
        .await;
    client
        .recv_until(|m| matches!(m, ServerMessage::Joined { .. }).then_some(()))
        .await;
    client.join("normal", 2).await;
    chorus.signal("-TERM");
    assert!(chorus.wait_exit().await.success());

    let chorus = ChorusProcess::start(&store_args(&data, "sync"));
    let (mut client, _) = hello_client(&chorus).await;
    client.send(&join_msg("relay", 3, Vec::new())).await;
    assert_eq!(client.recv_error().await.code, ErrorCode::RoomNotFound);
    client.send(&join_msg("normal", 4, Vec::new())).await;
    client
        .recv_until(|m| match m {
            ServerMessage::Joined { request_id: 4, .. } => Some(()),
            ServerMessage::Error(e) => panic!("the normal room was not kept: {e}"),
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn a_damaged_store_stops_the_start_unless_told_to_go_on() {
    let data = fresh_dir("corrupt");
    let file = data.join("chorus.redb");
    std::fs::write(&file, vec![0x5a; 64 * 1024]).expect("write garbage");
    let mut args = store_args(&data, "interval");

    let (status, stderr) = chorus_refusal(&args).await;
    assert!(!status.success());
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("--discard-corrupt-data"), "{stderr}");
    // Nothing was touched.
    assert_eq!(
        std::fs::read(&file).expect("still there"),
        vec![0x5a; 64 * 1024]
    );

    args.push("--discard-corrupt-data".as_ref());
    let chorus = ChorusProcess::start(&args);
    let (mut client, _) = hello_client(&chorus).await;
    client.join("fresh", 1).await;
    // The damaged file was copied aside before the server went on.
    let aside: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("chorus.redb.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read(aside[0].path()).expect("the copy"),
        vec![0x5a; 64 * 1024]
    );
}

#[tokio::test]
async fn one_data_directory_serves_one_process() {
    let data = fresh_dir("in-use");
    let _first = ChorusProcess::start(&store_args(&data, "interval"));
    let (status, stderr) = chorus_refusal(&store_args(&data, "interval")).await;
    assert!(!status.success());
    assert!(stderr.contains("in use by another process"), "{stderr}");
}
