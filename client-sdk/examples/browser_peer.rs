//! A scriptable native peer for the browser end-to-end tests (`tests/browser/`).
//!
//! It joins one room and speaks JSON lines: one object per event on stdout, one
//! command per line on stdin. Every tick it receives it sends straight back as its
//! own tick with the same payload (unless `--no-echo`), so a page can measure tick
//! round trips through the server.
//!
//! ```sh
//! cargo run -p chorus-client --example browser_peer -- \
//!     --cert-hash-file certs/dev-cert.sha256 --room lobby --name peer
//! ```
//!
//! stdout, one JSON object per line, `"event"` first:
//!
//! ```text
//! {"event":"connected","transport":"webtransport","session":"7"}
//! {"event":"joined","room":"lobby","me":3,"role":"editor","members":[{"id":1,"name":"ada","role":"host"},…]}
//! {"event":"member_joined","id":4,"name":"bo","role":"editor","seq":12}
//! {"event":"member_left","id":4,"name":"bo","reason":"left","seq":13}
//! {"event":"tick","sender":1,"seq":42,"len":8,"hex":"0102…"}
//! {"event":"state","key":"title","text":"Hi","hex":"4869","deleted":false,"version":5,"author":1,"seq":14}
//! {"event":"command","kind":"chat","text":"hello","hex":"…","author":1,"seq":15,"key":null}
//! {"event":"role_changed","id":4,"role":"viewer","by":1,"seq":16}
//! {"event":"member_kicked","id":4,"name":"bo","by":1,"reason":"spam","ban_ms":60000,"seq":17}
//! {"event":"room_closed","by":1,"reason":"done","seq":18}   (the room's last event)
//! {"event":"presence","id":4,"presence":"reconnecting","seq":19}
//! {"event":"timeline","name":"song","playing":true,"rate_ppm":1000000,"anchor_time":…,"anchor_position_us":0,"tempo_mbpm":null,"by":1,"seq":20}
//! {"event":"pack","hash":"…","name":"a.png","media_type":"image/png","size":1234,"uploader":1,"seq":21}
//! {"event":"resynced","seq":40}
//! {"event":"message","delivery":"direct","from":1,"kind":"offer","text":"…","hex":"…"}   (or "broadcast")
//! {"event":"ack","op":"state","version":6,"seq":16}   (and op "command" with "duplicate")
//! {"event":"ack","op":"kick","seq":17}   (and ops "role", "password", "close", "timeline", "delegate")
//! {"event":"ack","op":"direct"}   (and op "broadcast")
//! {"event":"ack","op":"upload","hash":"…","size":1234}   {"event":"fetched","hash":"…","len":1234,"hex":"…"}
//! {"event":"position","name":"song","us":1500000}   (null: no such timeline)
//! {"event":"ack","op":"snapshot","seq":40,"members":3}   {"event":"ice","servers":2,"expires":…}
//! {"event":"error","op":"state","code":300,"message":"…"}
//! {"event":"reconnecting","attempt":1,"delay_ms":120,"reason":"…"}
//! {"event":"resumed","transport":"websocket","session":true,"rooms":1}   {"event":"lost","reason":"…"}
//! {"event":"closed","reason":"…"}   {"event":"left"}
//! ```
//!
//! stdin, one flat JSON object per line (unknown or malformed lines are answered
//! with an `error` event and otherwise ignored):
//!
//! ```text
//! {"op":"tick","text":"hello"}          or {"op":"tick","hex":"0102"}
//! {"op":"state","key":"title","value":"Hi"}   (optional "if_version":5)
//! {"op":"command","kind":"chat","payload":"hi"}   (optional "key":"idempotency key")
//! {"op":"kick","member":4,"reason":"spam"}
//! {"op":"role","member":4,"role":"viewer"}   (host, editor or viewer)
//! {"op":"password","value":"s3cret"}    (or "value":null to remove it)
//! {"op":"close","reason":"done"}
//! {"op":"direct","member":4,"kind":"offer","payload":"…"}   (or "hex")
//! {"op":"broadcast","audience":"others","kind":"k","payload":"…"}   (everyone, others, host, editor, viewer)
//! {"op":"timeline","name":"song","action":"play"}   (pause; seek with "position_ms";
//!     rate with "rate_ppm"; tempo with "tempo_mbpm" or null; optional "in_ms" to
//!     schedule it that far ahead of the server time, "expected_seq")
//! {"op":"position","name":"song"}
//! {"op":"upload","name":"a.png","media_type":"image/png","hex":"89504e47…"}   (or "text")
//! {"op":"fetch","hash":"…"}
//! {"op":"snapshot"}   {"op":"ice"}   {"op":"delegate","member":4}   (or null)
//! {"op":"leave"}                        (also on end of input)
//! ```

