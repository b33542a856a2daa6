//! Access control, limits and rate limits through the real server: one test
//! per rule, each showing the refusal with its typed error and that the
//! message just inside the rule passes.

mod common;

use chorus_protocol::*;
use chorus_server::RunningServer;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"test secret of a decent length, 32+";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("token")
}

async fn token_server() -> RunningServer {
    start_server_with(|c| {
        c.access.tokens.hs256_secret = Some(SECRET.to_vec());
        c.access.tokens.leeway_secs = 0;
    })
    .await
}

/// Sends a join and returns what answered it: the snapshot or the error.
async fn try_join(
    client: &mut RawClient,
    room_id: &str,
    request_id: RequestId,
    options: Vec<JoinOption>,
) -> Result<RoomSnapshot, ErrorFrame> {
    client.send(&join_msg(room_id, request_id, options)).await;
    client
        .recv_until(|m| match m {
            ServerMessage::Joined {
                request_id: id,
                snapshot,
            } if id == request_id => Some(Ok(snapshot)),
            ServerMessage::Error(e) if e.request_id == Some(request_id) => Some(Err(e)),
            _ => None,
        })
        .await
}

fn retry_after(e: &ErrorFrame) -> u64 {
    match e.detail {
        ErrorDetail::RetryAfter { retry_after_ms } => retry_after_ms,
        ref other => panic!("expected RetryAfter on {e}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_viewer_cannot_set_state_and_a_role_change_takes_effect_at_once() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut member, _) = RawClient::connect_hello(&server).await;
    let room = host.join("gallery", 1).await;
    let mine = member.join("gallery", 1).await;
    assert_eq!(mine.role, Role::Editor);

    // The host demotes the editor; both see the event.
    let seq = request_ack(
        &mut host,
        ClientMessage::SetRole {
            request_id: 2,
            room: room.room,
            member: mine.you,
            role: Role::Viewer,
        },
    )
    .await
    .expect("host may grant");
    let seen = member
        .recv_until(|m| match m {
            ServerMessage::RoleChanged {
                member, role, seq, ..
            } => Some((member, role, seq)),
            _ => None,
        })
        .await;
    assert_eq!(seen, (mine.you, Role::Viewer, seq));

    member
        .send(&ClientMessage::SetState {
            request_id: 3,
            room: room.room,
            key: "scene".into(),
            value: b"x".to_vec(),
            if_version: None,
        })
        .await;
    let e = member.recv_error().await;
    assert_eq!((e.code, e.request_id), (ErrorCode::Forbidden, Some(3)));

    // Nor may the viewer promote itself back: identity is the server's, not the client's.
    let e = request_ack(
        &mut member,
        ClientMessage::SetRole {
            request_id: 4,
            room: room.room,
            member: mine.you,
            role: Role::Host,
        },
    )
    .await
    .expect_err("a viewer may not grant");
    assert_eq!(e.code, ErrorCode::Forbidden);
    let e = request_ack(
        &mut member,
        ClientMessage::Kick {
            request_id: 5,
            room: room.room,
            member: room.you,
            reason: String::new(),
        },
    )
    .await
    .expect_err("a viewer may not kick the host");
    assert_eq!(e.code, ErrorCode::Forbidden);
}

#[tokio::test]
async fn a_kicked_member_is_told_and_cannot_rejoin_during_the_ban() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut pest, _) = RawClient::connect_hello(&server).await;
    let (mut other, _) = RawClient::connect_hello(&server).await;
    let room = host.join("party", 1).await;
    let pest_snap = pest.join("party", 1).await;
    other.join("party", 1).await;

    request_ack(
        &mut host,
        ClientMessage::Kick {
            request_id: 2,
            room: room.room,
            member: pest_snap.you,
            reason: "spam".into(),
        },
    )
    .await
    .expect("host kicks");
    for client in [&mut pest, &mut other] {
        let (member, reason, ban_ms) = client
            .recv_until(|m| match m {
                ServerMessage::MemberKicked {
                    member,
                    reason,
                    ban_ms,
                    ..
                } => Some((member, reason, ban_ms)),
                _ => None,
            })
            .await;
        assert_eq!((member, reason.as_str()), (pest_snap.you, "spam"));
        assert_eq!(ban_ms, 300_000, "the default ban is five minutes");
    }
    // The kicked session is out: its requests for the room are refused.
    pest.send(&ClientMessage::Command {
        request_id: 3,
        room: room.room,
        kind: "chat".into(),
        payload: vec![],
        idempotency_key: None,
    })
    .await;
    assert_eq!(pest.recv_error().await.code, ErrorCode::NotJoined);

    // Rejoining, even over a new connection, is refused until the ban ends.
    let (mut again, _) = RawClient::connect_hello(&server).await;
    let e = try_join(&mut again, "party", 7, vec![])
        .await
        .expect_err("banned");
    assert_eq!(e.code, ErrorCode::Banned);
    let left = retry_after(&e);
    assert!(left > 290_000 && left <= 300_000, "{left} ms left");
}

