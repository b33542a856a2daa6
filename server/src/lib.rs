//! Chorus server library: the room core, sessions, transports and the server
//! that ties them together. The `chorus` binary is a thin CLI over [`Server`].

pub mod core;
