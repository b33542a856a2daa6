//! Async Rust client for Chorus, the realtime room-sync server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use chorus_client::{Client, ConnectOptions, JoinOptions, RoomEvent};
//!
//! let hash = chorus_client::Trust::parse_hash("…64 hex digits printed by the server…")
//!     .ok_or("bad hash")?;
//! let client = Client::connect(
//!     "https://127.0.0.1:4433/chorus",
//!     ConnectOptions::with_cert_hashes([hash]),
//! )
//! .await?;
//! println!("clock offset {} µs", client.clock().offset_us);
//!
//! let room = client.join("lobby", JoinOptions::named("ada")).await?;
//! let mut events = room.events();
//! room.set_state("title", b"hello").await?; // the replica already holds it here
//! room.send_command("chat", b"hi all", None).await?;
//! room.send_tick(&[0u8; 8])?; // unreliable, never blocks
//! while let Ok(event) = events.recv().await {
//!     if let RoomEvent::Command(cmd) = event {
//!         println!("{} from member {}", cmd.kind, cmd.author.0);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Transports
//!
//! The URL picks the transport; the API is the same on both.
//!
//! - `https://host:port/chorus`: **WebTransport** (HTTP/3 over QUIC). Ticks are
//!   QUIC datagrams. With the default [`TransportChoice::Auto`], when the QUIC
//!   session is not up within [`ConnectOptions::fallback_after`] (3 s) or fails
//!   (UDP blocked by a firewall, nothing listening on UDP), the client connects
//!   to `wss://host:port/chorus` instead (or [`ConnectOptions::websocket_url`]),
//!   with the same [`Trust`] settings. If both fail,
//!   [`ConnectError::AllTransportsFailed`] says what each attempt met.
//! - `wss://…` / `ws://…`: **WebSocket** (TCP, with or without TLS), as
//!   PROTOCOL.md §1.3 defines it: binary messages with a lane byte, control
//!   messages over 16 KiB sent in chunks so ticks pass between the pieces,
//!   ticks in-band. `ws://` suits loopback development and servers behind a
//!   TLS-terminating proxy.
//!
//! [`Client::transport`] tells which one is in use. Differences that show:
//! [`Client::max_datagram_size`] is `None` on WebSocket (only the server's
//! `max_tick_payload_bytes` limits ticks there), and a WebSocket client keeps at
//! most one unsent tick per room, replacing it with a newer one
//! ([`Client::outgoing_ticks_dropped`] counts those). Servers close a WebSocket
//! with code 4000 + the Chorus error code; that becomes the same
//! [`CloseReason::Server`] as a WebTransport close code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use chorus_client::{Client, ConnectOptions, Transport, TransportChoice};
//! use std::time::Duration;
//!
//! // Plain WebSocket to a local development server: no certificate involved.
//! let local = Client::connect("ws://127.0.0.1:4433/chorus", ConnectOptions::default()).await?;
//! assert_eq!(local.transport(), Transport::WebSocket);
//!
//! // WebTransport, or WebSocket after one second without a QUIC session.
//! let options = ConnectOptions {
//!     fallback_after: Duration::from_secs(1),
//!     ..ConnectOptions::with_ca_pem(std::fs::read("ca.pem")?)
//! };
//! let client = Client::connect("https://chorus.example.com/chorus", options).await?;
//! println!("connected over {}", client.transport());
//! # Ok(()) }
//! ```
//!
//! # Access control
//!
//! A server may require an API key ([`ConnectOptions::api_key`]); rooms may
//! have a password ([`JoinOptions::password`]), admit members by signed join
//! token ([`JoinOptions::token`]), and have their own permission policy
//! ([`JoinOptions::policy`], [`Room::policy`]) over the default one (hosts
//! moderate; hosts and editors write state and send commands; everyone sends
//! ticks). [`Room::can`] predicts what the server will allow this client;
//! hosts [`kick`](Room::kick) members, [`set_role`](Room::set_role)s,
//! [`set_password`](Room::set_password) and [`close_room`](Room::close_room).
//! A client that was kicked, or whose room was closed, sees
//! [`RoomEvent::MemberKicked`] or [`RoomEvent::RoomClosed`] as the room's last
//! event, and the room is no longer joined. Refusals that ask to wait
//! (rate limits, bans, blocks) say how long: [`RequestError::retry_after`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use chorus_client::{Action, Client, ConnectOptions, JoinOptions, Role, RoomEvent};
//!
//! let options = ConnectOptions {
//!     api_key: Some("app-key".into()),
//!     ..ConnectOptions::default()
//! };
//! let client = Client::connect("wss://chorus.example.com/chorus", options).await?;
//! // An empty id creates a room with a fresh invite code; share room.id().
//! let room = client
//!     .join("", JoinOptions::named("ada").with_password("s3cret"))
//!     .await?;
//! println!("invite code {}", room.id());
//! let mut events = room.events();
//! while let Ok(event) = events.recv().await {
//!     if let RoomEvent::MemberJoined { member, .. } = event {
//!         if room.can(Action::GrantRoles, "") {
//!             room.set_role(member.id, Role::Viewer).await?;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Reconnecting and resuming
//!
//! A connection that drops below Chorus (network change, idle timeout, a
//! close without an error from the server) does not end the client when the
//! server offers resumes (it does by default): the client reconnects with
//! exponential backoff and full jitter ([`ConnectOptions::reconnect`]),
//! resumes its session within the server's resume window, and every [`Room`]
//! handle keeps working: the missed events are replayed into the replica (or
//! a fresh snapshot replaces it, [`RoomEvent::Resynced`]), ticks flow again.
//! Meanwhile the other members see this one as
//! [`Presence::Reconnecting`]. [`Client::connection_events`] reports it all;
//! [`reconnect`] has the details (what happens to requests in flight:
//! [`RequestError::ConnectionLost`], except commands with an idempotency key,
//! which are sent again and applied once).
//!
//! ```no_run
//! # async fn demo(client: chorus_client::Client) {
//! use chorus_client::{ConnectionEvent, RoomResume};
//!
//! let mut events = client.connection_events();
//! while let Ok(event) = events.recv().await {
//!     match event {
//!         ConnectionEvent::Reconnecting { attempt, delay, .. } => {
//!             println!("offline; attempt {attempt} in {delay:?}");
//!         }
//!         ConnectionEvent::Resumed { rooms, .. } => {
//!             for room in rooms {
//!                 if let RoomResume::Lost(code) = room.outcome {
//!                     println!("{} is gone ({code}): join again", room.room_id);
//!                 }
//!             }
//!         }
//!         ConnectionEvent::Lost { reason } => println!("disconnected: {reason}"),
//!     }
//! }
//! # }
//! ```
//!
//! [`Client::close`] leaves every room first, so the others see a leave
//! rather than a member reconnecting. The client pings every
//! [`ConnectOptions::ping_interval`] (5 s): the server then knows it is there
//! (a silent host is seen as away and may be replaced), and each pong
//! refreshes the clock estimate ([`Client::server_time`] documents its
//! accuracy).
//!
//! # Timelines, messages, packs
//!
//! - **Timelines** ([`timeline`]): a shared playhead per name. Members control
//!   it ([`Room::play`], [`Room::pause`], [`Room::seek`], [`Room::set_rate`],
//!   [`Room::set_tempo`], optionally scheduled at a server time and
//!   conditional on the last change, [`TimelineOptions`]) and each computes
//!   the position locally from its synced clock ([`Room::timeline_position`]).
//! - **Direct and broadcast messages** ([`Room::send_direct`],
//!   [`Room::broadcast`], received on [`Room::messages`]): reliable but
//!   neither sequenced nor stored, e.g. for WebRTC signalling
//!   ([`Room::ice_servers`]).
//! - **Packs** ([`pack`]): files shared through the room under their SHA-256
//!   ([`Room::upload_pack`], [`Room::fetch_pack`], [`RoomEvent::PackAvailable`]).
//! - The replica also keeps each member's [`Presence`], the room's chat
//!   history ([`Room::chat`]), its [`RoomKind`] (relay rooms store nothing)
//!   and [`FailoverMode`] ([`Room::set_delegate`] names the next host).
//!
//! ```no_run
//! # async fn demo(room: chorus_client::Room) -> Result<(), chorus_client::RequestError> {
//! use chorus_client::{Audience, TimelineOptions};
//! use std::time::Duration;
//!
//! // Start the song for everyone half a second from now, in step.
//! let at = room.client().server_time().saturating_add_micros(500_000);
//! room.play("song", TimelineOptions::at(at)).await?;
//! let position: Option<Duration> = room.timeline_position("song");
//!
//! room.broadcast(Audience::Others, "emoji", "🎉".as_bytes()).await?;
//! let mut messages = room.messages();
//! while let Some(message) = messages.recv().await {
//!     println!("{} from member {}", message.kind, message.from.0);
//! }
//! # let _ = position;
//! # Ok(()) }
//! ```
//!
//! Modules:
//! - [`client`]: connecting, the handshake and the [`Client`] handle.
//! - [`room`]: the [`Room`] handle: replica reads, requests, ticks, messages.
//! - [`replica`]: the pure room state machine that applies room events.
//! - [`timeline`]: timeline position math and scheduled changes.
//! - [`reconnect`]: backoff, resume, [`ConnectionEvent`].
//! - [`pack`]: pack transfers and [`pack_hash`].
//! - [`clock`]: the NTP-style clock estimator.
//! - [`options`]: [`ConnectOptions`], [`Trust`], [`JoinOptions`].
//! - [`error`]: one error type per boundary and [`CloseReason`].
//! - [`url`]: server URL validation and the `https://` → `wss://` mapping.
//!
//! A client runs a few background tasks (see the `driver` and `transport`
//! module sources), the same for both transports: a supervisor that reads the
//! current connection (applying events to each room's replica *before*
//! broadcasting them and completing requests, routing ticks, messages and
//! pack content) and reconnects when it drops; one writer per connection fed
//! by a bounded queue (on WebSocket it also writes the pending ticks, pack
//! chunks and pings); the keep-alive; and a periodic clock re-sync. Only the
//! bytes differ per transport. Every queue is bounded: ticks and messages are
//! newest-wins, reliable events report `Lagged` to a receiver that falls
//! behind (the replica stays correct). When the client ends (closed, or lost
//! for good) every pending request fails with [`RequestError::Closed`] and
//! every event, tick and message stream ends.

