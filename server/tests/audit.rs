//! The audit log: security-relevant actions are logged under the target
//! `chorus::audit` with stable event names, and no password, token or API key
//! ever appears in the log, in an error, in /stats or in /metrics.
//!
//! This binary installs a process-wide log subscriber that writes into a
//! buffer, so it holds exactly one test.

mod common;

use chorus_protocol::*;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const API_KEY: &str = "api-key-NEVER-LOGGED-1";
const WRONG_KEY: &str = "api-key-NEVER-LOGGED-2";
const PASSWORD: &str = "password-NEVER-LOGGED-3";
const WRONG_PASSWORD: &str = "password-NEVER-LOGGED-4";
const NEW_PASSWORD: &str = "password-NEVER-LOGGED-5";
const JWT_SECRET: &str = "jwt-secret-NEVER-LOGGED-6-padding-to-32-bytes";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hello_with_key(key: &str) -> ClientMessage {
    ClientMessage::Hello(ClientHello {
        version: PROTOCOL_VERSION,
        client_name: "audit-test".into(),
        capabilities: 0,
        options: vec![HelloOption::ApiKey(key.into())],
    })
}

async fn connect(server: &chorus_server::RunningServer) -> RawClient {
    let mut client = RawClient::connect(server).await;
    client.send(&hello_with_key(API_KEY)).await;
    assert!(matches!(client.recv().await, ServerMessage::Hello(_)));
    client
}

async fn expect_error(client: &mut RawClient, msg: ClientMessage) -> ErrorFrame {
    let request_id = msg.request_id();
    client.send(&msg).await;
    client
        .recv_until(|m| match m {
            ServerMessage::Error(e) if e.request_id == request_id => Some(e),
            _ => None,
        })
        .await
}

async fn expect_ack(client: &mut RawClient, msg: ClientMessage) {
    let request_id = msg.request_id().expect("request");
    client.send(&msg).await;
    client
        .recv_until(|m| match m {
            ServerMessage::Ack { request_id: id, .. } if id == request_id => Some(()),
            ServerMessage::Error(e) if e.request_id == Some(request_id) => {
                panic!("refused: {e}")
            }
            _ => None,
        })
        .await
}

#[tokio::test]
async fn security_events_are_audited_by_name_and_secrets_never_leak() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("chorus=info,chorus_server=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = start_server_with(|c| {
        c.access.api_keys = vec![API_KEY.into()];
        c.access.tokens.hs256_secret = Some(JWT_SECRET.as_bytes().to_vec());
        c.session.violations_before_disconnect = 3;
    })
    .await;

    // A wrong API key.
    let mut intruder = RawClient::connect(&server).await;
    intruder.send(&hello_with_key(WRONG_KEY)).await;
    let e = intruder.recv_error().await;
    assert_eq!(e.code, ErrorCode::Unauthorized);

    // A forged token: signed with another secret.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"exp": 4_000_000_000u64, "room": "vault", "role": "host"}),
        &EncodingKey::from_secret(b"another secret that is long enough!"),
    )
    .expect("token");
    let mut host = connect(&server).await;
    let e = expect_error(
        &mut host,
        join_msg("vault", 1, vec![JoinOption::Token(forged.clone())]),
    )
    .await;
    assert_eq!(e.code, ErrorCode::InvalidToken);

    // A password room, a wrong password, a kick, a role change, a password
    // change, a close.
    host.send(&join_msg(
        "vault",
        2,
        vec![
            JoinOption::CreateIfMissing,
            JoinOption::Password(PASSWORD.into()),
        ],
    ))
    .await;
    let room = host
        .recv_until(|m| match m {
            ServerMessage::Joined { snapshot, .. } => Some(snapshot),
            _ => None,
        })
        .await;
    let mut guest = connect(&server).await;
    let e = expect_error(
        &mut guest,
        join_msg(
            "vault",
            1,
            vec![JoinOption::Password(WRONG_PASSWORD.into())],
        ),
    )
    .await;
    assert_eq!(e.code, ErrorCode::WrongPassword);
    guest
        .send(&join_msg(
            "vault",
            2,
            vec![JoinOption::Password(PASSWORD.into())],
        ))
        .await;
    let guest_id = guest
        .recv_until(|m| match m {
            ServerMessage::Joined { snapshot, .. } => Some(snapshot.you),
            _ => None,
        })
        .await;
    let mut third = connect(&server).await;
    third
        .send(&join_msg(
            "vault",
            1,
            vec![JoinOption::Password(PASSWORD.into())],
        ))
        .await;
    let third_id = third
        .recv_until(|m| match m {
            ServerMessage::Joined { snapshot, .. } => Some(snapshot.you),
            _ => None,
        })
        .await;
    expect_ack(
        &mut host,
        ClientMessage::SetRole {
            request_id: 3,
            room: room.room,
            member: third_id,
            role: Role::Viewer,
        },
    )
    .await;
    expect_ack(
        &mut host,
        ClientMessage::Kick {
            request_id: 4,
            room: room.room,
            member: guest_id,
            reason: "audit".into(),
        },
    )
    .await;
    expect_ack(
        &mut host,
        ClientMessage::SetPassword {
            request_id: 5,
            room: room.room,
            password: Some(NEW_PASSWORD.into()),
        },
    )
    .await;

    // A rate-limit disconnect: a burst of joins far past the join budget.
    for n in 0..200 {
        third
            .send(&join_msg(&format!("r{n}"), 100 + n, vec![]))
            .await;
    }
    let close = third
        .recv_until(|m| match m {
            ServerMessage::Error(e) if e.request_id.is_none() => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(close.code, ErrorCode::RateLimited);

    expect_ack(
        &mut host,
        ClientMessage::CloseRoom {
            request_id: 6,
            room: room.room,
            reason: "audit done".into(),
        },
    )
    .await;

    // Every event name shows up (the room task logs as it works, so wait for
    // the last one rather than assume it is there already).
    let names = [
        "api_key_rejected",
        "token_rejected",
        "join_refused",
        "role_changed",
        "member_kicked",
        "password_changed",
        "rate_limit_disconnect",
        "room_closed",
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = log.text();
        let missing: Vec<_> = names
            .iter()
            .filter(|n| !text.contains(&format!("event=\"{n}\"")))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit events missing: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = log.text();
    assert!(text.contains("chorus::audit"), "{text}");
    assert!(text.contains("code=\"wrong_password\""), "{text}");
    // Lines logged by a room carry its span, and those of a session its own.
    let kick_line = text
        .lines()
        .find(|l| l.contains("event=\"member_kicked\""))
        .expect("the kick line");
    assert!(kick_line.contains("room{id=vault"), "{kick_line}");
    let key_line = text
        .lines()
        .find(|l| l.contains("event=\"api_key_rejected\""))
        .expect("the API key line");
    assert!(key_line.contains("session{id="), "{key_line}");

    // No secret anywhere: log, /stats, /metrics.
    let addr = server.tcp_addrs()[0];
    let (_, _, stats) = http_get(addr, "/stats", &[]).await;
    let (_, _, metrics) = http_get(addr, "/metrics", &[]).await;
    for secret in [
        API_KEY,
        WRONG_KEY,
        PASSWORD,
        WRONG_PASSWORD,
        NEW_PASSWORD,
        JWT_SECRET,
        forged.as_str(),
    ] {
        for (name, body) in [("log", &text), ("/stats", &stats), ("/metrics", &metrics)] {
            assert!(!body.contains(secret), "{name} contains {secret:?}");
        }
    }
    assert!(
        metrics.contains("chorus_rate_limit_disconnects_total 1"),
        "{metrics}"
    );
}
