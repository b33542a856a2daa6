//! Reconnecting after a dropped connection: the settings
//! ([`ReconnectOptions`]), the backoff schedule (exponential, full jitter,
//! bounded by the server's resume window) and the events the client reports
//! ([`ConnectionEvent`]).
//!
//! The schedule is pure: [`ReconnectOptions::delay`] and [`next_delay`] take
//! the randomness and the elapsed time as arguments, so they are tested
//! without sleeping. The driver feeds them [`random_u64`] and the time since
//! the drop.
//!
//! # What happens on a drop
//!
//! When the connection fails below Chorus (network error, idle timeout, a
//! close without an error from the server) and the server's hello offered a
//! resume token, the client does not end: it reports
//! [`ConnectionEvent::Reconnecting`], waits a jittered delay, and connects
//! again with the same URL and [`TransportChoice`](crate::TransportChoice)
//! (with `Auto`: WebTransport, then WebSocket), presenting the token and, per
//! room, the last sequence number its replica applied. Attempts go on until
//! one succeeds or the server's resume window (`resume_window_ms`, from the
//! drop) has passed. Meanwhile [`Room`](crate::Room) handles stay valid,
//! requests wait for the new connection (within their timeout), and ticks
//! fail with [`TickError::Disconnected`](crate::TickError::Disconnected).
//!
//! The server then resumes each room: it replays the missed events (the
//! replica applies them and they are published as usual
//! [`RoomEvent`](crate::RoomEvent)s), or sends a fresh snapshot when the gap is
//! too old ([`RoomEvent::Resynced`](crate::RoomEvent::Resynced)), or says the
//! member is gone (the room ends as if left). [`ConnectionEvent::Resumed`]
//! sums it up. Requests in flight at the drop fail with
//! [`RequestError::ConnectionLost`](crate::RequestError::ConnectionLost),
//! except commands with an idempotency key: they are sent again on the new
//! connection and complete normally, applied exactly once (the server
//! answers a repeat with `duplicate: true`).
//!
//! When the window passes (or resuming is off, or the server refuses the
//! client for good) the connection ends with the drop's [`CloseReason`]
//! and [`ConnectionEvent::Lost`].

use crate::error::CloseReason;
use crate::transport::Transport;
use chorus_protocol::{ErrorCode, RoomSlot, Seq};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How [`Client`](crate::Client) reconnects after a dropped connection
/// ([`ConnectOptions::reconnect`](crate::ConnectOptions::reconnect)).
///
/// Attempt `n` (from 1) waits a random delay between zero and
/// `initial_delay × 2^(n−1)`, capped at `max_delay` ("full jitter"), so that
/// many clients dropped together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectOptions {
    /// Reconnect at all. Default: true. When false, a dropped connection ends
    /// the client as it always did ([`Client::closed`](crate::Client::closed)).
    pub enabled: bool,
    /// The delay bound of the first attempt. Default: 250 ms.
    pub initial_delay: Duration,
    /// The largest delay bound. Default: 10 s.
    pub max_delay: Duration,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        ReconnectOptions {
            enabled: true,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl ReconnectOptions {
    /// No reconnecting: a dropped connection ends the client.
    pub fn disabled() -> Self {
        ReconnectOptions {
            enabled: false,
            ..ReconnectOptions::default()
        }
    }

    /// The bound of attempt `attempt`'s delay (attempts count from 1; 0 is
    /// taken as 1): `initial_delay × 2^(attempt−1)`, at most `max_delay`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_delay)
    }

    /// Attempt `attempt`'s delay with full jitter: uniform in
    /// `0..=ceiling(attempt)` (microsecond steps), picked by `random` (any
    /// `u64`, e.g. [`random_u64`]).
    ///
    /// ```
    /// use chorus_client::ReconnectOptions;
    /// use std::time::Duration;
    ///
    /// let o = ReconnectOptions::default();
    /// assert_eq!(o.ceiling(1), Duration::from_millis(250));
    /// assert_eq!(o.ceiling(3), Duration::from_secs(1));
    /// assert_eq!(o.ceiling(10), Duration::from_secs(10));
    /// assert_eq!(o.delay(3, 0), Duration::ZERO);
    /// assert_eq!(o.delay(3, 1_000_000), Duration::from_secs(1));
    /// ```
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_micros()).unwrap_or(u64::MAX);
        let us = match ceiling.checked_add(1) {
            Some(span) => random % span,
            None => random,
        };
        Duration::from_micros(us)
    }
}

/// The delay before reconnect attempt `attempt`, `elapsed` after the drop,
/// with the server's resume `window`: the jittered [`ReconnectOptions::delay`],
/// at least `at_least` (a wait the server asked for, e.g. with
/// `TooManyConnections`), and cut to what is left of the window. `None` when
/// the window has passed: give up.
///
/// ```
/// use chorus_client::ReconnectOptions;
/// use chorus_client::reconnect::next_delay;
/// use std::time::Duration;
///
/// let o = ReconnectOptions::default();
/// let window = Duration::from_secs(60);
/// let secs = Duration::from_secs;
/// assert_eq!(next_delay(&o, 1, secs(0), window, Duration::ZERO, 40_000), Some(Duration::from_millis(40)));
/// // The server asked to wait 5 s.
/// assert_eq!(next_delay(&o, 1, secs(0), window, secs(5), 40_000), Some(secs(5)));
/// // Only 2 s of the window left.
/// assert_eq!(next_delay(&o, 9, secs(58), window, Duration::ZERO, 9_000_000), Some(secs(2)));
/// assert_eq!(next_delay(&o, 9, secs(60), window, Duration::ZERO, 7), None);
/// ```
pub fn next_delay(
    options: &ReconnectOptions,
    attempt: u32,
    elapsed: Duration,
    window: Duration,
    at_least: Duration,
    random: u64,
) -> Option<Duration> {
    let left = window.checked_sub(elapsed).filter(|d| !d.is_zero())?;
    Some(options.delay(attempt, random).max(at_least).min(left))
}