#[tokio::test]
async fn join_tokens_admit_with_their_role_and_refuse_expired_forged_and_wrong_room() {
    let server = token_server().await;
    let exp = unix_now() + 600;
    let (mut client, _) = RawClient::connect_hello(&server).await;

    let viewer = hs256(
        SECRET,
        serde_json::json!({"exp": exp, "room": "stage", "role": "follower", "sub": "u1", "name": "Ada"}),
    );
    let snap = try_join(
        &mut client,
        "stage",
        1,
        vec![JoinOption::CreateIfMissing, JoinOption::Token(viewer)],
    )
    .await
    .expect("a valid token admits");
    assert_eq!(
        snap.role,
        Role::Viewer,
        "the token's role, even for the first member"
    );
    assert_eq!(snap.members[0].display.name, "Ada", "the token's name wins");

    let (mut client, _) = RawClient::connect_hello(&server).await;
    let expired = hs256(
        SECRET,
        serde_json::json!({"exp": unix_now() - 5, "room": "stage", "role": "editor"}),
    );
    let e = try_join(
        &mut client,
        "stage",
        2,
        vec![JoinOption::Token(expired.clone())],
    )
    .await
    .expect_err("expired");
    assert_eq!((e.code, e.request_id), (ErrorCode::TokenExpired, Some(2)));
    assert!(!e.message.contains(&expired), "errors never echo the token");

    let forged = hs256(
        b"another secret, not the server's!!",
        serde_json::json!({"exp": exp, "room": "stage", "role": "host"}),
    );
    let e = try_join(&mut client, "stage", 3, vec![JoinOption::Token(forged)])
        .await
        .expect_err("forged");
    assert_eq!(e.code, ErrorCode::InvalidToken);

    let other_room = hs256(
        SECRET,
        serde_json::json!({"exp": exp, "room": "backstage", "role": "host"}),
    );
    let e = try_join(&mut client, "stage", 4, vec![JoinOption::Token(other_room)])
        .await
        .expect_err("wrong room");
    assert_eq!(e.code, ErrorCode::InvalidToken);

    let e = try_join(
        &mut client,
        "stage",
        5,
        vec![JoinOption::Token("not.a.jwt".into())],
    )
    .await
    .expect_err("garbage");
    assert_eq!(e.code, ErrorCode::InvalidToken);

    // The session is fine after all that.
    client.ping().await;
}

#[tokio::test]
async fn es256_tokens_from_a_public_key_are_accepted() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let public_pem = key.public_key_pem();
    let server = start_server_with(|c| {
        c.access.tokens.es256_public_key_pem = Some(public_pem.into_bytes());
    })
    .await;
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &serde_json::json!({"exp": unix_now() + 60, "room": "*", "role": "host"}),
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("ec key"),
    )
    .expect("token");
    let (mut client, _) = RawClient::connect_hello(&server).await;
    let snap = try_join(
        &mut client,
        "any-room",
        1,
        vec![JoinOption::CreateIfMissing, JoinOption::Token(token)],
    )
    .await
    .expect("ES256 token admits to any room with room \"*\"");
    assert_eq!(snap.role, Role::Host);
}

#[tokio::test]
async fn a_session_is_closed_when_its_join_token_expires() {
    let server = token_server().await;
    let (mut client, _) = RawClient::connect_hello(&server).await;
    let token = hs256(
        SECRET,
        serde_json::json!({"exp": unix_now() + 2, "room": "short", "role": "editor"}),
    );
    try_join(
        &mut client,
        "short",
        1,
        vec![JoinOption::CreateIfMissing, JoinOption::Token(token)],
    )
    .await
    .expect("valid for two more seconds");
    // No sleep: the server closes the session by itself, and says why.
    let e = client.recv_error().await;
    assert_eq!(e.code, ErrorCode::TokenExpired);
    assert_eq!(client.closed_code().await, Some(305));
}

