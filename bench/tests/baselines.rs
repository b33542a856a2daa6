//! The Node.js baseline relays (bench/baselines/), for real: each relay is
//! started with `node` and driven by the bench's own clients, checking that
//! every member of a room gets exactly the others' ticks and nothing crosses
//! rooms. Never how fast: timeouts here only stop a broken run.
//!
//! Needs `node` (>= 20) and `npm`: without `node` the tests print why and
//! pass without checking anything; the relays' packages are installed with
//! `npm ci` when `bench/baselines/node_modules` is missing.

use chorus_bench::baselines::{
    BaselineError, ClientOptions, LaunchOptions, RelayClient, RelayKind, RelayProcess, TickStream,
    ensure_installed, node_version,
};
use chorus_bench::payload::{self, Header};
use std::io::Write;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Bound on one whole scenario, only so a broken relay fails instead of hanging.
const GUARD: Duration = Duration::from_secs(60);
/// Ticks each client sends.
const TICKS_EACH: u32 = 5;
const PAYLOAD_BYTES: usize = 48;

/// One `npm ci` at a time: the tests of this file run in parallel threads.
static INSTALL: Mutex<()> = Mutex::new(());

/// Launch options with the relays' packages installed, or `None` (after
/// saying so) when there is no `node` to run them.
fn launch_options() -> Option<LaunchOptions> {
    let options = LaunchOptions::default();
    match node_version(&options.node) {
        Ok(version) => eprintln!("node {version}"),
        Err(BaselineError::NodeMissing { program }) => {
            // Straight to stderr, past the test harness's capture, so the
            // skip shows in a normal `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: `{program}` not found; the Node.js baseline relay tests need Node.js >= 20 and npm"
            );
            return None;
        }
        Err(e) => panic!("cannot run node: {e}"),
    }
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    match ensure_installed(&options.dir) {
        Ok(true) => eprintln!("ran npm ci in {}", options.dir.display()),
        Ok(false) => {}
        Err(e) => panic!("installing the relays' packages: {e}"),
    }
    Some(options)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The bench payload of client `sender`'s tick `seq`.
fn tick_payload(sender: u32, seq: u32) -> Vec<u8> {
    let mut buf = payload::padded_buffer(PAYLOAD_BYTES, u64::from(sender) << 32 | u64::from(seq));
    Header {
        sender,
        send_ns: u64::from(seq) * 1_000,
        seq,
    }
    .write(&mut buf)
    .expect("48 bytes hold the header");
    buf
}

/// Everything already in the stream.
fn drain(stream: &mut TickStream) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| stream.try_recv())
        .map(|tick| tick.payload.to_vec())
        .collect()
}

/// Three clients in one room and one in another send known ticks; each
/// member of the first room must get exactly the other two's, in each
/// sender's order, and the lone member nothing.
async fn one_room_of_three_and_one_alone(kind: RelayKind, url: &str) {
    let options = ClientOptions::default();
    let rooms = ["room-a", "room-a", "room-a", "room-b"];
    let mut clients = Vec::new();
    for (index, room) in rooms.iter().enumerate() {
        let client = RelayClient::connect(kind, url, room, &options)
            .await
            .unwrap_or_else(|e| panic!("client {index} joins {room}: {e}"));
        assert_eq!(client.kind(), kind);
        assert_eq!(client.joined().room, *room);
        clients.push(client);
    }
    // Joined one after the other: each saw the members before it.
    let members: Vec<u32> = clients.iter().map(|c| c.joined().members).collect();
    assert_eq!(members, [1, 2, 3, 1]);
    let mut ids: Vec<&str> = clients.iter().map(|c| c.joined().id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "the relay gives each connection its own id");

    let (senders, mut streams): (Vec<_>, Vec<_>) =
        clients.into_iter().map(RelayClient::into_parts).unzip();
    // Interleaved, so that each relay sees the senders alternate.
    for seq in 0..TICKS_EACH {
        for (index, sender) in senders.iter().enumerate() {
            let index = u32::try_from(index).expect("four clients");
            sender
                .send_tick(&tick_payload(index, seq))
                .await
                .unwrap_or_else(|e| panic!("client {index} sends tick {seq}: {e}"));
        }
    }
    // Barriers, not sleeps: after every client's first rejoin the relay has
    // handled every tick; each second rejoin's answer then comes after every
    // tick forwarded to that client.
    for round in 0..2 {
        for (index, sender) in senders.iter().enumerate() {
            let ack = sender
                .rejoin()
                .await
                .unwrap_or_else(|e| panic!("client {index} rejoin {round}: {e}"));
            assert_eq!(ack.room, rooms[index]);
            assert_eq!(ack.members, if index < 3 { 3 } else { 1 });
        }
    }

    for (index, stream) in streams.iter_mut().enumerate() {
        let me = u32::try_from(index).expect("four clients");
        let got = drain(stream);
        assert_eq!(stream.dropped(), 0, "client {index} lost ticks to lag");
        let expected_senders: Vec<u32> = match me {
            0..=2 => (0..3).filter(|&s| s != me).collect(),
            _ => Vec::new(),
        };
        // Per sender, in that sender's order (one TCP connection in, one
        // out, one event loop between): exactly the bytes it sent.
        for sender in 0..4 {
            let seqs: Vec<u32> = got
                .iter()
                .filter_map(|p| Header::read(p))
                .filter(|h| h.sender == sender)
                .map(|h| h.seq)
                .collect();
            let expected: Vec<u32> = if expected_senders.contains(&sender) {
                (0..TICKS_EACH).collect()
            } else {
                Vec::new()
            };
            assert_eq!(
                seqs, expected,
                "{kind}: client {index}'s ticks from client {sender}"
            );
        }
        for p in &got {
            let h = Header::read(p).expect("a bench header");
            assert!(
                *p == tick_payload(h.sender, h.seq),
                "{kind}: payload changed on the way: {p:?}"
            );
        }
        assert_eq!(
            got.len(),
            expected_senders.len() * TICKS_EACH as usize,
            "{kind}: client {index} got ticks that are no client's"
        );
    }

    // A room name the relays refuse is a typed join refusal.
    let long = "r".repeat(200);
    match RelayClient::connect(kind, url, &long, &options).await {
        Err(BaselineError::JoinRefused { kind: k, room, .. }) => {
            assert_eq!((k, room), (kind, long));
        }
        other => panic!("{kind}: a 200-character room name gave {other:?}"),
    }

    // Closing ends each stream, and says why.
    for sender in &senders {
        sender.close().await.expect("close handshake starts");
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        assert_eq!(stream.recv().await, None, "client {index} stream ends");
        assert!(
            matches!(stream.take_end_reason(), Some(BaselineError::Closed { .. })),
            "client {index}"
        );
    }
}

