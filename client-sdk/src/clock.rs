//! Clock synchronisation with the server: the local clock, NTP-style samples and
//! the estimator that turns them into an offset.
//!
//! This module owns only arithmetic: it never sends a ping nor reads the network.
//! The driver feeds it ping/pong timestamps; everything here is a pure function
//! of those numbers (plus [`LocalClock`], which reads `Instant::now`), so the
//! estimator is tested deterministically.
//!
//! The model is NTP's. For one ping/pong exchange:
//! - `t0`: client time when the ping was sent,
//! - `t1`: server time when the ping was read,
//! - `t2`: server time when the pong was written,
//! - `t3`: client time when the pong was read.
//!
//! Then `offset = ((t1 - t0) + (t2 - t3)) / 2` (server minus client) and
//! `rtt = (t3 - t0) - (t2 - t1)` (network time only). The sample with the smallest
//! RTT has the tightest error bound (`|error| <= rtt / 2`), so the estimator keeps a
//! window of recent samples and reports the minimum-RTT one.

use chorus_protocol::ServerTime;
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Exchanges whose round trip (client side, `t3 - t0`) exceeds this are discarded:
/// they cannot be ours, or are too stale to mean anything.
pub const MAX_SAMPLE_ROUND_TRIP_US: u64 = 60_000_000;

/// A monotonic clock anchored to the Unix epoch once, at creation.
///
/// Reading it never goes backwards (it is `Instant`-based) and it does not jump
/// when the system clock is adjusted; it only drifts with the local oscillator,
/// which periodic re-sync corrects.
#[derive(Debug, Clone, Copy)]
pub struct LocalClock {
    anchor: Instant,
    anchor_unix_us: u64,
}

impl LocalClock {
    /// Anchors a clock at the current system time.
    pub fn new() -> Self {
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        LocalClock::anchored(Instant::now(), unix_us)
    }

    /// A clock that reads `unix_us` at `anchor`.
    pub fn anchored(anchor: Instant, unix_us: u64) -> Self {
        LocalClock {
            anchor,
            anchor_unix_us: unix_us,
        }
    }

    /// Microseconds since the Unix epoch, now.
    pub fn now_us(&self) -> u64 {
        self.at_us(Instant::now())
    }

    /// Microseconds since the Unix epoch at `instant` (saturating at the anchor for
    /// instants before it).
    pub fn at_us(&self, instant: Instant) -> u64 {
        let since = instant.saturating_duration_since(self.anchor);
        self.anchor_unix_us
            .saturating_add(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }
}

impl Default for LocalClock {
    fn default() -> Self {
        LocalClock::new()
    }
}

/// One ping/pong exchange, all four timestamps in microseconds since the Unix epoch
/// (client clock for `t0`/`t3`, server clock for `t1`/`t2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// Client send time.
    pub t0: u64,
    /// Server receive time.
    pub t1: u64,
    /// Server send time.
    pub t2: u64,
    /// Client receive time.
    pub t3: u64,
}

impl ClockSample {
    /// Builds a sample from a pong's fields and the local receive time, or `None`
    /// when the timestamps are impossible: the reply arrived before the ping left,
    /// the server answered before it received, or the exchange took longer than
    /// [`MAX_SAMPLE_ROUND_TRIP_US`].
    pub fn new(t0: u64, t1: u64, t2: u64, t3: u64) -> Option<Self> {
        if t3 < t0 || t2 < t1 || t3 - t0 > MAX_SAMPLE_ROUND_TRIP_US {
            return None;
        }
        Some(ClockSample { t0, t1, t2, t3 })
    }

    /// Server clock minus client clock, in microseconds:
    /// `((t1 - t0) + (t2 - t3)) / 2`.
    pub fn offset_us(&self) -> i64 {
        let sum = (i128::from(self.t1) - i128::from(self.t0))
            + (i128::from(self.t2) - i128::from(self.t3));
        saturate_i64(sum / 2)
    }