use anyhow::{Context, Result, bail};
use chorus_client::{
    Audience, Client, ConnectOptions, ConnectionEvent, Delivery, JoinOptions, MemberId, MemberInfo,
    RequestError, Role, Room, RoomEvent, Seq, ServerUrl, TimelineOptions, Transport,
    TransportChoice, Trust,
};
use clap::{Parser, ValueEnum};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    Auto,
    Webtransport,
    Websocket,
}

/// A scriptable native Chorus peer speaking JSON lines (for the browser tests).
#[derive(Debug, Parser)]
struct Args {
    /// Server URL: https:// (WebTransport), wss:// or ws://.
    #[arg(long, default_value = "https://127.0.0.1:4433/chorus")]
    url: String,
    /// SHA-256 of the server certificate, hex.
    #[arg(long, conflicts_with = "cert_hash_file")]
    cert_hash: Option<String>,
    /// A file holding the certificate hash (the server writes <cert-dir>/dev-cert.sha256).
    #[arg(long)]
    cert_hash_file: Option<PathBuf>,
    /// Room to join.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// Display name.
    #[arg(long, default_value = "native-peer")]
    name: String,
    /// Transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    transport: TransportArg,
    /// Do not create the room if it does not exist.
    #[arg(long)]
    no_create: bool,
    /// The server's API key, when it requires one.
    #[arg(long)]
    api_key: Option<String>,
    /// The room's password (set on the room when this join creates it).
    #[arg(long)]
    password: Option<String>,
    /// Do not echo received ticks.
    #[arg(long)]
    no_echo: bool,
}

// ---------------------------------------------------------------- JSON output

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes one event line; output errors (a closed pipe) are ignored, the peer
/// ends when its input ends.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn member_json(m: &MemberInfo) -> String {
    format!(
        "{{\"id\":{},\"name\":{},\"role\":{}}}",
        m.id.0,
        js(&m.display.name),
        js(&m.role.to_string())
    )
}

/// An `error` event: `code` is the server's error code, if the server refused.
fn error_line(op: &str, code: Option<u16>, message: &str) -> String {
    let code = code.map_or_else(|| "null".to_owned(), |c| c.to_string());
    format!(
        "{{\"event\":\"error\",\"op\":{},\"code\":{code},\"message\":{}}}",
        js(op),
        js(message)
    )
}

fn request_error(op: &str, e: &RequestError) -> String {
    error_line(op, e.code().map(|c| c.as_u16()), &e.to_string())
}

/// The outcome of a request answered by `Ack` (kick, role, password, close).
fn ack_line(op: &str, result: Result<Seq, RequestError>) -> String {
    match result {
        Ok(seq) => format!("{{\"event\":\"ack\",\"op\":{},\"seq\":{}}}", js(op), seq.0),
        Err(e) => request_error(op, &e),
    }
}

// ----------------------------------------------------------------- JSON input