#[tokio::test]
async fn a_token_for_a_room_the_session_left_does_not_close_it() {
    let server = token_server().await;
    let (mut client, _) = RawClient::connect_hello(&server).await;
    let token = |room: &str, secs: u64| {
        hs256(
            SECRET,
            serde_json::json!({"exp": unix_now() + secs, "room": room, "role": "editor"}),
        )
    };
    let left = try_join(
        &mut client,
        "left",
        1,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Token(token("left", 1)),
        ],
    )
    .await
    .expect("joins");
    client
        .send(&ClientMessage::Leave {
            request_id: 2,
            room: left.room,
        })
        .await;
    client
        .recv_until(|m| matches!(m, ServerMessage::Left { request_id: 2, .. }).then_some(()))
        .await;
    let stayed = try_join(
        &mut client,
        "stayed",
        3,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Token(token("stayed", 3)),
        ],
    )
    .await
    .expect("joins");
    // The first token runs out while the session is no longer in that room;
    // the session is closed only when the token of the room it is in runs out.
    let e = client.recv_error().await;
    assert_eq!(e.code, ErrorCode::TokenExpired);
    assert!(
        e.message.contains(&format!("slot {}", stayed.room.0)),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn joins_without_a_token_are_refused_when_tokens_are_required() {
    let server = start_server_with(|c| {
        c.access.tokens.hs256_secret = Some(SECRET.to_vec());
        c.access.require_join_token = true;
    })
    .await;
    let (mut client, _) = RawClient::connect_hello(&server).await;
    let e = try_join(&mut client, "r", 1, vec![JoinOption::CreateIfMissing])
        .await
        .expect_err("no token");
    assert_eq!(e.code, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn an_api_key_is_required_when_configured() {
    let server = start_server_with(|c| c.access.api_keys = vec!["s3cret-key".into()]).await;

    let mut without = RawClient::connect(&server).await;
    without.send(&hello(PROTOCOL_VERSION)).await;
    assert_eq!(without.recv_error().await.code, ErrorCode::Unauthorized);
    assert_eq!(without.closed_code().await, Some(303));

    let mut wrong = RawClient::connect(&server).await;
    wrong.send(&hello_with_key("s3cret-kez")).await;
    let e = wrong.recv_error().await;
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(!e.message.contains("s3cret"), "errors never echo keys");

    let mut right = RawClient::connect(&server).await;
    right.send(&hello_with_key("s3cret-key")).await;
    assert!(matches!(right.recv().await, ServerMessage::Hello(_)));
}

fn hello_with_key(key: &str) -> ClientMessage {
    ClientMessage::Hello(ClientHello {
        version: PROTOCOL_VERSION,
        client_name: "raw-test".into(),
        capabilities: 0,
        options: vec![HelloOption::ApiKey(key.into())],
    })
}

#[tokio::test]
async fn wrong_passwords_are_refused_and_the_fourth_attempt_is_blocked() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let room = try_join(
        &mut host,
        "vault",
        1,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Password("open sesame".into()),
        ],
    )
    .await
    .expect("creator sets the password");

    let (mut guest, _) = RawClient::connect_hello(&server).await;
    let e = try_join(&mut guest, "vault", 1, vec![])
        .await
        .expect_err("no password");
    assert_eq!(e.code, ErrorCode::PasswordRequired);
    for attempt in 2..=4 {
        let e = try_join(
            &mut guest,
            "vault",
            attempt,
            vec![JoinOption::Password("guess".into())],
        )
        .await
        .expect_err("wrong");
        assert_eq!(e.code, ErrorCode::WrongPassword, "attempt {attempt}");
        assert!(!e.message.contains("guess"));
    }
    // Three wrong: now even the right password is blocked, for 30 minutes.
    let e = try_join(
        &mut guest,
        "vault",
        5,
        vec![JoinOption::Password("open sesame".into())],
    )
    .await
    .expect_err("blocked");
    assert_eq!(e.code, ErrorCode::Blocked);
    let left = retry_after(&e);
    assert!(left > 29 * 60 * 1000 && left <= 30 * 60 * 1000, "{left} ms");

    // The host changes the password; the old one stops working for others.
    request_ack(
        &mut host,
        ClientMessage::SetPassword {
            request_id: 2,
            room: room.room,
            password: Some("new words".into()),
        },
    )
    .await
    .expect("host sets the password");
    // Another room is not blocked for this address.
    let e = try_join(&mut guest, "elsewhere", 6, vec![])
        .await
        .expect_err("no room");
    assert_eq!(e.code, ErrorCode::RoomNotFound);
}

#[tokio::test]
async fn the_right_password_admits_and_a_changed_password_replaces_the_old_one() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let room = try_join(
        &mut host,
        "studio",
        1,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Password("pw-1".into()),
        ],
    )
    .await
    .expect("created");
    let (mut guest, _) = RawClient::connect_hello(&server).await;
    try_join(
        &mut guest,
        "studio",
        1,
        vec![JoinOption::Password("pw-1".into())],
    )
    .await
    .expect("right password");
    // Only hosts may change it by default.
    let e = request_ack(
        &mut guest,
        ClientMessage::SetPassword {
            request_id: 2,
            room: room.room,
            password: Some("mine now".into()),
        },
    )
    .await
    .expect_err("editors may not");
    assert_eq!(e.code, ErrorCode::Forbidden);
    request_ack(
        &mut host,
        ClientMessage::SetPassword {
            request_id: 2,
            room: room.room,
            password: Some("pw-2".into()),
        },
    )
    .await
    .expect("host may");
    let (mut late, _) = RawClient::connect_hello(&server).await;
    let e = try_join(
        &mut late,
        "studio",
        1,
        vec![JoinOption::Password("pw-1".into())],
    )
    .await
    .expect_err("old password");
    assert_eq!(e.code, ErrorCode::WrongPassword);
    try_join(
        &mut late,
        "studio",
        2,
        vec![JoinOption::Password("pw-2".into())],
    )
    .await
    .expect("new password");
}

