//! Chat and cursors in the terminal: the smallest complete Chorus client.
//!
//! Run a server and two (or more) of these against it:
//!
//! ```sh
//! cargo run --release -p chorus-server                                   # terminal 0
//! cargo run --release -p chorus-client --example chat_cursor -- \
//!     --cert-hash-file certs/dev-cert.sha256 --room lobby --name ada     # terminal 1
//! cargo run --release -p chorus-client --example chat_cursor -- \
//!     --cert-hash-file certs/dev-cert.sha256 --room lobby --name bo      # terminal 2
//! ```
//!
//! The server prints its URL and the certificate hash at start (and writes the
//! hash to `certs/dev-cert.sha256`); pass it with `--cert-hash <hex>` or
//! `--cert-hash-file <path>`. For a server with a CA-issued certificate use
//! `--ca-pem <file>` or nothing (the system roots).
//!
//! Transports: an `https://` URL uses WebTransport and falls back to WebSocket
//! (`wss://` at the same host, port and path) when UDP does not get through;
//! `--transport webtransport|websocket` forces one. A `ws://` or `wss://` URL
//! uses WebSocket directly; on loopback no certificate is needed with `ws://`:
//!
//! ```sh
//! cargo run -p chorus-client --example chat_cursor -- \
//!     --url ws://127.0.0.1:4433/chorus --room lobby --name cy              # terminal 3
//! ```
//!
//! What it does:
//! - prints the clock offset and RTT to the server after connecting;
//! - joins the room and prints members as they join and leave;
//! - sends a `cursor` tick every 100 ms (payload: x and y as two little-endian
//!   `f32`, moving slowly around a circle) and prints the other members' cursors,
//!   at most once a second per member;
//! - prints the room's recent chat history, then sends every line typed on
//!   stdin as a `chat` command (with an idempotency key, so a line typed
//!   while the connection is dropped is sent once it is back, exactly once),
//!   and prints the chat of everyone (its own included) with the author's name;
//! - prints role changes, presence changes (a member reconnecting, away,
//!   back), timeline changes, new packs, kicks and the room's closing, and
//!   ends when this client is kicked or the room is closed;
//! - survives a dropped connection: it says so, reconnects with backoff and
//!   resumes (members see it as reconnecting meanwhile, not gone).
//!
//! `--room ""` creates a new room under a fresh id (an invite code) and prints
//! it; others join with `--room <code>`. For a server that requires an API key
//! pass `--api-key`; `--password` joins a password-protected room (or sets the
//! password of the room this join creates).
//!
//! End with Ctrl-D (leaves the room cleanly) or Ctrl-C.

use anyhow::{Context, Result, bail};
use chorus_client::{
    Client, ConnectOptions, ConnectionEvent, JoinOptions, MemberId, Room, RoomEvent, RoomResume,
    ServerUrl, TickError, TransportChoice, Trust,
};
use clap::{Parser, ValueEnum};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    /// WebTransport for https:// URLs, falling back to WebSocket; WebSocket for ws(s)://.
    Auto,
    /// WebTransport only (https:// URLs).
    Webtransport,
    /// WebSocket only (ws://, wss://, or https:// mapped to wss://).
    Websocket,
}

