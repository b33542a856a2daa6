//! Server-wide counters, read by `/stats`, the bench and tests.
//!
//! Plain relaxed atomics: cheap enough for the tick path, and exact once the
//! server is quiet. (Prometheus export comes on top of these, not instead.)

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The transports, as sessions name them.
pub const TRANSPORTS: [&str; 2] = ["webtransport", "websocket"];

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub sessions_opened: Counter,
    /// Sessions taken over by a resuming connection.
    pub sessions_resumed: Counter,
    pub sessions_closed: Counter,
    pub webtransport_opened: Counter,
    pub webtransport_closed: Counter,
    pub websocket_opened: Counter,
    pub websocket_closed: Counter,
    pub rooms_created: Counter,
    /// Ticks accepted from clients.
    pub ticks_in: Counter,
    /// Tick copies handed to receivers' transports.
    pub ticks_out: Counter,
    /// Tick copies dropped because a receiver's transport could not carry them.
    pub ticks_dropped: Counter,
    /// Tick datagrams refused (undecodable, not joined, forged sender, forbidden).
    pub ticks_rejected: Counter,
    /// Control messages received.
    pub reliable_in: Counter,
    /// Control messages queued to sessions.
    pub reliable_out: Counter,
    /// Error messages sent to clients.
    pub errors_sent: Counter,
    pub slow_consumer_disconnects: Counter,
    /// Messages and ticks refused by a session's rate budgets.
    pub rate_limited: Counter,
    /// Sessions closed for repeated rate-limit violations.
    pub rate_limit_disconnects: Counter,
    /// Bytes of completed pack uploads.
    pub pack_bytes_in: Counter,
    /// Bytes of packs sent to clients.
    pub pack_bytes_out: Counter,
}

impl ServerStats {
    /// Sessions opened and closed on one transport (see [`TRANSPORTS`]).
    pub fn transport_counters(&self, transport: &str) -> (&Counter, &Counter) {
        match transport {
            "websocket" => (&self.websocket_opened, &self.websocket_closed),
            _ => (&self.webtransport_opened, &self.webtransport_closed),
        }
    }

    /// Sessions open now.
    pub fn sessions_open(&self) -> u64 {
        self.sessions_opened
            .get()
            .saturating_sub(self.sessions_closed.get())
    }
}
