//! Timelines: a shared playhead (playing, rate, tempo, a position anchored at
//! a server time) that every member follows from its own synced clock, so
//! playback needs no ticks.
//!
//! This module is pure arithmetic over [`TimelineState`]s: [`position_us_at`]
//! is the position formula, [`TimelineSchedule`] keeps the states of one
//! timeline and says which one is in force at a given server time. The
//! [`Room`](crate::Room) methods ([`timeline`](crate::Room::timeline),
//! [`timeline_position`](crate::Room::timeline_position), [`play`](crate::Room::play),
//! …) use them with [`Client::server_time`](crate::Client::server_time).
//!
//! # Scheduled changes
//!
//! A change may be scheduled a little ahead ([`TimelineOptions::at`]), so that
//! every member switches at the same server time whatever its latency. Its
//! `TimelineChanged` event arrives early, with `anchor_time` in the future:
//! until then the *previous* state stays in force, from then on the new one.
//! A later change whose anchor comes first supersedes a pending one (the
//! server computed it from that pending state, as the room holds only one
//! state per timeline).
//!
//! ```
//! use chorus_client::timeline::{TimelineSchedule, position_us_at};
//! use chorus_client::{Seq, ServerTime, TimelineState};
//!
//! let playing = TimelineState {
//!     name: "main".into(),
//!     playing: true,
//!     rate_ppm: 1_000_000,
//!     anchor_time: ServerTime(1_000_000),
//!     anchor_position_us: 0,
//!     tempo_mbpm: None,
//!     seq: Seq(4),
//! };
//! // One second after the anchor, at normal speed: one second in.
//! assert_eq!(position_us_at(&playing, ServerTime(2_000_000)), 1_000_000);
//!
//! // A pause scheduled for t = 3 s arrives at t = 2 s.
//! let mut schedule = TimelineSchedule::new(playing.clone());
//! schedule.push(TimelineState {
//!     playing: false,
//!     anchor_time: ServerTime(3_000_000),
//!     anchor_position_us: 2_000_000,
//!     seq: Seq(5),
//!     ..playing
//! });
//! assert!(schedule.at(ServerTime(2_500_000)).playing, "still playing");
//! assert_eq!(schedule.position_us_at(ServerTime(2_500_000)), 1_500_000);
//! assert!(!schedule.at(ServerTime(3_000_000)).playing, "paused from its anchor");
//! assert_eq!(schedule.position_us_at(ServerTime(9_000_000)), 2_000_000);
//! ```

use chorus_protocol::{Seq, ServerTime, TimelineOp, TimelineState};
use std::time::Duration;

/// Normal speed, in parts per million (`rate_ppm`).
pub const NORMAL_RATE_PPM: u32 = 1_000_000;

/// States of one timeline kept at most (pending scheduled changes included);
/// older ones are dropped first.
pub const MAX_SCHEDULED_STATES: usize = 8;

/// The position of a timeline in state `state` at server time `at`, in
/// microseconds: `anchor_position_us + (at − anchor_time) × rate_ppm / 10⁶`
/// while playing (never before the anchor), else `anchor_position_us`. The
/// same formula as the server's.
pub fn position_us_at(state: &TimelineState, at: ServerTime) -> u64 {
    if !state.playing || at <= state.anchor_time {
        return state.anchor_position_us;
    }
    let elapsed = u128::from(at.saturating_since(state.anchor_time));
    let advanced = elapsed * u128::from(state.rate_ppm) / u128::from(NORMAL_RATE_PPM);
    state
        .anchor_position_us
        .saturating_add(u64::try_from(advanced).unwrap_or(u64::MAX))
}

/// [`position_us_at`] as a [`Duration`].
pub fn position_at(state: &TimelineState, at: ServerTime) -> Duration {
    Duration::from_micros(position_us_at(state, at))
}

/// The states of one timeline as this client learned them, oldest first, and
/// which one is in force when. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineSchedule {
    /// Never empty; in arrival (= sequence) order.
    states: Vec<TimelineState>,
}

impl TimelineSchedule {
    /// A schedule starting from one state (e.g. from a snapshot).
    pub fn new(state: TimelineState) -> Self {
        TimelineSchedule {
            states: vec![state],
        }
    }