    /// Network round-trip time, excluding the server's processing time:
    /// `(t3 - t0) - (t2 - t1)`, at least 0 (clock granularity can make the server's
    /// processing look longer than the whole exchange).
    pub fn rtt_us(&self) -> u64 {
        let round_trip = self.t3.saturating_sub(self.t0);
        let processing = self.t2.saturating_sub(self.t1);
        round_trip.saturating_sub(processing)
    }
}

fn saturate_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The sample with the smallest RTT; among equal RTTs, the most recent (last).
pub fn best_sample<'a>(samples: impl IntoIterator<Item = &'a ClockSample>) -> Option<ClockSample> {
    samples
        .into_iter()
        .fold(None, |best: Option<ClockSample>, s| match best {
            Some(b) if b.rtt_us() < s.rtt_us() => Some(b),
            _ => Some(*s),
        })
}

/// The current estimate of the server clock relative to this client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockEstimate {
    /// Server clock minus local clock, in microseconds (add it to local time to get
    /// server time). 0 before the first sample.
    pub offset_us: i64,
    /// The RTT of the sample the offset comes from, in microseconds; the offset's
    /// error is at most half of it.
    pub rtt_us: u64,
    /// Samples in the estimator's window (0: not synced yet).
    pub samples: usize,
}

impl ClockEstimate {
    /// Whether at least one sample has been taken.
    pub fn is_synced(&self) -> bool {
        self.samples > 0
    }

    /// The RTT as a [`Duration`].
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_us)
    }

    /// Converts a local time (µs since the Unix epoch on the local clock) into
    /// server time.
    pub fn to_server_time(&self, local_us: u64) -> ServerTime {
        let v = i128::from(local_us) + i128::from(self.offset_us);
        ServerTime(u64::try_from(v.max(0)).unwrap_or(u64::MAX))
    }

    /// Converts a server time into local time (µs since the Unix epoch on the local clock).
    pub fn to_local_us(&self, server: ServerTime) -> u64 {
        let v = i128::from(server.0) - i128::from(self.offset_us);
        u64::try_from(v.max(0)).unwrap_or(u64::MAX)
    }
}

/// Keeps the most recent samples and estimates the offset from the best of them.
#[derive(Debug, Clone)]
pub struct ClockEstimator {
    window: VecDeque<ClockSample>,
    capacity: usize,
}

impl ClockEstimator {
    /// An estimator keeping at most `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ClockEstimator {
            window: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds a sample, evicting the oldest when the window is full.
    pub fn add(&mut self, sample: ClockSample) {
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(sample);
    }

