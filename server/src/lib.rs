//! Chorus server library: the room core, sessions, transports and the server
//! that ties them together. The `chorus` binary is a thin CLI over [`Server`].
//!
//! Layers, from the inside out (ARCHITECTURE.md has the map):
//! - [`core`]: the sans-IO room state machine.
//! - [`rooms`]: one task per room around the core, the registry, tick fan-out.
//! - [`session`]: one transport-agnostic session per connection.
//! - [`store`]: the on-disk store rooms and packs survive restarts in.
//! - [`transport`]: adapters from a connection to a session (WebTransport).
//! - [`server`]: configuration, listeners, start and stop.
//! - [`config`]: the `chorus` command line, environment and config file.

pub mod access;
pub mod cert;
pub mod clock;
pub mod config;
pub mod core;
pub mod descriptors;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod packs;
pub mod rooms;
pub mod server;
pub mod session;
pub mod stats;
pub mod store;
pub mod templates;
pub mod transport;

pub use server::{RunningServer, Server, ServerConfig, StartError};
