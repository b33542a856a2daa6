//! A server restart as an app sees it through the Rust SDK: the server stops
//! gracefully (telling clients when to come back), starts again on the same
//! data directory, and the SDK resumes on its own: same room object, same
//! member, the state and packs as they were, and the room goes on.
//!
//! The client reaches the server through a TCP proxy, so the restarted
//! server (on a new ephemeral port) is behind the same address.

mod common;

use chorus_client::{Client, ConnectOptions, ConnectionEvent, JoinOptions};
use chorus_server::store::{Durability, StoreSettings};
use chorus_server::{RunningServer, Server, ServerConfig};
use common::*;
use std::path::Path;
use std::time::Duration;

async fn start(data_dir: &Path) -> RunningServer {
    let mut config = ServerConfig::ephemeral(cert_dir());
    let mut store = StoreSettings::new(data_dir);
    store.durability = Durability::Interval;
    config.store = Some(store);
    config.session.reconnect_after_shutdown = Duration::from_millis(300);
    Server::start(config).await.expect("server starts")
}

#[tokio::test]
async fn the_sdk_resumes_across_a_graceful_restart_with_state_and_packs() {
    let data = fresh_dir("sdk-restart");
    let server = start(&data).await;
    let proxy = TcpProxy::start(server.tcp_addrs()[0]).await;
    let client = Client::connect(
        &format!("ws://{}/chorus", proxy.addr),
        ConnectOptions::with_cert_hashes([server.cert_hash()]),
    )
    .await
    .expect("connects");
    let room = client
        .join("restarted", JoinOptions::named("ann"))
        .await
        .expect("joins");
    let me = room.me();
    room.set_state("scene", b"forest").await.expect("write");
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png.resize(4096, 7);
    let pack = room
        .upload_pack("map.png", "image/png", png.clone())
        .await
        .expect("upload");
    let mut connection = client.connection_events();

    server.shutdown().await;
    let server = start(&data).await;
    proxy.redirect(server.tcp_addrs()[0]);

    let resumed = tokio::time::timeout(WAIT, async {
        loop {
            match connection.recv().await.expect("events") {
                ConnectionEvent::Resumed {
                    session_resumed, ..
                } => return session_resumed,
                ConnectionEvent::Lost { reason } => panic!("lost: {reason:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("resumed in time");
    assert!(resumed, "the restarted server took the session back");
    assert_eq!(room.me(), me);
    assert_eq!(
        room.state("scene").map(|v| v.value.to_vec()),
        Some(b"forest".to_vec())
    );
    let fetched = room.fetch_pack(&pack.hash).await.expect("the pack is back");
    assert_eq!(fetched.as_ref(), png.as_slice());
    room.set_state("scene", b"castle")
        .await
        .expect("the room goes on");
    let other = Client::connect(
        &server.url(),
        ConnectOptions::with_cert_hashes([server.cert_hash()]),
    )
    .await
    .expect("connects");
    let seen = other
        .join("restarted", JoinOptions::named("bob"))
        .await
        .expect("joins the kept room");
    assert_eq!(
        seen.state("scene").map(|v| v.value.to_vec()),
        Some(b"castle".to_vec())
    );
}