/// Chat and cursors over Chorus.
#[derive(Debug, Parser)]
struct Args {
    /// Server URL: https:// (WebTransport, WebSocket fallback), wss:// or ws://.
    #[arg(long, default_value = "https://127.0.0.1:4433/chorus")]
    url: String,
    /// Transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    transport: TransportArg,
    /// Milliseconds to wait for WebTransport before falling back to WebSocket.
    #[arg(long, default_value_t = 3000)]
    fallback_after_ms: u64,
    /// WebSocket URL for the fallback (default: the --url with wss://).
    #[arg(long)]
    websocket_url: Option<String>,
    /// SHA-256 of the server certificate, hex (as the server prints it).
    #[arg(long, conflicts_with_all = ["cert_hash_file", "ca_pem"])]
    cert_hash: Option<String>,
    /// A file holding the certificate hash (the server writes certs/dev-cert.sha256).
    #[arg(long, conflicts_with = "ca_pem")]
    cert_hash_file: Option<PathBuf>,
    /// Trust the CA (or self-signed) certificate in this PEM file instead.
    #[arg(long)]
    ca_pem: Option<PathBuf>,
    /// Room to join (created if missing); empty: a new room with a fresh invite code.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// The server's API key, when it requires one.
    #[arg(long, env = "CHORUS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The room's password (set on the room when this join creates it).
    #[arg(long)]
    password: Option<String>,
    /// Display name.
    #[arg(long, default_value = "guest")]
    name: String,
}

/// The tick kind is implied: this example sends only cursor ticks.
const CURSOR_PERIOD: Duration = Duration::from_millis(100);
/// One revolution of the cursor circle every 6 s.
const RADIANS_PER_TICK: f32 = std::f32::consts::TAU / 60.0;

fn trust(args: &Args) -> Result<Trust> {
    let hex = match (&args.cert_hash, &args.cert_hash_file) {
        (Some(hex), _) => Some(hex.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, None) => None,
    };
    if let Some(hex) = hex {
        let Some(hash) = Trust::parse_hash(&hex) else {
            bail!("the certificate hash must be 64 hex digits");
        };
        return Ok(Trust::CertificateHashes(vec![hash]));
    }
    if let Some(path) = &args.ca_pem {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Trust::CaPem(pem));
    }
    // Plain ws:// needs no certificate.
    let plain = ServerUrl::parse(&args.url).is_ok_and(|u| u.scheme == chorus_client::Scheme::Ws);
    if !plain {
        eprintln!("(no --cert-hash, --cert-hash-file or --ca-pem: using the system roots)");
    }
    Ok(Trust::NativeRoots)
}

/// A member's display name: from the live replica, else from `left` (members
/// who have gone), else their id.
fn name_of(room: &Room, left: &HashMap<MemberId, String>, id: MemberId) -> String {
    room.member(id)
        .map(|m| m.display.name)
        .or_else(|| left.get(&id).cloned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("member {}", id.0))
}

fn cursor_payload(step: u32) -> [u8; 8] {
    let angle = step as f32 * RADIANS_PER_TICK;
    let (x, y) = (0.5 + 0.25 * angle.cos(), 0.5 + 0.25 * angle.sin());
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&x.to_le_bytes());
    payload[4..].copy_from_slice(&y.to_le_bytes());
    payload
}

fn parse_cursor(payload: &[u8]) -> Option<(f32, f32)> {
    let x = f32::from_le_bytes(payload.get(..4)?.try_into().ok()?);
    let y = f32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
    Some((x, y))
}