/// A scalar of a flat JSON object.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// Parses one flat JSON object (`{"key": scalar, ...}`; no nesting).
fn parse_flat_object(line: &str) -> Option<HashMap<String, Scalar>> {
    let mut p = line.trim().chars().peekable();
    let mut map = HashMap::new();
    fn ws(p: &mut std::iter::Peekable<std::str::Chars<'_>>) {
        while p.next_if(|c| c.is_whitespace()).is_some() {}
    }
    fn string(p: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
        if p.next()? != '"' {
            return None;
        }
        let mut s = String::new();
        loop {
            match p.next()? {
                '"' => return Some(s),
                '\\' => match p.next()? {
                    'n' => s.push('\n'),
                    'r' => s.push('\r'),
                    't' => s.push('\t'),
                    'b' => s.push('\u{8}'),
                    'f' => s.push('\u{c}'),
                    'u' => {
                        let code: String = (0..4).map(|_| p.next()).collect::<Option<_>>()?;
                        let unit = u32::from_str_radix(&code, 16).ok()?;
                        // Surrogates (astral characters) are replaced, not combined.
                        s.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
                    }
                    c => s.push(c), // \" \\ \/
                },
                c => s.push(c),
            }
        }
    }
    ws(&mut p);
    if p.next()? != '{' {
        return None;
    }
    ws(&mut p);
    if p.next_if_eq(&'}').is_some() {
        return Some(map);
    }
    loop {
        ws(&mut p);
        let key = string(&mut p)?;
        ws(&mut p);
        if p.next()? != ':' {
            return None;
        }
        ws(&mut p);
        let value = match *p.peek()? {
            '"' => Scalar::Str(string(&mut p)?),
            _ => {
                let mut word = String::new();
                while let Some(c) = p.next_if(|c| !matches!(c, ',' | '}') && !c.is_whitespace()) {
                    word.push(c);
                }
                match word.as_str() {
                    "true" => Scalar::Bool(true),
                    "false" => Scalar::Bool(false),
                    "null" => Scalar::Null,
                    w => Scalar::Num(w.parse().ok()?),
                }
            }
        };
        map.insert(key, value);
        ws(&mut p);
        match p.next()? {
            ',' => continue,
            '}' => break,
            _ => return None,
        }
    }
    ws(&mut p);
    p.next().is_none().then_some(map)
}

fn get_str<'a>(map: &'a HashMap<String, Scalar>, key: &str) -> Option<&'a str> {
    match map.get(key) {
        Some(Scalar::Str(s)) => Some(s),
        _ => None,
    }
}

fn get_u64(map: &HashMap<String, Scalar>, key: &str) -> Option<u64> {
    match map.get(key) {
        Some(Scalar::Num(n)) if *n >= 0.0 && n.fract() == 0.0 && *n < 9.0e15 => Some(*n as u64),
        _ => None,
    }
}

fn get_member(map: &HashMap<String, Scalar>) -> Option<MemberId> {
    get_u64(map, "member")
        .and_then(|id| u32::try_from(id).ok())
        .map(MemberId)
}

// ---------------------------------------------------------------------- peer

fn trust(args: &Args) -> Result<Trust> {
    let hex = match (&args.cert_hash, &args.cert_hash_file) {
        (Some(hex), _) => Some(hex.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, None) => None,
    };
    match hex {
        Some(hex) => match Trust::parse_hash(hex.trim()) {
            Some(hash) => Ok(Trust::CertificateHashes(vec![hash])),
            None => bail!("the certificate hash must be 64 hex digits"),
        },
        None => {
            let plain =
                ServerUrl::parse(&args.url).is_ok_and(|u| u.scheme == chorus_client::Scheme::Ws);
            if !plain {
                bail!(
                    "--cert-hash or --cert-hash-file is required for {}",
                    args.url
                );
            }
            Ok(Trust::NativeRoots)
        }
    }
}

/// Echoes (unless disabled) and reports every tick from the other members.
async fn ticks(room: Room, echo: bool) {
    let mut ticks = room.ticks();
    while let Some(tick) = ticks.recv().await {
        // Echo first: the report must not add to the measured round trip.
        let echoed = if echo {
            match room.send_tick(&tick.payload) {
                Ok(seq) => seq.to_string(),
                Err(e) => js(&e.to_string()),
            }
        } else {
            "null".to_owned()
        };
        emit(&format!(
            "{{\"event\":\"tick\",\"sender\":{},\"seq\":{},\"len\":{},\"hex\":{},\"echo\":{echoed}}}",
            tick.sender.0,
            tick.seq,
            tick.payload.len(),
            js(&hex(&tick.payload))
        ));
    }
}

