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
//! [`TimelineSchedule`] keeps the two states exactly as PROTOCOL.md §16.4
//! says, so that every member (whatever its SDK) switches alike: a newer
//! change replaces a pending one, as on the server, which keeps only the
//! latest state.
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
//! let pause = TimelineState {
//!     playing: false,
//!     anchor_time: ServerTime(3_000_000),
//!     anchor_position_us: 2_000_000,
//!     seq: Seq(5),
//!     ..playing
//! };
//! schedule.push(pause, ServerTime(2_000_000));
//! assert!(schedule.at(ServerTime(2_500_000)).playing, "still playing");
//! assert_eq!(schedule.position_us_at(ServerTime(2_500_000)), 1_500_000);
//! assert!(!schedule.at(ServerTime(3_000_000)).playing, "paused from its anchor");
//! assert_eq!(schedule.position_us_at(ServerTime(9_000_000)), 2_000_000);
//! ```

use chorus_protocol::{Seq, ServerTime, TimelineOp, TimelineState};
use std::time::Duration;

/// Normal speed, in parts per million (`rate_ppm`).
pub const NORMAL_RATE_PPM: u32 = 1_000_000;

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

/// One timeline as this client follows it: the state in force and, while a
/// scheduled change waits for its `anchor_time`, that change. See the
/// [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineSchedule {
    current: TimelineState,
    /// A change whose `anchor_time` was ahead when it arrived.
    pending: Option<TimelineState>,
}

impl TimelineSchedule {
    /// A schedule starting from one state (e.g. from a snapshot: a change
    /// still pending there is simply the state, whose position stays at its
    /// `anchor_position_us` until its `anchor_time`).
    pub fn new(state: TimelineState) -> Self {
        TimelineSchedule {
            current: state,
            pending: None,
        }
    }

    /// A timeline never changed (PROTOCOL.md §16.1): paused at position 0,
    /// at normal speed, without tempo, seq 0.
    pub fn initial(name: &str) -> Self {
        TimelineSchedule::new(TimelineState {
            name: name.to_owned(),
            playing: false,
            rate_ppm: NORMAL_RATE_PPM,
            anchor_time: ServerTime(0),
            anchor_position_us: 0,
            tempo_mbpm: None,
            seq: Seq(0),
        })
    }

    /// Takes a newer state (a `TimelineChanged`) that arrived at server time
    /// `now`: one anchored ahead of `now` waits as the pending change
    /// (replacing any pending one); one anchored at or before `now` is in
    /// force at once.
    pub fn push(&mut self, state: TimelineState, now: ServerTime) {
        self.settle(now);
        if state.anchor_time > now {
            self.pending = Some(state);
        } else {
            self.current = state;
            self.pending = None;
        }
    }

    /// Makes a pending change whose `anchor_time` has come (by `now`) the
    /// current state.
    pub fn settle(&mut self, now: ServerTime) {
        if let Some(pending) = self.pending.take_if(|p| p.anchor_time <= now) {
            self.current = pending;
        }
    }

    /// The state in force at server time `at`: the pending change from its
    /// `anchor_time` on, else the current state.
    pub fn at(&self, at: ServerTime) -> &TimelineState {
        match &self.pending {
            Some(pending) if at >= pending.anchor_time => pending,
            _ => &self.current,
        }
    }

    /// The position at server time `at`, in microseconds.
    pub fn position_us_at(&self, at: ServerTime) -> u64 {
        position_us_at(self.at(at), at)
    }

    /// The newest state, whether or not it is in force yet. Its `seq` is what
    /// [`TimelineOptions::expected_seq`] compares with.
    pub fn latest(&self) -> &TimelineState {
        self.pending.as_ref().unwrap_or(&self.current)
    }

    /// The change waiting for its `anchor_time`, if any.
    pub fn pending(&self) -> Option<&TimelineState> {
        self.pending.as_ref()
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
        sch.push(state(4, true, 20, 60), s(15));
        assert_eq!(sch.latest().seq, Seq(4));
        assert_eq!(sch.pending().map(|p| p.seq), Some(Seq(4)));
        assert_eq!(sch.at(s(15)).seq, Seq(3));
        assert_eq!(
            sch.position_us_at(s(19)),
            9_000_000,
            "the old state runs on"
        );
        assert_eq!(sch.at(s(20)).seq, Seq(4));
        assert_eq!(sch.position_us_at(s(20)), 60_000_000);
        assert_eq!(sch.position_us_at(s(21)), 61_000_000);
        // Settling before the anchor keeps it pending; after it, in force.
        sch.settle(s(19));
        assert!(sch.pending().is_some());
        sch.settle(s(20));
        assert!(sch.pending().is_none());
        assert_eq!(sch.at(s(0)).seq, Seq(4));
    }

    #[test]
    fn a_newer_change_replaces_a_pending_one() {
        // PROTOCOL.md §16.4: at most one pending change; a newer one replaces it.
        let mut sch = TimelineSchedule::new(state(1, true, 10, 0));
        sch.push(state(2, false, 30, 20), s(12)); // pause at t = 30
        sch.push(state(3, false, 40, 30), s(13)); // then: pause at t = 40
        assert_eq!(sch.at(s(35)).seq, Seq(1), "the first pause never applies");
        assert_eq!(sch.at(s(40)).seq, Seq(3));
        sch.push(state(4, false, 25, 15), s(14)); // pause at t = 25
        assert_eq!(sch.at(s(24)).seq, Seq(1));
        assert_eq!(sch.at(s(27)).seq, Seq(4));
        // A change anchored in the past is in force at once and drops the
        // pending one.
        sch.push(state(5, true, 14, 4), s(15));
        assert!(sch.pending().is_none());
        assert_eq!(sch.at(s(30)).seq, Seq(5));
        // A pending change whose time has come by the next change becomes
        // the current state first.
        sch.push(state(6, false, 16, 6), s(15));
        sch.push(state(7, true, 100, 6), s(50));
        assert_eq!(sch.at(s(60)).seq, Seq(6));
    }

    #[test]
    fn a_first_change_scheduled_ahead_waits_on_the_initial_state() {
        let mut sch = TimelineSchedule::initial("main");
        sch.push(state(7, true, 20, 0), s(10));
        let before = sch.at(s(15));
        assert_eq!((before.playing, before.seq), (false, Seq(0)));
        assert_eq!(sch.position_us_at(s(15)), 0);
        assert_eq!(sch.position_us_at(s(22)), 2_000_000);
        assert_eq!(sch.latest().seq, Seq(7));
    }

    #[test]
    fn options_builders() {
        assert_eq!(TimelineOptions::now(), TimelineOptions::default());
        let o = TimelineOptions::at(s(3)).if_seq(Seq(9));
        assert_eq!((o.at, o.expected_seq), (Some(s(3)), Some(Seq(9))));
        assert_eq!(op_name(&TimelineOp::Seek { position_us: 1 }), "seek");
    }
}
