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
//! Modules:
//! - [`client`]: connecting, the handshake and the [`Client`] handle.
//! - [`room`]: the [`Room`] handle: replica reads, requests, ticks.
//! - [`replica`]: the pure room state machine that applies room events.
//! - [`clock`]: the NTP-style clock estimator.
//! - [`options`]: [`ConnectOptions`], [`Trust`], [`JoinOptions`].
//! - [`error`]: one error type per boundary and [`CloseReason`].
//! - [`url`]: server URL validation.
//!
//! One connection runs a few background tasks (see the `driver` module source):
//! a control-stream reader that applies events to each room's replica *before*
//! broadcasting them and completing requests, a single control-stream writer fed
//! by a bounded queue, a datagram reader that routes ticks, and a periodic clock
//! re-sync. Every queue is bounded: ticks are newest-wins, reliable events report
//! `Lagged` to a receiver that falls behind (the replica stays correct).
//! When the connection ends every pending request fails with
//! [`RequestError::Closed`] and every event and tick stream ends.

pub mod client;
pub mod clock;
mod driver;
pub mod error;
pub mod options;
pub mod replica;
pub mod room;
mod transport;
pub mod url;

pub use chorus_protocol::{
    DisplayInfo, ErrorCode, ErrorDetail, ErrorFrame, LeaveReason, Limits, MemberId, MemberInfo,
    PROTOCOL_VERSION, Role, RoomSlot, Seq, ServerHello, ServerTime,
};
pub use client::Client;
pub use clock::ClockEstimate;
pub use error::{CloseReason, ConnectError, RequestError, TickError};
pub use options::{ConnectOptions, JoinOptions, TransportChoice, Trust};
pub use replica::{CommandEvent, RoomEvent, RoomView, StateValue};
pub use room::{CommandAck, Room, StateAck, TickEvent, TickReceiver};
pub use transport::Transport;
pub use url::{Scheme, ServerUrl, UrlError};