/// A random `u64` for the jitter, from the standard library's per-process
/// random hash keys and a counter (no RNG dependency; not for cryptography).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// How one room came through a resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomResume {
    /// The server replayed every event after `since` (the replica's last seq
    /// at the drop), as ordinary room events, already applied and published
    /// when this is reported.
    Replayed {
        /// The last event the replica had applied before the drop.
        since: Seq,
        /// The last event applied when the resume completed: the replay went
        /// from `since` to here (`until == since`: nothing was missed). Live
        /// events that came right after the replay are included.
        until: Seq,
    },
    /// The gap was too old to replay: the replica was replaced by a fresh
    /// snapshot ([`RoomEvent::Resynced`](crate::RoomEvent::Resynced)).
    Snapshot,
    /// The member is gone (the room ended: `RoomNotFound`; removed while away:
    /// `NotJoined`; the whole session could not be resumed: `ResumeFailed`).
    /// The room is no longer joined and its streams have ended.
    Lost(ErrorCode),
    /// The server did not say within the request timeout; the client left
    /// the room (a `Leave` was sent) and its streams have ended.
    Unanswered,
}

/// One room's outcome in [`ConnectionEvent::Resumed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumedRoom {
    /// The room's id.
    pub room_id: String,
    /// Its slot (unchanged by a resume).
    pub slot: RoomSlot,
    /// What happened to it.
    pub outcome: RoomResume,
}

/// What happens to the connection as a whole
/// ([`Client::connection_events`](crate::Client::connection_events)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The connection dropped (`reason`); reconnect attempt `attempt` (from 1)
    /// starts after `delay`.
    Reconnecting {
        /// The attempt about to be made.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// Why the connection dropped (the first drop, for every attempt).
        reason: CloseReason,
    },
    /// A new connection resumed the session: requests flow again, and every
    /// replayed event has been applied and published. `session_resumed`
    /// is false when the server no longer knew the session (`ResumeFailed`):
    /// the connection works, as a fresh session, but every room was lost.
    Resumed {
        /// The transport of the new connection.
        transport: Transport,
        /// Whether the server took the session over.
        session_resumed: bool,
        /// Each room this client had joined.
        rooms: Vec<ResumedRoom>,
    },
    /// The connection ended for good with this reason and will not be
    /// resumed (not resumable, resuming off, the window passed, or refused
    /// by the server). Not sent after [`Client::close`](crate::Client::close).
    Lost {
        /// Why ([`Client::close_reason`](crate::Client::close_reason) says the same).
        reason: CloseReason,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceilings_double_from_the_initial_delay_up_to_the_max() {
        let o = ReconnectOptions::default();
        let ceilings: Vec<Duration> = (1..=8).map(|n| o.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000)
            ]
        );
        assert_eq!(o.ceiling(0), ms(250));
        assert_eq!(o.ceiling(u32::MAX), ms(10_000), "no overflow");
        let huge = ReconnectOptions {
            initial_delay: Duration::MAX,
            max_delay: Duration::MAX,
            ..o
        };
        assert_eq!(huge.ceiling(40), Duration::MAX);
        assert!(huge.delay(40, u64::MAX) <= Duration::MAX);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let o = ReconnectOptions::default();
        // The random value picks a microsecond in 0..=ceiling.
        assert_eq!(o.delay(1, 0), Duration::ZERO);
        assert_eq!(o.delay(1, 250_000), ms(250));
        assert_eq!(o.delay(1, 250_001), Duration::ZERO);
        assert_eq!(o.delay(2, 123_456), Duration::from_micros(123_456));
        // A deterministic "random" sequence stays within each ceiling.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for attempt in 1..=12 {
            for _ in 0..100 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert!(o.delay(attempt, x) <= o.ceiling(attempt));
            }
        }
    }

    #[test]
    fn the_schedule_stops_at_the_end_of_the_window() {
        let o = ReconnectOptions::default();
        let window = Duration::from_secs(60);
        // A whole schedule with the largest random value: each delay is the
        // ceiling, until the window runs out.
        let mut elapsed = Duration::ZERO;
        let mut delays = Vec::new();
        for attempt in 1.. {
            let max = u64::try_from(o.ceiling(attempt).as_micros()).expect("fits");
            match next_delay(&o, attempt, elapsed, window, Duration::ZERO, max) {
                Some(d) => {
                    delays.push(d);
                    elapsed += d;
                }
                None => break,
            }
        }
        assert_eq!(
            &delays[..6],
            [ms(250), ms(500), ms(1000), ms(2000), ms(4000), ms(8000)]
        );
        assert!(delays[6..delays.len() - 1].iter().all(|d| *d == ms(10_000)));
        assert_eq!(elapsed, window, "the last delay is cut to the window");
        // A wait the server asked for counts, within the window.
        assert_eq!(
            next_delay(&o, 1, Duration::ZERO, window, Duration::from_secs(3), 0),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            next_delay(
                &o,
                1,
                Duration::from_secs(59),
                window,
                Duration::from_secs(3),
                0
            ),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            next_delay(&o, 1, Duration::ZERO, Duration::ZERO, Duration::ZERO, 0),
            None
        );
    }

    #[test]
    fn random_values_differ() {
        let a = random_u64();
        let b = random_u64();
        let c = random_u64();
        assert!(a != b || b != c, "{a} {b} {c}");
    }
}
