//! Sync semantics end to end with the Rust SDK against the real server: a
//! dropped connection resumed by the SDK on its own (also from WebTransport to
//! WebSocket), timelines at their scheduled time, clock offset on loopback,
//! host failover and reclaim, direct messages, chat history and packs.
//!
//! Connections are broken with small proxies in front of the server that cut
//! TCP connections or stop carrying UDP packets, as a network does.

mod common;

use chorus_client::{
    Client, ConnectOptions, ConnectionEvent, JoinOptions, RoomEvent, TimelineOptions,
    TransportChoice,
};
use chorus_protocol::{ErrorCode, MemberId, Presence, Role, Seq, ServerTime};
use chorus_server::RunningServer;
use common::*;
use std::time::Duration;

fn options(server: &RunningServer) -> ConnectOptions {
    ConnectOptions::with_cert_hashes([server.cert_hash()])
}

async fn connect(server: &RunningServer) -> Client {
    Client::connect(&server.url(), options(server))
        .await
        .expect("client connects")
}

/// The next event matching `pick`, within [`WAIT`].
async fn next<T, E: Clone>(
    events: &mut tokio::sync::broadcast::Receiver<E>,
    mut pick: impl FnMut(E) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("event in time")
}

fn png(len: usize, fill: u8) -> Vec<u8> {
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    bytes.resize(len, fill);
    bytes
}