    /// Adds a newer state (a `TimelineChanged`). Older states that could no
    /// longer come into force (their anchor is not before the new one's) are
    /// dropped, and at most [`MAX_SCHEDULED_STATES`] are kept.
    pub fn push(&mut self, state: TimelineState) {
        let anchor = state.anchor_time;
        self.states.retain(|s| s.anchor_time < anchor);
        self.states.push(state);
        if self.states.len() > MAX_SCHEDULED_STATES {
            let excess = self.states.len() - MAX_SCHEDULED_STATES;
            self.states.drain(..excess);
        }
    }

    /// Forgets states that can no longer be in force at or after `now`.
    pub fn settle(&mut self, now: ServerTime) {
        if let Some(i) = self.in_force_index(now) {
            self.states.drain(..i);
        }
    }

    /// The index of the newest state whose anchor has come by `at`.
    fn in_force_index(&self, at: ServerTime) -> Option<usize> {
        self.states.iter().rposition(|s| s.anchor_time <= at)
    }

    /// The state in force at server time `at`: the newest whose `anchor_time`
    /// has come, or (when `at` is before every anchor this client knows) the
    /// oldest known state.
    pub fn at(&self, at: ServerTime) -> &TimelineState {
        let i = self.in_force_index(at).unwrap_or(0);
        &self.states[i]
    }

    /// The position at server time `at`, in microseconds.
    pub fn position_us_at(&self, at: ServerTime) -> u64 {
        position_us_at(self.at(at), at)
    }

    /// The newest state, whether or not it is in force yet. Its `seq` is what
    /// [`TimelineOptions::expected_seq`] compares with.
    pub fn latest(&self) -> &TimelineState {
        // `states` is never empty.
        &self.states[self.states.len() - 1]
    }

    /// Every state kept, oldest first.
    pub fn states(&self) -> &[TimelineState] {
        &self.states
    }
}

/// When and on what condition a timeline change applies
/// ([`Room::play`](crate::Room::play) and the other timeline controls).
///
/// ```
/// use chorus_client::{Seq, ServerTime, TimelineOptions};
///
/// let now = TimelineOptions::now();
/// assert_eq!(now, TimelineOptions::default());
/// // 200 ms after server time 5 s (e.g. `client.server_time()`), only if
/// // nobody changed the timeline since seq 41.
/// let later = TimelineOptions::at(ServerTime(5_000_000).saturating_add_micros(200_000))
///     .if_seq(Seq(41));
/// assert_eq!(later.at, Some(ServerTime(5_200_000)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelineOptions {
    /// The server time the change takes effect (see the [module docs](self)):
    /// `None` or a time already past means at once; at most the server's
    /// `max_schedule_ahead_ms` ahead ([`Limits`](crate::Limits)), else the
    /// server refuses with `LimitExceeded`.
    pub at: Option<ServerTime>,
    /// Apply only if the timeline's last change has this sequence number
    /// (`Seq(0)`: the timeline was never changed); otherwise the request fails
    /// with `Conflict` and [`RequestError::conflict_seq`](crate::RequestError::conflict_seq)
    /// says the current one. [`Room::timeline_seq`](crate::Room::timeline_seq)
    /// gives the value to pass.
    pub expected_seq: Option<Seq>,
}

impl TimelineOptions {
    /// At once, unconditionally.
    pub fn now() -> Self {
        TimelineOptions::default()
    }

    /// At server time `at`.
    pub fn at(at: ServerTime) -> Self {
        TimelineOptions {
            at: Some(at),
            expected_seq: None,
        }
    }

    /// Only if the timeline's last change has sequence number `seq`.
    pub fn if_seq(self, seq: Seq) -> Self {
        TimelineOptions {
            expected_seq: Some(seq),
            ..self
        }
    }
}