#[tokio::test]
async fn unknown_rooms_are_limited_per_address_without_revealing_which_exist() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    host.join("real-room", 1).await;
    let (mut prober, _) = RawClient::connect_hello(&server).await;
    for n in 1..=5 {
        let e = try_join(&mut prober, &format!("guess-{n}"), n, vec![])
            .await
            .expect_err("no such room");
        assert_eq!(e.code, ErrorCode::RoomNotFound);
    }
    // Now blocked: the same answer for a room that exists and one that does not.
    let real = try_join(&mut prober, "real-room", 6, vec![])
        .await
        .expect_err("blocked");
    let fake = try_join(&mut prober, "guess-6", 7, vec![])
        .await
        .expect_err("blocked");
    assert_eq!(
        (real.code, fake.code),
        (ErrorCode::Blocked, ErrorCode::Blocked)
    );
    assert_eq!(real.message, fake.message);
    assert!(retry_after(&real) > 59 * 60 * 1000);
}

/// With two connections open, a third is refused: `TooManyConnections` as
/// the first and only message, then closed with 403. Returns that error.
async fn third_connection_refused(server: &RunningServer) -> ErrorFrame {
    let (_a, _) = RawClient::connect_hello(server).await;
    let (_b, _) = RawClient::connect_hello(server).await;
    let mut third = RawClient::connect(server).await;
    third.send(&hello(PROTOCOL_VERSION)).await;
    let e = third.recv_error().await;
    assert_eq!(e.code, ErrorCode::TooManyConnections);
    assert_eq!(third.closed_code().await, Some(403));
    e
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let server = start_server_with(|c| c.access.abuse.max_connections_per_ip = 2).await;
    let e = third_connection_refused(&server).await;
    assert!(e.message.contains("from this address"), "{e:?}");
}

#[tokio::test]
async fn connections_on_the_whole_server_are_capped() {
    let server = start_server_with(|c| {
        c.access.abuse.max_connections = 2;
        c.access.abuse.max_connections_per_ip = 100;
    })
    .await;
    let e = third_connection_refused(&server).await;
    assert!(
        e.message
            .contains("the server has its maximum number of connections open"),
        "{e:?}"
    );
    assert_eq!(retry_after(&e), 5000);
}

#[tokio::test]
async fn rooms_created_without_an_id_get_an_invite_code() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let snap = try_join(&mut host, "", 1, vec![JoinOption::CreateIfMissing])
        .await
        .expect("created with a code");
    let code = snap.room_id.clone();
    assert_eq!(code.len(), 8);
    assert!(
        code.chars()
            .all(|c| "23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(c)),
        "{code}"
    );
    let (mut guest, _) = RawClient::connect_hello(&server).await;
    let joined = try_join(&mut guest, &code, 1, vec![])
        .await
        .expect("joins by code");
    assert_eq!(joined.room, snap.room);
    // Without CreateIfMissing an empty id is still invalid.
    let e = try_join(&mut guest, "", 2, vec![])
        .await
        .expect_err("empty id");
    assert_eq!(e.code, ErrorCode::InvalidRoomId);
}

