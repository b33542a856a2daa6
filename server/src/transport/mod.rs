//! Transport adapters: each turns one kind of connection into a
//! [`run_session`](crate::session::run_session) call and decides nothing else.

pub mod ticks;
pub mod websocket;
pub mod webtransport;