/// Sends a cursor tick every period until the room or connection ends.
async fn send_cursor(room: Room) {
    let mut interval = tokio::time::interval(CURSOR_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut step = 0u32;
    loop {
        interval.tick().await;
        match room.send_tick(&cursor_payload(step)) {
            // While reconnecting ticks are not sent; they resume by themselves.
            Ok(_) | Err(TickError::Disconnected) => {}
            Err(TickError::Closed(_) | TickError::NotJoined) => return,
            Err(e) => eprintln!("tick not sent: {e}"),
        }
        step = step.wrapping_add(1);
    }
}

/// Prints other members' cursors, at most once a second per member.
async fn print_cursors(room: Room) {
    let mut ticks = room.ticks();
    let mut last_print: HashMap<MemberId, Instant> = HashMap::new();
    let no_names = HashMap::new();
    while let Some(tick) = ticks.recv().await {
        let due = last_print
            .get(&tick.sender)
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !due {
            continue;
        }
        if let Some((x, y)) = parse_cursor(&tick.payload) {
            last_print.insert(tick.sender, Instant::now());
            println!(
                "  cursor {:<12} x={x:.3} y={y:.3}  (tick {}, {} dropped locally)",
                name_of(&room, &no_names, tick.sender),
                tick.seq,
                ticks.dropped()
            );
        }
    }
}

/// Prints membership changes and chat, in room order.
async fn print_events(room: Room, mut events: broadcast::Receiver<RoomEvent>) {
    // Names of members who have left, for late lookups.
    let mut names: HashMap<MemberId, String> = room
        .members()
        .into_iter()
        .map(|m| (m.id, m.display.name))
        .collect();
    loop {
        match events.recv().await {
            Ok(RoomEvent::MemberJoined { member, .. }) => {
                names.insert(member.id, member.display.name.clone());
                println!(
                    "→ {} joined as {}",
                    name_of(&room, &names, member.id),
                    member.role
                );
            }
            Ok(RoomEvent::MemberLeft {
                member,
                info,
                reason,
                ..
            }) => {
                // The replica no longer has them; the event carries what it knew.
                let name = info
                    .map(|m| m.display.name)
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| name_of(&room, &names, member));
                println!("← {name} left ({reason})");
            }
            Ok(RoomEvent::Command(cmd)) if cmd.kind == "chat" => {
                println!(
                    "[{}] {}",
                    name_of(&room, &names, cmd.author),
                    String::from_utf8_lossy(&cmd.payload)
                );
            }
            Ok(RoomEvent::Command(_) | RoomEvent::StateChanged { .. }) => {}
            Ok(RoomEvent::RoleChanged {
                member, role, by, ..
            }) => {
                println!(
                    "* {} is now {role} (by {})",
                    name_of(&room, &names, member),
                    name_of(&room, &names, by)
                );
            }
            Ok(RoomEvent::MemberKicked {
                member,
                info,
                by,
                reason,
                ban,
                ..
            }) => {
                let name = info
                    .map(|m| m.display.name)
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| name_of(&room, &names, member));
                let who = if member == room.me() { "you" } else { &name };
                println!(
                    "✖ {who} removed by {} ({reason:?}), banned for {} s",
                    name_of(&room, &names, by),
                    ban.as_secs()
                );
            }
            Ok(RoomEvent::RoomClosed { by, reason, .. }) => {
                println!(
                    "✖ room closed by {} ({reason:?})",
                    name_of(&room, &names, by)
                );
            }
            Ok(RoomEvent::PresenceChanged {
                member, presence, ..
            }) => {
                println!(
                    "~ {} is {}",
                    name_of(&room, &names, member),
                    presence.name()
                );
            }
            Ok(RoomEvent::TimelineChanged { timeline, by, .. }) => {
                println!(
                    "♪ timeline {:?} {} at {:.1} s (by {})",
                    timeline.name,
                    if timeline.playing { "plays" } else { "paused" },
                    timeline.anchor_position_us as f64 / 1e6,
                    name_of(&room, &names, by)
                );
            }
            Ok(RoomEvent::PackAvailable { pack, .. }) => {
                println!(
                    "+ {} shared {:?} ({}, {} bytes)",
                    name_of(&room, &names, pack.uploader),
                    pack.name,
                    pack.media_type,
                    pack.size
                );
            }
            Ok(RoomEvent::Resynced { .. }) => {
                println!(
                    "(caught up from a fresh snapshot: {} here)",
                    room.members().len()
                );
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                println!("(missed {n} events; members and state are still current)");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reports the connection dropping, coming back, or ending.
async fn print_connection(mut events: broadcast::Receiver<ConnectionEvent>) {
    loop {
        match events.recv().await {
            Ok(ConnectionEvent::Reconnecting {
                attempt,
                delay,
                reason,
            }) => {
                println!(
                    "(connection lost: {reason}; reconnect attempt {attempt} in {} ms)",
                    delay.as_millis()
                );
            }
            Ok(ConnectionEvent::Resumed {
                transport, rooms, ..
            }) => {
                println!("(reconnected over {transport})");
                for room in rooms {
                    if let RoomResume::Lost(code) = room.outcome {
                        println!("(room {:?} could not be resumed: {code})", room.room_id);
                    }
                }
            }
            Ok(ConnectionEvent::Lost { reason }) => {
                println!("(connection gone for good: {reason})")
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reads stdin lines on a thread (stdin reads block) into a small queue.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = line.trim_end_matches(['\r', '\n']).to_owned();
                    if tx.blocking_send(text).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let options = ConnectOptions {
        trust: trust(&args)?,
        transport: match args.transport {
            TransportArg::Auto => TransportChoice::Auto,
            TransportArg::Webtransport => TransportChoice::WebTransport,
            TransportArg::Websocket => TransportChoice::WebSocket,
        },
        fallback_after: Duration::from_millis(args.fallback_after_ms),
        websocket_url: args.websocket_url.clone(),
        client_name: format!("chat_cursor/{}", env!("CARGO_PKG_VERSION")),
        api_key: args.api_key.clone(),
        ..ConnectOptions::default()
    };
    let client = Client::connect(&args.url, options)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let clock = client.clock();
    println!(
        "connected to {} over {} ({}), session {}; clock offset {:+.3} ms, rtt {:.3} ms ({} samples)",
        args.url,
        client.transport(),
        client.server_hello().server_name,
        client.session_id(),
        clock.offset_us as f64 / 1000.0,
        clock.rtt_us as f64 / 1000.0,
        clock.samples
    );

    let join = JoinOptions {
        password: args.password.clone(),
        ..JoinOptions::named(args.name.clone())
    };
    let room = client
        .join(&args.room, join)
        .await
        .with_context(|| format!("joining {}", args.room))?;
    // The view and the events after it, without a gap between them.
    let (view, events) = room.subscribe();
    println!(
        "joined {:?} as member {} ({}); {} here:",
        room.id(),
        room.me().0,
        room.role(),
        view.members.len()
    );
    for m in &view.members {
        let you = if m.id == room.me() { " (you)" } else { "" };
        println!("  {} [{}]{you}", m.display.name, m.role);
    }
    let no_names = HashMap::new();
    for entry in &view.chat {
        println!(
            "[{}] {}",
            name_of(&room, &no_names, entry.author),
            String::from_utf8_lossy(&entry.payload)
        );
    }
    println!("type a line and press enter to chat; Ctrl-D to leave");

    tokio::spawn(print_connection(client.connection_events()));
    tokio::spawn(send_cursor(room.clone()));
    tokio::spawn(print_cursors(room.clone()));
    // Ends when the room does (this client kicked, the room closed).
    let mut printer = tokio::spawn(print_events(room.clone(), events));
    let mut errors = client.errors();
    let mut lines = stdin_lines();
    let mut sent = 0u64;

    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                if line.is_empty() {
                    continue;
                }
                // A key per line: sent again after a reconnect, applied once.
                sent += 1;
                let key = format!("{}-{}-{sent}", room.me().0, client.session_id());
                if let Err(e) = room.send_command("chat", line.as_bytes(), Some(&key)).await {
                    eprintln!("chat not sent: {e}");
                }
            }
            Ok(error) = errors.recv() => eprintln!("server error: {error}"),
            reason = client.closed() => {
                println!("connection ended: {reason}");
                return Ok(());
            }
            _ = &mut printer => {
                // The room ended (kicked, closed), or the connection did.
                match client.close_reason() {
                    Some(reason) => println!("connection ended: {reason}"),
                    None => client.close().await,
                }
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if let Err(e) = room.leave().await {
        eprintln!("leave failed: {e}");
    }
    client.close().await;
    println!("bye");
    Ok(())
}