#[tokio::test]
async fn the_sdk_resumes_a_dropped_websocket_connection_with_nothing_missed_or_duplicated() {
    let server = start_server().await;
    let proxy = TcpProxy::start(server.tcp_addrs()[0]).await;
    let host = connect(&server).await;
    let flaky = Client::connect(
        &format!("ws://{}/chorus", proxy.addr),
        ConnectOptions {
            keep_alive_interval: Some(Duration::from_millis(200)),
            ..options(&server)
        },
    )
    .await
    .expect("connects through the proxy");
    let host_room = host
        .join("resume-sdk", JoinOptions::named("host"))
        .await
        .expect("join");
    let room = flaky
        .join("resume-sdk", JoinOptions::named("flaky"))
        .await
        .expect("join");
    let me = room.me();
    let mut connection = flaky.connection_events();
    let mut events = room.events();
    let mut host_events = host_room.events();

    proxy.sever();
    let reconnecting = next(&mut connection, |e| match e {
        ConnectionEvent::Reconnecting { attempt, .. } => Some(attempt),
        _ => None,
    })
    .await;
    assert_eq!(reconnecting, 1);
    // The others see it reconnecting, then the room goes on.
    next(&mut host_events, |e| match e {
        RoomEvent::PresenceChanged {
            member,
            presence: Presence::Reconnecting,
            ..
        } if member == me => Some(()),
        _ => None,
    })
    .await;
    for n in 0..5u8 {
        host_room.set_state("count", [n]).await.expect("write");
    }
    // The SDK resumes by itself: same room object, same member id.
    let resumed = next(&mut connection, |e| match e {
        ConnectionEvent::Resumed {
            session_resumed, ..
        } => Some(session_resumed),
        _ => None,
    })
    .await;
    assert!(resumed, "the server took the session over");
    assert_eq!(room.me(), me);
    assert_eq!(room.state("count").map(|v| v.value.to_vec()), Some(vec![4]));
    // Every write arrived exactly once, in order.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        if let RoomEvent::StateChanged { value: Some(v), .. } = next(&mut events, Some).await {
            seen.push(v[0]);
        }
    }
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    // It works as before.
    room.set_state("back", b"yes")
        .await
        .expect("write after resume");
    next(&mut host_events, |e| match e {
        RoomEvent::PresenceChanged {
            member,
            presence: Presence::Online,
            ..
        } if member == me => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn the_sdk_resumes_a_silent_webtransport_connection_over_websocket() {
    let server = start_server().await;
    let proxy = UdpProxy::start(server.local_addrs()[0]).await;
    let host = connect(&server).await;
    let client = Client::connect(
        &format!("https://{}/chorus", proxy.addr),
        ConnectOptions {
            transport: TransportChoice::Auto,
            websocket_url: Some(server.ws_url()),
            fallback_after: Duration::from_millis(500),
            keep_alive_interval: Some(Duration::from_millis(200)),
            max_idle_timeout: Duration::from_secs(1),
            ..options(&server)
        },
    )
    .await
    .expect("connects over WebTransport through the proxy");
    assert_eq!(client.transport(), chorus_client::Transport::WebTransport);
    let host_room = host
        .join("switch", JoinOptions::named("host"))
        .await
        .expect("join");
    let room = client
        .join("switch", JoinOptions::named("mover"))
        .await
        .expect("join");
    let mut connection = client.connection_events();
    // The network stops carrying UDP: WebTransport goes silent for good.
    proxy.go_silent();
    host_room.set_state("while", b"away").await.expect("write");
    let transport = next(&mut connection, |e| match e {
        ConnectionEvent::Resumed {
            transport,
            session_resumed: true,
            ..
        } => Some(transport),
        ConnectionEvent::Lost { reason } => panic!("lost: {reason:?}"),
        _ => None,
    })
    .await;
    assert_eq!(transport, chorus_client::Transport::WebSocket);
    assert_eq!(client.transport(), chorus_client::Transport::WebSocket);
    assert_eq!(
        room.state("while").map(|v| v.value.to_vec()),
        Some(b"away".to_vec())
    );
    room.set_state("over", b"websocket")
        .await
        .expect("write after the switch");
}

#[tokio::test]
async fn a_scheduled_timeline_change_applies_at_its_server_time_for_every_member() {
    let server = start_server().await;
    let host = connect(&server).await;
    let guest = connect(&server).await;
    let host_room = host
        .join("movie", JoinOptions::named("host"))
        .await
        .expect("join");
    let guest_room = guest
        .join("movie", JoinOptions::named("guest"))
        .await
        .expect("join");
    let mut events = guest_room.events();
    // Play 2 seconds from now, from 1 minute in.
    host_room
        .seek("film", Duration::from_secs(60), TimelineOptions::default())
        .await
        .expect("seek");
    let at = host.server_time().saturating_add_micros(2_000_000);
    host_room
        .play(
            "film",
            TimelineOptions {
                at: Some(at),
                expected_seq: Some(host_room.timeline_seq("film")),
            },
        )
        .await
        .expect("play");
    next(&mut events, |e| match e {
        RoomEvent::TimelineChanged { timeline, .. } if timeline.playing => Some(()),
        _ => None,
    })
    .await;
    // Before `at` the guest still has it paused at 1:00; from `at` on it plays.
    let before = guest_room
        .timeline_at("film", ServerTime(at.as_micros() - 1))
        .expect("timeline");
    assert!(!before.playing);
    assert_eq!(
        guest_room.timeline_position_at("film", ServerTime(at.as_micros() - 1)),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        guest_room.timeline_position_at("film", at.saturating_add_micros(500_000)),
        Some(Duration::from_millis(60_500))
    );
    // A control request from a stale view is a conflict that names the current seq.
    let e = guest_room
        .pause(
            "film",
            TimelineOptions {
                at: None,
                expected_seq: Some(Seq(1)),
            },
        )
        .await
        .expect_err("stale");
    assert_eq!(e.code(), Some(ErrorCode::Conflict));
    assert_eq!(e.conflict_seq(), Some(guest_room.timeline_seq("film")));
}

#[tokio::test]
async fn the_clock_offset_error_on_loopback_is_under_a_millisecond() {
    let server = start_server().await;
    let client = connect(&server).await;
    let estimate = client.sync_clock(16).await;
    // Both ends read this machine's clock, so the true offset is 0: what the
    // estimate says is its error. Documented accuracy on loopback: < 1 ms.
    assert!(
        estimate.offset_us.abs() < 1_000,
        "offset error {} us (rtt {} us)",
        estimate.offset_us,
        estimate.rtt_us
    );
}

#[tokio::test]
async fn a_silent_host_hands_over_and_reclaims_through_the_sdk() {
    let server = start_server_with(|c| c.rooms.room.host_timeout_us = 500_000).await;
    // The host's app freezes: its SDK sends no keep-alive pings.
    let host = Client::connect(
        &server.url(),
        ConnectOptions {
            ping_interval: Duration::from_secs(3600),
            clock_sync_interval: Duration::from_secs(3600),
            ..options(&server)
        },
    )
    .await
    .expect("connects");
    let editor = connect(&server).await;
    let host_room = host
        .join("band", JoinOptions::named("leader"))
        .await
        .expect("join");
    let editor_room = editor
        .join("band", JoinOptions::named("player"))
        .await
        .expect("join");
    let mut events = editor_room.events();
    next(&mut events, |e| match e {
        RoomEvent::RoleChanged {
            member,
            role: Role::Host,
            by: MemberId(0),
            ..
        } if member == editor_room.me() => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(editor_room.role(), Role::Host);
    // The leader comes back and takes the role back.
    host_room.set_state("tempo", b"120").await.expect("write");
    next(&mut events, |e| match e {
        RoomEvent::RoleChanged {
            member,
            role: Role::Editor,
            ..
        } if member == editor_room.me() => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(host_room.role(), Role::Host);
}

#[tokio::test]
async fn a_direct_message_reaches_only_its_target_through_the_sdk() {
    let server = start_server().await;
    let a = connect(&server).await;
    let b = connect(&server).await;
    let c = Client::connect(&server.ws_url(), options(&server))
        .await
        .expect("ws");
    let a_room = a
        .join("signal", JoinOptions::named("a"))
        .await
        .expect("join");
    let b_room = b
        .join("signal", JoinOptions::named("b"))
        .await
        .expect("join");
    let c_room = c
        .join("signal", JoinOptions::named("c"))
        .await
        .expect("join");
    let mut b_messages = b_room.messages();
    let mut c_messages = c_room.messages();
    a_room
        .send_direct(c_room.me(), "offer", b"sdp")
        .await
        .expect("sent");
    let got = tokio::time::timeout(WAIT, c_messages.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(
        (got.from, got.kind.as_str(), &got.payload[..]),
        (a_room.me(), "offer", &b"sdp"[..])
    );
    // B gets the next broadcast, but never got the direct message before it.
    a_room
        .broadcast(chorus_protocol::Audience::Everyone, "hello", b"all")
        .await
        .expect("broadcast");
    let first = tokio::time::timeout(WAIT, b_messages.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(first.kind, "hello");
}

#[tokio::test]
async fn a_joining_member_sees_the_chat_history_through_the_sdk() {
    let server = start_server().await;
    let a = connect(&server).await;
    let a_room = a
        .join("lounge", JoinOptions::named("a"))
        .await
        .expect("join");
    for text in ["hi", "anyone?"] {
        a_room
            .send_command("chat", text.as_bytes(), None)
            .await
            .expect("chat");
    }
    let b = connect(&server).await;
    let b_room = b
        .join("lounge", JoinOptions::named("b"))
        .await
        .expect("join");
    let texts: Vec<Vec<u8>> = b_room.chat().into_iter().map(|c| c.payload).collect();
    assert_eq!(texts, [b"hi".to_vec(), b"anyone?".to_vec()]);
}

#[tokio::test]
async fn packs_through_the_sdk_upload_on_webtransport_and_download_on_websocket() {
    let server = start_server().await;
    let up = connect(&server).await;
    let down = Client::connect(&server.ws_url(), options(&server))
        .await
        .expect("ws");
    let up_room = up
        .join("assets", JoinOptions::named("up"))
        .await
        .expect("join");
    let down_room = down
        .join("assets", JoinOptions::named("down"))
        .await
        .expect("join");
    let content = png(300_000, 5);
    let pack = up_room
        .upload_pack("poster.png", "image/png", content.clone())
        .await
        .expect("uploaded");
    assert_eq!(pack.size, 300_000);
    let fetched = down_room.fetch_pack(&pack.hash).await.expect("fetched");
    assert_eq!(&fetched[..], &content[..]);
    // Spoofed content is refused with its typed error.
    let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0];
    jpeg.resize(1000, 1);
    let e = up_room
        .upload_pack("poster2.png", "image/png", jpeg)
        .await
        .expect_err("not a png");
    assert_eq!(e.code(), Some(ErrorCode::MediaTypeRefused));
    // The same content in another room is stored once.
    let other = up
        .join("assets-2", JoinOptions::named("up"))
        .await
        .expect("join");
    other
        .upload_pack("poster.png", "image/png", content)
        .await
        .expect("uploaded again");
    assert_eq!(server.pack_stats().contents, 1);
}
