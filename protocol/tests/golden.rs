//! Golden vectors: the exact bytes of one sample of every message type.
//!
//! `protocol/golden/vectors.json` is checked in; every SDK decodes and re-encodes
//! each vector and must get the same bytes. This test fails when an encoding
//! changes. After an intended change (a new message at the end of an enum), run
//! `CHORUS_BLESS=1 cargo test -p chorus-protocol --test golden` and commit the file.

use chorus_protocol::*;
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Vector {
    name: &'static str,
    lane: &'static str,
    bytes: Vec<u8>,
    value: Value,
}

fn client(name: &'static str, msg: ClientMessage) -> Vector {
    let bytes = encode_message(&msg);
    let decoded = decode_client_message(&bytes, &Limits::default()).expect("sample decodes");
    assert_eq!(decoded, msg, "{name} round-trips");
    Vector {
        name,
        lane: "client",
        value: serde_json::to_value(&msg).expect("json"),
        bytes,
    }
}

fn server(name: &'static str, msg: ServerMessage) -> Vector {
    let bytes = encode_message(&msg);
    let decoded = decode_server_message(&bytes).expect("sample decodes");
    assert_eq!(decoded, msg, "{name} round-trips");
    Vector {
        name,
        lane: "server",
        value: serde_json::to_value(&msg).expect("json"),
        bytes,
    }
}

fn datagram(name: &'static str, d: Datagram<'_>) -> Vector {
    let bytes = encode_datagram(&d);
    assert_eq!(
        decode_datagram(&bytes, &Limits::default()).expect("sample decodes"),
        d
    );
    Vector {
        name,
        lane: "datagram",
        value: serde_json::to_value(d).expect("json"),
        bytes,
    }
}

/// A pack stream header, framed (varint length + body) as it starts a pack
/// stream or pack-lane message.
fn pack_header(name: &'static str, header: PackStreamHeader) -> Vector {
    let bytes = encode_pack_header(&header);
    let mut with_content = bytes.clone();
    with_content.extend_from_slice(b"xyz");
    let (decoded, rest) = split_pack_message(&with_content).expect("sample splits");
    assert_eq!(
        (&decoded, rest),
        (&header, &b"xyz"[..]),
        "{name} round-trips"
    );
    Vector {
        name,
        lane: "pack",
        value: serde_json::to_value(&header).expect("json"),
        bytes,
    }
}

fn display(name: &str) -> DisplayInfo {
    DisplayInfo {
        name: name.into(),
        meta: b"{\"color\":\"#e33\"}".to_vec(),
    }
}

fn timeline() -> TimelineState {
    TimelineState {
        name: "main".into(),
        playing: true,
        rate_ppm: 1_000_000,
        anchor_time: ServerTime(1_790_000_000_000_000),
        anchor_position_us: 90_000_000,
        tempo_mbpm: Some(120_000),
        seq: Seq(3),
    }
}

fn pack() -> PackInfo {
    PackInfo {
        hash: (0u8..32).collect(),
        name: "cat.png".into(),
        media_type: "image/png".into(),
        size: 2048,
        uploader: MemberId(1),
    }
}