fn relay_round_trip(kind: RelayKind) {
    let Some(options) = launch_options() else {
        return;
    };
    let relay = RelayProcess::start(kind, &options)
        .unwrap_or_else(|e| panic!("starting the {kind} relay: {e}"));
    assert_eq!(relay.kind(), kind);
    assert!(relay.pid() > 0);
    assert!(
        std::path::Path::new(&format!("/proc/{}/stat", relay.pid())).exists(),
        "the relay's pid is a live process to sample"
    );
    assert!(relay.addr().ip().is_loopback());
    assert_ne!(relay.addr().port(), 0);
    let url = relay.url().to_owned();
    runtime().block_on(async {
        tokio::time::timeout(GUARD, one_room_of_three_and_one_alone(kind, &url))
            .await
            .unwrap_or_else(|_| panic!("{kind}: scenario over {GUARD:?}"));
    });
    let status = relay.stop().expect("the relay stops");
    assert!(status.success(), "{kind} relay exited with {status}");
}

#[test]
fn ws_relay_forwards_each_tick_to_the_other_members_of_its_room_only() {
    relay_round_trip(RelayKind::Ws);
}

#[test]
fn socketio_relay_forwards_each_tick_to_the_other_members_of_its_room_only() {
    relay_round_trip(RelayKind::SocketIo);
}

#[test]
fn relays_exit_cleanly_on_sigterm() {
    let Some(options) = launch_options() else {
        return;
    };
    for kind in RelayKind::ALL {
        let relay = RelayProcess::start(kind, &options)
            .unwrap_or_else(|e| panic!("starting the {kind} relay: {e}"));
        // With a client connected, so that shutdown has a connection to close.
        let url = relay.url().to_owned();
        let rt = runtime();
        let client = rt.block_on(async {
            tokio::time::timeout(
                GUARD,
                RelayClient::connect(kind, &url, "r", &ClientOptions::default()),
            )
            .await
            .expect("connects in time")
            .expect("connects")
        });
        let killed = match Command::new("kill")
            .args(["-TERM", &relay.pid().to_string()])
            .status()
        {
            Ok(status) => status,
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: no `kill` program to send SIGTERM ({e})"
                );
                return;
            }
        };
        assert!(killed.success());
        // The relay exits by itself; stop() only waits (and would kill after
        // its timeout, which the exit status would show).
        let status = relay.stop().expect("the relay exits");
        assert!(status.success(), "{kind} relay after SIGTERM: {status}");
        let (_sender, mut ticks) = client.into_parts();
        let ended = rt.block_on(async { tokio::time::timeout(GUARD, ticks.recv()).await });
        assert_eq!(
            ended,
            Ok(None),
            "{kind}: the connection ends with the relay"
        );
    }
}

#[test]
fn a_relay_that_cannot_start_reports_its_stderr() {
    let Some(mut options) = launch_options() else {
        return;
    };
    // No scripts there: node exits at once, saying so on stderr.
    options.dir = std::env::temp_dir();
    match RelayProcess::start(RelayKind::Ws, &options) {
        Err(BaselineError::RelayExited { kind, stderr, .. }) => {
            assert_eq!(kind, RelayKind::Ws);
            assert!(stderr.contains("ws-relay.mjs"), "stderr: {stderr}");
        }
        other => panic!("expected RelayExited, got {other:?}"),
    }
}