#[tokio::test]
async fn closing_a_room_ends_it_for_everyone() {
    let server = start_server().await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    let (mut guest, _) = RawClient::connect_hello(&server).await;
    let room = host.join("meeting", 1).await;
    guest.join("meeting", 1).await;
    let e = request_ack(
        &mut guest,
        ClientMessage::CloseRoom {
            request_id: 2,
            room: room.room,
            reason: "bye".into(),
        },
    )
    .await
    .expect_err("editors may not close");
    assert_eq!(e.code, ErrorCode::Forbidden);
    request_ack(
        &mut host,
        ClientMessage::CloseRoom {
            request_id: 3,
            room: room.room,
            reason: "over".into(),
        },
    )
    .await
    .expect("host closes");
    let reason = guest
        .recv_until(|m| match m {
            ServerMessage::RoomClosed { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, "over");
    // The id is free again: joining creates a new room.
    let fresh = guest.join("meeting", 4).await;
    assert_ne!(fresh.room, room.room);
    assert_eq!(fresh.role, Role::Host);
}

#[tokio::test]
async fn templates_and_creator_policies_set_the_rules_of_a_new_room() {
    let mut templates = std::collections::HashMap::new();
    templates.insert(
        "lecture".to_owned(),
        chorus_server::rooms::RoomTemplate {
            default_role: Some(Role::Viewer),
            max_members: Some(3),
            ..Default::default()
        },
    );
    let server = start_server_with(|c| c.rooms.templates = templates).await;
    let (mut host, _) = RawClient::connect_hello(&server).await;
    try_join(
        &mut host,
        "lecture-1",
        1,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Template("lecture".into()),
            JoinOption::Policy(PermissionPolicy {
                rules: vec![PermissionRule {
                    action: Action::SendCommands,
                    scope: "question".into(),
                    roles: vec![Role::Host, Role::Editor, Role::Viewer],
                }],
            }),
        ],
    )
    .await
    .expect("created from the template");
    let (mut student, _) = RawClient::connect_hello(&server).await;
    let snap = try_join(&mut student, "lecture-1", 1, vec![])
        .await
        .expect("joins");
    assert_eq!(snap.role, Role::Viewer);
    student
        .send(&ClientMessage::Command {
            request_id: 2,
            room: snap.room,
            kind: "question".into(),
            payload: b"why?".to_vec(),
            idempotency_key: None,
        })
        .await;
    student
        .recv_until(|m| matches!(m, ServerMessage::CommandAck { request_id: 2, .. }).then_some(()))
        .await;
    student
        .send(&ClientMessage::Command {
            request_id: 3,
            room: snap.room,
            kind: "draw".into(),
            payload: vec![],
            idempotency_key: None,
        })
        .await;
    assert_eq!(student.recv_error().await.code, ErrorCode::Forbidden);

    let e = try_join(
        &mut host,
        "other",
        9,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Template("nope".into()),
        ],
    )
    .await
    .expect_err("unknown template");
    assert!(e.message.contains("nope"));
}

#[tokio::test]
async fn each_new_limit_passes_at_the_limit_and_refuses_one_past_it() {
    let server = start_server().await;
    let (mut host, hello) = RawClient::connect_hello(&server).await;
    let limits = hello.limits;
    let room = host.join("limits", 1).await;

    let at = "p".repeat(limits.max_password_len as usize);
    request_ack(
        &mut host,
        ClientMessage::SetPassword {
            request_id: 2,
            room: room.room,
            password: Some(at.clone()),
        },
    )
    .await
    .expect("a password at the limit");
    let e = request_ack(
        &mut host,
        ClientMessage::SetPassword {
            request_id: 3,
            room: room.room,
            password: Some(at + "p"),
        },
    )
    .await
    .expect_err("one byte over");
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    assert_eq!(
        e.detail,
        ErrorDetail::Limit {
            limit: 128,
            actual: 129
        }
    );

    let (mut guest, _) = RawClient::connect_hello(&server).await;
    let guest_snap = try_join(
        &mut guest,
        "limits",
        1,
        vec![JoinOption::Password("p".repeat(128))],
    )
    .await
    .expect("joins");
    let reason = "r".repeat(limits.max_reason_len as usize + 1);
    let e = request_ack(
        &mut host,
        ClientMessage::Kick {
            request_id: 4,
            room: room.room,
            member: guest_snap.you,
            reason,
        },
    )
    .await
    .expect_err("reason over 96");
    assert_eq!(
        (e.code, e.detail.clone()),
        (
            ErrorCode::LimitExceeded,
            ErrorDetail::Limit {
                limit: 96,
                actual: 97
            }
        )
    );
    request_ack(
        &mut host,
        ClientMessage::Kick {
            request_id: 5,
            room: room.room,
            member: guest_snap.you,
            reason: "r".repeat(96),
        },
    )
    .await
    .expect("a reason at the limit");

    let token = "t".repeat(limits.max_token_len as usize + 1);
    let e = try_join(&mut guest, "limits", 6, vec![JoinOption::Token(token)])
        .await
        .expect_err("token over the limit");
    assert_eq!(e.code, ErrorCode::LimitExceeded);
}