fn vectors() -> Vec<Vector> {
    let payload: Vec<u8> = (0u8..48).collect();
    vec![
        client(
            "client_hello",
            ClientMessage::Hello(ClientHello {
                version: PROTOCOL_VERSION,
                client_name: "chorus-client-rust/0.1.0".into(),
                capabilities: 0,
                options: vec![],
            }),
        ),
        client(
            "client_hello_api_key",
            ClientMessage::Hello(ClientHello {
                version: PROTOCOL_VERSION,
                client_name: "app".into(),
                capabilities: 0,
                options: vec![HelloOption::ApiKey("k3y".into())],
            }),
        ),
        client(
            "join_create",
            ClientMessage::Join {
                request_id: 1,
                room_id: "lobby".into(),
                display: display("Ada"),
                options: vec![JoinOption::CreateIfMissing, JoinOption::MaxMembers(8)],
            },
        ),
        client(
            "join_with_access",
            ClientMessage::Join {
                request_id: 7,
                room_id: String::new(),
                display: DisplayInfo::default(),
                options: vec![
                    JoinOption::CreateIfMissing,
                    JoinOption::Password("pw".into()),
                    JoinOption::Token("a.b.c".into()),
                    JoinOption::Policy(PermissionPolicy {
                        rules: vec![PermissionRule {
                            action: Action::SetState,
                            scope: "cursor/".into(),
                            roles: vec![Role::Host, Role::Editor, Role::Viewer],
                        }],
                    }),
                    JoinOption::Template("classroom".into()),
                ],
            },
        ),
        client(
            "join_existing",
            ClientMessage::Join {
                request_id: 300,
                room_id: "gallery/ünïcode".into(),
                display: DisplayInfo::default(),
                options: vec![],
            },
        ),
        client(
            "leave",
            ClientMessage::Leave {
                request_id: 2,
                room: RoomSlot(1),
            },
        ),
        client(
            "set_state",
            ClientMessage::SetState {
                request_id: 3,
                room: RoomSlot(1),
                key: "title".into(),
                value: b"Hello".to_vec(),
                if_version: None,
            },
        ),
        client(
            "set_state_if_version",
            ClientMessage::SetState {
                request_id: 4,
                room: RoomSlot(200),
                key: "scene".into(),
                value: vec![0, 255, 128],
                if_version: Some(70_000),
            },
        ),
        client(
            "delete_state",
            ClientMessage::DeleteState {
                request_id: 5,
                room: RoomSlot(1),
                key: "title".into(),
                if_version: Some(0),
            },
        ),
        client(
            "command",
            ClientMessage::Command {
                request_id: 6,
                room: RoomSlot(1),
                kind: "chat".into(),
                payload: b"hi all".to_vec(),
                idempotency_key: Some("msg-1".into()),
            },
        ),
        client(
            "command_no_key",
            ClientMessage::Command {
                request_id: 7,
                room: RoomSlot(1),
                kind: "play".into(),
                payload: vec![],
                idempotency_key: None,
            },
        ),
        client(
            "ping",
            ClientMessage::Ping {
                client_time: 1_790_000_000_123_456,
            },
        ),
        server(
            "server_hello",
            ServerMessage::Hello(ServerHello {
                version: PROTOCOL_VERSION,
                server_name: "chorus/0.1.0".into(),
                session_id: 0x0123_4567_89ab_cdef,
                server_time: ServerTime(1_790_000_000_000_000),
                max_datagram_size: 1211,
                limits: Limits::default(),
                rate_limits: RateLimits::default(),
                resume_token: "r3sume-t0ken".into(),
                resume_window_ms: 60_000,
                extensions: vec![],
            }),
        ),
        server(
            "joined",
            ServerMessage::Joined {
                request_id: 1,
                snapshot: RoomSnapshot {
                    room_id: "lobby".into(),
                    room: RoomSlot(1),
                    you: MemberId(2),
                    role: Role::Editor,
                    members: vec![
                        MemberInfo {
                            id: MemberId(1),
                            role: Role::Host,
                            display: display("Ada"),
                            presence: Presence::Online,
                        },
                        MemberInfo {
                            id: MemberId(2),
                            role: Role::Editor,
                            display: DisplayInfo::default(),
                            presence: Presence::Reconnecting,
                        },
                    ],
                    state: vec![StateEntry {
                        key: "title".into(),
                        value: b"Hello".to_vec(),
                        version: 3,
                        author: MemberId(1),
                    }],
                    state_version: 3,
                    last_seq: Seq(5),
                    policy: PermissionPolicy::default(),
                    kind: RoomKind::Normal,
                    failover: FailoverMode::NextMember,
                    timelines: vec![timeline()],
                    packs: vec![pack()],
                    chat: vec![ChatEntry {
                        seq: Seq(4),
                        author: MemberId(1),
                        time: ServerTime(1_790_000_000_000_000),
                        payload: b"hi".to_vec(),
                    }],
                },
            },
        ),
        server(
            "left",
            ServerMessage::Left {
                request_id: 2,
                room: RoomSlot(1),
            },
        ),
        server(
            "member_joined",
            ServerMessage::MemberJoined {
                room: RoomSlot(1),
                seq: Seq(6),
                member: MemberInfo {
                    id: MemberId(3),
                    role: Role::Viewer,
                    display: display("Bo"),
                    presence: Presence::Online,
                },
            },
        ),
        server(
            "member_left",
            ServerMessage::MemberLeft {
                room: RoomSlot(1),
                seq: Seq(7),
                member: MemberId(3),
                reason: LeaveReason::Disconnected,
            },
        ),
        server(
            "member_timed_out",
            ServerMessage::MemberLeft {
                room: RoomSlot(1),
                seq: Seq(8),
                member: MemberId(4),
                reason: LeaveReason::TimedOut,
            },
        ),
        server(
            "state_changed",
            ServerMessage::StateChanged {
                room: RoomSlot(1),
                seq: Seq(8),
                key: "title".into(),
                value: Some(b"Hi".to_vec()),
                version: 4,
                author: MemberId(2),
            },
        ),
        server(
            "state_deleted",
            ServerMessage::StateChanged {
                room: RoomSlot(1),
                seq: Seq(9),
                key: "title".into(),
                value: None,
                version: 5,
                author: MemberId(2),
            },
        ),
        server(
            "state_ack",
            ServerMessage::StateAck {
                request_id: 3,
                room: RoomSlot(1),
                version: 4,
                seq: Seq(8),
            },
        ),
        server(
            "command_event",
            ServerMessage::CommandEvent {
                room: RoomSlot(1),
                seq: Seq(10),
                author: MemberId(2),
                kind: "chat".into(),
                payload: b"hi all".to_vec(),
                idempotency_key: Some("msg-1".into()),
            },
        ),
        server(
            "command_ack",
            ServerMessage::CommandAck {
                request_id: 6,
                room: RoomSlot(1),
                seq: Seq(10),
                duplicate: false,
            },
        ),
        server(
            "pong",
            ServerMessage::Pong {
                client_time: 1_790_000_000_123_456,
                server_receive_time: ServerTime(1_790_000_000_200_000),
                server_send_time: ServerTime(1_790_000_000_200_012),
            },
        ),
        server(
            "error_conflict",
            ServerMessage::Error(
                ErrorFrame::new(Some(4), ErrorCode::Conflict, "key scene is at version 71")
                    .with_detail(ErrorDetail::Conflict {
                        current_version: 71,
                    }),
            ),
        ),
        server(
            "error_version",
            ServerMessage::Error(
                ErrorFrame::new(
                    None,
                    ErrorCode::VersionMismatch,
                    "server speaks 1.0, client 2.0",
                )
                .with_detail(ErrorDetail::Version {
                    server: ProtocolVersion { major: 1, minor: 0 },
                    client: ProtocolVersion { major: 2, minor: 0 },
                }),
            ),
        ),
        server(
            "error_limit",
            ServerMessage::Error(
                ErrorFrame::new(Some(9), ErrorCode::LimitExceeded, "room_id too long").with_detail(
                    ErrorDetail::Limit {
                        limit: 128,
                        actual: 129,
                    },
                ),
            ),
        ),
        server(
            "error_plain",
            ServerMessage::Error(ErrorFrame::new(None, ErrorCode::SlowConsumer, "too slow")),
        ),
        client(
            "kick",
            ClientMessage::Kick {
                request_id: 20,
                room: RoomSlot(1),
                member: MemberId(3),
                reason: "spam".into(),
            },
        ),
        client(
            "set_role",
            ClientMessage::SetRole {
                request_id: 21,
                room: RoomSlot(1),
                member: MemberId(3),
                role: Role::Viewer,
            },
        ),
        client(
            "set_password",
            ClientMessage::SetPassword {
                request_id: 22,
                room: RoomSlot(1),
                password: Some("hunter2".into()),
            },
        ),
        client(
            "close_room",
            ClientMessage::CloseRoom {
                request_id: 23,
                room: RoomSlot(1),
                reason: "done".into(),
            },
        ),
        server(
            "role_changed",
            ServerMessage::RoleChanged {
                room: RoomSlot(1),
                seq: Seq(10),
                member: MemberId(3),
                role: Role::Viewer,
                by: MemberId(1),
            },
        ),
        server(
            "member_kicked",
            ServerMessage::MemberKicked {
                room: RoomSlot(1),
                seq: Seq(11),
                member: MemberId(3),
                by: MemberId(1),
                reason: "spam".into(),
                ban_ms: 300_000,
            },
        ),
        server(
            "room_closed",
            ServerMessage::RoomClosed {
                room: RoomSlot(1),
                seq: Seq(12),
                by: MemberId(1),
                reason: "done".into(),
            },
        ),
        server(
            "ack",
            ServerMessage::Ack {
                request_id: 22,
                room: RoomSlot(1),
                seq: Seq(12),
            },
        ),
        server(
            "error_rate_limited",
            ServerMessage::Error(
                ErrorFrame::new(Some(24), ErrorCode::RateLimited, "state updates over 20/s")
                    .with_detail(ErrorDetail::RetryAfter { retry_after_ms: 50 }),
            ),
        ),
        client(
            "client_hello_resume",
            ClientMessage::Hello(ClientHello {
                version: PROTOCOL_VERSION,
                client_name: "app".into(),
                capabilities: 0,
                options: vec![HelloOption::Resume {
                    token: "r3sume-t0ken".into(),
                    rooms: vec![ResumeRoom {
                        room: RoomSlot(1),
                        last_seq: Seq(41),
                    }],
                }],
            }),
        ),
        client(
            "join_relay",
            ClientMessage::Join {
                request_id: 8,
                room_id: "p2p".into(),
                display: DisplayInfo::default(),
                options: vec![
                    JoinOption::CreateIfMissing,
                    JoinOption::Kind(RoomKind::Relay),
                    JoinOption::Failover(FailoverMode::PauseTimeline),
                ],
            },
        ),
        client(
            "timeline_play_at",
            ClientMessage::Timeline {
                request_id: 30,
                room: RoomSlot(1),
                name: "main".into(),
                op: TimelineOp::Play,
                at: Some(ServerTime(1_790_000_000_500_000)),
                expected_seq: Some(Seq(12)),
            },
        ),
        client(
            "timeline_seek",
            ClientMessage::Timeline {
                request_id: 31,
                room: RoomSlot(1),
                name: "main".into(),
                op: TimelineOp::Seek {
                    position_us: 42_000_000,
                },
                at: None,
                expected_seq: None,
            },
        ),
        client(
            "direct",
            ClientMessage::Direct {
                request_id: 32,
                room: RoomSlot(1),
                to: MemberId(2),
                kind: "rtc-offer".into(),
                payload: b"v=0".to_vec(),
            },
        ),
        client(
            "broadcast",
            ClientMessage::Broadcast {
                request_id: 33,
                room: RoomSlot(1),
                audience: Audience::Role(Role::Viewer),
                kind: "note".into(),
                payload: b"hi".to_vec(),
            },
        ),
        client(
            "request_snapshot",
            ClientMessage::RequestSnapshot {
                request_id: 34,
                room: RoomSlot(1),
            },
        ),
        client(
            "get_ice_servers",
            ClientMessage::GetIceServers {
                request_id: 35,
                room: RoomSlot(1),
            },
        ),
        client(
            "set_delegate",
            ClientMessage::SetDelegate {
                request_id: 36,
                room: RoomSlot(1),
                member: Some(MemberId(2)),
            },
        ),
        client(
            "pack_upload",
            ClientMessage::PackUpload {
                request_id: 37,
                room: RoomSlot(1),
                hash: (0u8..32).collect(),
                name: "cat.png".into(),
                media_type: "image/png".into(),
                size: 2048,
            },
        ),
        client(
            "pack_fetch",
            ClientMessage::PackFetch {
                request_id: 38,
                room: RoomSlot(1),
                hash: (0u8..32).collect(),
                offset: 1024,
            },
        ),
        server(
            "presence_changed",
            ServerMessage::PresenceChanged {
                room: RoomSlot(1),
                seq: Seq(13),
                member: MemberId(2),
                presence: Presence::Reconnecting,
            },
        ),
        server(
            "timeline_changed",
            ServerMessage::TimelineChanged {
                room: RoomSlot(1),
                seq: Seq(3),
                timeline: timeline(),
                by: MemberId(1),
            },
        ),
        server(
            "direct_message",
            ServerMessage::DirectMessage {
                room: RoomSlot(1),
                from: MemberId(1),
                kind: "rtc-offer".into(),
                payload: b"v=0".to_vec(),
            },
        ),
        server(
            "broadcast_message",
            ServerMessage::BroadcastMessage {
                room: RoomSlot(1),
                from: MemberId(1),
                kind: "note".into(),
                payload: b"hi".to_vec(),
            },
        ),
        server(
            "snapshot",
            ServerMessage::Snapshot {
                request_id: 34,
                snapshot: RoomSnapshot {
                    room_id: "p2p".into(),
                    room: RoomSlot(2),
                    you: MemberId(1),
                    role: Role::Host,
                    members: vec![],
                    state: vec![],
                    state_version: 0,
                    last_seq: Seq(1),
                    policy: PermissionPolicy::default(),
                    kind: RoomKind::Relay,
                    failover: FailoverMode::Nothing,
                    timelines: vec![],
                    packs: vec![],
                    chat: vec![],
                },
            },
        ),
        server(
            "ice_servers",
            ServerMessage::IceServers {
                request_id: 35,
                servers: vec![
                    IceServer {
                        urls: vec!["stun:stun.example.org:3478".into()],
                        username: None,
                        credential: None,
                    },
                    IceServer {
                        urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
                        username: Some("1790000600:2".into()),
                        credential: Some("c2VjcmV0".into()),
                    },
                ],
                expires: ServerTime(1_790_000_600_000_000),
            },
        ),
        server(
            "resumed",
            ServerMessage::Resumed {
                room: RoomSlot(1),
                member: MemberId(2),
                snapshot: None,
            },
        ),
        server(
            "resume_lost",
            ServerMessage::ResumeLost {
                room: RoomSlot(3),
                code: ErrorCode::RoomNotFound,
            },
        ),
        server(
            "pack_available",
            ServerMessage::PackAvailable {
                room: RoomSlot(1),
                seq: Seq(14),
                pack: pack(),
            },
        ),
        server(
            "pack_upload_ready",
            ServerMessage::PackUploadReady {
                request_id: 37,
                hash: (0u8..32).collect(),
                offset: 1024,
            },
        ),
        server(
            "error_timeline_conflict",
            ServerMessage::Error(
                ErrorFrame::new(
                    Some(30),
                    ErrorCode::Conflict,
                    "timeline main changed at seq 13",
                )
                .with_detail(ErrorDetail::Sequence {
                    current_seq: Seq(13),
                }),
            ),
        ),
        pack_header(
            "pack_header_upload",
            PackStreamHeader::Upload {
                hash: (0u8..32).collect(),
                offset: 0,
            },
        ),
        pack_header(
            "pack_header_download",
            PackStreamHeader::Download {
                request_id: 38,
                hash: (0u8..32).collect(),
                offset: 1024,
                size: 2048,
            },
        ),
        datagram(
            "tick",
            Datagram::Tick(Tick {
                room: RoomSlot(1),
                sender: MemberId(2),
                seq: 1000,
                payload: &payload,
            }),
        ),
        datagram(
            "tick_empty",
            Datagram::Tick(Tick {
                room: RoomSlot(70_000),
                sender: MemberId(300),
                seq: u32::MAX,
                payload: &[],
            }),
        ),
    ]
}