pub mod client;
pub mod clock;
mod driver;
pub mod error;
pub mod options;
pub mod pack;
pub mod reconnect;
pub mod replica;
pub mod room;
pub mod timeline;
mod transport;
pub mod url;

pub use chorus_protocol::{
    Action, Audience, ChatEntry, DisplayInfo, ErrorCode, ErrorDetail, ErrorFrame, FailoverMode,
    IceServer, LeaveReason, Limits, MemberId, MemberInfo, PROTOCOL_VERSION, PackInfo,
    PermissionPolicy, PermissionRule, Presence, Rate, RateLimits, Role, RoomKind, RoomSlot, Seq,
    ServerHello, ServerTime, TimelineOp, TimelineState,
};
pub use client::Client;
pub use clock::ClockEstimate;
pub use error::{CloseReason, ConnectError, RequestError, TickError};
pub use options::{ConnectOptions, JoinOptions, SharedEndpoint, TransportChoice, Trust};
pub use pack::pack_hash;
pub use reconnect::{ConnectionEvent, ReconnectOptions, ResumedRoom, RoomResume};
pub use replica::{CommandEvent, RoomEvent, RoomView, StateValue};
pub use room::{
    CommandAck, Delivery, IceServers, MessageReceiver, Room, RoomMessage, StateAck, TickEvent,
    TickReceiver,
};
pub use timeline::TimelineOptions;
pub use transport::Transport;
pub use url::{Scheme, ServerUrl, UrlError};