#[tokio::test]
async fn a_state_flood_is_cut_by_the_rate_limiter_and_others_are_unaffected() {
    let server = start_server().await;
    let (mut flooder, hello) = RawClient::connect_hello(&server).await;
    let (mut bystander, _) = RawClient::connect_hello(&server).await;
    let room = flooder.join("busy", 1).await;
    bystander.join("busy", 1).await;
    let burst = hello.rate_limits.state_updates.burst;

    // Send well past the burst without waiting for answers.
    let sent = burst + 10;
    for n in 0..sent {
        flooder
            .send(&ClientMessage::SetState {
                request_id: 100 + n,
                room: room.room,
                key: "k".into(),
                value: n.to_le_bytes().to_vec(),
                if_version: None,
            })
            .await;
    }
    let (mut acks, mut limited) = (0, 0);
    while acks + limited < sent {
        match flooder.recv().await {
            ServerMessage::StateAck { .. } => acks += 1,
            ServerMessage::Error(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited);
                assert!(e.request_id.is_some_and(|id| id >= 100));
                assert!(retry_after(&e) >= 1);
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(acks >= burst, "the burst passes: {acks} acks");
    assert!(limited >= 1, "the flood is cut");

    // The bystander is served as before.
    bystander.ping().await;

    // Keep going: repeated violations close the flooder with RateLimited.
    for n in 0..200u32 {
        flooder
            .send(&ClientMessage::SetState {
                request_id: 1000 + n,
                room: room.room,
                key: "k".into(),
                value: vec![],
                if_version: None,
            })
            .await;
    }
    let close = flooder
        .recv_until(|m| match m {
            ServerMessage::Error(e) if e.request_id.is_none() => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(close.code, ErrorCode::RateLimited);
    assert_eq!(flooder.closed_code().await, Some(401));
    let left = bystander
        .recv_until(|m| match m {
            ServerMessage::MemberLeft { member, .. } => Some(member),
            _ => None,
        })
        .await;
    assert_eq!(left, room.you);
    bystander.ping().await;
}

#[tokio::test]
async fn a_tick_flood_is_capped_at_the_tick_budget() {
    let server = start_server_with(|c| {
        // Never disconnect in this test: count what gets through.
        c.session.violations_before_disconnect = u32::MAX;
    })
    .await;
    let (mut flooder, hello) = RawClient::connect_hello(&server).await;
    let (mut receiver, _) = RawClient::connect_hello(&server).await;
    let room = flooder.join("ticks", 1).await;
    receiver.join("ticks", 1).await;
    let budget = hello.rate_limits.ticks;
    let sent = budget.burst * 4;
    let start = tokio::time::Instant::now();
    for seq in 0..sent {
        flooder.send_tick(room.room, room.you, seq, b"pose");
    }
    let e = flooder.recv_error().await;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.message.contains("ticks"));
    // At most the burst plus the refill over the time the flood took to
    // pass through can be delivered (measured, so a slow machine only loosens it).
    let mut delivered = 0u32;
    let mut last = start;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Ok(d)) =
        tokio::time::timeout_at(deadline, receiver.connection.receive_datagram()).await
    {
        decode_datagram(&d.payload(), &Limits::default()).expect("tick");
        delivered += 1;
        last = tokio::time::Instant::now();
    }
    let refill = (f64::from(budget.per_second) * (last - start).as_secs_f64()).ceil() as u32;
    assert!(delivered >= 1);
    assert!(
        delivered <= budget.burst + refill + 1,
        "{delivered} of {sent} ticks passed a budget of {budget:?} over {:?}",
        last - start
    );
    assert!(delivered < sent, "the flood was cut");
    receiver.ping().await;
}