/// Reports the room's reliable events in order.
async fn events(mut rx: broadcast::Receiver<RoomEvent>) {
    loop {
        let line = match rx.recv().await {
            Ok(RoomEvent::MemberJoined { member, seq }) => format!(
                "{{\"event\":\"member_joined\",\"id\":{},\"name\":{},\"role\":{},\"seq\":{}}}",
                member.id.0,
                js(&member.display.name),
                js(&member.role.to_string()),
                seq.0
            ),
            Ok(RoomEvent::MemberLeft {
                member,
                info,
                reason,
                seq,
            }) => format!(
                "{{\"event\":\"member_left\",\"id\":{},\"name\":{},\"reason\":{},\"seq\":{}}}",
                member.0,
                info.map_or_else(|| "null".to_owned(), |i| js(&i.display.name)),
                js(&reason.to_string()),
                seq.0
            ),
            Ok(RoomEvent::StateChanged {
                key,
                value,
                version,
                author,
                seq,
            }) => {
                let bytes = value.as_deref().unwrap_or_default();
                format!(
                    "{{\"event\":\"state\",\"key\":{},\"text\":{},\"hex\":{},\"deleted\":{},\"version\":{version},\"author\":{},\"seq\":{}}}",
                    js(&key),
                    js(&String::from_utf8_lossy(bytes)),
                    js(&hex(bytes)),
                    value.is_none(),
                    author.0,
                    seq.0
                )
            }
            Ok(RoomEvent::Command(cmd)) => format!(
                "{{\"event\":\"command\",\"kind\":{},\"text\":{},\"hex\":{},\"author\":{},\"seq\":{},\"key\":{}}}",
                js(&cmd.kind),
                js(&String::from_utf8_lossy(&cmd.payload)),
                js(&hex(&cmd.payload)),
                cmd.author.0,
                cmd.seq.0,
                cmd.idempotency_key
                    .as_deref()
                    .map_or_else(|| "null".to_owned(), js)
            ),
            Ok(RoomEvent::RoleChanged {
                member,
                role,
                by,
                seq,
            }) => format!(
                "{{\"event\":\"role_changed\",\"id\":{},\"role\":{},\"by\":{},\"seq\":{}}}",
                member.0,
                js(&role.to_string()),
                by.0,
                seq.0
            ),
            Ok(RoomEvent::MemberKicked {
                member,
                info,
                by,
                reason,
                ban,
                seq,
            }) => format!(
                "{{\"event\":\"member_kicked\",\"id\":{},\"name\":{},\"by\":{},\"reason\":{},\"ban_ms\":{},\"seq\":{}}}",
                member.0,
                info.map_or_else(|| "null".to_owned(), |i| js(&i.display.name)),
                by.0,
                js(&reason),
                ban.as_millis(),
                seq.0
            ),
            Ok(RoomEvent::RoomClosed { by, reason, seq }) => format!(
                "{{\"event\":\"room_closed\",\"by\":{},\"reason\":{},\"seq\":{}}}",
                by.0,
                js(&reason),
                seq.0
            ),
            Ok(RoomEvent::PresenceChanged {
                member,
                presence,
                seq,
            }) => format!(
                "{{\"event\":\"presence\",\"id\":{},\"presence\":{},\"seq\":{}}}",
                member.0,
                js(presence.name()),
                seq.0
            ),
            Ok(RoomEvent::TimelineChanged { timeline, by, seq }) => format!(
                "{{\"event\":\"timeline\",\"name\":{},\"playing\":{},\"rate_ppm\":{},\"anchor_time\":{},\"anchor_position_us\":{},\"tempo_mbpm\":{},\"by\":{},\"seq\":{}}}",
                js(&timeline.name),
                timeline.playing,
                timeline.rate_ppm,
                timeline.anchor_time.0,
                timeline.anchor_position_us,
                timeline
                    .tempo_mbpm
                    .map_or_else(|| "null".to_owned(), |t| t.to_string()),
                by.0,
                seq.0
            ),
            Ok(RoomEvent::PackAvailable { pack, seq }) => format!(
                "{{\"event\":\"pack\",\"hash\":{},\"name\":{},\"media_type\":{},\"size\":{},\"uploader\":{},\"seq\":{}}}",
                js(&hex(&pack.hash)),
                js(&pack.name),
                js(&pack.media_type),
                pack.size,
                pack.uploader.0,
                seq.0
            ),
            Ok(RoomEvent::Resynced { seq }) => {
                format!("{{\"event\":\"resynced\",\"seq\":{}}}", seq.0)
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                format!("{{\"event\":\"lagged\",\"missed\":{n}}}")
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        emit(&line);
    }
}

/// Reports direct and broadcast messages to this peer.
async fn messages(room: Room) {
    let mut rx = room.messages();
    while let Some(m) = rx.recv().await {
        let delivery = match m.delivery {
            Delivery::Direct => "direct",
            Delivery::Broadcast => "broadcast",
        };
        emit(&format!(
            "{{\"event\":\"message\",\"delivery\":\"{delivery}\",\"from\":{},\"kind\":{},\"text\":{},\"hex\":{}}}",
            m.from.0,
            js(&m.kind),
            js(&String::from_utf8_lossy(&m.payload)),
            js(&hex(&m.payload))
        ));
    }
}

/// Reports reconnects and resumes.
async fn connection(client: Client) {
    let mut rx = client.connection_events();
    loop {
        let line = match rx.recv().await {
            Ok(ConnectionEvent::Reconnecting {
                attempt,
                delay,
                reason,
            }) => format!(
                "{{\"event\":\"reconnecting\",\"attempt\":{attempt},\"delay_ms\":{},\"reason\":{}}}",
                delay.as_millis(),
                js(&reason.to_string())
            ),
            Ok(ConnectionEvent::Resumed {
                transport,
                session_resumed,
                rooms,
            }) => format!(
                "{{\"event\":\"resumed\",\"transport\":{},\"session\":{session_resumed},\"rooms\":{}}}",
                js(&transport.to_string().to_lowercase()),
                rooms.len()
            ),
            Ok(ConnectionEvent::Lost { reason }) => format!(
                "{{\"event\":\"lost\",\"reason\":{}}}",
                js(&reason.to_string())
            ),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        emit(&line);
    }
}

/// The bytes of a `"hex"` or `"text"` (or `"payload"`) field.
fn payload_of(map: &HashMap<String, Scalar>) -> Option<Vec<u8>> {
    match (
        get_str(map, "hex"),
        get_str(map, "text"),
        get_str(map, "payload"),
    ) {
        (Some(h), _, _) => unhex(h),
        (None, Some(t), _) | (None, None, Some(t)) => Some(t.as_bytes().to_vec()),
        (None, None, None) => Some(Vec::new()),
    }
}

/// The `timeline` op.
async fn timeline_command(room: &Room, map: &HashMap<String, Scalar>) -> String {
    let Some(name) = get_str(map, "name") else {
        return error_line("timeline", None, "needs \"name\"");
    };
    let mut options = TimelineOptions::now();
    if let Some(ms) = get_u64(map, "in_ms") {
        // Scheduled ahead of the server time this peer estimates.
        let now = room_server_time(room);
        options.at = Some(now.saturating_add_micros(ms * 1000));
    }
    if let Some(seq) = get_u64(map, "expected_seq") {
        options.expected_seq = Some(Seq(seq));
    }
    let result = match get_str(map, "action").unwrap_or("") {
        "play" => room.play(name, options).await,
        "pause" => room.pause(name, options).await,
        "seek" => match get_u64(map, "position_ms") {
            Some(ms) => room.seek(name, Duration::from_millis(ms), options).await,
            None => return error_line("timeline", None, "seek needs \"position_ms\""),
        },
        "rate" => match get_u64(map, "rate_ppm").and_then(|r| u32::try_from(r).ok()) {
            Some(rate) => room.set_rate(name, rate, options).await,
            None => return error_line("timeline", None, "rate needs \"rate_ppm\""),
        },
        "tempo" => {
            let tempo = get_u64(map, "tempo_mbpm").and_then(|t| u32::try_from(t).ok());
            room.set_tempo(name, tempo, options).await
        }
        _ => {
            return error_line(
                "timeline",
                None,
                "\"action\" is play, pause, seek, rate or tempo",
            );
        }
    };
    ack_line("timeline", result)
}

/// The server time by this peer's clock estimate (through its client).
fn room_server_time(room: &Room) -> chorus_client::ServerTime {
    room.client().server_time()
}

/// Reads stdin lines on a thread (stdin reads block).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.blocking_send(line.trim().to_owned()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Runs one stdin command; returns false on `leave`.
async fn command(room: &Room, line: &str) -> bool {
    let Some(map) = parse_flat_object(line) else {
        emit(&error_line(
            "input",
            None,
            &format!("not a flat JSON object: {line}"),
        ));
        return true;
    };
    match get_str(&map, "op").unwrap_or("") {
        "tick" => {
            let payload = match (get_str(&map, "hex"), get_str(&map, "text")) {
                (Some(h), _) => unhex(h),
                (None, Some(t)) => Some(t.as_bytes().to_vec()),
                (None, None) => None,
            };
            let line = match payload.map(|p| room.send_tick(&p)) {
                Some(Ok(seq)) => format!("{{\"event\":\"ack\",\"op\":\"tick\",\"seq\":{seq}}}"),
                Some(Err(e)) => error_line("tick", None, &e.to_string()),
                None => error_line("tick", None, "needs \"hex\" (valid hex) or \"text\""),
            };
            emit(&line);
        }
        "state" => {
            let (Some(key), Some(value)) = (get_str(&map, "key"), get_str(&map, "value")) else {
                emit(&error_line("state", None, "needs \"key\" and \"value\""));
                return true;
            };
            let result = match get_u64(&map, "if_version") {
                Some(v) => room.set_state_if(key, value.as_bytes(), v).await,
                None => room.set_state(key, value.as_bytes()).await,
            };
            emit(&match result {
                Ok(ack) => format!(
                    "{{\"event\":\"ack\",\"op\":\"state\",\"version\":{},\"seq\":{}}}",
                    ack.version, ack.seq.0
                ),
                Err(e) => request_error("state", &e),
            });
        }
        "command" => {
            let kind = get_str(&map, "kind").unwrap_or("chat");
            let payload = get_str(&map, "payload").unwrap_or("");
            let result = room
                .send_command(kind, payload.as_bytes(), get_str(&map, "key"))
                .await;
            emit(&match result {
                Ok(ack) => format!(
                    "{{\"event\":\"ack\",\"op\":\"command\",\"seq\":{},\"duplicate\":{}}}",
                    ack.seq.0, ack.duplicate
                ),
                Err(e) => request_error("command", &e),
            });
        }
        "kick" => {
            let Some(member) = get_member(&map) else {
                emit(&error_line("kick", None, "needs \"member\""));
                return true;
            };
            let reason = get_str(&map, "reason").unwrap_or("");
            emit(&ack_line("kick", room.kick(member, reason).await));
        }
        "role" => {
            let (Some(member), Some(role)) = (
                get_member(&map),
                get_str(&map, "role").and_then(Role::from_name),
            ) else {
                emit(&error_line(
                    "role",
                    None,
                    "needs \"member\" and \"role\" (host, editor or viewer)",
                ));
                return true;
            };
            emit(&ack_line("role", room.set_role(member, role).await));
        }
        "password" => {
            let password = match map.get("value") {
                Some(Scalar::Str(p)) => Some(p.as_str()),
                Some(Scalar::Null) => None,
                _ => {
                    emit(&error_line(
                        "password",
                        None,
                        "needs \"value\" (a string or null)",
                    ));
                    return true;
                }
            };
            emit(&ack_line("password", room.set_password(password).await));
        }
        "close" => {
            let reason = get_str(&map, "reason").unwrap_or("");
            emit(&ack_line("close", room.close_room(reason).await));
        }
        "direct" => {
            let (Some(member), Some(payload)) = (get_member(&map), payload_of(&map)) else {
                emit(&error_line(
                    "direct",
                    None,
                    "needs \"member\" (and valid \"hex\")",
                ));
                return true;
            };
            let kind = get_str(&map, "kind").unwrap_or("direct");
            emit(&match room.send_direct(member, kind, &payload).await {
                Ok(()) => "{\"event\":\"ack\",\"op\":\"direct\"}".to_owned(),
                Err(e) => request_error("direct", &e),
            });
        }
        "broadcast" => {
            let audience = match get_str(&map, "audience").unwrap_or("everyone") {
                "everyone" => Some(Audience::Everyone),
                "others" => Some(Audience::Others),
                role => Role::from_name(role).map(Audience::Role),
            };
            let (Some(audience), Some(payload)) = (audience, payload_of(&map)) else {
                emit(&error_line(
                    "broadcast",
                    None,
                    "\"audience\" is everyone, others or a role (and \"hex\" valid hex)",
                ));
                return true;
            };
            let kind = get_str(&map, "kind").unwrap_or("broadcast");
            emit(&match room.broadcast(audience, kind, &payload).await {
                Ok(()) => "{\"event\":\"ack\",\"op\":\"broadcast\"}".to_owned(),
                Err(e) => request_error("broadcast", &e),
            });
        }
        "timeline" => emit(&timeline_command(room, &map).await),
        "position" => {
            let name = get_str(&map, "name").unwrap_or("");
            let us = room
                .timeline_position(name)
                .map_or_else(|| "null".to_owned(), |p| p.as_micros().to_string());
            emit(&format!(
                "{{\"event\":\"position\",\"name\":{},\"us\":{us}}}",
                js(name)
            ));
        }
        "upload" => {
            let (Some(name), Some(media_type), Some(content)) = (
                get_str(&map, "name"),
                get_str(&map, "media_type"),
                payload_of(&map),
            ) else {
                emit(&error_line(
                    "upload",
                    None,
                    "needs \"name\", \"media_type\" and \"hex\" (or \"text\")",
                ));
                return true;
            };
            emit(&match room.upload_pack(name, media_type, content).await {
                Ok(pack) => format!(
                    "{{\"event\":\"ack\",\"op\":\"upload\",\"hash\":{},\"size\":{}}}",
                    js(&hex(&pack.hash)),
                    pack.size
                ),
                Err(e) => request_error("upload", &e),
            });
        }
        "fetch" => {
            let Some(hash) = get_str(&map, "hash").and_then(unhex) else {
                emit(&error_line("fetch", None, "needs \"hash\" (hex)"));
                return true;
            };
            emit(&match room.fetch_pack(&hash).await {
                Ok(bytes) => format!(
                    "{{\"event\":\"fetched\",\"hash\":{},\"len\":{},\"hex\":{}}}",
                    js(&hex(&hash)),
                    bytes.len(),
                    js(&hex(&bytes))
                ),
                Err(e) => request_error("fetch", &e),
            });
        }
        "snapshot" => emit(&match room.request_snapshot().await {
            Ok(view) => format!(
                "{{\"event\":\"ack\",\"op\":\"snapshot\",\"seq\":{},\"members\":{}}}",
                view.last_seq.0,
                view.members.len()
            ),
            Err(e) => request_error("snapshot", &e),
        }),
        "ice" => emit(&match room.ice_servers().await {
            Ok(ice) => format!(
                "{{\"event\":\"ice\",\"servers\":{},\"expires\":{}}}",
                ice.servers.len(),
                ice.expires.0
            ),
            Err(e) => request_error("ice", &e),
        }),
        "delegate" => {
            let member = match map.get("member") {
                Some(Scalar::Null) | None => None,
                Some(_) => match get_member(&map) {
                    Some(m) => Some(m),
                    None => {
                        emit(&error_line("delegate", None, "\"member\" is an id or null"));
                        return true;
                    }
                },
            };
            emit(&ack_line("delegate", room.set_delegate(member).await));
        }
        "leave" => return false,
        other => emit(&error_line(other, None, "unknown op")),
    }
    true
}

async fn run(args: Args) -> Result<()> {
    let options = ConnectOptions {
        trust: trust(&args)?,
        transport: match args.transport {
            TransportArg::Auto => TransportChoice::Auto,
            TransportArg::Webtransport => TransportChoice::WebTransport,
            TransportArg::Websocket => TransportChoice::WebSocket,
        },
        client_name: format!("browser_peer/{}", env!("CARGO_PKG_VERSION")),
        api_key: args.api_key.clone(),
        ..ConnectOptions::default()
    };
    let client = Client::connect(&args.url, options)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let transport = match client.transport() {
        Transport::WebTransport => "webtransport",
        Transport::WebSocket => "websocket",
    };
    emit(&format!(
        "{{\"event\":\"connected\",\"transport\":\"{transport}\",\"session\":\"{}\"}}",
        client.session_id()
    ));

    let join = JoinOptions {
        create_if_missing: !args.no_create,
        password: args.password.clone(),
        ..JoinOptions::named(args.name.clone())
    };
    let room = match client.join(&args.room, join).await {
        Ok(room) => room,
        Err(e) => {
            emit(&request_error("join", &e));
            client.close().await;
            bail!("joining {}: {e}", args.room);
        }
    };
    // The view and the events after it, without a gap between them.
    let (view, rx) = room.subscribe();
    let members: Vec<String> = view.members.iter().map(member_json).collect();
    emit(&format!(
        "{{\"event\":\"joined\",\"room\":{},\"me\":{},\"role\":{},\"members\":[{}]}}",
        js(room.id()),
        room.me().0,
        js(&room.role().to_string()),
        members.join(",")
    ));

    tokio::spawn(ticks(room.clone(), !args.no_echo));
    tokio::spawn(events(rx));
    tokio::spawn(messages(room.clone()));
    tokio::spawn(connection(client.clone()));
    let mut errors = client.errors();
    let mut lines = stdin_lines();
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) if line.is_empty() => {}
                Some(line) => if !command(&room, &line).await { break },
                None => break,
            },
            Ok(error) = errors.recv() => {
                emit(&error_line("server", Some(error.code.as_u16()), &error.to_string()));
            }
            reason = client.closed() => {
                emit(&format!("{{\"event\":\"closed\",\"reason\":{}}}", js(&reason.to_string())));
                return Ok(());
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(5), room.leave()).await {
        Ok(Ok(())) => emit("{\"event\":\"left\"}"),
        Ok(Err(e)) => emit(&request_error("leave", &e)),
        Err(_) => emit(&error_line("leave", None, "no reply within 5 s")),
    }
    client.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            emit(&format!(
                "{{\"event\":\"fatal\",\"message\":{}}}",
                js(&format!("{e:#}"))
            ));
            eprintln!("browser_peer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_objects() {
        let m =
            parse_flat_object(r#" {"op":"state", "key":"t\"i\u0074le","if_version":5,"x":null} "#)
                .expect("parses");
        assert_eq!(get_str(&m, "op"), Some("state"));
        assert_eq!(get_str(&m, "key"), Some("t\"itle"));
        assert_eq!(get_u64(&m, "if_version"), Some(5));
        assert_eq!(m.get("x"), Some(&Scalar::Null));
        assert!(parse_flat_object("{}").is_some_and(|m| m.is_empty()));
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1]",
            "{\"a\":1} x",
            "{\"a\":\"b",
        ] {
            assert!(parse_flat_object(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn escapes_and_hex_round_trip() {
        assert_eq!(js("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