    /// Number of samples in the window.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether no sample has been taken yet.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The estimate from the minimum-RTT sample in the window.
    pub fn estimate(&self) -> ClockEstimate {
        match best_sample(&self.window) {
            Some(best) => ClockEstimate {
                offset_us: best.offset_us(),
                rtt_us: best.rtt_us(),
                samples: self.window.len(),
            },
            None => ClockEstimate::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t0: u64, t1: u64, t2: u64, t3: u64) -> ClockSample {
        ClockSample::new(t0, t1, t2, t3).expect("valid sample")
    }

    #[test]
    fn symmetric_path_gives_exact_offset() {
        // Server is 1_000_000 µs ahead; 50 µs each way; 10 µs processing.
        let s = sample(100, 1_000_150, 1_000_160, 210);
        assert_eq!(s.offset_us(), 1_000_000);
        assert_eq!(s.rtt_us(), 100);
    }

    #[test]
    fn server_behind_gives_negative_offset() {
        // Server 5 s behind, 1 ms each way, no processing time.
        let c0 = 10_000_000_000;
        let s = sample(
            c0,
            c0 - 5_000_000 + 1_000,
            c0 - 5_000_000 + 1_000,
            c0 + 2_000,
        );
        assert_eq!(s.offset_us(), -5_000_000);
        assert_eq!(s.rtt_us(), 2_000);
    }

    #[test]
    fn asymmetric_path_error_is_bounded_by_half_rtt() {
        // True offset 0; 900 µs out, 100 µs back.
        let s = sample(0, 900, 900, 1_000);
        assert_eq!(s.rtt_us(), 1_000);
        assert_eq!(s.offset_us(), 400);
        assert!(s.offset_us().unsigned_abs() <= s.rtt_us() / 2);
    }

    #[test]
    fn impossible_samples_are_rejected() {
        assert_eq!(ClockSample::new(10, 5, 6, 9), None, "reply before ping");
        assert_eq!(
            ClockSample::new(10, 6, 5, 20),
            None,
            "server sent before receiving"
        );
        assert_eq!(
            ClockSample::new(0, 1, 1, MAX_SAMPLE_ROUND_TRIP_US + 1),
            None,
            "too old"
        );
        assert!(ClockSample::new(0, 1, 1, MAX_SAMPLE_ROUND_TRIP_US).is_some());
    }

    #[test]
    fn processing_longer_than_round_trip_clamps_rtt_to_zero() {
        // Coarse client clock: the exchange looks shorter than the server's processing.
        let s = sample(1_000, 5_000, 5_300, 1_200);
        assert_eq!(s.rtt_us(), 0);
        assert_eq!(s.offset_us(), ((4_000i64) + (4_100)) / 2);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let s = sample(0, u64::MAX, u64::MAX, 0);
        assert_eq!(s.offset_us(), i64::MAX);
        let s = sample(u64::MAX - 10, 0, 0, u64::MAX);
        assert_eq!(s.offset_us(), i64::MIN);
    }

    #[test]
    fn best_sample_prefers_min_rtt_then_latest() {
        let a = sample(0, 1_050, 1_050, 100); // rtt 100
        let b = sample(1_000, 2_020, 2_020, 1_040); // rtt 40
        let c = sample(2_000, 3_500, 3_500, 3_000); // rtt 1000
        let d = sample(4_000, 5_025, 5_025, 4_040); // rtt 40, later than b
        assert_eq!(best_sample(&[a, b, c]), Some(b));
        assert_eq!(best_sample(&[a, b, c, d]), Some(d));
        assert_eq!(best_sample(&[]), None);
    }

    #[test]
    fn estimator_uses_window_min_rtt_and_evicts_oldest() {
        let mut est = ClockEstimator::new(3);
        assert_eq!(est.estimate(), ClockEstimate::default());
        assert!(!est.estimate().is_synced());

        let good = sample(0, 510, 510, 20); // offset 500, rtt 20
        est.add(good);
        est.add(sample(100, 900, 900, 300)); // offset 700, rtt 200
        est.add(sample(200, 1_000, 1_000, 400)); // offset 700, rtt 200
        assert_eq!(
            est.estimate(),
            ClockEstimate {
                offset_us: 500,
                rtt_us: 20,
                samples: 3
            }
        );
        // The good sample falls out of the window; the best remaining one wins.
        est.add(sample(300, 1_050, 1_050, 400)); // offset 700, rtt 100
        let e = est.estimate();
        assert_eq!((e.offset_us, e.rtt_us, e.samples), (700, 100, 3));
        assert_eq!(est.len(), 3);
    }

    #[test]
    fn estimate_converts_between_clocks() {
        let e = ClockEstimate {
            offset_us: -1_000,
            rtt_us: 10,
            samples: 1,
        };
        assert_eq!(e.to_server_time(5_000), ServerTime(4_000));
        assert_eq!(e.to_local_us(ServerTime(4_000)), 5_000);
        // Saturates instead of wrapping below the epoch.
        assert_eq!(e.to_server_time(10), ServerTime(0));
        assert_eq!(e.rtt(), Duration::from_micros(10));
    }

    #[test]
    fn local_clock_is_anchored_and_monotonic() {
        let anchor = Instant::now();
        let clock = LocalClock::anchored(anchor, 1_000_000);
        assert_eq!(clock.at_us(anchor), 1_000_000);
        assert_eq!(clock.at_us(anchor + Duration::from_millis(3)), 1_003_000);
        // Instants before the anchor saturate at the anchor.
        if let Some(before) = anchor.checked_sub(Duration::from_secs(1)) {
            assert_eq!(clock.at_us(before), 1_000_000);
        }
        let a = clock.now_us();
        let b = clock.now_us();
        assert!(b >= a);
    }
}