#[test]
fn golden_vectors_match_checked_in_file() {
    let vectors = vectors();
    let rendered = Value::Array(
        vectors
            .iter()
            .map(|v| {
                json!({
                    "name": v.name,
                    "lane": v.lane,
                    "hex": hex(&v.bytes),
                    "value": v.value,
                })
            })
            .collect(),
    );
    let text = serde_json::to_string_pretty(&rendered).expect("json") + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/vectors.json");
    if std::env::var_os("CHORUS_BLESS").is_some() {
        std::fs::write(path, &text).expect("write golden file");
        return;
    }
    let stored = std::fs::read_to_string(path)
        .expect("protocol/golden/vectors.json is missing: run with CHORUS_BLESS=1 once");
    assert_eq!(
        stored, text,
        "encoding changed: if intended, re-run with CHORUS_BLESS=1 and commit"
    );
}

#[test]
fn every_message_tag_has_a_vector() {
    let vectors = vectors();
    let tags = |lane: &str| -> std::collections::BTreeSet<u8> {
        vectors
            .iter()
            .filter(|v| v.lane == lane)
            .map(|v| v.bytes[0])
            .collect()
    };
    assert_eq!(tags("client").len() as u32, codec::CLIENT_MESSAGE_TAGS);
    assert_eq!(tags("server").len() as u32, codec::SERVER_MESSAGE_TAGS);
    assert_eq!(tags("datagram").len() as u32, codec::DATAGRAM_TAGS);
}
