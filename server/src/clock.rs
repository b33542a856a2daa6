//! The server clock: what "now" means for rooms and for clients syncing to us.
//!
//! Server time is microseconds since the Unix epoch, read once at start and then
//! advanced by the monotonic clock, so it never jumps backwards while the server
//! runs (a wall-clock step would break timelines and idle timers). This is the
//! only place in the server that reads a clock for room purposes; the room core
//! receives time as an argument.

use chorus_protocol::ServerTime;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct ServerClock {
    base: Instant,
    base_unix_us: u64,
}

impl Default for ServerClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerClock {
    pub fn new() -> Self {
        let base_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        ServerClock {
            base: Instant::now(),
            base_unix_us,
        }
    }

    pub fn now(&self) -> ServerTime {
        self.at(Instant::now())
    }

    /// The server time of a monotonic instant.
    pub fn at(&self, instant: Instant) -> ServerTime {
        let since = instant.saturating_duration_since(self.base).as_micros() as u64;
        ServerTime(self.base_unix_us.saturating_add(since))
    }

    /// The monotonic instant of a server time (for timers).
    pub fn instant_of(&self, time: ServerTime) -> Instant {
        let micros = time.0.saturating_sub(self.base_unix_us);
        self.base + Duration::from_micros(micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_server_times_convert_both_ways() {
        let clock = ServerClock::new();
        let later = clock.base + Duration::from_millis(1500);
        let t = clock.at(later);
        assert_eq!(t.0 - clock.base_unix_us, 1_500_000);
        assert_eq!(clock.instant_of(t), later);
        // Times before the server started map to its start, not to a panic.
        assert_eq!(clock.instant_of(ServerTime(0)), clock.base);
    }
}