/// A short name for a timeline operation, for logs.
pub(crate) fn op_name(op: &TimelineOp) -> &'static str {
    match op {
        TimelineOp::Play => "play",
        TimelineOp::Pause => "pause",
        TimelineOp::Seek { .. } => "seek",
        TimelineOp::SetRate { .. } => "set_rate",
        TimelineOp::SetTempo { .. } => "set_tempo",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(seq: u64, playing: bool, anchor_s: u64, position_s: u64) -> TimelineState {
        TimelineState {
            name: "main".into(),
            playing,
            rate_ppm: NORMAL_RATE_PPM,
            anchor_time: ServerTime(anchor_s * 1_000_000),
            anchor_position_us: position_s * 1_000_000,
            tempo_mbpm: None,
            seq: Seq(seq),
        }
    }

    fn s(secs: u64) -> ServerTime {
        ServerTime(secs * 1_000_000)
    }

    #[test]
    fn position_follows_the_rate_and_stops_when_paused() {
        let mut st = state(1, true, 10, 5);
        assert_eq!(position_us_at(&st, s(10)), 5_000_000);
        assert_eq!(position_us_at(&st, s(12)), 7_000_000);
        assert_eq!(
            position_us_at(&st, s(9)),
            5_000_000,
            "never before the anchor"
        );
        st.rate_ppm = 500_000;
        assert_eq!(position_us_at(&st, s(14)), 7_000_000, "half speed");
        st.rate_ppm = 2 * NORMAL_RATE_PPM;
        assert_eq!(position_at(&st, s(11)), Duration::from_secs(7));
        st.playing = false;
        assert_eq!(position_us_at(&st, s(100)), 5_000_000);
        // No overflow at absurd values.
        st.playing = true;
        st.rate_ppm = u32::MAX;
        st.anchor_position_us = u64::MAX - 1;
        assert_eq!(position_us_at(&st, ServerTime(u64::MAX)), u64::MAX);
    }

    #[test]
    fn a_scheduled_change_applies_from_its_anchor() {
        // Playing from 0 at t = 10 s; a seek to 60 s scheduled for t = 20 s
        // arrives at t = 15 s.
        let mut sch = TimelineSchedule::new(state(3, true, 10, 0));
        sch.push(state(4, true, 20, 60));
        assert_eq!(sch.latest().seq, Seq(4));
        assert_eq!(sch.at(s(15)).seq, Seq(3));
        assert_eq!(
            sch.position_us_at(s(19)),
            9_000_000,
            "the old state runs on"
        );
        assert_eq!(sch.at(s(20)).seq, Seq(4));
        assert_eq!(sch.position_us_at(s(20)), 60_000_000);
        assert_eq!(sch.position_us_at(s(21)), 61_000_000);
        // Settling before the anchor keeps both; after it, only the new one.
        sch.settle(s(19));
        assert_eq!(sch.states().len(), 2);
        sch.settle(s(20));
        assert_eq!(sch.states().len(), 1);
        assert_eq!(
            sch.at(s(0)).seq,
            Seq(4),
            "the oldest known state before every anchor"
        );
    }

    #[test]
    fn an_earlier_change_supersedes_a_pending_one() {
        let mut sch = TimelineSchedule::new(state(1, true, 10, 0));
        sch.push(state(2, false, 30, 20)); // pause at t = 30
        sch.push(state(3, false, 25, 15)); // then: pause at t = 25
        assert_eq!(
            sch.states().iter().map(|s| s.seq.0).collect::<Vec<_>>(),
            [1, 3],
            "the pending pause at 30 can never be in force"
        );
        assert_eq!(sch.at(s(24)).seq, Seq(1));
        assert_eq!(sch.at(s(40)).seq, Seq(3));
    }

    #[test]
    fn the_schedule_is_bounded() {
        let mut sch = TimelineSchedule::new(state(0, true, 1, 0));
        for i in 1..=20 {
            sch.push(state(i, true, 1 + i, i));
        }
        assert_eq!(sch.states().len(), MAX_SCHEDULED_STATES);
        assert_eq!(sch.latest().seq, Seq(20));
    }

    #[test]
    fn options_builders() {
        assert_eq!(TimelineOptions::now(), TimelineOptions::default());
        let o = TimelineOptions::at(s(3)).if_seq(Seq(9));
        assert_eq!((o.at, o.expected_seq), (Some(s(3)), Some(Seq(9))));
        assert_eq!(op_name(&TimelineOp::Seek { position_us: 1 }), "seek");
    }
}
