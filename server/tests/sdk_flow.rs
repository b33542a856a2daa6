//! End to end with the Rust SDK against the real server on an ephemeral port:
//! what an application developer relies on.

mod common;

use chorus_client::{
    Client, CloseReason, ConnectOptions, JoinOptions, RequestError, RoomEvent, TickError,
};
use chorus_protocol::{ErrorCode, LeaveReason, Role, Seq};
use chorus_server::RunningServer;
use common::*;

async fn connect(server: &RunningServer) -> Client {
    Client::connect(
        &server.url(),
        ConnectOptions::with_cert_hashes([server.cert_hash()]),
    )
    .await
    .expect("client connects")
}

/// The next room event matching `pick`, skipping others, within [`WAIT`].
async fn next_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<RoomEvent>,
    mut pick: impl FnMut(RoomEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("event in time")
}

#[tokio::test]
async fn members_exchange_ticks_state_and_commands_with_presence() {
    let server = start_server().await;
    let ada = connect(&server).await;
    let bo = connect(&server).await;
    let cy = connect(&server).await;

    let ada_room = ada
        .join("studio", JoinOptions::named("ada"))
        .await
        .expect("join");
    assert_eq!(ada_room.role(), Role::Host);
    let mut ada_events = ada_room.events();
    let bo_room = bo
        .join("studio", JoinOptions::named("bo"))
        .await
        .expect("join");
    assert_eq!(bo_room.role(), Role::Editor);
    let joined = next_event(&mut ada_events, |e| match e {
        RoomEvent::MemberJoined { member, .. } => Some(member),
        _ => None,
    })
    .await;
    assert_eq!(
        (joined.id, joined.display.name.as_str()),
        (bo_room.me(), "bo")
    );
    let cy_room = cy
        .join("studio", JoinOptions::named("cy"))
        .await
        .expect("join");
    assert_eq!(cy_room.members().len(), 3);

    // Ticks: from bo to both others, not back to bo.
    let mut ada_ticks = ada_room.ticks();
    let mut cy_ticks = cy_room.ticks();
    let mut bo_ticks = bo_room.ticks();
    let seq = bo_room.send_tick(b"x=1,y=2").expect("tick sent");
    for ticks in [&mut ada_ticks, &mut cy_ticks] {
        let tick = tokio::time::timeout(WAIT, ticks.recv())
            .await
            .expect("tick in time")
            .expect("tick");
        assert_eq!(
            (tick.sender, tick.seq, &tick.payload[..]),
            (bo_room.me(), seq, &b"x=1,y=2"[..])
        );
    }
    // Then one from cy: the first tick bo sees is cy's, never its own.
    cy_room.send_tick(b"cy").expect("tick sent");
    let tick = tokio::time::timeout(WAIT, bo_ticks.recv())
        .await
        .expect("tick in time")
        .expect("tick");
    assert_eq!(tick.sender, cy_room.me());

    // State: a set resolves after the local replica has it; others see it.
    let mut cy_events = cy_room.events();
    let ack = ada_room.set_state("title", b"Hello").await.expect("set");
    assert_eq!(
        ada_room.state("title").expect("replica").value,
        &b"Hello"[..]
    );
    let (key, version) = next_event(&mut cy_events, |e| match e {
        RoomEvent::StateChanged { key, version, .. } => Some((key, version)),
        _ => None,
    })
    .await;
    assert_eq!((key.as_str(), version), ("title", ack.version));
    assert_eq!(
        cy_room.state("title").expect("replica").value,
        &b"Hello"[..]
    );

    // Commands: everyone, the sender included, sees them in one order.
    let mut bo_commands = bo_room.commands();
    let first = ada_room
        .send_command("chat", b"hi", None)
        .await
        .expect("cmd");
    let second = cy_room
        .send_command("chat", b"hey", None)
        .await
        .expect("cmd");
    assert!(second.seq > first.seq);
    for expected in [(&b"hi"[..], first.seq), (&b"hey"[..], second.seq)] {
        let cmd = tokio::time::timeout(WAIT, bo_commands.recv())
            .await
            .expect("in time")
            .expect("command");
        assert_eq!((&cmd.payload[..], cmd.seq), expected);
    }

    // Presence: cy leaves, bo disconnects; ada sees both with their reasons.
    cy_room.leave().await.expect("leave");
    let reason = next_event(&mut ada_events, |e| match e {
        RoomEvent::MemberLeft { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, LeaveReason::Left);
    // Closing the client leaves its rooms first: a goodbye, not a dropped
    // connection that others would see as reconnecting.
    bo.close().await;
    let (member, reason) = next_event(&mut ada_events, |e| match e {
        RoomEvent::MemberLeft { member, reason, .. } => Some((member, reason)),
        _ => None,
    })
    .await;
    assert_eq!((member, reason), (bo_room.me(), LeaveReason::Left));
    assert_eq!(ada_room.members().len(), 1);
}

#[tokio::test]
async fn a_late_joiner_gets_the_full_snapshot() {
    let server = start_server().await;
    let ada = connect(&server).await;
    let room = ada
        .join("gallery", JoinOptions::named("ada"))
        .await
        .expect("join");
    room.set_state("scene", b"forest").await.expect("set");
    room.set_state("annotations", b"[]").await.expect("set");
    room.delete_state("annotations").await.expect("delete");
    let last = room.send_command("note", b"n", None).await.expect("cmd");

    let late = connect(&server).await;
    let late_room = late
        .join("gallery", JoinOptions::named("late"))
        .await
        .expect("join");
    let state = late_room.state_snapshot();
    assert_eq!(state.keys().collect::<Vec<_>>(), ["scene"]);
    assert_eq!(state["scene"].value, &b"forest"[..]);
    assert_eq!(
        state["scene"].version,
        room.state("scene").expect("set").version
    );
    assert_eq!(late_room.state_version(), room.state_version());
    // The snapshot's sequence is the late joiner's own join, right after the command.
    assert_eq!(late_room.last_seq(), Seq(last.seq.0 + 1));
    let names: Vec<String> = late_room
        .members()
        .into_iter()
        .map(|m| m.display.name)
        .collect();
    assert_eq!(names, ["ada", "late"]);
}

#[tokio::test]
async fn optimistic_concurrency_and_idempotent_commands() {
    let server = start_server().await;
    let a = connect(&server).await;
    let b = connect(&server).await;
    let ra = a.join("cas", JoinOptions::named("a")).await.expect("join");
    let rb = b.join("cas", JoinOptions::named("b")).await.expect("join");

    let v1 = ra
        .set_state_if("count", b"1", 0)
        .await
        .expect("create")
        .version;
    // b races with the version it read before a's write: conflict, with the current version.
    let err = rb
        .set_state_if("count", b"1", 0)
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert_eq!(err.conflict_version(), Some(v1));
    let v2 = rb
        .set_state_if("count", b"2", v1)
        .await
        .expect("cas")
        .version;
    assert!(v2 > v1);

    let first = ra
        .send_command("play", b"", Some("play-42"))
        .await
        .expect("cmd");
    let again = rb
        .send_command("play", b"", Some("play-42"))
        .await
        .expect("cmd");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
}

#[tokio::test]
async fn one_client_in_several_rooms_keeps_them_apart() {
    let server = start_server().await;
    let a = connect(&server).await;
    let b = connect(&server).await;
    let a1 = a.join("one", JoinOptions::named("a")).await.expect("join");
    let a2 = a.join("two", JoinOptions::named("a")).await.expect("join");
    let b1 = b.join("one", JoinOptions::named("b")).await.expect("join");
    let b2 = b.join("two", JoinOptions::named("b")).await.expect("join");
    assert_ne!(a1.slot(), a2.slot());

    let mut b1_ticks = b1.ticks();
    let mut b2_ticks = b2.ticks();
    a2.send_tick(b"to two").expect("tick");
    let tick = tokio::time::timeout(WAIT, b2_ticks.recv())
        .await
        .expect("in time")
        .expect("tick");
    assert_eq!(&tick.payload[..], b"to two");
    // Room one's first tick must be room one's own: a misrouted "to two"
    // was sent earlier and would have come first.
    a1.send_tick(b"to one").expect("tick");
    let tick = tokio::time::timeout(WAIT, b1_ticks.recv())
        .await
        .expect("in time")
        .expect("tick");
    assert_eq!(&tick.payload[..], b"to one");
    a1.set_state("k", b"one").await.expect("set");
    a2.set_state("k", b"two").await.expect("set");
    // b's replicas converge on their own room's value.
    let mut b1_events = b1.events();
    b1.send_command("barrier", b"", None).await.expect("cmd");
    next_event(&mut b1_events, |e| {
        matches!(e, RoomEvent::Command(_)).then_some(())
    })
    .await;
    let mut b2_events = b2.events();
    b2.send_command("barrier", b"", None).await.expect("cmd");
    next_event(&mut b2_events, |e| {
        matches!(e, RoomEvent::Command(_)).then_some(())
    })
    .await;
    assert_eq!(b1.state("k").expect("set").value, &b"one"[..]);
    assert_eq!(b2.state("k").expect("set").value, &b"two"[..]);
}

#[tokio::test]
async fn typed_errors_reach_the_caller() {
    let server = start_server_with(|c| c.session.limits.max_tick_payload_bytes = 100).await;
    let a = connect(&server).await;
    let missing = a
        .join(
            "nowhere",
            JoinOptions {
                create_if_missing: false,
                ..JoinOptions::named("a")
            },
        )
        .await
        .expect_err("no such room");
    assert_eq!(missing.code(), Some(ErrorCode::RoomNotFound));
    let room = a
        .join("limits", JoinOptions::named("a"))
        .await
        .expect("join");
    assert!(matches!(
        room.send_tick(&[0; 101]),
        Err(TickError::PayloadTooLarge { .. })
    ));
    room.send_tick(&[0; 100]).expect("the limit itself passes");
    let err = a
        .join("limits", JoinOptions::named("a"))
        .await
        .expect_err("twice");
    assert_eq!(err.code(), Some(ErrorCode::AlreadyJoined));
    assert!(matches!(err, RequestError::Server(_)));
}

#[tokio::test]
async fn clock_sync_tracks_the_server_clock_on_loopback() {
    let server = start_server().await;
    let a = connect(&server).await;
    let estimate = a.clock();
    assert!(estimate.samples >= 1, "synced at connect");
    // Client and server share this machine's clock, so the true offset is ~0
    // and the estimate's error is bounded by half the round trip.
    let rtt_us = estimate.rtt_us as i64;
    assert!(
        estimate.offset_us.abs() <= rtt_us / 2 + 1_000,
        "offset {} us with rtt {} us",
        estimate.offset_us,
        rtt_us
    );
    let server_now = a.server_time().as_micros() as i64;
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64;
    assert!((server_now - unix_now).abs() < 50_000);
}

#[tokio::test]
async fn server_shutdown_tells_clients_when_to_come_back_and_they_wait_that_long() {
    let server = start_server_with(|c| {
        c.session.reconnect_after_shutdown = std::time::Duration::from_secs(3);
    })
    .await;
    let a = connect(&server).await;
    let _room = a.join("bye", JoinOptions::named("a")).await.expect("join");
    let mut connection = a.connection_events();
    server.shutdown().await;
    // The typed reason, and a first reconnect attempt no sooner than asked.
    let (delay, reason) = tokio::time::timeout(WAIT, async {
        loop {
            match connection.recv().await {
                Ok(chorus_client::ConnectionEvent::Reconnecting { delay, reason, .. }) => {
                    return (delay, reason);
                }
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await
    .expect("reconnecting in time");
    assert_eq!(reason.code(), Some(ErrorCode::ShuttingDown), "{reason:?}");
    assert!(matches!(reason, CloseReason::Server(_)));
    assert_eq!(
        reason.retry_after(),
        Some(std::time::Duration::from_secs(3))
    );
    assert!(delay >= std::time::Duration::from_secs(3), "{delay:?}");
    a.close().await;
}

#[tokio::test]
async fn sdk_clients_on_different_transports_share_a_room() {
    use chorus_client::{Transport, TransportChoice};
    let server = start_server().await;
    let hash = server.cert_hash();
    let wt = connect(&server).await;
    let ws = Client::connect(&server.ws_url(), ConnectOptions::with_cert_hashes([hash]))
        .await
        .expect("ws connects");
    let wss = Client::connect(
        &server.url(),
        ConnectOptions {
            transport: TransportChoice::WebSocket,
            ..ConnectOptions::with_cert_hashes([hash])
        },
    )
    .await
    .expect("wss connects");
    assert_eq!(wt.transport(), Transport::WebTransport);
    assert_eq!(ws.transport(), Transport::WebSocket);
    assert_eq!(wss.transport(), Transport::WebSocket);

    let r_wt = wt
        .join("mixed-sdk", JoinOptions::named("wt"))
        .await
        .expect("join");
    let r_ws = ws
        .join("mixed-sdk", JoinOptions::named("ws"))
        .await
        .expect("join");
    let r_wss = wss
        .join("mixed-sdk", JoinOptions::named("wss"))
        .await
        .expect("join");
    assert_eq!(r_wss.members().len(), 3);

    // Each one's tick reaches both others.
    let mut ticks = [r_wt.ticks(), r_ws.ticks(), r_wss.ticks()];
    let rooms = [&r_wt, &r_ws, &r_wss];
    for (i, sender) in rooms.iter().enumerate() {
        sender
            .send_tick(format!("from {i}").as_bytes())
            .expect("tick");
        for (j, receiver) in ticks.iter_mut().enumerate() {
            if i == j {
                continue;
            }
            let tick = tokio::time::timeout(WAIT, receiver.recv())
                .await
                .expect("tick in time")
                .expect("tick");
            assert_eq!(tick.sender, sender.me());
            assert_eq!(tick.payload, format!("from {i}").as_bytes());
        }
    }
    // State written over WebSocket is seen over WebTransport, and back.
    r_ws.set_state("k", b"from ws").await.expect("set");
    let ack = r_wt.set_state("j", b"from wt").await.expect("set");
    let mut events = r_wss.events();
    let cmd = r_wss.send_command("sync", b"", None).await.expect("cmd");
    next_event(&mut events, |e| match e {
        RoomEvent::Command(c) if c.seq == cmd.seq => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(r_wss.state("k").expect("k").value, &b"from ws"[..]);
    assert_eq!(r_wss.state("j").expect("j").version, ack.version);
    let mut ws_events = r_ws.events();
    wt.close().await;
    let reason = next_event(&mut ws_events, |e| match e {
        RoomEvent::MemberLeft { member, reason, .. } if member == r_wt.me() => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, LeaveReason::Left);
}

#[tokio::test]
async fn the_sdk_falls_back_to_websocket_when_udp_does_not_answer() {
    use chorus_client::{Transport, TransportChoice};
    // TCP on its own port, where nothing listens on UDP: a network that drops UDP.
    let server = start_server_with(|c| {
        c.tcp_listen = Some(vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))]);
    })
    .await;
    let tcp = server.tcp_addrs()[0];
    assert_ne!(tcp.port(), server.local_addrs()[0].port());
    let fallback = Client::connect(
        &format!("https://{tcp}/chorus"),
        ConnectOptions {
            transport: TransportChoice::Auto,
            fallback_after: std::time::Duration::from_millis(300),
            ..ConnectOptions::with_cert_hashes([server.cert_hash()])
        },
    )
    .await
    .expect("connects by falling back");
    assert_eq!(fallback.transport(), Transport::WebSocket);
    // And it works with a WebTransport member in the same room.
    let direct = connect(&server).await;
    assert_eq!(direct.transport(), Transport::WebTransport);
    let r1 = fallback
        .join("fallback", JoinOptions::named("tcp"))
        .await
        .expect("join");
    let r2 = direct
        .join("fallback", JoinOptions::named("udp"))
        .await
        .expect("join");
    let mut ticks = r1.ticks();
    r2.send_tick(b"over udp").expect("tick");
    let tick = tokio::time::timeout(WAIT, ticks.recv())
        .await
        .expect("in time")
        .expect("tick");
    assert_eq!(&tick.payload[..], b"over udp");
}

#[tokio::test]
async fn access_control_through_the_sdk_over_websocket() {
    use chorus_protocol::Action;
    let server = start_server().await;
    let hash = server.cert_hash();
    let ws = |name: &'static str| {
        let url = server.ws_url();
        async move {
            let client = Client::connect(&url, ConnectOptions::with_cert_hashes([hash]))
                .await
                .expect("ws connects");
            (client, name)
        }
    };
    let (host, _) = ws("host").await;
    let (guest, _) = ws("guest").await;
    let host_room = host
        .join("", JoinOptions::named("host").with_password("pw"))
        .await
        .expect("created with an invite code");
    let code = host_room.id().to_owned();
    assert_eq!(code.len(), 8);
    let e = guest
        .join(&code, JoinOptions::named("guest"))
        .await
        .expect_err("needs the password");
    assert_eq!(e.code(), Some(ErrorCode::PasswordRequired));
    let guest_room = guest
        .join(&code, JoinOptions::named("guest").with_password("pw"))
        .await
        .expect("right password");
    assert!(guest_room.can(Action::SetState, "scene"));
    let mut guest_events = guest_room.events();

    host_room
        .set_role(guest_room.me(), Role::Viewer)
        .await
        .expect("host demotes");
    next_event(&mut guest_events, |e| {
        matches!(
            e,
            RoomEvent::RoleChanged {
                role: Role::Viewer,
                ..
            }
        )
        .then_some(())
    })
    .await;
    assert_eq!(guest_room.role(), Role::Viewer);
    assert!(!guest_room.can(Action::SetState, "scene"));
    let e = guest_room
        .set_state("scene", b"x".to_vec())
        .await
        .expect_err("viewers may not write");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));

    host_room
        .kick(guest_room.me(), "bye")
        .await
        .expect("host kicks");
    let reason = next_event(&mut guest_events, |e| match e {
        RoomEvent::MemberKicked { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, "bye");
    let e = guest
        .join(&code, JoinOptions::named("guest").with_password("pw"))
        .await
        .expect_err("banned");
    assert_eq!(e.code(), Some(ErrorCode::Banned));
    assert!(e.retry_after().is_some_and(|d| d.as_secs() > 200));
}
