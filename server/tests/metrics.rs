//! `/metrics`: every series is there with its help text, and moves when its
//! event happens (both transports, rooms, ticks, state, commands, errors,
//! rate limits, packs, resumes, failovers, queues, handshakes, round trips).

mod common;

use chorus_protocol::*;
use chorus_server::RunningServer;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

/// One scrape: every sample by its series (name and labels as rendered).
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// A sample's value; 0 for a series not (yet) shown.
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// A sample that must be shown.
    fn shown(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing in\n{}", self.text))
    }

    /// The family has help text and a type.
    fn assert_described(&self, name: &str, kind: &str) {
        assert!(
            self.text.contains(&format!("# HELP {name} ")),
            "no help for {name} in\n{}",
            self.text
        );
        assert!(
            self.text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind} in\n{}",
            self.text
        );
    }
}

async fn scrape(server: &RunningServer) -> Scrape {
    let (status, content_type, text) = http_get(server.tcp_addrs()[0], "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect();
    Scrape { text, samples }
}

/// Scrapes until `done` holds (figures that a server task updates after the
/// client has already heard of the event).
async fn scrape_until(server: &RunningServer, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = scrape(server).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics never got there:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Sends a request and waits for its answer: `Ok` with the reply, or the error.
async fn request(
    client: &mut impl RawProtocol,
    msg: ClientMessage,
) -> Result<ServerMessage, ErrorFrame> {
    let request_id = msg.request_id().expect("a request");
    client.send(&msg).await;
    client
        .recv_until(|m| match m {
            ServerMessage::Error(e) if e.request_id == Some(request_id) => Some(Err(e)),
            ServerMessage::Error(_) => None,
            m if reply_id(&m) == Some(request_id) => Some(Ok(m)),
            _ => None,
        })
        .await
}

/// The request a reply answers.
fn reply_id(m: &ServerMessage) -> Option<RequestId> {
    match m {
        ServerMessage::Joined { request_id, .. }
        | ServerMessage::Left { request_id, .. }
        | ServerMessage::StateAck { request_id, .. }
        | ServerMessage::CommandAck { request_id, .. }
        | ServerMessage::Ack { request_id, .. }
        | ServerMessage::PackUploadReady { request_id, .. } => Some(*request_id),
        _ => None,
    }
}

fn set_state(request_id: RequestId, room: RoomSlot, if_version: Option<u64>) -> ClientMessage {
    ClientMessage::SetState {
        request_id,
        room,
        key: "k".into(),
        value: b"v".to_vec(),
        if_version,
    }
}

fn command(request_id: RequestId, room: RoomSlot, kind: &str, key: Option<&str>) -> ClientMessage {
    ClientMessage::Command {
        request_id,
        room,
        kind: kind.into(),
        payload: vec![1],
        idempotency_key: key.map(Into::into),
    }
}

const COUNTERS: &[&str] = &[
    "chorus_connections_total",
    "chorus_sessions_opened_total",
    "chorus_sessions_closed_total",
    "chorus_rooms_created_total",
    "chorus_rooms_ended_total",
    "chorus_ticks_in_total",
    "chorus_ticks_out_total",
    "chorus_ticks_dropped_total",
    "chorus_ticks_rejected_total",
    "chorus_reliable_in_total",
    "chorus_reliable_out_total",
    "chorus_pack_bytes_in_total",
    "chorus_pack_bytes_out_total",
    "chorus_rate_limited_total",
    "chorus_rate_limit_disconnects_total",
    "chorus_slow_consumer_disconnects_total",
    "chorus_resumes_total",
    "chorus_failovers_total",
    "chorus_store_commits_total",
    "chorus_store_commit_failures_total",
    "chorus_store_writes_total",
];

const GAUGES: &[&str] = &[
    "chorus_connections_open",
    "chorus_rooms",
    "chorus_members",
    "chorus_resumable_sessions",
    "chorus_outbox_frames",
    "chorus_outbox_frames_max",
    "chorus_outbox_bytes",
    "chorus_outbox_bytes_max",
    "chorus_room_inbox_requests",
    "chorus_room_inbox_requests_max",
    "chorus_uptime_seconds",
    "chorus_store_queue_writes",
];

const HISTOGRAMS: &[&str] = &[
    "chorus_room_members",
    "chorus_handshake_duration_seconds",
    "chorus_command_fanout_duration_seconds",
    "chorus_store_commit_duration_seconds",
    "chorus_client_rtt_seconds",
];

#[tokio::test]
async fn every_series_is_described_from_the_start_with_its_fixed_labels() {
    let server = start_server().await;
    let s = scrape(&server).await;
    for name in COUNTERS {
        s.assert_described(name, "counter");
    }
    for name in GAUGES {
        s.assert_described(name, "gauge");
    }
    for name in HISTOGRAMS {
        s.assert_described(name, "histogram");
    }
    for name in COUNTERS.iter().chain(GAUGES).chain(HISTOGRAMS) {
        assert!(name.starts_with("chorus_"), "{name}");
    }
    // Small fixed label sets are there before anything happens.
    for transport in ["webtransport", "websocket"] {
        assert_eq!(
            s.shown(&format!(
                "chorus_connections_open{{transport=\"{transport}\"}}"
            )),
            0.0
        );
        assert_eq!(
            s.shown(&format!(
                "chorus_handshake_duration_seconds_count{{transport=\"{transport}\"}}"
            )),
            0.0
        );
        s.shown(&format!(
            "chorus_client_rtt_seconds_bucket{{transport=\"{transport}\",le=\"+Inf\"}}"
        ));
    }
    for reason in ["slow_receiver", "rate_limit", "oversize", "receiver_closed"] {
        s.shown(&format!(
            "chorus_ticks_dropped_total{{reason=\"{reason}\"}}"
        ));
    }
    for budget in [
        "messages",
        "state_updates",
        "commands",
        "joins",
        "direct",
        "ticks",
    ] {
        s.shown(&format!("chorus_rate_limited_total{{budget=\"{budget}\"}}"));
    }
    for kind in ["host_away", "host_left", "paused", "reclaimed"] {
        s.shown(&format!("chorus_failovers_total{{kind=\"{kind}\"}}"));
    }
    for reason in ["closed", "timed_out", "replaced"] {
        s.shown(&format!(
            "chorus_sessions_closed_total{{reason=\"{reason}\"}}"
        ));
    }
    s.shown("chorus_resumes_total{outcome=\"resumed\"}");
    s.shown("chorus_resumes_total{outcome=\"failed\"}");
    s.shown("chorus_rooms_ended_total{reason=\"expired\"}");
    s.shown("chorus_command_fanout_duration_seconds_bucket{le=\"+Inf\"}");
    assert_eq!(s.shown("chorus_room_members_count"), 0.0);
}

#[tokio::test]
async fn sessions_rooms_ticks_state_commands_errors_and_round_trips_move() {
    // A short WebSocket heartbeat, so its round trip is measured soon.
    let server = start_server_with(|c| c.heartbeat_interval = Duration::from_millis(100)).await;
    let before = scrape(&server).await;

    let (mut a, _) = RawClient::connect_hello(&server).await;
    let (mut b, _) = RawWs::connect_hello(&server).await;
    // (The handshake is timed just after the Hello is queued.)
    let s = scrape_until(&server, |s| {
        s.get("chorus_handshake_duration_seconds_count{transport=\"websocket\"}") == 1.0
            && s.get("chorus_handshake_duration_seconds_count{transport=\"webtransport\"}") == 1.0
    })
    .await;
    for transport in ["webtransport", "websocket"] {
        let t = format!("{{transport=\"{transport}\"}}");
        assert_eq!(s.get(&format!("chorus_connections_total{t}")), 1.0);
        assert_eq!(s.get(&format!("chorus_connections_open{t}")), 1.0);
        assert_eq!(s.get(&format!("chorus_sessions_opened_total{t}")), 1.0);
        assert_eq!(
            s.get(&format!("chorus_handshake_duration_seconds_count{t}")),
            1.0
        );
        assert!(s.get(&format!("chorus_handshake_duration_seconds_sum{t}")) > 0.0);
    }

    // Rooms and members.
    let room = a.join("metrics", 1).await;
    b.join("metrics", 1).await;
    b.join("metrics-2", 2).await;
    let s = scrape(&server).await;
    assert_eq!(s.get("chorus_rooms"), 2.0);
    assert_eq!(s.get("chorus_members"), 3.0);
    assert_eq!(s.get("chorus_rooms_created_total"), 2.0);
    assert_eq!(s.get("chorus_room_members_count"), 2.0);
    assert_eq!(s.get("chorus_room_members_sum"), 3.0);
    assert_eq!(s.get("chorus_room_members_bucket{le=\"1\"}"), 1.0);
    assert_eq!(s.get("chorus_room_members_bucket{le=\"2\"}"), 2.0);
    assert!(s.get("chorus_reliable_out_total") > before.get("chorus_reliable_out_total"));
    assert!(s.get("chorus_reliable_in_total") >= 5.0, "hellos and joins");

    // A tick in, a copy out.
    a.send_tick(room.room, room.you, 1, b"t");
    b.recv_tick().await;
    let s = scrape_until(&server, |s| s.get("chorus_ticks_out_total") == 1.0).await;
    assert_eq!(s.get("chorus_ticks_in_total"), 1.0);
    assert_eq!(s.get("chorus_ticks_out_total"), 1.0);

    // State: one write applied, one conflict.
    request(&mut a, set_state(10, room.room, None))
        .await
        .expect("applied");
    let conflict = request(&mut a, set_state(11, room.room, Some(99)))
        .await
        .expect_err("conflict");
    assert_eq!(conflict.code, ErrorCode::Conflict);
    // Commands: applied, then the same idempotency key again.
    request(&mut a, command(12, room.room, "move", Some("once")))
        .await
        .expect("applied");
    let again = request(&mut a, command(13, room.room, "move", Some("once")))
        .await
        .expect("acknowledged");
    assert!(matches!(
        again,
        ServerMessage::CommandAck {
            duplicate: true,
            ..
        }
    ));
    // A command to a room the session is not in: refused by the session.
    let not_joined = request(&mut a, command(14, RoomSlot(999), "move", None))
        .await
        .expect_err("not joined");
    assert_eq!(not_joined.code, ErrorCode::NotJoined);
    let s = scrape_until(&server, |s| {
        s.get("chorus_commands_total{kind=\"move\",outcome=\"duplicate\"}") == 1.0
    })
    .await;
    assert_eq!(
        s.get("chorus_state_updates_total{outcome=\"applied\"}"),
        1.0
    );
    assert_eq!(
        s.get("chorus_state_updates_total{outcome=\"conflict\"}"),
        1.0
    );
    assert_eq!(
        s.get("chorus_commands_total{kind=\"move\",outcome=\"applied\"}"),
        1.0
    );
    assert_eq!(
        s.get("chorus_commands_total{kind=\"move\",outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(s.get("chorus_command_fanout_duration_seconds_count"), 1.0);
    assert!(s.get("chorus_command_fanout_duration_seconds_sum") > 0.0);
    assert_eq!(s.get("chorus_errors_total{code=\"conflict\"}"), 1.0);
    assert_eq!(s.get("chorus_errors_total{code=\"not_joined\"}"), 1.0);
    for name in [
        "chorus_state_updates_total",
        "chorus_commands_total",
        "chorus_errors_total",
    ] {
        s.assert_described(name, "counter");
    }

    // Round trips: QUIC's estimate at each ping; WebSocket once a heartbeat
    // has been answered (reading answers the server's pings).
    a.ping().await;
    let s = scrape(&server).await;
    assert_eq!(
        s.get("chorus_client_rtt_seconds_count{transport=\"webtransport\"}"),
        1.0
    );
    assert!(s.get("chorus_client_rtt_seconds_sum{transport=\"webtransport\"}") > 0.0);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        b.ping().await;
        let s = scrape(&server).await;
        if s.get("chorus_client_rtt_seconds_count{transport=\"websocket\"}") >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no WebSocket round trip:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The WebTransport client goes: its session closes, its connection too.
    a.connection.close(0u32.into(), b"bye");
    let s = scrape_until(&server, |s| {
        s.get("chorus_connections_open{transport=\"webtransport\"}") == 0.0
    })
    .await;
    assert_eq!(
        s.get("chorus_sessions_closed_total{reason=\"closed\"}"),
        1.0
    );
    assert_eq!(
        s.get("chorus_connections_open{transport=\"websocket\"}"),
        1.0
    );
}

#[tokio::test]
async fn rate_limits_oversize_ticks_and_pack_bytes_move() {
    let server = start_server_with(|c| {
        c.session.rate_limits.state_updates = Rate {
            per_second: 1,
            burst: 1,
        };
        c.session.rate_limits.ticks = Rate {
            per_second: 1,
            burst: 1,
        };
    })
    .await;
    let (mut ws, _) = RawWs::connect_hello(&server).await;
    let room = ws.join("packs", 1).await;

    // The state-update budget: one, then refused.
    request(&mut ws, set_state(2, room.room, None))
        .await
        .expect("within budget");
    let refused = request(&mut ws, set_state(3, room.room, None))
        .await
        .expect_err("over budget");
    assert_eq!(refused.code, ErrorCode::RateLimited);
    // Ticks: one accepted, the next over budget, and one over the size limit.
    ws.send_tick(room.room, room.you, 1, b"a").await;
    ws.send_tick(room.room, room.you, 2, b"b").await;
    let s = scrape_until(&server, |s| {
        s.get("chorus_rate_limited_total{budget=\"ticks\"}") == 1.0
    })
    .await;
    assert_eq!(s.get("chorus_ticks_in_total"), 1.0);
    assert_eq!(
        s.get("chorus_rate_limited_total{budget=\"state_updates\"}"),
        1.0
    );
    assert_eq!(
        s.get("chorus_ticks_dropped_total{reason=\"rate_limit\"}"),
        1.0
    );
    assert!(s.get("chorus_errors_total{code=\"rate_limited\"}") >= 1.0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ws.send_tick(room.room, room.you, 3, &[0; 2000]).await;
    scrape_until(&server, |s| {
        s.get("chorus_ticks_dropped_total{reason=\"oversize\"}") == 1.0
    })
    .await;

    // A pack up and down over the WebSocket pack lane.
    let mut content = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    content.resize(20_000, 7);
    let hash = sha256(&content);
    request(
        &mut ws,
        ClientMessage::PackUpload {
            request_id: 4,
            room: room.room,
            hash: hash.clone(),
            name: "p.png".into(),
            media_type: "image/png".into(),
            size: content.len() as u64,
        },
    )
    .await
    .expect("upload ready");
    for (n, chunk) in content.chunks(16 * 1024).enumerate() {
        let mut message = encode_pack_header(&PackStreamHeader::Upload {
            hash: hash.clone(),
            offset: (n * 16 * 1024) as u64,
        });
        message.extend_from_slice(chunk);
        ws.send_lane(3, &message).await;
    }
    ws.recv_until(|m| matches!(m, ServerMessage::PackAvailable { .. }).then_some(()))
        .await;
    let s = scrape(&server).await;
    assert_eq!(s.get("chorus_pack_bytes_in_total"), 20_000.0);
    ws.send(&ClientMessage::PackFetch {
        request_id: 5,
        room: room.room,
        hash,
        offset: 0,
    })
    .await;
    let mut got = 0;
    while got < content.len() {
        if let WsIn::Pack(message) = ws.next().await {
            let (_, chunk) = split_pack_message(&message).expect("pack message");
            got += chunk.len();
        }
    }
    scrape_until(&server, |s| {
        s.get("chorus_pack_bytes_out_total") == 20_000.0
    })
    .await;
}

#[tokio::test]
async fn failovers_resumes_and_closed_rooms_move() {
    let server = start_server_with(|c| c.rooms.room.host_timeout_us = 300_000).await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut editor, _) = RawClient::connect_hello(&server).await;
    let room = host.join("failover", 1).await;
    editor.join("failover", 1).await;

    // The host is silent past the host timeout: the editor is promoted.
    let s = scrape_until(&server, |s| {
        s.get("chorus_failovers_total{kind=\"host_away\"}") == 1.0
    })
    .await;
    assert_eq!(s.get("chorus_failovers_total{kind=\"reclaimed\"}"), 0.0);
    // The host speaks again within the reclaim window and hosts again...
    host.ping().await;
    scrape_until(&server, |s| {
        s.get("chorus_failovers_total{kind=\"reclaimed\"}") == 1.0
    })
    .await;
    // ...then leaves: nobody hosts, and the editor (heard from by the room,
    // so reachable) is promoted.
    request(&mut editor, set_state(2, room.room, None))
        .await
        .expect("applied");
    request(
        &mut host,
        ClientMessage::Leave {
            request_id: 2,
            room: room.room,
        },
    )
    .await
    .expect("left");
    scrape_until(&server, |s| {
        s.get("chorus_failovers_total{kind=\"host_left\"}") == 1.0
    })
    .await;
    // The new host closes the room.
    editor
        .send(&ClientMessage::CloseRoom {
            request_id: 3,
            room: room.room,
            reason: "done".into(),
        })
        .await;
    let s = scrape_until(&server, |s| {
        s.get("chorus_rooms_ended_total{reason=\"closed\"}") == 1.0
    })
    .await;
    assert_eq!(s.get("chorus_rooms"), 0.0);

    // A session resumed on a new connection while the old one still runs:
    // taken over, and the old one ends as replaced.
    let (_old, hello) = RawClient::connect_hello(&server).await;
    let (mut resumed, _) =
        RawClient::connect_with(&server, resume_hello(&hello.resume_token, vec![])).await;
    resumed.ping().await;
    let s = scrape_until(&server, |s| {
        s.get("chorus_sessions_closed_total{reason=\"replaced\"}") == 1.0
    })
    .await;
    assert_eq!(s.get("chorus_resumes_total{outcome=\"resumed\"}"), 1.0);
    assert!(s.get("chorus_resumable_sessions") >= 1.0);
    // An unknown token: refused, and the session goes on fresh.
    let (mut stranger, _) =
        RawClient::connect_with(&server, resume_hello("no-such-token", vec![])).await;
    stranger.ping().await;
    let s = scrape(&server).await;
    assert_eq!(s.get("chorus_resumes_total{outcome=\"failed\"}"), 1.0);
    // Told to the replaced session as it closed, and to the stranger.
    assert_eq!(s.get("chorus_errors_total{code=\"resume_failed\"}"), 2.0);
}

#[tokio::test]
async fn outbox_depth_shows_a_member_that_does_not_read() {
    let server = start_server_with(lift_rate_limits).await;
    let (mut sender, _) = RawClient::connect_hello(&server).await;
    let (mut idle, _) = RawClient::connect_hello(&server).await;
    let room = sender.join("queues", 1).await;
    idle.join("queues", 1).await;
    // The idle member reads nothing from here on: once QUIC's flow control
    // window is full, its events wait in its outbox.
    let payload = vec![0u8; 32 * 1024];
    for request_id in 2..130 {
        request(
            &mut sender,
            ClientMessage::Command {
                request_id,
                room: room.room,
                kind: "bulk".into(),
                payload: payload.clone(),
                idempotency_key: None,
            },
        )
        .await
        .expect("applied");
    }
    let s = scrape(&server).await;
    assert!(s.get("chorus_outbox_frames") >= 1.0, "{}", s.text);
    assert!(s.get("chorus_outbox_frames_max") >= 1.0);
    assert!(s.get("chorus_outbox_bytes_max") >= 32.0 * 1024.0);
    assert!(s.get("chorus_outbox_bytes") >= s.get("chorus_outbox_bytes_max"));
    assert_eq!(s.get("chorus_room_inbox_requests_max"), 0.0, "all handled");
    assert_eq!(
        s.get("chorus_commands_total{kind=\"bulk\",outcome=\"applied\"}"),
        128.0
    );
}
